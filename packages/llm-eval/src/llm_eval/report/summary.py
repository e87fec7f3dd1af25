"""The report's summary: what each technique bought and what it cost, one row per model.

Each row is set against the model it was made from — fine-tuning against the base, LoRA and QLoRA
against full fine-tuning, the distilled student against its plain-SFT control, every compressed or
aligned model against the reference — on the same test items: the exact-match and perplexity changes are
paired differences with their 95% intervals ("within noise" when the interval holds no change), beside
the costs the stages measured (training time, trainable parameters, size on disk, memory) and the
decoding speed against the same model.
"""

from __future__ import annotations

from llm_eval.items import exact_match_diff, perplexity_change, speed_ratio
from llm_eval.report.cells import DASH, grouped
from llm_eval.stats import Estimate

COLUMNS = ("model", "compared with", "exact match change (points)", "perplexity change (%)", "train time (s)",
           "trainable params", "size on disk (MB)", "memory (MB)", "tokens/s, x the compared model")
# What each row was made from, where it is not the report's reference ('' = nothing evaluated: the base). LoRA
# and QLoRA are set against full fine-tuning where the report has it, else against the base they adapt.
MADE_FROM = {"base": "", "sft_full": "base", "sft_lora": "sft_full", "sft_qlora": "sft_full",
             "student_kd": "student_sft", "student_sft": "sft_full"}
FALLBACK = {"sft_lora": "base", "sft_qlora": "base"}


def made_from(name: str, rows: dict, reference: str) -> str:
    """The row `name` is compared with: MADE_FROM's, FALLBACK's when that row is absent, else the reference."""
    other = MADE_FROM.get(name, reference)
    return FALLBACK.get(name, other) if other and other not in rows else other


def _change(estimate: Estimate | None, digits: int = 1, null: float = 0.0, unit: str = "") -> str:
    if estimate is None:
        return DASH
    signed = null == 0.0
    text = f"{estimate.fmt(digits, signed=signed)}{unit}"
    return text + (", within noise" if estimate.contains(null) else "")


def table(rows: dict[str, dict], reference: str, seed: int = 0) -> list[list[str]]:
    """One row per model with something to compare it with (rows loaded by `llm_eval.report.load_rows`)."""
    out = []
    for name, row in rows.items():
        other = made_from(name, rows, reference)
        if not other or other == name or other not in rows:
            continue
        a, b = row["items"], rows[other]["items"]
        train, quantize, prune = row["train"], row["quantize"], row["prune"]
        trainable = train.get("trainable_params")
        out.append([
            name, other,
            _change(exact_match_diff(a, b, seed=seed)),
            _change(perplexity_change(a, b, seed=seed)),
            grouped(train.get("train_seconds"), 0),
            DASH if trainable is None else f"{int(trainable):,} ({train.get('trainable_percent', 100):.1f}%)",
            grouped(train.get("size_mb", quantize.get("size_mb", prune.get("size_mb"))), 2),
            grouped(row["eval"].get("memory_mb", quantize.get("memory_mb")), 2),
            _change(speed_ratio(a, b, seed=seed), digits=2, null=1.0, unit="x"),
        ])
    return out


__all__ = ["COLUMNS", "MADE_FROM", "made_from", "table"]
