"""Bootstrap intervals: they cover what they should, pairing tightens them, verdicts follow them."""

import math

import numpy as np
import pytest
from llm_eval import stats
from llm_eval.stats import Estimate


def test_percentile_interval_covers_the_mean_of_a_big_sample():
    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 2.0, size=4000)
    est = stats.mean_ci(values.tolist())
    assert est.value == pytest.approx(values.mean())
    assert est.lo < 5.0 < est.hi
    # The normal-theory 95% half-width is 1.96 * sd / sqrt(n) = 0.062.
    assert (est.hi - est.lo) / 2 == pytest.approx(1.96 * 2.0 / math.sqrt(4000), rel=0.15)


def test_coverage_is_close_to_95_percent():
    """Over many test sets drawn from a known distribution, about 95% of the intervals hold its mean."""
    rng = np.random.default_rng(1)
    hits = sum(stats.mean_ci(rng.binomial(1, 0.3, size=200).tolist(), seed=k).contains(0.3) for k in range(100))
    assert 88 <= hits <= 99


def test_paired_interval_is_narrower_than_unpaired_on_correlated_items():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0.0, 3.0, size=300)  # shared by both models: cancels in the paired difference
    a = difficulty + 0.5 + rng.normal(0.0, 0.3, size=300)
    b = difficulty + rng.normal(0.0, 0.3, size=300)
    paired = stats.paired_diff_ci(a.tolist(), b.tolist())
    wa, wb = (stats.mean_ci(x.tolist()) for x in (a, b))
    unpaired_width = math.hypot(wa.hi - wa.lo, wb.hi - wb.lo)
    assert paired.hi - paired.lo < 0.2 * unpaired_width
    assert paired.lo < 0.5 < paired.hi and not paired.contains(0.0)
    # Unpaired, the same data cannot tell the models apart: the separate intervals overlap.
    assert wa.lo < wb.hi


def test_grouped_items_resample_whole_groups():
    """Five phrasings of one request answered alike carry one request's information: the grouped interval is
    exactly the interval over the requests, and wider than treating the phrasings as independent items."""
    per_request = np.random.default_rng(4).binomial(1, 0.2, size=20).astype(float).tolist()
    values = [v for v in per_request for _ in range(5)]
    groups = [f"request {i}" for i in range(20) for _ in range(5)]
    grouped = stats.mean_ci(values, 100.0, seed=3, groups=groups)
    assert grouped == stats.mean_ci(per_request, 100.0, seed=3)
    naive = stats.mean_ci(values, 100.0, seed=3)
    assert naive.value == pytest.approx(grouped.value) and naive.hi - naive.lo < 0.6 * (grouped.hi - grouped.lo)
    diff = stats.paired_diff_ci(values, [0.0] * 100, 100.0, seed=3, groups=groups)
    assert diff == grouped
    with pytest.raises(ValueError, match="groups must name every item"):
        stats.mean_ci(values, groups=groups[:-1])


def test_seeded_intervals_are_reproducible():
    values = np.random.default_rng(3).normal(size=50).tolist()
    assert stats.mean_ci(values, seed=7) == stats.mean_ci(values, seed=7)
    assert stats.mean_ci(values, seed=7) != stats.mean_ci(values, seed=8)


def test_verdict_names_a_winner_only_outside_noise():
    assert stats.verdict(Estimate(2.0, -1.0, 5.0), "lora", "full") == (
        "lora vs full: +2.0 [-1.0, +5.0] points, within noise")
    assert stats.verdict(Estimate(-6.0, -9.0, -3.0), "lora", "full") == (
        "lora vs full: -6.0 [-9.0, -3.0] points, full is better")
    assert stats.verdict(Estimate(3.0, 1.0, 5.0), "lora", "full").endswith("lora is better")
    # Lower is better (perplexity): a positive change means the first model is worse.
    assert stats.verdict(Estimate(8.0, 2.0, 14.0), "nf4", "fp32", unit="%", higher_is_better=False).endswith(
        "%, fp32 is better")
    # A ratio's null is 1.
    assert stats.verdict(Estimate(1.3, 0.9, 1.8), "kv", "none", unit="x", null=1.0).endswith("within noise")
    assert "no interval" in stats.verdict(Estimate(2.0, math.nan, math.nan), "a", "b")


def test_perplexity_resamples_whole_windows():
    nll, tokens = [10.0, 30.0, 20.0, 25.0], [10, 20, 10, 15]
    est = stats.perplexity_ci(nll, tokens)
    assert est.value == pytest.approx(math.exp(85.0 / 55.0))
    assert math.exp(min(n / t for n, t in zip(nll, tokens, strict=True))) <= est.lo <= est.value <= est.hi
    # The same windows, 10% higher perplexity on each: the paired change is exactly +10%, no spread.
    worse = [n + t * math.log(1.1) for n, t in zip(nll, tokens, strict=True)]
    change = stats.perplexity_ratio_ci(worse, nll, tokens)
    assert (change.value, change.lo, change.hi) == pytest.approx((10.0, 10.0, 10.0))


def test_bleu_from_sentence_statistics_is_corpus_bleu():
    import sacrebleu
    from llm_eval.run import _bleu_stats

    preds = ["the cat sat on a mat today", "a dog ran in the big park", "red lamp", "one two three four five"]
    refs = ["the cat sat on the mat", "the dog ran in the park", "the red lamp", "one two three four six"]
    est = stats.bleu_ci([_bleu_stats(p, r) for p, r in zip(preds, refs, strict=True)])
    assert est.value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert 0.0 <= est.lo <= est.value <= est.hi <= 100.0 and est.lo < est.hi


def test_metrics_keys_round_trip():
    est = Estimate(28.1, 24.0, 32.3)
    flat = stats.to_metrics("exact_match", est)
    assert flat == {"exact_match": 28.1, "exact_match_lo": 24.0, "exact_match_hi": 32.3}
    assert stats.from_metrics(flat, "exact_match") == est and est.fmt() == "28.1 [24.0, 32.3]"
    assert stats.to_metrics("perplexity", Estimate(6.0, math.nan, math.nan)) == {"perplexity": 6.0}
    assert stats.from_metrics({"perplexity": 6.0}, "perplexity").fmt(2) == "6.00"
    assert stats.from_metrics({}, "bleu") is None


def test_runs_interval_is_student_t_over_separate_runs():
    est = stats.runs_ci([2.0, 2.4, 2.2])
    # mean 2.2, sd 0.2, t(0.975, 2) = 4.303: half-width 4.303 * 0.2 / sqrt(3) = 0.497
    assert est.value == pytest.approx(2.2)
    assert (est.lo, est.hi) == pytest.approx((2.2 - 0.4969, 2.2 + 0.4969), abs=1e-3)
    # more runs with the same spread: narrower (t falls and the sqrt(n) grows)
    wider, narrower = stats.runs_ci([1.0, 3.0]), stats.runs_ci([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    assert narrower.hi - narrower.lo < wider.hi - wider.lo
    assert not stats.runs_ci([2.0]).has_interval
    with pytest.raises(ValueError):
        stats.runs_ci([])
