"""Two CPU processes (DDP over gloo, through `accelerate launch`) against one, at the same global batch."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS, SAVE = 240, 40
CONFIGS = Path(__file__).parents[1] / "accelerate"


def _losses(plots) -> dict[int, float]:
    with open(plots / "train.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _pretrain(workspace, out, *extra) -> list[str]:
    return [sys.executable, "-m", "llm_train.cli", "pretrain", "--model", str(workspace / "init"),
            "--data", str(workspace / "synth" / "pretrain"), "--out", str(out), "--block_size", "32",
            "--batch_size", "8", "--max_steps", str(STEPS), "--eval_steps", str(SAVE), "--save_steps", str(SAVE),
            "--plots", f"{out}-plots", "--metrics", f"{out}.json", *extra]


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "LLM_LAB_NUM_PROCESSES": "1"}
    subprocess.run(_pretrain(workspace, root / "one"), check=True, env=env, capture_output=True)
    # this run launches through the shipped DDP config file; the killed run below through the flags alone
    two = ["--num_processes", "2", "--accelerate_config", str(CONFIGS / "ddp.yaml")]
    subprocess.run(_pretrain(workspace, root / "two", *two), check=True, env=env, capture_output=True)
    return root


def test_two_processes_follow_the_single_process_loss_curve(runs):
    one, two = _losses(runs / "one-plots"), _losses(runs / "two-plots")
    assert set(one) == set(two) and len(one) == STEPS // 10
    # Same global batch, same data order, gradients averaged: only float reduction order differs.
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=0.02), step
    assert (runs / "two").is_dir() and not (runs / "two.ckpt").exists()


def test_killed_two_process_run_resumes_to_the_same_loss(workspace, runs, tmp_path):
    """SIGKILL the launcher and both workers after the first checkpoint, then rerun with --resume."""
    out = tmp_path / "killed"
    cmd = _pretrain(workspace, out, "--num_processes", "2")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out.parent / "killed.ckpt" / f"checkpoint-{SAVE}"
    deadline = time.monotonic() + 300
    # each worker saves its own RNG state: a checkpoint with rng_state_1 really comes from two processes
    while not all((first / name).is_file() for name in ("trainer_state.json", "rng_state_0.pth", "rng_state_1.pth")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing but the checkpoints is left of a killed run
    subprocess.run([*cmd, "--resume", "true"], check=True, capture_output=True)
    resumed, uninterrupted = _losses(tmp_path / "killed-plots"), _losses(runs / "two-plots")
    assert set(resumed) == set(uninterrupted)
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=0.02), step


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_config_files_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.num_machines == 1 and config.mixed_precision == "no"  # precision is the trainers' to set
