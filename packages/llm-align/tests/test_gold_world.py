"""The gold world's methods on the nano policy: the proxy reward model against the noise ceiling, best-of-n,
Preferred-FT, and PPO / GRPO graded by the exact gold as they train."""

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
from llm_align.bon import analytic_kl, best_of_weights, expected_best
from llm_align.cli import main
from llm_align.grpo import gold_reward
from llm_align.reward import noise_ceiling
from llm_data.cli import main as data_main
from llm_eval.gold import gold


@pytest.fixture(scope="module")
def gold_world(workspace, tmp_path_factory):
    """root/gold (sums), root/pairs (their gold-labelled pairs at T 0.3), root/proxy (a reward model on them)."""
    root = tmp_path_factory.mktemp("gold_world")
    assert data_main(["gold", "--out", str(root / "gold"), "--train", "16", "--validation", "8", "--test", "8"]) == 0
    assert main(["collect", "--model", str(workspace / "policy"), "--data", str(root / "gold"), "--label", "gold",
                 "--samples", "4", "--max_new_tokens", "6", "--max_per_category", "0", "--temperature", "0.3",
                 "--out", str(root / "pairs")]) == 0
    assert main(["reward", "--model", str(workspace / "policy"), "--data", str(root / "pairs"), "--out",
                 str(root / "proxy"), "--metrics", str(root / "proxy.json"), "--max_steps", "4", "--batch_size", "8",
                 "--max_per_category", "0"]) == 0
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_best_of_n_is_the_expectation_over_every_n_subset():
    """The closed form equals brute force over all n-subsets, ties included; best-of-1 is the plain mean."""
    proxy = [0.3, -1.0, 2.0, 0.3, 0.7]
    values = [1.0, 5.0, -2.0, 3.0, 4.0]
    for n in range(1, len(proxy) + 1):
        assert sum(best_of_weights(n, len(proxy))) == pytest.approx(1.0)
        subsets = list(itertools.combinations(range(len(proxy)), n))
        brute = 0.0
        for subset in subsets:  # a tie for the top shares the subset's weight equally
            top = max(proxy[i] for i in subset)
            winners = [i for i in subset if proxy[i] == top]
            brute += sum(values[i] for i in winners) / len(winners) / len(subsets)
        assert expected_best(proxy, values, n) == pytest.approx(brute)
    assert expected_best(proxy, values, 1) == pytest.approx(sum(values) / len(values))
    assert analytic_kl(1) == 0.0 and analytic_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_noise_ceiling_is_the_golds_own_accuracy_on_the_drawn_labels(tmp_path):
    """A pair with gold gap g keeps its order with p = sigmoid(g / T): ranking it right earns p, wrong 1 - p."""
    rows = [{"prompt": "What is 1 + 1 + 1?", "chosen": "3", "rejected": "4", "gold_chosen": 1.0,
             "gold_rejected": -0.15}, {"prompt": "What is 2 + 2 + 2?", "chosen": "7", "rejected": "no",
                                       "gold_chosen": -0.15, "gold_rejected": -1.0}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "meta.json").write_text(json.dumps({"temperature": 0.5}))
    p = [1 / (1 + math.exp(-1.15 / 0.5)), 1 / (1 + math.exp(-0.85 / 0.5))]
    metrics = noise_ceiling(str(tmp_path), [True, False], seed=0)
    assert metrics["noise_ceiling"] == pytest.approx(100 * (p[0] + p[1]) / 2, abs=1e-4)
    assert metrics["noisy_accuracy"] == pytest.approx(100 * (p[0] + 1 - p[1]) / 2, abs=1e-4)
    assert metrics["below_ceiling"] == pytest.approx(100 * (2 * p[1] - 1) / 2, abs=1e-4)
    (tmp_path / "meta.json").write_text(json.dumps({}))  # no temperature: labels of unknown noise
    assert noise_ceiling(str(tmp_path), [True, False], seed=0) == {}


def test_collect_gold_writes_held_out_pairs_and_the_proxy_is_scored_against_them(gold_world):
    test = [json.loads(line) for line in (gold_world / "pairs" / "test.jsonl").read_text().splitlines()]
    held_out = {json.loads(line)["prompt"] for line in (gold_world / "gold" / "test.jsonl").read_text().splitlines()}
    assert test and {r["prompt"] for r in test} <= held_out
    assert all(r["gold_chosen"] == gold(r["prompt"], r["chosen"]) > r["gold_rejected"] for r in test)
    metrics = json.loads((gold_world / "proxy.json").read_text())
    assert metrics["n_pairs"] == len(test) and metrics["label_temperature"] == 0.3
    assert 50.0 < metrics["noise_ceiling"] < 100.0
    assert metrics["below_ceiling"] == pytest.approx(metrics["noise_ceiling"] - metrics["noisy_accuracy"], abs=1e-4)


def test_best_of_n_ranks_by_the_proxy_and_grades_by_the_gold(workspace, gold_world, tmp_path):
    reference = tmp_path / "reference"
    from llm_eval.cli import main as eval_main

    assert eval_main(["align", "--model", str(workspace / "policy"), "--reference", str(workspace / "policy"),
                      "--gold", "arithmetic", "--data", str(gold_world / "gold"), "--max_new_tokens", "6",
                      "--kl_samples", "0", "--items", str(reference)]) == 0
    out = tmp_path / "bon.json"
    args = ["best_of_n", "--model", str(workspace / "policy"), "--reward_model", str(gold_world / "proxy"),
            "--data", str(gold_world / "gold"), "--reference_items", str(reference), "--n", "4,1,2",
            "--max_new_tokens", "6", "--out", str(out), "--plots", str(tmp_path / "plots"),
            "--items", str(tmp_path / "items")]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n_prompts"] == 8 and metrics["samples_per_prompt"] == 4
    samples = [json.loads(line) for line in (tmp_path / "items" / "samples.jsonl").read_text().splitlines()]
    assert all(len(s["replies"]) == 4 and s["gold"] == [gold(s["prompt"], r) for r in s["replies"]] for s in samples)
    # best-of-1 is one sample's mean gold; best-of-4 of 4 is the proxy's top reply (ties averaged)
    assert metrics["n1_gold"] == pytest.approx(sum(sum(s["gold"]) / 4 for s in samples) / 8, abs=1e-5)
    top = [sum(g for g, p in zip(s["gold"], s["proxy"], strict=True) if p == max(s["proxy"]))
           / s["proxy"].count(max(s["proxy"])) for s in samples]
    assert metrics["n4_gold"] == pytest.approx(sum(top) / 8, abs=1e-5)
    assert metrics["n4_proxy"] >= metrics["n2_proxy"] >= metrics["n1_proxy"]
    assert metrics["n1_kl"] == 0.0 and metrics["n4_kl"] == pytest.approx(analytic_kl(4))
    curve = _rows(tmp_path / "plots" / "bon.csv")
    assert [int(r["n"]) for r in curve] == [1, 2, 4] and 0 <= float(curve[0]["win_rate"]) <= 100


def test_best_of_n_bad_n_is_a_one_line_error(capsys):
    assert main(["best_of_n", "--n", "1,two"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "n: '1,two'" in err


def test_preferred_ft_is_sft_on_the_chosen_replies(workspace, gold_world, tmp_path):
    out = tmp_path / "pft"
    args = ["dpo", "--method", "preferred_ft", "--model", str(workspace / "policy"), "--data",
            str(gold_world / "pairs"), "--out", str(out), "--metrics", f"{out}.json", "--max_steps", "2",
            "--batch_size", "4", "--max_per_category", "0"]
    assert main(args) == 0 and (out / "config.json").is_file()
    assert main([*args[:-2], "--sft_weight", "1.0"]) == 2  # the NLL term is already the whole loss


def test_dpo_with_lora_on_pairs_without_a_test_split(workspace, gold_world, tmp_path):
    """The smol-course exercise's shape: pairs with no held-out pairs (no reward model is trained on them), and
    DPO training LoRA adapters that are merged into a plain model folder."""
    pairs, out = tmp_path / "pairs", tmp_path / "dpo"
    assert main(["collect", "--model", str(workspace / "policy"), "--data", str(gold_world / "gold"), "--label", "gold",
                 "--samples", "4", "--max_new_tokens", "6", "--max_per_category", "0", "--temperature", "0.3",
                 "--test_pairs", "false", "--out", str(pairs)]) == 0
    assert sorted(p.name for p in pairs.glob("*.jsonl")) == ["train.jsonl", "validation.jsonl"]
    args = ["dpo", "--model", str(workspace / "policy"), "--data", str(pairs), "--out", str(out), "--lora_r", "4",
            "--max_steps", "2", "--batch_size", "4", "--max_per_category", "0", "--metrics", f"{out}.json"]
    assert main(args) == 0
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()


def test_gold_reward_grades_replies_by_the_rubric():
    prompts = [[{"role": "user", "content": "What is 2 + 3 - 1?"}]] * 3
    replies = [[{"role": "assistant", "content": c}] for c in (" 4", "5", "The answer is 4")]
    assert gold_reward(prompts, replies) == [1.0, -0.15, 0.75]


@pytest.mark.parametrize("command", ["ppo", "grpo"])
def test_rl_curve_grades_samples_by_the_exact_gold(workspace, gold_world, tmp_path, command):
    out, plots = tmp_path / command, tmp_path / "plots"
    args = [command, "--model", str(workspace / "policy"), "--out", str(out), "--metrics", f"{out}.json",
            "--plots", str(plots), "--max_steps", "2", "--max_new_tokens", "6", "--learning_rate", "1e-3",
            "--proxy", str(gold_world / "proxy"), "--gold", "arithmetic", "--curve_data", str(gold_world / "gold"),
            "--curve_every", "1", "--curve_prompts", "8"]
    if command == "ppo":
        args += ["--data", str(gold_world / "pairs"), "--reward_model", str(gold_world / "proxy"), "--batch_size", "2",
                 "--max_per_category", "0"]
    else:
        args += ["--data", str(gold_world / "gold"), "--reward", "arithmetic", "--batch_size", "8",
                 "--num_generations", "4"]
    assert main(args) == 0
    curve = _rows(plots / "overopt.csv")
    assert [int(r["step"]) for r in curve] == [0, 1, 2]
    assert all(-1.0 <= float(r["gold"]) <= 1.0 for r in curve)  # the rubric's range, not a model's scores
    if command == "grpo":
        assert all(-1.0 <= float(r["gold"]) <= 1.0 for r in _rows(plots / "grpo.csv"))
