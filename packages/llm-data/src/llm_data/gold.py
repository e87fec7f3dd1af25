"""Prompts whose right answer a program knows: two-step sums, for alignment against an exact gold reward.

Preference training is usually judged by another learned reward model, which shares the blind spots of the
one it judges. Here the truth is computable: every prompt is a sum like "What is 7 + 5 - 3?" over the world's
0..`max_operand` table, the same phrasings as the world's two-step arithmetic, so `llm_eval.gold` can grade
any reply exactly (the setting of Gao et al. 2022, "Scaling laws for reward model overoptimization", with a
programmatic gold instead of a large reward model). The SFT model never trained on two-step sums, so it gets
few right: there is room above it. Operands 0..9 allow 1,210 distinct sums.

Rows are {prompt, answer, category, group}: `llm-eval align --gold` answers and grades them, `llm-align
collect --label gold` samples pairs on the train split. Splits are disjoint by expression, drawn from their
own random stream, so the world's other data do not change with these flags.

    llm-data gold --out data/gold --max_operand 9 --train 600 --validation 100 --test 500
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_dataset
from llm_data.synth import _two_step_arithmetic

CATEGORY = "two_step_arithmetic"


@dataclass
class GoldConfig:
    out: str = field(default="data/gold", metadata={"help": "Output folder: train/validation/test.jsonl."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled expressions and their phrasing."})
    max_operand: int = field(
        default=9, metadata={"help": "Largest operand, and the range of each step's result (0..N): the world's table."}
    )
    train: int = field(default=600, metadata={"help": "Train prompts (preference pairs are sampled on them)."})
    validation: int = field(default=100, metadata={"help": "Validation prompts."})
    test: int = field(default=500, metadata={"help": "Held-out prompts every policy is graded on."})

    def __post_init__(self):
        if not 2 <= self.max_operand <= 99:
            raise ValueError(f"max_operand must be in [2, 99], got {self.max_operand}")
        for name in ("train", "validation", "test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def build(cfg: GoldConfig) -> dict[str, list[dict]]:
    """{split: rows}, a pure function of the config; every expression is in one split only."""
    wanted = cfg.train + cfg.validation + cfg.test
    items = _two_step_arithmetic(random.Random(f"{cfg.seed}:gold"), wanted, cfg.max_operand)
    if len(items) < wanted:
        raise ValueError(f"max_operand {cfg.max_operand} allows {len(items)} distinct two-step sums, fewer than the "
                         f"{wanted} asked for (train + validation + test); lower them or raise max_operand")
    rows = [{"prompt": it.prompt, "answer": it.answer, "category": CATEGORY, "group": it.key} for it in items]
    return {"test": rows[: cfg.test], "validation": rows[cfg.test : cfg.test + cfg.validation],
            "train": rows[cfg.test + cfg.validation :]}


def run_gold(cfg: GoldConfig) -> Path:
    meta = {"source": "llm-data gold", "seed": cfg.seed, "config": vars(cfg), "category": CATEGORY}
    return write_dataset(cfg.out, build(cfg), meta)
