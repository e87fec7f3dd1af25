"""llm-compressor's oneshot recipes (GPTQ, AWQ, SparseGPT, Wanda), run in their own environment.

llm-compressor 0.14 pins transformers, torch and compressed-tensors below the workspace's versions, so it
runs in the environment locked in `llmcompressor_env/` (built on first use by `uv`), in a subprocess that
reads the model folder and a calibration file and writes the compressed folder. What it writes loads in
this environment with `from_pretrained` (compressed-tensors decompresses it), so every later stage reads
it like any other model folder.
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

from llm_data.io import read_jsonl, split_file

logger = logging.getLogger(__name__)
ENV_PROJECT = Path(__file__).parent / "llmcompressor_env"
ENV_VAR = "LLM_COMPRESS_LLMCOMPRESSOR_ENV"


def environment_dir() -> Path:
    """Where the llm-compressor environment lives: $LLM_COMPRESS_LLMCOMPRESSOR_ENV, else beside this one's."""
    return Path(os.environ.get(ENV_VAR) or Path(sys.prefix).parent / ".venv-llmcompressor")


def linear_layers(model) -> dict[str, object]:
    """The linear layers a recipe compresses: every nn.Linear but the output head (tied to the embeddings
    here, and the most sensitive layer to rounding)."""
    import torch

    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}


def input_features(name: str) -> dict[str, int]:
    """Input width of each layer `linear_layers` returns, from the config alone (built on the meta device,
    so bad settings fail before any weight loads)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name))
    return {layer: module.in_features for layer, module in linear_layers(model).items()}


def model_reference(name: str) -> str:
    """How the llm-compressor process names the model: a local folder by absolute path (it runs from another
    directory), a hub id as it is (read from the hub cache; the process runs offline)."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def _first_row_keys(path: Path) -> set[str]:
    """The fields of the file's first row, which say its shape (the full read then checks every row)."""
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first) if first else {}
    except json.JSONDecodeError:
        read_jsonl(path, {})  # raises the error with its line number
        raise
    return set(row) if isinstance(row, dict) else set()


def calibration_texts(data: str, tokenizer, n: int, seed: int) -> list[str]:
    """`n` rows of a dataset folder's train split, shuffled by `seed`, as the model reads them.

    SFT rows ({"prompt", "completion"} or {"messages"}) go through the chat template, so the activations
    the recipe sees are the served ones; pre-training rows ({"text"}) are taken as they are.
    """
    import random

    path = split_file(data, "train")
    keys = _first_row_keys(path)
    if "messages" in keys:
        rows = read_jsonl(path, {"messages": list})
        conversations = [r["messages"] for r in rows]
    elif {"prompt", "completion"} <= keys:
        rows = read_jsonl(path, {"prompt": str, "completion": str})
        conversations = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
                         for r in rows]
    elif "text" in keys:
        conversations = None
        rows = read_jsonl(path, {"text": str})
    else:
        raise ValueError(f"{path}:1: calibration rows need a 'text' field, 'prompt' and 'completion', or "
                         f"'messages'; found {sorted(keys) or 'none'}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    order = order[:n]
    if conversations is None:
        return [rows[i]["text"] for i in order]
    if not tokenizer.chat_template:
        return [" ".join(m["content"] for m in conversations[i]) for i in order]
    return [tokenizer.apply_chat_template(conversations[i], tokenize=False) for i in order]


def run_oneshot(request: dict, texts: list[str]) -> float:
    """Run one recipe (`request`, see `llmcompressor_env/run_oneshot.py`) on `texts`; the seconds it took."""
    uv = shutil.which("uv")
    if uv is None:
        raise FileNotFoundError(f"{request['method']} runs llm-compressor through uv, which is not on PATH; "
                                "`pip install uv`")
    with tempfile.TemporaryDirectory(prefix="llm-compress-calibration-") as work:
        calibration = Path(work) / "calibration.jsonl"
        calibration.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        request = {**request, "calibration": str(calibration)}
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
        env.update(UV_PROJECT_ENVIRONMENT=str(environment_dir()), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1")
        if not environment_dir().is_dir():
            logger.warning("building the llm-compressor environment in %s (first use: minutes)", environment_dir())
        command = [uv, "run", "--project", str(ENV_PROJECT), "--locked", "--quiet", "python",
                   str(ENV_PROJECT / "run_oneshot.py"), json.dumps(request)]
        logger.info("%s: %s", request["method"], " ".join(command[:-1]))
        # stderr (llm-compressor's progress) goes to the terminal; stdout carries the result line.
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llm-compressor {request['method']} failed with exit code {proc.returncode} "
                           "(its error is printed above)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return float(json.loads(lines[-1])["seconds"])
