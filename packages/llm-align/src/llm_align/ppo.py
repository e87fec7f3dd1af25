"""RLHF with PPO: the SFT policy samples replies, the reward model scores them, PPO climbs that reward.

Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) as applied to language models by
Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022, arXiv:2203.02155): each reply's reward is the
reward model's score minus `kl_coef` times its log-ratio to the frozen SFT reference, a value model
(initialised from the reward model) estimates returns for GAE advantages, and the clipped PPO objective
updates the policy a few epochs per batch of samples. Without the KL term (`--kl_coef 0`) nothing stops
the policy from drifting to replies the proxy reward model over-scores — reward hacking, which the
over-optimisation curve (`--gold`) makes visible. trl's `PPOTrainer` (trl.experimental.ppo) runs it.

    llm-align ppo --model models/sft-full --reward_model models/reward-proxy --gold models/reward-gold \\
        --out models/ppo
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, write_metrics
from llm_eval.run import load_tokenizer
from llm_train.distributed import relaunch, world_size

from llm_align.base import RLConfig, rl_metrics, save_trained, tracked_run
from llm_align.data import distinct_prompts

logger = logging.getLogger(__name__)
# The per-step PPO logs kept as plots/<name>/ppo.csv: column -> trl's log key.
STEP_LOGS = {
    "score": "objective/scores",
    "kl": "objective/kl",
    "entropy": "objective/entropy",
    "rlhf_reward": "objective/rlhf_reward",
    "policy_loss": "loss/policy_avg",
    "value_loss": "loss/value_avg",
}


@dataclass
class PPOConfig(RLConfig):
    out: str = field(default="models/ppo", metadata={"help": "Output folder (the PPO policy)."})
    reward_model: str = field(
        default="models/reward-proxy", metadata={"help": "The reward model PPO maximises (llm-align reward)."}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "Weight of the per-token KL penalty to the SFT reference; 0 = none (reward hacking)."},
    )
    ppo_epochs: int = field(default=4, metadata={"help": "PPO optimisation epochs over each batch of samples."})
    missing_eos_penalty: float = field(
        default=1.0, metadata={"help": "Subtracted from the score of a reply that never ends (no EOS)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.resume:
            raise ValueError("ppo cannot --resume: trl's PPOTrainer saves no optimizer state to continue from")


def run_ppo(cfg: PPOConfig) -> Path:
    import torch
    from datasets import Dataset
    from llm_eval.judge import load_reward_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed
    from trl.experimental.ppo import PPOConfig as TrlPPOConfig
    from trl.experimental.ppo import PPOTrainer

    if relaunch(cfg, "llm_align.cli", "ppo"):
        return Path(cfg.out)
    name = require_local_or_hub(cfg.model, "llm-train sft")
    require_local_or_hub(cfg.reward_model, "llm-align reward")
    train = distinct_prompts(cfg.data, "train", cfg.caps)
    validation = distinct_prompts(cfg.data, "validation")
    tokenizer = load_tokenizer(name)
    tokenizer.padding_side = "left"  # PPO generates after the prompts, so they must end flush

    def encode(prompts: list[list[dict]]) -> Dataset:
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        return Dataset.from_dict({"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]})

    set_seed(cfg.seed)
    policy = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    reward, _ = load_reward_model(cfg.reward_model)
    # The value model starts as a copy of the reward model: it already reads (prompt, reply) for value.
    value = AutoModelForSequenceClassification.from_pretrained(cfg.reward_model, num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = tokenizer.pad_token_id
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * len(train) / cfg.batch_size)
    # trl's PPO loop is its own: it neither checkpoints nor counts tokens through the Trainer
    trainer_args = {**cfg.trainer_args(count_tokens=False), "save_strategy": "no", "logging_steps": 1}
    args = TrlPPOConfig(
        **trainer_args,
        total_episodes=steps * cfg.batch_size,
        num_ppo_epochs=cfg.ppo_epochs,
        num_mini_batches=1,
        kl_coef=cfg.kl_coef,
        response_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        stop_token="eos",
        missing_eos_penalty=cfg.missing_eos_penalty,
        local_rollout_forward_batch_size=cfg.batch_size // world_size(),
        num_sample_generations=0,
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=encode(train),
        eval_dataset=encode(validation),
    )
    start = time.perf_counter()
    curve = tracked_run(cfg, trainer, policy, reference, tokenizer, trainer.train)
    seconds = time.perf_counter() - start
    if not save_trained(cfg, trainer, tokenizer):
        return Path(cfg.out)
    cfg.done()  # PPO keeps no checkpoints, but the Trainer still created its output folder
    metrics = {"train_seconds": seconds, "train_prompts": len(train), "steps": trainer.state.global_step}
    metrics.update(rl_metrics(cfg, trainer.state.log_history, STEP_LOGS, "ppo.csv", curve))
    logger.info("ppo %s: %s", cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
