"""Evaluate a masked-LM encoder: held-out masked-token accuracy, pseudo-perplexity and fill-mask examples.

A masked language model (BERT, Devlin et al. 2019, arXiv:1810.04805) is scored on what it was trained
to do, on text it never saw:

- **Masked-token accuracy** (0-100): the held-out documents are packed into windows as pre-training
  packed them (BOS + text + EOS); in each window 15% of the tokens (seeded, special tokens never) are
  replaced by the mask token at once, and the share whose top-1 prediction is the original token is
  counted. The interval resamples whole windows.
- **Pseudo-perplexity** (Salazar et al. 2020, arXiv:1910.14659): every token of a document is masked
  alone, one copy per token, and scored given all the others; exp of the mean negative log-likelihood.
  It is not comparable with a causal model's perplexity (each token sees both sides). The interval
  resamples whole documents.
- **Fill-mask examples**: the last word before the final period of the first held-out sentences
  whose last word is one token is masked, and the transformers `fill-mask` pipeline lists its top guesses.

    llm-eval mlm --model models/base-bert --text data/synth/pretrain --out reports/metrics/eval_mlm.json \\
        --plots reports/plots/eval_mlm
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_local_or_hub, write_metrics

from llm_eval.run import _windows as pack_windows
from llm_eval.run import load_texts
from llm_eval.stats import bootstrap, perplexity_ci, to_metrics

logger = logging.getLogger(__name__)


@dataclass
class MlmEvalConfig:
    model: str = field(default="models/base-bert", metadata={"help": "Masked-LM model folder or hub id."})
    text: str = field(default="data/synth/pretrain", metadata={"help": "Dataset folder of {text} rows."})
    split: str = field(default="test", metadata={"help": "Split to score (<split>.jsonl)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per window (as pre-training packed them)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of each window's tokens masked."})
    pppl_documents: int = field(
        default=64, metadata={"help": "Documents scored for pseudo-perplexity (one forward pass per token)."}
    )
    fill_mask_examples: int = field(default=6, metadata={"help": "Held-out sentences shown in the fill-mask table."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per forward pass."})
    max_samples: int = field(default=0, metadata={"help": "Use the first N documents (0 = all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the masked positions and the bootstrap."})
    out: str = field(default="reports/metrics/eval_mlm.json", metadata={"help": "Metrics JSON path."})
    plots: str = field(default="", metadata={"help": "Folder for fill_mask.csv (the report's table); '' = skip."})

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        for name in ("block_size", "pppl_documents", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fill_mask_examples", "max_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def load_masked_lm(name: str):
    """(model, tokenizer) of a masked-LM folder; a decoder or a tokenizer without a mask token is an error."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    name = require_local_or_hub(name, "llm-train pretrain --objective mlm")
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.mask_token is None:
        raise ValueError(f"{name}: the tokenizer has no mask token; is this a masked-LM encoder "
                         "(`llm-train init --arch bert`)?")
    try:
        model = AutoModelForMaskedLM.from_pretrained(name)
    except ValueError as err:
        kind = AutoConfig.from_pretrained(name).model_type
        raise ValueError(f"{name}: a {kind!r} model has no masked-LM head (evaluate decoders with "
                         "`llm-eval run`)") from err
    return model.eval(), tokenizer


def _windows(tokenizer, texts: list[str], size: int) -> list[list[int]]:
    """The held-out text packed as `llm-eval run` packs it for perplexity; a 1-token tail is dropped."""
    return [w for w in pack_windows(tokenizer, texts, size) if len(w) > 1]


def masked_accuracy(model, tokenizer, windows: list[list[int]], probability: float, batch_size: int,
                    seed: int) -> list[tuple[int, int]]:
    """(correct, masked) per window: a seeded `probability` share of its ordinary tokens masked at once."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    out = []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        length = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), length), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, w in enumerate(chunk):
            ids[i, :len(w)] = torch.tensor(w)
            attention[i, :len(w)] = 1
        eligible = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))
        chosen = eligible & (torch.rand(ids.shape, generator=generator) < probability)
        masked = ids.masked_fill(chosen, tokenizer.mask_token_id)
        with torch.no_grad():
            predicted = model(input_ids=masked, attention_mask=attention).logits.argmax(-1)
        hits = (predicted == ids) & chosen
        out += zip(hits.sum(1).tolist(), chosen.sum(1).tolist(), strict=True)
    return [(c, n) for c, n in out if n > 0]


def pseudo_nll(model, tokenizer, texts: list[str], size: int, batch_size: int) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) per document, each token masked alone (Salazar et al. 2020)."""
    import torch
    from tqdm.auto import tqdm

    special = set(tokenizer.all_special_ids)
    out = []
    for ids in tqdm(tokenizer(texts, truncation=True, max_length=size)["input_ids"], desc="pseudo-perplexity",
                    unit="doc"):
        positions = [i for i, t in enumerate(ids) if t not in special]
        if not positions:
            continue
        nll = 0.0
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            batch = torch.tensor(ids).repeat(len(chunk), 1)
            rows = torch.arange(len(chunk))
            batch[rows, chunk] = tokenizer.mask_token_id
            with torch.no_grad():
                logp = model(input_ids=batch).logits[rows, chunk].log_softmax(-1)
            nll -= float(logp[rows, torch.tensor([ids[p] for p in chunk])].sum())
        out.append((nll, len(positions)))
    return out


def fill_mask_examples(model, tokenizer, texts: list[str], n: int) -> list[dict]:
    """The first `n` held-out sentences whose last word (before the period) is one token, that word masked,
    and the fill-mask pipeline's top three guesses."""
    from transformers import pipeline

    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=3)
    rows = []
    for text in texts:
        if len(rows) == n:
            break
        sentence = text.split(". ")[0].rstrip(".") + "."
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        if len(ids) < 3:
            continue
        target, head = ids[-2], tokenizer.decode(ids[:-2])  # the piece before "."
        if not (head.endswith(" ") or tokenizer.decode([target]).startswith(" ")):
            continue  # only a whole last word: the end of an invented name alone says little
        masked = head + tokenizer.mask_token + tokenizer.decode(ids[-1:])
        guesses = fill(masked)
        rows.append({
            "masked sentence": masked,
            "answer": tokenizer.decode([target]).strip(),
            "top guesses": ", ".join(f"{g['token_str'].strip()} ({100 * g['score']:.0f}%)" for g in guesses),
            "right": "yes" if guesses[0]["token"] == target else "no",
        })
    return rows


def run_mlm_eval(cfg: MlmEvalConfig) -> Path:
    import numpy as np
    import torch

    texts = load_texts(cfg.text, cfg.split, cfg.max_samples)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_masked_lm(cfg.model)
    windows = _windows(tokenizer, texts, cfg.block_size)
    if not windows:
        raise ValueError(f"{cfg.text}/{cfg.split}.jsonl: no text to score")
    correct, masked = zip(*masked_accuracy(model, tokenizer, windows, cfg.mlm_probability, cfg.batch_size,
                                           cfg.seed), strict=True)
    metrics = to_metrics("masked_accuracy", bootstrap([correct, masked], lambda c, n: 100.0 * c / n, seed=cfg.seed))
    nll, tokens = zip(*pseudo_nll(model, tokenizer, texts[:cfg.pppl_documents], cfg.block_size, cfg.batch_size),
                      strict=True)
    metrics.update(to_metrics("pseudo_perplexity", perplexity_ci(nll, tokens, seed=cfg.seed)))
    metrics.update(masked_tokens=int(np.sum(masked)), windows=len(windows), pppl_tokens=int(np.sum(tokens)),
                   parameters=sum(p.numel() for p in model.parameters()))
    logger.info("%s: %s", cfg.model, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if cfg.plots:
        examples = fill_mask_examples(model, tokenizer, texts, cfg.fill_mask_examples)
        with atomic_dir(cfg.plots) as tmp, open(tmp / "fill_mask.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["masked sentence", "answer", "top guesses", "right"])
            writer.writeheader()
            writer.writerows(examples)
    write_metrics(cfg.out, metrics)
    return Path(cfg.out)
