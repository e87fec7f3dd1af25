"""The report's inference sections state each comparison with its interval, and never name a winner the
interval cannot support: 'within noise' when it holds no effect, 'no interval' when there was one run."""

import pytest
from llm_eval.report.sections import SECTIONS


def _with(key: str, value: float, lo: float, hi: float) -> dict:
    return {key: value, f"{key}_lo": lo, f"{key}_hi": hi}


@pytest.mark.parametrize(("section", "metrics", "line"), [
    ("generate", {"greedy_exact_match": 30.0, "top_p_exact_match": 31.0, **_with("top_p_em_vs_greedy", 1.0, -2.0, 4.0)},
     "Decoding, exact match: top-p sampling vs greedy: +1.0 [-2.0, +4.0] points, within noise"),
    ("generate", {"greedy_exact_match": 30.0, **_with("beam_em_vs_greedy", -5.0, -8.0, -2.0)},
     "Decoding, exact match: beam search vs greedy: -5.0 [-8.0, -2.0] points, greedy is better"),
    ("kv_cache", _with("static_speedup", 1.05, 0.97, 1.12),
     "KV cache, speed: static KV cache vs no cache: 1.05 [0.97, 1.12]x, within noise"),
    ("kv_cache", {"kv_speedup": 3.0},
     "KV cache, speed: dynamic KV cache vs no cache: 3.00x (no interval: a single run)"),
    ("attention", _with("sdpa_speedup", 2.0, 1.8, 2.2),
     "Attention, speed: SDPA vs eager attention: 2.00 [1.80, 2.20]x, SDPA is better"),
    ("speculative", _with("assisted_speedup", 0.7, 0.6, 0.8),
     "Speculative decoding, speed: assisted decoding vs greedy: 0.70 [0.60, 0.80]x, greedy is better"),
    ("batch", {"largest_batch": 16, **_with("continuous_vs_static", 0.95, 0.8, 1.1)},
     "Batching, speed: continuous batching vs static batch 16: 0.95 [0.80, 1.10]x, within noise"),
])
def test_comparison_lines(section, metrics, line):
    assert [f.line for f in SECTIONS[section].comparisons(metrics)] == [line]


def test_findings_say_within_noise_instead_of_a_win():
    kv = {"max_new_tokens": 256, **_with("kv_speedup", 1.02, 0.9, 1.1)}
    assert "1.02 [0.90, 1.10]x (within noise: no measurable difference)" in SECTIONS["kv_cache"].finding(kv)
    batch = {"largest_batch": 16, **_with("batch_speedup", 1.1, 0.95, 1.3)}
    finding = SECTIONS["batch"].finding(batch)
    assert "within noise" in finding and "costs are shared" not in finding
    batch = {"largest_batch": 16, **_with("batch_speedup", 3.0, 2.5, 3.5)}
    assert "costs are shared" in SECTIONS["batch"].finding(batch)
    spec = {**_with("prompt_lookup_speedup", 1.2, 0.9, 1.4), "prompt_lookup_identical_fraction": 1.0}
    assert "1.20 [0.90, 1.40]x (within noise" in SECTIONS["speculative"].finding(spec)
    gen = {"greedy_exact_match": 30.0, "temperature_exact_match": 31.0,
           **_with("temperature_em_vs_greedy", 1.0, -2.0, 4.0)}
    assert "temperature sampling vs greedy: +1.0 [-2.0, +4.0] points, within noise" in SECTIONS["generate"].finding(gen)


def test_serve_states_no_comparison():
    assert SECTIONS["serve"].comparisons({"requests": 64, "errors": 0}) == []
