"""The smol report: the real-data section (skill vs knowledge categories, real sentiment) and the lessons table
that sets another profile's findings beside this one's."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
from llm_eval.cli import main  # noqa: E402
from llm_eval.report import ReportConfig, run_report, transfer  # noqa: E402
from llm_eval.report.findings import read_back  # noqa: E402

CATEGORIES = ("arithmetic", "string", "summarization", "classification", "facts", "translation")
PER_CATEGORY = 40


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _items(items_dir, name, right, ppl, predictions=None):
    """`right(category, i)` says whether item i of a category is answered; 30 text windows at `ppl`."""
    folder = items_dir / f"eval_{name}"
    folder.mkdir(parents=True)
    rows = []
    if predictions is None:
        for cat in CATEGORIES:
            for i in range(PER_CATEGORY):
                ok = right(cat, i)
                rows.append({"prompt": f"{cat} {i}?", "category": cat, "answer": "a", "prediction": "a" if ok else "b",
                             "correct": ok})
    else:  # sentiment: (answer, prediction) pairs
        for i, (answer, prediction) in enumerate(predictions):
            rows.append({"prompt": f"review {i}", "category": "sentiment", "answer": answer, "prediction": prediction,
                         "correct": prediction == answer})
    (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    windows = "" if ppl is None else "".join(
        json.dumps({"nll": 50 * math.log(ppl) + 3.0 * ((i % 5) - 2), "tokens": 50}) + "\n" for i in range(30))
    (folder / "perplexity.jsonl").write_text(windows)
    scores = {"exact_match": 100.0 * sum(r["correct"] for r in rows) / len(rows)}
    if ppl is not None:
        scores["perplexity"] = ppl
    _write(items_dir.parent / "metrics" / f"eval_{name}.json", scores)


def _speed(metrics, file, key, value, half):
    _write(metrics / file, {key: value, f"{key}_lo": value - half, f"{key}_hi": value + half})


SKILL = set(transfer.SKILLS)


def _profile(root, facts_after_lora, kv, sentiment=True):
    """A profile: base answers 5% of everything; LoRA answers 90% of the skills and `facts_after_lora` of the
    facts; QLoRA a little less. Perplexity rises 10% after LoRA."""
    items, metrics = root / "items", root / "metrics"
    _items(items, "base", lambda c, i: i < 2, 10.0)
    _items(items, "sft_lora", lambda c, i: i < (36 if c in SKILL else facts_after_lora), 11.0)
    _items(items, "sft_qlora", lambda c, i: i < (34 if c in SKILL else facts_after_lora), 11.2)
    _write(metrics / "train_sft_lora.json", {"trainable_params": 2_000, "total_params": 1_002_000,
                                             "train_seconds": 5.0, "size_mb": 0.1})
    if sentiment:
        labels = ["positive", "negative"] * 20
        _items(items, "sentiment_base", None, None, [(a, f"The review is {a}." if i < 30 else "It is a film.")
                                                     for i, a in enumerate(labels)])
        _items(items, "sentiment_sft_lora", None, None, [(a, a if i < 36 else "positive")
                                                         for i, a in enumerate(labels)])
        _items(items, "sentiment_sft_qlora", None, None, [(a, a) for a in labels])
    _speed(metrics, "infer_kv_cache.json", "kv_speedup", kv, 0.1)
    _speed(metrics, "infer_batch.json", "speedup_batch_16", 3.0, 0.1)
    return root


@pytest.fixture
def profiles(tmp_path):
    # The tiny profile's LoRA answers held-out facts (its base read them); the real model's does not.
    tiny = _profile(tmp_path / "tiny", facts_after_lora=36, kv=3.5)
    smol = _profile(tmp_path / "smol", facts_after_lora=3, kv=6.0)
    return tiny, smol


def _cfg(smol, tiny, sections="real"):
    return ReportConfig(preset="smol", models="base,sft_lora,sft_qlora", reference="base",
                        metrics_dir=str(smol / "metrics"), items_dir=str(smol / "items"),
                        plots_dir=str(smol / "plots"), out_dir=str(smol / "out"), sections=sections,
                        compare_metrics_dir=str(tiny / "metrics"), compare_items_dir=str(tiny / "items"),
                        base_model="smollm2")


def _table(md, heading):
    """The rows of the first table after `heading`, as lists of cells."""
    part = md.split(heading, 1)[1]
    lines = [line for line in part.split("\n\n## ", 1)[0].splitlines() if line.startswith("| ")]
    return [line.strip("| ").split(" | ") for line in lines[2:]]


def test_named_label_reads_the_first_label_in_a_sentence():
    assert transfer.named_label("The review is negative.") == "negative"
    assert transfer.named_label("Positive, though some parts are negative") == "positive"
    assert transfer.named_label("A film about a dog.") == ""


def test_lessons_table_sets_the_profiles_side_by_side(profiles):
    tiny, smol = profiles
    md = run_report(_cfg(smol, tiny)).read_text()
    assert md.index("## Key takeaways") < md.index("## What carries from the tiny profile") < md.index("## Findings")
    rows = {r[0]: r for r in _table(md, "## What carries from the tiny profile")}
    # Both LoRAs teach the skills: the same verdict, with each profile's own numbers.
    skills = rows["... on the categories that need no world knowledge"]
    assert skills[1].startswith("sft_lora vs base: +85.0") and skills[2].startswith("sft_lora vs base: +85.0")
    assert skills[3] == "same"
    # Held-out facts: learned by the tiny model's LoRA, not by the real model's (no effect on either side of 0).
    facts = rows["... on held-out facts"]
    assert "sft_lora better" in facts[1] and "within noise" in facts[2] and facts[3] == "different"
    assert "not knowledge" in facts[4]
    # The KV cache wins on both, by more on the real model; intervals that do not overlap say so.
    kv = rows["KV cache at the longest reply"]
    assert kv[3] == "same" and "larger on the real model (3.50x to 6.00x)" in kv[4]
    assert "Of 7 lessons, 6 came out the same, 1 differently and 0 cannot be compared yet" in md
    # Lessons measured on one side only (no attention or prompt-lookup metrics) are left out, not guessed.
    assert "SDPA against eager attention" not in rows and "Prompt lookup" not in rows
    assert "(1.0M parameters)" in md


def test_real_section_splits_skills_from_knowledge_and_scores_sentiment(profiles):
    tiny, smol = profiles
    md = run_report(_cfg(smol, tiny)).read_text()
    rows = {r[0]: r for r in _table(md, "## Real text and real sentences")}
    assert rows["base"][1].startswith("5.0 [") and rows["sft_lora"][1].startswith("90.0 [")
    assert rows["sft_lora"][2].startswith("7.5 [")  # facts and translation: no decided gain
    # The shipped model names the right label in a sentence 30 of 40 times; strict match counts none of them.
    assert rows["base"][4].startswith("0.0") and rows["base"][5].startswith("75.0 [")
    findings = read_back(md)
    assert any("LoRA, exact match, skill categories: sft_lora vs base: +85.0" in f for f in findings)
    assert any("LoRA, exact match, knowledge categories: sft_lora vs base" in f and "within noise" in f
               for f in findings)
    assert any("LoRA, real sentiment, label named: sft_lora vs base: +20.0" in f for f in findings)
    # Without full fine-tuning, LoRA and QLoRA are set against the base, and QLoRA against LoRA.
    assert any(f.startswith("QLoRA, exact match: sft_qlora vs sft_lora") for f in findings)
    goals = {r[0]: r for r in _table(md, "## Goals")}
    assert goals["LoRA exact-match gain on the categories that need no world knowledge (points)"][3] == "met"
    assert goals["LoRA perplexity change on real news text (%)"][3] == "met"
    assert "### base: A pretrained chat model: SmolLM2-135M-Instruct, as shipped" in md
    summary = json.loads((smol / "out" / "smol" / "summary.json").read_text())
    assert summary["preset"] == "smol" and summary["comparisons"] >= 8


def test_without_the_other_profile_the_table_says_so(profiles, tmp_path):
    _, smol = profiles
    md = run_report(_cfg(smol, tmp_path / "nowhere")).read_text()
    assert "No lesson was measured on both" in md


def test_missing_shipped_model_items_name_the_stage(profiles, capsys):
    tiny, smol = profiles
    shutil.rmtree(smol / "items" / "eval_base")
    code = main(["report", "--preset", "smol", "--models", "sft_lora", "--metrics_dir", str(smol / "metrics"),
                 "--items_dir", str(smol / "items"), "--out_dir", str(smol / "out"), "--sections", "real"])
    assert code == 2
    assert "smol_eval@base" in capsys.readouterr().err
    assert not (smol / "out" / "smol.md").exists()


def test_batch_goal_is_set_at_16_when_a_larger_batch_ran(profiles):
    tiny, smol = profiles
    _write(smol / "metrics" / "infer_batch.json", {
        "largest_batch": 64, "speedup_batch_16": 1.5, "speedup_batch_16_lo": 1.2, "speedup_batch_16_hi": 2.0,
        "batch_speedup": 4.0, "batch_speedup_lo": 3.3, "batch_speedup_hi": 5.2})
    md = run_report(_cfg(smol, tiny, sections="real,batch")).read_text()
    goals = {r[0]: r for r in _table(md, "## Goals")}
    assert goals["batch-16 throughput over batch 1 (x)"][3] == "missed"
    findings = read_back(md)
    assert any(f.startswith("Batching, speed: batch 16 vs batch 1: 1.50") for f in findings)
    assert any(f.startswith("Batching, speed: batch 64 vs batch 1: 4.00") for f in findings)


def test_unknown_base_model_paragraph_is_rejected():
    with pytest.raises(ValueError, match="base_model: unknown 'gpt9'"):
        ReportConfig(base_model="gpt9")


def test_compression_and_vllm_lessons_pair_each_profile_with_its_own_reference(profiles):
    """A compressed model is set against sft_full on the tiny profile and against the shipped model on the real
    one; vLLM's ratio on the real model is the mean over its separate runs."""
    tiny, smol = profiles
    _items(tiny / "items", "sft_full", lambda c, i: i < 36, 10.0)
    _items(tiny / "items", "gptq", lambda c, i: i < 36, 10.2)  # +2% on the tiny profile
    _items(smol / "items", "gptq", lambda c, i: i < 2, 12.0)  # +20% against the shipped model
    _speed(tiny / "metrics", "infer_vllm.json", "vllm_vs_static", 1.9, 0.2)
    for k, ratio in ((1, 2.9), (2, 3.1), (3, 3.0)):
        _speed(smol / "metrics", f"infer_vllm_run{k}.json", "vllm_vs_static", ratio, 0.05)
    rows, _ = transfer.lessons_table((tiny / "metrics", tiny / "items"), (smol / "metrics", smol / "items"))
    rows = {r[0]: r for r in rows}
    gptq = rows["GPTQ 4-bit weights keep held-out perplexity"]
    assert gptq[1].startswith("gptq vs sft_full: +2.0") and gptq[2].startswith("gptq vs base: +20.0")
    vllm = rows["vLLM against generate at the largest batch"]
    assert vllm[2].startswith("vLLM vs transformers generate: 3.00 [2.75, 3.25]x")  # t over 3 runs, sd 0.1
    assert vllm[3] == "same" and "larger on the real model (1.90x to 3.00x)" in vllm[4]
    assert "AWQ 4-bit weights keep held-out perplexity" not in rows  # measured on neither
