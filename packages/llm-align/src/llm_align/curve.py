"""Reward over-optimisation, measured while RL trains: proxy reward and gold score against KL.

Gao et al. 2022 ('Scaling Laws for Reward Model Overoptimization', arXiv:2210.10760) showed that as a
policy is pushed against a learned reward model, the reward it optimises (the *proxy*) keeps rising
while the true objective (a *gold* reward model, never optimised) rises, peaks and falls — and that
the KL divergence from the starting policy is the axis on which this happens. `OverOptimisationCurve`
measures exactly that during PPO / GRPO: every few steps it samples one reply per held-out prompt from
the current policy, scores the replies with both rewards (the gold a reward model, or the exact rule of
`llm_eval.gold`), and estimates KL(policy || reference) from the same samples.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from llm_eval.stats import mean_ci, paired_diff_ci, to_metrics
from llm_train.loop import checkpoint_folder
from transformers import TrainerCallback

SERIES = ("kl", "proxy", "gold")
CHECKPOINT_FILE = "overopt.json"  # the curve so far, inside each Trainer checkpoint
COLUMNS = ("step", *(f"{name}{suffix}" for name in SERIES for suffix in ("", "_lo", "_hi")))


class OverOptimisationCurve(TrainerCallback):
    """A TrainerCallback that appends (step, kl, proxy, gold) rows, each mean with its bootstrap interval
    over the prompts, to `rows` every `every` steps; `changes()` gives the paired start-to-end changes."""

    def __init__(self, policy, reference, tokenizer, proxy, gold, prompts: list[str], every: int,
                 max_new_tokens: int, seed: int):
        self.policy, self.reference, self.tokenizer = policy, reference, tokenizer
        self.proxy, self.gold = proxy, gold  # scorers: (prompts, replies) -> one reward each (`base.scorer`)
        self.prompts, self.every, self.max_new_tokens, self.seed = prompts, every, max_new_tokens, seed
        self.rows: list[dict] = []
        self.first: dict[str, list[float]] = {}  # per-prompt values at the first and the latest measurement
        self.last: dict[str, list[float]] = {}

    def measure(self, step: int) -> dict:
        import torch
        from llm_eval.align import sampled_kl

        was_training = self.policy.training
        self.policy.eval()
        # fork_rng: the measurement's own sampling seed, the same at every step (common random numbers
        # make the steps comparable), and the training's random stream left exactly as it was.
        devices = [self.policy.device] if self.policy.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            kl, replies = sampled_kl(
                self.policy, self.reference, self.tokenizer, self.prompts, self.max_new_tokens, self.seed
            )
        texts = self.tokenizer.batch_decode(replies, skip_special_tokens=True)
        values = {"kl": kl, "proxy": self.proxy(self.prompts, texts), "gold": self.gold(self.prompts, texts)}
        self.policy.train(was_training)
        row = {"step": step}
        for name, per_prompt in values.items():
            estimate = mean_ci(per_prompt, seed=self.seed)
            row.update({name: estimate.value, f"{name}_lo": estimate.lo, f"{name}_hi": estimate.hi})
        self.first = self.first or values
        self.last = values
        self.rows.append(row)
        return row

    def changes(self) -> dict[str, float]:
        """End minus start of each series, paired over the same prompts, with its bootstrap interval."""
        out = {}
        for name in SERIES:
            diff = paired_diff_ci(self.last[name], self.first[name], seed=self.seed)
            out.update(to_metrics(f"{name}_change", diff))
        return out

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.rows:
            self.measure(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.measure(state.global_step)
        if control.should_save and state.is_world_process_zero:
            # The Trainer writes this step's checkpoint right after on_step_end (trainer_state.json last), so
            # a checkpoint that `--resume` accepts always holds the curve up to its own step.
            folder = checkpoint_folder(args.output_dir, state.global_step)
            folder.mkdir(parents=True, exist_ok=True)
            state_json = {"rows": self.rows, "first": self.first, "last": self.last}
            (folder / CHECKPOINT_FILE).write_text(json.dumps(state_json))

    def restore(self, checkpoint: str | None) -> None:
        """Continue the curve a checkpoint holds (a resumed run): its rows and its first measurement."""
        path = Path(checkpoint or "") / CHECKPOINT_FILE
        if checkpoint and path.is_file():
            vars(self).update(json.loads(path.read_text()))

    def on_train_end(self, args, state, control, **kwargs):
        if not self.rows or self.rows[-1]["step"] != state.global_step:
            self.measure(state.global_step)


def write_curve(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: round(r[k], 6) if k != "step" else r[k] for k in COLUMNS} for r in rows)
