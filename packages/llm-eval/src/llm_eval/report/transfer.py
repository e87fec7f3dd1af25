"""Which lessons carry from the tiny profile to a real model: the same comparisons, measured on both.

The tiny profile's model is a 1.2M-parameter Llama pre-trained on the generated world; the smol path runs the
same commands on SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737), a real chat model that never
read the world's corpus. Each lesson is one paired comparison (`findings.Finding`) computed the same way from
each profile's metrics and per-item results; the table sets the two verdicts side by side and says whether
the lesson carried, and why.

The smol path also scores what a toy profile cannot: perplexity on real news text and zero-shot sentiment on
real review sentences (`llm-data real`), before and after fine-tuning on the world's tasks. Fine-tuning
teaches a format and skills the model can already exercise, not new knowledge (Zhou et al. 2023, LIMA,
arXiv:2305.11206; Gekhman et al. 2024, arXiv:2405.05904), so the world's held-out facts are reported as their
own category, not hidden in the average.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llm_eval.items import Items, exact_match_diff, load_items, perplexity_change
from llm_eval.report import findings as fd
from llm_eval.report.cells import DASH
from llm_eval.report.metrics_file import optional, read
from llm_eval.report.runs import benchmark_metrics
from llm_eval.stats import Estimate, from_metrics, mean_ci, paired_diff_ci

# Categories a model can answer from the prompt and general skill, and those that need the world's facts,
# which only its pre-training corpus states (llm_data.synth: held-out facts and toy-language words).
SKILLS = ("arithmetic", "string", "summarization", "classification")
KNOWLEDGE = ("facts", "translation")
SENTIMENT = "sentiment"  # the eval rows of the real review sentences: <items_dir>/eval_sentiment_<row>
LABELS = ("positive", "negative")
TUNED = (("sft_lora", "LoRA"), ("sft_qlora", "QLoRA"))


def _items(items_dir: Path, name: str) -> Items | None:
    return load_items(items_dir, name) if (items_dir / f"eval_{name}").is_dir() else None


def named_label(prediction: str) -> str:
    """The sentiment label a reply names first ('' when it names neither): 'The review is negative.' reads
    'negative'. Strict exact match would score a correct sentence as wrong."""
    text = prediction.lower()
    found = [(text.find(label), label) for label in LABELS if label in text]
    return min(found)[1] if found else ""


def label_correct(items: Items) -> list[float]:
    """1.0 per sentence whose reply names its label first, read from the run's answers.jsonl."""
    rows = [json.loads(line) for line in items.answers_file.read_text().splitlines() if line.strip()]
    return [float(named_label(r.get("prediction", "")) == r["answer"]) for r in rows]


# ----------------------------------------------------------------------------- the real-data section


def real_metrics(metrics_dir: Path, items_dir: Path) -> dict:
    """Per row (base, sft_lora, sft_qlora): the world's tasks split into skill and knowledge categories,
    perplexity on the real news text, and sentiment on the real sentences (strict and label-named), with
    the tuned rows' paired changes against base."""
    if _items(items_dir, "base") is None:
        raise FileNotFoundError(f"{items_dir}/eval_base: no per-item results of the shipped model (run `dvc repro "
                                "smol_eval@base`)")
    out: dict = {"rows": {}, "changes": {}}
    for name in ("base", *(n for n, _ in TUNED)):
        items = _items(items_dir, name)
        if items is None:
            continue
        ev = optional(metrics_dir / f"eval_{name}.json")
        sentiment = _items(items_dir, f"{SENTIMENT}_{name}")
        row = {"skills": _subset_ci(items, SKILLS), "knowledge": _subset_ci(items, KNOWLEDGE),
               "perplexity": from_metrics(ev, "perplexity"), "items": items, "sentiment": sentiment}
        if sentiment is not None:
            row["labels"] = label_correct(sentiment)
            row["sentiment_strict"] = mean_ci(sentiment.correct, scale=100.0)
            row["sentiment_label"] = mean_ci(row["labels"], scale=100.0)
        out["rows"][name] = row
    base = out["rows"]["base"]
    for name, _ in TUNED:
        if name not in out["rows"]:
            continue
        row = out["rows"][name]
        change = {"skills": exact_match_diff(row["items"], base["items"], category=SKILLS),
                  "knowledge": exact_match_diff(row["items"], base["items"], category=KNOWLEDGE),
                  "perplexity": perplexity_change(row["items"], base["items"])}
        if "labels" in row and "labels" in base:
            change["sentiment"] = paired_diff_ci(row["labels"], base["labels"], scale=100.0)
        out["changes"][name] = change
    return out


def _subset_ci(items: Items, categories: tuple[str, ...]) -> Estimate | None:
    keep = [c for c, cat in zip(items.correct, items.categories, strict=True) if cat in categories]
    return mean_ci(keep, scale=100.0) if keep else None


def _fmt(estimate: Estimate | None, digits: int = 1) -> str:
    return DASH if estimate is None else estimate.fmt(digits)


def real_table(m: dict) -> list[list[str]]:
    return [[name, _fmt(r["skills"]), _fmt(r["knowledge"]), _fmt(r["perplexity"], 2),
             _fmt(r.get("sentiment_strict")), _fmt(r.get("sentiment_label"))] for name, r in m["rows"].items()]


REAL_COLUMNS = ("model", f"exact match, {', '.join(SKILLS)}", f"exact match, {', '.join(KNOWLEDGE)}",
                "perplexity on real news", "sentiment, exact reply", "sentiment, label named")


def real_finding(m: dict) -> str:
    base = m["rows"]["base"]
    text = (f"As shipped, the model scores {_fmt(base['skills'])}% exact match on the world's tasks that need no "
            f"world knowledge: it answers in full sentences, which exact match counts as wrong.")
    if base.get("sentiment_label") is not None:
        text += (f" On the {len(base['sentiment'].prompts)} real review sentences its reply names the right label "
                 f"{_fmt(base['sentiment_label'])}% "
                 f"of the time ({_fmt(base['sentiment_strict'])}% when the reply must be the label alone).")
    for name, label in TUNED:
        change = m["changes"].get(name)
        if change is None:
            continue
        parts = [f"{change['skills'].fmt(1, signed=True)} points on the skill categories",
                 f"{change['knowledge'].fmt(1, signed=True)} on the held-out facts and toy-language words"]
        if change["perplexity"] is not None:
            parts.append(f"{change['perplexity'].fmt(1, signed=True)}% perplexity on real news")
        if "sentiment" in change:
            parts.append(f"{change['sentiment'].fmt(1, signed=True)} points on real sentiment")
        text += f" {label} on the world's conversations changes: " + "; ".join(parts) + "."
    return text


def real_comparisons(m: dict) -> list[fd.Finding]:
    out = []
    for name, label in TUNED:
        change = m["changes"].get(name)
        if change is None:
            continue
        # Listed under the same technique as the report's own LoRA rows (all items, perplexity).
        out += [fd.Finding(label, "exact match, skill categories", name, "base", change["skills"]),
                fd.Finding(label, "exact match, knowledge categories", name, "base", change["knowledge"])]
        if "sentiment" in change:
            out.append(fd.Finding(label, "real sentiment, label named", name, "base", change["sentiment"]))
    return out


def real_goals(m: dict) -> list[tuple]:
    change = m["changes"].get("sft_lora")
    if change is None:
        return []
    out = [("LoRA exact-match gain on the categories that need no world knowledge (points)", change["skills"],
            ">=", 30)]
    if change["perplexity"] is not None:
        out.append(("LoRA perplexity change on real news text (%)", change["perplexity"], "<=", 15))
    return out


# ----------------------------------------------------------------------------- lessons across profiles


# A compressed model's uncompressed reference: the fully fine-tuned model on the tiny profile, the model as
# shipped on the real one.
UNCOMPRESSED = ("sft_full", "base")
CALIBRATED_4BIT_DIFFERS = ("the real model's weights were already rounded to 4 bits once (Q4_1): a second 4-bit grid "
                           "compounds the two errors, and calibrating on real prose like the scored text does not "
                           "undo that")


@dataclass(frozen=True)
class Lesson:
    lesson: str  # what the tiny profile's finding teaches
    measure: Callable[[Path, Path], fd.Finding | None]  # (metrics_dir, items_dir) -> the finding, or None
    carries: str  # why the verdict can hold on a real model
    differs: str  # why it can change
    # For speed ratios: the direction ("larger" or "smaller" on the real model) that `differs` explains, so a
    # same-verdict lesson whose size moved that way also says why.
    moves: str = ""


def _pair(a: str, b: str | tuple[str, ...], technique: str, category: tuple[str, ...] = (), perplexity: bool = False,
          metric: str = "exact match") -> Callable[[Path, Path], fd.Finding | None]:
    """`a` against `b`, or against the first of several `b` that the profile has (a compressed model's uncompressed
    reference: sft_full on the tiny profile, the shipped model on the real one)."""
    def measure(_: Path, items_dir: Path) -> fd.Finding | None:
        ia = _items(items_dir, a)
        ref, ib = next(((r, i) for r in ((b,) if isinstance(b, str) else b) if (i := _items(items_dir, r))),
                       (None, None))
        if ia is None or ib is None:
            return None
        if perplexity:
            change = perplexity_change(ia, ib)
            return None if change is None else fd.perplexity(technique, change, a, ref)
        if category and not set(category) & set(ia.categories):
            return None
        return fd.Finding(technique, metric, a, ref, exact_match_diff(ia, ib, category=category))
    return measure


def _ratio(file: str, key: str, technique: str, a: str, b: str) -> Callable[[Path, Path], fd.Finding | None]:
    """A speed ratio from a benchmark's metrics: `file`, or the mean over its separate runs (`runs.py`)."""
    def measure(metrics_dir: Path, _: Path) -> fd.Finding | None:
        estimate = from_metrics(benchmark_metrics(metrics_dir, file, read) or {}, key)
        return None if estimate is None else fd.speed(technique, estimate, a, b)
    return measure


LESSONS = (
    Lesson("LoRA teaches the tasks", _pair("sft_lora", "base", "LoRA"),
           "a few hundred conversations teach the answer format, on any base",
           "the base's starting point differs: a base model continues text, a chat model answers at length"),
    Lesson("... on the categories that need no world knowledge",
           _pair("sft_lora", "base", "LoRA", SKILLS, metric="exact match, skill categories"),
           "copying, summarising, labelling and small sums are in the prompt or in any pre-trained model",
           "the real model already had these skills, or the short run did not teach the format"),
    Lesson("... on held-out facts", _pair("sft_lora", "base", "LoRA", ("facts",), metric="exact match, held-out facts"),
           "the facts come from pre-training, which both models read",
           "fine-tuning teaches format, not knowledge (LIMA; Gekhman et al. 2024): the tiny base read the world's "
           "facts in pre-training, the real model never did"),
    Lesson("LoRA's cost on held-out text", _pair("sft_lora", "base", "LoRA", perplexity=True),
           "training on short task replies moves the next-token distribution away from prose",
           "a model pre-trained on trillions of tokens moves less for the same adapter, or more on prose it never "
           "saw in the task data"),
    Lesson("QLoRA against LoRA", _pair("sft_qlora", "sft_lora", "QLoRA"),
           "an NF4 base under the same adapters keeps most of the fp32 base's behaviour",
           "the real model's weights were already rounded to 4 bits once (Q4_1); NF4 rounds them again"),
    Lesson("GPTQ 4-bit weights keep held-out perplexity", _pair("gptq", UNCOMPRESSED, "GPTQ", perplexity=True),
           "rounding with second-order error correction keeps what the calibration data exercise",
           CALIBRATED_4BIT_DIFFERS),
    Lesson("AWQ 4-bit weights keep held-out perplexity", _pair("awq", UNCOMPRESSED, "AWQ", perplexity=True),
           "scaling the channels that meet large activations before rounding protects them",
           CALIBRATED_4BIT_DIFFERS),
    Lesson("NF4 weights without calibration", _pair("nf4", UNCOMPRESSED, "NF4", perplexity=True),
           "a 4-bit grid shaped like normally distributed weights fits any model's weights",
           "rounding weights that were rounded to another 4-bit grid once (Q4_1) compounds the two errors"),
    Lesson("SparseGPT at 50% sparsity", _pair("sparsegpt_50", UNCOMPRESSED, "SparseGPT", perplexity=True),
           "updating the kept weights makes up for most of what was removed",
           "a model trained on far more tokens than its size uses more of its weights, so the half removed held "
           "more that the update cannot make up for"),
    Lesson("KV cache at the longest reply", _ratio("infer_kv_cache.json", "kv_speedup", "KV cache",
                                                   "dynamic KV cache", "no cache"),
           "without a cache every step recomputes the whole sequence",
           "the saving grows with the work per token: a real model's step is arithmetic, a 1M one's mostly "
           "per-call overhead", "larger"),
    Lesson("SDPA against eager attention", _ratio("infer_attention.json", "sdpa_speedup", "Attention", "SDPA",
                                                  "eager attention"),
           "a fused kernel avoids materialising the score matrix",
           "attention is a smaller share of a wide model's step at these lengths", "smaller"),
    Lesson("Prompt lookup", _ratio("infer_speculative.json", "prompt_lookup_speedup", "Speculative decoding",
                                   "prompt-lookup decoding", "greedy"),
           "replies that quote the prompt accept copied tokens",
           "a chat model's replies rephrase more than they quote, so fewer copied tokens are accepted",
           "smaller"),
    Lesson("Batch 16 against batch 1", _ratio("infer_batch.json", "speedup_batch_16", "Batching", "batch 16",
                                              "batch 1"),
           "one forward pass serves many sequences",
           "a wider model's step is compute-bound sooner on a CPU, which leaves less idle hardware for a batch to "
           "fill", "smaller"),
    Lesson("vLLM against generate at the largest batch", _ratio("infer_vllm.json", "vllm_vs_static", "vLLM", "vLLM",
                                                                "transformers generate"),
           "a scheduler and paged KV cache built for serving beat padded static batches",
           "with more arithmetic per token, the engine's fixed costs that vLLM saves are a smaller share of a step",
           "smaller"),
)


def base_parameters(metrics_dir: Path) -> float | None:
    """The adapted base model's parameter count, from the LoRA run's metrics (total minus the adapter)."""
    train = optional(metrics_dir / "train_sft_lora.json")
    if "total_params" not in train:
        return None
    return train["total_params"] - train.get("trainable_params", 0)


def _state(f: fd.Finding | None) -> str:
    if f is None:
        return "not measured"
    if f.decided:
        return f"{f.winner} better"
    return "unstable" if f.unstable else "within noise"


def _cell(f: fd.Finding | None) -> str:
    return DASH if f is None else f"{f.difference}, {_state(f)}"


def _magnitude(lesson: Lesson, t: fd.Finding, s: fd.Finding) -> str:
    """For a speed ratio decided the same way on both: whether the real model's is larger, smaller or alike (the
    intervals apart or overlapping), and why, where the lesson explains that direction."""
    if not t.is_ratio:
        return ""
    moved = "larger" if s.diff.lo > t.diff.hi else "smaller" if s.diff.hi < t.diff.lo else ""
    if not moved:
        return "; about the same size"
    why = f": {lesson.differs}" if moved == lesson.moves else ""
    return f"; {moved} on the real model ({t.diff.value:.2f}x to {s.diff.value:.2f}x){why}"


def lessons_table(tiny: tuple[Path, Path], smol: tuple[Path, Path]) -> tuple[list[list[str]], dict[str, int]]:
    """One row per lesson measured on both profiles: each profile's finding, whether the verdict is the same
    (the same winner, or within noise on both) and why; and how many lessons came out each way."""
    rows, tally = [], {"same": 0, "different": 0, "not decided": 0}
    for lesson in LESSONS:
        t, s = lesson.measure(*tiny), lesson.measure(*smol)
        if t is None or s is None:
            continue
        if t.unstable or s.unstable or not (t.diff.has_interval and s.diff.has_interval):
            outcome, why = "not decided", "unstable timings or a single run: rerun with more repeats"
        elif _state(t) == _state(s):
            outcome, why = "same", lesson.carries + (_magnitude(lesson, t, s) if t.decided else "")
        else:
            outcome, why = "different", lesson.differs
        tally[outcome] += 1
        rows.append([lesson.lesson, f"{t.comparison}: {_cell(t)}", f"{s.comparison}: {_cell(s)}", outcome, why])
    return rows, tally


LESSON_COLUMNS = ("lesson", "tiny profile", "SmolLM2-135M-Instruct", "verdict", "why")
