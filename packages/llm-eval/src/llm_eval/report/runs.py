"""A benchmark run as separate stages: `<stem>_run<k>.json`, one metrics file per run.

Repeats inside one process share its engine start, memory layout and neighbours on the CPU, so their spread
understates what a reader who reruns the stage meets. Where a path runs a benchmark stage several times
(the smol path's `smol_vllm@1..3`), the report states the mean over the runs with a Student-t interval over
them (`llm_eval.stats.runs_ci`) and lists each run with the interval over its own repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llm_eval.report.cells import DASH, grouped
from llm_eval.stats import from_metrics, runs_ci, to_metrics

RUN_KEYS = ("vllm_tokens_per_s", "vllm_vs_static", "vllm_vs_batch_1", "batch_speedup")
RUN_COLUMNS = ("run", "vLLM tokens/s", "generate tokens/s, largest batch",
               "vLLM / generate (x), over the run's repeats")


def run_files(metrics_dir: Path, stem: str) -> list[Path]:
    """`<stem>_run<k>.json` in run order: one file per separate run of a benchmark stage."""
    found = [(p, p.stem.removeprefix(f"{stem}_run")) for p in metrics_dir.glob(f"{stem}_run*.json")]
    return [p for p, _ in sorted(((p, int(k)) for p, k in found if k.isdigit()), key=lambda pk: pk[1])]


def runs_metrics(files: list[Path], read_json: Callable[[Path], dict]) -> dict:
    """The first run's metrics, with each of RUN_KEYS replaced by its mean over the runs and a Student-t interval
    over them (stats.runs_ci), `runs_table`: each run's own numbers, and `first_run`: the first file's stem."""
    runs = [read_json(f) for f in files]
    out = dict(runs[0], separate_runs=len(runs))
    for key in RUN_KEYS:
        values = [m[key] for m in runs if m.get(key) is not None]
        if len(values) == len(runs):
            out.update(to_metrics(key, runs_ci(values)))
    table = []
    for f, m in zip(files, runs, strict=True):
        ratio = from_metrics(m, "vllm_vs_static")
        static = m.get(f"tokens_per_s_batch_{int(m['largest_batch'])}") if "largest_batch" in m else None
        table.append([f.stem.rsplit("_run", 1)[1], grouped(m.get("vllm_tokens_per_s"), 0), grouped(static, 0),
                      DASH if ratio is None else ratio.fmt(2)])
    out["runs_table"], out["first_run"] = table, files[0].stem
    return out


def benchmark_metrics(metrics_dir: Path, file: str, read_json: Callable[[Path], dict]) -> dict | None:
    """A benchmark stage's metrics: `file` where it ran once, else `runs_metrics` over its separate runs'
    `<stem>_run<k>.json` (whose plots are under the first run's name); None when neither is there."""
    if (metrics_dir / file).is_file():
        return read_json(metrics_dir / file)
    files = run_files(metrics_dir, file.removesuffix(".json"))
    return runs_metrics(files, read_json) if files else None
