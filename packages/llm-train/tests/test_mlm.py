"""Masked-LM pre-training: `init --arch bert` and `pretrain --objective mlm`."""

import json

import pytest
import torch
from llm_train.cli import main
from transformers import AutoModelForMaskedLM, AutoTokenizer


def _init(workspace, out, arch):
    args = ["init", "--arch", arch, "--size", "nano", "--tokenizer", str(workspace / "tok"), "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def encoder(workspace, tmp_path_factory):
    return _init(workspace, tmp_path_factory.mktemp("mlm") / "init-modernbert", "modernbert")


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_encoder_init_adds_a_mask_token(workspace, tmp_path, arch):
    folder = _init(workspace, tmp_path / arch, arch)
    tok = AutoTokenizer.from_pretrained(folder)
    assert AutoTokenizer.from_pretrained(workspace / "tok").mask_token is None
    assert tok.mask_token == "<mask>"
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert model.config.model_type == arch and model.config.vocab_size == len(tok)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2


def test_mlm_pretrain_trains_the_encoder_and_keeps_its_mask_token(workspace, encoder, tmp_path):
    out, metrics = tmp_path / "base-bert", tmp_path / "m.json"
    args = ["pretrain", "--objective", "mlm", "--model", str(encoder), "--data", str(workspace / "synth" / "pretrain"),
            "--out", str(out), "--max_steps", "12", "--batch_size", "4", "--block_size", "32", "--eval_steps", "6",
            "--save_steps", "6", "--learning_rate", "0.003", "--metrics", str(metrics)]
    assert main(args) == 0
    before = AutoModelForMaskedLM.from_pretrained(encoder).state_dict()
    after = AutoModelForMaskedLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    m = json.loads(metrics.read_text())
    assert m["eval_loss"] > 0 and m["train_tokens"] == 12 * 4 * 32
    assert AutoTokenizer.from_pretrained(out).mask_token == "<mask>"


def test_mlm_refuses_a_model_without_mask_token_or_head(workspace, tmp_path, capsys):
    data = str(workspace / "synth" / "pretrain")
    base = ["pretrain", "--objective", "mlm", "--data", data, "--max_steps", "1"]
    assert main([*base, "--model", str(workspace / "init"), "--out", str(tmp_path / "x")]) == 2
    assert "no mask token" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_arch_and_objective(workspace, tmp_path, capsys):
    assert main(["init", "--arch", "gpt9", "--tokenizer", str(workspace / "tok"), "--out", str(tmp_path / "a")]) == 2
    assert "unknown arch 'gpt9'" in capsys.readouterr().err
    assert main(["pretrain", "--objective", "xlm", "--out", str(tmp_path / "b")]) == 2
    assert "unknown objective 'xlm'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
