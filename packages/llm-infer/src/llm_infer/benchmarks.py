"""Write docs/benchmarks.md from the benchmark runs in reports/bench: the machine, each goal met or missed.

`invoke bench` runs the llm-infer benchmarks at their goal settings (bench-kv, bench-attn,
speculative, batch, serve), each writing `reports/bench/<name>.json` (flat numbers) and
`reports/bench/<name>/` (CSV tables, PNG plots). This command joins them into one page: the machine
they ran on, a goal table (met / missed / not measured, with the number), and each benchmark's
table. Every measured ratio is shown with its 95% interval in brackets (`<key>_lo`, `<key>_hi` of the
metrics); goals are judged on the point estimate. Run it on the machine that ran the benchmarks: it
names that machine.

    llm-infer bench-report --bench_dir reports/bench --out docs/benchmarks.md
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from llm_eval.stats import Estimate, from_metrics

BENCHES = ("kv_cache", "attention", "speculative", "batch", "serve")


def _speculative(m: dict, method: str) -> Estimate | None:
    """Speedup only counts at identical output: a method that changed any reply scores 0."""
    if f"{method}_speedup" not in m:
        return None
    if m.get(f"{method}_identical_fraction") != 1.0:
        return Estimate(0.0, math.nan, math.nan)
    return from_metrics(m, f"{method}_speedup")


def _batch(m: dict, size: int) -> Estimate | None:
    """Throughput at `size` over batch 1; runs from before the intervals only have the two tokens/s."""
    a, b = m.get(f"tokens_per_s_batch_{size}"), m.get("tokens_per_s_batch_1")
    fallback = Estimate(a / b, math.nan, math.nan) if a and b else None
    return from_metrics(m, f"speedup_batch_{size}") or fallback


# (benchmark, goal, value from its metrics, op, threshold, needs a GPU)
GOALS = [
    ("speculative", "speculative decoding (distilled draft) tokens/s over greedy, identical output",
     lambda m: _speculative(m, "assisted"), ">=", 1.5, False),
    ("speculative", "prompt-lookup decoding tokens/s over greedy, identical output",
     lambda m: _speculative(m, "prompt_lookup"), ">=", 1.5, False),
    ("kv_cache", "KV cache tokens/s over no cache at 256 new tokens",
     lambda m: from_metrics(m, "kv_speedup") if m.get("max_new_tokens") == 256 else None, ">=", 5.0, False),
    ("batch", "batch-16 throughput over batch-1", lambda m: _batch(m, 16), ">=", 5.0, False),
    ("serve", "server errors over 64 concurrent requests from 16 clients",
     lambda m: from_metrics(m, "errors") if (m.get("requests"), m.get("clients")) == (64, 16) else None, "<=", 0.0,
     False),
    ("batch", "vLLM throughput over transformers generate on 256 prompts",
     lambda m: from_metrics(m, "vllm_vs_static"), ">=", 10.0, True),
    ("attention", "SDPA peak memory growth exponent in sequence length (1 = linear)",
     lambda m: from_metrics(m, "sdpa_memory_exponent"), "<=", 1.2, True),
]


@dataclass
class BenchReportConfig:
    bench_dir: str = field(default="reports/bench", metadata={"help": "Folder of <name>.json and <name>/ runs."})
    out: str = field(default="docs/benchmarks.md", metadata={"help": "Markdown page to write."})

    def __post_init__(self):
        if not self.out.endswith(".md"):
            raise ValueError(f"out must be a .md file, got {self.out!r}")


def _fmt(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value) if value not in (None, "") else "—"
    if math.isnan(number):
        return "—"
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.3g}"


def _fmt_estimate(estimate: Estimate | None) -> str:
    """'7.5 [6.9, 8.1]': the value and, when there is one, its 95% interval."""
    if estimate is None:
        return "—"
    text = _fmt(estimate.value)
    return f"{text} [{_fmt(estimate.lo)}, {_fmt(estimate.hi)}]" if estimate.has_interval else text


def _verdict(value: Estimate | None, op: str, threshold: float, gpu_only: bool, have_gpu: bool) -> str:
    """Judged on the point estimate; the interval beside it says how sure that is."""
    if value is None:
        return "not measured (needs a CUDA GPU)" if gpu_only and not have_gpu else "not measured"
    v = value.value
    return "met" if (v >= threshold if op == ">=" else v <= threshold) else "missed"


def _metric_rows(m: dict) -> list[list[str]]:
    """One row per metric; `<key>_lo` / `<key>_hi` go into their key's row as its interval."""
    folded = {f"{k}_{end}" for k in m for end in ("lo", "hi")}
    return [[k, _fmt_estimate(from_metrics(m, k))] for k in m if k not in folded]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def run_bench_report(cfg: BenchReportConfig) -> Path:
    from llm_infer.runtime import machine

    bench_dir = Path(cfg.bench_dir)
    # The goal runs first, then any run at other settings (e.g. kv_cache_batch4), which judges no goal.
    names = [n for n in BENCHES if (bench_dir / f"{n}.json").is_file()]
    names += sorted(p.stem for p in bench_dir.glob("*.json") if p.stem not in BENCHES)
    # A benchmark another package summarises itself (e.g. `llm-eval seeds` -> seeds.md) goes in as written.
    fragments = {p.stem: p.read_text(encoding="utf-8") for p in sorted(bench_dir.glob("*.md"))}
    found = {name: json.loads((bench_dir / f"{name}.json").read_text()) for name in names if name not in fragments}
    if not found and not fragments:
        raise FileNotFoundError(f"{bench_dir}: no benchmark results (<name>.json); run `invoke bench` first")
    import torch

    have_gpu = torch.cuda.is_available()
    lines = [
        "# Benchmarks", "",
        f"Measured on **{machine()}**, {date.today().isoformat()}, by `invoke bench` (settings in `tasks.py`, "
        f"BENCHES), on the tiny profile's models (`models/sft-full`, draft `models/student-kd`). Raw results: "
        f"`{cfg.bench_dir}/<name>.json` and `{cfg.bench_dir}/<name>/`. Run the benchmarks alone: two torch "
        "processes on the same cores slow each other down many times over. Brackets hold a ratio's 95% "
        "interval, bootstrapped over repeated runs or per-prompt timings: an interval that holds 1 is no "
        "measurable speedup.", "",
        "## Goals", "",
    ]
    rows = []
    for bench, label, value_of, op, threshold, gpu_only in GOALS:
        value = value_of(found[bench]) if bench in found else None
        rows.append([label, _fmt_estimate(value), f"{op} {threshold:g}",
                     _verdict(value, op, threshold, gpu_only, have_gpu)])
    lines += _table(["goal", "value", "target", "verdict"], rows)
    for name in found:
        lines += ["", f"## {name}", ""]
        lines += _table(["metric", "value [95% interval]"], _metric_rows(found[name]))
        for table in sorted((bench_dir / name).glob("*.csv")):
            with open(table, newline="") as f:
                data = list(csv.reader(f))
            if data:
                lines += ["", f"`{table.as_posix()}`:", ""]
                lines += _table(data[0], [[_fmt(c) for c in row] for row in data[1:]])
        for png in sorted((bench_dir / name).glob("*.png")):
            rel = os.path.relpath(png, Path(cfg.out).parent)
            lines += ["", f"![{name}: {png.stem}]({rel})"]
    for text in fragments.values():
        lines += ["", text.rstrip()]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out
