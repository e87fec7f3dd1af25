"""Kill a training run on purpose, to watch `--resume` continue it: fault injection at a fixed point.

`python -m llm_train.faults --after_step N <command> <args...>` runs an llm-lab training command
(`llm-train`, `llm-align` or `llm-compress`: anything trained by a transformers `Trainer`, trl's PPO
loop included) and SIGKILLs it right after the Trainer has written the first checkpoint at a step >= N.
The kill comes at that fixed point, not after a timer, so it can never race the run: a test that
slept and then killed passed on one machine and failed on a faster one. Rerun the same command with
`--resume true` and it continues from that checkpoint. With `--num_processes` > 1, the workers that
`accelerate launch` starts are new interpreters, so a `sitecustomize` module on their PYTHONPATH arms
them too; each worker dies once every rank's RNG state is in the checkpoint, so it is whole.

    python -m llm_train.faults --after_step 100 llm-train pretrain --out models/base ...
    llm-train pretrain --out models/base ... --resume true
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from llm_train.loop import checkpoint_folder

ENV = "LLM_LAB_KILL_AFTER_STEP"  # read by the workers' sitecustomize
SITE = Path(__file__).parent / "faults_site"
# The metrics a resumed run may report otherwise than an uninterrupted one: the clock's measurements.
TIMINGS = frozenset({"train_seconds", "tokens_per_second", "model_flops_per_second", "mfu"})


def arm(after_step: int) -> None:
    """Make this process SIGKILL itself once the Trainer has fully saved a checkpoint at step >= after_step."""
    from transformers import Trainer

    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.state.global_step >= after_step:
            folder = checkpoint_folder(self.args.output_dir, self.state.global_step)
            ranks = self.args.world_size
            while ranks > 1 and not all((folder / f"rng_state_{i}.pth").is_file() for i in range(ranks)):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_checkpoint = save_then_die


def arm_from_env() -> None:
    """`arm` with the step in $LLM_LAB_KILL_AFTER_STEP, if it is set (the workers' sitecustomize)."""
    if os.environ.get(ENV):
        arm(int(os.environ[ENV]))


def run_killed(after_step: int, command: str, args: list[str]) -> subprocess.CompletedProcess:
    """`python -m llm_train.faults --after_step N command args` in a child process, its output captured and
    tqdm quiet; the caller checks how it ended (SIGKILLed with one process, a failed launcher with more)."""
    return subprocess.run([sys.executable, "-m", "llm_train.faults", "--after_step", str(after_step), command,
                           *args], env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True)


def resume_differences(uninterrupted: dict, resumed: dict) -> dict[str, tuple]:
    """Where a resumed run's metrics differ from an uninterrupted run's: {key: (uninterrupted, resumed)}, with
    None for a key one side lacks (timings included); the values of `TIMINGS` may differ. Empty when
    `--resume` continued the run exactly."""
    return {key: (uninterrupted.get(key), resumed.get(key)) for key in sorted(uninterrupted.keys() | resumed.keys())
            if key not in uninterrupted or key not in resumed
            or (key not in TIMINGS and uninterrupted[key] != resumed[key])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_train.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--after_step", type=int, required=True,
                        help="Die after the first checkpoint at this step or later (a multiple of --save_steps).")
    parser.add_argument("command", help="The llm-lab console script to run: llm-train, llm-align or llm-compress.")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="Its arguments, as on its own command line.")
    ns = parser.parse_args(argv)
    if ns.after_step < 1:
        parser.error(f"--after_step must be >= 1, got {ns.after_step}")
    scripts = entry_points(group="console_scripts", name=ns.command)
    if not scripts or not ns.command.startswith("llm-"):
        parser.error(f"{ns.command!r} is not an llm-lab command; choose llm-train, llm-align or llm-compress")
    os.environ[ENV] = str(ns.after_step)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
    arm(ns.after_step)
    return next(iter(scripts)).load()(ns.args)


if __name__ == "__main__":
    sys.exit(main())
