"""The report card: one page across every preset that has run, the page a learner would print.

Each `llm-eval report` run leaves `<out_dir>/<preset>/summary.json` beside its figures: the machine, the
train and evaluation time its stages reported, the goals' tally, the key takeaways and each technique's
headline finding (`findings.headline`) with what the technique's model cost. The card joins every summary
it finds under `<out_dir>` into `card.md` and `card.html`, in the manner of nanochat's report card: a
preset table (machine, the models' train and evaluation time, goals), what each preset's newest `invoke
path` run cost (`<out_dir>/paths/<preset>.json`: wall time, peak memory, disk) and a technique table
(headline number with its 95% interval, cost, verdict). A technique reported by several presets is
listed once, from the first preset in PRESET_ORDER that has it: the presets share their stages, so the
numbers are the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llm_eval.report import findings as fd
from llm_eval.report import render
from llm_eval.report.cells import DASH, grouped

SUMMARY = "summary.json"
RUNS = "paths"  # <out_dir>/paths/<preset>.json, written by `invoke path`
PRESET_ORDER = ("fast", "balanced", "inference", "alignment", "complete")
COST_KEYS = ("train_seconds", "size_mb", "memory_mb")


def machine() -> str:
    """This machine in words: the CPU model, the widest vector extension its kernels can use, and its cores."""
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        import platform

        cpu = platform.processor() or platform.machine()
    vector = next((name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"),
                                           ("asimd", "NEON")) if flag in flags), "")
    return f"{cpu}{f' ({vector})' if vector else ''}, {os.cpu_count()} cores"


def summary(preset: str, rows: dict[str, dict], found: list[fd.Finding], takeaways: list[str],
            tally: dict[str, int]) -> dict:
    """What the card needs from one report (the machine is added when the report is written)."""
    seconds = sum(row[kind].get(key, 0.0) for row in rows.values()
                  for kind, key in (("train", "train_seconds"), ("eval", "eval_seconds")))
    techniques = []
    for technique in dict.fromkeys(f.technique for f in found):
        head = fd.headline([f for f in found if f.technique == technique])
        row = rows.get(head.a, {})
        cost = {key: value for key in COST_KEYS
                if (value := next((row[k][key] for k in ("train", "quantize", "prune", "eval")
                                   if key in row.get(k, {})), None)) is not None}
        techniques.append({**head.as_dict(), "cost": cost})
    return {
        "preset": preset,
        "models": len(rows),
        "stage_seconds": round(seconds, 1),
        "comparisons": len(found),
        "decided": sum(f.decided for f in found),
        "within_noise": sum(f.within_noise for f in found),
        "goals": tally,
        "takeaways": takeaways,
        "techniques": techniques,
    }


def _order(preset: str) -> tuple[int, str]:
    return (PRESET_ORDER.index(preset) if preset in PRESET_ORDER else len(PRESET_ORDER), preset)


def load_summaries(out_dir: Path) -> list[dict]:
    summaries = []
    for path in sorted(out_dir.glob(f"*/{SUMMARY}")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}); rerun its report (`dvc repro report_"
                             f"{path.parent.name}`)") from None
        if not isinstance(data, dict) or "preset" not in data or "techniques" not in data:
            raise ValueError(f"{path}: not a report summary (no 'preset' or 'techniques'); rerun its report")
        summaries.append(data)
    return sorted(summaries, key=lambda s: _order(s["preset"]))


def load_runs(out_dir: Path) -> dict[str, dict]:
    """preset -> the newest record `invoke path` left in `<out_dir>/paths/<preset>.json` (wall time, peak
    memory, disk, environments, machine); presets never run through `invoke path` have none."""
    runs = {}
    for path in sorted((out_dir / RUNS).glob("*.json")):
        try:
            runs[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}); rerun `uv run invoke path --name "
                             f"{path.stem}`") from None
    return runs


def recorded_run(record: dict | None) -> list[str]:
    """Wall time, peak memory, disk and machine of a recorded `invoke path` run (dashes when none)."""
    if not record:
        return [DASH, DASH, DASH, "no run recorded yet"]
    how = "every stage run" if record.get("full_run") else "reusing stages already run"
    envs = record.get("environments_mb")  # none measured: a run whose environment lived outside the repository
    disk = f"{record['disk_mb'] / 1e3:.1f} GB"
    if envs:
        disk += f" (+ {sum(envs.values()) / 1e3:.1f} GB environments)"
    return [f"{record['seconds'] / 60:.0f} min", f"{record['peak_ram_mb'] / 1e3:.1f} GB", disk,
            f"{record['machine']}, {how}"]


def _stages(summaries: list[dict], runs: dict[str, dict]) -> list[list[str]]:
    """Each recorded run's stages, slowest first, with their share of its wall time."""
    rows = []
    for s in summaries:
        record = runs.get(s["preset"]) or {}
        for stage, seconds in sorted(record.get("stage_seconds", {}).items(), key=lambda kv: -kv[1]):
            rows.append([s["preset"], stage, f"{seconds:,}", f"{100 * seconds / max(record['seconds'], 1):.0f}%"])
    return rows


def blocks(summaries: list[dict], runs: dict[str, dict] | None = None) -> list[tuple]:
    runs = runs or {}
    presets = [[s["preset"], s.get("machine", DASH), str(s["models"]), f"{s['stage_seconds']:,.0f}",
                f"{s['decided']} / {s['within_noise']} / {s['comparisons']}",
                " / ".join(str(s["goals"].get(state, 0)) for state in ("met", "missed", "not decided"))]
               for s in summaries]
    recorded = [[s["preset"], *recorded_run(runs.get(s["preset"]))] for s in summaries]
    stages = _stages(summaries, runs)
    timing = [("p", "Where that time went: each stage of a recorded run, from the moment DVC started it to the next "
                    "stage's start (caching its outputs included), slowest first."),
              ("table", ["preset", "stage", "seconds", "share of the run"], stages)] if stages else []
    seen, techniques = set(), []
    for s in summaries:
        for t in s["techniques"]:
            if t["technique"] in seen:
                continue
            seen.add(t["technique"])
            techniques.append([t["technique"], s["preset"], f"{t['a']} vs {t['b']}", t["metric"], t["difference"],
                               grouped(t["cost"].get("train_seconds"), 0), grouped(t["cost"].get("size_mb"), 2),
                               grouped(t["cost"].get("memory_mb"), 2), t["verdict"]])
    return [
        ("h1", "llm-lab report card"),
        ("p", "Every technique that ran, one row each: its headline comparison with its 95% interval, what its "
              "model cost, and the verdict (a winner only when the interval excludes no effect). Each preset's "
              "report (reports/<preset>.md) opens with its key takeaways and lists every finding."),
        ("h2", "Presets"),
        ("table", ["preset", "measured on", "models", "train + eval time of its models (s)",
                   "comparisons: decided / within noise / all", "goals: met / missed / not decided"], presets),
        ("h2", "What a run costs"),
        ("p", "The newest `uv run invoke path --name <preset>` of each preset (reports/paths/<preset>.json): its "
              "wall time, the peak memory of its largest stage, and the disk its data, models and DVC cache take "
              "beside the Python environments. A run that reused stages DVC had already run took less than one that "
              "ran every stage."),
        ("table", ["preset", "wall time", "peak memory", "disk", "recorded on"], recorded),
        *timing,
        ("h2", "Techniques"),
        ("table", ["technique", "preset", "comparison", "metric", "difference [95% interval]", "train time (s)",
                   "size on disk (MB)", "memory (MB)", "verdict"], techniques),
    ]


def write_card(out_dir: Path) -> Path:
    """Write `<out_dir>/card.md` and `card.html` from every summary under `out_dir`."""
    card_blocks = blocks(load_summaries(out_dir), load_runs(out_dir))
    markdown = render.to_markdown(card_blocks, ".")
    md = out_dir / "card.md"
    render.write_text(md, markdown)
    render.write_text(out_dir / "card.html", render.to_html(markdown, {}, "llm-lab report card"))
    return md


__all__ = ["PRESET_ORDER", "RUNS", "SUMMARY", "load_runs", "load_summaries", "machine", "summary", "write_card"]
