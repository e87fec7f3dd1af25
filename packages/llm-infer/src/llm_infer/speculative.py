"""Speculative decoding: a cheap guesser proposes tokens, the model checks them all in one forward pass.

Greedy decoding runs the full model once per token. Speculative (assisted) decoding lets a small
draft model propose `k` tokens, then runs the target once over all of them and keeps the longest
prefix the target agrees with, plus the target's own next token; under greedy decoding the output is
exactly the target's greedy output, only fewer target passes are needed (Leviathan et al. 2023,
arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318). Here the draft is the distilled student,
which shares the tokenizer. Prompt-lookup decoding (Saxena 2023) needs no draft model: it proposes
the tokens that followed the last matching n-gram earlier in the context, which pays off when the
reply copies from the prompt (summaries, quotes, code edits). Both are transformers' own
`generate(assistant_model=...)` and `generate(prompt_lookup_num_tokens=...)`; this command checks the
outputs equal plain greedy token for token and measures the speedup and the acceptance rate
(accepted / proposed draft tokens, counted on transformers' candidate generator). Every prompt is timed
with each method, so the speedup (greedy's total time over the method's) gets a 95% interval
bootstrapped over prompts, paired: a prompt's length and difficulty cancel.

    llm-infer speculative --model models/sft-full --draft models/student-kd --data data/synth/sft \\
        --metrics reports/metrics/infer_speculative.json --plots reports/plots/infer_speculative
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_metrics

from llm_infer.runtime import encode, load_model, load_prompts, put_estimate, timed, write_table

logger = logging.getLogger(__name__)
METHODS = ("assisted", "prompt_lookup")
SCHEDULES = ("constant", "heuristic")


@dataclass
class SpeculativeConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Target model folder (its greedy output is kept)."})
    draft: str = field(
        default="models/student-kd",
        metadata={"help": "Draft model folder with the same tokenizer (the distilled student); '' = skip assisted."},
    )
    data: str = field(default="data/synth/sft", metadata={"help": "Dataset folder with prompt rows."})
    split: str = field(default="test", metadata={"help": "Split whose prompts are decoded."})
    categories: str = field(
        default="summarization",
        metadata={"help": "Comma list of task categories to take prompts from ('' = all): long replies show "
                  "the speedup; one-word answers cannot."},
    )
    max_samples: int = field(default=24, metadata={"help": "Prompts decoded (one at a time: batch size 1)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest reply, in tokens (decoding stops at EOS)."})
    methods: str = field(default=",".join(METHODS), metadata={"help": f"Comma list of: {', '.join(METHODS)}."})
    num_assistant_tokens: int = field(default=5, metadata={"help": "assisted: draft tokens proposed per step."})
    assistant_schedule: str = field(
        default="constant",
        metadata={"help": "assisted: 'constant' k, or 'heuristic' (+2 after a full accept, -1 after a miss)."},
    )
    prompt_lookup_num_tokens: int = field(default=10, metadata={"help": "prompt_lookup: tokens proposed per match."})
    max_matching_ngram_size: int = field(default=2, metadata={"help": "prompt_lookup: longest n-gram looked up."})
    seed: int = field(default=0, metadata={"help": "Seed set before each method (decoding is greedy)."})
    metrics: str = field(
        default="", metadata={"help": "Flat metrics JSON (<method>_speedup with _lo/_hi, ...); '' = skip."}
    )
    plots: str = field(default="", metadata={"help": "Folder for speculative.csv (one row per method); '' = skip."})

    def __post_init__(self):
        unknown = [m for m in self.method_list() if m not in METHODS]
        if unknown or not self.method_list():
            raise ValueError(f"methods: unknown {unknown or self.methods!r}; choose from: {', '.join(METHODS)}")
        if "assisted" in self.method_list() and not self.draft.strip():
            raise ValueError("methods includes 'assisted' but draft is ''; pass --draft <folder> or drop 'assisted'")
        if self.assistant_schedule not in SCHEDULES:
            raise ValueError(
                f"assistant_schedule must be one of {', '.join(SCHEDULES)}, got {self.assistant_schedule!r}"
            )
        for name in ("max_samples", "max_new_tokens", "num_assistant_tokens", "prompt_lookup_num_tokens",
                     "max_matching_ngram_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    def method_kwargs(self, method: str, draft) -> dict:
        if method == "greedy":
            return {}
        if method == "assisted":
            return {"assistant_model": draft, "num_assistant_tokens": self.num_assistant_tokens,
                    "num_assistant_tokens_schedule": self.assistant_schedule}
        return {"prompt_lookup_num_tokens": self.prompt_lookup_num_tokens,
                "max_matching_ngram_size": self.max_matching_ngram_size}


class _AcceptanceCounter:
    """Counts draft tokens proposed and accepted by wrapping the candidate generator transformers builds."""

    def __init__(self, model):
        self.proposed = self.accepted = 0
        original = model._get_candidate_generator

        def wrapped(*args, **kwargs):
            generator = original(*args, **kwargs)
            get, update = generator.get_candidates, generator.update_candidate_strategy

            def get_candidates(input_ids, **kw):
                candidates, logits = get(input_ids, **kw)  # (1, T + k)
                self.proposed += candidates.shape[1] - input_ids.shape[1]
                return candidates, logits

            def update_candidate_strategy(input_ids, scores, num_matches):
                self.accepted += int(num_matches)
                return update(input_ids, scores, num_matches)

            generator.get_candidates, generator.update_candidate_strategy = get_candidates, update_candidate_strategy
            return generator

        model._get_candidate_generator = wrapped

    @property
    def rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def _decode_each(model, tokenizer, prompts: list[str], cfg: SpeculativeConfig,
                 kwargs: dict) -> tuple[list[list[int]], list[float]]:
    """Greedy replies (new token ids) one prompt at a time (assisted generation supports batch size 1 only),
    and the wall seconds of each."""
    import torch

    torch.manual_seed(cfg.seed)
    outputs, seconds = [], []
    for prompt in prompts:
        batch = encode(tokenizer, [prompt], model.device)
        with torch.no_grad():
            ids, (prompt_seconds,) = timed(
                lambda b=batch: model.generate(**b, do_sample=False, max_new_tokens=cfg.max_new_tokens,
                                               pad_token_id=tokenizer.pad_token_id, **kwargs),
                model.device.type,
            )
        outputs.append(ids[0, batch["input_ids"].shape[1]:].tolist())  # ids: (1, T_prompt + T_new)
        seconds.append(prompt_seconds)
    return outputs, seconds


def _check_same_vocab(tokenizer, draft_tokenizer, draft: str) -> None:
    if tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise ValueError(f"{draft}: the draft's tokenizer differs from the target's; assisted decoding here "
                         "needs the same vocabulary (distil the draft from the target)")


def run_speculative(cfg: SpeculativeConfig) -> Path:
    from llm_eval.stats import paired_speedup_ci
    from tqdm.auto import tqdm

    model, tokenizer = load_model(cfg.model)
    draft = None
    if "assisted" in cfg.method_list():
        draft, draft_tokenizer = load_model(cfg.draft)
        _check_same_vocab(tokenizer, draft_tokenizer, cfg.draft)
    prompts = [r["prompt"] for r in load_prompts(cfg.data, cfg.split, cfg.max_samples, cfg.categories)]
    counter = _AcceptanceCounter(model)

    _decode_each(model, tokenizer, prompts[:1], cfg, {})  # warm-up: one-off allocations are not decoding time
    reference, base_runs = _decode_each(model, tokenizer, prompts, cfg, {})
    base_seconds = sum(base_runs)
    n_tokens = sum(len(r) for r in reference)
    table = [{"method": "greedy", "tokens_per_s": n_tokens / base_seconds, "speedup": 1.0, "acceptance_rate": "",
              "identical_fraction": 1.0, "seconds": base_seconds}]
    metrics = {"prompts": len(prompts), "new_tokens": n_tokens, "greedy_tokens_per_s": n_tokens / base_seconds,
               "target_parameters": model.num_parameters()}
    if draft is not None:
        metrics["draft_parameters"] = draft.num_parameters()
    for method in tqdm(cfg.method_list(), desc="methods", unit="method"):
        kwargs = cfg.method_kwargs(method, draft)
        _decode_each(model, tokenizer, prompts[:1], cfg, kwargs)
        counter.proposed = counter.accepted = 0
        outputs, runs = _decode_each(model, tokenizer, prompts, cfg, kwargs)
        seconds = sum(runs)
        identical = sum(o == r for o, r in zip(outputs, reference, strict=True)) / len(prompts)
        # Speedup at equal work: the same greedy tokens, so tokens/s of each counts the reference's tokens.
        speedup = paired_speedup_ci(base_runs, runs)
        row = {"method": method, "tokens_per_s": n_tokens / seconds, "speedup": speedup.value,
               "acceptance_rate": counter.rate, "identical_fraction": identical, "seconds": seconds}
        table.append(row)
        metrics[f"{method}_tokens_per_s"] = row["tokens_per_s"]
        put_estimate(metrics, f"{method}_speedup", speedup)
        for key in ("acceptance_rate", "identical_fraction"):
            metrics[f"{method}_{key}"] = row[key]
        logger.info("%s: %.2fx greedy, acceptance %.2f, identical %.0f%%", method, row["speedup"], counter.rate,
                    100 * identical)
        if identical < 1.0:
            logger.warning("%s: %d/%d replies differ from plain greedy", method,
                           round((1 - identical) * len(prompts)), len(prompts))
    if cfg.plots:
        write_table(Path(cfg.plots) / "speculative.csv", table)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.plots or cfg.metrics or ".")
