"""What every trainer shares: the training-loop settings (schedule, precision, processes, checkpoints),
splits loading, the finished model's folder, and loss curves."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, split_file

from llm_train.distributed import default_processes, is_main_process, world_size

logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECKPOINT = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR: the Trainer writes <output_dir>/checkpoint-<step>


def checkpoint_folder(output_dir: str | Path, step: int) -> Path:
    """The folder the Trainer writes step `step`'s checkpoint into; callbacks add their state to it in
    `on_step_end`, just before the Trainer writes it (`trainer_state.json` last, which `--resume` looks for)."""
    return Path(output_dir) / f"{CHECKPOINT}-{step}"


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
    precision: str = field(
        default="auto",
        metadata={"help": "auto: bf16 mixed precision on a CUDA GPU that has it (else fp16), with TF32 matmuls "
                  "from Ampere on, and fp32 on CPU; or force fp32, bf16 or fp16 (fp16 needs CUDA)."},
    )
    num_processes: int = field(
        default_factory=default_processes,
        metadata={"help": "Train in N processes under `accelerate launch` (DDP: gloo on CPU, NCCL on CUDA); "
                  "batch_size stays the global batch. Default: $LLM_LAB_NUM_PROCESSES or 1."},
    )
    accelerate_config: str = field(
        default="",
        metadata={"help": "An accelerate config file for the launch, e.g. packages/llm-train/accelerate/"
                  "fsdp.yaml or deepspeed_zero3.yaml (with --num_processes > 1)."},
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model before training (fuses kernels on a GPU; the first steps "
                  "pay the compile time)."},
    )
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps (kept in <out>.ckpt)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in <out>.ckpt."})

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.batch_size % self.num_processes:
            raise ValueError(f"batch_size ({self.batch_size}) is the global batch: it must be a multiple of "
                             f"num_processes ({self.num_processes})")
        if self.accelerate_config and not Path(self.accelerate_config).is_file():
            raise FileNotFoundError(f"{self.accelerate_config}: no such accelerate config file (see "
                                    "packages/llm-train/accelerate/)")
        if self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1, got {self.save_steps}")

    @property
    def ckpt_dir(self) -> Path:
        """Where the Trainer writes while the run lasts (`<out>.ckpt`, beside the command's `out` folder)."""
        return Path(f"{self.out}.ckpt")

    @property
    def main_process(self) -> bool:
        """Whether this process writes the outputs (always, unless it is a worker other than rank 0)."""
        return is_main_process()

    def done(self) -> None:
        """Remove the checkpoints of a finished run: they only serve `--resume`, and the model is in `out`."""
        if self.main_process:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)

    @contextmanager
    def saving(self, out: str = ""):
        """Yield the temp folder a finished model is written into; on success it replaces `out` (default
        `self.out`). Every process enters, because FSDP and ZeRO-3 gather the sharded weights inside
        `trainer.save_model`; only the main process's folder is kept, the other workers' are discarded."""
        if self.main_process:
            with atomic_dir(out or self.out) as tmp:
                yield tmp
            return
        tmp = Path(tempfile.mkdtemp(prefix="llm-lab-worker-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def checkpoint_args(self) -> dict:
        """Trainer keywords that keep the last checkpoint, so a killed run continues with --resume."""
        return dict(save_strategy="steps", save_steps=self.save_steps, save_total_limit=1)

    def resume_from(self) -> str | None:
        """With --resume, the newest complete checkpoint in `ckpt_dir` (for `trainer.train(resume_from_checkpoint=
        ...)`), else None. The Trainer writes `trainer_state.json` last, so a checkpoint that a SIGKILL cut
        short is skipped for the one before it, which the Trainer deletes only after a newer one is whole."""
        if not self.resume:
            return None
        whole = [p for p in self.ckpt_dir.glob(f"{CHECKPOINT}-*") if (p / "trainer_state.json").is_file()]
        return str(max(whole, key=lambda p: int(p.name.rsplit("-", 1)[1]))) if whole else None

    def train(self, trainer) -> dict[str, float]:
        """Run `trainer.train()`, from the newest whole checkpoint with --resume, and return what it measured:
        `train_seconds` (this process's), `train_loss` (the mean over every step of the run, see `run_loss`)
        and the `throughput` keys."""
        checkpoint = self.resume_from()
        before = checkpoint_state(checkpoint)  # read now: the Trainer deletes it once it saves a newer one
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - start
        return {"train_seconds": seconds, "train_loss": run_loss(trainer.state, result.training_loss, before),
                **throughput(trainer, seconds, before.get("num_input_tokens_seen", 0))}

    def precision_args(self) -> dict:
        """The Trainer's bf16 / fp16 / tf32 keywords for `precision` on this machine."""
        import torch

        cuda = torch.cuda.is_available()
        if self.precision == "fp16" and not cuda:
            raise ValueError("precision fp16 needs a CUDA GPU; on CPU use fp32 (the default) or bf16")
        if self.precision == "auto":
            # trl's configs default to bf16 autocast and gradient checkpointing even on CPU: on a CPU without
            # native bf16 SFT ran ~10x slower and bf16 rounding hurt a small model's learning. fp32 on CPU.
            mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        else:
            mode = self.precision
        # TF32 keeps fp32 storage and rounds matmul inputs to 10 mantissa bits (Ampere's tensor cores).
        tf32 = cuda and mode != "fp32" and torch.cuda.get_device_capability()[0] >= 8
        return dict(bf16=mode == "bf16", fp16=mode == "fp16", tf32=tf32 or None)

    def trainer_args(self, output_dir: str = "", count_tokens: bool = True) -> dict:
        """The TrainingArguments (or trl config) keywords every llm-lab run uses; the Trainer writes into
        `output_dir`, by default `ckpt_dir`. `count_tokens=False` where the batches hold no `input_ids` for
        the Trainer to count (it would warn every step): such runs count with `count_trained_tokens`."""
        import torch

        # batch_size is the global batch: each of the N processes takes 1/N of it (DDP averages gradients).
        per_device = self.batch_size // world_size()
        return dict(
            output_dir=output_dir or str(self.ckpt_dir),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=per_device,
            per_device_eval_batch_size=per_device,
            learning_rate=self.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=self.warmup_ratio,  # a float < 1 is a fraction of the steps
            eval_strategy="steps",
            eval_steps=self.eval_steps,
            # a divisor of save_steps, so each checkpoint's log history ends with the loss up to it: `run_loss`
            logging_steps=math.gcd(10, self.save_steps),
            seed=self.seed,
            data_seed=self.seed,
            # Count the tokens each step reads (summed over processes) for tokens/s and FLOP/s: `throughput`.
            include_num_input_tokens_seen="non_padding" if count_tokens else "no",
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            **self.precision_args(),
            gradient_checkpointing=False,
            torch_compile=self.torch_compile,
            dataloader_num_workers=0,
        )


def count_trained_tokens(trainer, module) -> None:
    """Count the tokens `module` trains on into `trainer.state.num_input_tokens_seen`, for the trainers whose
    batches the Trainer cannot count (it reads only an `input_ids` key): trl's ORPO and CPO keep prompt,
    chosen and rejected ids apart, its PPO loop is not the Trainer's, sentence-transformers passes feature
    dicts. A forward hook sums the `attention_mask` of every pass that builds a graph for backward, so
    evaluation and sampling are left out; each step's end adds it up over processes. The count lives in the
    trainer state, which checkpoints carry, so a resumed run goes on counting where it stopped."""
    import torch
    from torch import distributed
    from transformers import TrainerCallback

    pending = []  # this process's masks summed since the last step's end

    def hook(mod, args, kwargs):
        if torch.is_grad_enabled():
            features = args[0] if args and isinstance(args[0], dict) else kwargs
            if "attention_mask" not in features:
                raise ValueError(f"{type(mod).__name__}: a training forward without attention_mask; "
                                 "its tokens cannot be counted")
            pending.append(features["attention_mask"].sum())

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            # An optimizer step follows at least one training forward in every process; so does this sum.
            tokens = torch.stack(pending).sum()
            if distributed.is_initialized():
                distributed.all_reduce(tokens)
            state.num_input_tokens_seen += int(tokens)
            pending.clear()

    module.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.add_callback(Count())


# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets, without sparsity (fp16 where the GPU
# has no bf16: T4, V100). Checked in this order, so "A100" is not read as "A10".
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12,
              "T4": 65e12, "V100": 125e12}


def peak_flops() -> float | None:
    """This machine's peak FLOP/s for MFU: a CUDA GPU in `PEAK_FLOPS`, else None (CPUs have no such figure)."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def checkpoint_state(checkpoint: str | None) -> dict:
    """The trainer state a checkpoint holds (`trainer_state.json`), or {} for a run that starts afresh."""
    return json.loads(Path(checkpoint, "trainer_state.json").read_text()) if checkpoint else {}


def run_loss(state, loss: float, before: dict) -> float:
    """The mean training loss over every step of a run that may have resumed from a checkpoint whose trainer
    state is `before`. The Trainer's `training_loss` (`loss`) averages only the steps since the resume; the
    steps before are in the checkpoint's log history, as window means whose last window ends at the
    checkpoint (`logging_steps` divides `save_steps`), so a resumed run reports the loss an uninterrupted
    one does, up to float rounding."""
    steps = before.get("global_step", 0)
    if not steps:
        return loss
    total, last = 0.0, 0
    for row in before["log_history"]:
        if "loss" in row:
            total, last = total + row["loss"] * (row["step"] - last), row["step"]
    if last != steps:
        logger.warning("the checkpoint's log history ends at step %d, not at its step %d: train_loss covers the "
                       "steps since the resume only", last, steps)
        return loss
    return (total + loss * (state.global_step - steps)) / state.global_step


def throughput(trainer, seconds: float, tokens_before: int = 0) -> dict[str, float]:
    """Tokens/s over this process's `seconds` of training (after a resume, the tokens counted since the
    checkpoint's `tokens_before`), model FLOP/s = 6·N·tokens/s (N = every parameter; Kaplan et al. 2020's
    forward + backward estimate, which leaves out attention's T² term) and, on a GPU with a known peak,
    MFU = model FLOP/s / peak (PaLM, Chowdhery et al. 2022). `train_tokens_seen` counts the whole run.
    Empty where no tokens were counted."""
    tokens = trainer.state.num_input_tokens_seen
    now = tokens - tokens_before
    if not now or seconds <= 0:
        return {}
    model = trainer.model
    # peft's count unpacks 4-bit weights, which numel() counts two to a byte
    n = model.get_nb_trainable_parameters()[1] if hasattr(model, "get_nb_trainable_parameters") else sum(
        p.numel() for p in model.parameters())
    out = {"train_tokens_seen": int(tokens), "tokens_per_second": now / seconds,
           "model_flops_per_second": 6 * n * now / seconds}
    peak = peak_flops()
    if peak:
        out["mfu"] = out["model_flops_per_second"] / peak
    return out


def load_splits(folder: str, splits: tuple[str, ...] = ("train", "validation")):
    """Load a dataset folder's JSONL splits with `datasets`; a missing file names itself."""
    from datasets import load_dataset

    return load_dataset("json", data_files={s: str(split_file(folder, s)) for s in splits})


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
