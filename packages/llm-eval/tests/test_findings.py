"""Findings as data, the rules that pick a report's key takeaways, the report card, and Markdown to HTML."""

import json

import pytest
from llm_eval.report import card, render
from llm_eval.report import findings as fd
from llm_eval.report.build import NOT_DECIDED, _goal, goal_tally
from llm_eval.stats import Estimate


def test_verdicts_name_a_winner_only_when_the_interval_decides():
    assert fd.exact_match("SFT", Estimate(10.0, 5.0, 15.0), "sft", "base").verdict == "sft is better"
    assert fd.exact_match("SFT", Estimate(-10.0, -15.0, -5.0), "sft", "base").verdict == "base is better"
    assert fd.exact_match("SFT", Estimate(1.0, -1.0, 3.0), "sft", "base").verdict == "within noise"
    # Lower perplexity is better.
    assert fd.perplexity("q", Estimate(3.0, 1.0, 5.0), "nf4", "fp32").verdict == "fp32 is better"
    assert fd.speed("KV", Estimate(3.0, float("nan"), float("nan")), "cache", "none").verdict == (
        "no interval (a single run)")


def test_a_speed_ratio_spanning_over_2x_is_unstable_not_within_noise():
    """One slow run of eleven gave the fp8 cache 0.52 [0.23, 2.45]x: the timings, not the cache, are in doubt."""
    f = fd.speed("KV cache", Estimate(0.52, 0.23, 2.45), "fp8-quantized KV cache", "no cache")
    assert f.unstable and not f.decided and f.verdict.startswith("unstable timings")
    assert "within noise" not in f.line
    assert fd.ratio_note(Estimate(0.52, 0.23, 2.45)).startswith(" (unstable timings")
    # 1.69 to 2.11 spans 1.25x: a decided speedup.
    assert fd.speed("vLLM", Estimate(1.89, 1.69, 2.11), "vLLM", "generate").verdict == "vLLM is better"
    assert fd.ratio_note(Estimate(1.02, 0.9, 1.1)) == " (within noise: no measurable difference)"


def test_table_groups_by_technique_and_collapses_identical_comparisons():
    found = [fd.exact_match("LoRA", Estimate(5.0, 3.0, 7.0), "lora", "full"),
             fd.exact_match("int8", Estimate(0.0, 0.0, 0.0), "int8", "full"),
             fd.perplexity("LoRA", Estimate(20.0, 15.0, 25.0), "lora", "full")]
    rows, identical = fd.table(found)
    assert [r[:3] for r in rows] == [["LoRA", "lora vs full", "exact match"], ["", "lora vs full", "perplexity change"]]
    assert identical == [found[1]]
    assert fd.identical_line(identical) == ("Identical on every test item, so not in the table (1): int8 vs full "
                                            "(int8, exact match).")


def test_takeaways_by_rule():
    found = [fd.exact_match("SFT", Estimate(90.0, 88.0, 92.0), "sft", "base"),
             fd.perplexity("SFT", Estimate(12.0, 10.0, 14.0), "sft", "base"),
             fd.exact_match("LoRA", Estimate(1.0, -1.0, 3.0), "lora", "sft"),
             fd.exact_match("nf4 quantization", Estimate(-2.0, -3.0, -1.0), "nf4", "sft"),
             fd.exact_match("magnitude_50 pruning", Estimate(-40.0, -44.0, -36.0), "magnitude_50", "sft"),
             fd.exact_match("magnitude_70 pruning", Estimate(-80.0, -84.0, -76.0), "magnitude_70", "sft"),
             fd.exact_match("Parity", Estimate(0.0, 0.0, 0.0), "server", "in-process"),
             fd.speed("KV cache", Estimate(0.52, 0.23, 2.45), "fp8 cache", "no cache")]
    key = fd.takeaways(found, {"met": 3, "missed": 1, "not decided": 2},
                       ("Quantization trades size for exact match: nf4 4.2x smaller.", {"nf4 quantization"}))
    assert 3 <= len(key) <= fd.MAX_TAKEAWAYS
    # The largest effects first, one per family: the 70% pruning level speaks for pruning, once.
    assert key[0] == ("SFT trades one metric for another: sft vs base is better on exact match (+90.0 [+88.0, "
                      "+92.0] points) and worse on perplexity change (+12.0 [+10.0, +14.0]%).")
    assert key[1] == ("magnitude_70 pruning: magnitude_70 vs sft, exact match -80.0 [-84.0, -76.0] points; "
                      "sft is better.")
    assert not any("magnitude_50" in k for k in key)
    # nf4 is covered by the cost sentence, so it gets no sentence of its own.
    assert key[2] == "Quantization trades size for exact match: nf4 4.2x smaller."
    assert key[3] == ("1 of 8 comparisons is within noise (the interval holds no effect), the largest lora vs sft, "
                      "exact match: +1.0 [-1.0, +3.0] points; 1 identical on every test item (named under the findings "
                      "table).")
    assert key[4].startswith("Unstable timings") and "fp8 cache vs no cache 0.52 [0.23, 2.45]x" in key[4]
    assert key[5] == "Goals: 3 met, 1 missed, 2 not decided (not decided: the interval straddles the target)."
    assert fd.takeaways([]) == ["No two rows of this report are compared."]


def test_goals_have_three_states():
    met = _goal("gain", Estimate(50.0, 45.0, 55.0), ">=", 40, " points")
    missed = _goal("gain", Estimate(30.0, 25.0, 35.0), ">=", 40, " points")
    straddles = _goal("GRPO win rate", Estimate(50.73, 49.64, 51.81), ">=", 50, "%")
    assert (met.verdict, missed.verdict, straddles.verdict) == ("met", "missed", NOT_DECIDED)
    assert _goal("errors", 0.0, "<=", 0, "").verdict == "met"  # no interval: the value decides
    assert goal_tally([met, missed, straddles, straddles]) == {"met": 1, "missed": 1, "not decided": 2}


def test_html_is_the_markdown_rendered_with_heading_ids_and_embedded_figures(tmp_path):
    blocks = [("h1", "Report"), ("contents",), ("h2", "Key takeaways"), ("ul", ["a <name> b", "x_<y> *z*"]),
              ("table", ["model", "cell"], [["sft_full", "1 | 2"]]), ("img", "plot.png", "A plot")]
    md = render.to_markdown(blocks, "fast")
    assert "Contents: [Key takeaways](#key-takeaways)" in md and "![A plot](fast/plot.png)" in md
    assert "- x\\_\\<y> \\*z\\*" in md and "| sft_full | 1 \\| 2 |" in md
    page = render.to_html(md, {"plot.png": b"\x89PNG"}, "Report")
    assert '<h2 id="key-takeaways">Key takeaways</h2>' in page and 'href="#key-takeaways"' in page
    assert "<li>a &lt;name&gt; b</li>" in page and "<li>x_&lt;y&gt; *z*</li>" in page  # no tag, no emphasis
    assert "<td>1 | 2</td>" in page and 'src="data:image/png;base64,iVBORw==" alt="A plot"' in page
    assert "fast/plot.png" not in page


def _summary(out, preset, techniques, machine="CPU X (AVX2), 2 cores"):
    (out / preset).mkdir(parents=True)
    found = [fd.exact_match(t, Estimate(v, v - 1, v + 1), "a", "b") for t, v in techniques]
    data = card.summary(preset, {"a": {"train": {"train_seconds": 12.0}, "eval": {"eval_seconds": 3.0,
                                                                               "memory_mb": 4.5}}},
                        found, ["one"], {"met": 1, "missed": 0, "not decided": 1})
    (out / preset / card.SUMMARY).write_text(json.dumps({**data, "machine": machine}))


def test_card_lists_each_technique_once_across_presets(tmp_path):
    _summary(tmp_path, "balanced", [("SFT", 90.0), ("KV cache", 3.0)])
    _summary(tmp_path, "fast", [("SFT", 90.0)])
    md = card.write_card(tmp_path).read_text()
    presets = [line for line in md.split("## What a run costs")[0].splitlines()
               if line.startswith(("| fast", "| balanced"))]
    assert presets == ["| fast | CPU X (AVX2), 2 cores | 1 | 15 | 1 / 0 / 1 | 1 / 0 / 1 |",
                       "| balanced | CPU X (AVX2), 2 cores | 1 | 15 | 2 / 0 / 2 | 1 / 0 / 1 |"]
    assert md.count("| SFT |") == 1 and "| SFT | fast | a vs b | exact match | +90.0 [+89.0, +91.0] points | 12 |" in md
    assert "| KV cache | balanced |" in md and "— | 4.50 | a is better |" in md
    # What a run costs: the record `invoke path` left, or a dash for a preset not run through it.
    assert "| balanced | — | — | — | no run recorded yet |" in md
    assert (tmp_path / "card.html").read_text().count("<tr>") == 9  # three headers, 2 + 2 presets, 2 techniques
    (tmp_path / card.RUNS).mkdir()
    (tmp_path / card.RUNS / "fast.json").write_text(json.dumps(
        {"preset": "fast", "seconds": 750, "full_run": True, "machine": "CPU X (AVX2), 2 cores",
         "peak_ram_mb": 2100, "disk_mb": 350, "environments_mb": {".venv": 5000}}))
    md = card.write_card(tmp_path).read_text()
    assert "| fast | 12 min | 2.1 GB | 0.3 GB (+ 5.0 GB environments) | CPU X (AVX2), 2 cores, every stage run |" in md
    assert "Where that time went" not in md  # a record without stage times
    (tmp_path / card.RUNS / "balanced.json").write_text(json.dumps(
        {"preset": "balanced", "seconds": 750, "full_run": True, "machine": "CPU X (AVX2), 2 cores",
         "peak_ram_mb": 2100, "disk_mb": 350, "environments_mb": {}}))
    assert "| balanced | 12 min | 2.1 GB | 0.3 GB | CPU X" in card.write_card(tmp_path).read_text()  # none measured
    (tmp_path / card.RUNS / "balanced.json").unlink()
    record = json.loads((tmp_path / card.RUNS / "fast.json").read_text())
    (tmp_path / card.RUNS / "fast.json").write_text(json.dumps({**record, "stage_seconds": {"synth": 30, "sft": 600}}))
    md = card.write_card(tmp_path).read_text()
    timing = md.split("Where that time went", 1)[1]
    assert timing.index("| fast | sft | 600 | 80% |") < timing.index("| fast | synth | 30 | 4% |")


def test_card_names_a_broken_summary(tmp_path):
    (tmp_path / "fast").mkdir()
    (tmp_path / "fast" / card.SUMMARY).write_text("{")
    with pytest.raises(ValueError, match=r"fast/summary.json: not valid JSON .*dvc repro report_fast"):
        card.write_card(tmp_path)
