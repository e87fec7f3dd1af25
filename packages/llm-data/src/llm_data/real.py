"""Real English text that ships inside a wheel: news documents for perplexity, labelled review sentences.

The generated world measures what a model learns; these measure what it keeps. gensim's test data (the
gensim 4.4.0 wheel, `gensim/test/test_data/`) holds two small public research corpora, read here
without importing gensim:

- `lee_background.cor`: 300 ABC (Australian Broadcasting Corporation) news documents, one per line,
  from the Lee et al. (2005) document-similarity study, as {text} rows (the `llm-eval run --text`
  layout). The first `--news_test` documents are `news/test.jsonl`: held-out perplexity on real prose,
  before and after fine-tuning or compression. The rest are `news/train.jsonl`: calibration text for
  GPTQ, AWQ and SparseGPT, the same kind of prose as the test documents but never the same ones.
- `pang_lee_polarity.cor`: 200 movie-review sentences labelled `__label__pos` / `__label__neg`, a
  sample of Pang & Lee's sentence polarity data (2005), latin-1, lowercased and tokenized as
  distributed. Written as `sentiment/test.jsonl` in the task layout ({prompt, completion, category,
  answer}) with the prompt of the world's classification tasks, so `llm-eval run --data` scores
  zero-shot sentiment and whether the toy task transfers to real sentences.

    llm-data real --out data/real
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from llm_data.io import atomic_dir, write_jsonl

NEWS = "lee_background.cor"
SENTIMENT = "pang_lee_polarity.cor"
LABELS = {"__label__pos": "positive", "__label__neg": "negative"}
# The world's classification prompt (llm_data.synth), so the same instruction meets real sentences.
PROMPT = "Is this review positive or negative? {}"
LICENCE = ("gensim test data (gensim is LGPL-2.1); the corpora carry no licence of their own: research data, "
           "see docs/real-model.md")


@dataclass
class RealConfig:
    package: str = field(
        default="gensim", metadata={"help": "Installed package whose test/test_data folder holds the corpora."}
    )
    out: str = field(default="data/real", metadata={"help": "Output folder: news/ and sentiment/ inside."})
    max_documents: int = field(default=0, metadata={"help": "Keep the first N of each corpus (0 = all)."})
    news_test: int = field(
        default=100, metadata={"help": "The first N news documents are the test split; the rest are train."}
    )

    def __post_init__(self):
        if self.max_documents < 0:
            raise ValueError(f"max_documents must be >= 0 (0 = all), got {self.max_documents}")
        if self.news_test < 1:
            raise ValueError(f"news_test must be >= 1, got {self.news_test}")


def data_folder(package: str) -> Path:
    """`<package>/test/test_data`, found without importing the package (gensim would import numpy, scipy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; install llm-data[real] (the workspace's "
                                f"`uv sync` does) for its test corpora")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def read_news(path: Path) -> list[dict]:
    rows = [{"text": line.strip()} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no documents")
    return rows


def read_sentiment(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        tag, _, sentence = line.strip().partition(" ")
        if tag not in LABELS or not sentence.strip():
            raise ValueError(f"{path}:{lineno}: expected '__label__pos|__label__neg <sentence>', got {line[:60]!r}")
        label = LABELS[tag]
        rows.append({"prompt": PROMPT.format(sentence.strip()), "completion": label, "category": "sentiment",
                     "answer": label})
    # The file lists every negative sentence first: alternate the labels so that any first N rows
    # (`--max_documents`, `llm-eval run --max_samples`) stay balanced.
    by_label = [[r for r in rows if r["answer"] == label] for label in ("positive", "negative")]
    return [r for pair in zip_longest(*by_label) for r in pair if r is not None]


def run_real(cfg: RealConfig) -> Path:
    folder = data_folder(cfg.package)
    corpora = {"news": (NEWS, read_news(folder / NEWS)), "sentiment": (SENTIMENT, read_sentiment(folder / SENTIMENT))}
    with atomic_dir(cfg.out) as tmp:
        for name, (source, rows) in corpora.items():
            rows = rows[: cfg.max_documents] if cfg.max_documents else rows
            # Only the news has a train split: calibration text that the perplexity never scores.
            splits = {"test": rows[:cfg.news_test], "train": rows[cfg.news_test:]} if name == "news" else {"test": rows}
            (tmp / name).mkdir()
            counts = {split: write_jsonl(tmp / name / f"{split}.jsonl", part) for split, part in splits.items() if part}
            meta = {"source": f"{cfg.package}/test/test_data/{source}", "licence": LICENCE, "counts": counts}
            (tmp / name / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(cfg.out)
