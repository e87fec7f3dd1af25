"""Shared timing and interval helpers: every run's time is kept, and intervals reach the metrics only when finite."""

import math

import pytest
from llm_eval.stats import Estimate
from llm_infer.runtime import paired_rate_ratio_ci, put_estimate, rate_ratio_ci, timed


def test_timed_keeps_every_run():
    calls = []
    result, seconds = timed(lambda: calls.append(1) or len(calls), "cpu", repeats=3)
    assert result == 3 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_put_estimate_writes_only_finite_intervals():
    metrics = {}
    put_estimate(metrics, "a", Estimate(2.0, 1.5, 2.5))
    put_estimate(metrics, "b", Estimate(2.0, math.nan, math.nan))  # one run: no interval
    put_estimate(metrics, "c", Estimate(2.0, 1.0, math.inf))  # JSON has no infinity
    assert metrics == {"a": 2.0, "a_lo": 1.5, "a_hi": 2.5, "b": 2.0, "c": 2.0}


def test_rate_ratio_from_repeats():
    # A: 100 tokens in 1 s on average, B: 50 tokens in 1 s: A has twice B's throughput.
    ratio = rate_ratio_ci(100, [0.9, 1.0, 1.1], 50, [1.0, 1.0, 1.0])
    assert ratio.value == pytest.approx(2.0)
    assert ratio.lo <= 2.0 <= ratio.hi and ratio.hi < 2.5
    assert not rate_ratio_ci(100, [1.0], 50, [1.0]).has_interval


def test_paired_rate_ratio_over_batches():
    ratio = paired_rate_ratio_ci([10, 30], [1.0, 2.0], [10, 10], [1.0, 1.0])
    assert ratio.value == pytest.approx((40 / 3.0) / (20 / 2.0))
    assert ratio.lo <= ratio.value <= ratio.hi
