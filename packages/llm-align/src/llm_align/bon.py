"""Best-of-n: sample n replies from the SFT policy, keep the one the proxy reward model scores highest.

No training at all: the policy is SFT plus a reranker, and its KL to SFT is known in closed form,
KL(best-of-n || SFT) = log n - (n - 1)/n (Stiennon et al. 2020, appendix; Gao et al. 2022, §2.3). Best-of-n
is the simplest way to optimise a reward model, and the one over-optimisation shows up in most cleanly:
Gao, Schulman & Hilton ('Scaling Laws for Reward Model Overoptimization', arXiv:2210.10760) plot the gold
reward of best-of-n against d = sqrt(KL) and fit R(d) = d (alpha - beta d). Here the gold is exact
(`llm_eval.gold`): every selected reply is graded by rule on the held-out sums.

From N sampled replies per prompt the value of best-of-n for every n <= N is computed exactly as the
expectation over all n-subsets of the N (Gao et al.'s unbiased estimator): sorted by proxy score, the i-th
lowest of N is the best of a random n-subset with probability C(i-1, n-1) / C(N, n).

    llm-align best_of_n --model models/sft-full --reward_model models/reward-gold_proxy --data data/gold \\
        --reference_items reports/items/gold_sft_full --n 1,2,4,8,16,32 --out reports/metrics/gold_bon.json
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_local_or_hub, write_jsonl, write_metrics
from llm_eval.stats import mean_ci, to_metrics

logger = logging.getLogger(__name__)
SERIES = ("proxy", "gold", "gold_pass", "win_rate")
COLUMNS = ("n", "kl", "sqrt_kl", *(f"{s}{suffix}" for s in SERIES for suffix in ("", "_lo", "_hi")))


@dataclass
class BestOfNConfig:
    model: str = field(default="models/sft-full", metadata={"help": "The policy whose replies are sampled (SFT)."})
    reward_model: str = field(
        default="models/reward-gold_proxy", metadata={"help": "The proxy reward model that picks the best reply."}
    )
    data: str = field(
        default="data/gold", metadata={"help": "Sums to answer (llm-data gold); graded by the exact gold."}
    )
    split: str = field(default="test", metadata={"help": "Which split's prompts to answer."})
    reference_items: str = field(
        default="",
        metadata={"help": "The SFT reference's `llm-eval align --items` folder on the same split: gives the gold "
                          "win rate against its greedy replies."},
    )
    n: str = field(
        default="1,2,4,8,16,32", metadata={"help": "Comma-separated n; the largest is how many are sampled."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply."})
    batch_size: int = field(default=256, metadata={"help": "Prompts per sampling batch."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled replies and the bootstrap."})
    out: str = field(default="", metadata={"help": "Metrics JSON: per n, proxy and gold reward, pass, win rate, KL."})
    items: str = field(default="", metadata={"help": "Write every sample with its proxy and gold scores here."})
    plots: str = field(default="", metadata={"help": "Folder for bon.csv: one row per n, against KL and sqrt(KL)."})

    def __post_init__(self):
        try:
            self.sizes = sorted({int(x) for x in self.n.split(",") if x.strip()})
        except ValueError:
            raise ValueError(f"n: {self.n!r} is not a comma-separated list of integers (e.g. 1,2,4,8)") from None
        if not self.sizes or self.sizes[0] < 1:
            raise ValueError(f"n: every n must be >= 1, got {self.n!r}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def analytic_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1)/n nats, for a base with no repeated replies."""
    return math.log(n) - (n - 1) / n


def best_of_weights(n: int, size: int) -> list[float]:
    """P(the i-th lowest of `size` ranked samples is the best of a random n-subset), i = 1..size."""
    total = math.comb(size, n)
    return [math.comb(i - 1, n - 1) / total for i in range(1, size + 1)]


def expected_best(proxy: list[float], values: list[float], n: int) -> float:
    """E[value of the reply with the highest proxy score among n of these samples drawn without replacement];
    equal proxy scores share their weight, so identical replies count as one draw would."""
    order = sorted(range(len(proxy)), key=lambda i: proxy[i])
    weights = best_of_weights(n, len(proxy))
    by_rank = [0.0] * len(proxy)
    start = 0
    while start < len(order):  # a run of tied proxy scores: each gets the run's mean weight
        end = start
        while end + 1 < len(order) and proxy[order[end + 1]] == proxy[order[start]]:
            end += 1
        share = sum(weights[start : end + 1]) / (end - start + 1)
        for rank in range(start, end + 1):
            by_rank[rank] = share
        start = end + 1
    return sum(w * values[i] for w, i in zip(by_rank, order, strict=True))


def _samples(cfg: BestOfNConfig, prompts: list[str]) -> list[list[str]]:
    import torch
    from llm_eval.run import load_tokenizer
    from transformers import AutoModelForCausalLM

    from llm_align.collect import sample_k

    name = require_local_or_hub(cfg.model, "llm-train sft")
    tokenizer = load_tokenizer(name)
    policy = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()
    return sample_k(policy, tokenizer, prompts, cfg.sizes[-1], cfg.max_new_tokens, cfg.seed, cfg.batch_size)


def run_best_of_n(cfg: BestOfNConfig) -> Path:
    from llm_eval.align import load_prompts, reference_answers
    from llm_eval.gold import gold_scores, passes
    from llm_eval.judge import conversation, load_reward_model, reward_scores
    from tqdm.auto import tqdm

    rows = load_prompts(cfg.data, cfg.split)
    prompts = [r["prompt"] for r in rows]
    reference = reference_answers(cfg.reference_items, rows, f"{cfg.data}/{cfg.split}")
    judge = load_reward_model(require_local_or_hub(cfg.reward_model, "llm-align reward"))
    replies = _samples(cfg, prompts)
    size = cfg.sizes[-1]
    proxy, gold = [], []
    for prompt, texts in tqdm(list(zip(prompts, replies, strict=True)), desc="scoring", unit="prompt"):
        proxy.append(reward_scores(*judge, [conversation(prompt, t) for t in texts], batch_size=size))
        gold.append(gold_scores([prompt] * size, texts))
    groups = [r["group"] for r in rows]
    metrics, curve = {"n_prompts": len(rows), "samples_per_prompt": size}, []
    for n in cfg.sizes:
        per_prompt = {
            "proxy": [expected_best(p, p, n) for p in proxy],
            "gold": [expected_best(p, g, n) for p, g in zip(proxy, gold, strict=True)],
            "gold_pass": [expected_best(p, [float(passes(x)) for x in g], n) for p, g in zip(proxy, gold, strict=True)],
        }
        if reference is not None:  # ties count half, as llm_eval.judge.win_tie_loss
            per_prompt["win_rate"] = [
                expected_best(p, [float(x > ref["gold_score"]) + 0.5 * float(x == ref["gold_score"]) for x in g], n)
                for p, g, ref in zip(proxy, gold, reference, strict=True)
            ]
        row = {"n": n, "kl": analytic_kl(n), "sqrt_kl": math.sqrt(analytic_kl(n))}
        metrics[f"n{n}_kl"] = row["kl"]
        for name, values in per_prompt.items():
            scale = 100.0 if name in ("gold_pass", "win_rate") else 1.0
            estimate = mean_ci(values, scale, cfg.seed, groups)
            metrics.update(to_metrics(f"n{n}_{name}", estimate))
            row.update({name: estimate.value, f"{name}_lo": estimate.lo, f"{name}_hi": estimate.hi})
        curve.append(row)
        logger.info("best-of-%d: %s", n, {k: round(v, 4) for k, v in row.items() if not k.endswith(("_lo", "_hi"))})
    if cfg.items:
        with atomic_dir(cfg.items) as tmp:
            write_jsonl(tmp / "samples.jsonl", (
                {"prompt": p, "replies": t, "proxy": s, "gold": g}
                for p, t, s, g in zip(prompts, replies, proxy, gold, strict=True)
            ))
    if cfg.plots:
        folder = Path(cfg.plots)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "bon.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[c for c in COLUMNS if c in curve[0]])
            writer.writeheader()
            writer.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in curve)
    write_metrics(cfg.out, metrics)
    return Path(cfg.out or cfg.items or ".")
