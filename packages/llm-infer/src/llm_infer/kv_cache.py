"""KV cache: generation without a cache, with a dynamic, a static and a quantized cache, measured.

A decoder generates one token per step, and each step attends over every earlier position. Without a
cache, every step re-runs the whole sequence (quadratic work in the reply length); the KV cache keeps
each layer's keys and values of the positions already seen, so a step only runs the one new token and
reads the rest from memory, at the price of 2 x layers x heads x head_dim numbers per token and
sequence (Pope et al. 2022, "Efficiently Scaling Transformer Inference", arXiv:2211.05102).
transformers' `DynamicCache` grows by concatenation each step; the static cache (`StaticCache`)
pre-allocates the full length once, which is what lets `torch.compile` / CUDA graphs run the step; the
quantized cache (`QuantizedCache`, after KIVI, Liu et al. 2024, arXiv:2402.02750) stores keys and
values in fewer bits. Here its `fp8` backend is used (float8 e4m3 with one scale per layer's keys and
one per values, no extra package); the `quanto` and `hqq` backends need packages the project lacks.
Each cache greedily generates exactly N tokens (EOS suppressed) from the same prompt batch; the
command records tokens/s (the mean over `--repeats` timed runs), the bytes the cache holds after
generation, and whether the tokens equal the no-cache tokens. Each speedup over no cache is the ratio of
mean times, with a 95% interval bootstrapped over the repeated runs (`kv_speedup_lo`, `kv_speedup_hi`).

Memory: `cache_mb` is the sum of the cache's tensors after generation (fp8 storage plus scales for the
quantized cache; the whole pre-allocated buffer for the static one; 0 without a cache). `peak_mb` is
measured on CUDA only (`torch.cuda.max_memory_allocated` during one generate call, minus what was
allocated before it: cache plus activations). On CPU it is left empty: the CPU allocator keeps no
peak counter, and the profiler that can reconstruct one (see `bench-attn`) would distort the timing.
Sequence lengths past the model's `max_position_embeddings` (256 for the tiny profile's model; prompt +
256 new tokens exceeds it) are allowed: RoPE computes its angles for any position, and the static
cache is sized by transformers to prompt + N - 1 positions for each call.

    llm-infer bench-kv --model models/sft-full --data data/synth/sft --new_tokens 32,64,128,256 \\
        --metrics reports/metrics/infer_kv_cache.json --plots reports/plots/infer_kv_cache
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, write_metrics

from llm_infer.runtime import (
    device_name,
    encode,
    load_model,
    load_prompts,
    machine,
    parse_int_list,
    plain_log_labels,
    put_estimate,
    timed,
    write_plot,
    write_table,
)

logger = logging.getLogger(__name__)
CACHES = ("none", "dynamic", "static", "quantized")
QUANTIZED_BACKEND = "fp8"
_COLUMNS = ("cache", "new_tokens", "batch_size", "status", "reason", "seconds", "tokens_per_s", "cache_mb",
            "peak_mb", "matches_no_cache", "token_agreement")


@dataclass
class KVCacheConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Model folder (or hub id) to generate with."})
    data: str = field(
        default="data/synth/sft", metadata={"help": "Dataset folder whose test split gives the prompt batch."}
    )
    new_tokens: str = field(
        default="32,64,128,256", metadata={"help": "Comma list of generated lengths (exactly this many tokens)."}
    )
    caches: str = field(default=",".join(CACHES), metadata={"help": f"Comma list of: {', '.join(CACHES)}."})
    batch_size: int = field(default=1, metadata={"help": "Prompts generated together (the test split's first ones)."})
    repeats: int = field(
        default=3,
        metadata={"help": "Timed runs per cache and length: their mean is reported, their spread gives each "
                  "speedup's 95% interval (needs >= 2)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed set before each run (decoding is greedy)."})
    metrics: str = field(default="", metadata={"help": "Flat metrics JSON (kv_speedup, ...); '' = skip."})
    plots: str = field(
        default="",
        metadata={"help": "Folder for kv_cache.csv, kv_cache_tokens_per_s.png, kv_cache_memory.png; '' = skip."},
    )

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("model must be a model folder or a hub id, got ''")
        self.length_list()
        names = self.cache_list()
        unknown = [c for c in names if c not in CACHES]
        if unknown or not names:
            raise ValueError(f"caches: unknown {unknown or self.caches!r}; choose from: {', '.join(CACHES)}")
        for name in ("batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def length_list(self) -> list[int]:
        return parse_int_list("new_tokens", self.new_tokens)

    def cache_list(self) -> list[str]:
        return list(dict.fromkeys(c.strip() for c in self.caches.split(",") if c.strip()))


def cache_kwargs(cache: str) -> dict:
    """The `generate` keywords selecting one cache kind."""
    return {
        "none": {"use_cache": False},
        "dynamic": {"use_cache": True, "cache_implementation": "dynamic"},
        # On CUDA, generate() torch.compiles the step whenever the cache is static, and every new length
        # recompiles: on an H200 the 12 runs slowed from 1.4 s to 10 s each. The bench measures the cache
        # itself, the same way on every device; compiling is a separate technique.
        "static": {"use_cache": True, "cache_implementation": "static", "disable_compile": True},
        "quantized": {"use_cache": True, "cache_implementation": "quantized",
                      "cache_config": {"backend": QUANTIZED_BACKEND}},
    }[cache]


def tensor_bytes(obj, seen: set[int] | None = None) -> int:
    """Bytes of every distinct tensor reachable from `obj` (a cache, its layers, tuples of storage + scale)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o, seen) for o in obj.values())
    layers = getattr(obj, "layers", None)
    if isinstance(layers, (list, tuple)):
        return sum(tensor_bytes(vars(layer), seen) for layer in layers)
    return 0


def _generate(model, batch, cache: str, n: int, pad_id: int, seed: int, returns: bool = False):
    import torch

    # A StaticCache is sized max(this call, every earlier static call) via a private attribute on the model;
    # dropping it sizes each cache to its own call, so cache_mb is that length's and not the longest one's.
    model.__dict__.pop("_previous_max_cache_length", None)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(
            **batch, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=pad_id,
            return_dict_in_generate=returns, **cache_kwargs(cache),
        )


def _unavailable(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def _peak_tracker(device: str):
    """(wrap(fn) -> fn that records its CUDA peak above the memory in use before it, last peak in MiB)."""
    import torch

    state = {"peak_mb": math.nan}

    def wrap(fn):
        if device != "cuda":
            return fn

        def run():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            out = fn()
            torch.cuda.synchronize()
            state["peak_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
            return out

        return run

    return wrap, state


def run_kv_cache(cfg: KVCacheConfig) -> Path:
    from tqdm.auto import tqdm

    model, tokenizer = load_model(cfg.model)
    rows = load_prompts(cfg.data, "test")
    if len(rows) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(rows)} prompts of {cfg.data}/test.jsonl")
    device = device_name()
    batch = encode(tokenizer, [r["prompt"] for r in rows[:cfg.batch_size]], model.device)
    prompt_len = batch["input_ids"].shape[1]
    lengths, caches = cfg.length_list(), cfg.cache_list()
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and prompt_len + lengths[-1] > limit:
        logger.info("prompt %d + %d new tokens exceeds max_position_embeddings %d: RoPE extrapolates, fine for "
                    "timing", prompt_len, lengths[-1], limit)
    wrap, peak = _peak_tracker(device)
    tokens, table, unavailable = {}, [], {}
    runs = {}  # (cache, new tokens) -> seconds of each timed run
    pad_id = tokenizer.pad_token_id
    for cache, n in tqdm([(c, n) for c in caches for n in lengths], desc="cache x length", unit="run"):
        if cache in unavailable:
            continue
        try:
            # Untimed first run: warm-up, and the one that returns the cache to weigh and the tokens to compare.
            out = _generate(model, batch, cache, n, pad_id, cfg.seed, returns=True)
        except (ImportError, RuntimeError, NotImplementedError, ValueError, TypeError) as e:
            unavailable[cache] = _unavailable(e)
            logger.warning("%s cache: unavailable: %s", cache, unavailable[cache])
            table.append({**dict.fromkeys(_COLUMNS, ""), "cache": cache, "batch_size": cfg.batch_size,
                          "status": "unavailable", "reason": unavailable[cache]})
            continue
        new = out.sequences[:, prompt_len:]
        if new.shape[1] != n:
            raise RuntimeError(f"{cache} cache generated {new.shape[1]} tokens, expected {n}")
        tokens[cache, n] = new.cpu()
        cache_mb = tensor_bytes(out.past_key_values) / 2**20 if out.past_key_values is not None else 0.0
        del out
        _, runs[cache, n] = timed(wrap(lambda c=cache, n=n: _generate(model, batch, c, n, pad_id, cfg.seed)),
                                  device, cfg.repeats)
        seconds = statistics.fmean(runs[cache, n])
        table.append({"cache": cache, "new_tokens": n, "batch_size": cfg.batch_size, "status": "ok", "reason": "",
                      "seconds": seconds, "tokens_per_s": n * cfg.batch_size / seconds, "cache_mb": cache_mb,
                      "peak_mb": "" if math.isnan(peak["peak_mb"]) else peak["peak_mb"], "matches_no_cache": "",
                      "token_agreement": ""})
    for row in table:
        ref = tokens.get(("none", row["new_tokens"]))
        if row["status"] != "ok" or ref is None or row["cache"] == "none":
            continue
        mine = tokens[row["cache"], row["new_tokens"]]
        row["matches_no_cache"] = int(bool((mine == ref).all()))
        row["token_agreement"] = float((mine == ref).float().mean())
        if not row["matches_no_cache"]:
            logger.warning("%s cache, %d tokens: %.0f%% of tokens equal the no-cache ones", row["cache"],
                           row["new_tokens"], 100 * row["token_agreement"])
    metrics = _metrics(table, runs, cfg, lengths[-1], prompt_len)
    for row in table:
        if row["status"] == "ok":
            logger.info("%-9s %4d tokens: %8.1f tokens/s, cache %.3f MB", row["cache"], row["new_tokens"],
                        row["tokens_per_s"], row["cache_mb"])
    if cfg.plots:
        with atomic_dir(cfg.plots) as tmp:
            write_table(tmp / "kv_cache.csv", table)
            write_plot(tmp / "kv_cache_tokens_per_s.png", lambda ax: _draw(ax, table, "tokens_per_s", cfg))
            write_plot(tmp / "kv_cache_memory.png", lambda ax: _draw(ax, table, "cache_mb", cfg))
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.plots or cfg.metrics or ".")


def _metrics(table: list[dict], runs: dict, cfg: KVCacheConfig, longest: int, prompt_len: int) -> dict:
    from llm_eval.stats import speedup_ci

    at = {r["cache"]: r for r in table if r["status"] == "ok" and r["new_tokens"] == longest}
    metrics = {"max_new_tokens": longest, "batch_size": cfg.batch_size, "prompt_tokens": prompt_len}
    for cache, row in at.items():
        metrics[f"{cache}_tokens_per_s"] = row["tokens_per_s"]
        if cache != "none":
            metrics[f"{cache}_cache_mb"] = row["cache_mb"]
        if row["matches_no_cache"] != "":
            metrics[f"{cache}_matches_no_cache"] = row["matches_no_cache"]
        if row["peak_mb"] != "":
            metrics[f"{cache}_peak_mb"] = row["peak_mb"]
    if "none" in at:
        for cache, key in (("dynamic", "kv_speedup"), ("static", "static_speedup"),
                           ("quantized", "quantized_speedup")):
            if cache in at:  # same tokens both ways: the ratio of mean times is the tokens/s ratio
                put_estimate(metrics, key, speedup_ci(runs["none", longest], runs[cache, longest]))
    return metrics


def _draw(ax, table: list[dict], key: str, cfg: KVCacheConfig) -> None:
    for cache in cfg.cache_list():
        points = [(r["new_tokens"], r[key]) for r in table if r["cache"] == cache and r["status"] == "ok"]
        if points:
            # Dashed static: its bytes equal the dynamic cache's, and the lines would hide each other.
            ax.plot(*zip(*points, strict=True), marker="o", label=cache, linestyle="--" if cache == "static" else "-")
    if key == "tokens_per_s":
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis)
        ax.set_ylabel("generated tokens / s (log)")
    else:
        ax.set_ylabel("KV cache after generation (MiB)")
    ax.set_xlabel("generated tokens")
    ax.set_title(f"KV cache, batch {cfg.batch_size}: {machine()}", fontsize=7)
    ax.legend()
