"""Per-item results of `llm-eval run --items`, read back for paired comparisons.

`<items_dir>/eval_<name>/answers.jsonl` holds one row per test prompt (`prompt`, `correct`, ...) and
`perplexity.jsonl` one row per held-out text window (`nll`, `tokens`), and `timings.jsonl` one row per
generation batch (`tokens` generated, `seconds`). Two models are compared on the
paired difference over the same items, so both must list the same prompts (and the same windows) in
the same order; anything else is an error naming both files, never a silently unpaired number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_data.io import read_jsonl

from llm_eval.stats import Estimate, bootstrap, paired_diff_ci, perplexity_ratio_ci

ANSWERS = "answers.jsonl"
PERPLEXITY = "perplexity.jsonl"
TIMINGS = "timings.jsonl"


@dataclass(frozen=True)
class Items:
    name: str
    folder: Path
    prompts: list[str]
    correct: list[float]  # 1.0 right, 0.0 wrong, per prompt
    nll: list[float]  # summed NLL per window; empty when the run skipped perplexity
    tokens: list[int]  # predicted tokens per window
    categories: list[str]  # task category per prompt ("" when the data has none)
    timings: list[tuple[int, float]] = ()  # (tokens generated, seconds) per batch; empty in older runs

    @property
    def answers_file(self) -> Path:
        return self.folder / ANSWERS

    @property
    def perplexity_file(self) -> Path:
        return self.folder / PERPLEXITY


def load_items(items_dir: str | Path, name: str) -> Items:
    folder = Path(items_dir) / f"eval_{name}"
    for file in (folder / ANSWERS, folder / PERPLEXITY):
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: no per-item results for model {name!r} (run `dvc repro eval@{name}` or "
                f"`llm-eval run --name {name} --model <folder> --items {folder}`)"
            )
    answers = read_jsonl(folder / ANSWERS, {"prompt": str, "correct": bool})
    if not answers:
        raise ValueError(f"{folder / ANSWERS}: no rows")
    # A run without held-out text (`--text ''`, `llm-eval cot`) writes an empty perplexity file.
    has_windows = (folder / PERPLEXITY).stat().st_size > 0
    windows = read_jsonl(folder / PERPLEXITY, {"nll": (int, float), "tokens": int}) if has_windows else []
    timings = []
    if (folder / TIMINGS).is_file():
        timings = [(t["tokens"], float(t["seconds"]))
                   for t in read_jsonl(folder / TIMINGS, {"tokens": int, "seconds": (int, float)})]
    return Items(name, folder, [a["prompt"] for a in answers], [float(a["correct"]) for a in answers],
                 [float(w["nll"]) for w in windows], [w["tokens"] for w in windows],
                 [str(a.get("category", "")) for a in answers], timings)


def exact_match_diff(a: Items, b: Items, seed: int = 0, category: str | tuple[str, ...] = "") -> Estimate:
    """Exact match of `a` minus `b` in points, bootstrapped over the same prompts (those of `category`
    only, or of any of a tuple of categories, when given)."""
    if a.prompts != b.prompts:
        raise ValueError(
            f"{a.answers_file} and {b.answers_file}: not the same test prompts in the same order "
            f"({len(a.prompts)} and {len(b.prompts)} rows); evaluate both with the same --data, --split "
            f"and --max_samples"
        )
    wanted = (category,) if isinstance(category, str) else category
    keep = [i for i, c in enumerate(a.categories) if not category or c in wanted]
    if not keep:
        raise ValueError(f"{a.answers_file}: no test prompts of category {category!r}")
    return paired_diff_ci([a.correct[i] for i in keep], [b.correct[i] for i in keep], scale=100.0, seed=seed)


def perplexity_change(a: Items, b: Items, seed: int = 0) -> Estimate | None:
    """Perplexity of `a` over `b` in percent (+ = `a` is worse), paired over the same windows."""
    if not a.nll or not b.nll:
        return None
    if a.tokens != b.tokens:
        raise ValueError(
            f"{a.perplexity_file} and {b.perplexity_file}: not the same text windows ({len(a.tokens)} and "
            f"{len(b.tokens)} windows, or other token counts); evaluate both with the same --text, --split, "
            f"--max_samples and context length"
        )
    return perplexity_ratio_ci(a.nll, b.nll, a.tokens, seed=seed)


def speed_ratio(a: Items, b: Items, seed: int = 0) -> Estimate | None:
    """Decoding speed of `a` over `b` (tokens/s ratio, > 1 = `a` is faster), resampling the same batches of
    the same prompts together; None when either run has no timings. The interval covers batch-to-batch
    variation within the two runs, not a slower or busier machine between them."""
    if not a.timings or not b.timings:
        return None
    if len(a.timings) != len(b.timings) or a.prompts != b.prompts:
        raise ValueError(f"{a.folder / TIMINGS} and {b.folder / TIMINGS}: not the same batches of the same "
                         "prompts; evaluate both with the same --data, --max_samples and --batch_size")
    (ta, sa), (tb, sb) = zip(*a.timings, strict=True), zip(*b.timings, strict=True)
    return bootstrap([ta, sa, tb, sb], lambda ta, sa, tb, sb: (ta / sa) / (tb / sb), seed=seed)
