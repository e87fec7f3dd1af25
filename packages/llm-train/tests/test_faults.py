"""`python -m llm_train.faults`: a run SIGKILLed right after a checkpoint, rerun with --resume, ends with the
uninterrupted run's metrics (a killed 2-process run: test_distributed.py)."""

import json
import signal
from pathlib import Path

import pytest
from llm_train.cli import main
from llm_train.faults import main as faults_main
from llm_train.faults import resume_differences, run_killed


def _command(workspace, encoder, name, out) -> list[str]:
    common = ["--out", str(out), "--metrics", f"{out}.json", "--max_steps", "8", "--save_steps", "2",
              "--eval_steps", "4", "--batch_size", "4"]
    if name == "pretrain":
        return ["pretrain", "--model", str(workspace / "init"), "--data", str(workspace / "synth" / "pretrain"),
                "--block_size", "32", *common]
    if name == "contrastive":
        return ["contrastive", "--method", "supervised", "--model", str(encoder),
                "--data", str(workspace / "synth" / "pairs"), *common]
    return ["sft", "--method", name, "--model", str(workspace / "init"),
            "--data", str(workspace / "synth" / "messages"), *common]


@pytest.mark.parametrize("name", ["pretrain", "full", "lora", "contrastive"])
def test_killed_run_resumes_to_the_uninterrupted_runs_metrics(workspace, encoder, tmp_path, name):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    # here, as is the resume: only the killed run needs its own process
    assert main(_command(workspace, encoder, name, clean)) == 0
    died = run_killed(4, "llm-train", _command(workspace, encoder, name, killed))
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
    assert (Path(f"{killed}.ckpt") / "checkpoint-4" / "trainer_state.json").is_file()
    assert not killed.exists() and not Path(f"{killed}.json").exists()  # nothing but checkpoints left behind
    assert main([*_command(workspace, encoder, name, killed), "--resume", "true"]) == 0
    a, b = (json.loads(Path(f"{p}.json").read_text()) for p in (clean, killed))
    assert a["train_tokens_seen"] > 0 and resume_differences(a, b) == {}
    assert not Path(f"{killed}.ckpt").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--after_step", "4", "pip"], "'pip' is not an llm-lab command; choose llm-train, llm-align or llm-compress"),
    (["--after_step", "0", "llm-train"], "--after_step must be >= 1, got 0"),
])
def test_faults_names_a_wrong_command_or_step(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        faults_main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_resume_differences_let_only_timing_values_differ():
    a = {"train_loss": 1.0, "train_seconds": 3.0, "mfu": 0.1}
    assert resume_differences(a, {**a, "train_seconds": 9.0}) == {}
    assert resume_differences(a, {**a, "train_loss": 1.5}) == {"train_loss": (1.0, 1.5)}
    assert resume_differences(a, {"train_loss": 1.0, "train_seconds": 3.0}) == {"mfu": (0.1, None)}
