"""PPO, GRPO and RLOO on the nano policy: they train, log per step, and measure the over-optimisation curve."""

import csv
import json
import signal
from pathlib import Path

import pytest
from llm_align.cli import main
from llm_align.data import distinct_prompts
from llm_align.grpo import exact_answer, load_tasks
from llm_train.faults import resume_differences, run_killed
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def judges(workspace, tmp_path_factory):
    """(proxy, gold): two nano reward models on disjoint halves of the prompts."""
    root = tmp_path_factory.mktemp("judges")
    for half, name in (("first", "proxy"), ("second", "gold")):
        args = ["reward", "--model", str(workspace / "policy"), "--data", str(workspace / "synth" / "preference")]
        args += ["--out", str(root / name), "--half", half, "--max_steps", "4", "--batch_size", "8"]
        assert main(args) == 0
    return root / "proxy", root / "gold"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _curve_args(judges, workspace):
    proxy, gold = judges
    return ["--proxy", str(proxy), "--gold", str(gold), "--curve_data", str(workspace / "synth" / "preference"),
            "--curve_every", "2", "--curve_prompts", "8"]


@pytest.mark.parametrize("kl_coef", ["0.05", "0"])
def test_ppo_logs_reward_kl_entropy_and_the_overoptimisation_curve(workspace, judges, tmp_path, kl_coef):
    out, plots = tmp_path / "ppo", tmp_path / "plots"
    args = ["ppo", "--model", str(workspace / "policy"), "--data", str(workspace / "synth" / "preference"),
            "--reward_model", str(judges[0]), "--out", str(out), "--metrics", f"{out}.json", "--plots", str(plots),
            "--max_steps", "3", "--batch_size", "4", "--max_new_tokens", "8", "--kl_coef", kl_coef,
            "--learning_rate", "1e-3", *_curve_args(judges, workspace)]
    assert main(args) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "value_model").exists()  # the saved folder is the policy alone
    metrics = json.loads(Path(f"{out}.json").read_text())
    assert metrics["steps"] == 3 and metrics["nonfinite_steps"] == 0
    # Tokens trained on: each of the 3 x 4 samples (its prompt and up to 8 reply tokens) in each of the
    # 4 PPO epochs; a count of each sample once would fall below the shortest prompts' bound.
    tokenizer = AutoTokenizer.from_pretrained(workspace / "policy")
    prompts = [len(tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"])
               for p in distinct_prompts(str(workspace / "synth" / "preference"), "train")]
    assert 3 * 4 * 4 * min(prompts) <= metrics["train_tokens_seen"] <= 3 * 4 * 4 * (max(prompts) + 8)
    assert metrics["model_flops_per_second"] > metrics["tokens_per_second"] > 0
    steps = _rows(plots / "ppo.csv")
    assert [int(r["step"]) for r in steps] == [1, 2, 3]
    assert {"score", "kl", "entropy", "rlhf_reward"} <= set(steps[0])
    if kl_coef == "0":  # no penalty: the RLHF reward is the reward model's score, untouched
        assert all(float(r["rlhf_reward"]) == pytest.approx(float(r["score"]), abs=1e-5) for r in steps)
    curve = _rows(plots / "overopt.csv")
    assert [int(r["step"]) for r in curve] == [0, 2, 3]  # before training, every 2 steps, and the end
    assert float(curve[0]["kl"]) == 0.0  # the untrained policy is the reference
    for row in curve:
        for key in ("proxy", "gold"):
            assert float(row[f"{key}_lo"]) <= float(row[key]) <= float(row[f"{key}_hi"])
    for key in ("proxy_change", "gold_change", "kl_change"):
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"]


def test_exact_answer_reward_uses_the_exact_match_normalisation():
    completions = [[{"role": "assistant", "content": " 7."}], [{"role": "assistant", "content": "8"}]]
    assert exact_answer(completions, ["7", "7"]) == [1.0, 0.0]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_grpo_and_rloo_train_on_the_checkable_tasks(workspace, judges, tmp_path, method):
    out, plots = tmp_path / method, tmp_path / "plots"
    args = ["grpo", "--method", method, "--model", str(workspace / "policy"),
            "--data", str(workspace / "synth" / "sft"), "--categories", "arithmetic", "--out", str(out),
            "--metrics", f"{out}.json", "--plots", str(plots),
            "--max_steps", "2", "--batch_size", "8", "--num_generations", "4", "--max_new_tokens", "8",
            "--learning_rate", "1e-3", *_curve_args(judges, workspace)]
    if method == "rloo":  # the learned reward beside the exact answer
        args += ["--reward_model", str(judges[0])]
    assert main(args) == 0
    assert (out / "config.json").is_file() and not Path(f"{out}.ckpt").exists()
    metrics = json.loads(Path(f"{out}.json").read_text())
    assert metrics["steps"] == 2 and metrics["nonfinite_steps"] == 0
    assert metrics["train_prompts"] == len(load_tasks(str(workspace / "synth" / "sft"), "train", "arithmetic"))
    steps = _rows(plots / f"{method}.csv")
    assert len(steps) == 2 and all(0.0 <= float(r["exact"]) <= 1.0 for r in steps)
    assert [int(r["step"]) for r in _rows(plots / "overopt.csv")] == [0, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch_size", "6", "--num_generations", "4"], "must be a multiple of num_generations"),
        (["--categories", "poetry"], "no rows with categories ['poetry']"),
        (["--method", "ppo"], "unknown method 'ppo'"),
    ],
)
def test_grpo_bad_settings_are_one_line_errors(workspace, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    args = ["grpo", "--model", str(workspace / "policy"), "--data", str(workspace / "synth" / "sft"),
            "--out", str(out), "--max_steps", "1", "--batch_size", "8", "--num_generations", "4", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


@pytest.mark.parametrize(("method", "processes"), [("ppo", 1), ("ppo", 2), ("grpo", 1), ("rloo", 1)])
def test_rl_killed_and_resumed_matches_an_uninterrupted_run(workspace, judges, tmp_path, capfd, method, processes):
    """SIGKILL right after checkpoint 4 of 8 (`llm_train.faults`), rerun with --resume: the same per-step
    logs, curve and metrics as one clean run. PPO: 12 prompts in batches of 4 put the kill one batch into the
    second epoch, so the resumed run must redraw that epoch's order and continue it (trl's PPO loop has no
    resume of its own); with 2 processes (DDP over gloo) every worker is killed and each one's share of the
    batch resumes."""
    runs = {name: (tmp_path / name, tmp_path / f"plots-{name}") for name in ("clean", "killed")}
    grpo = ["--data", str(workspace / "synth" / "sft"), "--categories", "arithmetic", "--batch_size", "8",
            "--num_generations", "4"]
    per_method = {
        "ppo": ["ppo", "--data", str(workspace / "synth" / "preference"), "--reward_model", str(judges[0]),
                "--batch_size", "4", "--max_per_category", "1", "--category_caps", "safety=3,benign=3"],
        "grpo": ["grpo", *grpo],
        "rloo": ["grpo", "--method", "rloo", *grpo],
    }

    def args(name):
        out, plots = runs[name]
        return [*per_method[method], "--model", str(workspace / "policy"), "--out", str(out),
                "--metrics", f"{out}.json", "--plots", str(plots), "--max_steps", "8", "--save_steps", "2",
                "--max_new_tokens", "8", "--learning_rate", "1e-3", "--num_processes", str(processes),
                *_curve_args(judges, workspace)]

    assert main(args("clean")) == 0  # here, as is the resume: only the killed run needs its own process
    killed = runs["killed"][0]
    died = run_killed(4, "llm-align", args("killed"))
    if processes == 1:
        assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
    else:  # the launcher survives its killed workers and fails
        assert died.returncode != 0 and (Path(f"{killed}.ckpt") / "checkpoint-4" / "rng_state_1.pth").is_file()
    assert (Path(f"{killed}.ckpt") / "checkpoint-4" / "overopt.json").is_file() and not killed.exists()
    capfd.readouterr()
    assert main([*args("killed"), "--resume", "true"]) == 0
    # it resumed, not restarted: the Trainer printed the logs of steps 5 to 8 only
    assert capfd.readouterr().out.count("'objective/kl'" if method == "ppo" else "'kl'") == 4
    a, b = (json.loads(Path(f"{runs[name][0]}.json").read_text()) for name in runs)
    assert a["steps"] == b["steps"] == 8 and a["train_tokens_seen"] > 0 and resume_differences(a, b) == {}
    for csv_name in (f"{method}.csv", "overopt.csv"):
        assert _rows(runs["clean"][1] / csv_name) == _rows(runs["killed"][1] / csv_name), csv_name
    assert not Path(f"{killed}.ckpt").exists()
    if processes == 2:  # what the workers saved is the policy alone, a causal LM (not trl's policy+value wrapper)
        from transformers import AutoModelForCausalLM

        assert AutoModelForCausalLM.from_pretrained(killed).config.model_type == "llama"


def test_collect_labels_the_policys_own_samples_and_dpo_trains_on_them(workspace, judges, tmp_path):
    from llm_align.data import load_pairs

    out = tmp_path / "onpolicy"
    args = ["collect", "--model", str(workspace / "policy"), "--data", str(workspace / "synth" / "preference"),
            "--reward_model", str(judges[0]), "--out", str(out), "--samples", "3", "--max_new_tokens", "8",
            "--max_per_category", "3", "--min_margin", "0", "--metrics", str(tmp_path / "collect.json")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "collect.json").read_text())
    assert metrics["train_pairs"] > 0 and metrics["train_pairs"] <= metrics["train_prompts"]
    assert metrics["train_mean_margin"] >= 0
    pairs = load_pairs(str(out), "train")  # the same checks as any preference folder: chosen != rejected
    policy_text = {r["chosen"][0]["content"] for r in pairs} | {r["rejected"][0]["content"] for r in pairs}
    reference = {r["chosen"][0]["content"] for r in load_pairs(str(workspace / "synth" / "preference"), "train")}
    assert policy_text - reference  # the replies are the policy's samples, not the static set's
    dpo = ["dpo", "--model", str(workspace / "policy"), "--data", str(out), "--out", str(tmp_path / "dpo"),
           "--max_steps", "2", "--batch_size", "4"]
    assert main(dpo) == 0


def test_collect_by_rule_needs_a_right_and_a_wrong_sample(workspace, tmp_path, capsys):
    """The random nano policy never says the reference reply, so the rule labels no pair: a one-line error."""
    out = tmp_path / "never"
    args = ["collect", "--model", str(workspace / "policy"), "--data", str(workspace / "synth" / "preference"),
            "--label", "rule", "--out", str(out), "--samples", "2", "--max_new_tokens", "4", "--max_per_category", "2"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the load bars
    assert len(errors) == 1 and "no pair collected" in errors[0] and "skipped_none_right" in errors[0]
    assert not out.exists()


def test_collect_by_gold_labels_pairs_by_bradley_terry_draws(workspace, tmp_path):
    """`--label gold` on the world's sums: every pair of samples with a gold difference, labelled by the gold
    order at temperature 0 and by near coin flips at a high one; validation always keeps the gold order."""
    from llm_align.data import load_pairs
    from llm_data.cli import main as data_main
    from llm_eval.gold import gold

    sums = ["--train", "16", "--validation", "8", "--test", "8"]
    assert data_main(["gold", "--out", str(tmp_path / "gold"), *sums]) == 0

    def collect(name: str, temperature: float) -> tuple[list[dict], dict]:
        args = ["collect", "--model", str(workspace / "policy"), "--data", str(tmp_path / "gold"), "--label", "gold",
                "--samples", "4", "--max_new_tokens", "6", "--max_per_category", "0", "--temperature",
                str(temperature), "--out", str(tmp_path / name), "--metrics", str(tmp_path / f"{name}.json")]
        assert main(args) == 0
        rows = {split: [json.loads(line) for line in (tmp_path / name / f"{split}.jsonl").read_text().splitlines()]
                for split in ("train", "validation")}
        return rows, json.loads((tmp_path / f"{name}.json").read_text())

    exact, metrics = collect("exact", 0.0)
    assert metrics["train_label_noise"] == 0.0 and metrics["train_pairs"] == len(exact["train"]) > 5
    for row in exact["train"] + exact["validation"]:
        assert row["gold_chosen"] == gold(row["prompt"], row["chosen"]) > row["gold_rejected"]
        assert row["gold_rejected"] == gold(row["prompt"], row["rejected"])
    noisy, metrics = collect("noisy", 10.0)
    flipped = [row for row in noisy["train"] if row["flipped"]]
    assert flipped and all(row["gold_chosen"] < row["gold_rejected"] for row in flipped)
    assert metrics["train_label_noise"] == pytest.approx(100 * len(flipped) / len(noisy["train"]), abs=1e-4)
    assert not any(row["flipped"] for row in noisy["validation"])
    assert len(load_pairs(str(tmp_path / "noisy"), "train")) == len(noisy["train"])  # DPO reads them as they are
