"""What every llm-align trainer shares: policy/data/output fields and the RL commands' curve settings
(checkpoints, `--resume`, precision and processes come from llm-train's `LoopConfig`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llm_data.io import atomic_dir
from llm_train.loop import LoopConfig

from llm_align.data import parse_caps


@dataclass
class AlignConfig(LoopConfig):
    model: str = field(
        default="models/sft-full", metadata={"help": "Starting model folder (the SFT policy) or hub id."}
    )
    data: str = field(
        default="data/synth/preference",
        metadata={"help": 'Preference dataset folder: {"prompt","chosen","rejected"} rows (text or messages).'},
    )
    out: str = field(default="", metadata={"help": "Output model folder."})
    max_length: int = field(
        default=128, metadata={"help": "Longest prompt + reply in tokens; longer pairs are dropped."}
    )
    max_per_category: int = field(
        default=0,
        metadata={
            "help": "Train on at most this many pairs per category (0 = all): the synthetic suite has ~500 "
            "task pairs per category, so a cap balances them and shortens runs."
        },
    )
    category_caps: str = field(
        default="safety=0,benign=0",
        metadata={
            "help": "Per-category overrides of --max_per_category, as name=N pairs (0 = all). The refusal "
            "boundary is learned from the harmful requests and their look-alikes alone: capped at 150 each, "
            "DPO refused 89% of held-out harmful requests; with all of them (350 and 280), 98%."
        },
    )
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (kept in <out>.ckpt until done)."})
    lora_r: int = field(
        default=0,
        metadata={"help": "0: train every weight. > 0: train LoRA adapters of this rank on every linear layer "
                  "(peft; Hu et al. 2021), which a 1.1B model needs on a 16 GB GPU; the saved folder has them "
                  "merged in, so later stages load it like any model (reward and dpo only)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.out:
            raise ValueError("--out is required (the output model folder)")
        if self.max_per_category < 0:
            raise ValueError(f"max_per_category must be >= 0, got {self.max_per_category}")
        self.caps  # noqa: B018 -- a malformed --category_caps fails here, before any model loads
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")

    def peft_config(self, task_type: str):
        """The LoRA adapters `--lora_r` asks for (None: train every weight); `task_type` CAUSAL_LM or SEQ_CLS
        (peft then also trains the new score head)."""
        if not self.lora_r:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=2 * self.lora_r, lora_dropout=0.05,
                          target_modules="all-linear", task_type=task_type)

    @property
    def caps(self) -> dict[str, int]:
        """Pairs to read per category: `category_caps` over `max_per_category` (0 = all)."""
        return parse_caps(self.category_caps, self.max_per_category)


@dataclass
class RLConfig(AlignConfig):
    """What the online RL commands (ppo, grpo) add: sampling, and the over-optimisation curve."""

    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the training replies."})
    gold: str = field(
        default="",
        metadata={
            "help": "Gold reward model (llm-align reward --half second), or a programmatic gold by name "
            "(arithmetic: llm_eval.gold, for --curve_data from llm-data gold). With it, the over-optimisation "
            "curve (proxy reward and gold score against KL, Gao et al. 2022) is measured as training runs."
        },
    )
    proxy: str = field(
        default="models/reward-proxy",
        metadata={"help": "The proxy reward model the curve reports (the one PPO optimises)."},
    )
    curve_data: str = field(
        default="data/synth/preference",
        metadata={"help": "Preference folder whose validation prompts the curve samples replies for."},
    )
    curve_every: int = field(default=10, metadata={"help": "Measure the curve every N steps."})
    curve_prompts: int = field(default=64, metadata={"help": "Validation prompts per curve measurement."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_new_tokens", "curve_every", "curve_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.lora_r:
            raise ValueError("--lora_r applies to reward and dpo; ppo and grpo train every weight")


def save_trained(cfg: AlignConfig, trainer, tokenizer) -> bool:
    """Write the trained model (LoRA adapters merged in) and its tokenizer to `cfg.out`. Every process
    takes part (see LoopConfig.saving); returns True in the one that writes the outputs."""
    with cfg.saving() as tmp:
        if not cfg.lora_r:
            trainer.save_model(str(tmp))
        elif cfg.main_process:
            trainer.model.merge_and_unload().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return cfg.main_process


def scorer(spec: str) -> Callable[[list, list[str]], list[float]]:
    """(prompts, replies) -> one reward per reply: the programmatic gold `spec` names (llm_eval.align.GOLDS),
    or the reward model in folder `spec`."""
    from llm_eval.align import GOLDS
    from llm_eval.gold import gold_scores
    from llm_eval.judge import conversation, load_reward_model, reward_scores

    if spec in GOLDS:
        return gold_scores
    model, tokenizer = load_reward_model(spec)
    return lambda prompts, replies: reward_scores(
        model, tokenizer, [conversation(p, r) for p, r in zip(prompts, replies, strict=True)]
    )


def tracked_run(cfg: RLConfig, trainer, policy, reference, tokenizer, train: Callable[[], object],
                checkpoint: str | None = None):
    """Run `train()`; with `cfg.gold`, measure the over-optimisation curve as it runs and return it. Given
    the checkpoint a run resumes from, the curve continues from the rows saved in it."""
    if not cfg.gold:
        train()
        return None
    from llm_eval.align import load_prompts

    from llm_align.curve import OverOptimisationCurve

    prompts = [p["prompt"] for p in load_prompts(cfg.curve_data, "validation")][: cfg.curve_prompts]
    curve = OverOptimisationCurve(
        policy, reference, tokenizer, scorer(cfg.proxy), scorer(cfg.gold), prompts, cfg.curve_every,
        cfg.max_new_tokens, cfg.seed,
    )
    curve.restore(checkpoint)
    trainer.add_callback(curve)
    train()
    return curve


def rl_metrics(cfg: RLConfig, log_history: list[dict], step_logs: dict[str, str], csv_name: str, curve) -> dict:
    """Write the per-step logs (`<plots>/<csv_name>`) and the curve (`overopt.csv`); return summary metrics:
    the first and last tenth of the logged steps' means, non-finite steps, and the curve's changes."""
    import csv
    import math

    from llm_align.curve import write_curve

    rows = [
        {"step": r["step"], **{col: r[key] for col, key in step_logs.items() if key in r}}
        for r in log_history
        if any(key in r for key in step_logs.values())
    ]
    metrics: dict[str, float] = {
        "nonfinite_steps": sum(any(not math.isfinite(v) for k, v in r.items() if k != "step") for r in rows)
    }
    tenth = max(1, len(rows) // 10)
    for col in step_logs:
        values = [r[col] for r in rows if col in r]
        if values:
            metrics[f"{col}_first"] = sum(values[:tenth]) / len(values[:tenth])
            metrics[f"{col}_last"] = sum(values[-tenth:]) / len(values[-tenth:])
    if curve is not None:
        metrics.update(curve.changes())
        metrics.update({f"curve_{k}": v for k, v in curve.rows[-1].items() if k != "step"})
    if cfg.plots:
        with atomic_dir(cfg.plots) as tmp:
            with open(tmp / csv_name, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["step", *step_logs], restval="")
                writer.writeheader()
                writer.writerows(rows)
            if curve is not None:
                write_curve(tmp / "overopt.csv", curve.rows)
    return metrics
