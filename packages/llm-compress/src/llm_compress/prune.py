"""Pruning: set a share of every linear layer's weights to zero, chosen by magnitude, Wanda or SparseGPT.

A pruned weight costs nothing to multiply, if the kernel knows it is zero. `--method magnitude` zeroes the
smallest |w| of each layer (Han et al. 2015, arXiv:1506.02626), through `torch.nn.utils.prune`. Wanda
(Sun et al. 2023, arXiv:2306.11695) scores each weight by |w| times the norm of its input feature over
calibration data, so a small weight on a loud feature survives; SparseGPT (Frantar & Alistarh 2023,
arXiv:2301.00774) prunes column by column and updates the remaining weights to make up for what was
removed, GPTQ-style. Both run as llm-compressor recipes (see `oneshot.py`). `--pattern 2:4` keeps two
of every four consecutive weights of a row (exactly 50% sparsity), the semi-structured pattern NVIDIA's
sparse tensor cores run about twice as fast (Mishra et al. 2021, arXiv:2104.08378); `unstructured`
prunes anywhere. The output is a dense folder whose zeros are the pruning: it loads and evaluates like
any model, and the sparsity measured on the saved weights goes to the metrics.

    llm-compress prune --method wanda --sparsity 0.5 --model models/sft-full --out models/sft-full-wanda50 \\
        --data data/synth/sft --metrics reports/metrics/prune_wanda50.json
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_model_folder, weights_mb, write_metrics

from llm_compress.oneshot import calibration_texts, input_features, linear_layers, model_reference, run_oneshot

logger = logging.getLogger(__name__)
METHODS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")
_PRODUCER = "llm-train sft --method full --out {0}"


@dataclass
class PruneConfig:
    method: str = field(default="wanda", metadata={"help": f"How weights are chosen: {' | '.join(METHODS)}."})
    model: str = field(default="models/sft-full", metadata={"help": "Model folder to prune (or hub id)."})
    out: str = field(default="", metadata={"help": "Output folder (required)."})
    sparsity: float = field(
        default=0.5, metadata={"help": "Share of each linear layer's weights set to zero, in (0, 1); 2:4 is 0.5."}
    )
    pattern: str = field(
        default="unstructured",
        metadata={"help": "unstructured (any weight) | 2:4 (two of every four consecutive weights in a row)."},
    )
    data: str = field(
        default="data/synth/sft",
        metadata={"help": "wanda/sparsegpt: calibration dataset folder (its train.jsonl: SFT or text rows)."},
    )
    calibration_samples: int = field(default=64, metadata={"help": "wanda/sparsegpt: calibration rows."})
    max_seq_length: int = field(default=128, metadata={"help": "wanda/sparsegpt: tokens per calibration row."})
    metrics: str = field(default="", metadata={"help": "Write metrics JSON here; '' = don't."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration rows' choice."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; choose one of: {', '.join(PATTERNS)}")
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {self.sparsity}")
        if self.pattern == "2:4" and self.sparsity != 0.5:
            raise ValueError(f"pattern 2:4 keeps 2 of every 4 weights, so sparsity is 0.5; got {self.sparsity}")
        if not self.out:
            raise ValueError("--out is required (the pruned model folder)")
        if Path(self.out).expanduser().resolve() == Path(self.model).expanduser().resolve():
            raise ValueError(f"out must differ from model ({self.model}): the output folder is replaced")
        for name in ("calibration_samples", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def prune_2_4(weight) -> None:
    """Zero the two smallest |w| of every four consecutive weights of each row, in place."""
    import torch

    groups = weight.data.abs().reshape(-1, 4)  # (rows * in_features / 4, 4)
    drop = groups.topk(2, dim=1, largest=False).indices
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(1, drop, False)
    weight.data *= keep.reshape(weight.shape)


def magnitude_prune(model, sparsity: float, pattern: str) -> None:
    """Zero the smallest weights of each linear layer (layer by layer, like Wanda and SparseGPT)."""
    from torch.nn.utils import prune

    for module in linear_layers(model).values():
        if pattern == "2:4":
            prune_2_4(module.weight)
        else:
            prune.l1_unstructured(module, "weight", amount=sparsity)
            prune.remove(module, "weight")  # bake the mask into the weight; no hooks in the saved model


def measured_sparsity(model) -> dict[str, float]:
    """Share of zero weights over all pruned layers, the least and most sparse layer, and the share of
    4-weight row groups with at least two zeros (1.0 = the 2:4 pattern holds everywhere)."""
    zeros = total = groups_ok = groups = 0
    per_layer = []
    for module in linear_layers(model).values():
        w = module.weight.data
        z = int((w == 0).sum())
        zeros, total = zeros + z, total + w.numel()
        per_layer.append(z / w.numel())
        if w.shape[1] % 4 == 0:
            counts = (w.reshape(-1, 4) == 0).sum(dim=1)
            groups_ok, groups = groups_ok + int((counts >= 2).sum()), groups + counts.numel()
    return {"sparsity": zeros / total, "sparsity_min_layer": min(per_layer), "sparsity_max_layer": max(per_layer),
            "groups_2_4": groups_ok / groups if groups else 0.0, "pruned_params": total}


def run_prune(cfg: PruneConfig) -> Path:
    import torch
    from llm_data.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    name = require_model_folder(cfg.model, _PRODUCER.format(cfg.model))
    if cfg.pattern == "2:4":
        for layer, width in input_features(name).items():
            if width % 4:
                raise ValueError(f"{name}: layer {layer} has {width} input features, not a multiple of 4, so it "
                                 "cannot take the 2:4 pattern; use --pattern unstructured")
    tokenizer = load_tokenizer(name)
    texts = []
    if cfg.method != "magnitude":
        texts = calibration_texts(cfg.data, tokenizer, cfg.calibration_samples, cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32) if cfg.method == "magnitude" else None
    with atomic_dir(cfg.out) as tmp:
        start = time.perf_counter()
        if cfg.method == "magnitude":
            magnitude_prune(model, cfg.sparsity, cfg.pattern)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            seconds = time.perf_counter() - start
        else:
            seconds = run_oneshot(
                {"method": cfg.method, "model": model_reference(name), "out": str(tmp.resolve()),
                 "sparsity": cfg.sparsity, "mask_structure": "2:4" if cfg.pattern == "2:4" else "0:0",
                 "max_seq_length": cfg.max_seq_length, "seed": cfg.seed},
                texts,
            )
        pruned = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)  # what later stages will read
        measured = measured_sparsity(pruned)
        size_mb = weights_mb(tmp)
    if cfg.pattern == "2:4" and measured["groups_2_4"] < 1.0:
        logger.warning("only %.1f%% of 4-weight groups hold two zeros", 100 * measured["groups_2_4"])
    metrics = {"target_sparsity": cfg.sparsity, **measured, "prune_seconds": seconds, "size_mb": size_mb,
               "calibration_samples": len(texts)}
    logger.info("%s %s: %.1f%% of linear weights are zero (layers %.1f-%.1f%%)", cfg.method, cfg.pattern,
                100 * measured["sparsity"], 100 * measured["sparsity_min_layer"], 100 * measured["sparsity_max_layer"])
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.out)
