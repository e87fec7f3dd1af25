"""What every llm-align trainer shares: policy/data/output fields, checkpoints and `--resume`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llm_train.loop import LoopConfig


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
            "task pairs per category but only ~140 safety ones, so a cap balances them and shortens runs."
        },
    )
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (kept in <out>.ckpt until done)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in <out>.ckpt."})

    def __post_init__(self):
        super().__post_init__()
        if not self.out:
            raise ValueError("--out is required (the output model folder)")
        if self.max_per_category < 0:
            raise ValueError(f"max_per_category must be >= 0, got {self.max_per_category}")
        for name in ("max_length", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def ckpt_dir(self) -> Path:
        return Path(f"{self.out}.ckpt")

    def checkpoint_args(self) -> dict:
        """Trainer keywords that keep the last checkpoint, so a killed run continues with --resume."""
        return dict(save_strategy="steps", save_steps=self.save_steps, save_total_limit=1)

    def resume_from(self) -> bool | None:
        """What to pass as `trainer.train(resume_from_checkpoint=...)`."""
        return True if self.resume and any(self.ckpt_dir.glob("checkpoint-*")) else None

    def done(self) -> None:
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # the run finished; checkpoints only serve --resume
