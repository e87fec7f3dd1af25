"""Write docs/benchmarks.md from the benchmark runs in reports/bench: the machine, each goal met or missed.

`invoke bench` runs the llm-infer benchmarks at their goal settings (bench-kv, bench-attn,
speculative, batch, serve), each writing `reports/bench/<name>.json` (flat numbers) and
`reports/bench/<name>/` (CSV tables, PNG plots). This command joins them into one page: the machine
they ran on, a goal table (met / missed / not measured, with the number), and each benchmark's
table. Run it on the machine that ran the benchmarks: it names that machine.

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

BENCHES = ("kv_cache", "attention", "speculative", "batch", "serve")


def _speculative(m: dict, method: str) -> float | None:
    """Speedup only counts at identical output: a method that changed any reply scores 0."""
    if f"{method}_speedup" not in m:
        return None
    return m[f"{method}_speedup"] if m.get(f"{method}_identical_fraction") == 1.0 else 0.0


def _ratio(m: dict, a: str, b: str) -> float | None:
    return m[a] / m[b] if m.get(a) and m.get(b) else None


# (benchmark, goal, value from its metrics, op, threshold, needs a GPU)
GOALS = [
    ("speculative", "speculative decoding (distilled draft) tokens/s over greedy, identical output",
     lambda m: _speculative(m, "assisted"), ">=", 1.5, False),
    ("speculative", "prompt-lookup decoding tokens/s over greedy, identical output",
     lambda m: _speculative(m, "prompt_lookup"), ">=", 1.5, False),
    ("kv_cache", "KV cache tokens/s over no cache at 256 new tokens",
     lambda m: m.get("kv_speedup") if m.get("max_new_tokens") == 256 else None, ">=", 5.0, False),
    ("batch", "batch-16 throughput over batch-1",
     lambda m: _ratio(m, "tokens_per_s_batch_16", "tokens_per_s_batch_1"), ">=", 5.0, False),
    ("serve", "server errors over 64 concurrent requests from 16 clients",
     lambda m: m.get("errors") if (m.get("requests"), m.get("clients")) == (64, 16) else None, "<=", 0.0, False),
    ("batch", "vLLM throughput over transformers generate on 256 prompts",
     lambda m: m.get("vllm_vs_static"), ">=", 10.0, True),
    ("attention", "SDPA peak memory growth exponent in sequence length (1 = linear)",
     lambda m: m.get("sdpa_memory_exponent"), "<=", 1.2, True),
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


def _verdict(value: float | None, op: str, threshold: float, gpu_only: bool, have_gpu: bool) -> str:
    if value is None:
        return "not measured (needs a CUDA GPU)" if gpu_only and not have_gpu else "not measured"
    return "met" if (value >= threshold if op == ">=" else value <= threshold) else "missed"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def run_bench_report(cfg: BenchReportConfig) -> Path:
    from llm_infer.runtime import machine

    bench_dir = Path(cfg.bench_dir)
    # The goal runs first, then any run at other settings (e.g. kv_cache_batch4), which judges no goal.
    names = [n for n in BENCHES if (bench_dir / f"{n}.json").is_file()]
    names += sorted(p.stem for p in bench_dir.glob("*.json") if p.stem not in BENCHES)
    found = {name: json.loads((bench_dir / f"{name}.json").read_text()) for name in names}
    if not found:
        raise FileNotFoundError(f"{bench_dir}: no benchmark results (<name>.json); run `invoke bench` first")
    import torch

    have_gpu = torch.cuda.is_available()
    lines = [
        "# Benchmarks", "",
        f"Measured on **{machine()}**, {date.today().isoformat()}, by `invoke bench` (settings in `tasks.py`, "
        f"BENCHES), on the tiny profile's models (`models/sft-full`, draft `models/student-kd`). Raw results: "
        f"`{cfg.bench_dir}/<name>.json` and `{cfg.bench_dir}/<name>/`. Run the benchmarks alone: two torch "
        "processes on the same cores slow each other down many times over.", "",
        "## Goals", "",
    ]
    rows = []
    for bench, label, value_of, op, threshold, gpu_only in GOALS:
        value = value_of(found[bench]) if bench in found else None
        rows.append([label, _fmt(value), f"{op} {threshold:g}", _verdict(value, op, threshold, gpu_only, have_gpu)])
    lines += _table(["goal", "value", "target", "verdict"], rows)
    for name in found:
        lines += ["", f"## {name}", ""]
        lines += _table(["metric", "value"], [[k, _fmt(v)] for k, v in found[name].items()])
        for table in sorted((bench_dir / name).glob("*.csv")):
            with open(table, newline="") as f:
                data = list(csv.reader(f))
            if data:
                lines += ["", f"`{table.as_posix()}`:", ""]
                lines += _table(data[0], [[_fmt(c) for c in row] for row in data[1:]])
        for png in sorted((bench_dir / name).glob("*.png")):
            rel = os.path.relpath(png, Path(cfg.out).parent)
            lines += ["", f"![{name}: {png.stem}]({rel})"]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out
