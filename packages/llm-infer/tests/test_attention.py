"""`llm-infer bench-attn`: eager and SDPA agree, their memory is really measured; flash is reported where missing."""

import csv
import json

import pytest
import torch
from llm_infer.attention import AttentionConfig, cpu_peak_bytes, growth_exponent, run_attention
from llm_infer.cli import main


@pytest.fixture(scope="module")
def result(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("attn")
    cfg = AttentionConfig(model=tiny_model, seq_lens="32,128", batch_size=2, repeats=2,
                          metrics=str(out / "m.json"), plots=str(out / "plots"))
    run_attention(cfg)
    table = list(csv.DictReader(open(out / "plots" / "attention.csv")))
    return json.loads((out / "m.json").read_text()), table, out / "plots"


def test_writes_table_plots_and_metrics(result):
    metrics, table, plots = result
    assert (plots / "attention_time.png").stat().st_size > 0
    assert (plots / "attention_memory.png").stat().st_size > 0
    ok = [(r["implementation"], r["seq_len"]) for r in table if r["status"] == "ok"]
    assert ok[:4] == [("eager", "32"), ("eager", "128"), ("sdpa", "32"), ("sdpa", "128")]
    for key in ("sdpa_speedup", "eager_peak_mb", "sdpa_peak_mb", "eager_seconds", "sdpa_seconds"):
        assert metrics[key] > 0, key
    assert metrics["max_seq_len"] == 128
    # The ratio of mean forward times over the repeats, with its interval from their spread.
    assert metrics["sdpa_speedup_lo"] <= metrics["sdpa_speedup"] <= metrics["sdpa_speedup_hi"]
    # The metrics JSON keeps 6 decimals: a forward pass of a few milliseconds is rounded by up to ~1e-4 of
    # itself, so the ratio of the rounded times can miss the stored ratio by twice that (seen: 1.6e-4).
    assert metrics["sdpa_speedup"] == pytest.approx(metrics["eager_seconds"] / metrics["sdpa_seconds"], rel=1e-3)
    assert metrics["flash_available"] == int(any(r[0] == "flash_attention_2" for r in ok))


# How far two attention kernels' logits may differ, by weights dtype: fp32 agrees to rounding; in bf16 (the
# default on CUDA, 8 mantissa bits) an H200 gave 7.8e-3 between eager and SDPA on this tiny model.
TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}


def test_implementations_agree(result):
    metrics, table, _ = result
    ok = [r for r in table if r["status"] == "ok"]
    (dtype,) = {r["dtype"] for r in ok}
    assert metrics["max_logit_diff"] < TOLERANCE[dtype]
    assert all(float(r["max_logit_diff"]) < TOLERANCE[dtype] for r in ok)


def test_peak_memory_grows_with_length(result):
    metrics, table, _ = result
    for impl in ("eager", "sdpa"):
        short, long = (float(r["peak_mb"]) for r in table if r["implementation"] == impl)
        assert long > 2 * short, impl  # 4x the tokens: at least the activations and logits grow 4x
    # Eager also holds the (B, heads, T, T) scores and a (B, 1, T, T) mask that SDPA's causal kernel never builds.
    assert metrics["eager_peak_mb"] > metrics["sdpa_peak_mb"]
    assert metrics["eager_memory_exponent"] > metrics["sdpa_memory_exponent"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU flash may be available")
def test_flash_unavailable_on_cpu_with_reason(result):
    metrics, table, _ = result
    (row,) = [r for r in table if r["implementation"] == "flash_attention_2"]
    assert row["status"] == "unavailable" and "CUDA" in row["reason"]
    assert metrics["flash_available"] == 0 and "flash_speedup" not in metrics


def test_cpu_peak_bytes_is_the_running_maximum():
    mib = 2**18  # float32 numbers in 1 MiB

    def work():
        a, b = torch.ones(mib), torch.ones(mib)  # 2 MiB live at once
        del a, b
        c = torch.ones(mib)  # 1 MiB: reuses the freed bytes, does not add to the peak
        return c.sum()

    peak = cpu_peak_bytes(work)
    assert 2 * 2**20 <= peak < 2.1 * 2**20


def test_growth_exponent():
    assert growth_exponent([(64, 1.0), (128, 2.0), (256, 4.0)]) == pytest.approx(1.0)
    assert growth_exponent([(128, 1.0), (256, 4.0)]) == pytest.approx(2.0)
    assert growth_exponent([(128, 1.0)]) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flash_attention_on_gpu(tiny_model, tmp_path):
    cfg = AttentionConfig(model=tiny_model, seq_lens="64,256", batch_size=2, repeats=1,
                          metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "plots"))
    run_attention(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    rows = [r for r in csv.DictReader(open(tmp_path / "plots" / "attention.csv"))
            if r["implementation"] == "flash_attention_2"]
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        assert rows[0]["status"] == "unavailable" and "flash-attn" in rows[0]["reason"]
        return
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert metrics["flash_available"] == 1 and metrics["flash_speedup"] > 0
    assert metrics["max_logit_diff"] < 0.5  # bfloat16 logits of a random model


@pytest.mark.parametrize(("flags", "message"), [
    (["--implementations", "eager,xformers"], "xformers"),
    (["--seq_lens", "16,abc"], "seq_lens"),
    (["--dtype", "float8"], "dtype"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
])
def test_bad_input_exits_2(flags, message, tiny_model, capsys, tmp_path):
    args = ["bench-attn", "--model", tiny_model, "--plots", str(tmp_path / "plots"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "plots").exists()
