"""Intervals for every number a report compares: bootstrap over test items, spread over repeated runs.

A single test-set score is one draw: another test set of the same size would give another number.
The percentile bootstrap (Efron & Tibshirani 1993, 'An Introduction to the Bootstrap') resamples the
test items with replacement many times and reads the 2.5th and 97.5th percentiles of the statistic,
a 95% interval with no distributional assumption. A *comparison* of two models on the same items is
bootstrapped on the paired difference (the same resampled items for both; Koehn 2004, 'Statistical
Significance Tests for Machine Translation Evaluation'), which is much tighter than two separate
intervals because item difficulty cancels. When the interval of a difference contains 0, the
difference is "within noise" and no winner is named. Timings are bootstrapped over repeated runs.

Every function is seeded, so a report rebuilt from the same files gives the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval; lo/hi are NaN when there is nothing to resample."""

    value: float
    lo: float
    hi: float

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def contains(self, x: float) -> bool:
        return self.has_interval and self.lo <= x <= self.hi

    def fmt(self, digits: int = 1, signed: bool = False) -> str:
        """'28.1 [24.0, 32.3]'; the interval is left out when there is none."""
        spec = f"{'+' if signed else ''}.{digits}f"
        text = format(self.value, spec)
        return f"{text} [{format(self.lo, spec)}, {format(self.hi, spec)}]" if self.has_interval else text


def _indices(n: int, n_boot: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(samples) -> tuple[float, float]:
    import numpy as np

    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(np.asarray(samples, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap(columns: Sequence[Sequence[float]], statistic: Callable, n_boot: int = N_BOOT,
              seed: int = 0) -> Estimate:
    """Resample items (rows across all `columns` together) and apply `statistic(*column_sums)`.

    `statistic` receives, for each column, the per-resample sums as a numpy array of shape (n_boot,),
    and must return an array of the same shape. Sums (not means) let ratio statistics such as
    perplexity (exp of NLL sum / token count) and corpus BLEU (sums of n-gram counts) resample whole
    items. The point estimate is `statistic` on the full sums.
    """
    import numpy as np

    cols = [np.asarray(c, dtype=float) for c in columns]
    n = len(cols[0])
    if n == 0 or any(len(c) != n for c in cols):
        raise ValueError(f"bootstrap needs columns of one non-zero length, got {[len(c) for c in cols]}")
    value = float(np.asarray(statistic(*(np.array([c.sum()]) for c in cols)))[0])
    if n < 2:
        return Estimate(value, math.nan, math.nan)
    idx = _indices(n, n_boot, seed)
    samples = statistic(*(c[idx].sum(axis=1) for c in cols))
    return Estimate(value, *_percentiles(samples))


def resample_ci(n: int, statistic: Callable, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """`statistic(indices)` on all `n` items and on `n_boot` resamples of them, for a statistic that is not
    a sum over items (uniformity averages over pairs of items). A resample where the statistic is undefined
    (NaN: say, one item drawn n times) is left out."""
    import numpy as np

    if n < 2:
        raise ValueError(f"resampling needs at least 2 items, got {n}")
    value = float(statistic(np.arange(n)))
    samples = [s for s in (statistic(idx) for idx in _indices(n, n_boot, seed)) if not math.isnan(s)]
    return Estimate(value, *_percentiles(samples))


def mean_ci(values: Sequence[float], scale: float = 1.0, seed: int = 0,
            groups: Sequence[str] | None = None) -> Estimate:
    """Mean of per-item values (x scale, e.g. 100 for a 0/1 accuracy in percent) with its interval.

    `groups` names the unit the items were drawn in, when several items are phrasings of one (five
    openers of one harmful request): the cluster bootstrap resamples whole groups (Field & Welsh 2007,
    'Bootstrapping clustered data'), since resampling the phrasings as if independent would give an
    interval as if the test set held five times the requests it does."""
    if groups is None:
        n = len(values)
        return bootstrap([values], lambda s: scale * s / n, seed=seed)
    if len(groups) != len(values):
        raise ValueError(f"groups must name every item: {len(groups)} groups for {len(values)} values")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for group, value in zip(groups, values, strict=True):
        sums[group] = sums.get(group, 0.0) + value
        counts[group] = counts.get(group, 0) + 1
    return bootstrap([list(sums.values()), list(counts.values())], lambda s, c: scale * s / c, seed=seed)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], scale: float = 1.0, seed: int = 0,
                   groups: Sequence[str] | None = None) -> Estimate:
    """mean(a - b) over the same items, bootstrapped on the paired differences (by `groups`, see mean_ci)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same items, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b, strict=True)], scale=scale, seed=seed, groups=groups)


def perplexity_ci(nll: Sequence[float], tokens: Sequence[float], seed: int = 0) -> Estimate:
    """exp(sum NLL / sum tokens), resampling whole windows (the items of a perplexity evaluation)."""
    import numpy as np

    return bootstrap([nll, tokens], lambda s, t: np.exp(s / t), seed=seed)


def perplexity_ratio_ci(nll_a: Sequence[float], nll_b: Sequence[float], tokens: Sequence[float],
                        seed: int = 0) -> Estimate:
    """Percent change of perplexity A over B on the same windows: 100 * (ppl_a / ppl_b - 1), paired."""
    import numpy as np

    if not len(nll_a) == len(nll_b) == len(tokens):
        raise ValueError("perplexity comparison needs the same windows for both models")
    return bootstrap([nll_a, nll_b, tokens], lambda a, b, t: 100.0 * (np.exp((a - b) / t) - 1.0), seed=seed)


def bleu_ci(segment_stats: Sequence[Sequence[float]], seed: int = 0) -> Estimate:
    """Corpus BLEU from per-sentence sacrebleu statistics, resampling sentences.

    Each row is `[sys_len, ref_len, correct_1..4, total_1..4]` (sacrebleu's sufficient statistics).
    Corpus BLEU sums them before taking the geometric mean, so a resample sums its sentences' rows and
    recomputes the score with sacrebleu's `corpus_bleu` defaults (exp smoothing): the point estimate is
    exactly the corpus BLEU of the whole set.
    """
    import numpy as np
    from sacrebleu.metrics import BLEU

    def corpus(sys_len, ref_len, *ngrams):
        order = len(ngrams) // 2
        counts = np.stack(ngrams, axis=1)  # (n_boot, 2 * order)
        return np.array([
            BLEU.compute_bleu(correct=c[:order].tolist(), total=c[order:].tolist(), sys_len=int(s),
                              ref_len=int(r), smooth_method="exp", max_ngram_order=order).score
            for s, r, c in zip(sys_len, ref_len, counts, strict=True)
        ])

    return bootstrap(list(zip(*segment_stats, strict=True)), corpus, seed=seed)


def speedup_ci(baseline_seconds: Sequence[float], method_seconds: Sequence[float],
               seed: int = 0) -> Estimate:
    """mean(baseline time) / mean(method time) from repeated runs of each, resampled independently.

    With one run of either side there is no spread to resample: the interval is NaN and the report
    says the ratio has no interval.
    """
    import numpy as np

    base, method = np.asarray(baseline_seconds, dtype=float), np.asarray(method_seconds, dtype=float)
    if len(base) == 0 or len(method) == 0:
        raise ValueError("speedup needs at least one timing of each side")
    value = float(base.mean() / method.mean())
    if len(base) < 2 or len(method) < 2:
        return Estimate(value, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    b = base[rng.integers(0, len(base), size=(N_BOOT, len(base)))].mean(axis=1)
    m = method[rng.integers(0, len(method), size=(N_BOOT, len(method)))].mean(axis=1)
    return Estimate(value, *_percentiles(b / m))


def paired_speedup_ci(baseline_seconds: Sequence[float], method_seconds: Sequence[float],
                      seed: int = 0) -> Estimate:
    """sum(baseline) / sum(method) over the same items (e.g. prompts timed both ways), paired."""
    if len(baseline_seconds) != len(method_seconds):
        raise ValueError("paired speedup needs one timing of each side per item")
    return bootstrap([baseline_seconds, method_seconds], lambda b, m: b / m, seed=seed)


def runs_ci(values: Sequence[float]) -> Estimate:
    """The mean of one measure taken in separate runs, with its Student-t 95% interval over the runs.

    Repeats inside one process share its start-up, memory layout and neighbours on the CPU; separate runs
    do not, so their spread is what a reader who reruns the stage meets. A few runs give a wide interval
    (t with n - 1 degrees of freedom) rather than a falsely narrow one; one run gives none.
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("runs_ci needs at least one run")
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Estimate(mean, mean - half, mean + half)


def verdict(diff: Estimate, a: str, b: str, unit: str = " points", null: float = 0.0,
            higher_is_better: bool = True, digits: int = 1) -> str:
    """One line on a comparison of `a` with `b`: the winner and the margin, or 'within noise'.

    `diff` is a - b (or a / b, with `null=1`); `null` is the value of no effect. A winner is named only
    when the 95% interval excludes `null`; `higher_is_better` says which direction wins.
    """
    text = f"{diff.fmt(digits, signed=null == 0.0)}{unit}"
    if not diff.has_interval:
        return f"{a} vs {b}: {text} (no interval: a single run)"
    if diff.contains(null):
        return f"{a} vs {b}: {text}, within noise"
    winner = a if (diff.value > null) == higher_is_better else b
    return f"{a} vs {b}: {text}, {winner} is better"


def to_metrics(key: str, estimate: Estimate) -> dict[str, float]:
    """`{key, key_lo, key_hi}` for a flat metrics JSON; just `{key}` when there is no interval.

    An infinite bound (e.g. a resampled speedup whose baseline made no tokens) counts as no interval:
    JSON has no infinity.
    """
    if not (estimate.has_interval and math.isfinite(estimate.lo) and math.isfinite(estimate.hi)):
        return {key: estimate.value}
    return {key: estimate.value, f"{key}_lo": estimate.lo, f"{key}_hi": estimate.hi}


def from_metrics(metrics: dict, key: str) -> Estimate | None:
    """The inverse of `to_metrics`: None when `key` is absent, a NaN interval without `_lo`/`_hi`."""
    if metrics.get(key) is None:
        return None
    return Estimate(float(metrics[key]), float(metrics.get(f"{key}_lo", math.nan)),
                    float(metrics.get(f"{key}_hi", math.nan)))
