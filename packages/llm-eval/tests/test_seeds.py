"""`llm-eval seeds`: the spread over training seeds, read from `dvc exp show --json`."""

import json

import pytest
from llm_eval.cli import main

ROWS = ("base", "sft_full", "sft_lora")


def _exp(name: str, seed: int, em: dict[str, float]) -> dict:
    """One experiment as `dvc exp show --json` (DVC 3) lists it under its baseline."""
    metrics = {
        f"reports/metrics/eval_{row}.json": {"data": {
            "exact_match": value, "exact_match_lo": value - 3, "exact_match_hi": value + 3,
            "exact_match_facts": value / 2, "perplexity": 3.0 if row == "base" else 4.5,
        }}
        for row, value in em.items()
    }
    data = {"rev": f"{seed:040d}", "params": {"params.yaml": {"data": {"seed": seed}}}, "metrics": metrics}
    return {"revs": [{"rev": data["rev"], "name": name, "data": data}], "name": name,
            "executor": {"state": "success"}}


@pytest.fixture
def exps(tmp_path):
    runs = [("seed-0", 0, {"base": 0.0, "sft_full": 60.0, "sft_lora": 52.0}),
            ("seed-1", 1, {"base": 0.0, "sft_full": 62.0, "sft_lora": 49.0}),
            ("seed-2", 2, {"base": 1.0, "sft_full": 64.0, "sft_lora": 55.0})]
    data = [{"rev": "workspace", "data": {}, "experiments": None},
            {"rev": "abc", "name": "main", "data": {}, "experiments": [_exp(*r) for r in runs]}]
    path = tmp_path / "exps.json"
    path.write_text(json.dumps(data))
    return path


def _run(exps, tmp_path, *extra):
    out, md = tmp_path / "seeds.json", tmp_path / "seeds.md"
    code = main(["seeds", "--exps", str(exps), "--models", ",".join(ROWS), "--out", str(out), "--md", str(md),
                 *extra])
    return code, out, md


def test_mean_sd_and_comparisons(exps, tmp_path):
    code, out, md = _run(exps, tmp_path)
    assert code == 0
    m = json.loads(out.read_text())
    assert m["seeds"] == 3
    assert m["sft_full_exact_match_mean"] == pytest.approx(62.0)
    assert m["sft_full_exact_match_sd"] == pytest.approx(2.0)
    # full minus LoRA per seed: 8, 13, 9
    assert m["full_SFT_minus_LoRA_exact_match_points_mean"] == pytest.approx(10.0)
    assert m["full_SFT_minus_LoRA_exact_match_points_same_sign"] == 3
    assert not any(k.startswith("sft_full_exact_match_lo") for k in m)  # intervals are not seed metrics
    text = md.read_text()
    assert "| sft_full | 62.0 ± 2.0 [60.0, 64.0]" in text
    assert "seed sd of full-SFT exact match (points) | 2.00 | <= 2 | met" in text
    assert "worst category after full SFT (facts, mean EM) | 31.00 | >= 30 | met" in text
    assert "LoRA gap to full SFT, mean (points) | 10.00 | <= 10 | met" in text
    assert "perplexity after full SFT / base, mean (x) | 1.50 | <= 2 | met" in text


def test_missing_experiment_is_named(exps, tmp_path, capsys):
    code, out, _ = _run(exps, tmp_path, "--experiments", "seed-0,seed-7")
    assert code == 2 and not out.exists()
    assert "no experiment 'seed-7'" in capsys.readouterr().err


def test_one_experiment_is_no_spread(exps, tmp_path, capsys):
    code, _, _ = _run(exps, tmp_path, "--experiments", "seed-0")
    assert code == 2 and "at least 2 runs" in capsys.readouterr().err


def test_truncated_json_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "exps.json"
    bad.write_text('[{"rev": "workspace"')
    code, out, _ = _run(bad, tmp_path)
    assert code == 2 and not out.exists()
    assert f"{bad}: not valid JSON" in capsys.readouterr().err


def _gold_exp(name: str, seed: int, win: tuple[float, float, float], passes: dict[str, float]) -> dict:
    """An exact-gold DPO experiment: gold_<row>.json for the SFT reference and DPO."""
    metrics = {f"reports/metrics/gold_{row}.json": {"data": {
        "gold_pass": value, "gold_pass_lo": value - 3, "gold_pass_hi": value + 3, "gold_score": -0.3, "kl": 0.0,
        **({"win_rate": win[0], "win_rate_lo": win[1], "win_rate_hi": win[2], "kl": 6.0} if row == "dpo_gold" else {}),
    }} for row, value in passes.items()}
    data = {"rev": f"{seed:040d}", "params": {"params.yaml": {"data": {"seed": seed}}}, "metrics": metrics}
    return {"revs": [{"rev": data["rev"], "name": name, "data": data}], "name": name}


@pytest.mark.parametrize(("wins", "verdicts", "summary"), [
    # Each seed's verdict comes from its own interval: above, straddling, below the 70% target.
    ([(74.0, 71.0, 77.0), (69.0, 66.0, 72.0), (66.0, 63.0, 68.5)], ["met", "not decided", "missed"],
     "The goal's verdict changes with the seed."),
    ([(66.0, 63.0, 69.0), (67.0, 64.0, 69.9), (65.0, 62.0, 68.0)], ["missed"] * 3,
     "The goal keeps one verdict on every seed."),
])
def test_gold_suite_judges_the_win_rate_goal_on_each_seed(tmp_path, wins, verdicts, summary):
    runs = [_gold_exp(f"gold-seed-{s}", s, win, {"sft_full": 10.0 + s, "dpo_gold": 16.0 + 2 * s})
            for s, win in enumerate(wins)]
    exps = tmp_path / "exps.json"
    exps.write_text(json.dumps([{"rev": "abc", "name": "main", "data": {}, "experiments": runs}]))
    out, md = tmp_path / "seeds_gold.json", tmp_path / "seeds_gold.md"
    names = "gold-seed-0,gold-seed-1,gold-seed-2"
    assert main(["seeds", "--suite", "gold", "--exps", str(exps), "--experiments", names, "--out", str(out),
                 "--md", str(md)]) == 0
    m = json.loads(out.read_text())
    assert m["dpo_gold_win_rate_mean"] == pytest.approx(sum(w[0] for w in wins) / 3)
    # DPO minus SFT pass per seed: 6, 7, 8 points, all positive.
    assert m["DPO_minus_SFT_gold_pass_rate_points_mean"] == pytest.approx(7.0)
    assert m["DPO_minus_SFT_gold_pass_rate_points_same_sign"] == 3
    text = md.read_text()
    for seed, verdict in enumerate(verdicts):
        assert f"| seed {seed}: DPO gold win rate vs SFT (%), interval [{wins[seed][1]:.1f}, {wins[seed][2]:.1f}] | " \
               f"{wins[seed][0]:.1f} | >= 70 | {verdict} |" in text
    assert summary in text


def test_unknown_suite_is_named(exps, tmp_path, capsys):
    code, out, _ = _run(exps, tmp_path, "--suite", "golden")
    assert code == 2 and not out.exists() and "unknown suite 'golden'" in capsys.readouterr().err
