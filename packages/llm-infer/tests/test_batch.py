"""`llm-infer batch`: bigger batches generate more tokens/s, continuous batching gives static greedy's replies,
vLLM is reported unavailable without a GPU, and bad input exits 2."""

import csv
import json

import pytest
import torch
from llm_infer import vllm_cpu
from llm_infer.batch import BatchConfig, run_batch, until_eos
from llm_infer.cli import main


@pytest.fixture(scope="module")
def result(tiny_model, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    # 12 prompts from a split of fewer rows per category still cycle; 16 new tokens keep it fast.
    cfg = BatchConfig(model=tiny_model, data=sft_data, n_prompts=12, batch_sizes="1,4", max_new_tokens=16,
                      engines="static,continuous", metrics=str(out / "m.json"), plots=str(out / "plots"))
    assert run_batch(cfg) == out / "plots"
    metrics = json.loads((out / "m.json").read_text())
    table = list(csv.DictReader(open(out / "plots" / "batch.csv")))
    return metrics, {(r["engine"], r["batch_size"]): r for r in table}, out


def test_outputs_written_with_expected_keys(result):
    metrics, table, out = result
    assert (out / "plots" / "batch_throughput.png").stat().st_size > 0
    assert sorted(e for e, _ in table) == ["continuous", "static", "static"]
    for key in ("tokens_per_s_batch_1", "tokens_per_s_batch_4", "latency_s_batch_1", "latency_s_batch_4",
                "batch_speedup", "largest_batch", "prompts"):
        assert key in metrics, key
    assert metrics["largest_batch"] == 4 and metrics["prompts"] == 12
    assert all(isinstance(v, int | float) for v in metrics.values())


def test_bigger_batch_is_faster(result):
    metrics, table, _ = result
    assert metrics["tokens_per_s_batch_1"] > 0
    # 4 rows per forward pass against 1: per-step overhead dominates a 64-wide model, so this holds with margin.
    assert metrics["tokens_per_s_batch_4"] > metrics["tokens_per_s_batch_1"]
    assert metrics["batch_speedup"] == pytest.approx(
        metrics["tokens_per_s_batch_4"] / metrics["tokens_per_s_batch_1"], rel=1e-3)
    # Three timed runs per size (the default): the ratio of tokens/s gets an interval from their spread.
    assert metrics["batch_speedup_lo"] <= metrics["batch_speedup"] <= metrics["batch_speedup_hi"]
    assert metrics["speedup_batch_4"] == metrics["batch_speedup"]
    # Both batch sizes decode the same prompts, so they count the same real tokens (padding excluded).
    assert table[("static", "1")]["new_tokens"] == table[("static", "4")]["new_tokens"]
    assert float(table[("static", "4")]["latency_s"]) > 0


def test_continuous_batching_matches_static_greedy(result):
    metrics, table, _ = result
    if metrics["continuous_available"]:
        row = table[("continuous", "4")]
        assert row["status"] == "ok"
        assert metrics["continuous_tokens_per_s"] > 0
        assert metrics["continuous_vs_static"] == pytest.approx(
            metrics["continuous_tokens_per_s"] / metrics["tokens_per_s_batch_4"], rel=1e-3)
        lo, hi = metrics["continuous_vs_static_lo"], metrics["continuous_vs_static_hi"]
        assert lo <= metrics["continuous_vs_static"] <= hi
        assert metrics["continuous_match_fraction"] == 1.0
        assert row["new_tokens"] == table[("static", "1")]["new_tokens"]
    else:
        assert table[("continuous", "")]["status"].startswith("unavailable: ")
        assert len(table[("continuous", "")]["status"]) > len("unavailable: ")


def test_continuous_failure_is_a_row_with_its_reason(tiny_model, sft_data, tmp_path, monkeypatch):
    import llm_infer.batch as batch

    def broken(*args, **kwargs):
        raise RuntimeError("paged cache exploded")

    monkeypatch.setattr(batch, "_continuous", broken)
    cfg = BatchConfig(model=tiny_model, data=sft_data, n_prompts=2, batch_sizes="2", engines="continuous",
                      max_new_tokens=4, metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "plots"))
    run_batch(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    (row,) = csv.DictReader(open(tmp_path / "plots" / "batch.csv"))
    assert metrics == {"prompts": 2, "max_new_tokens": 4, "continuous_available": 0}
    assert row["status"] == "unavailable: RuntimeError: paged cache exploded"
    assert not (tmp_path / "plots" / "batch_throughput.png").exists()  # nothing measured, nothing to draw


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU vLLM runs in-process")
def test_vllm_cpu_failure_is_a_row_with_its_error(tiny_model, sft_data, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("vllm-cpu exited with code 1; its output ends:\n...\nValueError: head size 16 unsupported")

    monkeypatch.setattr(vllm_cpu, "generate", fail)
    cfg = BatchConfig(model=tiny_model, data=sft_data, n_prompts=2, batch_sizes="1", max_new_tokens=4,
                      engines="static,vllm", repeats=1, metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "p"))
    run_batch(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["vllm_available"] == 0 and "vllm_tokens_per_s" not in metrics
    row = next(r for r in csv.DictReader(open(tmp_path / "p" / "batch.csv")) if r["engine"] == "vllm")
    assert row["status"] == "unavailable: vllm-cpu failed: ValueError: head size 16 unsupported"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU vLLM runs in-process")
def test_vllm_cpu_engine_gives_greedy_replies(chat_model, sft_data, tmp_path):
    """The vllm-cpu build in its own environment (built on first use): same token ids in, batch-1 greedy out."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    # vLLM's CPU attention takes head sizes from 32 up: two heads of 32 instead of the fixture's four of 16.
    config = AutoConfig.from_pretrained(chat_model)
    config.num_attention_heads = config.num_key_value_heads = 2
    config.head_dim = config.hidden_size // 2
    model = tmp_path / "heads32"
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(model)
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(model)
    cfg = BatchConfig(model=str(model), data=sft_data, n_prompts=8, batch_sizes="1,8", max_new_tokens=8,
                      engines="static,vllm", repeats=2, metrics=str(tmp_path / "m.json"))
    run_batch(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["vllm_available"] == 1 and metrics["vllm_tokens_per_s"] > 0
    assert metrics["vllm_match_fraction"] >= 0.75  # fp32 kernels differ; a near-tie may flip a token
    assert metrics["vllm_vs_static_lo"] <= metrics["vllm_vs_static"] <= metrics["vllm_vs_static_hi"]
    assert "vllm_vs_batch_1" in metrics


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a CUDA GPU")
def test_vllm_on_gpu(tiny_model, sft_data, tmp_path):
    pytest.importorskip("vllm")
    cfg = BatchConfig(model=tiny_model, data=sft_data, n_prompts=16, batch_sizes="1,16", engines="static,vllm",
                      max_new_tokens=16, metrics=str(tmp_path / "m.json"))
    run_batch(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["vllm_available"] == 1
    assert metrics["vllm_tokens_per_s"] > 0 and metrics["vllm_vs_static"] > 0


def test_until_eos_drops_padding():
    assert until_eos([5, 6, 2, 0, 0], {2}) == [5, 6, 2]
    assert until_eos([5, 6, 7], {2}) == [5, 6, 7]
    assert until_eos([3, 9], {2, 3}) == [3]


@pytest.mark.parametrize(("flags", "message"), [
    (["--batch_sizes", "0,4"], "batch_sizes"),
    (["--batch_sizes", "1,x"], "batch_sizes"),
    (["--batch_sizes", "128"], "n_prompts"),
    (["--engines", "static,tgi"], "tgi"),
    (["--model", "{tmp}/no-model"], "no-model"),
    (["--dtype", "int3"], "dtype"),
])
def test_bad_input_exits_2(flags, message, tiny_model, sft_data, tmp_path, capsys):
    out = tmp_path / "plots"
    flags = [f.format(tmp=tmp_path) for f in flags]
    args = ["batch", "--model", tiny_model, "--data", sft_data, "--plots", str(out), *flags]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
