"""Causal-language-model pre-training: predict the next token of plain text.

Next-token prediction on raw text is how GPT (Radford et al. 2018) and Llama (Touvron et al. 2023)
learn language and world knowledge before any instruction tuning. Documents are tokenized, joined
with EOS and packed into fixed-length blocks so no compute is spent on padding; the Trainer logs the
training and held-out loss, keeps checkpoints, and `--resume` continues an interrupted run.

    llm-train pretrain --model models/init --data data/synth/pretrain --out models/base
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_local_or_hub, weights_mb, write_metrics

from llm_train.loop import LoopConfig, load_splits, write_loss_curves

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig(LoopConfig):
    model: str = field(default="models/init", metadata={"help": "Model folder or hub id to start from."})
    data: str = field(
        default="data/synth/pretrain",
        metadata={"help": 'Dataset folder with train/validation JSONL of {"text"} rows.'},
    )
    out: str = field(default="models/base", metadata={"help": "Output model folder."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training block."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps (kept in <out>.ckpt)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in <out>.ckpt."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("block_size", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _pack(dataset, tokenizer, block_size: int):
    """Tokenize, append EOS to each document, concatenate and cut into `block_size` blocks."""
    if "text" not in dataset["train"].column_names:
        raise ValueError(f"pre-training data needs a 'text' field, found {dataset['train'].column_names}")

    def tokenize(batch):
        return {"input_ids": [ids + [tokenizer.eos_token_id] for ids in tokenizer(batch["text"])["input_ids"]]}

    def group(batch):
        flat = [t for ids in batch["input_ids"] for t in ids]
        n = len(flat) // block_size * block_size
        blocks = [flat[i : i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    cols = dataset["train"].column_names
    tokenized = dataset.map(tokenize, batched=True, remove_columns=cols, desc="Tokenizing")
    return tokenized.map(group, batched=True, desc=f"Packing into blocks of {block_size}")


def run_pretrain(cfg: PretrainConfig) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    model_name = require_local_or_hub(cfg.model, "llm-train init")
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32)
    data = _pack(load_splits(cfg.data), tokenizer, cfg.block_size)
    if len(data["train"]) == 0:
        raise ValueError(f"{cfg.data}: the training text is shorter than one block of {cfg.block_size} tokens")

    args = TrainingArguments(
        **cfg.trainer_args(),
        weight_decay=cfg.weight_decay,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=default_data_collator,
    )
    resume = cfg.resume and any(cfg.ckpt_dir.glob("checkpoint-*"))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    eval_loss = trainer.evaluate()["eval_loss"]
    with atomic_dir(cfg.out) as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(tmp)
    cfg.done()
    n_params = sum(p.numel() for p in model.parameters())
    write_metrics(
        cfg.metrics,
        {
            "train_seconds": seconds,
            "train_loss": result.training_loss,
            "eval_loss": eval_loss,
            "trainable_params": n_params,
            "total_params": n_params,
            "trainable_percent": 100.0,
            "size_mb": weights_mb(cfg.out),
            "train_tokens": result.global_step * cfg.batch_size * cfg.block_size,
        },
    )
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
