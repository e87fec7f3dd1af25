"""Pre-training on plain text: causal LM (predict the next token) or masked LM (fill in hidden tokens).

Next-token prediction (`--objective clm`) is how GPT (Radford et al. 2018) and Llama (Touvron et al.
2023) learn language and world knowledge before any instruction tuning. Masked-LM pre-training
(`--objective mlm`, BERT, Devlin et al. 2019) hides 15% of the tokens (80% become the mask token,
10% a random token, 10% stay) and trains a bidirectional encoder to restore them, through
transformers' `DataCollatorForLanguageModeling`. Documents are tokenized, joined with EOS and packed
into fixed-length blocks so no compute is spent on padding; the Trainer logs the training and
held-out loss, keeps checkpoints, and `--resume` continues an interrupted run.

    llm-train pretrain --model models/init --data data/synth/pretrain --out models/base
    llm-train pretrain --objective mlm --model models/init-bert --data data/synth/pretrain --out models/base-bert
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, weights_mb, write_metrics

from llm_train.distributed import relaunch
from llm_train.loop import LoopConfig, load_splits, write_loss_curves

logger = logging.getLogger(__name__)
OBJECTIVES = ("clm", "mlm")


@dataclass
class PretrainConfig(LoopConfig):
    objective: str = field(
        default="clm",
        metadata={"help": "clm: next-token prediction (a Llama from `init`); mlm: masked-token prediction "
                  "(an encoder from `init --arch bert`)."},
    )
    mlm_probability: float = field(
        default=0.15,
        metadata={"help": "mlm: share of tokens hidden per block (BERT's 15%; 80/10/10 mask/random/keep)."},
    )
    model: str = field(default="models/init", metadata={"help": "Model folder or hub id to start from."})
    data: str = field(
        default="data/synth/pretrain",
        metadata={"help": 'Dataset folder with train/validation JSONL of {"text"} rows.'},
    )
    out: str = field(default="models/base", metadata={"help": "Output model folder."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training block."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")


def _pack(dataset, tokenizer, block_size: int, labels: bool = True):
    """Tokenize, append EOS to each document, concatenate and cut into `block_size` blocks (with a copy
    as `labels` for causal LM; the masked-LM collator makes its own)."""
    if "text" not in dataset["train"].column_names:
        raise ValueError(f"pre-training data needs a 'text' field, found {dataset['train'].column_names}")

    def tokenize(batch):
        return {"input_ids": [ids + [tokenizer.eos_token_id] for ids in tokenizer(batch["text"])["input_ids"]]}

    def group(batch):
        flat = [t for ids in batch["input_ids"] for t in ids]
        n = len(flat) // block_size * block_size
        blocks = [flat[i : i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]} if labels else {"input_ids": blocks}

    cols = dataset["train"].column_names
    tokenized = dataset.map(tokenize, batched=True, remove_columns=cols, desc="Tokenizing")
    return tokenized.map(group, batched=True, desc=f"Packing into blocks of {block_size}")


def _model_and_collator(cfg: PretrainConfig, model_name: str, tokenizer):
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        default_data_collator,
    )

    if cfg.objective == "clm":
        return AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32), default_data_collator
    if tokenizer.mask_token is None:
        raise ValueError(f"{cfg.model}: the tokenizer has no mask token, which --objective mlm needs; build the "
                         "encoder with `llm-train init --arch bert` (it adds one)")
    kind = AutoConfig.from_pretrained(model_name).model_type
    try:
        model = AutoModelForMaskedLM.from_pretrained(model_name, dtype=torch.float32)
    except ValueError as err:
        raise ValueError(f"{cfg.model}: a {kind!r} model has no masked-LM head for --objective mlm; build an "
                         "encoder with `llm-train init --arch bert`") from err
    return model, DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.mlm_probability)


def run_pretrain(cfg: PretrainConfig) -> Path:
    from llm_data.tokenizer import load_tokenizer
    from transformers import Trainer, TrainingArguments

    if relaunch(cfg, "llm_train.cli", "pretrain"):
        return Path(cfg.out)
    model_name = require_local_or_hub(cfg.model, "llm-train init")
    tokenizer = load_tokenizer(model_name)
    model, collator = _model_and_collator(cfg, model_name, tokenizer)
    data = _pack(load_splits(cfg.data), tokenizer, cfg.block_size, labels=cfg.objective == "clm")
    if len(data["train"]) == 0:
        raise ValueError(f"{cfg.data}: the training text is shorter than one block of {cfg.block_size} tokens")

    args = TrainingArguments(**cfg.trainer_args(), **cfg.checkpoint_args(), weight_decay=cfg.weight_decay)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=collator,
        processing_class=tokenizer,  # its pad id is how the Trainer counts non-padding tokens (blocks have no mask)
    )
    run = cfg.train(trainer)
    eval_loss = trainer.evaluate()["eval_loss"]
    with cfg.saving() as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(tmp)
    if not cfg.main_process:
        return Path(cfg.out)
    cfg.done()
    n_params = sum(p.numel() for p in model.parameters())
    write_metrics(
        cfg.metrics,
        {
            **run,
            "eval_loss": eval_loss,
            "trainable_params": n_params,
            "total_params": n_params,
            "trainable_percent": 100.0,
            "size_mb": weights_mb(cfg.out),
            "train_tokens": trainer.state.global_step * cfg.batch_size * cfg.block_size,
        },
    )
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
