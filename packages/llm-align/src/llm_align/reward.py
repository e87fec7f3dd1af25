"""Reward model: a Bradley-Terry preference model trained with trl's RewardTrainer.

The SFT model gets a one-output head (a sequence classifier) and learns r(prompt, reply) so that
P(chosen beats rejected) = sigmoid(r_chosen - r_rejected), the Bradley-Terry model (1952) as used for
RLHF by Ouyang et al. 2022 (InstructGPT) and Stiennon et al. 2020. PPO later maximises this reward, and
a second reward model trained on the other half of the prompts (`--half second`) serves as the gold
judge that no policy trained against (Gao et al. 2022, 'Scaling Laws for Reward Model Overoptimization').

    llm-align reward --model models/sft-full --data data/synth/preference --out models/reward
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import read_jsonl, require_local_or_hub, split_file, write_metrics
from llm_eval.judge import conversation, conversation_ids, load_reward_model, pairwise_accuracy, reward_scores
from llm_eval.run import load_tokenizer
from llm_eval.stats import mean_ci, paired_diff_ci, to_metrics
from llm_train.distributed import relaunch
from llm_train.loop import write_loss_curves

from llm_align.base import AlignConfig, save_trained
from llm_align.data import HALVES, TEXT, load_pairs

logger = logging.getLogger(__name__)


@dataclass
class RewardConfig(AlignConfig):
    out: str = field(default="models/reward", metadata={"help": "Output folder (a sequence-classification model)."})
    half: str = field(
        default="all",
        metadata={
            "help": f"Which prompts to train on: {', '.join(HALVES)}. The proxy reward model takes 'first', "
            "the gold judge 'second', so the two never see the same prompt."
        },
    )
    center_rewards: float = field(
        default=0.01,
        metadata={
            "help": "Weight of the penalty on (r_chosen + r_rejected)^2 that keeps rewards centred on 0 "
            "(Eisenstein et al. 2023); 0 turns it off."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.half not in HALVES:
            raise ValueError(f"unknown half {self.half!r}; choose one of: {', '.join(HALVES)}")
        if self.center_rewards < 0:
            raise ValueError(f"center_rewards must be >= 0, got {self.center_rewards}")


def noise_ceiling(data: str, correct: list[bool], seed: int) -> dict[str, float]:
    """Against the labels a Bradley-Terry labeller would draw (`llm-align collect --label gold`): the reward
    model's expected accuracy, and the ceiling, the gold's own (a pair with gold gap g keeps the gold order
    with probability p = sigmoid(g / T), so ranking it right earns p and wrong 1 - p). Empty unless the test
    pairs carry their gold scores and the folder's meta.json its temperature T."""
    import json
    import math

    meta = Path(data) / "meta.json"
    temperature = json.loads(meta.read_text()).get("temperature") if meta.is_file() else None
    if temperature is None:
        return {}
    rows = read_jsonl(split_file(data, "test"), {"prompt": TEXT})
    if not all("gold_chosen" in r and "gold_rejected" in r for r in rows):
        return {}

    def keep(gap: float) -> float:
        return 1.0 if temperature == 0 else 1 / (1 + math.exp(-gap / temperature))

    ceiling = [keep(r["gold_chosen"] - r["gold_rejected"]) for r in rows]
    expected = [p if right else 1 - p for p, right in zip(ceiling, correct, strict=True)]
    prompts = [str(r["prompt"]) for r in rows]  # several pairs share a prompt: resample prompts
    return {
        **to_metrics("noisy_accuracy", mean_ci(expected, 100.0, seed, prompts)),
        **to_metrics("noise_ceiling", mean_ci(ceiling, 100.0, seed, prompts)),
        **to_metrics("below_ceiling", paired_diff_ci(ceiling, expected, 100.0, seed, prompts)),
        "label_temperature": temperature,
    }


def evaluate_pairs(folder: str, rows: list[dict], batch_size: int, max_length: int, seed: int,
                   data: str = "") -> dict[str, float]:
    """Held-out pairwise accuracy and margin of the reward model in `folder`, overall and per category; with
    `data` (the folder `rows` are the test split of), also against the labels' noise (`noise_ceiling`)."""
    model, tokenizer = load_reward_model(folder)
    chosen = reward_scores(
        model, tokenizer, [conversation(r["prompt"], r["chosen"]) for r in rows], batch_size, max_length
    )
    rejected = reward_scores(
        model, tokenizer, [conversation(r["prompt"], r["rejected"]) for r in rows], batch_size, max_length
    )
    accuracy, margin = pairwise_accuracy(chosen, rejected, seed=seed)
    metrics = {**to_metrics("accuracy", accuracy), **to_metrics("margin", margin), "n_pairs": len(rows)}
    if data:
        metrics.update(noise_ceiling(data, [c > r for c, r in zip(chosen, rejected, strict=True)], seed))
    by_category = defaultdict(list)
    for row, c, r in zip(rows, chosen, rejected, strict=True):
        by_category[row["category"]].append((c, r))
    for category, pairs in sorted(by_category.items()):
        if category:
            metrics[f"accuracy_{category}"] = 100.0 * sum(c > r for c, r in pairs) / len(pairs)
    return metrics


def _tokenized(tokenizer, rows: list[dict]):
    """Pairs as trl's pre-tokenized reward columns, rendered exactly as `llm_eval.judge` scores them."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "chosen_ids": conversation_ids(tokenizer, r["prompt"] + r["chosen"]),
                "rejected_ids": conversation_ids(tokenizer, r["prompt"] + r["rejected"]),
            }
            for r in rows
        ]
    )


def run_reward(cfg: RewardConfig) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    if relaunch(cfg, "llm_align.cli", "reward"):
        return Path(cfg.out)
    name = require_local_or_hub(cfg.model, "llm-train sft")
    train = load_pairs(cfg.data, "train", cfg.half, cfg.caps)
    validation = load_pairs(cfg.data, "validation", cfg.half)
    test = load_pairs(cfg.data, "test")  # both halves: the judge is scored on every held-out pair
    tokenizer = load_tokenizer(name)
    set_seed(cfg.seed)  # the new one-output head is random: seed it before the model is built
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = TrlRewardConfig(
        **cfg.trainer_args(),
        **cfg.checkpoint_args(),
        max_length=cfg.max_length,
        center_rewards_coefficient=cfg.center_rewards or None,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=_tokenized(tokenizer, train),
        eval_dataset=_tokenized(tokenizer, validation),
        processing_class=tokenizer,
        peft_config=cfg.peft_config("SEQ_CLS"),
    )
    run = cfg.train(trainer)
    if not save_trained(cfg, trainer, tokenizer):
        return Path(cfg.out)
    cfg.done()
    metrics = evaluate_pairs(cfg.out, test, cfg.batch_size, cfg.max_length, cfg.seed, cfg.data)
    metrics.update(**run, train_pairs=len(train))
    logger.info("reward model %s: %s", cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
