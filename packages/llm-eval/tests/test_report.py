import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pytest  # noqa: E402
from llm_eval.cli import main  # noqa: E402
from llm_eval.report import TECHNIQUES, ReportConfig, run_report  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
CATS = {"arithmetic": 0, "facts": 1}
EVAL = {  # name: (exact_match, perplexity, rougeL, bleu, memory_mb)
    "base": (5.0, 8.0, 10.0, 2.0, 4.0),
    "sft_full": (80.0, 6.0, 70.0, 40.0, 4.0),
    "sft_lora": (74.0, 6.2, 65.0, 35.0, 4.1),
    "sft_qlora": (60.0, 6.5, 60.0, 30.0, 2.2),
    "int8": (79.0, 6.1, 69.0, 39.0, 2.5),
    "nf4": (70.0, 7.0, 66.0, 36.0, 1.6),
}
TRAIN = {  # name: (trainable_params, total_params, train_seconds, size_mb)
    "base": (1_000_000, 1_000_000, 120.0, 3.8),
    "sft_full": (1_000_000, 1_000_000, 60.0, 3.8),
    "sft_lora": (20_000, 1_020_000, 40.0, 0.08),
    "sft_qlora": (20_000, 1_020_000, 45.0, 0.08),
}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def reports(tmp_path):
    metrics, plots = tmp_path / "reports" / "metrics", tmp_path / "reports" / "plots"
    for name, (em, ppl, rouge, bleu, mem) in EVAL.items():
        per_cat = {f"exact_match_{c}": min(100.0, em + 10 * i) for c, i in CATS.items()}
        _write(metrics / f"eval_{name}.json", {
            "exact_match": em, **per_cat, "perplexity": ppl, "rougeL": rouge, "bleu": bleu, "memory_mb": mem,
            "eval_seconds": 1.5, "n_samples": 60})
    for name, (trainable, total, seconds, size) in TRAIN.items():
        _write(metrics / f"train_{name}.json", {
            "train_seconds": seconds, "train_loss": 1.0, "eval_loss": 1.1, "trainable_params": trainable,
            "total_params": total, "trainable_percent": 100 * trainable / total, "size_mb": size})
        (plots / f"train_{name}").mkdir(parents=True)
        (plots / f"train_{name}" / "train.csv").write_text("step,loss\n10,3.0\n20,2.0\n30,1.5\n")
        (plots / f"train_{name}" / "eval.csv").write_text("step,eval_loss\n15,2.5\n30,1.8\n")
    for name, (size, mem) in {"int8": (1.2, 2.6), "nf4": (0.9, 1.7)}.items():
        _write(metrics / f"quantize_{name}.json", {
            "size_mb": size, "memory_mb": mem, "reference_size_mb": 3.8, "reference_memory_mb": 4.0,
            "memory_ratio": 4.0 / mem, "quantize_seconds": 0.5})
    return tmp_path / "reports"


def _cfg(reports, **kwargs):
    return ReportConfig(preset="fast", metrics_dir=str(reports / "metrics"), plots_dir=str(reports / "plots"),
                        out_dir=str(reports), **kwargs)


def test_report_tables_goals_and_plots(reports):
    md_path = run_report(_cfg(reports))
    assert md_path == reports / "fast.md"
    md = md_path.read_text()
    # One side-by-side table joining eval_, train_ and quantize_ metrics by name, "—" where missing.
    assert ("| model | exact match | perplexity | ROUGE-L | BLEU | trainable params | train time (s) "
            "| size on disk (MB) | memory (MB) |") in md
    assert "| sft_full | 80.0 | 6.00 | 70.0 | 40.0 | 1,000,000 | 60.0 | 3.80 | 4.00 |" in md
    assert "| sft_lora | 74.0 | 6.20 | 65.0 | 35.0 | 20,000 (1.96%) | 40.0 | 0.08 | 4.10 |" in md
    assert "| nf4 | 70.0 | 7.00 | 66.0 | 36.0 | — | — | 0.90 | 1.60 |" in md
    assert md.index("| base |") < md.index("| sft_full |") < md.index("| int8 |") < md.index("| nf4 |")
    # Per-category exact match.
    assert "| model | arithmetic | facts |" in md and "| base | 5.0 | 15.0 |" in md
    # Goals, each with its number and verdict.
    assert "| full SFT exact match minus base (points) | 75.00 | >= 40 points | met |" in md
    assert "| LoRA exact-match gap to full SFT (points) | 6.00 | <= 10 points | met |" in md
    assert "| QLoRA exact-match gap to full SFT (points) | 20.00 | <= 15 points | missed |" in md
    assert "| LoRA trainable parameters (%) | 1.96 | < 5% | met |" in md
    assert "| nf4 memory reduction vs sft_full fp32 (x) | 2.50 | >= 2x | met |" in md
    assert "| int8 memory reduction vs sft_full fp32 (x) | 1.60 | no goal | info |" in md
    assert "| nf4 perplexity change vs sft_full (%) | 16.67 | <= 10% | missed |" in md
    assert "| int8 perplexity change vs sft_full (%) | 1.67 | <= 10% | met |" in md
    # A paragraph per technique, naming its paper.
    papers = [("sft_lora", "arXiv:2106.09685"), ("sft_qlora", "arXiv:2305.14314"),
              ("int8", "arXiv:2208.07339"), ("nf4", "arXiv:2305.14314"),
              ("base", "Touvron et al. 2023"), ("sft_full", "Ouyang")]
    for name, needle in papers:
        assert needle in TECHNIQUES[name][1] and needle in md
    # Plots: PNGs beside the report, linked from Markdown and embedded in the HTML.
    pngs = sorted(p.name for p in (reports / "fast").iterdir())
    assert pngs == ["exact_match.png", "exact_match_by_category.png", "loss_curves.png"]
    assert all((reports / "fast" / p).read_bytes().startswith(PNG) for p in pngs)
    assert "![Training and held-out loss per run](fast/loss_curves.png)" in md
    page = (reports / "fast.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "fast/loss_curves.png" not in page
    assert "<td>sft_lora</td><td>74.0</td>" in page and "<td>missed</td>" in page
    assert not list(reports.glob(".*tmp*"))  # no temp files left behind


def test_report_subset_and_missing_optional_metrics(reports):
    (reports / "metrics" / "train_sft_lora.json").unlink()
    md = run_report(_cfg(reports, models="sft_full,sft_lora")).read_text()
    assert "| sft_lora | 74.0 | 6.20 | 65.0 | 35.0 | — | — | — | 4.10 |" in md
    assert "| LoRA trainable parameters (%) | — | < 5% | not measured |" in md
    assert "| base |" not in md and "full SFT exact match minus base" not in md


def test_missing_eval_metrics_exit_2_and_write_nothing(reports, capsys):
    (reports / "metrics" / "eval_nf4.json").unlink()
    code = main(["report", "--preset", "fast", "--metrics_dir", str(reports / "metrics"),
                 "--plots_dir", str(reports / "plots"), "--out_dir", str(reports)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(reports / "metrics" / "eval_nf4.json") in err and "llm-eval run --name nf4" in err
    assert not (reports / "fast.md").exists() and not (reports / "fast.html").exists()
    assert not (reports / "fast").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="more than once"):
        ReportConfig(models="base,base")
    with pytest.raises(ValueError, match="at least one"):
        ReportConfig(models=" , ")


# ----------------------------------------------------------------------------- balanced sections

INFER = {
    "infer_generate.json": {"greedy_exact_match": 40.0, "greedy_distinct_2": 20.0, "greedy_tokens_per_s": 900.0,
                            "beam_exact_match": 41.0, "beam_tokens_per_s": 300.0, "temperature_exact_match": 30.0,
                            "temperature_distinct_2": 45.0},
    "infer_kv_cache.json": {"kv_speedup": 6.0, "static_speedup": 5.5, "max_new_tokens": 256},
    "infer_attention.json": {"sdpa_speedup": 1.4, "eager_peak_mb": 10.0, "sdpa_peak_mb": 4.0, "flash_available": 0},
    "infer_speculative.json": {"assisted_speedup": 1.2, "assisted_acceptance_rate": 0.6,
                               "assisted_identical_fraction": 1.0, "prompt_lookup_speedup": 1.8,
                               "prompt_lookup_acceptance_rate": 0.4, "prompt_lookup_identical_fraction": 0.5},
    "infer_batch.json": {"batch_speedup": 7.0, "largest_batch": 16, "continuous_tokens_per_s": 500.0,
                         "continuous_vs_static": 0.8},
    "infer_serve.json": {"requests": 64, "clients": 16, "errors": 0, "requests_per_s": 20.0, "latency_p50_s": 0.5,
                         "malformed_requests": 3, "malformed_4xx": 3},
}


@pytest.fixture
def balanced(reports):
    metrics, plots = reports / "metrics", reports / "plots"
    for name, data in INFER.items():
        _write(metrics / name, data)
    (plots / "infer_kv_cache").mkdir(parents=True)
    (plots / "infer_kv_cache" / "kv_cache.csv").write_text("cache,new_tokens,tokens_per_s\nnone,256,100.5\n")
    (plots / "infer_kv_cache" / "kv_cache_tokens_per_s.png").write_bytes(PNG)
    for name, em, params in (("student_kd", 60.0, 500_000), ("student_sft", 50.0, 500_000)):
        _write(metrics / f"eval_{name}.json", {"exact_match": em, "perplexity": 9.0})
        _write(metrics / f"train_{name}.json", {"teacher_parameters": 1_000_000, "student_parameters": params,
                                                "parameter_ratio": 2.0, "train_seconds": 30.0})
    return reports


def test_balanced_sections(balanced):
    cfg = _cfg(balanced, models="base,sft_full,student_kd,student_sft",
               sections="distill,generate,kv_cache,attention,speculative,batch,serve")
    cfg.preset = "balanced"
    md = run_report(cfg).read_text()
    for title in ("Knowledge distillation", "Decoding strategies", "KV cache", "Attention implementations",
                  "Speculative decoding", "Batching", "Serving"):
        assert f"## {title}" in md
    # Distillation: 60 / 80 = 75% of the teacher, +10 points over the control.
    assert "75.0% of the teacher" in md and "gains 10.0 points" in md
    # Goals: KV 6x >= 5 met; prompt lookup changed outputs, so its speedup counts as 0 (missed).
    assert "| KV cache speedup over no cache at 256 new tokens (x) | 6.00 | >= 5 | met |" in md
    assert "| prompt_lookup speedup over greedy at identical output (x) | 0.00 | >= 1.5 | missed |" in md
    assert "| server errors over 64 requests from 16 clients | 0.00 | <= 0 | met |" in md
    assert "| none | 256 | 100.50 |" in md  # the stage's CSV becomes a table
    assert (balanced / "balanced" / "kv_cache_kv_cache_tokens_per_s.png").is_file()
    assert "data:image/png;base64" in (balanced / "balanced.html").read_text()


def test_missing_section_input_names_the_stage(balanced, capsys):
    (balanced / "metrics" / "infer_batch.json").unlink()
    args = ["report", "--preset", "balanced", "--models", "sft_full", "--sections", "batch",
            "--metrics_dir", str(balanced / "metrics"), "--plots_dir", str(balanced / "plots"),
            "--out_dir", str(balanced)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "infer_batch.json" in err and "dvc repro infer_batch" in err
    assert not (balanced / "balanced.md").exists()


def test_unknown_section_exits_2(reports, capsys):
    assert main(["report", "--sections", "kv_cache,warp_drive", "--metrics_dir", str(reports / "metrics")]) == 2
    assert "warp_drive" in capsys.readouterr().err
