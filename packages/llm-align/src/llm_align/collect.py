"""On-policy preference data: the policy's own replies, labelled by a reward model or a checkable rule.

The static preference set pairs a reference reply with a hand-made bad one; the policy may never
produce either. Collecting pairs from the policy's own samples — best against worst of several replies
to one prompt — gives preference data on the replies the policy actually makes, the step iterative /
online DPO repeats (Xu et al. 2023, arXiv:2312.16682; Guo et al. 2024, arXiv:2402.04792) and RLAIF
labels with a model instead of people (Bai et al. 2022, arXiv:2212.08073; Lee et al. 2023,
arXiv:2309.00267). `--label reward` ranks the samples with a reward model; `--label rule` prefers a
reply that equals the prompt's reference reply (exact match) over one that does not.

    llm-align collect --model models/sft-full --data data/synth/preference --reward_model models/reward-proxy \\
        --out data/onpolicy
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, write_dataset, write_metrics
from llm_eval.run import load_tokenizer

from llm_align.data import load_pairs

logger = logging.getLogger(__name__)
LABELS = ("reward", "rule")


@dataclass
class CollectConfig:
    model: str = field(default="models/sft-full", metadata={"help": "The policy whose replies are sampled."})
    data: str = field(
        default="data/synth/preference",
        metadata={"help": "Preference folder: its prompts are answered; `chosen` is the reference for --label rule."},
    )
    out: str = field(default="data/onpolicy", metadata={"help": "Output preference folder (train, validation)."})
    label: str = field(
        default="reward",
        metadata={"help": "reward: best vs worst sample by --reward_model; rule: a sample equal to the reference "
                          "reply (exact match) vs one that is not."},
    )
    reward_model: str = field(default="models/reward-proxy", metadata={"help": "Labeller for --label reward."})
    samples: int = field(default=4, metadata={"help": "Replies sampled per prompt (temperature 1)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply."})
    max_per_category: int = field(default=150, metadata={"help": "Train prompts per category (0 = all)."})
    min_margin: float = field(
        default=0.5, metadata={"help": "--label reward: keep a pair only if best - worst score >= this."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampled replies."})
    metrics: str = field(default="", metadata={"help": "Write collection statistics JSON here."})

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; choose one of: {', '.join(LABELS)}")
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (a pair needs two replies), got {self.samples}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_per_category < 0 or self.min_margin < 0:
            raise ValueError("max_per_category and min_margin must be >= 0")


def _pairs(cfg: CollectConfig, policy, tokenizer, judge, rows: list[dict], stats: dict) -> list[dict]:
    from llm_eval.align import sample_replies
    from llm_eval.judge import conversation, reward_scores
    from llm_eval.run import normalize

    prompts = [r["prompt"] for r in rows]
    replies = [[] for _ in rows]  # per prompt: its sampled texts
    for i in range(cfg.samples):
        _, ids = sample_replies(policy, tokenizer, prompts, cfg.max_new_tokens, seed=cfg.seed * 1000 + i)
        for texts, text in zip(replies, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
            texts.append(text.strip())
    out = []
    for row, texts in zip(rows, replies, strict=True):
        texts = list(dict.fromkeys(t for t in texts if t))  # distinct, non-empty, in sampled order
        if len(texts) < 2:
            stats["skipped_identical"] += 1
            continue
        if cfg.label == "rule":
            reference = normalize(row["chosen"][-1]["content"])
            right = [t for t in texts if normalize(t) == reference]
            wrong = [t for t in texts if normalize(t) != reference]
            if not right or not wrong:
                stats["skipped_all_right" if right else "skipped_none_right"] += 1
                continue
            chosen, rejected = right[0], wrong[0]
        else:
            scores = reward_scores(*judge, [conversation(row["prompt"], t) for t in texts])
            ranked = sorted(zip(scores, texts, strict=True), key=lambda st: -st[0])
            if ranked[0][0] - ranked[-1][0] < cfg.min_margin:
                stats["skipped_small_margin"] += 1
                continue
            chosen, rejected = ranked[0][1], ranked[-1][1]
            stats["margins"].append(ranked[0][0] - ranked[-1][0])
        out.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "category": row["category"]})
    return out


def run_collect(cfg: CollectConfig) -> Path:
    import torch
    from llm_eval.judge import load_reward_model
    from transformers import AutoModelForCausalLM

    name = require_local_or_hub(cfg.model, "llm-train sft")
    splits = {
        "train": load_pairs(cfg.data, "train", caps=cfg.max_per_category),
        "validation": load_pairs(cfg.data, "validation"),
    }
    tokenizer = load_tokenizer(name)
    policy = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()
    judge = None
    if cfg.label == "reward":
        judge = load_reward_model(require_local_or_hub(cfg.reward_model, "llm-align reward"))
    out, metrics = {}, {}
    for split, rows in splits.items():
        stats = {"skipped_identical": 0, "skipped_small_margin": 0, "skipped_all_right": 0, "skipped_none_right": 0,
                 "margins": []}
        out[split] = _pairs(cfg, policy, tokenizer, judge, rows, stats)
        if not out[split]:
            raise ValueError(f"{cfg.data}/{split}.jsonl: no pair collected from {len(rows)} prompts ({stats})")
        margins = stats.pop("margins")
        metrics.update({f"{split}_{k}": v for k, v in stats.items()})
        metrics.update({f"{split}_prompts": len(rows), f"{split}_pairs": len(out[split])})
        if margins:
            metrics[f"{split}_mean_margin"] = sum(margins) / len(margins)
    meta = {"source": cfg.data, "policy": cfg.model, "label": cfg.label, "samples": cfg.samples, "seed": cfg.seed,
            "reward_model": cfg.reward_model if cfg.label == "reward" else ""}
    write_dataset(cfg.out, out, meta)
    logger.info("collect %s: %s", cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
