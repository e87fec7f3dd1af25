"""Invoke tasks: thin wrappers that run uv, dvc, pytest or a package CLI. `invoke --list` shows them."""

from __future__ import annotations

import time

from invoke import Exit, task

# Learning paths as data: the DVC stages that make up each preset (dvc repro runs their upstream too).
# Only presets whose stages exist are offered.
PRESETS = {
    "fast": {
        "stages": ["report@fast"],
        "about": "data, tokenizer, pre-training, SFT (full, LoRA, QLoRA), int8/NF4 quantization, eval, report",
    },
}


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise Exit(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}", code=2)
    return PRESETS[name]


@task(help={"name": f"Learning path to run: {', '.join(PRESETS)}", "force": "Rerun every stage (dvc repro -f)"})
def path(c, name="fast", force=False):
    """Run a learning path end to end through DVC (only changed stages rerun), then print its report path."""
    preset = _preset(name)
    start = time.perf_counter()
    c.run(f"dvc repro {'-f ' if force else ''}{' '.join(preset['stages'])}")
    print(f"path {name}: done in {time.perf_counter() - start:.0f} s; report: reports/{name}.md, reports/{name}.html")


@task(help={"name": "A dvc.yaml stage, e.g. pretrain or sft@lora", "single": "Run only this stage, not its upstream"})
def stage(c, name, single=False):
    """Run one pipeline stage (and, unless --single, whatever it depends on that changed)."""
    c.run(f"dvc repro {'--single-item ' if single else ''}{name}")


@task(help={"name": f"Preset whose report to rebuild: {', '.join(PRESETS)}"})
def report(c, name="fast"):
    """Rebuild reports/<name>.md and .html from the metrics already in reports/metrics."""
    _preset(name)
    c.run(f"dvc repro --single-item report@{name}")


@task
def presets(c):
    """List the learning paths and what each runs."""
    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset['about']}")


@task
def metrics(c):
    """Show every stage's metrics (dvc metrics show)."""
    c.run("dvc metrics show")


PACKAGES = ["llm-data", "llm-train", "llm-compress", "llm-eval"]


@task(help={"fast": "Skip the slow end-to-end tests", "package": "Test one package alone, e.g. llm-train"})
def test(c, fast=False, package=""):
    """Run the tests (what CI runs): each package alone in its own env context, then the cross-package
    tests, including the slow end-to-end fast path unless --fast."""
    marker = " -m 'not slow'" if fast else ""
    for name in [package] if package else PACKAGES:
        c.run(f"uv run --package {name} pytest packages/{name}/tests{marker}")
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
