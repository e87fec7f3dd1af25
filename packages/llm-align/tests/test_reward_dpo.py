import json
import signal
from pathlib import Path

import pytest
from llm_align.cli import main
from llm_align.dpo import METHODS
from llm_train.faults import resume_differences, run_killed

FAST = ["--max_steps", "4", "--batch_size", "4", "--learning_rate", "1e-3", "--warmup_ratio", "0", "--eval_steps", "50"]


def _args(workspace, command, out, *extra):
    return [
        command,
        "--model",
        str(workspace / "policy"),
        "--data",
        str(workspace / "synth" / "preference"),
        "--out",
        str(out),
        "--metrics",
        f"{out}.json",
        *FAST,
        *extra,
    ]


def test_reward_model_is_a_one_output_classifier_with_held_out_accuracy(workspace, tmp_path):
    out = tmp_path / "reward"
    assert main(_args(workspace, "reward", out, "--half", "first", "--plots", str(tmp_path / "curves"))) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    metrics = json.loads(Path(f"{out}.json").read_text())
    assert 0 <= metrics["accuracy_lo"] <= metrics["accuracy"] <= metrics["accuracy_hi"] <= 100
    assert metrics["n_pairs"] > 20 and "accuracy_safety" in metrics and "accuracy_benign" in metrics
    assert (tmp_path / "curves" / "train.csv").is_file()
    assert not Path(f"{out}.ckpt").exists()


def test_reward_halves_are_disjoint(workspace):
    from llm_align.data import load_pairs

    first = load_pairs(str(workspace / "synth" / "preference"), "train", "first")
    second = load_pairs(str(workspace / "synth" / "preference"), "train", "second")
    assert first and second
    assert not {str(r["prompt"]) for r in first} & {str(r["prompt"]) for r in second}


def test_category_caps_override_the_per_category_cap(workspace):
    from llm_align.data import load_pairs, parse_caps

    folder = str(workspace / "synth" / "preference")
    rows = load_pairs(folder, "train", caps=parse_caps("safety=0,benign=2", 3))
    counts = {c: sum(r["category"] == c for r in rows) for c in {r["category"] for r in rows}}
    every_safety = sum(r["category"] == "safety" for r in load_pairs(folder, "train"))
    assert counts.pop("safety") == every_safety > 3 and counts.pop("benign") == 2
    assert set(counts.values()) == {3}


@pytest.mark.parametrize("caps", ["safety", "safety=-1", "=3", "safety=many"])
def test_malformed_category_caps_are_one_line_errors(workspace, tmp_path, capsys, caps):
    out = tmp_path / "never"
    assert main(_args(workspace, "dpo", out, "--category_caps", caps)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "category_caps" in err and "name=N" in err
    assert not out.exists()


@pytest.mark.parametrize("method", list(METHODS))
def test_dpo_family_trains_and_saves_a_policy(workspace, tmp_path, method):
    out = tmp_path / method
    assert main(_args(workspace, "dpo", out, "--method", method)) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    metrics = json.loads(Path(f"{out}.json").read_text())
    assert metrics["train_pairs"] > 20 and metrics["train_seconds"] > 0
    assert metrics["train_tokens_seen"] > 0 and metrics["model_flops_per_second"] > metrics["tokens_per_second"] > 0
    if method in ("dpo", "ipo"):
        assert 0.0 <= metrics["validation_rewards_accuracies"] <= 1.0


def test_orpo_and_simpo_count_the_tokens_dpo_counts(workspace, tmp_path):
    """The Trainer counts DPO's batches; trl's ORPO/CPO batches it cannot, so `count_trained_tokens` counts
    their training passes. The same seed draws the same 4 x 4 pairs: the counts agree, up to the one special
    token per sequence that trl's CPO tokenization adds and its DPO's does not."""
    seen = {}
    for method in ("dpo", "simpo"):
        out = tmp_path / method
        assert main(_args(workspace, "dpo", out, "--method", method)) == 0
        seen[method] = json.loads(Path(f"{out}.json").read_text())["train_tokens_seen"]
    assert 0 <= seen["simpo"] - seen["dpo"] <= 4 * 4 * 2


def _write_pairs(folder: Path, bad_line: str):
    good = json.dumps({"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"})
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text(f"{good}\n{bad_line}\n" if split == "train" else f"{good}\n")


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"prompt": "Hi", "rejected": "no"}', "line 2: missing field 'chosen'"),
        ('{"prompt": "Hi", "chosen": null, "rejected": "no"}', "line 2: field 'chosen' must be str/list"),
        ('{"prompt": " ", "chosen": "yes", "rejected": "no"}', "line 2: field 'prompt' is empty"),
        ('{"prompt": "Hi", "chosen": "same", "rejected": "same"}', "line 2: field 'rejected' is identical"),
        ('{"prompt": 3, "chosen": "yes", "rejected": "no"}', "line 2: field 'prompt' must be str/list"),
        ('{"prompt": "Hi", "chosen": "yes", "rej', "line 2: not valid JSON"),
    ],
)
def test_bad_preference_rows_are_one_line_errors(workspace, tmp_path, capsys, bad_line, message):
    data = tmp_path / "pairs"
    _write_pairs(data, bad_line)
    out = tmp_path / "never"
    for command in ("reward", "dpo"):
        args = _args(workspace, command, out)
        args[args.index("--data") + 1] = str(data)
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert (
            len(err.splitlines()) == 1
            and "train.jsonl" in err
            and message.replace("line ", "") in err.replace("train.jsonl:", "")
        )
        assert not out.exists() and not Path(f"{out}.json").exists()


def _cli(workspace, out, command):
    args = _args(workspace, command[0], out, "--save_steps", "2", *command[1:])
    args[args.index("--max_steps") + 1] = "8"
    return args


@pytest.mark.parametrize(
    "command", [["reward"], *(["dpo", "--method", m] for m in ("dpo", "kto", "orpo", "simpo"))],
    ids=["reward", "dpo", "kto", "orpo", "simpo"],
)
def test_killed_and_resumed_matches_an_uninterrupted_run(workspace, tmp_path, command):
    """SIGKILL right after checkpoint 4 of 8 (`llm_train.faults`), rerun with --resume: every metric but the
    timings equals one clean run's. One run per trl trainer: reward, DPO, KTO, ORPO, CPO (SimPO)."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    # here, as is the resume: only the killed run needs its own process
    assert main(_cli(workspace, clean, command)) == 0
    died = run_killed(4, "llm-align", _cli(workspace, killed, command))
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
    assert (Path(f"{killed}.ckpt") / "checkpoint-4" / "trainer_state.json").is_file()
    assert not killed.exists() and not Path(f"{killed}.json").exists()  # nothing but checkpoints left behind
    assert main([*_cli(workspace, killed, command), "--resume", "true"]) == 0
    a, b = (json.loads(Path(f"{p}.json").read_text()) for p in (clean, killed))
    assert resume_differences(a, b) == {}


def test_gold_judge_win_rate_safety_and_kl_of_an_aligned_policy(workspace, tmp_path, capsys):
    """The alignment evaluation end to end on tiny models: judge, reference, DPO policy, `llm-eval align`."""
    from llm_eval.cli import main as eval_main

    judge, policy = tmp_path / "gold", tmp_path / "dpo"
    assert main(_args(workspace, "reward", judge, "--half", "second")) == 0
    assert main(_args(workspace, "dpo", policy, "--method", "dpo")) == 0
    common = [
        "--reference",
        str(workspace / "policy"),
        "--judge",
        str(judge),
        "--data",
        str(workspace / "synth" / "preference"),
        "--max_new_tokens",
        "8",
        "--kl_samples",
        "8",
    ]
    ref_items = tmp_path / "items_ref"
    assert (
        eval_main(
            [
                "align",
                "--model",
                str(workspace / "policy"),
                *common,
                "--items",
                str(ref_items),
                "--out",
                str(tmp_path / "ref.json"),
            ]
        )
        == 0
    )
    assert (
        eval_main(
            [
                "align",
                "--model",
                str(policy),
                *common,
                "--reference_items",
                str(ref_items),
                "--items",
                str(tmp_path / "items_dpo"),
                "--out",
                str(tmp_path / "dpo.json"),
            ]
        )
        == 0
    )
    ref = json.loads((tmp_path / "ref.json").read_text())
    m = json.loads((tmp_path / "dpo.json").read_text())
    assert ref["kl"] == 0.0 and "win_rate" not in ref
    assert 0 <= m["win_rate_lo"] <= m["win_rate"] <= m["win_rate_hi"] <= 100
    assert abs(m["win"] + m["tie"] + m["loss"] - 100) < 1e-6
    for key in ("harmful_refusal", "over_refusal"):
        assert 0 <= m[key] <= 100 and f"{key}_lo" in m
    assert "kl" in m and m["n_prompts"] > 20
    rows = [json.loads(line) for line in (tmp_path / "items_dpo" / "answers.jsonl").read_text().splitlines()]
    assert {"prompt", "category", "prediction", "refused", "gold_score"} <= set(rows[0])
    # a preference folder without the test split: one line naming the file, exit 2
    capsys.readouterr()
    args = ["align", "--model", str(policy), *common, "--data", str(workspace / "synth" / "sft" / "nope")]
    assert eval_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such dataset folder" in err


def test_hub_pairs_in_conversational_shape_train_reward_and_dpo(workspace, tmp_path):
    """hh-rlhf rows as `llm-data hub` writes them (multi-turn message lists) go through the chat template."""
    from llm_data.cli import main as data_main

    fixture = Path(__file__).parents[2] / "llm-data" / "tests" / "fixtures" / "hh_rlhf"
    hub = tmp_path / "hh"
    assert data_main(["hub", "--name", "hh-rlhf", "--source", str(fixture), "--out", str(hub)]) == 0
    row = json.loads((hub / "train.jsonl").read_text().splitlines()[0])
    assert isinstance(row["prompt"], list) and row["chosen"][0]["role"] == "assistant"
    for command in ("reward", "dpo"):
        args = _args(workspace, command, tmp_path / command)
        args[args.index("--data") + 1] = str(hub)
        assert main(args) == 0
    assert (tmp_path / "dpo" / "config.json").is_file()
    assert 0 <= json.loads((tmp_path / "reward.json").read_text())["accuracy"] <= 100
    from llm_eval.cli import main as eval_main

    common = ["--reference", str(workspace / "policy"), "--judge", str(tmp_path / "reward"), "--data", str(hub),
              "--max_new_tokens", "8", "--kl_samples", "4"]
    ref, ours = tmp_path / "items_ref", tmp_path / "items_dpo"
    assert eval_main(["align", "--model", str(workspace / "policy"), *common, "--items", str(ref)]) == 0
    assert eval_main(["align", "--model", str(tmp_path / "dpo"), *common, "--reference_items", str(ref),
                      "--items", str(ours), "--out", str(tmp_path / "align.json")]) == 0
    answers = [json.loads(line) for line in (ours / "answers.jsonl").read_text().splitlines()]
    assert answers and isinstance(answers[0]["prompt"], list)
    assert "win_rate" in json.loads((tmp_path / "align.json").read_text())
