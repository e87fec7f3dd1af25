"""Evaluate one model: exact match, ROUGE-L and BLEU on generated answers, perplexity on held-out text.

Four numbers say how good a model is on the llm-lab task suite:

- **Exact match** (0-100): the share of prompts whose greedy reply, normalised (stripped, lowercased,
  whitespace collapsed, one trailing period dropped), equals the row's checkable `answer`. Reported
  overall and per category (`exact_match_<category>`). Each prompt is rendered as one user turn with
  the tokenizer's chat template and the generation prompt, as the SFT stages trained on.
- **ROUGE-L** (Lin 2004, 0-100): longest-common-subsequence F-measure between the reply and the
  reference `completion` — same words in the same order, gaps allowed. Over the free-text categories
  (summarization, translation), or over every row for data without categories.
- **BLEU** (Papineni et al. 2002, 0-100): corpus 1- to 4-gram precision with a brevity penalty, via
  sacrebleu, over the same rows as ROUGE-L.
- **Perplexity**: exp of the mean next-token negative log-likelihood over the `text` split. Documents
  are tokenized (BOS + text + EOS, as pre-training packs them), joined and cut into windows of the
  model's context length (or `--window` tokens); every token except each window's first is predicted once.

Beside them, `tokens_per_second` is the greedy decoding speed over the exact-match prompts (reply tokens
before the end-of-sequence token, over the wall time of each batch's `generate`; resampled over batches)
and `memory_mb` the loaded model's parameters and buffers as stored (packed int8 / int4 at their size).

Every score also gets its 95% interval, `<key>_lo` and `<key>_hi` in the metrics JSON: a percentile
bootstrap over the test items (2000 resamples, seeded by `--seed`; perplexity resamples whole text
windows, BLEU re-sums the resampled sentences' n-gram counts). Keys without an interval (a category
with one prompt, perplexity over one window) have none. `--items DIR` also writes the per-item results
(`answers.jsonl`, `perplexity.jsonl`, `timings.jsonl`) from which `llm-eval report` bootstraps paired
comparisons.

The model is a full model folder (or hub id), a PEFT adapter folder (its base is read from
`adapter_config.json` and the adapter applied on top), or a quantized folder (bitsandbytes, GPTQ / AWQ in
the compressed-tensors format, optimum-quanto's `quanto_qmap.json`); `--quantize
nf4|int8` quantizes a full model or an adapter's base while loading (QLoRA adapters run on an NF4
base). Generation is greedy and seeded, so reruns give the same numbers. ROUGE and BLEU are `evaluate`
metric modules shipped in this package (`llm_eval/metrics/`), so they load with no network.

    llm-eval run --model models/sft-qlora --name sft_qlora --quantize nf4 --data data/synth/sft \\
        --text data/synth/pretrain --out reports/metrics/eval_sft_qlora.json \\
        --items reports/items/eval_sft_qlora
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, read_jsonl, require_local_or_hub, split_file, write_jsonl, write_metrics

from llm_eval.stats import bleu_ci, bootstrap, mean_ci, perplexity_ci, to_metrics

logger = logging.getLogger(__name__)

QUANTIZE = ("none", "nf4", "int8")
FREE_TEXT = ("summarization", "translation")
METRICS_DIR = Path(__file__).parent / "metrics"
# Perplexity batches hold about as many tokens as `batch_size` windows of this length, so a hub model
# with a 2048-token context does not build (batch, 2048, vocab) logits 32 windows at a time.
_PPL_TOKENS_PER_ROW = 256
_MAX_WINDOW = 4096
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_PRODUCER = "llm-train pretrain|sft --out {0}` or `llm-compress quantize --out {0}"


@dataclass
class EvalConfig:
    model: str = field(
        default="models/sft-full",
        metadata={"help": "Model to evaluate: a full model folder or hub id, a PEFT adapter folder (its base "
                  "comes from adapter_config.json), or a bitsandbytes-quantized folder."},
    )
    name: str = field(
        default="sft_full",
        metadata={"help": "Row name in reports (base, sft_full, nf4, ...); names the default --out."},
    )
    data: str = field(
        default="data/synth/sft",
        metadata={"help": "SFT-shaped dataset folder ({prompt, completion, category, answer} rows) for exact "
                  "match, ROUGE-L and BLEU."},
    )
    text: str = field(
        default="data/synth/pretrain",
        metadata={"help": "Language-modeling dataset folder ({text} rows) for perplexity; '' = skip it."},
    )
    split: str = field(default="test", metadata={"help": "Split read from both folders (<split>.jsonl)."})
    quantize: str = field(
        default="none",
        metadata={"help": f"Quantize the model (or an adapter's base) on load: {' | '.join(QUANTIZE)}."},
    )
    max_samples: int = field(
        default=0, metadata={"help": "Evaluate the first N rows of each split (0 = all)."}
    )
    max_documents: int = field(
        default=0, metadata={"help": "Perplexity on the first N documents of --text (0 = all that --max_samples "
                                     "keeps)."}
    )
    window: int = field(
        default=0,
        metadata={"help": f"Perplexity window in tokens (0 = the model's context, at most {_MAX_WINDOW}): a hub "
                  "model's 8k context makes each window cost quadratic attention and leaves few windows to resample."},
    )
    per_category: int = field(
        default=0,
        metadata={"help": "Keep the first N task rows of each category (0 = all): a stratified subset, where "
                  "the first --max_samples rows can hold few of a category."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Longest generated reply, in tokens."})
    batch_size: int = field(default=32, metadata={"help": "Prompts (or 256-token text windows) per batch."})
    seed: int = field(default=0, metadata={"help": "Seed set before evaluating (generation is greedy)."})
    out: str = field(
        default="", metadata={"help": "Metrics JSON path; '' = reports/metrics/eval_<name>.json."}
    )
    items: str = field(
        default="",
        metadata={"help": "Folder for the per-item results the report bootstraps: answers.jsonl (one row per "
                  "prompt: prompt, category, answer, prediction, correct, rougeL, bleu statistics) and "
                  "perplexity.jsonl (one row per text window: nll, tokens) and timings.jsonl (one row per "
                  "generation batch: tokens, seconds); '' = don't write."},
    )

    def __post_init__(self):
        if self.quantize not in QUANTIZE:
            raise ValueError(f"unknown quantize {self.quantize!r}; choose one of: {', '.join(QUANTIZE)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        for name in ("model", "data", "split"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_samples", "per_category", "max_documents", "window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = all), got {getattr(self, name)}")
        if not self.out:
            self.out = f"reports/metrics/eval_{self.name}.json"


# ----------------------------------------------------------------------------- data


def normalize(text: str) -> str:
    """Exact-match normalisation: strip, lowercase, collapse whitespace, drop one trailing period."""
    text = " ".join(text.strip().lower().split())
    return text[:-1].rstrip() if text.endswith(".") else text


def load_rows(folder: str, split: str, max_samples: int = 0, per_category: int = 0) -> list[dict]:
    """SFT rows with `prompt` and `answer` (hub data without `answer` falls back to `completion`); with
    `per_category`, the first that many of each category, in file order."""
    file = split_file(folder, split)
    first = read_jsonl(file, {"prompt": str})[0]
    # The first row fixes the schema; read_jsonl then names the file, line and field of any bad row.
    target = "completion" if "answer" not in first and "completion" in first else "answer"
    fields = {"prompt": str, target: str}
    if "category" in first:
        fields["category"] = str
    rows = read_jsonl(file, fields)
    if per_category:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for row in rows:
            seen[row.get("category", "")] += 1
            if seen[row.get("category", "")] <= per_category:
                kept.append(row)
        rows = kept
    rows = rows[:max_samples] if max_samples else rows
    for row in rows:
        row.setdefault("answer", row[target])
    return rows


def load_texts(folder: str, split: str, max_samples: int = 0) -> list[str]:
    file = split_file(folder, split, "llm-data synth")
    texts = [row["text"] for row in read_jsonl(file, {"text": str})]
    return texts[:max_samples] if max_samples else texts


# ----------------------------------------------------------------------------- model


def _check_model_path(name: str) -> None:
    """Raise if `name` is clearly a local folder that is missing or holds no model; hub ids pass."""
    require_local_or_hub(name, _PRODUCER.format(name))
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{name}: not a model folder (no config.json or adapter_config.json)")


def _bnb_config(quantize: str):
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # Compute stays fp32 so the quantized rows differ from the fp32 reference only by weight rounding.
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


QUANTO_MAP = "quanto_qmap.json"  # optimum-quanto's record of which layers hold packed weights


def load_causal_lm(name: str, quantize: str, device: str):
    """A causal LM in fp32 on `device`: as saved (already-quantized folders keep their format), or quantized
    on load with bitsandbytes (`quantize` int8 | nf4)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    quanto = (Path(name) / QUANTO_MAP).is_file()
    if quantize != "none" and (quanto or getattr(AutoConfig.from_pretrained(name), "quantization_config", None)):
        raise ValueError(f"{name} is already quantized; evaluate it with --quantize none")
    if quanto:
        # transformers cannot read quanto's packed weights; optimum-quanto rebuilds its layers, then the
        # wrapped transformers model is what every caller drives.
        from optimum.quanto import QuantizedModelForCausalLM

        return QuantizedModelForCausalLM.from_pretrained(name)._wrapped.to(device)
    kwargs = {"dtype": torch.float32, "device_map": {"": device}}
    if quantize != "none":
        kwargs["quantization_config"] = _bnb_config(quantize)
    return AutoModelForCausalLM.from_pretrained(name, **kwargs)


def _stored_bytes(tensor) -> int:
    """Bytes a tensor holds; a packed tensor subclass (quanto's QTensors) counts its inner tensors."""
    if hasattr(tensor, "__tensor_flatten__"):
        inner, _ = tensor.__tensor_flatten__()
        return sum(_stored_bytes(getattr(tensor, name)) for name in inner)
    return tensor.nelement() * tensor.element_size()


def memory_mb(model) -> float:
    """The model's footprint in MiB: parameters and buffers as stored. transformers' get_memory_footprint
    counts a packed int8 / int4 weight at its float dtype's size; this counts its bytes."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(_stored_bytes(t) for t in tensors) / 2**20


def load_tokenizer(name: str, padding_side: str = ""):
    """The tokenizer of a model folder or hub id, with the end-of-sequence token as padding when it has no
    pad token (hub base models often have none; padded positions are masked out of every loss and score).
    Generation pads on the left, so prompts end flush; a reward model's head reads the last non-pad
    token, so it pads on the right."""
    from llm_data.tokenizer import load_tokenizer as load_portable

    tokenizer = load_portable(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(cfg: EvalConfig, device: str):
    """(model, tokenizer) for a full, quantized or adapter folder, in eval mode on `device`."""

    _check_model_path(cfg.model)
    adapter_config = Path(cfg.model) / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{adapter_config}: no base_model_name_or_path")
        try:
            _check_model_path(base)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (the base of adapter {cfg.model})") from None
        model = PeftModel.from_pretrained(load_causal_lm(base, cfg.quantize, device), cfg.model)
        has_tokenizer = any((Path(cfg.model) / f).is_file() for f in _TOKENIZER_FILES)
        tokenizer = load_tokenizer(cfg.model if has_tokenizer else base)
    else:
        model = load_causal_lm(cfg.model, cfg.quantize, device)
        tokenizer = load_tokenizer(cfg.model)
    model.eval()
    return model, tokenizer


# ----------------------------------------------------------------------------- metrics


def render_prompts(tokenizer, prompts: list) -> tuple[list[str], bool]:
    """Each prompt (text: one user turn; or a list of messages) plus the generation prompt; without a
    chat template, the raw text (the turns' contents, one per line) and a newline.

    Returns the texts and whether they already hold special tokens (the template writes its own BOS).
    """
    if not tokenizer.chat_template:
        return [(p if isinstance(p, str) else "\n".join(m["content"] for m in p)) + "\n" for p in prompts], False
    turns = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    return [tokenizer.apply_chat_template(t, tokenize=False, add_generation_prompt=True) for t in turns], True


def generate(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int,
             timings: list | None = None) -> list[str]:
    """Greedy replies, batched with left padding; only the new tokens are decoded.

    `timings`, if given, gets one (reply tokens, seconds) pair per batch: the tokens before each reply's
    end-of-sequence, and the wall time of that batch's `generate` call.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    texts, templated = render_prompts(tokenizer, prompts)
    eos = model.generation_config.eos_token_id
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id if eos is None else eos,
    )
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end flush
    replies = []
    for start in tqdm(range(0, len(texts), batch_size), desc="generating", unit="batch"):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=not templated).to(model.device)
        start_time = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(**batch, generation_config=gen_config)  # (B, T_prompt + T_new)
        seconds = time.perf_counter() - start_time
        new = ids[:, batch["input_ids"].shape[1]:]
        if timings is not None:
            ended = torch.isin(new, torch.tensor([tokenizer.pad_token_id, *_as_list(gen_config.eos_token_id)],
                                                 device=new.device))
            timings.append((int((ended.cumsum(dim=1) == 0).sum()), seconds))
        replies += tokenizer.batch_decode(new, skip_special_tokens=True)
    return replies


def _as_list(ids) -> list[int]:
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


def exact_match(rows: list[dict], replies: list[str], seed: int = 0) -> tuple[dict[str, float], list[bool]]:
    """Overall and per-category exact match (0-100) with intervals, and whether each reply was right."""
    correct = [normalize(r) == normalize(row["answer"]) for row, r in zip(rows, replies, strict=True)]
    metrics = to_metrics("exact_match", mean_ci(correct, scale=100.0, seed=seed))
    by_category = defaultdict(list)
    for row, ok in zip(rows, correct, strict=True):
        if "category" in row:
            by_category[row["category"]].append(ok)
    for category, oks in sorted(by_category.items()):
        metrics.update(to_metrics(f"exact_match_{category}", mean_ci(oks, scale=100.0, seed=seed)))
    return metrics, correct


def _bleu_stats(prediction: str, reference: str) -> list[int]:
    """sacrebleu's sufficient statistics of one sentence: [sys_len, ref_len, correct_1..4, total_1..4]."""
    from sacrebleu.metrics import BLEU

    # The tokenizer and casing of llm_eval/metrics/bleu (sacrebleu.corpus_bleu's defaults).
    score = BLEU(tokenize="13a").corpus_score([prediction], [[reference]])
    return [score.sys_len, score.ref_len, *score.counts, *score.totals]


def text_overlap(rows: list[dict], replies: list[str], seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """ROUGE-L and BLEU (0-100, with intervals) of the free-text rows' replies against their `completion`.

    Also returns, per row, {"rougeL": F (0-100), "bleu": sentence statistics}, both None for rows not
    scored. ROUGE-L is the mean of the per-row F-measures; BLEU is corpus BLEU of the summed statistics.
    """
    import evaluate

    has_category = any("category" in row for row in rows)
    scored = [i for i, row in enumerate(rows) if not has_category or row.get("category") in FREE_TEXT]
    per_row = [{"rougeL": None, "bleu": None} for _ in rows]
    if not scored:
        return {}, per_row
    predictions = [replies[i] for i in scored]
    references = [rows[i].get("completion", rows[i]["answer"]) for i in scored]
    rouge = evaluate.load(str(METRICS_DIR / "rouge"), keep_in_memory=True)
    rouge_l = rouge.compute(predictions=predictions, references=references, rouge_types=["rougeL"],
                            use_aggregator=False)["rougeL"]
    bleu = [_bleu_stats(p, r) for p, r in zip(predictions, references, strict=True)]
    for i, f, stats in zip(scored, rouge_l, bleu, strict=True):
        per_row[i] = {"rougeL": 100.0 * f, "bleu": stats}
    metrics = to_metrics("rougeL", mean_ci([100.0 * f for f in rouge_l], seed=seed))
    metrics.update(to_metrics("bleu", bleu_ci(bleu, seed=seed)))
    return metrics, per_row


def _windows(tokenizer, texts: list[str], window: int) -> list[list[int]]:
    """BOS + text + EOS per document (as pre-training packs them), joined, cut into `window` tokens."""
    stream = []
    for ids in tokenizer(texts)["input_ids"]:  # the tokenizer adds BOS where the model expects it
        stream += ids + [tokenizer.eos_token_id]
    return [stream[i:i + window] for i in range(0, len(stream), window)]


def window_nll(model, tokenizer, texts: list[str], batch_size: int, window: int = 0) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) per fixed, non-overlapping window of `window` tokens (0 = the model's
    context)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    window = max(2, min(window or context, context, _MAX_WINDOW))
    rows_per_batch = max(1, batch_size * _PPL_TOKENS_PER_ROW // window)
    windows = [w for w in _windows(tokenizer, texts, window) if len(w) > 1]  # 1 token predicts nothing
    if not windows:
        raise ValueError("the perplexity text has fewer than 2 tokens")
    out = []
    for start in tqdm(range(0, len(windows), rows_per_batch), desc="perplexity", unit="batch"):
        chunk = windows[start:start + rows_per_batch]
        length = max(len(w) for w in chunk)
        input_ids = torch.full((len(chunk), length), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, w in enumerate(chunk):  # right padding: positions stay 0..len-1
            input_ids[i, :len(w)] = torch.tensor(w)
            attention[i, :len(w)] = 1
        # Padding is masked by position, not by id: a hub tokenizer's pad may be its EOS.
        labels = input_ids.masked_fill(attention == 0, -100)
        input_ids, attention, labels = (t.to(model.device) for t in (input_ids, attention, labels))
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()  # (B, T, V)
        # Token t predicts token t+1, so each window scores len-1 tokens.
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                              reduction="none")  # (B, T-1), 0 at padding
        out += zip(nll.sum(dim=1).tolist(), (shift_labels != -100).sum(dim=1).tolist(), strict=True)
    return out


def perplexity(model, tokenizer, texts: list[str], batch_size: int) -> float:
    """exp(mean NLL per predicted token) over fixed, non-overlapping windows of the model's context."""
    windows = window_nll(model, tokenizer, texts, batch_size)
    return math.exp(sum(nll for nll, _ in windows) / sum(tokens for _, tokens in windows))


def _write_items(folder: str, rows: list[dict], replies: list[str], correct: list[bool],
                 overlap: list[dict], windows: list[tuple[float, int]], timings: list[tuple[int, float]]) -> None:
    answers = []
    for row, reply, ok, scores in zip(rows, replies, correct, overlap, strict=True):
        record = {"prompt": row["prompt"]}
        if "category" in row:
            record["category"] = row["category"]
        answers.append({**record, "answer": row["answer"], "prediction": reply, "correct": ok, **scores})
    with atomic_dir(folder) as tmp:
        write_jsonl(tmp / "answers.jsonl", answers)
        write_jsonl(tmp / "perplexity.jsonl", ({"nll": nll, "tokens": tokens} for nll, tokens in windows))
        write_jsonl(tmp / "timings.jsonl", ({"tokens": tokens, "seconds": seconds} for tokens, seconds in timings))


def run_eval(cfg: EvalConfig) -> Path:
    import torch

    # Read every input before the (slow) model load, so bad input fails fast.
    rows = load_rows(cfg.data, cfg.split, cfg.max_samples, cfg.per_category)
    texts = load_texts(cfg.text, cfg.split, cfg.max_samples) if cfg.text else []
    texts = texts[:cfg.max_documents] if cfg.max_documents else texts
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Not transformers.set_seed: importing it pulls in peft and bitsandbytes (~8 s a process). Greedy
    # decoding draws nothing; the seed only fixes the bootstrap below and any sampling a model does.
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg, device)

    start = time.perf_counter()
    timings = []
    replies = generate(model, tokenizer, [row["prompt"] for row in rows], cfg.max_new_tokens, cfg.batch_size,
                       timings)
    metrics, correct = exact_match(rows, replies, seed=cfg.seed)
    overlap_metrics, overlap = text_overlap(rows, replies, seed=cfg.seed)
    metrics.update(overlap_metrics)
    windows = window_nll(model, tokenizer, texts, cfg.batch_size, cfg.window) if texts else []
    if windows:
        nll, tokens = zip(*windows, strict=True)
        metrics.update(to_metrics("perplexity", perplexity_ci(nll, tokens, seed=cfg.seed)))
    # Decoding speed, resampled over batches: what a quantized or pruned model's kernels cost or save.
    tokens, seconds = zip(*timings, strict=True)
    metrics.update(to_metrics("tokens_per_second", bootstrap([tokens, seconds], lambda t, s: t / s, seed=cfg.seed)))
    metrics["memory_mb"] = memory_mb(model)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["n_samples"] = len(rows)
    logger.info("%s: %s", cfg.name, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    if cfg.items:
        _write_items(cfg.items, rows, replies, correct, overlap, windows, timings)
    out = Path(cfg.out)
    write_metrics(out, metrics)
    return out
