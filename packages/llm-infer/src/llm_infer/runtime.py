"""What every llm-infer command shares: loading a model folder, the prompts it runs on, timing, outputs."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llm_data.io import atomic_dir, require_model_folder

logger = logging.getLogger(__name__)
DTYPES = ("float32", "bfloat16", "float16")
_PRODUCER = "llm-train sft --method full --out {0}` (or `llm-compress distill --out {0}"


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def machine() -> str:
    """The machine in words, for benchmark outputs: GPU name, or CPU model, the vector extensions torch's
    kernels use and the cores it uses. Two CPUs sold under one name ("AMD EPYC") ran the tiny profile 2x
    apart, AVX2 against AVX-512, and bitsandbytes takes another 4-bit kernel where AVX512-BF16 exists."""
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = torch.backends.cpu.get_cpu_capability() + ("-BF16" if "avx512_bf16" in flags else "")
    return f"{cpu} ({vector}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def require_model(name: str) -> str:
    """A local folder must hold a transformers model (config.json); anything else must look like a hub id."""
    return require_model_folder(name, _PRODUCER.format(name))


def load_model(name: str, attn_implementation: str | None = None, dtype: str = "float32", device: str = ""):
    """(model, tokenizer) in eval mode; the tokenizer pads on the left, as generation needs."""
    import torch
    from llm_eval.run import load_tokenizer
    from transformers import AutoModelForCausalLM

    name = require_model(name)
    kwargs = {"dtype": getattr(torch, dtype), "device_map": {"": device or device_name()}}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tokenizer = load_tokenizer(name, padding_side="left")
    model.eval()
    return model, tokenizer


def load_prompts(data: str, split: str = "test", max_samples: int = 0, categories: str = "") -> list[dict]:
    """Rows with `prompt`, `answer` (and `category`) from an SFT dataset folder (llm-eval's loader),
    only those of the comma-listed `categories` when given ('' = all)."""
    from llm_eval.run import load_rows

    wanted = {c.strip() for c in categories.split(",") if c.strip()}
    rows = [r for r in load_rows(data, split) if not wanted or r.get("category") in wanted]
    if not rows:
        raise ValueError(f"{data}/{split}.jsonl: no rows in categories {sorted(wanted)}")
    return rows[:max_samples] if max_samples else rows


def render(tokenizer, prompts: Sequence[str]) -> tuple[list[str], bool]:
    """The prompts as the model was trained to see them (chat template + generation prompt)."""
    from llm_eval.run import render_prompts

    return render_prompts(tokenizer, list(prompts))


def eos_ids(model, tokenizer) -> set[int]:
    """The ids that end a reply: the model's generation config's, else the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos) if isinstance(eos, list) else {eos}


def encode(tokenizer, prompts: Sequence[str], device: str):
    """Chat-rendered, left-padded batch of prompts as tensors on `device`."""
    texts, templated = render(tokenizer, prompts)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)


def sync(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are real."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int = 1) -> tuple[object, list[float]]:
    """(last result, wall seconds of each of `repeats` runs).

    Callers report the mean of the runs and, from their spread, a 95% interval on every ratio they
    state (`llm_eval.stats.speedup_ci`): one best-of number hides how much the timing moves run to run.
    """
    seconds, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return result, seconds


def put_estimate(metrics: dict, key: str, estimate) -> None:
    """Add `key` and its 95% interval `<key>_lo`, `<key>_hi` to flat metrics (`llm_eval.stats.to_metrics`:
    without an interval, or with an infinite bound, only `key` is written)."""
    from llm_eval.stats import to_metrics

    metrics.update(to_metrics(key, estimate))


def rate_ratio_ci(work_a: float, seconds_a: Sequence[float], work_b: float, seconds_b: Sequence[float]):
    """(work_a / mean seconds_a) / (work_b / mean seconds_b): throughput of A over B from repeated runs
    of a fixed amount of work each (tokens that do not change run to run), with its 95% interval."""
    from llm_eval.stats import Estimate, speedup_ci

    scale = work_a / work_b
    speedup = speedup_ci(seconds_b, seconds_a)
    return Estimate(scale * speedup.value, scale * speedup.lo, scale * speedup.hi)


def paired_rate_ratio_ci(work_a: Sequence[float], seconds_a: Sequence[float], work_b: Sequence[float],
                         seconds_b: Sequence[float]):
    """(sum work_a / sum seconds_a) / (sum work_b / sum seconds_b) over the same items (e.g. prompt batches
    decoded both ways), resampling whole items: tokens/s of A over B with its 95% interval."""
    from llm_eval.stats import bootstrap

    return bootstrap([work_a, seconds_a, work_b, seconds_b], lambda wa, sa, wb, sb: (wa / sa) / (wb / sb))


def write_table(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """A CSV with one row per measurement (a DVC plot source), written atomically."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_plot(path: str | Path, draw: Callable) -> None:
    """A PNG drawn by `draw(ax)` with matplotlib's non-interactive backend, written atomically."""
    if not path:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def parse_int_list(name: str, text: str, example: str = "32,64,128") -> list[int]:
    """A comma list of positive ints, sorted and deduplicated; a bad item is a one-line error naming `name`."""
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"{name}: {item!r} is not an integer; pass a comma list like {example}") from None
        if value < 1:
            raise ValueError(f"{name}: {value} must be >= 1")
        values.append(value)
    if not values:
        raise ValueError(f"{name}: empty; pass a comma list of positive integers like {example}")
    return sorted(set(values))


def plain_log_labels(axis) -> None:
    """Label a log axis with plain numbers (400, not 4 x 10^2), minor ticks only at 2x and 5x a power of 10."""
    from matplotlib.ticker import FuncFormatter

    def minor(value, _):
        digit = round(value / 10 ** math.floor(math.log10(value) + 1e-9)) if value > 0 else 0
        return f"{value:g}" if digit in (2, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


__all__ = [
    "DTYPES", "atomic_dir", "device_name", "encode", "eos_ids", "load_model", "load_prompts", "machine",
    "paired_rate_ratio_ci", "parse_int_list", "plain_log_labels", "put_estimate", "rate_ratio_ci", "render",
    "require_model", "sync", "timed", "write_plot", "write_table",
]
