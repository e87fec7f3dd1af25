"""The gold section of the alignment report: the frontier table, Gao's fits, and the takeaway that opens the report."""

import csv
import json
import math

import pytest
from llm_eval.report import gold as gold_report
from llm_eval.report.sections import build


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _answers(items, name, scores):
    folder = items / f"gold_{name}"
    folder.mkdir(parents=True)
    rows = [{"prompt": f"What is {i} + 1 + 1?", "gold_score": s} for i, s in enumerate(scores)]
    (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def gold_dirs(tmp_path):
    metrics, items, plots = tmp_path / "metrics", tmp_path / "items", tmp_path / "plots"
    _write(metrics / "gold_sft_full.json", {"gold_score": -0.4, "gold_score_lo": -0.5, "gold_score_hi": -0.3,
                                            "gold_pass": 25.0, "gold_pass_lo": 0.0, "gold_pass_hi": 50.0,
                                            "kl": 0.0, "n_prompts": 4})
    _answers(items, "sft_full", [1.0, -1.0, -0.15, -0.6])
    _write(metrics / "gold_dpo_gold.json", {"gold_score": 0.2, "gold_score_lo": 0.0, "gold_score_hi": 0.4,
                                            "win_rate": 75.0, "win_rate_lo": 60.0, "win_rate_hi": 90.0,
                                            "gold_pass": 50.0, "kl": 3.0, "kl_lo": 2.0, "kl_hi": 4.0, "n_prompts": 4})
    _write(metrics / "train_dpo_gold.json", {"train_seconds": 41.2})
    _answers(items, "dpo_gold", [1.0, 1.0, -0.15, -0.15])
    _write(metrics / "gold_ppo_gold_nokl.json", {"gold_score": -0.1, "win_rate": 60.0, "kl": 6.0, "n_prompts": 4})
    _answers(items, "ppo_gold_nokl", [1.0, -0.15, -0.15, -0.15])
    # A PPO curve whose gold peaks and falls beyond both intervals while the proxy keeps rising.
    _csv(plots / "train_ppo_gold_nokl" / "overopt.csv", [
        {"step": s, "kl": kl, "kl_lo": kl, "kl_hi": kl, "proxy": p, "proxy_lo": p - 0.05, "proxy_hi": p + 0.05,
         "gold": g, "gold_lo": g - 0.05, "gold_hi": g + 0.05}
        for s, kl, p, g in ((0, 0.0, 0.0, -0.4), (10, 1.0, 0.5, 0.1), (20, 4.0, 0.9, 0.0), (30, 9.0, 1.2, -0.3))
    ])
    bon = {"n_prompts": 4}
    rows = []
    for n in (1, 2, 4, 8):
        kl = math.log(n) - (n - 1) / n
        d = math.sqrt(kl)
        gold, proxy = -0.4 + d * (0.5 - 0.2 * d), d * 1.0  # exactly Gao's best-of-n form
        bon.update({f"n{n}_kl": kl, f"n{n}_gold": gold, f"n{n}_proxy": proxy, f"n{n}_win_rate": 40.0 + 2 * n,
                    f"n{n}_win_rate_lo": 30.0 + 2 * n, f"n{n}_win_rate_hi": 50.0 + 2 * n, f"n{n}_gold_pass": 20.0})
        rows.append({"n": n, "kl": kl, "sqrt_kl": d, "proxy": proxy, "proxy_lo": proxy, "proxy_hi": proxy,
                     "gold": gold, "gold_lo": gold - 0.01, "gold_hi": gold + 0.01})
    _write(metrics / "gold_bon.json", bon)
    _csv(plots / "gold_bon" / "bon.csv", rows)
    _write(metrics / "reward_gold_proxy.json", {"accuracy": 80.0, "accuracy_lo": 78.0, "accuracy_hi": 82.0,
                                                "n_pairs": 100, "noisy_accuracy": 77.0, "noise_ceiling": 90.0,
                                                "below_ceiling": 13.0, "below_ceiling_lo": 11.0,
                                                "below_ceiling_hi": 15.0})
    _write(metrics / "gold_pairs.json", {"train_label_noise": 10.0, "train_label_noise_lo": 9.0,
                                         "train_label_noise_hi": 11.0})
    return metrics, items, plots


def test_fit_recovers_gaos_forms():
    d = [0.2, 0.5, 0.9, 1.3, 1.7]
    for form, second in (("bon", lambda x: x * x), ("rl", lambda x: x * math.log(x))):
        y = [x * 0.8 - 0.3 * second(x) for x in d]
        alpha, beta, r2 = gold_report.fit(d, y, form)
        assert alpha == pytest.approx(0.8) and beta == pytest.approx(0.3) and r2 == pytest.approx(1.0)
    assert gold_report.fit([0.0, 0.5], [0.0, 0.2], "bon") is None  # too few points to fit two parameters


def test_gold_section_opens_the_takeaways_and_plots_the_frontier(gold_dirs):
    metrics, items, plots = gold_dirs
    blocks, images, goals, found, leads = build(["gold"], str(metrics), str(plots), lambda p: json.loads(p.read_text()),
                                                items_dir=str(items))
    assert leads[0].startswith("Against the exact gold on 4 held-out sums (SFT passes 25.0 [0.0, 50.0]%)")
    assert "DPO (beta 2) 75.0 [60.0, 90.0]% at 3.0 nats" in leads[0]
    finding = next(b[1] for b in blocks if b[0] == "p" and b[1].startswith("Against the exact gold"))
    assert "DPO (beta 2) wins 75.0 [60.0, 90.0]% against SFT at KL 3.0" in finding
    assert "13.0 [11.0, 15.0] points below the 90.0% the gold itself would" in finding
    assert "peaks at 0.10 (KL 1.0) and ends at -0.30 (KL 9.0), beyond both intervals" in finding
    table = next(b for b in blocks if b[0] == "table")
    assert [r[0] for r in table[2]] == ["sft_full", "best-of-2", "best-of-4", "best-of-8", "dpo_gold", "ppo_gold_nokl"]
    assert set(images) == {"gold_frontier.png", "gold_overoptimisation.png"}
    by_label = {g[0]: g for g in goals}
    assert by_label["DPO gold win rate vs SFT (%)"][1].value == 75.0
    assert by_label["proxy reward model below the label-noise ceiling (points)"][1].value == 13.0
    fall = by_label["over-optimisation: PPO without KL, gold at its peak minus at its end"][1]
    assert (fall.value, fall.lo, fall.hi) == pytest.approx((0.4, 0.3, 0.5))  # peak 0.1 +- 0.05, end -0.3 +- 0.05
    # paired over the same sums: DPO passes 2 of 4, SFT 1 of 4
    pass_change = next(f for f in found if f.a == "dpo_gold" and f.metric == "gold pass rate")
    assert pass_change.diff.value == pytest.approx(25.0)
    curves = gold_report.overoptimisation(gold_report.gold_metrics(metrics, lambda p: json.loads(p.read_text()),
                                                                   items, plots))
    alpha, beta, r2 = curves["best-of-n"]["gold_fit"]
    assert alpha == pytest.approx(0.5) and beta == pytest.approx(0.2) and r2 == pytest.approx(1.0)


def test_missing_reference_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="gold_reference, or smol_gold_eval@sft_full"):
        gold_report.gold_metrics(tmp_path, lambda p: {}, tmp_path)


def test_smol_section_grades_dpo_with_lora_against_the_shipped_model(tmp_path):
    """The same section, from the shipped model (`--reference base`): no lead, no goals, its own wording."""
    metrics, items = tmp_path / "metrics", tmp_path / "items"
    _write(metrics / "gold_base.json", {"gold_score": -0.6, "gold_pass": 0.0, "gold_pass_lo": 0.0, "gold_pass_hi": 0.0,
                                        "kl": 0.0, "n_prompts": 4})
    _answers(items, "base", [0.75, -0.4, -0.35, -1.0])
    _write(metrics / "gold_dpo_gold_lora.json", {"gold_score": 0.1, "win_rate": 87.5, "win_rate_lo": 62.5,
                                                 "win_rate_hi": 100.0, "kl": 2.0, "kl_lo": 1.0, "kl_hi": 3.0,
                                                 "gold_pass": 50.0, "n_prompts": 4})
    _write(metrics / "train_dpo_gold_lora.json", {"train_seconds": 120.0})
    _answers(items, "dpo_gold_lora", [1.0, 1.0, -0.15, -1.0])
    blocks, images, goals, found, leads = build(["smol_gold"], str(metrics), str(tmp_path / "plots"),
                                                lambda p: json.loads(p.read_text()), teacher="base",
                                                items_dir=str(items))
    assert leads == [] and goals == [] and set(images) == {"gold_frontier.png"}
    finding = next(b[1] for b in blocks if b[0] == "p" and b[1].startswith("Against the exact gold"))
    assert finding.startswith("Against the exact gold on 4 held-out sums, the shipped model passes 0.0")
    assert "DPO (LoRA) wins 87.5 [62.5, 100.0]% against the shipped model at KL 2.0" in finding
    headers, rows = next(b[1:] for b in blocks if b[0] == "table")
    assert headers[4] == "gold win rate vs the shipped model (%)"
    assert [r[0] for r in rows] == ["base", "dpo_gold_lora"] and rows[1][-1] == "120"
    assert [f.b for f in found] == ["base", "base"]
