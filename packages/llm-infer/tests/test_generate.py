"""`llm-infer generate`: every strategy runs on the same prompts and is scored; bad input exits 2."""

import csv
import json

import pytest
from llm_infer.cli import main
from llm_infer.generate import GenerateConfig, distinct_n, run_generate


def test_distinct_n_counts_unique_ngrams():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(100 * 4 / 6)
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(100 * 2 / 3)
    assert distinct_n([[1]], 2) == 0.0


def test_strategies_side_by_side(tiny_model, sft_data, tmp_path):
    cfg = GenerateConfig(model=tiny_model, data=sft_data, max_samples=12, max_new_tokens=8, batch_size=6,
                         metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "plots"))
    run_generate(cfg)
    metrics = json.loads((tmp_path / "m.json").read_text())
    rows = {r["strategy"]: r for r in csv.DictReader(open(tmp_path / "plots" / "generate.csv"))}
    assert set(rows) == set(cfg.strategy_list())
    for name in ("greedy", "beam", "temperature", "top_k", "top_p", "min_p", "repetition_penalty"):
        assert rows[name]["status"] == "ok"
        assert metrics[f"{name}_tokens_per_s"] > 0
        assert 0 <= metrics[f"{name}_exact_match"] <= 100
    # A random model's pure temperature-0.8 samples spread over the vocabulary; greedy repeats itself.
    assert metrics["temperature_distinct_2"] > metrics["greedy_distinct_2"]
    for name in ("beam", "temperature", "top_k", "top_p", "min_p", "repetition_penalty"):
        # Paired over the same prompts: the mean difference is the difference of the two exact matches.
        assert metrics[f"{name}_em_vs_greedy"] == pytest.approx(
            metrics[f"{name}_exact_match"] - metrics["greedy_exact_match"], abs=1e-4)
        for key in (f"{name}_exact_match", f"{name}_em_vs_greedy", f"{name}_tokens_per_s_vs_greedy"):
            assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
    assert "greedy_em_vs_greedy" not in metrics
    # Offline, contrastive search (a hub custom_generate repo in transformers 5) is reported, not crashed on.
    assert rows["contrastive"]["status"] in ("ok", "unavailable")
    if rows["contrastive"]["status"] == "unavailable":
        assert rows["contrastive"]["reason"]


def test_sampling_is_seeded(tiny_model, sft_data, tmp_path):
    runs = []
    for i in range(2):
        cfg = GenerateConfig(model=tiny_model, data=sft_data, max_samples=6, max_new_tokens=6,
                             strategies="top_p", seed=3, metrics=str(tmp_path / f"{i}.json"))
        run_generate(cfg)
        runs.append(json.loads((tmp_path / f"{i}.json").read_text()))
    assert runs[0]["top_p_distinct_2"] == runs[1]["top_p_distinct_2"]
    assert runs[0]["top_p_exact_match"] == runs[1]["top_p_exact_match"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--strategies", "greedy,nucleus"], "nucleus"),
    (["--temperature", "0"], "temperature"),
    (["--top_p", "1.5"], "top_p"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
])
def test_bad_input_exits_2(flags, message, sft_data, capsys):
    assert main(["generate", "--data", sft_data, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
