import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402
from llm_eval.cli import main  # noqa: E402
from llm_eval.report import TECHNIQUES, ReportConfig, run_report  # noqa: E402
from llm_eval.report.findings import read_back  # noqa: E402

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


N_ITEMS, N_WINDOWS, WINDOW = 100, 20, 50


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _with_interval(key, value, half):
    return {key: value, f"{key}_lo": value - half, f"{key}_hi": value + half}


def _write_items(items_dir, name, em, ppl, seed, prompts=None):
    """Per-item results that reproduce `em` and `ppl` exactly: prompt i is right iff i < em (so better models
    get a superset right), and each window's NLL is the model's mean plus noise that sums to zero."""
    folder = items_dir / f"eval_{name}"
    folder.mkdir(parents=True)
    prompts = prompts or [f"question {i}?" for i in range(N_ITEMS)]
    with open(folder / "answers.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            f.write(json.dumps({"prompt": prompt, "answer": "a", "prediction": "a" if i < em else "b",
                                "correct": i < em, "rougeL": None, "bleu": None}) + "\n")
    rng = random.Random(seed)
    noise = [rng.gauss(0.0, 5.0) for _ in range(N_WINDOWS)]
    noise = [x - sum(noise) / N_WINDOWS for x in noise]
    with open(folder / "perplexity.jsonl", "w") as f:
        for i, x in enumerate(noise):
            difficulty = 10.0 * (i - (N_WINDOWS - 1) / 2)  # shared by every model: cancels when paired
            f.write(json.dumps({"nll": WINDOW * math.log(ppl) + difficulty + x, "tokens": WINDOW}) + "\n")


@pytest.fixture
def reports(tmp_path):
    metrics, plots = tmp_path / "reports" / "metrics", tmp_path / "reports" / "plots"
    for seed, (name, (em, ppl, rouge, bleu, mem)) in enumerate(EVAL.items()):
        per_cat = {f"exact_match_{c}": min(100.0, em + 10 * i) for c, i in CATS.items()}
        scores = {"exact_match": em, **per_cat, "perplexity": ppl, "rougeL": rouge, "bleu": bleu}
        if name != "nf4":  # nf4's metrics carry no intervals: its cells show just the value
            scores = {}
            for key, value in {"exact_match": em, **per_cat, "rougeL": rouge, "bleu": bleu}.items():
                scores.update(_with_interval(key, value, 5.0))
            scores.update(_with_interval("perplexity", ppl, 0.25))
        _write(metrics / f"eval_{name}.json", {**scores, "memory_mb": mem, "eval_seconds": 1.5,
                                               "n_samples": N_ITEMS})
        _write_items(tmp_path / "reports" / "items", name, em, ppl, seed)
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
    kwargs.setdefault("preset", "fast")
    return ReportConfig(metrics_dir=str(reports / "metrics"), items_dir=str(reports / "items"),
                        plots_dir=str(reports / "plots"), out_dir=str(reports), **kwargs)


def _args(reports, *extra):
    return ["report", "--preset", "fast", "--metrics_dir", str(reports / "metrics"), "--items_dir",
            str(reports / "items"), "--plots_dir", str(reports / "plots"), "--out_dir", str(reports), *extra]


def _goal_rows(md):
    """goal label -> (value cell, target, verdict) from the Markdown goals table."""
    rows = [line.strip("| ").split(" | ") for line in md.splitlines() if line.startswith("| ")]
    return {r[0]: tuple(r[1:]) for r in rows if len(r) == 4 and r[0] != "goal"}


def _interval(cell):
    """'6.00 [2.00, 11.00]' -> (6.0, 2.0, 11.0)."""
    value, rest = cell.split(" [")
    lo, hi = rest.rstrip("]").split(", ")
    return float(value), float(lo), float(hi)


def test_report_tables_goals_and_plots(reports):
    md_path = run_report(_cfg(reports))
    assert md_path == reports / "fast.md"
    md = md_path.read_text()
    # One side-by-side table joining eval_, train_ and quantize_ metrics by name, "—" where missing; every
    # score with its interval from the metrics' _lo/_hi keys, just the value where they are absent (nf4).
    assert ("| model | exact match | perplexity | ROUGE-L | BLEU | trainable params | train time (s) "
            "| size on disk (MB) | memory (MB) | tokens/s |") in md
    assert ("| sft_full | 80.0 [75.0, 85.0] | 6.00 [5.75, 6.25] | 70.0 [65.0, 75.0] | 40.0 [35.0, 45.0] "
            "| 1,000,000 | 60.0 | 3.80 | 4.00 | — |") in md
    assert ("| sft_lora | 74.0 [69.0, 79.0] | 6.20 [5.95, 6.45] | 65.0 [60.0, 70.0] | 35.0 [30.0, 40.0] "
            "| 20,000 (1.96%) | 40.0 | 0.08 | 4.10 | — |") in md
    assert "| nf4 | 70.0 | 7.00 | 66.0 | 36.0 | — | — | 0.90 | 1.60 | — |" in md
    assert md.index("| base |") < md.index("| sft_full |") < md.index("| int8 |") < md.index("| nf4 |")
    # Per-category exact match: exact_match_lo / _hi are intervals, not categories.
    assert "| model | arithmetic | facts |" in md and "| base | 5.0 [0.0, 10.0] | 15.0 [10.0, 20.0] |" in md
    assert "| nf4 | 70.0 | 80.0 |" in md
    # Goals: differences between models carry their paired interval; the verdict is on the point estimate
    # and says so when the interval straddles the target.
    goal = _goal_rows(md)
    for label, (target, limit) in {"full SFT exact match minus base (points)": (">= 40 points", 40),
                                   "LoRA exact-match gap to full SFT (points)": ("<= 10 points", 10),
                                   "QLoRA exact-match gap to full SFT (points)": ("<= 15 points", 15),
                                   "nf4 perplexity change vs sft_full (%)": ("<= 10%", 10),
                                   "int8 perplexity change vs sft_full (%)": ("<= 10%", 10)}.items():
        value, lo, hi = _interval(goal[label][0])
        assert lo <= value <= hi and goal[label][1] == target, label
        met = value >= limit if target.startswith(">=") else value <= limit
        crosses = lo <= limit <= hi
        assert goal[label][2] == ("not decided (interval crosses the target)" if crosses else
                                  "met" if met else "missed")
    assert _interval(goal["full SFT exact match minus base (points)"][0])[0] == 75.0
    assert goal["full SFT exact match minus base (points)"][2] == "met"  # 75 points, far from 40
    assert _interval(goal["LoRA exact-match gap to full SFT (points)"][0])[0] == 6.0
    # 20 points against a limit of 15, but the interval [12, 28] holds 15: the test set cannot decide it.
    assert goal["QLoRA exact-match gap to full SFT (points)"] == ("20.00 [12.00, 28.00]", "<= 15 points",
                                                                  "not decided (interval crosses the target)")
    assert _interval(goal["nf4 perplexity change vs sft_full (%)"][0])[0] == pytest.approx(16.67, abs=0.01)
    assert _interval(goal["int8 perplexity change vs sft_full (%)"][0])[0] == pytest.approx(1.67, abs=0.01)
    assert goal["LoRA trainable parameters (%)"] == ("1.96", "< 5%", "met")
    assert goal["nf4 memory reduction vs sft_full fp32 (x)"] == ("2.50", ">= 2x", "met")
    assert goal["int8 memory reduction vs sft_full fp32 (x)"] == ("1.60", "no goal", "info")
    # A paragraph per technique, naming its paper.
    papers = [("sft_lora", "arXiv:2106.09685"), ("sft_qlora", "arXiv:2305.14314"),
              ("int8", "arXiv:2208.07339"), ("nf4", "arXiv:2305.14314"),
              ("base", "Touvron et al. 2023"), ("sft_full", "Ouyang")]
    for name, needle in papers:
        assert needle in TECHNIQUES[name][1] and needle in md
    # Plots: PNGs beside the report, linked from Markdown and embedded in the HTML.
    pngs = sorted(p.name for p in (reports / "fast").glob("*.png"))
    assert pngs == ["exact_match.png", "exact_match_by_category.png", "loss_curves.png"]
    assert sorted(p.name for p in (reports / "fast").iterdir()) == [*pngs, "summary.json"]
    assert all((reports / "fast" / p).read_bytes().startswith(PNG) for p in pngs)
    assert "![Training and held-out loss per run](fast/loss_curves.png)" in md
    page = (reports / "fast.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "fast/loss_curves.png" not in page
    assert "<td>sft_lora</td>\n<td>74.0 [69.0, 79.0]</td>" in page and "<td>met</td>" in page
    assert not list(reports.glob(".*tmp*"))  # no temp files left behind


def _findings(md):
    return [line for line in read_back(md) if not line.startswith("Identical")]


def _takeaways(md):
    section = md.split("## Key takeaways", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


def test_findings_come_first_paired_with_intervals(reports):
    md = run_report(_cfg(reports)).read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Key takeaways", "## Findings"] and headings[-1] == "## What ran"
    assert "95% bootstrap intervals" in md.split("## Side by side")[0]
    lines = _findings(md)
    assert [line.split(":")[0] for line in lines] == [
        "Supervised fine-tuning, exact match", "Supervised fine-tuning, perplexity change", "LoRA, exact match",
        "LoRA, perplexity change", "QLoRA, exact match", "QLoRA, perplexity change",
        "int8 quantization, exact match", "int8 quantization, perplexity change",
        "nf4 quantization, exact match", "nf4 quantization, perplexity change"]
    lines = [line for line in lines if "perplexity" not in line or "quantization" in line]
    # Items are nested (a better model gets a superset right), so every paired difference is one-signed.
    assert lines[0].startswith("Supervised fine-tuning, exact match: sft_full vs base: +75.0 [")
    assert lines[0].endswith("points, sft_full is better")
    assert lines[1].startswith("LoRA, exact match: sft_lora vs sft_full: -6.0 [") and lines[1].endswith(
        "sft_full is better")
    # int8 loses one prompt of 100: the interval reaches 0, so no winner is named.
    assert lines[3].startswith("int8 quantization, exact match: int8 vs sft_full: -1.0 [")
    assert lines[3].endswith(", within noise")
    # Perplexity: lower is better; +1.7% within window-to-window noise, +16.7% is not.
    assert lines[4].startswith("int8 quantization, perplexity change: int8 vs sft_full: +1.7 [")
    assert lines[4].endswith("%, within noise")
    assert lines[6].startswith("nf4 quantization, perplexity change: nf4 vs sft_full: +16.7 [")
    assert lines[6].endswith("%, sft_full is better")
    # Reproducible: the bootstrap is seeded.
    assert run_report(_cfg(reports)).read_text() == md


def test_paired_interval_is_narrower_than_the_cells(reports):
    """sft_full vs int8 differ on one prompt: the paired interval is far tighter than either model's own."""
    md = run_report(_cfg(reports)).read_text()
    line = next(line for line in _findings(md) if line.startswith("int8 quantization, exact match"))
    lo, hi = (float(x) for x in line.split("[")[1].split("]")[0].split(", "))
    assert hi - lo < 5.0  # each model's own interval in the table is 10 points wide


def test_report_subset_and_missing_optional_metrics(reports):
    (reports / "metrics" / "train_sft_lora.json").unlink()
    md = run_report(_cfg(reports, models="sft_full,sft_lora")).read_text()
    assert "| sft_lora | 74.0 [69.0, 79.0] | 6.20 [5.95, 6.45] | 65.0 [60.0, 70.0] | 35.0 [30.0, 40.0] " \
           "| — | — | — | 4.10 | — |" in md
    assert "| LoRA trainable parameters (%) | — | < 5% | not measured |" in md
    assert "| base |" not in md and "full SFT exact match minus base" not in md
    assert [line.split(":")[0] for line in _findings(md)] == ["LoRA, exact match", "LoRA, perplexity change"]


def test_quantized_rows_compare_to_a_reference_outside_the_table(reports):
    md = run_report(_cfg(reports, models="int8")).read_text()
    assert [line.split(":")[0] for line in _findings(md)] == [
        "int8 quantization, exact match", "int8 quantization, perplexity change"]
    assert _interval(_goal_rows(md)["int8 perplexity change vs sft_full (%)"][0])[0] == pytest.approx(1.67, abs=0.01)


def _timings(items_dir, name, seconds_per_batch):
    """Four generation batches of 25 prompts, 100 tokens each, with a little jitter."""
    with open(items_dir / f"eval_{name}" / "timings.jsonl", "w") as f:
        for jitter in (0.98, 1.02, 0.99, 1.01):
            f.write(json.dumps({"tokens": 100, "seconds": seconds_per_batch * jitter}) + "\n")


@pytest.fixture
def compressed(reports):
    """GPTQ and three pruned rows beside the fast fixture's rows, every row timed per batch."""
    metrics, items = reports / "metrics", reports / "items"
    rows = {  # name: (exact match, perplexity, seconds per batch, stage metrics)
        "gptq": (79.0, 6.1, 1.0, ("quantize", {"size_mb": 1.0, "size_ratio": 3.8, "memory_mb": 4.0,
                                               "memory_ratio": 1.0, "calibration_samples": 64})),
        "sparsegpt_10": (80.0, 6.05, 1.0, ("prune", {"target_sparsity": 0.1, "sparsity": 0.1, "groups_2_4": 0.0,
                                                     "size_mb": 3.8, "calibration_samples": 64})),
        "sparsegpt_50": (60.0, 6.6, 1.0, ("prune", {"target_sparsity": 0.5, "sparsity": 0.5, "groups_2_4": 0.4,
                                                    "size_mb": 3.8, "calibration_samples": 64})),
        "magnitude_50": (30.0, 9.0, 1.0, ("prune", {"target_sparsity": 0.5, "sparsity": 0.5, "groups_2_4": 0.4,
                                                    "size_mb": 3.8, "calibration_samples": 0})),
    }
    for seed, (name, (em, ppl, seconds, (kind, stage))) in enumerate(rows.items(), start=10):
        _write(metrics / f"eval_{name}.json", {**_with_interval("exact_match", em, 5.0),
                                               **_with_interval("perplexity", ppl, 0.25), "memory_mb": 4.0,
                                               **_with_interval("tokens_per_second", 100 / seconds, 3.0)})
        _write(metrics / f"{kind}_{name}.json", stage)
        _write_items(items, name, em, ppl, seed)
        _timings(items, name, seconds)
    _timings(items, "sft_full", 2.0)  # the reference decodes half as fast as every compressed row
    return reports


def test_compression_side_by_side(compressed):
    cfg = _cfg(compressed, models="sft_full,gptq,sparsegpt_10,sparsegpt_50,magnitude_50", preset="inference")
    md = run_report(cfg).read_text()
    lines = _findings(md)
    # Each compressed row against fp32 on the same items: exact match and perplexity. Speed is in the table
    # only: one eval run's batch-to-batch interval is no basis for a claim.
    assert [line.split(":")[0] for line in lines[:3]] == [
        "gptq quantization, exact match", "gptq quantization, perplexity change",
        "sparsegpt_10 pruning, perplexity change"]
    assert not [line for line in lines if "speed" in line]
    # sparsegpt_10 answers every item as fp32 does: no table row, one line under the table instead.
    assert ("Identical on every test item, so not in the table (1): sparsegpt_10 vs sft_full (sparsegpt_10 pruning, "
            "exact match).") in md
    assert any(line.startswith("magnitude_50 pruning, exact match: magnitude_50 vs sft_full: -50.0 [")
               for line in lines)
    compression = md.split("## Compression side by side", 1)[1].split("\n## ", 1)[0]
    gptq = next(line for line in compression.splitlines() if line.startswith("| gptq |"))
    assert gptq.startswith("| gptq | 1.00 (3.8x) | 4.00 (1.0x) | -1.0 [")
    assert gptq.split(" | ")[-1].startswith("2.00 [")  # tokens/s over fp32 on the same batches
    assert "| sparsegpt_50 | 50 | 50.0 | 40.0 | 60.0 [55.0, 65.0] | -20.0 [" in compression
    assert "64 calibration rows: conversations from the SFT train split" in compression
    assert "![Exact match and perplexity against the share of weights pruned](inference/pruning_curve.png)" in md
    assert (compressed / "inference" / "pruning_curve.png").read_bytes().startswith(PNG)
    goal = _goal_rows(md)
    assert goal["gptq size on disk, fp32 / gptq (x)"] == ("3.80", ">= 3", "met")
    # One prompt of 100 lost: the paired interval holds 0, so "within noise of fp32" is met.
    assert goal["gptq exact-match change vs sft_full (points)"][1:] == ("interval contains 0", "met")
    assert goal["sparsegpt_50 perplexity change vs sft_full (%)"][2] == "met"  # +10% <= 20%
    assert goal["magnitude_50 perplexity change vs sft_full (%)"][1:] == ("no goal", "info")
    # One paragraph per pruning method, however many rows use it.
    assert md.count("### sparsegpt: SparseGPT pruning") == 1 and "arXiv:2301.00774" in md
    assert "### magnitude: Magnitude pruning" in md and "### gptq: GPTQ 4-bit weights" in md


def test_the_calibration_note_names_the_profiles_calibration_rows(compressed):
    # The smol path calibrates on real news documents, not the world's chats: the note must say which.
    md = run_report(_cfg(compressed, models="sft_full,gptq", preset="smol", base_model="smollm2")).read_text()
    compression = md.split("## Compression side by side", 1)[1].split("\n## ", 1)[0]
    assert "64 calibration rows: real news documents from the train split of data/real/news" in compression
    assert "conversations from the SFT train split" not in compression


def test_speed_needs_the_same_batches(compressed):
    _timings(compressed / "items", "gptq", 1.0)
    with open(compressed / "items" / "eval_gptq" / "timings.jsonl", "a") as f:
        f.write(json.dumps({"tokens": 5, "seconds": 0.1}) + "\n")
    with pytest.raises(ValueError, match="not the same batches"):
        run_report(_cfg(compressed, models="sft_full,gptq", preset="inference"))


def test_missing_eval_metrics_exit_2_and_write_nothing(reports, capsys):
    (reports / "metrics" / "eval_nf4.json").unlink()
    code = main(_args(reports))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(reports / "metrics" / "eval_nf4.json") in err and "llm-eval run --name nf4" in err
    assert not (reports / "fast.md").exists() and not (reports / "fast.html").exists()
    assert not (reports / "fast").exists()


@pytest.mark.parametrize("file", ["answers.jsonl", "perplexity.jsonl"])
def test_missing_items_exit_2_and_name_the_fix(reports, capsys, file):
    (reports / "items" / "eval_sft_lora" / file).unlink()
    assert main(_args(reports)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(reports / "items" / "eval_sft_lora" / file) in err
    assert "dvc repro eval@sft_lora" in err and "--items" in err
    assert not (reports / "fast.md").exists()


def test_mismatched_prompts_are_a_one_line_error(reports, capsys):
    other = [f"question {i}?" for i in range(N_ITEMS)]
    other[3], other[4] = other[4], other[3]  # same prompts, another order: not a paired comparison
    (reports / "items" / "eval_sft_lora" / "answers.jsonl").unlink()
    (reports / "items" / "eval_sft_lora" / "perplexity.jsonl").unlink()
    (reports / "items" / "eval_sft_lora").rmdir()
    _write_items(reports / "items", "sft_lora", 74.0, 6.2, 0, prompts=other)
    assert main(_args(reports)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the same test prompts" in err
    assert str(reports / "items" / "eval_sft_lora" / "answers.jsonl") in err
    assert str(reports / "items" / "eval_sft_full" / "answers.jsonl") in err
    assert not (reports / "fast.md").exists()


def test_mismatched_perplexity_windows_are_a_one_line_error(reports, capsys):
    path = reports / "items" / "eval_nf4" / "perplexity.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # one window fewer
    assert main(_args(reports, "--models", "sft_full,nf4")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the same text windows" in err
    assert str(path) in err and str(reports / "items" / "eval_sft_full" / "perplexity.jsonl") in err


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
    "infer_batch.json": {"batch_speedup": 7.0, "batch_speedup_lo": 4.5, "batch_speedup_hi": 9.0, "largest_batch": 16,
                         "continuous_tokens_per_s": 500.0, "continuous_vs_static": 0.8},
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
    for seed, (name, em, params) in enumerate((("student_kd", 60.0, 500_000), ("student_sft", 50.0, 500_000))):
        _write(metrics / f"eval_{name}.json", {**_with_interval("exact_match", em, 9.5), "perplexity": 9.0})
        _write_items(reports / "items", name, em, 9.0, 10 + seed)
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
    # Distillation: 60 / 80 = 75% of the teacher; +10 points over the control on the paired difference
    # (student_kd gets a superset of student_sft's prompts right), so the interval excludes 0.
    assert "75.0% of the teacher" in md
    assert "distillation moves exact match by +10.0 [" in md and "points over the control: a real gain" in md
    assert "| student_kd (distilled) | 500,000 | 60.0 [50.5, 69.5] | 75.0 |" in md
    assert "| sft_full (teacher) | 1,000,000 | 80.0 [75.0, 85.0] | 100.0 |" in md
    # The report and the distill section state the same comparison: it is listed once, last of the report's.
    findings = _findings(md)
    distill = [line for line in findings if line.startswith("Distillation, exact match: student_kd vs student_sft")]
    assert len(distill) == 1 and distill[0].endswith("student_kd is better")
    assert md.index("## Findings") < md.index("## Side by side") < md.index("## Knowledge distillation")
    assert [line for line in md.splitlines() if line.startswith("## ")][-1] == "## What ran"
    # Goals: KV 6x >= 5 met; prompt lookup changed outputs, so its speedup counts as 0 (missed).
    assert "| KV cache speedup over no cache at 256 new tokens (x) | 6.00 | >= 5 | met |" in md
    assert "| prompt_lookup speedup over greedy at identical output (x) | 0.00 | >= 1.5 | missed |" in md
    # A speed goal shows its interval over repeated runs, and says when that interval straddles the target.
    assert ("| batch-16 throughput over batch 1 (x) | 7.00 [4.50, 9.00] | >= 5 | not decided (interval crosses the "
            "target) |" in md)
    assert "| server errors over 64 requests from 16 clients | 0.00 | <= 0 | met |" in md
    assert "| none | 256 | 100.50 |" in md  # the stage's CSV becomes a table
    assert (balanced / "balanced" / "kv_cache_kv_cache_tokens_per_s.png").is_file()
    assert "data:image/png;base64" in (balanced / "balanced.html").read_text()


def test_vllm_runs_as_separate_stages_give_an_interval_over_the_runs(balanced):
    """`infer_vllm_run<k>.json` (one per separate run of the stage) instead of one infer_vllm.json: the ratio is the
    mean over runs with Student's t interval over them, and each run's own numbers are listed."""
    metrics = balanced / "metrics"
    for k, ratio in ((1, 2.0), (2, 2.4), (3, 2.2)):
        _write(metrics / f"infer_vllm_run{k}.json",
               {"prompts": 64, "largest_batch": 64, "vllm_available": 1, "vllm_match_fraction": 1.0,
                "vllm_tokens_per_s": 100.0 * ratio, "tokens_per_s_batch_64": 100.0,
                **_with_interval("vllm_vs_static", ratio, 0.05)})
    cfg = _cfg(balanced, models="sft_full", sections="vllm")
    md = run_report(cfg).read_text()
    section = md.split("## vLLM against transformers generate", 1)[1].split("\n## ", 1)[0]
    assert "mean over 3 separate runs" in section
    assert "| 2 | 240 | 100 | 2.40 [2.35, 2.45] |" in section  # run 2 and its within-run interval
    # 2.2 [1.70, 2.70] over runs: the >= 2x goal is not decided, though each run's own interval would decide it
    assert "vLLM throughput over transformers generate, batch 64 (x) | 2.20 [1.70, 2.70] | >= 2 | not decided" in md


def test_missing_section_input_names_the_stage(balanced, capsys):
    (balanced / "metrics" / "infer_batch.json").unlink()
    args = ["report", "--preset", "balanced", "--models", "sft_full", "--sections", "batch",
            "--metrics_dir", str(balanced / "metrics"), "--items_dir", str(balanced / "items"),
            "--plots_dir", str(balanced / "plots"), "--out_dir", str(balanced)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "infer_batch.json" in err and "dvc repro infer_batch" in err
    assert not (balanced / "balanced.md").exists()


def test_distillation_within_noise_names_no_winner(balanced):
    """student_kd right on one prompt more than the control: +1 point, an interval that reaches 0."""
    for name in ("student_kd", "student_sft"):
        for file in ("answers.jsonl", "perplexity.jsonl"):
            (balanced / "items" / f"eval_{name}" / file).unlink()
        (balanced / "items" / f"eval_{name}").rmdir()
    _write_items(balanced / "items", "student_kd", 51.0, 9.0, 10)
    _write_items(balanced / "items", "student_sft", 50.0, 9.0, 11)
    md = run_report(_cfg(balanced, models="sft_full", sections="distill")).read_text()
    assert "distillation moves exact match by +1.0 [+0.0, +3.0] points over the control: within noise" in md
    (line,) = _findings(md)  # the section's comparison, though the students are not rows of the table
    assert line == "Distillation, exact match: student_kd vs student_sft: +1.0 [+0.0, +3.0] points, within noise"
    assert "| distillation gain over the SFT control (points) | 1.00 [0.00, 3.00] | no goal | info |" in md


def test_unknown_section_exits_2(reports, capsys):
    assert main(["report", "--sections", "kv_cache,warp_drive", "--metrics_dir", str(reports / "metrics")]) == 2
    assert "warp_drive" in capsys.readouterr().err


def test_contents_and_what_each_technique_bought(reports):
    md = run_report(_cfg(reports)).read_text()
    contents = md.split("## Key takeaways")[0]
    for title in ("Key takeaways", "Findings", "Side by side", "What each technique bought and cost", "Goals",
                  "What ran"):
        anchor = title.lower().replace(" ", "-")
        assert f"[{title}](#{anchor})" in contents, title
    html = (reports / "fast.html").read_text()
    assert '<h2 id="what-each-technique-bought-and-cost">' in html and 'href="#what-ran"' in html
    section = md.split("## What each technique bought and cost")[1].split("\n## ")[0]
    rows = {line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")
            for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| model", "| ---"))}
    # Each model against what it was made from; the base has nothing to be set against.
    assert set(rows) == {"sft_full", "sft_lora", "sft_qlora", "int8", "nf4"}
    assert rows["sft_full"][1] == "base" and rows["sft_lora"][1] == "sft_full" and rows["int8"][1] == "sft_full"
    # Items are nested (a better model gets a superset right): full SFT is +75 points over the base, a real gain;
    # int8 misses one prompt of 100: within noise.
    assert rows["sft_full"][2].startswith("+75.0 [") and "within noise" not in rows["sft_full"][2]
    assert rows["int8"][2].startswith("-1.0 [") and rows["int8"][2].endswith("within noise")
    assert rows["sft_lora"][4] == "40" and rows["sft_lora"][5] == "20,000 (2.0%)" and rows["int8"][6] == "1.20"
