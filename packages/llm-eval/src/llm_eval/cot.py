"""Evaluate chain-of-thought answers: exact match on the final answer, and what the reasoning costs in tokens.

Chain-of-thought (Wei et al. 2022, arXiv:2201.11903) has a model write its intermediate steps before the
answer, so each generated token does one step of work instead of the whole problem in one forward
pass; tuning on worked solutions teaches a small model to do it (Ho et al. 2023, arXiv:2212.10071). A
reply is scored on the text after its last answer marker ("The answer is ..."), or on the whole reply
when it has none (a model tuned on direct answers), so a direct and a CoT model are judged by the same
rule on the same prompts. Beside exact match (with its bootstrap interval, per category too), the
metrics give the reply length in tokens (re-tokenized replies; the interval resamples prompts) and
`--items` writes the per-prompt results that `llm-eval report` pairs across models.

    llm-eval cot --model models/sft-reasoning_cot --name reasoning_cot --data data/synth/reasoning \\
        --out reports/metrics/eval_reasoning_cot.json --items reports/items/eval_reasoning_cot
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_metrics

from llm_eval.run import EvalConfig, _write_items, exact_match, generate, load_model, load_rows, text_overlap
from llm_eval.stats import mean_ci, to_metrics

logger = logging.getLogger(__name__)


@dataclass
class CotEvalConfig(EvalConfig):
    answer_marker: str = field(
        default="The answer is",
        metadata={"help": "The final answer is the text after the last occurrence of this phrase (case-insensitive); "
                  "a reply without it is taken whole."},
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest reply in tokens: room for the steps."})
    data: str = field(
        default="data/synth/reasoning",
        metadata={"help": "Dataset folder with {prompt, answer, category} rows (the multi-step items)."},
    )
    text: str = field(default="", metadata={"help": "Unused here (no perplexity)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.answer_marker.strip():
            raise ValueError("answer_marker must not be empty")
        if self.text:
            raise ValueError("llm-eval cot scores answers only; leave --text empty")


def final_answer(reply: str, marker: str) -> str:
    """The text after the last `marker` (case-insensitive), up to the end of that sentence (its period
    dropped); else the whole reply."""
    found = list(re.finditer(re.escape(marker.strip()), reply, flags=re.IGNORECASE))
    if not found:
        return reply
    tail = reply[found[-1].end():].strip()
    return tail.split(". ")[0].strip().removesuffix(".").strip()


def run_cot_eval(cfg: CotEvalConfig) -> Path:
    import torch

    rows = load_rows(cfg.data, cfg.split, cfg.max_samples)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    timings = []
    replies = generate(model, tokenizer, [row["prompt"] for row in rows], cfg.max_new_tokens, cfg.batch_size,
                       timings)
    answers = [final_answer(reply, cfg.answer_marker) for reply in replies]
    metrics, correct = exact_match(rows, answers, seed=cfg.seed)
    lengths = [len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"]]
    metrics.update(to_metrics("reply_tokens", mean_ci(lengths, seed=cfg.seed)))
    marker = cfg.answer_marker.strip().lower()
    metrics["with_marker_percent"] = 100.0 * sum(marker in reply.lower() for reply in replies) / len(rows)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["n_samples"] = len(rows)
    logger.info("%s: %s", cfg.name, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if cfg.items:
        _, overlap = text_overlap(rows, replies)
        _write_items(cfg.items, rows, replies, correct, overlap, [], timings)
    write_metrics(cfg.out, metrics)
    return Path(cfg.out)
