import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from llm_compress import quantize  # noqa: E402
from llm_compress.cli import main  # noqa: E402
from llm_compress.quantize import QuantizeConfig, run_quantize  # noqa: E402

METRIC_KEYS = {
    "size_mb", "memory_mb", "reference_size_mb", "reference_memory_mb", "memory_ratio", "size_ratio",
    "quantize_seconds", "calibration_samples",
}


@pytest.fixture(scope="module")
def nf4(tiny_model, tmp_path_factory):
    """Quantize through the Python API: returns (out folder, metrics dict)."""
    root = tmp_path_factory.mktemp("nf4")
    cfg = QuantizeConfig(method="bnb-nf4", model=str(tiny_model), out=str(root / "model-nf4"),
                         metrics=str(root / "metrics" / "quantize_nf4.json"))
    out = run_quantize(cfg)
    return out, json.loads(Path(cfg.metrics).read_text())


@pytest.fixture(scope="module")
def int8(tiny_model, tmp_path_factory):
    """Quantize through the CLI, as a DVC stage would: returns (out folder, metrics dict)."""
    root = tmp_path_factory.mktemp("int8")
    out, metrics = root / "model-int8", root / "quantize_int8.json"
    code = main(["quantize", "--method", "bnb-int8", "--model", str(tiny_model), "--out", str(out),
                 "--metrics", str(metrics)])
    assert code == 0
    return out, json.loads(metrics.read_text())


def _reload_and_generate(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    tok = AutoTokenizer.from_pretrained(folder)
    inputs = tok("The cat", return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return model, inputs["input_ids"].shape[1], ids


@pytest.mark.parametrize("which", ["nf4", "int8"])
def test_quantized_folder_reloads_with_bnb_layers_and_generates(which, request):
    import bitsandbytes as bnb
    import torch

    out, _ = request.getfixturevalue(which)
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected <= set(os.listdir(out))
    model, n_prompt, ids = _reload_and_generate(out)
    assert ids.shape == (1, n_prompt + 5)
    layer_cls = bnb.nn.Linear4bit if which == "nf4" else bnb.nn.Linear8bitLt
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert linears and all(isinstance(m, layer_cls) for m in linears)  # every block linear is quantized
    assert not isinstance(model.lm_head, layer_cls)  # the output head stays full precision
    assert model.model.embed_tokens.weight.dtype == torch.float32


def test_config_records_quantization(nf4, int8):
    nf4_q = json.loads((nf4[0] / "config.json").read_text())["quantization_config"]
    assert nf4_q["quant_method"] == "bitsandbytes" and nf4_q["load_in_4bit"] and not nf4_q["load_in_8bit"]
    assert nf4_q["bnb_4bit_quant_type"] == "nf4" and nf4_q["bnb_4bit_use_double_quant"] is True
    int8_q = json.loads((int8[0] / "config.json").read_text())["quantization_config"]
    assert int8_q["quant_method"] == "bitsandbytes" and int8_q["load_in_8bit"] and not int8_q["load_in_4bit"]


@pytest.mark.parametrize("which", ["nf4", "int8"])
def test_metrics_are_flat_and_show_compression(which, request, tiny_model):
    out, m = request.getfixturevalue(which)
    assert set(m) == METRIC_KEYS and all(isinstance(v, int | float) for v in m.values())
    assert 0 < m["memory_mb"] < m["reference_memory_mb"]
    assert m["memory_ratio"] == pytest.approx(m["reference_memory_mb"] / m["memory_mb"], rel=1e-4)
    assert m["memory_ratio"] > 1.0
    assert 0 < m["size_mb"] < m["reference_size_mb"]
    assert m["size_ratio"] == pytest.approx(m["reference_size_mb"] / m["size_mb"], rel=1e-4)
    reference_mb = (tiny_model / "model.safetensors").stat().st_size / 2**20
    assert m["reference_size_mb"] == pytest.approx(reference_mb, rel=1e-4)
    assert m["size_mb"] == pytest.approx((out / "model.safetensors").stat().st_size / 2**20, rel=1e-4)
    assert m["quantize_seconds"] > 0


@pytest.fixture(scope="module", params=["quanto-int8", "quanto-int4"])
def quanto(request, tiny_model, tmp_path_factory):
    """optimum-quanto through the CLI: returns (method, out folder, metrics dict)."""
    root = tmp_path_factory.mktemp("quanto")
    out, metrics = root / "model", root / "quantize.json"
    assert main(["quantize", "--method", request.param, "--model", str(tiny_model), "--out", str(out),
                 "--metrics", str(metrics)]) == 0
    return request.param, out, json.loads(metrics.read_text())


def test_quanto_folder_reloads_packed_through_llm_eval(quanto):
    import torch
    from llm_eval.run import load_causal_lm, memory_mb
    from optimum.quanto import QModuleMixin
    from transformers import AutoTokenizer

    method, out, m = quanto
    assert (out / "quanto_qmap.json").is_file() and set(m) == METRIC_KEYS
    model = load_causal_lm(str(out), "none", "cpu")  # what `llm-eval run` does with the folder
    linears = {n: mod for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert all(isinstance(mod, QModuleMixin) for n, mod in linears.items() if n != "lm_head")
    assert not isinstance(linears["lm_head"], QModuleMixin)
    # Packed in memory: int8 holds a quarter of fp32's bytes, int4 an eighth, plus scales and fp32 embeddings.
    assert memory_mb(model) == pytest.approx(m["memory_mb"], rel=1e-6)
    assert m["memory_ratio"] > (1.5 if method == "quanto-int8" else 2.0) and m["size_ratio"] > 1.5
    tok = AutoTokenizer.from_pretrained(out)
    ids = model.generate(**tok("The cat", return_tensors="pt"), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert ids.shape[1] == len(tok("The cat")["input_ids"]) + 4


def test_quanto_refuses_a_second_quantization(quanto):
    from llm_eval.run import load_causal_lm

    with pytest.raises(ValueError, match="already quantized; evaluate it with --quantize none"):
        load_causal_lm(str(quanto[1]), "nf4", "cpu")


def test_nf4_is_smaller_than_int8(nf4, int8):
    assert nf4[1]["memory_mb"] < int8[1]["memory_mb"]
    assert nf4[1]["size_mb"] < int8[1]["size_mb"]


def test_no_temp_folders_left_next_to_output(nf4, int8):
    for out, _ in (nf4, int8):
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_failure_leaves_no_partial_output(tiny_model, tmp_path, monkeypatch):
    def broken_check(*args, **kwargs):
        raise RuntimeError("reload failed")

    monkeypatch.setattr(quantize, "_check_reloads", broken_check)
    out = tmp_path / "model-nf4"
    with pytest.raises(RuntimeError, match="reload failed"):
        run_quantize(QuantizeConfig(model=str(tiny_model), out=str(out), metrics=str(tmp_path / "m.json")))
    assert list(tmp_path.iterdir()) == []


def test_cli_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "quantize" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method", "--model", "--out", "--metrics", "--double_quant", "--compute_dtype", "--seed"):
        assert flag in text
    assert "arXiv:2208.07339" in text and "arXiv:2305.14314" in text


def test_cli_bad_method_exits_2_with_one_line_error(tmp_path, capsys):
    code = main(["quantize", "--method", "bnb-int3", "--model", str(tmp_path), "--out", str(tmp_path / "q")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown method 'bnb-int3'" in err and "bnb-int8" in err and "bnb-nf4" in err


def test_cli_missing_model_exits_2_and_writes_nothing(tmp_path, capsys):
    missing, out = tmp_path / "models" / "sft-full", tmp_path / "models" / "sft-full-nf4"
    metrics = tmp_path / "m.json"
    code = main(["quantize", "--model", str(missing), "--out", str(out), "--metrics", str(metrics)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(missing) in err and "llm-train" in err
    assert not out.exists() and not metrics.exists()


def test_cli_name_neither_local_nor_on_the_hub_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no models/ here: 'models/sft-full' reads as a hub id, missing offline
    assert main(["quantize", "--model", "models/sft-full"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "models/sft-full: no such model folder" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_folder_without_config_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["quantize", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "q")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute_dtype": "float8"}, "unknown compute_dtype"),
        ({"model": "models/x", "out": "models/x/"}, "out must differ from model"),
        ({"model": " "}, "model must be"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantizeConfig(**kwargs)


def test_default_out_folder_is_named_after_the_method(tiny_model):
    out = quantize._out_dir(QuantizeConfig(method="bnb-int8"), str(tiny_model))
    assert out == tiny_model.with_name("base-int8")
    assert quantize._out_dir(QuantizeConfig(), "org/some-model") == Path("models/some-model-nf4")
