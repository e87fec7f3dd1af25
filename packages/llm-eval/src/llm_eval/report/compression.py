"""The report's compression part: every quantized and pruned model against the fp32 reference.

A row is compressed when its stage wrote `quantize_<name>.json` (llm-compress quantize) or
`prune_<name>.json` (llm-compress prune). Each is compared with the reference on the same test items:
exact match (paired difference in points) and perplexity (paired change in %), each with its 95%
interval, stated as findings; a difference whose interval holds the null is "within noise". Decoding speed
(tokens/s ratio over the same generation batches) is shown in the tables but stated as no finding: each
eval is one run, its interval covers batch-to-batch variation only, and separate runs of models that
compute identically (dense pruned ones) differ by more than that. Speed claims come from the benchmarks,
which repeat runs. Pruned rows named `<method>_<percent>` (e.g. `sparsegpt_50`) make up the quality-against-
sparsity curve; others (e.g. `sparsegpt_2of4`) are listed in the table only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm_eval.items import Items, exact_match_diff, perplexity_change, speed_ratio
from llm_eval.report import findings as fd
from llm_eval.report.cells import DASH, number, png_bytes
from llm_eval.stats import Estimate, from_metrics

CURVE_ROW = re.compile(r"(?P<method>[a-z]+)_(?P<percent>\d+)")
# The goals: 4-bit GPTQ / AWQ at least 3x smaller on disk with perplexity within +10%; 50%
# unstructured Wanda / SparseGPT within +20% perplexity.
CALIBRATED_4BIT = ("gptq", "awq")
PRUNED_50 = ("wanda_50", "sparsegpt_50")

TECHNIQUES = {
    "gptq": ("GPTQ 4-bit weights",
             "GPTQ (Frantar et al. 2022, arXiv:2210.17323) rounds one weight column at a time to 4 bits (groups of "
             "128 input features share a scale) and updates the columns not yet rounded to cancel the error, "
             "using the calibration activations' second-order statistics (the OBS/OBC update). Run by "
             "llm-compressor; saved packed in the compressed-tensors format."),
    "awq": ("AWQ 4-bit weights",
            "Activation-aware weight quantization (Lin et al. 2023, arXiv:2306.00978): the ~1% of weight channels "
            "that meet large calibration activations matter most, so each input channel is scaled up before "
            "rounding (and its activation scaled down to match), searched per layer to minimise the output error. "
            "Run by llm-compressor (AutoAWQ, the original package, was archived in 2025)."),
    "quanto_int8": ("quanto int8 weights",
                    "optimum-quanto's weight-only int8: one absmax scale per output channel, no calibration; the "
                    "weights stay packed in memory and are dequantized at each matmul."),
    "quanto_int4": ("quanto int4 weights",
                    "optimum-quanto's weight-only int4: absmax scales per group of up to 128 input features (a layer "
                    "only 128 wide gets one scale per output channel), no calibration; packed two per byte in "
                    "memory."),
    "magnitude": ("Magnitude pruning",
                  "Zero the weights of smallest absolute value in each layer (Han et al. 2015, arXiv:1506.02626): "
                  "no data, no update of the weights that remain."),
    "wanda": ("Wanda pruning",
              "Pruning by weights and activations (Sun et al. 2023, arXiv:2306.11695): each weight's score is |w| "
              "times the norm of its input feature over the calibration data, compared within each output row; no "
              "weight update. Run by llm-compressor."),
    "sparsegpt": ("SparseGPT pruning",
                  "SparseGPT (Frantar & Alistarh 2023, arXiv:2301.00774) prunes column by column and updates the "
                  "remaining weights to make up for what was removed, with the same second-order statistics as "
                  "GPTQ; it also does the 2:4 pattern (two of every four consecutive weights, which NVIDIA's sparse "
                  "tensor cores run about twice as fast; Mishra et al. 2021, arXiv:2104.08378). Run by "
                  "llm-compressor."),
}

# What the calibration rows are, by base model (dvc.yaml's compress stages pass the data folder; the report's
# --base_model names the profile).
CALIBRATION_DATA = {
    "base": "conversations from the SFT train split, rendered through the chat template, so they see the "
            "activations the served model sees. They protect what those prompts exercise, which is why their "
            "perplexity on pre-training text (which the calibration rows do not cover) can fall behind "
            "calibration-free methods even when their exact match is better",
    "smollm2": "real news documents from the train split of data/real/news, cut at the calibration length: prose "
               "like the documents the perplexity scores, but none of them",
}
CALIBRATION_NOTE = (
    "Calibration data. GPTQ, AWQ, Wanda and SparseGPT decide what to keep from the activations of {n} calibration "
    "rows: {data}. bitsandbytes, quanto and magnitude pruning use no data. Pruned folders are saved dense (the "
    "zeros are the pruning): on a CPU their size, memory and speed are fp32's; sparse kernels (2:4 on NVIDIA GPUs) "
    "turn the zeros into speed."
)


@dataclass(frozen=True)
class Change:
    """One compressed row against the reference, each paired over the same items (None: not measured)."""

    exact_match: Estimate
    perplexity: Estimate | None
    speed: Estimate | None


def compressed(rows: dict[str, dict], reference: str) -> list[str]:
    return [name for name, row in rows.items() if name != reference and (row["quantize"] or row.get("prune"))]


def changes(rows: dict[str, dict], reference: str, ref_items: Items | None) -> dict[str, Change]:
    if ref_items is None:
        return {}
    return {name: Change(exact_match_diff(rows[name]["items"], ref_items),
                         perplexity_change(rows[name]["items"], ref_items),
                         speed_ratio(rows[name]["items"], ref_items))
            for name in compressed(rows, reference)}


def findings(rows: dict[str, dict], reference: str, cmp: dict[str, Change]) -> list[fd.Finding]:
    out = []
    for name, change in cmp.items():
        what = f"{name} {'pruning' if rows[name].get('prune') else 'quantization'}"
        out.append(fd.exact_match(what, change.exact_match, name, reference))
        if change.perplexity is not None:
            out.append(fd.perplexity(what, change.perplexity, name, reference))
    return out


def goals(rows: dict[str, dict], reference: str, cmp: dict[str, Change]) -> list[tuple]:
    """(label, value, op, threshold) rows, as the report's sections give them."""
    out = []
    for name in CALIBRATED_4BIT:
        if name not in cmp:
            continue
        out.append((f"{name} size on disk, fp32 / {name} (x)", rows[name]["quantize"].get("size_ratio"), ">=", 3))
        out.append((f"{name} perplexity change vs {reference} (%)", cmp[name].perplexity, "<=", 10))
        out.append((f"{name} exact-match change vs {reference} (points)", cmp[name].exact_match, "within noise", 0))
    for name in PRUNED_50:
        if name in cmp:
            out.append((f"{name} perplexity change vs {reference} (%)", cmp[name].perplexity, "<=", 20))
    if "magnitude_50" in cmp:
        out.append((f"magnitude_50 perplexity change vs {reference} (%)", cmp["magnitude_50"].perplexity, "info", 0))
    return out


def _e(estimate: Estimate | None, digits: int = 1, signed: bool = True) -> str:
    return DASH if estimate is None else estimate.fmt(digits, signed=signed)


def _speed(change: Change) -> str:
    return _e(change.speed, 2, signed=False)


def quantize_table(rows: dict[str, dict], ref_eval: dict, cmp: dict[str, Change]) -> list[list[str]]:
    table = []
    for name, change in cmp.items():
        qu, ev = rows[name]["quantize"], rows[name]["eval"]
        if not qu:
            continue
        memory = ev.get("memory_mb")
        ratio = ref_eval["memory_mb"] / memory if memory and ref_eval.get("memory_mb") else qu.get("memory_ratio")
        table.append([name, f"{number(qu.get('size_mb'))} ({number(qu.get('size_ratio'), 1)}x)",
                      f"{number(memory)} ({number(ratio, 1)}x)", _e(change.exact_match), _e(change.perplexity),
                      _speed(change)])
    return table


def prune_table(rows: dict[str, dict], cmp: dict[str, Change]) -> list[list[str]]:
    table = []
    for name, change in cmp.items():
        pr = rows[name].get("prune")
        if not pr:
            continue
        table.append([name, number(100 * pr.get("target_sparsity", 0), 0), number(100 * pr.get("sparsity", 0), 1),
                      number(100 * pr.get("groups_2_4", 0), 1), _e(from_metrics(rows[name]["eval"], "exact_match"),
                                                              signed=False),
                      _e(change.exact_match), _e(change.perplexity), _speed(change)])
    return table


def plot_pruning(rows: dict[str, dict], reference: str, cmp: dict[str, Change]) -> bytes | None:
    """Exact match and perplexity change against measured sparsity, one line per method, the reference at 0."""
    from matplotlib.figure import Figure


    curves: dict[str, list[tuple[float, Estimate, Estimate | None]]] = {}
    for name, change in cmp.items():
        match = CURVE_ROW.fullmatch(name)
        if match and rows[name].get("prune"):
            em = from_metrics(rows[name]["eval"], "exact_match")
            sparsity = 100 * rows[name]["prune"]["sparsity"]
            curves.setdefault(match["method"], []).append((sparsity, em, change.perplexity))
    if not curves:
        return None
    ref = from_metrics(rows[reference]["eval"], "exact_match") if reference in rows else None
    fig = Figure(figsize=(10, 3.8))
    ax_em, ax_ppl = fig.subplots(1, 2)
    for i, (method, points) in enumerate(sorted(curves.items())):
        points = sorted(points, key=lambda p: p[0])
        if ref is not None:
            points = [(0.0, ref, Estimate(0.0, 0.0, 0.0)), *points]
        xs = [p[0] for p in points]
        for ax, ys in ((ax_em, [p[1] for p in points]), (ax_ppl, [p[2] for p in points])):
            keep = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            errors = [(max(y.value - y.lo, 0), max(y.hi - y.value, 0)) if y.has_interval else (0, 0) for _, y in keep]
            ax.errorbar([x for x, _ in keep], [y.value for _, y in keep], yerr=list(zip(*errors, strict=True)),
                        marker="o", capsize=3, color=f"C{i}", label=method)
    ax_em.set(xlabel="weights pruned (%)", ylabel="exact match (%)", ylim=(0, 105),
              title="Exact match against sparsity")
    ax_ppl.set(xlabel="weights pruned (%)", ylabel=f"perplexity change vs {reference} (%)", yscale="symlog",
               title="Perplexity on held-out text against sparsity")
    for ax in (ax_em, ax_ppl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return png_bytes(fig)


def blocks(rows: dict[str, dict], reference: str, ref_eval: dict, cmp: dict[str, Change],
           images: dict[str, bytes], base_model: str = "base") -> list[tuple]:
    """The compression section's blocks (empty without compressed rows); adds its plot to `images`."""
    if not cmp:
        return []
    vs = f"vs {reference}"
    out = [("h2", "Compression side by side"),
           ("p", f"Each compressed model against {reference} (fp32) on the same test prompts, text windows and "
                 f"generation batches: exact match in points, perplexity in %, decoding speed as a tokens/s ratio "
                 f"(> 1 is faster), each as value [95% interval] of the paired difference. The speed ratio is "
                 f"indicative only: each eval is a single run, its interval covers batch-to-batch variation within "
                 f"the two runs, and dense pruned models, which compute exactly what fp32 does, land 10-20% either "
                 f"side of it. The findings state no speed comparison; the Batching and vLLM sections, which "
                 f"repeat their runs, do.")]
    quantized = quantize_table(rows, ref_eval, cmp)
    if quantized:
        out += [("h3", "Quantization"),
                ("table", ["model", "size on disk (MB, x smaller)", "memory (MB, x smaller)", f"exact match {vs}",
                           f"perplexity {vs} (%)", f"tokens/s {vs} (x)"], quantized)]
    pruned = prune_table(rows, cmp)
    if pruned:
        out += [("h3", "Pruning"),
                ("table", ["model", "target sparsity (%)", "measured sparsity (%)", "4-weight groups with 2 zeros (%)",
                           "exact match", f"exact match {vs}", f"perplexity {vs} (%)", f"tokens/s {vs} (x)"], pruned)]
        png = plot_pruning(rows, reference, cmp)
        if png is not None:
            images["pruning_curve.png"] = png
            out.append(("img", "pruning_curve.png", "Exact match and perplexity against the share of weights pruned"))
    samples = [rows[n][k].get("calibration_samples") for n in cmp for k in ("quantize", "prune") if rows[n].get(k)]
    samples = [int(s) for s in samples if s]
    if samples:
        out.append(("p", CALIBRATION_NOTE.format(n=max(samples), data=CALIBRATION_DATA[base_model])))
    return out


__all__ = ["TECHNIQUES", "Change", "blocks", "changes", "compressed", "findings", "goals"]
