"""What a user reads: it describes the product, never how it was built, and quotes no number that can go stale.

Every measured number in README.md and docs/ is either generated (docs/benchmarks.md, by `invoke bench`;
the reports and the card, by `llm-eval report`) or listed in CLAIMS below with where it comes from, and
checked against that source. A number with a unit that is neither claimed nor a setting named in SETTINGS
fails the test, so a hand-typed result cannot slip in.
"""

import importlib.util
import io
import json
import math
import re
import time

import pytest
import yaml
from invoke import Exit, MockContext, Result
from llm_eval.report import findings
from llm_eval.stats import LEVEL, N_BOOT

from tests.conftest import REPO


def _tasks():
    """tasks.py, loaded from its file: the repository root is not on pytest's import path."""
    spec = importlib.util.spec_from_file_location("llm_lab_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _presets() -> dict:
    return _tasks().PRESETS


def test_path_record_times_each_stage_from_dvc_output(monkeypatch):
    """`invoke path` passes DVC's output through a StageClock: each stage runs from its 'Running stage' line
    to the next one's, the last to the end of the run."""
    clock_cls, now = _tasks().StageClock, iter([10.0, 25.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(now))
    out = io.StringIO()
    clock = clock_cls(out)
    clock.write("Running stage 'smol_import':\n> llm-train import\n")
    clock.write("Stage 'synth' didn't change, skipping\nRunning stage 'smol_data':\n")
    assert out.getvalue().count("Running stage") == 2  # the output still reaches the terminal
    assert clock.seconds(stop=40.0) == {"smol_import": 15, "smol_data": 15}
    assert clock_cls(io.StringIO()).seconds(stop=1.0) == {}


def test_package_suites_run_side_by_side_and_every_failure_is_named():
    """`invoke test` runs every package suite even when one fails, names each failed one, and only then stops
    short of the cross-package tests."""
    tasks = _tasks()
    suite = "uv run --package {} pytest packages/{}/tests -m 'not slow'"
    results = {suite.format(n, n): Result(exited=1 if n in ("llm-train", "llm-eval") else 0, stdout=f"{n} out\n")
               for n in tasks.PACKAGES}
    c = MockContext(run=results)
    with pytest.raises(Exit, match=r"package tests failed: llm-(train|eval), llm-(eval|train) "):
        tasks.test(c, fast=True)
    assert {call.args[0] for call in c.run.call_args_list} == set(results)  # every suite ran, not the root tests
    assert all(call.kwargs["env"] == {"OMP_NUM_THREADS": "1"} for call in c.run.call_args_list)
    with pytest.raises(Exit, match="--jobs must be >= 1, got 0"):
        tasks.test(MockContext(), jobs=0)


READ_BY_USERS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
                 *sorted(str(p.relative_to(REPO)) for p in (REPO / "reports").glob("*.md")), "params.yaml",
                 "tasks.py", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("packages/*/README.md")),
                 *sorted(str(p.relative_to(REPO)) for p in REPO.glob("profiles/*/README.md"))]
# Words about how the project was made rather than what it is; "here" and "this machine" name no place.
PROCESS = re.compile(r"\bstop \d+|\bthe issue\b|\bissues? \d+|\bissue's\b|\bsessions?\b|\blent\b|"
                     r"\bcommitted (?:run|profile)\b|\bhere\b|\bthis machine\b", re.IGNORECASE)
WRITTEN = ["README.md", "docs/reading-reports.md", "docs/tiny-profile.md", "docs/reproducibility.md",
           "docs/environments.md", "docs/serving.md", "docs/scaling.md", "docs/contracts.md", "docs/real-model.md"]
GENERATED = ["docs/benchmarks.md"]  # `invoke bench` writes it from reports/bench/*.json
MEASURED = re.compile(r"(?<![\w.])[±~]?\d[\d,.]*(?:\s?(?:%|x\b|s\b|min\b|MB\b|GB\b|tokens/s|points|nats)|M\b)")


def _text(file: str) -> str:
    return re.sub(r"\s+", " ", (REPO / file).read_text())


def _metrics(name: str) -> dict:
    return json.loads((REPO / "reports" / "metrics" / f"{name}.json").read_text())


def _test_items() -> int:
    return int(_metrics("eval_sft_full")["n_samples"])


# (file, sentence with {} where the number stands, the number as its source gives it)
CLAIMS = [
    ("docs/tiny-profile.md", "the test set has {} prompts", lambda: f"{_test_items():,}"),
    ("docs/tiny-profile.md", "an interval of about ±{} points",  # 95% normal interval of a proportion at 50%
     lambda: f"{round(100 * 1.96 * math.sqrt(0.25 / _test_items()))}"),
    ("docs/tiny-profile.md", "a Llama (pre-RMSNorm, rotary positions, SwiGLU) of {} parameters",
     lambda: f"{_metrics('train_base')['trainable_params'] / 1e6:.1f}M"),
    ("docs/reading-reports.md", "resample the items with replacement {} times", lambda: f"{N_BOOT:,}"),
    ("docs/reading-reports.md", "shown as `value [{} interval]`", lambda: f"{100 * LEVEL:.0f}%"),
    ("docs/reading-reports.md", "a speed ratio whose interval spans more than {}",
     lambda: f"{findings.UNSTABLE_SPAN:g}x"),
    ("docs/reading-reports.md", "at most {} sentences", lambda: {8: "eight"}[findings.MAX_TAKEAWAYS]),
    ("README.md", "at most {} sentences", lambda: {8: "eight"}[findings.MAX_TAKEAWAYS]),
    ("README.md", "A speed ratio whose interval spans more than {} reads", lambda: f"{findings.UNSTABLE_SPAN:g}x"),
    ("README.md", "with their {} intervals", lambda: f"{100 * LEVEL:.0f}%"),
    ("README.md", "SparseGPT pruning at {} and 2:4",
     lambda: f"{round(100 * min(_sparsities()))}–{round(100 * max(_sparsities()))}%"),
    ("docs/real-model.md", "SparseGPT at {} and in the 2:4 pattern",
     lambda: f"{round(100 * _smol_prune()['sparsegpt_50']['sparsity'])}%"),
]
# Numbers with a unit that are settings, targets or conventions, not results.
SETTINGS = [
    ("docs/reading-reports.md", "with its 95% interval"),  # the confidence level, claimed above
    ("docs/reading-reports.md", "(a KV-cache speedup of at least 5x, a LoRA gap to full SFT of at most 10 points"),
    ("docs/reading-reports.md", "a speed ratio whose interval spans more than 2x: one slow run"),
    ("docs/tiny-profile.md", "an exact match near 50%"),
    ("docs/tiny-profile.md", "(perplexity after full SFT at most 2x the base's)"),
    ("docs/reproducibility.md", "win rates near 50%"),
    ("docs/scaling.md", "stays within 2% of one process's"),  # the tolerance of test_distributed.py
    ("docs/scaling.md", "on one 16 GB GPU"),  # the profile's target card
    ("docs/contracts.md", "(bootstrap over test items"),
    ("docs/contracts.md", "(200s with no text)"),  # HTTP status codes
    ("docs/contracts.md", "a metric with a 95% interval"),
    ("docs/real-model.md", "SmolLM2-135M-Instruct"),  # the model's name
    ("README.md", "SmolLM2-135M-Instruct"),
]


def _smol_prune() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["smol"]["compress"]["prune"]


def _sparsities() -> list[float]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return [row["sparsity"] for row in params["compress"]["prune"].values() if row["pattern"] == "unstructured"]


def test_no_process_words_where_users_read():
    found = [f"{file}:{n}: {line.strip()[:100]}" for file in READ_BY_USERS
             for n, line in enumerate((REPO / file).read_text().splitlines(), 1) if PROCESS.search(line)]
    assert not found, "history belongs in git log:\n" + "\n".join(found)


def test_claimed_numbers_match_their_source():
    for file, sentence, source in CLAIMS:
        expected = sentence.format(source())
        assert expected in _text(file), f"{file}: expected {expected!r} (the text and its source disagree)"


def test_every_measured_number_is_claimed_or_a_setting():
    for file in WRITTEN:
        text = _text(file)
        covered = [sentence.format(source()) for f, sentence, source in CLAIMS if f == file]
        covered += [snippet for f, snippet in SETTINGS if f == file]
        spans = [(m.start(), m.end()) for snippet in covered for m in re.finditer(re.escape(snippet), text)]
        stray = [m.group() for m in MEASURED.finditer(text)
                 if not any(lo <= m.start() < hi for lo, hi in spans)]
        assert not stray, (f"{file}: numbers that no test reads back: {stray}; quote the report instead, or "
                           "add the sentence to CLAIMS with its source")


def test_readme_is_short_and_its_tables_render():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    for n, line in enumerate(lines):
        # A blank line inside a table ends it: the rows after it would render as text.
        if line.startswith("|") and n + 2 < len(lines) and not lines[n + 1].strip():
            assert not lines[n + 2].startswith("|"), f"README.md:{n + 2}: a blank line splits a table"
    table = [line for line in lines if line.startswith("| `")]
    for name in _presets():
        assert any(line.startswith(f"| `{name}` |") for line in table), name


def test_documents_the_readme_names_exist():
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"`((?:docs|reports|packages|profiles)/[\w./-]+\.(?:md|yaml))`", readme):
        if "<" not in path and "*" not in path:
            assert (REPO / path).is_file() or path == "docs/benchmarks-gpu.md", path
