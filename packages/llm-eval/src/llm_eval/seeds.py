"""Seed spread: how much each row and each comparison moves when only the training seed changes.

A bootstrap interval over test items says how much a score would move on another test set; it says
nothing about another *training run*. Small models are sensitive to initialisation and data order
(Dodge et al. 2020, arXiv:2002.06305, 'Fine-Tuning Pretrained Language Models: Weight Initializations,
Data Orders, and Early Stopping'), so the fast path is rerun on several seeds as DVC experiments
(`dvc exp run --queue -S seed=N`) and this command reads `dvc exp show --json`: per row the mean and
sample standard deviation of each metric, per comparison (full SFT vs base, LoRA and QLoRA vs full,
quantized vs fp32) its mean, sd and on how many seeds its sign held, and the issue's goals judged
on the means. `--suite gold` reads the exact-gold DPO run instead (`gold_<row>.json`: DPO on the SFT
policy's gold-labelled samples and everything it rests on, rerun per seed): the spread of its gold win
rate, pass rate and KL, and the win-rate goal judged on each seed by that seed's own interval.

    dvc exp show --json > reports/bench/seeds/exps.json
    llm-eval seeds --exps reports/bench/seeds/exps.json --experiments seed-0,seed-1,seed-2 \\
        --out reports/bench/seeds.json --md reports/bench/seeds.md
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_metrics

# (label, a, b, metric, kind): kind "diff" = a - b in points, "ratio" = a / b.
COMPARISONS = (
    ("full SFT minus base, exact match (points)", "sft_full", "base", "exact_match", "diff"),
    ("full SFT minus LoRA, exact match (points)", "sft_full", "sft_lora", "exact_match", "diff"),
    ("full SFT minus QLoRA, exact match (points)", "sft_full", "sft_qlora", "exact_match", "diff"),
    ("fp32 minus int8, exact match (points)", "sft_full", "int8", "exact_match", "diff"),
    ("fp32 minus NF4, exact match (points)", "sft_full", "nf4", "exact_match", "diff"),
    ("full SFT perplexity / base perplexity (x)", "sft_full", "base", "perplexity", "ratio"),
)

# suite -> (metrics file prefix, default rows, the row metrics whose spread is reported)
SUITES = {
    "fast": ("eval", "base,sft_full,sft_lora,sft_qlora,int8,nf4", ("exact_match", "perplexity")),
    "gold": ("gold", "sft_full,dpo_gold", ("win_rate", "gold_pass", "gold_score", "kl")),
}
GOLD_COMPARISONS = (("DPO minus SFT, gold pass rate (points)", "dpo_gold", "sft_full", "gold_pass", "diff"),)
GOLD_GOAL = ("dpo_gold", "win_rate", 70.0)  # DPO's gold win rate vs SFT >= 70%, judged on each seed


@dataclass
class SeedsConfig:
    exps: str = field(
        default="reports/bench/seeds/exps.json", metadata={"help": "Output of `dvc exp show --json`."}
    )
    experiments: str = field(
        default="seed-0,seed-1,seed-2", metadata={"help": "Comma list of experiment names to aggregate."}
    )
    suite: str = field(
        default="fast",
        metadata={"help": "fast: the fast path's rows (eval_<row>.json); gold: the exact-gold DPO run "
                  "(gold_<row>.json)."},
    )
    models: str = field(
        default="",
        metadata={"help": "Rows: each experiment needs reports/metrics/<eval|gold>_<row>.json (default: the "
                  "suite's: fast base,sft_full,sft_lora,sft_qlora,int8,nf4; gold sft_full,dpo_gold)."},
    )
    metrics_dir: str = field(default="reports/metrics", metadata={"help": "Where the rows' metrics live."})
    out: str = field(default="reports/bench/seeds.json", metadata={"help": "Flat metrics JSON."})
    md: str = field(default="reports/bench/seeds.md", metadata={"help": "Markdown section for docs/benchmarks.md."})

    def __post_init__(self):
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; choose one of: {', '.join(SUITES)}")
        self.models = self.models or SUITES[self.suite][1]
        if len(self.names) < 2:
            raise ValueError(f"experiments must name at least 2 runs to measure a spread, got {self.experiments!r}")
        if not self.rows:
            raise ValueError("models must list at least one row")

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.experiments.split(",") if n.strip()]

    @property
    def rows(self) -> list[str]:
        return [n.strip() for n in self.models.split(",") if n.strip()]


def _experiments(data: list) -> dict[str, dict]:
    """name -> that experiment's final {params, metrics} from `dvc exp show --json`."""
    found = {}
    for baseline in data:
        for exp in baseline.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs and revs[0].get("data"):
                found[exp.get("name") or revs[0].get("name")] = revs[0]["data"]
    return found


def load_runs(cfg: SeedsConfig) -> dict[str, dict]:
    """name -> {"seed": int, "rows": {row: metrics}} for each named experiment."""
    path = Path(cfg.exps)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (write it with `dvc exp show --json > {path}`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected the list that `dvc exp show --json` writes")
    found = _experiments(data)
    runs = {}
    for name in cfg.names:
        if name not in found:
            raise ValueError(f"{path}: no experiment {name!r} (found: {', '.join(sorted(found)) or 'none'}); "
                             f"run `invoke bench --only {'seeds' if cfg.suite == 'fast' else 'seeds_gold'}`")
        exp = found[name]
        rows = {}
        for row in cfg.rows:
            file = f"{cfg.metrics_dir}/{SUITES[cfg.suite][0]}_{row}.json"
            metrics = (exp.get("metrics") or {}).get(file, {}).get("data")
            if not metrics:
                raise ValueError(f"{path}: experiment {name!r} has no metrics {file}")
            rows[row] = metrics
        seed = (exp.get("params") or {}).get("params.yaml", {}).get("data", {}).get("seed")
        runs[name] = {"seed": seed, "rows": rows}
    return runs


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values),
            "min": min(values), "max": max(values)}


def aggregate(runs: dict[str, dict], rows: list[str], suite: str = "fast") -> dict[str, dict[str, float]]:
    """Flat groups: `<row>_<metric>` and comparison keys, each {mean, sd, min, max[, same_sign]}."""
    first = next(iter(runs.values()))["rows"]
    spread_metrics = SUITES[suite][2]
    out = {}
    for row in rows:
        keys = [k for k, v in first[row].items() if isinstance(v, int | float) and not k.endswith(("_lo", "_hi"))
                and (k in spread_metrics or suite == "fast" and k.startswith("exact_match"))]
        for key in keys:
            out[f"{row}_{key}"] = _spread([run["rows"][row][key] for run in runs.values()])
    for label, a, b, metric, kind in COMPARISONS if suite == "fast" else GOLD_COMPARISONS:
        if a not in rows or b not in rows:
            continue
        values = []
        for run in runs.values():
            x, y = run["rows"][a][metric], run["rows"][b][metric]
            values.append(x - y if kind == "diff" else x / y)
        null = 0.0 if kind == "diff" else 1.0
        spread = _spread(values)
        spread["same_sign"] = max(sum(v > null for v in values), sum(v < null for v in values))
        out[label] = spread
    return out


def goals(agg: dict[str, dict[str, float]], rows: list[str]) -> list[tuple[str, float | None, str, bool | None]]:
    """The issue's goals on the seed means: (label, value, target, met)."""

    def mean(key):
        return agg[key]["mean"] if key in agg else None

    out = []
    gain = mean("full SFT minus base, exact match (points)")
    out.append(("full SFT minus base, mean over seeds (points)", gain, ">= 40", None if gain is None else gain >= 40))
    cats = {k: v["mean"] for k, v in agg.items() if k.startswith("sft_full_exact_match_")}
    if cats:
        worst = min(cats, key=cats.get)
        out.append((f"worst category after full SFT ({worst.removeprefix('sft_full_exact_match_')}, mean EM)",
                    cats[worst], ">= 30", cats[worst] >= 30))
    sd = agg.get("sft_full_exact_match", {}).get("sd")
    out.append(("seed sd of full-SFT exact match (points)", sd, "<= 2", None if sd is None else sd <= 2))
    for label, limit in (("LoRA", 10), ("QLoRA", 15)):
        gap = mean(f"full SFT minus {label}, exact match (points)")
        out.append((f"{label} gap to full SFT, mean (points)", gap, f"<= {limit}",
                    None if gap is None else gap <= limit))
    ratio = mean("full SFT perplexity / base perplexity (x)")
    out.append(("perplexity after full SFT / base, mean (x)", ratio, "<= 2", None if ratio is None else ratio <= 2))
    return out


def gold_goals(runs: dict[str, dict]) -> list[tuple[str, float | None, str, bool | None]]:
    """DPO's gold win-rate goal on each seed, decided by that seed's interval (None: it straddles the target)."""
    row, metric, target = GOLD_GOAL
    out = []
    for run in runs.values():
        m = run["rows"].get(row, {})
        if metric not in m:
            continue
        lo, hi = m.get(f"{metric}_lo", m[metric]), m.get(f"{metric}_hi", m[metric])
        met = True if lo >= target else False if hi < target else None
        out.append((f"seed {run['seed']}: DPO gold win rate vs SFT (%), interval [{lo:.1f}, {hi:.1f}]", m[metric],
                    f">= {target:g}", met))
    return out


def gold_markdown(runs: dict[str, dict], agg: dict, rows: list[str], goal_rows: list) -> str:
    from llm_eval.report.card import machine

    seeds = ", ".join(str(r["seed"]) for r in runs.values())
    n = len(runs)
    lines = [
        "## Seed spread (DPO against the exact gold, training seed varied)", "",
        f"Everything the exact-gold DPO run rests on (pre-training, SFT, the SFT policy's sampled and "
        f"gold-labelled pairs, DPO, the greedy replies to the held-out sums) reran as DVC experiments on "
        f"training seeds {seeds} (same data), on {machine()}; mean ± sample sd over the {n} runs, [min, max]. "
        "Each seed's win rate is against its own SFT.", "",
        "| row | gold win rate vs SFT (%) | gold pass (%) | mean gold | KL to SFT (nats) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [_cell(agg.get(f"{row}_{key}"), digits) for key, digits in
                 (("win_rate", 1), ("gold_pass", 1), ("gold_score", 2), ("kl", 2))]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += _comparison_and_goal_lines(agg, GOLD_COMPARISONS, n, goal_rows, "not decided", 1)
    verdicts = {met for *_, met in goal_rows}
    if goal_rows:
        lines += ["", "The goal keeps one verdict on every seed." if len(verdicts) == 1 else
                  "The goal's verdict changes with the seed."]
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _cell(s: dict | None, digits: int) -> str:
    if s is None:
        return "—"
    return f"{_f(s['mean'], digits)} ± {_f(s['sd'], digits)} [{_f(s['min'], digits)}, {_f(s['max'], digits)}]"


def _comparison_and_goal_lines(agg: dict, comparisons: tuple, n: int, goal_rows: list, none_verdict: str,
                               digits: int) -> list[str]:
    """The comparisons' table (mean ± sd, [min, max], on how many seeds the sign held), then the goals'."""
    lines = ["", "| comparison | mean ± sd | [min, max] | same sign on |", "| --- | --- | --- | --- |"]
    for label, *_ in comparisons:
        if label in agg:
            s = agg[label]
            lines.append(f"| {label} | {_f(s['mean'], 2)} ± {_f(s['sd'], 2)} | [{_f(s['min'], 2)}, "
                         f"{_f(s['max'], 2)}] | {int(s['same_sign'])}/{n} seeds |")
    lines += ["", "| goal | value | target | verdict |", "| --- | --- | --- | --- |"]
    for label, value, target, met in goal_rows:
        verdict = none_verdict if met is None else ("met" if met else "missed")
        lines.append(f"| {label} | {_f(value, digits)} | {target} | {verdict} |")
    return lines


def markdown(runs: dict[str, dict], agg: dict, rows: list[str], goal_rows: list) -> str:
    seeds = ", ".join(str(r["seed"]) for r in runs.values())
    n = len(runs)
    lines = [
        "## Seed spread (fast path, training seed varied)", "",
        f"The fast path's training and evaluation reran as DVC experiments on training seeds {seeds} "
        f"(same data); mean ± sample sd over the {n} runs, [min, max].", "",
        "| row | exact match | perplexity |", "| --- | --- | --- |",
    ]
    for row in rows:
        em, ppl = agg.get(f"{row}_exact_match"), agg.get(f"{row}_perplexity")
        lines.append(f"| {row} | {_cell(em, 1)} | {_cell(ppl, 2)} |")
    lines += _comparison_and_goal_lines(agg, COMPARISONS, n, goal_rows, "not measured", 2)
    return "\n".join(lines) + "\n"


def run_seeds(cfg: SeedsConfig) -> Path:
    runs = load_runs(cfg)
    agg = aggregate(runs, cfg.rows, cfg.suite)
    goal_rows = goals(agg, cfg.rows) if cfg.suite == "fast" else gold_goals(runs)
    flat = {f"{key}_{stat}": value for key, stats in agg.items() for stat, value in stats.items()}
    # Comparison labels are prose; the flat JSON keys them by the label's words.
    flat = {k.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "").replace("/", "over"): v
            for k, v in flat.items()}
    flat["seeds"] = len(runs)
    write_metrics(cfg.out, flat)
    md = Path(cfg.md)
    md.parent.mkdir(parents=True, exist_ok=True)
    tmp = md.with_name(f".{md.name}.tmp")
    write = markdown if cfg.suite == "fast" else gold_markdown
    tmp.write_text(write(runs, agg, cfg.rows, goal_rows), encoding="utf-8")
    os.replace(tmp, md)
    return md
