"""The encoders section of a report: the pre-training paradigms side by side, and contrastive learning.

It joins `embed_<name>.json` (`llm-eval embed`) for every encoder in `ENCODERS` that was evaluated, and
`train_contrastive_<method>.json` for the contrastive runs' train time. Differences are paired over the
same held-out queries and probe texts, from `<items_dir>/embed_<name>/`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llm_data.io import read_jsonl

from llm_eval.report import findings as fd
from llm_eval.report.cells import DASH
from llm_eval.stats import Estimate, from_metrics, paired_diff_ci, verdict

# name -> (what it is, its pre-training objective); table order. `mlm` is where both contrastive runs start.
ENCODERS = {
    "random": ("ModernBERT, random init", "none (untrained)"),
    "causal": ("Llama base (models/base)", "causal LM: next token"),
    "mlm": ("ModernBERT base (models/base-bert)", "masked LM"),
    "simcse": ("masked LM + SimCSE", "+ contrastive: dropout views, no labels"),
    "supervised": ("masked LM + supervised pairs", "+ contrastive: two phrasings of one fact"),
    "minilm": ("all-MiniLM-L6-v2 (reference)", "MLM, then contrastive on 1B pairs"),
}
REQUIRED = ("mlm", "simcse", "supervised")
BEFORE = "mlm"  # the encoder as it enters contrastive training
COLUMNS = ("encoder", "objective", "parameters", "retrieval acc@1 (%)", "MRR", "alignment", "uniformity",
           "probe: sentiment (%)", "probe: truth (%)", "train time (s)")


def _items(items_dir: Path, name: str) -> dict:
    folder = items_dir / f"embed_{name}"
    retrieval = read_jsonl(folder / "retrieval.jsonl", {"query": str, "rank": int})
    probe = read_jsonl(folder / "probe.jsonl", {"task": str, "text": str, "correct": bool})
    return {"queries": [r["query"] for r in retrieval], "hit": [float(r["rank"] == 1) for r in retrieval],
            "probe": {t: [(p["text"], float(p["correct"])) for p in probe if p["task"] == t]
                      for t in dict.fromkeys(p["task"] for p in probe)}}


def _paired(a: dict, b: dict, task: str = "") -> Estimate | None:
    """a minus b in points, over the same queries (retrieval accuracy@1) or probe texts of `task`."""
    if not task:
        return paired_diff_ci(a["hit"], b["hit"], 100.0) if a["queries"] == b["queries"] else None
    x, y = a["probe"].get(task, []), b["probe"].get(task, [])
    if not x or [t for t, _ in x] != [t for t, _ in y]:
        return None
    return paired_diff_ci([c for _, c in x], [c for _, c in y], 100.0)


def embed_metrics(metrics_dir: Path, read_json: Callable[[Path], dict], items_dir: str | Path) -> dict:
    """Per encoder its metrics (`rows`), and the paired differences the section states."""
    rows, items = {}, {}
    for name in ENCODERS:
        path = metrics_dir / f"embed_{name}.json"
        if not path.is_file():
            if name in REQUIRED:
                raise FileNotFoundError(f"{path}: no metrics (run `dvc repro embed@{name}`)")
            continue
        rows[name] = read_json(path)
        train = metrics_dir / f"train_contrastive_{name}.json"
        rows[name]["train_seconds"] = read_json(train).get("train_seconds") if train.is_file() else None
        items[name] = _items(Path(items_dir), name)
    tasks = sorted({t for it in items.values() for t in it["probe"]})
    pairs = [("supervised", BEFORE), ("simcse", BEFORE), ("supervised", "simcse"), ("mlm", "random"),
             ("supervised", "random"), ("supervised", "minilm"), ("mlm", "causal")]
    diffs = {}
    for a, b in pairs:
        if a in items and b in items:
            diffs[(a, b, "")] = _paired(items[a], items[b])
            for task in tasks:
                diffs[(a, b, task)] = _paired(items[a], items[b], task)
    return {"rows": rows, "tasks": tasks, "diffs": diffs}


def _cell(metrics: dict, key: str, digits: int) -> str:
    estimate = from_metrics(metrics, key)
    return DASH if estimate is None else estimate.fmt(digits)


def table(m: dict) -> list[list[str]]:
    out = []
    for name, metrics in m["rows"].items():
        what, objective = ENCODERS[name]
        seconds = metrics.get("train_seconds")
        out.append([f"{name}: {what}", objective, f"{metrics.get('parameters', 0) / 1e6:.1f}M",
                    _cell(metrics, "retrieval_accuracy", 1), _cell(metrics, "mrr", 3), _cell(metrics, "alignment", 3),
                    _cell(metrics, "uniformity", 2), _cell(metrics, "probe_sentiment", 1),
                    _cell(metrics, "probe_truth", 1), DASH if seconds is None else f"{seconds:.0f}"])
    return out


def _diff(m: dict, a: str, b: str, task: str = "") -> Estimate | None:
    return m["diffs"].get((a, b, task))


def finding(m: dict) -> str:
    rows = m["rows"]
    acc = {name: from_metrics(r, "retrieval_accuracy") for name, r in rows.items()}
    uniformity = {name: from_metrics(r, "uniformity") for name, r in rows.items()}
    text = (f"On {rows['mlm'].get('queries', 0):.0f} held-out queries (phrasings of facts no training pair "
            f"contained) against {rows['mlm'].get('documents', 0):.0f} documents, the masked-LM encoder "
            f"ranks the right document first {acc['mlm'].fmt(1)}% of the time, after SimCSE "
            f"{acc['simcse'].fmt(1)}% and after supervised pairs {acc['supervised'].fmt(1)}% "
            f"({verdict(_diff(m, 'supervised', BEFORE), 'supervised', 'masked LM')}). Uniformity goes from "
            f"{uniformity['mlm'].fmt(2)} to {uniformity['supervised'].fmt(2)}: lower means the vectors spread over "
            "the sphere instead of sharing one direction.")
    before = _diff(m, "mlm", "random")
    if before is not None:
        text += (f" The untrained encoder scores {acc['random'].fmt(1)}% (uniformity {uniformity['random'].fmt(2)}): "
                 "mean-pooled, its vectors are a bag of token identities, and a query shares its country and "
                 "value, or its numbers, with its own document, so the task is lexically easy for it. Masked-LM "
                 f"pre-training against it: {verdict(before, 'masked LM', 'untrained')}; pre-trained token vectors "
                 "crowd into a narrow cone (anisotropy, Ethayarajh 2019, arXiv:1909.00512), which is what "
                 "contrastive training undoes.")
    if m["tasks"]:
        probes = "; ".join(f"{task}: " + ", ".join(f"{name} {from_metrics(r, f'probe_{task}').fmt(1)}%"
                                                    for name, r in rows.items() if f"probe_{task}" in r)
                           for task in m["tasks"])
        text += f" Linear probes on the frozen vectors ({probes})."
    return text


def comparisons(m: dict) -> list[fd.Finding]:
    labels = {"supervised": "supervised contrastive", "simcse": "SimCSE", "mlm": "masked LM",
              "random": "untrained encoder", "minilm": "all-MiniLM-L6-v2", "causal": "causal LM"}
    out = []
    for (a, b, task), diff in m["diffs"].items():
        if diff is None or (task and (a, b) not in (("mlm", "causal"), ("supervised", "mlm"))):
            continue
        what = f"probe accuracy on {task}" if task else "retrieval accuracy@1"
        out.append(fd.Finding("Encoders", what, labels[a], labels[b], diff))
    return out


def goals(m: dict) -> list[tuple]:
    return [
        ("contrastive held-out retrieval accuracy@1 (%)", from_metrics(m["rows"]["supervised"], "retrieval_accuracy"),
         ">=", 90),
        ("contrastive gain over the same encoder before it (masked LM), points", _diff(m, "supervised", BEFORE),
         ">=", 30),
        ("contrastive gain over the same encoder untrained (random init), points", _diff(m, "supervised", "random"),
         ">=", 30),
    ]
