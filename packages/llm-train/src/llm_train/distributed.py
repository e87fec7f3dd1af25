"""Multi-process training with accelerate: one command, N processes, the same global batch.

`--num_processes N` reruns a training command as N workers under `accelerate launch`: PyTorch's
DistributedDataParallel (Li et al. 2020, arXiv:2006.15704) keeps a whole model in every process, gives
each 1/N of every global batch and averages the gradients (all-reduce) before each optimizer step, so
the run follows the single-process schedule. Workers talk over NCCL on CUDA and gloo on CPU.
`--accelerate_config FILE` launches with an accelerate config file instead, such as FSDP (Zhao et al.
2023, arXiv:2304.11277) or DeepSpeed ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054), which shard
parameters, gradients and optimizer state for models that do not fit one device
(`packages/llm-train/accelerate/`).

    llm-train pretrain --num_processes 2 ...         # the same as running it under accelerate launch
    LLM_LAB_NUM_PROCESSES=2 invoke path --name fast  # every trainer of a path
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile

import yaml

# The default of every trainer's --num_processes, so `invoke path --processes N` reaches each stage
# without a flag in dvc.yaml. DVC does not track it, as it does not track the device.
PROCESSES_ENV = "LLM_LAB_NUM_PROCESSES"


def default_processes() -> int:
    value = os.environ.get(PROCESSES_ENV, "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{PROCESSES_ENV}={value!r}: set it to a whole number of processes, e.g. 2") from None


def world_size() -> int:
    """Processes in this run (torchrun and `accelerate launch` set WORLD_SIZE; 1 outside them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the process that writes the run's outputs (rank 0, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def is_worker() -> bool:
    """True inside a process started by a distributed launcher."""
    return "LOCAL_RANK" in os.environ


def _free_port() -> int:
    # Two launches at once (tests, parallel stages) must not both take torchrun's default port 29500.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(cfg, module: str, command: str, config_file: str) -> list[str]:
    """The `accelerate launch` command line that runs `python -m <module> <command> --config <file>`."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
              "--num_machines", "1", "--main_process_port", str(_free_port())]
    if cfg.accelerate_config:
        launch += ["--config_file", cfg.accelerate_config]
    else:
        # accelerate's DDP launcher is named --multi_gpu; without CUDA its workers use gloo on CPU.
        # Mixed precision is the Trainer's to set (--precision), not the launcher's.
        launch += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launch, "-m", module, command, "--config", config_file]


def relaunch(cfg, module: str, command: str) -> bool:
    """With `cfg.num_processes` > 1 outside a launcher, run the command as that many workers under
    `accelerate launch` and return True when they have finished; otherwise return False and let the
    caller train. The workers read this config from a YAML file, so they run exactly what was parsed
    here; a failed worker's exit code becomes this process's."""
    if is_worker():
        # trl maps in-memory datasets in the main process first, and the other workers then look for
        # that cache file in the main process's own temporary folder, which they cannot open. Each
        # worker maps its own copy instead (the data are small next to training).
        from datasets import disable_caching

        disable_caching()
        return False
    if cfg.num_processes <= 1:
        return False
    with tempfile.NamedTemporaryFile("w", prefix="llm-lab-", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f)
    try:
        code = subprocess.run(launch_command(cfg, module, command, f.name)).returncode
    finally:
        os.unlink(f.name)
    if code:
        raise SystemExit(code)
    return True
