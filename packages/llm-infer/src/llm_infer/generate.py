"""Decoding strategies side by side: accuracy on checkable tasks, diversity and speed of each.

A language model only gives next-token probabilities; the decoding strategy turns them into text.
Greedy takes the most likely token; beam search keeps the `num_beams` most likely partial replies;
sampling draws from the distribution reshaped by a temperature and truncated by top-k (the k most
likely tokens; Fan et al. 2018, arXiv:1805.04833), top-p / nucleus (the smallest set holding p of the
mass; Holtzman et al. 2020, arXiv:1904.09751) or min-p (tokens at least p times as likely as the top
one; Nguyen et al. 2024, arXiv:2407.01082); a repetition penalty divides the logits of tokens already
seen (Keskar et al. 2019, arXiv:1909.05858). Contrastive search (Su et al. 2022, arXiv:2202.06417) is
tried too: transformers 5 moved it to a hub `custom_generate` repo, so offline it is reported
unavailable with the library's reason. Each strategy runs on the same test prompts and is scored on
exact match, distinct-n (unique n-grams / all n-grams of the replies; Li et al. 2016, arXiv:1510.03055)
and generated tokens per second. Each strategy is compared with greedy on the same prompts: the exact
match difference is bootstrapped over prompts (paired: prompt difficulty cancels), the tokens/s ratio
over the prompt batches, each timed once per strategy; both come with a 95% interval (`_lo`, `_hi`).

    llm-infer generate --model models/sft-full --data data/synth/sft \\
        --metrics reports/metrics/infer_generate.json --plots reports/plots/infer_generate
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_metrics

from llm_infer.runtime import (
    encode,
    eos_ids,
    load_model,
    load_prompts,
    paired_rate_ratio_ci,
    put_estimate,
    timed,
    write_table,
)

logger = logging.getLogger(__name__)
STRATEGIES = (
    "greedy", "beam", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "contrastive",
)


@dataclass
class GenerateConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Model folder (or hub id) to decode with."})
    data: str = field(
        default="data/synth/sft",
        metadata={"help": "Dataset folder with prompt/answer rows (llm-data synth's sft folder)."},
    )
    split: str = field(default="test", metadata={"help": "Split whose prompts are decoded."})
    max_samples: int = field(default=240, metadata={"help": "Prompts decoded per strategy (0 = the whole split)."})
    strategies: str = field(
        default=",".join(STRATEGIES), metadata={"help": f"Comma list of: {', '.join(STRATEGIES)}."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Longest reply, in tokens."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call."})
    num_beams: int = field(default=4, metadata={"help": "beam: partial replies kept per step."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (every sampling strategy)."})
    top_k: int = field(default=20, metadata={"help": "top_k: sample among the k most likely tokens."})
    top_p: float = field(default=0.9, metadata={"help": "top_p: sample within the smallest set holding p mass."})
    min_p: float = field(default=0.1, metadata={"help": "min_p: keep tokens >= min_p x the top token's probability."})
    repetition_penalty: float = field(
        default=1.3, metadata={"help": "repetition_penalty: logit divisor for seen tokens (greedy otherwise)."}
    )
    penalty_alpha: float = field(default=0.6, metadata={"help": "contrastive: degeneration penalty alpha (k=top_k)."})
    seed: int = field(default=0, metadata={"help": "Seed set before each strategy, so sampling is reproducible."})
    metrics: str = field(
        default="",
        metadata={"help": "Flat metrics JSON (<strategy>_exact_match, <strategy>_em_vs_greedy, ... with _lo/_hi "
                  "95% intervals); '' = skip."},
    )
    plots: str = field(default="", metadata={"help": "Folder for generate.csv (one row per strategy); '' = skip."})

    def __post_init__(self):
        names = self.strategy_list()
        unknown = [s for s in names if s not in STRATEGIES]
        if unknown or not names:
            raise ValueError(
                f"strategies: unknown {unknown or self.strategies!r}; choose from: {', '.join(STRATEGIES)}"
            )
        for name in ("max_new_tokens", "batch_size", "num_beams", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_samples < 0:
            raise ValueError(f"max_samples must be >= 0 (0 = all), got {self.max_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use the greedy strategy for 0), got {self.temperature}")
        for name in ("top_p", "min_p", "penalty_alpha"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.repetition_penalty < 1.0:
            raise ValueError(f"repetition_penalty must be >= 1 (1 = none), got {self.repetition_penalty}")

    def strategy_list(self) -> list[str]:
        return [s.strip() for s in self.strategies.split(",") if s.strip()]

    def generation_kwargs(self, strategy: str) -> dict:
        """The `generate` keywords of one strategy; everything else keeps transformers' defaults."""
        sample = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
        return {
            "greedy": {"do_sample": False},
            "beam": {"do_sample": False, "num_beams": self.num_beams, "early_stopping": True},
            "temperature": sample,
            "top_k": {**sample, "top_k": self.top_k},
            "top_p": {**sample, "top_p": self.top_p},
            "min_p": {**sample, "min_p": self.min_p},
            "repetition_penalty": {"do_sample": False, "repetition_penalty": self.repetition_penalty},
            "contrastive": {"do_sample": False, "penalty_alpha": self.penalty_alpha, "top_k": self.top_k},
        }[strategy]


def distinct_n(replies: list[list[int]], n: int) -> float:
    """Unique n-grams over all n-grams of the replies (token ids), 0-100; 0 when no reply is n long."""
    grams = [tuple(r[i:i + n]) for r in replies for i in range(len(r) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


def _reply_ids(new_ids, stop_ids: set[int]) -> list[list[int]]:
    """Each row's generated ids up to (not including) its first stop token: padding is not output."""
    replies = []
    for row in new_ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        replies.append(row[:cut])
    return replies


def _decode_all(model, tokenizer, prompts: list[str], cfg: GenerateConfig,
                strategy: str) -> tuple[list[list[int]], list[float]]:
    """Every prompt's reply (new token ids), and the wall seconds of each batch of `batch_size` prompts."""
    import torch
    from transformers import GenerationConfig

    eos = eos_ids(model, tokenizer)
    gen_config = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos),
        **cfg.generation_kwargs(strategy),
    )
    stop_ids = {tokenizer.pad_token_id, *eos}
    torch.manual_seed(cfg.seed)
    replies, seconds = [], []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = encode(tokenizer, prompts[start:start + cfg.batch_size], model.device)
        with torch.no_grad():
            ids, (batch_seconds,) = timed(lambda b=batch: model.generate(**b, generation_config=gen_config),
                                          model.device.type)
        replies += _reply_ids(ids[:, batch["input_ids"].shape[1]:], stop_ids)  # ids: (B, T_prompt + T_new)
        seconds.append(batch_seconds)
    return replies, seconds


def _unavailable(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _compare_with_greedy(measured: dict, metrics: dict) -> None:
    """`<strategy>_em_vs_greedy` (points, paired over prompts) and `<strategy>_tokens_per_s_vs_greedy`
    (x, paired over batches), each with its 95% interval."""
    from llm_eval.stats import paired_diff_ci

    if "greedy" not in measured:
        return
    greedy_correct, greedy_tokens, greedy_seconds = measured["greedy"]
    for strategy, (correct, tokens, seconds) in measured.items():
        if strategy == "greedy":
            continue
        put_estimate(metrics, f"{strategy}_em_vs_greedy", paired_diff_ci(correct, greedy_correct, scale=100.0))
        if sum(greedy_tokens) > 0:  # a ratio over no greedy tokens is undefined
            put_estimate(metrics, f"{strategy}_tokens_per_s_vs_greedy",
                         paired_rate_ratio_ci(tokens, seconds, greedy_tokens, greedy_seconds))


def run_generate(cfg: GenerateConfig) -> Path:
    from llm_eval.run import exact_match
    from llm_eval.stats import mean_ci
    from tqdm.auto import tqdm

    model, tokenizer = load_model(cfg.model)
    rows = load_prompts(cfg.data, cfg.split, cfg.max_samples)
    prompts = [row["prompt"] for row in rows]
    table, metrics = [], {"prompts": len(prompts)}
    measured = {}  # strategy -> (per-prompt correct, per-batch tokens, per-batch seconds): the paired items
    # Warm-up: the first generate call pays one-off allocations that would be billed to the first strategy.
    _decode_all(model, tokenizer, prompts[:cfg.batch_size], cfg, "greedy")
    for strategy in tqdm(cfg.strategy_list(), desc="strategies", unit="strategy"):
        row = {"strategy": strategy, "status": "ok", "reason": "", "exact_match": "", "distinct_1": "",
               "distinct_2": "", "mean_tokens": "", "tokens_per_s": ""}
        try:
            replies, seconds = _decode_all(model, tokenizer, prompts, cfg, strategy)
        except (ValueError, OSError, RuntimeError) as e:
            # transformers raises these when a strategy needs a hub repo (offline) or is not supported.
            row.update(status="unavailable", reason=_unavailable(e))
            logger.warning("%s: unavailable: %s", strategy, row["reason"])
            table.append(row)
            continue
        texts = tokenizer.batch_decode(replies, skip_special_tokens=True)
        scores, correct = exact_match(rows, texts)
        tokens = [sum(map(len, replies[i:i + cfg.batch_size])) for i in range(0, len(replies), cfg.batch_size)]
        row.update(
            exact_match=scores["exact_match"], distinct_1=distinct_n(replies, 1), distinct_2=distinct_n(replies, 2),
            mean_tokens=sum(tokens) / len(replies), tokens_per_s=sum(tokens) / sum(seconds),
        )
        measured[strategy] = (correct, tokens, seconds)
        put_estimate(metrics, f"{strategy}_exact_match", mean_ci(correct, scale=100.0))
        for key in ("distinct_1", "distinct_2", "tokens_per_s"):
            metrics[f"{strategy}_{key}"] = row[key]
        logger.info("%s: EM %.1f, distinct-2 %.1f, %.0f tokens/s", strategy, row["exact_match"],
                    row["distinct_2"], row["tokens_per_s"])
        table.append(row)
    _compare_with_greedy(measured, metrics)
    if cfg.plots:
        write_table(Path(cfg.plots) / "generate.csv", table)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.plots or cfg.metrics or ".")
