"""`llm-infer bench-kv`: every cache gives the no-cache greedy tokens, and holds more bytes for longer replies."""

import csv
import json

import pytest
import torch
from llm_infer import kv_cache
from llm_infer.cli import main
from llm_infer.kv_cache import KVCacheConfig, run_kv_cache, tensor_bytes


@pytest.fixture(scope="module")
def result(tiny_model, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kv")
    # Two repeats: the least that gives each speedup an interval.
    cfg = KVCacheConfig(model=tiny_model, data=sft_data, new_tokens="8,16", batch_size=2, repeats=2,
                        metrics=str(out / "m.json"), plots=str(out / "plots"))
    run_kv_cache(cfg)
    table = list(csv.DictReader(open(out / "plots" / "kv_cache.csv")))
    return json.loads((out / "m.json").read_text()), table, out / "plots"


def _rows(table, cache):
    return sorted((r for r in table if r["cache"] == cache), key=lambda r: int(r["new_tokens"]))


def test_writes_table_plots_and_metrics(result):
    metrics, table, plots = result
    assert (plots / "kv_cache_tokens_per_s.png").stat().st_size > 0
    assert (plots / "kv_cache_memory.png").stat().st_size > 0
    assert [(r["cache"], r["new_tokens"]) for r in table] == [
        (c, n) for c in ("none", "dynamic", "static", "quantized") for n in ("8", "16")]
    assert metrics["max_new_tokens"] == 16 and metrics["batch_size"] == 2
    for key in ("kv_speedup", "static_speedup", "quantized_speedup", "dynamic_cache_mb", "quantized_cache_mb",
                "none_tokens_per_s", "dynamic_tokens_per_s", "static_tokens_per_s", "quantized_tokens_per_s"):
        assert metrics[key] > 0, key


def test_speedups_are_mean_time_ratios_with_intervals(result):
    metrics, _, _ = result
    for cache, key in (("dynamic", "kv_speedup"), ("static", "static_speedup"), ("quantized", "quantized_speedup")):
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
        # tokens/s is new tokens / mean seconds, so the ratio of mean times is the ratio of tokens/s.
        assert metrics[key] == pytest.approx(metrics[f"{cache}_tokens_per_s"] / metrics["none_tokens_per_s"], rel=1e-4)


def test_report_states_each_speedup_with_its_interval(result):
    from llm_eval.report.sections import SECTIONS

    metrics, _, _ = result
    lines = [f.line for f in SECTIONS["kv_cache"].comparisons(metrics)]
    assert [line.split(":")[1].strip() for line in lines] == [
        "dynamic KV cache vs no cache", "static KV cache vs no cache", "fp8-quantized KV cache vs no cache"]
    assert all("[" in line and "no interval" not in line for line in lines)


def test_caches_give_the_no_cache_tokens(result):
    _, table, _ = result
    for row in table:
        assert row["status"] == "ok", row
        assert float(row["tokens_per_s"]) > 0
        if row["cache"] in ("dynamic", "static"):
            assert row["matches_no_cache"] == "1" and float(row["token_agreement"]) == 1.0
    # fp8 keys/values may flip a near-tie argmax of a random model; the check is recorded either way.
    for row in _rows(table, "quantized"):
        assert row["matches_no_cache"] in ("0", "1") and 0.0 <= float(row["token_agreement"]) <= 1.0


def test_cache_memory_grows_with_length(result):
    metrics, table, _ = result
    assert all(float(r["cache_mb"]) == 0.0 for r in _rows(table, "none"))
    for cache in ("dynamic", "static", "quantized"):
        short, long = (float(r["cache_mb"]) for r in _rows(table, cache))
        assert long > short > 0, cache
    # fp8 stores 1 byte per number instead of fp32's 4 (plus two scalar scales per layer).
    assert metrics["quantized_cache_mb"] < metrics["dynamic_cache_mb"] / 3
    if not torch.cuda.is_available():
        assert all(r["peak_mb"] == "" for r in table)


def test_tensor_bytes_counts_each_tensor_once():
    a, b = torch.zeros(10), torch.zeros(4, dtype=torch.float8_e4m3fn)
    assert tensor_bytes((a, (b, a), {"x": a})) == 40 + 4
    assert tensor_bytes(None) == 0


def test_missing_backend_is_reported_unavailable(tiny_model, sft_data, tmp_path, monkeypatch):
    # quanto is one of QuantizedCache's backends and not installed here: the row says so instead of crashing.
    from transformers.utils import is_optimum_quanto_available

    if is_optimum_quanto_available():
        pytest.skip("optimum-quanto is installed")
    monkeypatch.setattr(kv_cache, "QUANTIZED_BACKEND", "quanto")
    cfg = KVCacheConfig(model=tiny_model, data=sft_data, new_tokens="4", caches="dynamic,quantized", repeats=1,
                        metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "plots"))
    run_kv_cache(cfg)
    rows = {r["cache"]: r for r in csv.DictReader(open(tmp_path / "plots" / "kv_cache.csv"))}
    assert rows["dynamic"]["status"] == "ok"
    assert rows["quantized"]["status"] == "unavailable" and "quanto" in rows["quantized"]["reason"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "quantized_speedup" not in metrics and "kv_speedup" not in metrics  # no "none" run to compare with


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_peak_memory_measured_on_cuda(tiny_model, sft_data, tmp_path):
    cfg = KVCacheConfig(model=tiny_model, data=sft_data, new_tokens="8,32", caches="none,dynamic", repeats=1,
                        metrics=str(tmp_path / "m.json"))
    run_kv_cache(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["dynamic_peak_mb"] > 0 and metrics["none_peak_mb"] > 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--caches", "dynamic,paged"], "paged"),
    (["--new_tokens", "8,abc"], "new_tokens"),
    (["--new_tokens", "0"], "new_tokens"),
    (["--batch_size", "0"], "batch_size"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
])
def test_bad_input_exits_2(flags, message, tiny_model, sft_data, capsys, tmp_path):
    args = ["bench-kv", "--model", tiny_model, "--data", sft_data, "--plots", str(tmp_path / "plots"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "plots").exists()
