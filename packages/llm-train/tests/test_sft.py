import json

import pytest
import torch
from llm_train.cli import main
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="module")
def base(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "base"
    assert (
        main(
            [
                "pretrain",
                "--model",
                str(workspace / "init"),
                "--data",
                str(workspace / "synth" / "pretrain"),
                "--out",
                str(out),
                "--max_steps",
                "4",
                "--batch_size",
                "4",
                "--block_size",
                "32",
            ]
        )
        == 0
    )
    return out


def _sft(workspace, base, out, method, *extra):
    return main(
        [
            "sft",
            "--method",
            method,
            "--model",
            str(base),
            "--data",
            str(workspace / "synth" / "messages"),
            "--out",
            str(out),
            "--max_steps",
            "3",
            "--batch_size",
            "4",
            "--eval_steps",
            "3",
            "--metrics",
            str(out) + ".json",
            *extra,
        ]
    )


def test_full_sft_changes_all_weights(workspace, base, tmp_path):
    out = tmp_path / "full"
    assert _sft(workspace, base, out, "full") == 0
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], after["model.layers.0.mlp.down_proj.weight"])
    m = json.loads((tmp_path / "full.json").read_text())
    assert m["trainable_percent"] == 100.0


def test_lora_writes_adapter_and_merged(workspace, base, tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    assert _sft(workspace, base, out, "lora", "--lora_r", "4", "--save_merged", "true") == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["base_model_name_or_path"] == str(base)
    # PEFT saves its module set in hash order; sorted, the file is the same in every process.
    assert len(cfg["target_modules"]) > 1 and cfg["target_modules"] == sorted(cfg["target_modules"])
    assert not (out / "model.safetensors").exists()  # adapter only, not a copy of the base
    m = json.loads((tmp_path / "lora.json").read_text())
    assert 0 < m["trainable_percent"] < 100 and m["trainable_params"] < m["total_params"]
    # the adapter learned something, and merging it gives the same function
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    b_weights = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in b_weights)  # B starts at zero
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    x = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, merged(x).logits, atol=1e-4)


def test_lora_is_deterministic_per_seed(workspace, base, tmp_path):
    """The adapters' random init is seeded too: same seed, byte-identical adapter; another seed differs."""
    import random

    weights = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        # Each CLI run starts from whatever RNG state its process has; stir it as a new process would.
        torch.manual_seed(random.SystemRandom().randrange(2**32))
        assert _sft(workspace, base, tmp_path / name, "lora", "--lora_r", "4", "--seed", seed) == 0
        weights[name] = (tmp_path / name / "adapter_model.safetensors").read_bytes()
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_qlora_trains_adapter_on_nf4_base(workspace, base, tmp_path):
    out = tmp_path / "qlora"
    assert _sft(workspace, base, out, "qlora", "--lora_r", "4") == 0
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    m = json.loads((tmp_path / "qlora.json").read_text())
    assert 0 < m["trainable_percent"] < 100


def test_completion_only_loss_masks_prompt(workspace, base, tmp_path, monkeypatch):
    from trl import SFTTrainer

    captured = {}
    original = SFTTrainer.train

    def spy(self, *a, **kw):
        captured["labels"] = self.train_dataset[0]["labels"] if "labels" in self.train_dataset.column_names else None
        captured["ids"] = self.train_dataset[0]["input_ids"]
        captured["mask"] = self.train_dataset[0].get("assistant_masks")
        return original(self, *a, **kw)

    monkeypatch.setattr(SFTTrainer, "train", spy)
    assert _sft(workspace, base, tmp_path / "m", "full") == 0
    mask = captured["mask"] or [int(label != -100) for label in captured["labels"]]
    assert 0 < sum(mask) < len(captured["ids"])  # some tokens are prompt, some are answer


def test_qlora_gradients_pass_4bit_layers_after_an_evaluation(workspace, base):
    """bitsandbytes repacks 4-bit layers for a bf16 inference kernel without backward at their first eval-mode
    forward on AVX512-BF16 CPUs; QLoRA must keep training through them after the Trainer's evaluations."""
    from llm_train.sft import SFTConfig, _load_model

    model = _load_model(SFTConfig(method="qlora", model=str(base)), str(base))
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    model.eval()
    with torch.no_grad():
        model(ids)  # an evaluation pass first, as eval_steps makes
    model.train()
    seen = {}
    layer = model.model.layers[0].mlp

    def keep_input(module, args, out):
        seen["x"] = args[0]

    layer.register_forward_hook(keep_input)
    model.model.embed_tokens.weight.requires_grad_(True)
    out = model(ids, labels=ids)
    seen["x"].retain_grad()
    out.loss.backward()
    # the MLP's input gets its gradient only back through the 4-bit gate/up/down projections
    assert seen["x"].grad is not None and seen["x"].grad.abs().sum() > 0


def test_qlora_merges_into_the_unquantized_base(workspace, base, tmp_path):
    """The NF4 base is for training; the merged folder is full precision with the adapter's update in it."""
    from peft import PeftModel

    out = tmp_path / "qlora"
    assert _sft(workspace, base, out, "qlora", "--lora_r", "4", "--save_merged", "true") == 0
    assert "quantization_config" not in json.loads((out / "merged" / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    x = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(adapted(x).logits, merged(x).logits, atol=1e-4)
        assert not torch.allclose(AutoModelForCausalLM.from_pretrained(base)(x).logits, merged(x).logits)


def test_chat_template_without_generation_marks_trains_on_the_reply(workspace, base, tmp_path):
    """Hub chat templates (TinyLlama's) lack {% generation %}: the conversation becomes a prompt-completion
    pair and the loss still covers the reply only."""
    from llm_train.loop import load_splits
    from llm_train.sft import _keep_training_columns
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    data = load_splits(str(workspace / "synth" / "messages"))
    assert "messages" in _keep_training_columns(data, tokenizer)["train"].column_names
    tokenizer.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}"
                               "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    rows = _keep_training_columns(data, tokenizer)["train"]
    assert rows.column_names == ["prompt", "completion"]
    first = data["train"][0]["messages"]
    assert rows[0]["prompt"] == first[:-1] and rows[0]["completion"] == first[-1:]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--method", "dora"], "unknown method 'dora'"),
        (["--method", "full", "--save_merged", "true"], "save_merged applies to --method lora or qlora"),
    ],
)
def test_bad_flags(workspace, base, tmp_path, capsys, flags, needle):
    rc = main(
        [
            "sft",
            "--model",
            str(base),
            "--data",
            str(workspace / "synth" / "messages"),
            "--out",
            str(tmp_path / "x"),
            *flags,
        ]
    )
    assert rc == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_data_without_sft_fields(workspace, base, tmp_path, capsys):
    rc = main(
        ["sft", "--model", str(base), "--data", str(workspace / "synth" / "pretrain"), "--out", str(tmp_path / "x")]
    )
    assert rc == 2 and "'messages' or 'prompt'+'completion'" in capsys.readouterr().err
