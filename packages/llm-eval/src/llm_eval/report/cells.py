"""What every part of a report renders the same way: a missing number, a plain number, a figure."""

from __future__ import annotations

import io
import math

DASH = "—"  # not measured


def number(value: float | None, digits: int = 2) -> str:
    """`value` with `digits` decimals; a dash when it is missing or NaN."""
    return DASH if value is None or math.isnan(value) else f"{value:.{digits}f}"


def grouped(value: float | None, digits: int = 1) -> str:
    """`value` with thousands separators and `digits` decimals; a dash when it is missing."""
    return DASH if value is None else f"{value:,.{digits}f}"


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes, with no timestamp in them (reruns give byte-identical files)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()
