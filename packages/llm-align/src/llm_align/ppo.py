"""RLHF with PPO: the SFT policy samples replies, the reward model scores them, PPO climbs that reward.

Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) as applied to language models by
Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022, arXiv:2203.02155): each reply's reward is the
reward model's score minus `kl_coef` times its log-ratio to the frozen SFT reference, a value model
(initialised from the reward model) estimates returns for GAE advantages, and the clipped PPO objective
updates the policy a few epochs per batch of samples. Without the KL term (`--kl_coef 0`) nothing stops
the policy from drifting to replies the proxy reward model over-scores — reward hacking, which the
over-optimisation curve (`--gold`) makes visible. trl's `PPOTrainer` (trl.experimental.ppo) runs it;
`ppo_trainer_class` and `ResumablePPO` add what its checkpoints lack for `--resume`.

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
from llm_train.loop import checkpoint_folder, checkpoint_state, count_trained_tokens, throughput
from transformers import TrainerCallback

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


class PromptStream:
    """The prompt batches PPO trains on, a pure function of (seed, batch number), from any batch on.

    Epoch e is a permutation of the prompts drawn from its own generator seeded with (seed, e), cut into
    global batches of which each process takes its share. trl's own loader draws each epoch's shuffle from
    the global random stream that sampling also advances, so a resumed run could not redraw the epoch it
    was killed in; this one can (`start`)."""

    def __init__(self, dataset, collate, trainer, seed: int, start: int = 0):
        self.dataset, self.collate, self.seed, self.start = dataset, collate, seed, start
        self.size, self.local = trainer.args.batch_size, trainer.args.local_batch_size
        self.rank = trainer.accelerator.process_index
        self.per_epoch = len(dataset) // self.size  # whole global batches only, as trl's drop_last
        if not self.per_epoch:
            raise ValueError(f"ppo: {len(dataset)} training prompts do not fill one batch of {self.size}; "
                             "lower --batch_size or raise --max_per_category")

    def __iter__(self):
        import torch

        batch = self.start
        while True:
            epoch, i = divmod(batch, self.per_epoch)
            shuffle = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.dataset), generator=shuffle)
            mine = order[i * self.size + self.rank * self.local :][: self.local].tolist()
            yield self.collate([self.dataset[j] for j in mine])
            batch += 1


class ResumablePPO(TrainerCallback):
    """Given a checkpoint (policy, value model, optimizer, scheduler, RNG states, trainer state, the curve's
    rows), the run put back where it stopped. trl's loop restarts its step counter at 0 and its prompts at
    the stream's start, so `restore` and `on_train_begin` undo both (see `PromptStream`)."""

    def __init__(self, trainer, checkpoint: str | None):
        self.trainer, self.checkpoint = trainer, checkpoint
        self.saved: dict = {}  # the checkpoint's trainer state

    def restore(self) -> None:
        """Before `trainer.train()`: optimizer, scheduler, prompt stream and RNG as checkpointed."""
        if self.checkpoint is None:
            return
        import torch
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        trainer, folder = self.trainer, self.checkpoint
        self.saved = checkpoint_state(folder)
        done = self.saved["global_step"]
        # Trainer._load_optimizer_and_scheduler reads attributes PPOTrainer (no Trainer.__init__) never sets
        for part, name in ((trainer.optimizer, OPTIMIZER_NAME), (trainer.lr_scheduler, SCHEDULER_NAME)):
            part.load_state_dict(torch.load(Path(folder, name), map_location="cpu", weights_only=True))
        trainer.args.num_total_batches -= done  # the loop counts its updates from 1 again
        trainer.dataloader.start = done
        trainer._load_rng_state(folder)
        logger.info("ppo: resumed from %s (step %d of %d)", folder, done, done + trainer.args.num_total_batches)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.saved:
            state.global_step, state.episode = self.saved["global_step"], self.saved["episode"]
            state.log_history = self.saved["log_history"]
            state.num_input_tokens_seen = self.saved["num_input_tokens_seen"]
            state.max_steps = state.global_step + args.num_total_batches


VALUE_MODEL = "value_model"  # the value model's folder inside each checkpoint


def ppo_trainer_class():
    """trl's PPOTrainer, with the value model in its checkpoints and able to save under DDP.

    Its checkpoints hold the policy alone (and the optimizer with the value model's moments), so each one
    gets the value model's weights too, written before the Trainer's own files (`trainer_state.json` last,
    which `--resume` looks for). Its `save_model` keeps only the policy by reading `policy` off
    `self.model`, and its checkpoint's model card reads `config` there; under DDP `self.model` is the
    DistributedDataParallel wrapper, which has neither, so both run on the unwrapped model. And the worker
    ranks' `Trainer._save` reads an attribute only `Trainer.__init__` sets, which PPOTrainer never calls."""
    from trl.experimental.ppo import PPOTrainer

    class CheckpointingPPOTrainer(PPOTrainer):
        is_distributed_loading_by_transformers = False  # the models are loaded whole in every process

        def _unwrapped(self, save, *args, **kwargs):
            wrapped, self.model = self.model, self.accelerator.unwrap_model(self.model)
            try:
                return save(*args, **kwargs)
            finally:
                self.model = wrapped

        def save_model(self, output_dir=None, _internal_call=False):
            return self._unwrapped(super().save_model, output_dir, _internal_call)

        def _save_checkpoint(self, model, trial):
            if self.is_world_process_zero():
                folder = checkpoint_folder(self.args.output_dir, self.state.global_step) / VALUE_MODEL
                self.accelerator.unwrap_model(self.model).value_model.save_pretrained(folder)
            return self._unwrapped(super()._save_checkpoint, model, trial)

    return CheckpointingPPOTrainer


def run_ppo(cfg: PPOConfig) -> Path:
    import torch
    from datasets import Dataset
    from llm_eval.judge import load_reward_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed
    from trl.experimental.ppo import PPOConfig as TrlPPOConfig

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

    checkpoint = cfg.resume_from()
    set_seed(cfg.seed)
    policy = AutoModelForCausalLM.from_pretrained(checkpoint or name, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    reward, _ = load_reward_model(cfg.reward_model)
    # The value model starts as a copy of the reward model: it already reads (prompt, reply) for value.
    value_from = f"{checkpoint}/{VALUE_MODEL}" if checkpoint else cfg.reward_model
    value = AutoModelForSequenceClassification.from_pretrained(value_from, num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = tokenizer.pad_token_id
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * len(train) / cfg.batch_size)
    # trl's PPO loop is not the Trainer's, which would count the tokens: count_trained_tokens below does
    trainer_args = {**cfg.trainer_args(count_tokens=False), **cfg.checkpoint_args(), "logging_steps": 1}
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
    trainer = ppo_trainer_class()(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=encode(train),
        eval_dataset=encode(validation),
    )
    trainer.dataloader = PromptStream(trainer.train_dataset, trainer.data_collator, trainer, cfg.seed)
    # Each sample is trained on ppo_epochs times: those are the passes counted, and 6·N·tokens with N the
    # policy and value model (trainer.model) is their FLOPs; sampling, reference and reward passes are not.
    count_trained_tokens(trainer, trainer.accelerator.unwrap_model(trainer.model).policy)
    resumable = ResumablePPO(trainer, checkpoint)
    trainer.add_callback(resumable)
    resumable.restore()
    start = time.perf_counter()
    curve = tracked_run(cfg, trainer, policy, reference, tokenizer, trainer.train, checkpoint)
    seconds = time.perf_counter() - start
    if not save_trained(cfg, trainer, tokenizer):
        return Path(cfg.out)
    cfg.done()
    metrics = {"train_seconds": seconds, "train_prompts": len(train), "steps": trainer.state.global_step,
               **throughput(trainer, seconds, resumable.saved.get("num_input_tokens_seen", 0))}
    metrics.update(rl_metrics(cfg, trainer.state.log_history, STEP_LOGS, "ppo.csv", curve))
    logger.info("ppo %s: %s", cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
