"""The gold-world sections: every method graded by the exact gold, at its KL to the model it started from.

The alignment report's section starts from SFT (`sft_full`); the smol report's from the shipped SmolLM2 (`base`),
tuned by DPO with LoRA on pairs of its own samples. The reference is the report's `--reference`.

It joins `gold_<policy>.json` (`llm-eval align --gold arithmetic` on the held-out sums: mean gold, pass rate,
win rate against SFT's greedy replies, sampled KL), `train_<policy>.json` (train time; the RL runs' curves),
`gold_bon.json` (`llm-align best_of_n`: best-of-n by the proxy, at its analytic KL), `reward_gold_proxy.json`
(the proxy against the gold order and the noise ceiling) and `gold_pairs.json` (the label noise). Paired
changes over SFT come from the per-sum answers in `<items_dir>/gold_<policy>/`. Two plots: the reward-KL
frontier (the DPO paper's Fig. 2), and gold and proxy reward against sqrt(KL) for best-of-n and for PPO
without its KL penalty, with the functional forms of Gao et al. 2022 fitted and their R^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from llm_data.io import read_jsonl

from llm_eval.gold import passes
from llm_eval.report import findings as fd
from llm_eval.report.alignment import cell, read_csv, win_finding
from llm_eval.report.cells import png_bytes
from llm_eval.stats import Estimate, from_metrics, paired_diff_ci

REFERENCE = "sft_full"
REFERENCE_LABELS = {"sft_full": "SFT", "base": "the shipped model"}  # how sentences name the reference
# name -> (family, setting), in table order; the rows present are shown.
POLICIES = {
    "dpo_gold_b01": ("DPO", "beta 0.1"),
    "dpo_gold_b05": ("DPO", "beta 0.5"),
    "dpo_gold": ("DPO", "beta 2"),
    "pft_gold": ("Preferred-FT", "SFT on the chosen replies"),
    "ipo_gold": ("IPO", "beta 0.5"),
    "kto_gold": ("KTO", "beta 2"),
    "orpo_gold": ("ORPO", "lambda 0.1"),
    "simpo_gold": ("SimPO", "beta 2"),
    "ppo_gold_kl03": ("PPO", "KL coef 0.03"),
    "ppo_gold": ("PPO", "KL coef 0.1"),
    "ppo_gold_nokl": ("PPO", "no KL penalty"),
    "grpo_gold": ("GRPO", "gold rubric reward"),
    "rloo_gold": ("RLOO", "gold rubric reward"),
    "dpo_gold_lora": ("DPO", "LoRA"),
}
SWEPT = ("DPO", "PPO")  # the families with several points on the frontier: each point is labelled
OVEROPTIMISED = "ppo_gold_nokl"  # the RL run whose curve is fitted with Gao's RL form
BON_N = 16  # the best-of-n a goal names


def columns(m: dict) -> list[str]:
    label = m["ref_label"]
    return ["policy", "method", f"KL to {label} (nats)", "mean gold", f"gold win rate vs {label} (%)", "pass (%)",
            "train time (s)"]


def _scores(items_dir: Path, name: str) -> list[float] | None:
    path = items_dir / f"gold_{name}" / "answers.jsonl"
    return [r["gold_score"] for r in read_jsonl(path, {"gold_score": (int, float)})] if path.is_file() else None


def gold_metrics(metrics_dir: Path, read_json: Callable[[Path], dict], items_dir: str | Path,
                 plots_dir: str | Path = "", reference: str = REFERENCE) -> dict:
    """{"reference", "ref_name", "ref_label", "rows": {policy: {gold, train}}, "bon", "bon_curve", "reward", "pairs",
    "curves", "<policy>_pass_change", "<policy>_gold_change"}."""
    path = metrics_dir / f"gold_{reference}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no gold metrics for the reference {reference!r} (run its `llm-eval align "
                                f"--gold arithmetic` stage: gold_reference, or smol_gold_eval@{reference})")
    out: dict = {"reference": read_json(path), "ref_name": reference,
                 "ref_label": REFERENCE_LABELS.get(reference, reference), "rows": {}, "curves": {}}
    for name in POLICIES:
        if (p := metrics_dir / f"gold_{name}.json").is_file():
            train = metrics_dir / f"train_{name}.json"
            out["rows"][name] = {"gold": read_json(p), "train": read_json(train) if train.is_file() else {}}
            curve = Path(plots_dir) / f"train_{name}" / "overopt.csv"
            if curve.is_file():
                out["curves"][name] = read_csv(curve)
    for key, file in (("bon", "gold_bon.json"), ("reward", "reward_gold_proxy.json"), ("pairs", "gold_pairs.json")):
        out[key] = read_json(metrics_dir / file) if (metrics_dir / file).is_file() else {}
    bon_csv = Path(plots_dir) / "gold_bon" / "bon.csv"
    out["bon_curve"] = read_csv(bon_csv) if bon_csv.is_file() else []
    reference_scores = _scores(Path(items_dir), reference)
    for name in out["rows"]:
        ours = _scores(Path(items_dir), name)
        if ours is not None and reference_scores is not None and len(ours) == len(reference_scores):
            out[f"{name}_pass_change"] = paired_diff_ci([float(passes(s)) for s in ours],
                                                        [float(passes(s)) for s in reference_scores], scale=100.0)
            out[f"{name}_gold_change"] = paired_diff_ci(ours, reference_scores)
    return out


def table(m: dict) -> list[list[str]]:
    ref = m["reference"]
    out = [[m["ref_name"], f"{m['ref_label']} (the reference)", "0", cell(ref, "gold_score", 2), "50 (itself)",
            cell(ref, "gold_pass"), "—"]]
    bon = m["bon"]
    for row in m["bon_curve"]:
        n = int(row["n"])
        if n > 1:
            out.append([f"best-of-{n}", "best-of-n by the proxy", f"{row['kl']:.2f} (analytic)",
                        cell(bon, f"n{n}_gold", 2), cell(bon, f"n{n}_win_rate"), cell(bon, f"n{n}_gold_pass"), "0"])
    for name, row in m["rows"].items():
        family, setting = POLICIES[name]
        g, seconds = row["gold"], row["train"].get("train_seconds")
        out.append([name, f"{family}, {setting}", cell(g, "kl", 2), cell(g, "gold_score", 2), cell(g, "win_rate"),
                    cell(g, "gold_pass"), "—" if seconds is None else f"{seconds:.0f}"])
    return out


# ----------------------------------------------------------------------------- Gao et al.'s forms


def fit(d: list[float], y: list[float], form: str) -> tuple[float, float, float] | None:
    """(alpha, beta, R^2) of Gao et al.'s form through the origin, by least squares: 'bon' y = d (alpha - beta d),
    'rl' y = d (alpha - beta log d); `y` is the reward change since d = 0. None with fewer than 3 points."""
    import numpy as np

    kept = [(x, v) for x, v in zip(d, y, strict=True) if x > 0]
    if len(kept) < 3:
        return None
    x = np.array([k[0] for k in kept])
    v = np.array([k[1] for k in kept])
    second = x * x if form == "bon" else x * np.log(x)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([x, -second], 1), v, rcond=None)
    residual = v - (alpha * x - beta * second)
    total = float(((v - v.mean()) ** 2).sum())
    return float(alpha), float(beta), 1.0 - float((residual**2).sum()) / total if total else float("nan")


def overoptimisation(m: dict) -> dict[str, dict]:
    """Per curve ('best-of-n', the no-KL PPO run): d = sqrt(KL), the proxy and gold changes since d = 0, and
    each one's fit."""
    out = {}
    series = []
    if m["bon_curve"]:
        series.append(("best-of-n", "bon", m["bon_curve"], [math.sqrt(r["kl"]) for r in m["bon_curve"]]))
    if OVEROPTIMISED in m["curves"]:
        rows = m["curves"][OVEROPTIMISED]
        series.append((f"PPO, no KL ({OVEROPTIMISED})", "rl", rows, [math.sqrt(max(r["kl"], 0.0)) for r in rows]))
    for label, form, rows, d in series:
        entry = {"d": d, "form": form}
        for key in ("proxy", "gold"):
            start = rows[0][key]
            entry[key] = [r[key] - start for r in rows]
            entry[f"{key}_err"] = [[r[key] - r.get(f"{key}_lo", r[key]) for r in rows],
                                   [r.get(f"{key}_hi", r[key]) - r[key] for r in rows]]
            entry[f"{key}_fit"] = fit(d, entry[key], form)
        out[label] = entry
    return out


# ----------------------------------------------------------------------------- what it shows


def _peak_then_fall(rows: list[dict]) -> tuple[dict, dict] | None:
    """(the curve's row of highest gold, its last row) when the peak is before the end."""
    if not rows:
        return None
    peak = max(rows, key=lambda r: r["gold"])
    return (peak, rows[-1]) if peak is not rows[-1] else None


def _best_points(m: dict) -> list[tuple[str, Estimate, str]]:
    """Per method family, its policy (or best-of-n) with the highest gold win rate: (label, win rate, KL text),
    highest first."""
    best: dict[str, tuple[str, Estimate, str]] = {}
    for name, row in m["rows"].items():
        family, setting = POLICIES[name]
        win, kl = from_metrics(row["gold"], "win_rate"), from_metrics(row["gold"], "kl")
        if win is not None and kl is not None and (family not in best or win.value > best[family][1].value):
            best[family] = (f"{family} ({setting})", win, f"{kl.value:.1f} nats")
    bon = m["bon"]
    for row in m["bon_curve"]:
        n, win = int(row["n"]), from_metrics(bon, f"n{int(row['n'])}_win_rate")
        if n > 1 and win is not None and ("best-of-n" not in best or win.value > best["best-of-n"][1].value):
            best["best-of-n"] = (f"best-of-{n} by the proxy", win, f"≤ {row['kl']:.1f} nats (analytic)")
    return sorted(best.values(), key=lambda b: -b[1].value)


def lead(m: dict) -> list[str]:
    """The report's opening: what each method bought against the gold, and at what KL."""
    ref, n = m["reference"], int(m["reference"].get("n_prompts", 0))
    points = _best_points(m)
    if not points:
        return []
    label = m["ref_label"]
    out = [f"Against the exact gold on {n} held-out sums ({label} passes {cell(ref, 'gold_pass')}%), each method's "
           f"best gold win rate against {label} and its KL: "
           + "; ".join(f"{label} {win.fmt(1)}% at {kl}" for label, win, kl in points) + "."]
    lifted = [name for name in m["rows"] if (c := m.get(f"{name}_pass_change")) is not None and c.lo > 0]
    flat = [name for name in m["rows"] if (c := m.get(f"{name}_pass_change")) is not None and c.lo <= 0]
    if lifted or flat:
        out.append("The pass rate (the right number alone) rises beyond noise for "
                   + (", ".join(f"{name} {m[f'{name}_pass_change'].fmt(1, signed=True)} points" for name in lifted)
                      or "no policy")
                   + (f"; within noise for {', '.join(flat)}: their wins are wrong replies the gold grades above "
                      f"{label}'s (a number where it gave none, or a nearer one), not more right answers"
                      if flat else "") + ".")
    return out


def finding(m: dict) -> str:
    """What each method bought against the gold and at what KL, then the proxy against its ceiling."""
    ref, n = m["reference"], int(m["reference"].get("n_prompts", 0))
    label = m["ref_label"]
    parts = [f"Against the exact gold on {n} held-out sums, {label} passes {cell(ref, 'gold_pass')}% "
             f"(mean gold {cell(ref, 'gold_score', 2)})"]
    for name, row in m["rows"].items():
        g = row["gold"]
        family, setting = POLICIES[name]
        change = m.get(f"{name}_pass_change")
        passed = f", pass {change.fmt(1, signed=True)} points" if change is not None else ""
        parts.append(f"{family} ({setting}) wins {cell(g, 'win_rate')}% against {label} at KL {cell(g, 'kl', 1)} "
                     f"nats{passed}")
    bon = m["bon"]
    if f"n{BON_N}_win_rate" in bon:
        parts.append(f"best-of-{BON_N} by the proxy wins {cell(bon, f'n{BON_N}_win_rate')}% at KL at most "
                     f"{bon[f'n{BON_N}_kl']:.2f} nats (pass {cell(bon, f'n{BON_N}_gold_pass')}%)")
    text = "; ".join(parts) + "."
    reward, pairs = m["reward"], m["pairs"]
    if "noise_ceiling" in reward:
        noise = f" ({cell(pairs, 'train_label_noise')}% of its training labels go against the gold)" if pairs else ""
        pairs_n = int(reward.get("n_pairs", 0))
        text += (f" The proxy reward model ranks {cell(reward, 'accuracy')}% of {pairs_n} held-out "
                 f"pairs in the gold order; against labels drawn with the training noise{noise} it scores "
                 f"{cell(reward, 'noisy_accuracy')}%, {cell(reward, 'below_ceiling')} points below the "
                 f"{cell(reward, 'noise_ceiling')}% the gold itself would.")
    peak = _peak_then_fall(m["curves"].get(OVEROPTIMISED, []))
    if peak is not None:
        top, last = peak
        decided = top["gold_lo"] > last["gold_hi"]
        text += (f" Without a KL penalty PPO's gold peaks at {top['gold']:.2f} (KL {top['kl']:.1f}) and ends at "
                 f"{last['gold']:.2f} (KL {last['kl']:.1f}), " + ("beyond both intervals" if decided else
                                                                  "within their intervals") + ".")
    return text


def comparisons(m: dict) -> list[fd.Finding]:
    out = []
    for name, row in m["rows"].items():
        win = from_metrics(row["gold"], "win_rate")
        if win is not None:
            out.append(win_finding(name, "gold win rate", name, m["ref_name"], win))
        if m.get(f"{name}_pass_change") is not None:
            out.append(fd.Finding(name, "gold pass rate", name, m["ref_name"], m[f"{name}_pass_change"]))
    bon = m["bon"]
    for row in m["bon_curve"]:
        n = int(row["n"])
        win = from_metrics(bon, f"n{n}_win_rate")
        if n > 1 and win is not None:
            out.append(win_finding(f"best-of-{n}", "gold win rate", f"best-of-{n}", m["ref_name"], win))
    return out


def goals(m: dict) -> list[tuple]:
    out = [(f"{m['ref_label']} gold pass rate, room above it (%)", from_metrics(m["reference"], "gold_pass"), "<=", 50)]
    if "dpo_gold" in m["rows"]:
        out.append(("DPO gold win rate vs SFT (%)", from_metrics(m["rows"]["dpo_gold"]["gold"], "win_rate"), ">=", 70))
    if f"n{BON_N}_win_rate" in m["bon"]:
        out.append((f"best-of-{BON_N} gold win rate vs SFT (%)", from_metrics(m["bon"], f"n{BON_N}_win_rate"), ">=",
                    75))
    if "below_ceiling" in m["reward"]:
        out.append(("proxy reward model below the label-noise ceiling (points)",
                    from_metrics(m["reward"], "below_ceiling"), "<=", 3))
    for name, label in (("grpo_gold", "GRPO"), ("rloo_gold", "RLOO")):
        if m.get(f"{name}_pass_change") is not None:
            out.append((f"{label} gold pass rate over SFT (points)", m[f"{name}_pass_change"], ">=", 10))
    rows = m["curves"].get(OVEROPTIMISED, [])
    if rows:  # peak minus end, its interval from the two rows' own (validation sums, not paired)
        top, last = max(rows, key=lambda r: r["gold"]), rows[-1]
        fall = Estimate(top["gold"] - last["gold"], top["gold_lo"] - last["gold_hi"], top["gold_hi"] - last["gold_lo"])
        out.append(("over-optimisation: PPO without KL, gold at its peak minus at its end", fall, ">=", 0))
    return out


# ----------------------------------------------------------------------------- plots

FAMILY_STYLE = {"DPO": ("C0", "o"), "Preferred-FT": ("C2", "s"), "PPO": ("C3", "^"), "GRPO": ("C4", "D"),
                "RLOO": ("C5", "v"), "IPO": ("C6", "P"), "KTO": ("C7", "X"), "ORPO": ("C8", "p"),
                "SimPO": ("C9", "h")}


def plots(m: dict) -> dict[str, bytes]:
    """PNG bytes by file name: the reward-KL frontier and the over-optimisation curves with Gao's fits."""
    import numpy as np
    from matplotlib.figure import Figure

    out = {}
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot(1, 1, 1)
    ref = from_metrics(m["reference"], "gold_score")
    ax.errorbar([0], [ref.value], yerr=[[ref.value - ref.lo], [ref.hi - ref.value]], fmt="k*", ms=10, capsize=2,
                label=m["ref_label"])
    if m["bon_curve"]:
        rows = m["bon_curve"]
        ax.errorbar([r["kl"] for r in rows], [r["gold"] for r in rows],
                    yerr=[[r["gold"] - r["gold_lo"] for r in rows], [r["gold_hi"] - r["gold"] for r in rows]],
                    color="C1", marker=".", capsize=2,
                    label="best-of-n by the proxy, n = 1..N (analytic KL; n = 1 is one sample)")
    labelled = set()
    for name, row in m["rows"].items():
        g = from_metrics(row["gold"], "gold_score")
        kl = from_metrics(row["gold"], "kl")
        if g is None or kl is None:
            continue
        family, setting = POLICIES[name]
        color, marker = FAMILY_STYLE[family]
        ax.errorbar([kl.value], [g.value], xerr=[[kl.value - kl.lo], [kl.hi - kl.value]],
                    yerr=[[g.value - g.lo], [g.hi - g.value]], color=color, marker=marker, capsize=2,
                    label=family if family not in labelled else None)
        labelled.add(family)
        if family in SWEPT:
            ax.annotate(setting.removeprefix("KL coef "), (kl.value, g.value), fontsize=7, xytext=(4, -10),
                        textcoords="offset points", color=color)
    ax.set(xlabel=f"KL(policy || {m['ref_label']}), nats per reply (sampled)", ylabel="mean gold reward, held-out sums",
           title="Reward-KL frontier against the exact gold (policies greedy; PPO labelled by KL coef)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["gold_frontier.png"] = png_bytes(fig)

    curves = overoptimisation(m)
    if curves:
        fig = Figure(figsize=(5 * len(curves), 4))
        for i, (label, c) in enumerate(curves.items()):
            ax = fig.add_subplot(1, len(curves), i + 1)
            grid = np.linspace(0, max(c["d"]), 50)
            for key, color in (("proxy", "C0"), ("gold", "C3")):
                ax.errorbar(c["d"], c[key], yerr=c[f"{key}_err"], color=color, marker="o", ms=3, ls="", capsize=2,
                            label=f"{key} (measured)")
                params = c[f"{key}_fit"]
                if params is not None:
                    alpha, beta, r2 = params
                    second = grid * grid if c["form"] == "bon" else grid * np.log(np.where(grid > 0, grid, 1))
                    ax.plot(grid, alpha * grid - beta * second, color=color, ls="--",
                            label=f"{key} fit: alpha {alpha:.2f}, beta {beta:.2f}, R² {r2:.2f}")
            form = "d(alpha - beta d)" if c["form"] == "bon" else "d(alpha - beta log d)"
            ax.set(xlabel=f"d = sqrt(KL to {m['ref_label']})", ylabel="reward change since d = 0",
                   title=f"{label}: {form}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        out["gold_overoptimisation.png"] = png_bytes(fig)
    return out
