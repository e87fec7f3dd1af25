"""What every training command writes besides the model: metrics JSON, loss curves, sizes."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

from llm_data.io import atomic_dir

__all__ = ["atomic_dir", "require_local_or_hub", "weights_mb", "write_loss_curves", "write_metrics"]


def require_local_or_hub(name: str, producer: str) -> str:
    """Return `name` unchanged, or raise if it is clearly meant as a local folder that is missing.

    A hub id looks like `org/model`; a local path exists, is absolute or relative (`./`, `../`), or
    starts with a folder that exists here (`models/base` when `models/` exists).
    """
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{name}: expected a model/tokenizer folder, found a file")
        return name
    looks_local = name.startswith(("/", "./", "../", "~")) or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    if looks_local or len(path.parts) > 2:
        raise FileNotFoundError(f"{name}: no such folder (create it with `{producer}`)")
    return name


def weights_mb(folder: str | os.PathLike) -> float:
    """Size on disk of the weight files in a saved model or adapter folder, in MiB."""
    files = [p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
    return sum(p.stat().st_size for p in files) / 2**20


def write_metrics(path: str, metrics: Mapping[str, float]) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: round(float(v), 6) for k, v in metrics.items()}, indent=2) + "\n")
    os.replace(tmp, path)


def write_loss_curves(plots_dir: str, log_history: list[dict]) -> None:
    """Trainer logs -> `train.csv` (step,loss) and `eval.csv` (step,eval_loss), DVC plot files."""
    if not plots_dir:
        return
    with atomic_dir(plots_dir) as tmp:
        for name, key in (("train", "loss"), ("eval", "eval_loss")):
            with open(tmp / f"{name}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", key])
                writer.writerows((row["step"], round(row[key], 6)) for row in log_history if key in row)
