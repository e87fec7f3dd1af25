"""Reading a stage's flat metrics JSON, the one way every part of a report does: a file that is not a flat
object of numbers is a one-line error naming it; an optional file that is absent reads as {}."""

from __future__ import annotations

import json
from pathlib import Path


def read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"{path}: expected a flat JSON object of numbers")
    return {k: float(v) for k, v in data.items()}


def optional(path: Path) -> dict[str, float]:
    return read(path) if path.is_file() else {}
