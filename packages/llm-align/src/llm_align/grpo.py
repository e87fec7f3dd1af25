"""Online RL with a verifiable reward: GRPO and RLOO on the checkable synthetic tasks.

No learned reward is needed when an answer can be checked: the reward is 1 for an exact answer and 0
otherwise (RL from verifiable rewards, as in DeepSeek-R1 and Tülu 3). Both methods sample a *group* of
replies per prompt and use the group itself as the baseline, so no value model is trained. GRPO
(Shao et al. 2024, DeepSeekMath, arXiv:2402.03300) standardises each reward within its group; RLOO
(Ahmadian et al. 2024, arXiv:2402.14740, after Kool et al. 2019) subtracts the mean of the *other*
replies' rewards. `--reward_model` adds a learned reward (weighted) for open-ended quality. trl's
`GRPOTrainer` and `RLOOTrainer` run them.

    llm-align grpo --method grpo --model models/sft-full --data data/synth/sft --categories arithmetic \\
        --out models/grpo
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, write_metrics
from llm_eval.run import load_tokenizer
from llm_train.distributed import relaunch
from llm_train.loop import checkpoint_state, throughput

from llm_align.base import RLConfig, rl_metrics, save_trained, tracked_run
from llm_align.data import over_cap

logger = logging.getLogger(__name__)
METHODS = {
    "grpo": "group-standardised advantages, clipped ratio, KL to the reference (Shao et al. 2024)",
    "rloo": "leave-one-out baseline: each reward minus the mean of the group's others (Ahmadian et al. 2024)",
}
# The per-step logs kept as plots/<name>/<method>.csv: column -> trl's log key.
STEP_LOGS = {
    "reward": "reward",
    "exact": "rewards/exact_answer/mean",
    "gold": "rewards/gold_reward/mean",
    "kl": "kl",
    "entropy": "entropy",
    "length": "completions/mean_length",
    "zero_std": "frac_reward_zero_std",
}


@dataclass
class GRPOConfig(RLConfig):
    method: str = field(default="grpo", metadata={"help": "; ".join(f"{k}: {v}" for k, v in METHODS.items())})
    data: str = field(
        default="data/synth/sft",
        metadata={"help": 'Task folder with {"prompt", "answer"} rows (an exact answer the reward checks).'},
    )
    out: str = field(default="models/grpo", metadata={"help": "Output folder (the RL policy)."})
    categories: str = field(
        default="", metadata={"help": "Comma list of task categories to train on (empty = every category)."}
    )
    num_generations: int = field(default=8, metadata={"help": "Replies sampled per prompt (the group)."})
    beta: float = field(default=0.04, metadata={"help": "Weight of the KL penalty to the reference (0 = none)."})
    reward: str = field(
        default="exact",
        metadata={"help": "The verifiable reward: exact (1 for the exact answer, else 0) or arithmetic (the graded "
                          "rubric of llm_eval.gold, for sums from llm-data gold: a near miss earns more than a far "
                          "one or none, so a group whose replies are all wrong still has an advantage to follow)."},
    )
    reward_model: str = field(
        default="", metadata={"help": "Optional learned reward model (llm-align reward) added to the verifiable one."}
    )
    reward_model_weight: float = field(default=0.5, metadata={"help": "Weight of --reward_model's score."})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (the group is the baseline), got {self.num_generations}")
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) counts replies per step: it must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of: {', '.join(REWARDS)}")


def load_tasks(folder: str, split: str, categories: str, caps: Mapping[str, int] | int = 0) -> list[dict]:
    """Checkable task rows (`prompt` as one user message, `answer`) of one split, filtered and capped per
    category; read by llm-eval's own loader, so training and evaluation see the same rows."""
    from llm_eval.run import load_rows

    wanted = {c.strip() for c in categories.split(",") if c.strip()}
    rows, taken = [], {}
    for row in load_rows(folder, split):
        category = row.get("category", "")
        if (wanted and category not in wanted) or over_cap(caps, category, taken):
            continue
        taken[category] = taken.get(category, 0) + 1
        rows.append({"prompt": [{"role": "user", "content": row["prompt"]}], "answer": row["answer"]})
    if not rows:
        raise ValueError(f"{folder}/{split}.jsonl: no rows with categories {sorted(wanted)}")
    return rows


def exact_answer(completions, answer, **_) -> list[float]:
    """1.0 when the reply is the expected answer under llm-eval's exact-match normalisation, else 0.0."""
    from llm_eval.run import normalize

    return [float(normalize(c[-1]["content"]) == normalize(a)) for c, a in zip(completions, answer, strict=True)]


def gold_reward(prompts, completions, **_) -> list[float]:
    """The exact gold's graded score (`llm_eval.gold`) of each reply to its sum."""
    from llm_eval.gold import gold_scores

    return gold_scores([p[-1]["content"] for p in prompts], [c[-1]["content"] for c in completions])


REWARDS = {"exact": exact_answer, "arithmetic": gold_reward}


class LearnedReward:
    """A reward model as a trl reward function, scoring exactly as `llm-eval` judges (`reward_scores`)."""

    __name__ = "reward_model"

    def __init__(self, folder: str):
        from llm_eval.judge import load_reward_model

        self.model, self.tokenizer = load_reward_model(folder)

    def __call__(self, prompts, completions, **_) -> list[float]:
        from llm_eval.judge import conversation, reward_scores

        # conversation() strips the decoded reply's leading space, as for every judged reply
        pairs = [conversation(p, c[-1]["content"]) for p, c in zip(prompts, completions, strict=True)]
        return reward_scores(self.model, self.tokenizer, pairs)


def run_grpo(cfg: GRPOConfig) -> Path:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed

    if relaunch(cfg, "llm_align.cli", "grpo"):
        return Path(cfg.out)
    name = require_local_or_hub(cfg.model, "llm-train sft")
    train = load_tasks(cfg.data, "train", cfg.categories, cfg.caps)
    tokenizer = load_tokenizer(name)
    funcs, weights = [REWARDS[cfg.reward]], [1.0]
    if cfg.reward_model:
        require_local_or_hub(cfg.reward_model, "llm-align reward")
        funcs.append(LearnedReward(cfg.reward_model))
        weights.append(cfg.reward_model_weight)
    # No eval loop: the held-out measures are `llm-eval run` on the saved policy, and the curve.
    common = dict(
        # trl counts the prompt and completion tokens itself; the Trainer's own count looks for input_ids
        {**cfg.trainer_args(count_tokens=False), "logging_steps": 1, "eval_strategy": "no"},
        **cfg.checkpoint_args(),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        beta=cfg.beta,
        reward_weights=weights,
    )
    set_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)  # for the curve's KL
    data = dict(train_dataset=Dataset.from_list(train), processing_class=tokenizer)
    if cfg.method == "grpo":
        from trl import GRPOConfig as TrlGRPOConfig
        from trl import GRPOTrainer

        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=TrlGRPOConfig(**common), **data)
    else:
        from trl import RLOOConfig, RLOOTrainer

        trainer = RLOOTrainer(model=model, reward_funcs=funcs, args=RLOOConfig(**common), **data)
    start = time.perf_counter()
    checkpoint = cfg.resume_from()
    tokens_before = checkpoint_state(checkpoint).get("num_input_tokens_seen", 0)
    curve = tracked_run(cfg, trainer, model, reference, tokenizer,
                        lambda: trainer.train(resume_from_checkpoint=checkpoint), checkpoint)
    seconds = time.perf_counter() - start
    if not save_trained(cfg, trainer, tokenizer):
        return Path(cfg.out)
    cfg.done()
    metrics = {"train_seconds": seconds, "train_prompts": len(train), "steps": trainer.state.global_step,
               **throughput(trainer, seconds, tokens_before)}
    metrics.update(rl_metrics(cfg, trainer.state.log_history, STEP_LOGS, f"{cfg.method}.csv", curve))
    logger.info("%s %s: %s", cfg.method, cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
