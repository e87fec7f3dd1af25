"""What pre-training and SFT share: the training-loop settings, splits loading, and loss curves."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir


@dataclass
class LoopConfig:
    """Schedule, seed and outputs of a Trainer run; each command adds its model/data fields."""

    epochs: float = field(default=3.0, metadata={"help": "Passes over the training set."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1 = use epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Examples (or packed blocks) per optimizer step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps spent warming up."})
    eval_steps: int = field(default=50, metadata={"help": "Evaluate the validation loss every N steps."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, initialisation and dropout."})
    metrics: str = field(default="", metadata={"help": "Write metrics JSON here (reports/metrics/train_<name>.json)."})
    plots: str = field(default="", metadata={"help": "Write loss-curve CSVs (train.csv, eval.csv) into this folder."})

    def __post_init__(self):
        for name in ("batch_size", "eval_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @property
    def ckpt_dir(self) -> Path:
        """Where the Trainer writes while the run lasts (`<out>.ckpt`, beside the command's `out` folder)."""
        return Path(f"{self.out}.ckpt")

    def done(self) -> None:
        """Remove the checkpoints of a finished run: they only serve `--resume`, and the model is in `out`."""
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    def trainer_args(self, output_dir: str = "") -> dict:
        """The TrainingArguments (or trl config) keywords every llm-lab run uses; the Trainer writes into
        `output_dir`, by default `ckpt_dir`."""
        import torch

        cuda = torch.cuda.is_available()
        return dict(
            output_dir=output_dir or str(self.ckpt_dir),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=self.warmup_ratio,  # a float < 1 is a fraction of the steps
            eval_strategy="steps",
            eval_steps=self.eval_steps,
            logging_steps=10,
            seed=self.seed,
            data_seed=self.seed,
            report_to="none",
            use_cpu=not cuda,
            # trl's configs default to bf16 autocast and gradient checkpointing even on CPU: both slow a
            # small model down (SFT ran ~2x slower) and bf16 rounding hurts its learning. fp32 on CPU.
            bf16=cuda and torch.cuda.is_bf16_supported(),
            gradient_checkpointing=False,
            dataloader_num_workers=0,
        )


def load_splits(folder: str, splits: tuple[str, ...] = ("train", "validation")):
    """Load a dataset folder's JSONL splits with `datasets`; a missing file names itself."""
    from datasets import load_dataset

    files = {s: str(Path(folder) / f"{s}.jsonl") for s in splits}
    for split, f in files.items():
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: missing {split} split (run `llm-data synth` or `llm-data hub` first)")
    return load_dataset("json", data_files=files)


def write_loss_curves(plots_dir: str, log_history: list[dict]) -> None:
    """Trainer logs -> `train.csv` (step,loss) and `eval.csv` (step,eval_loss), DVC plot files."""
    if not plots_dir:
        return
    with atomic_dir(plots_dir) as tmp:
        for name, key in (("train", "loss"), ("eval", "eval_loss")):
            with open(tmp / f"{name}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", key])
                writer.writerows((row["step"], round(row[key], 6)) for row in log_history if key in row)
