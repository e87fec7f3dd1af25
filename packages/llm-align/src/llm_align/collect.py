"""On-policy preference data: the policy's own replies, labelled by a reward model or a checkable rule.

The static preference set pairs a reference reply with a hand-made bad one; the policy may never
produce either. Collecting pairs from the policy's own samples — best against worst of several replies
to one prompt — gives preference data on the replies the policy actually makes, the step iterative /
online DPO repeats (Xu et al. 2023, arXiv:2312.16682; Guo et al. 2024, arXiv:2402.04792) and RLAIF
labels with a model instead of people (Bai et al. 2022, arXiv:2212.08073; Lee et al. 2023,
arXiv:2309.00267). `--label reward` ranks the samples with a reward model; `--label rule` prefers a
reply that equals the prompt's reference reply (exact match) over one that does not.

`--label gold` labels the samples of the world's sums (`llm-data gold`) by the exact gold
(`llm_eval.gold`) the way the DPO paper's controlled-generation experiment did (Rafailov et al. 2023, §6.1):
every pair of distinct samples with a gold difference is a comparison, and its label is a Bradley-Terry
draw, P(a preferred to b) = sigmoid((gold(a) - gold(b)) / temperature), so the temperature sets the label
noise that a reward model learning from them meets (Coste et al. 2024 used 25%). The validation and test splits
(the test split from the held-out sums) keep the noise-free gold order, to measure a reward model against the truth.

    llm-align collect --model models/sft-full --data data/synth/preference --reward_model models/reward-proxy \\
        --out data/onpolicy
    llm-align collect --model models/sft-full --data data/gold --label gold --samples 8 --temperature 0.1 \\
        --pairs_per_prompt 6 --out data/gold_pairs
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, write_dataset, write_metrics
from llm_eval.run import load_tokenizer
from llm_eval.stats import mean_ci, to_metrics

from llm_align.data import load_pairs

logger = logging.getLogger(__name__)
LABELS = ("reward", "rule", "gold")


@dataclass
class CollectConfig:
    model: str = field(default="models/sft-full", metadata={"help": "The policy whose replies are sampled."})
    data: str = field(
        default="data/synth/preference",
        metadata={"help": "Preference folder: its prompts are answered; `chosen` is the reference for --label rule."},
    )
    out: str = field(
        default="data/onpolicy",
        metadata={"help": "Output preference folder (train, validation; and test for --label gold)."},
    )
    label: str = field(
        default="reward",
        metadata={"help": "reward: best vs worst sample by --reward_model; rule: a sample equal to the reference "
                          "reply (exact match) vs one that is not; gold: pairs of samples of the world's sums "
                          "(--data from llm-data gold), labelled by Bradley-Terry draws on the exact gold."},
    )
    reward_model: str = field(default="models/reward-proxy", metadata={"help": "Labeller for --label reward."})
    samples: int = field(default=4, metadata={"help": "Replies sampled per prompt (temperature 1)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply."})
    max_per_category: int = field(default=150, metadata={"help": "Train prompts per category (0 = all)."})
    min_margin: float = field(
        default=0.5, metadata={"help": "--label reward: keep a pair only if best - worst score >= this."}
    )
    temperature: float = field(
        default=0.1,
        metadata={"help": "--label gold: P(a preferred to b) = sigmoid((gold a - gold b) / temperature) on train "
                          "pairs; 0 = always the gold order (no label noise)."},
    )
    pairs_per_prompt: int = field(
        default=0, metadata={"help": "--label gold: most pairs per prompt, drawn among those with a gold "
                                     "difference (0 = all)."}
    )
    test_pairs: bool = field(
        default=True, metadata={"help": "--label gold: also pair the held-out sums (the test split a reward "
                                        "model is scored on); false saves their sampling when none is trained."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampled replies and of the label draws."})
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
        if self.temperature < 0 or self.pairs_per_prompt < 0:
            raise ValueError("temperature and pairs_per_prompt must be >= 0")


def _gold_prompts(folder: str, split: str, caps: int = 0) -> list[dict]:
    """The prompts of a `llm-data gold` split (`llm_eval.align.load_prompts`), the first `caps` (0 = all)."""
    from llm_eval.align import load_prompts

    rows = load_prompts(folder, split)
    return rows[:caps] if caps else rows


def sample_k(policy, tokenizer, prompts: list, k: int, max_new_tokens: int, seed: int,
             batch_size: int = 64) -> list[list[str]]:
    """Per prompt, `k` replies sampled from the policy at temperature 1, the i-th of all prompts with seed
    `seed * 1000 + i`."""
    from llm_eval.align import sample_replies

    replies = [[] for _ in prompts]
    for i in range(k):
        _, ids = sample_replies(policy, tokenizer, prompts, max_new_tokens, seed * 1000 + i, batch_size)
        for texts, text in zip(replies, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
            texts.append(text.strip())
    return replies


def _gold_pairs(cfg: CollectConfig, rows: list[dict], replies: list[list[str]], noisy: bool, rng,
                stats: dict) -> list[dict]:
    """Pairs of distinct samples whose gold differs, labelled by a Bradley-Terry draw (`noisy`) or by the gold
    order; `flipped` marks a label against the gold order."""
    import itertools
    import math

    from llm_eval.gold import gold

    out = []
    for row, texts in zip(rows, replies, strict=True):
        scored = {t: gold(row["prompt"], t) for t in dict.fromkeys(t for t in texts if t)}  # distinct, non-empty
        pairs = [(a, b) for a, b in itertools.combinations(scored, 2) if scored[a] != scored[b]]
        if not pairs:
            stats["skipped_identical"] += 1
            continue
        if cfg.pairs_per_prompt and len(pairs) > cfg.pairs_per_prompt:
            pairs = rng.sample(pairs, cfg.pairs_per_prompt)
        for a, b in pairs:
            better, worse = (a, b) if scored[a] > scored[b] else (b, a)
            gap = scored[better] - scored[worse]
            flipped = noisy and cfg.temperature > 0 and rng.random() >= 1 / (1 + math.exp(-gap / cfg.temperature))
            chosen, rejected = (worse, better) if flipped else (better, worse)
            out.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "category": row["category"],
                        "gold_chosen": scored[chosen], "gold_rejected": scored[rejected], "flipped": flipped})
    return out


def _pairs(cfg: CollectConfig, policy, tokenizer, judge, rows: list[dict], stats: dict) -> list[dict]:
    from llm_eval.judge import conversation, reward_scores
    from llm_eval.run import normalize

    replies = sample_k(policy, tokenizer, [r["prompt"] for r in rows], cfg.samples, cfg.max_new_tokens, cfg.seed)
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
    load = _gold_prompts if cfg.label == "gold" else load_pairs
    splits = {
        "train": load(cfg.data, "train", caps=cfg.max_per_category),
        "validation": load(cfg.data, "validation"),
    }
    if cfg.label == "gold" and cfg.test_pairs:  # pairs of the held-out sums: a reward model's test against the truth
        splits["test"] = load(cfg.data, "test")
    tokenizer = load_tokenizer(name)
    policy = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()
    judge = None
    if cfg.label == "reward":
        judge = load_reward_model(require_local_or_hub(cfg.reward_model, "llm-align reward"))
    out, metrics = {}, {}
    for split, rows in splits.items():
        stats = {"skipped_identical": 0, "skipped_small_margin": 0, "skipped_all_right": 0, "skipped_none_right": 0,
                 "margins": []}
        if cfg.label == "gold":  # train labels are noisy draws; validation and test keep the gold order
            prompts = [r["prompt"] for r in rows]
            replies = sample_k(policy, tokenizer, prompts, cfg.samples, cfg.max_new_tokens, cfg.seed)
            out[split] = _gold_pairs(cfg, rows, replies, split == "train", random.Random(f"{cfg.seed}:{split}"), stats)
        else:
            out[split] = _pairs(cfg, policy, tokenizer, judge, rows, stats)
        if not out[split]:
            raise ValueError(f"{cfg.data}/{split}.jsonl: no pair collected from {len(rows)} prompts ({stats})")
        margins = stats.pop("margins")
        metrics.update({f"{split}_{k}": v for k, v in stats.items()})
        metrics.update({f"{split}_prompts": len(rows), f"{split}_pairs": len(out[split])})
        if margins:
            metrics[f"{split}_mean_margin"] = sum(margins) / len(margins)
    if cfg.label == "gold":
        flips = [float(r["flipped"]) for r in out["train"]]
        metrics.update(to_metrics("train_label_noise", mean_ci(flips, 100.0, cfg.seed,
                                                               [r["prompt"] for r in out["train"]])))
    meta = {"source": cfg.data, "policy": cfg.model, "label": cfg.label, "samples": cfg.samples, "seed": cfg.seed,
            "reward_model": cfg.reward_model if cfg.label == "reward" else ""}
    if cfg.label == "gold":
        meta["temperature"] = cfg.temperature
    write_dataset(cfg.out, out, meta)
    logger.info("collect %s: %s", cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
