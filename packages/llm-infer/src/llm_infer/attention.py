"""Attention kernels: eager vs PyTorch SDPA vs FlashAttention-2, time and peak memory against length.

Eager attention computes softmax(QK^T / sqrt(d)) V in separate ops, materialising the
(batch, heads, T, T) score matrix, so its memory grows quadratically with the sequence length T.
PyTorch's fused `scaled_dot_product_attention` (SDPA) picks a kernel: the flash-style ones (CUDA
flash / memory-efficient, and a CPU flash kernel for the causal, mask-free case) never store the
full matrix. FlashAttention (Dao et al. 2022, arXiv:2205.14135) computes exact attention in tiles
held in on-chip SRAM with an online softmax, so memory is linear in T and HBM traffic drops;
FlashAttention-2 (Dao 2023, arXiv:2307.08691) re-partitions the work across thread blocks and warps
for about 2x more speed. `flash_attention_2` needs a CUDA GPU, the `flash-attn` package and 16-bit
weights; otherwise it is reported unavailable with the reason. Each implementation loads the model
once (`attn_implementation=...`) and times one prefill forward (no cache) on seeded random token ids
of each length, `--repeats` times: the mean is reported, and each speedup over eager (the ratio of mean
times) gets a 95% interval bootstrapped over the repeats. Logits are compared with the first
implementation's (max abs difference).

Peak memory is measured, not computed: on CUDA, `torch.cuda.max_memory_allocated` during the
forward minus what was allocated before it (the weights and the inputs); on CPU, a separate forward
under `torch.profiler` with `profile_memory=True`, whose allocation and free events (in time order)
give the peak of the running sum of bytes allocated by torch during the forward (allocations made
by oneDNN / BLAS outside torch's allocator are not seen). Both include the logits (linear in T).

    llm-infer bench-attn --model models/sft-full --seq_lens 64,128,256,512 --batch_size 4 \\
        --metrics reports/metrics/infer_attention.json --plots reports/plots/infer_attention
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, write_metrics

from llm_infer.runtime import (
    DTYPES,
    device_name,
    load_model,
    machine,
    parse_int_list,
    plain_log_labels,
    put_estimate,
    require_model,
    timed,
    write_plot,
    write_table,
)

logger = logging.getLogger(__name__)
IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
_COLUMNS = ("implementation", "seq_len", "batch_size", "dtype", "status", "reason", "seconds", "tokens_per_s",
            "peak_mb", "max_logit_diff")


@dataclass
class AttentionConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Model folder (or hub id) to run forward."})
    seq_lens: str = field(default="64,128,256,512", metadata={"help": "Comma list of sequence lengths (tokens)."})
    batch_size: int = field(default=4, metadata={"help": "Sequences per forward pass."})
    implementations: str = field(
        default=",".join(IMPLEMENTATIONS), metadata={"help": f"Comma list of: {', '.join(IMPLEMENTATIONS)}."}
    )
    repeats: int = field(
        default=3,
        metadata={"help": "Timed forward passes per length: their mean is reported, their spread gives each "
                  "speedup's 95% interval (needs >= 2)."},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": f"Weights dtype: auto (bfloat16 on CUDA, float32 on CPU) or {', '.join(DTYPES)}; "
                  "flash_attention_2 needs a 16-bit one."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random token ids."})
    metrics: str = field(default="", metadata={"help": "Flat metrics JSON (sdpa_speedup, ...); '' = skip."})
    plots: str = field(
        default="",
        metadata={"help": "Folder for attention.csv, attention_time.png, attention_memory.png; '' = skip."},
    )

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("model must be a model folder or a hub id, got ''")
        parse_int_list("seq_lens", self.seq_lens)
        names = self.implementation_list()
        unknown = [n for n in names if n not in IMPLEMENTATIONS]
        if unknown or not names:
            raise ValueError(f"implementations: unknown {unknown or self.implementations!r}; "
                             f"choose from: {', '.join(IMPLEMENTATIONS)}")
        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"dtype: unknown {self.dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
        for name in ("batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def length_list(self) -> list[int]:
        return parse_int_list("seq_lens", self.seq_lens)

    def implementation_list(self) -> list[str]:
        return list(dict.fromkeys(n.strip() for n in self.implementations.split(",") if n.strip()))

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if device_name() == "cuda" else "float32"


def flash_unavailable_reason(dtype: str) -> str:
    """'' when flash_attention_2 can run here, else why not."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    if not torch.cuda.is_available():
        return "no CUDA GPU (flash_attention_2 runs on CUDA only)"
    if not is_flash_attn_2_available():
        return "flash-attn not installed (uv sync --extra flash-attn; needs nvcc)"
    if dtype not in ("float16", "bfloat16"):
        return f"flash_attention_2 needs float16 or bfloat16 weights, got {dtype} (pass --dtype bfloat16)"
    return ""


def cpu_peak_bytes(fn) -> int:
    """Peak of the bytes torch's CPU allocator holds while `fn` runs, above what it held before, in bytes.

    The profiler logs every allocation (+bytes) and free (-bytes) with a timestamp; the running sum of
    those in time order is the memory `fn` added, and its maximum is the peak.
    """
    import os

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    # Kineto otherwise logs a misleading "gpuGetDeviceCount failed" error line on machines without a GPU.
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # kineto_results is the profiler's raw event list: the only place memory events keep their time order.
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _cuda_peak_bytes(fn) -> int:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _unavailable(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def run_attention(cfg: AttentionConfig) -> Path:
    import torch
    from tqdm.auto import tqdm

    require_model(cfg.model)
    device, dtype, lengths = device_name(), cfg.resolved_dtype(), cfg.length_list()
    table, reference = [], {}
    runs = {}  # (implementation, length) -> seconds of each timed forward
    blank = dict.fromkeys(_COLUMNS, "")
    for impl in cfg.implementation_list():
        reason = flash_unavailable_reason(dtype) if impl == "flash_attention_2" else ""
        model = None
        if not reason:
            try:
                model, _ = load_model(cfg.model, attn_implementation=impl, dtype=dtype)
            except (ImportError, ValueError, RuntimeError) as e:
                reason = _unavailable(e)
        if reason:
            logger.warning("%s: unavailable: %s", impl, reason)
            table.append({**blank, "implementation": impl, "batch_size": cfg.batch_size, "dtype": dtype,
                          "status": "unavailable", "reason": reason})
            continue
        vocab = model.config.vocab_size
        for seq_len in tqdm(lengths, desc=impl, unit="length"):
            generator = torch.Generator().manual_seed(cfg.seed + seq_len)
            ids = torch.randint(0, vocab, (cfg.batch_size, seq_len), generator=generator).to(model.device)

            def forward(model=model, ids=ids):
                with torch.no_grad():
                    return model(input_ids=ids, use_cache=False).logits  # (B, T, V)

            logits = forward().float().cpu()  # warm-up, and the logits compared across implementations
            _, runs[impl, seq_len] = timed(forward, device, cfg.repeats)
            seconds = statistics.fmean(runs[impl, seq_len])
            peak = (_cuda_peak_bytes if device == "cuda" else cpu_peak_bytes)(forward)
            diff = float((logits - reference[seq_len]).abs().max()) if seq_len in reference else 0.0
            reference.setdefault(seq_len, logits)
            table.append({"implementation": impl, "seq_len": seq_len, "batch_size": cfg.batch_size, "dtype": dtype,
                          "status": "ok", "reason": "", "seconds": seconds,
                          "tokens_per_s": cfg.batch_size * seq_len / seconds, "peak_mb": peak / 2**20,
                          "max_logit_diff": diff})
            logger.info("%s T=%d: %.2f ms, peak %.2f MB, max |logit diff| %.2g", impl, seq_len, 1000 * seconds,
                        peak / 2**20, diff)
        del model
        _free(device)
    metrics = _metrics(table, runs, lengths)
    if cfg.plots:
        with atomic_dir(cfg.plots) as tmp:
            write_table(tmp / "attention.csv", table)
            write_plot(tmp / "attention_time.png", lambda ax: _draw(ax, table, "seconds", cfg, dtype))
            write_plot(tmp / "attention_memory.png", lambda ax: _draw(ax, table, "peak_mb", cfg, dtype))
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.plots or cfg.metrics or ".")


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Log-log slope between the two longest lengths: 1 = linear, 2 = quadratic growth."""
    points = sorted(p for p in points if p[1] > 0)
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (t0, m0), (t1, m1) = points[-2], points[-1]
    return math.log(m1 / m0) / math.log(t1 / t0)


def _metrics(table: list[dict], runs: dict, lengths: list[int]) -> dict:
    from llm_eval.stats import speedup_ci

    ok = [r for r in table if r["status"] == "ok"]
    longest = lengths[-1]
    at = {r["implementation"]: r for r in ok if r["seq_len"] == longest}
    flash_ok = any(r["implementation"] == "flash_attention_2" for r in ok)
    metrics = {"max_seq_len": longest, "flash_available": int(flash_ok)}
    for impl, row in at.items():
        metrics[f"{impl}_seconds"] = row["seconds"]
        metrics[f"{impl}_peak_mb"] = row["peak_mb"]
        exponent = growth_exponent([(r["seq_len"], r["peak_mb"]) for r in ok if r["implementation"] == impl])
        if exponent is not None:
            metrics[f"{impl}_memory_exponent"] = exponent
    if "eager" in at:
        for impl, key in (("sdpa", "sdpa_speedup"), ("flash_attention_2", "flash_speedup")):
            if impl in at:
                put_estimate(metrics, key, speedup_ci(runs["eager", longest], runs[impl, longest]))
    if ok:
        metrics["max_logit_diff"] = max(r["max_logit_diff"] for r in ok)
    return metrics


def _draw(ax, table: list[dict], key: str, cfg: AttentionConfig, dtype: str) -> None:
    for impl in cfg.implementation_list():
        points = [(r["seq_len"], r[key]) for r in table if r["implementation"] == impl and r["status"] == "ok"]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=impl)
    # Log-log axes turn T^k into a straight line of slope k: linear vs quadratic growth is read off directly.
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain_log_labels(ax.xaxis)
    plain_log_labels(ax.yaxis)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("forward time (s)" if key == "seconds" else "peak memory above weights (MiB)")
    ax.set_title(f"attention, batch {cfg.batch_size}, {dtype}: {machine()}", fontsize=7)
    ax.legend()
