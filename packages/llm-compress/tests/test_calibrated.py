"""GPTQ / AWQ quantization and magnitude / Wanda / SparseGPT pruning on a 4-layer, 128-wide random Llama.

GPTQ, AWQ, Wanda and SparseGPT run llm-compressor in its own environment (built by uv on first use, a
few minutes); their outputs must reload here with `from_pretrained` like any model folder.
"""

import json

import pytest
from llm_compress.cli import main
from llm_compress.prune import measured_sparsity, prune_2_4


def _reload(folder):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def _generate(model, tokenizer_dir):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    inputs = tok("What is 2 + 3?", return_tensors="pt")
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)


@pytest.fixture(scope="module", params=["gptq", "awq"])
def quantized(request, chat_teacher, synth, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    out, metrics = root / "model", root / "metrics.json"
    code = main(["quantize", "--method", request.param, "--model", chat_teacher, "--out", str(out),
                 "--data", str(synth / "sft"), "--calibration_samples", "16", "--group_size", "32",
                 "--metrics", str(metrics)])
    assert code == 0
    return request.param, out, json.loads(metrics.read_text())


def test_gptq_and_awq_write_packed_4bit_weights_that_reload(quantized, chat_teacher):
    method, out, m = quantized
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    weights = next(iter(config["config_groups"].values()))["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 32, method == "gptq")
    # 4-bit linear layers: the folder is several times smaller than fp32 (embeddings stay fp32).
    assert m["size_ratio"] > 2.5 and m["size_mb"] < m["reference_size_mb"] / 2.5
    assert m["quantize_seconds"] > 0
    model = _reload(out)
    assert _generate(model, out).shape[1] > 4
    # Each group of 32 weights takes at most 16 values (4 bits), and the model still computes what the
    # fp32 one does, up to rounding (AWQ also rescales channels, so weights are not compared one by one).
    w = model.model.layers[0].mlp.down_proj.weight
    assert all(len(group.unique()) <= 16 for group in w.reshape(-1, 32)[:64])
    import torch

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        logits, reference = model(ids).logits, _reload(chat_teacher)(ids).logits
    assert not torch.equal(logits, reference)
    assert torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0) > 0.9


def test_group_size_that_does_not_divide_a_layer_is_a_one_line_error(tiny_model, synth, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["quantize", "--method", "gptq", "--model", str(tiny_model), "--out", str(out),
                 "--data", str(synth / "sft"), "--group_size", "48"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "group_size 48 does not divide" in err and "--group_size" in err
    assert not out.exists()


@pytest.mark.parametrize(("method", "pattern"), [("magnitude", "unstructured"), ("magnitude", "2:4"),
                                                 ("wanda", "unstructured"), ("sparsegpt", "2:4")])
def test_prune_reaches_the_sparsity_in_the_saved_weights(method, pattern, chat_teacher, synth, tmp_path):
    out, metrics = tmp_path / "pruned", tmp_path / "prune.json"
    assert main(["prune", "--method", method, "--pattern", pattern, "--sparsity", "0.5", "--model", chat_teacher,
                 "--out", str(out), "--data", str(synth / "sft"), "--calibration_samples", "16",
                 "--metrics", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    model = _reload(out)
    assert measured_sparsity(model)["sparsity"] == pytest.approx(m["sparsity"])
    assert 0.49 <= m["sparsity_min_layer"] <= m["sparsity_max_layer"] <= 0.51
    if pattern == "2:4":
        assert m["groups_2_4"] == 1.0
    assert model.lm_head.weight.eq(0).float().mean() < 0.01  # the output head is not pruned
    assert _generate(model, out).shape[1] > 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_prune_2_4_keeps_the_two_largest_of_every_four():
    import torch

    w = torch.nn.Parameter(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -0.2, 0.3]]))
    prune_2_4(w)
    assert w.tolist() == [[0.0, -3.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "random"], "unknown method 'random'"),
        (["--sparsity", "1.5"], "sparsity must be in (0, 1)"),
        (["--sparsity", "0"], "sparsity must be in (0, 1)"),
        (["--pattern", "3:4"], "unknown pattern '3:4'"),
        (["--pattern", "2:4", "--sparsity", "0.3"], "sparsity is 0.5"),
        (["--method", "wanda", "--data", "no/such/folder"], "no/such/folder: no such dataset folder"),
    ],
)
def test_bad_prune_settings_are_one_line_errors(flags, message, chat_teacher, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["prune", "--model", chat_teacher, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_2_4_on_a_layer_that_cannot_take_it_is_a_one_line_error(chat_tokenizer, tmp_path, capsys):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    model_dir = tmp_path / "odd"
    tokenizer = AutoTokenizer.from_pretrained(chat_tokenizer)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=30, intermediate_size=62, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    capsys.readouterr()  # drop the save's progress output
    out = tmp_path / "never"
    args = ["prune", "--method", "magnitude", "--pattern", "2:4", "--model", str(model_dir), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "30 input features" in err and "--pattern unstructured" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["prune", "quantize"])
def test_calibration_rows_without_the_needed_fields_are_one_line_errors(command, chat_teacher, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"question": "2 + 3?", "reply": "5"}\n')
    out = tmp_path / "never"
    method, extra = ("wanda", []) if command == "prune" else ("gptq", ["--group_size", "32"])
    assert main([command, "--method", method, "--model", chat_teacher, "--out", str(out), "--data", str(data),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{data / 'train.jsonl'}:1" in err and "'text'" in err
    assert not out.exists()


def test_a_folder_that_is_not_a_model_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prune", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "never")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
