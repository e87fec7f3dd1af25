"""Supervised fine-tuning (SFT): full, LoRA, or QLoRA, with trl's SFTTrainer.

SFT teaches a pre-trained model to follow instructions by training on prompt/response pairs, with
the loss on the response tokens only (InstructGPT, Ouyang et al. 2022; FLAN, Wei et al. 2021).
`--method full` updates every weight. `lora` freezes them and trains low-rank updates W + BA on the
linear layers (LoRA, Hu et al. 2021, arXiv:2106.09685) through peft. `qlora` does the same on a base
quantized to 4-bit NormalFloat with bitsandbytes (QLoRA, Dettmers et al. 2023, arXiv:2305.14314),
so the frozen weights take a quarter of the memory while the adapters train in full precision.

    llm-train sft --method lora --model models/base --data data/synth/messages --out models/sft-lora
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, weights_mb, write_metrics

from llm_train.distributed import relaunch
from llm_train.loop import LoopConfig, load_splits, write_loss_curves

logger = logging.getLogger(__name__)
METHODS = ("full", "lora", "qlora")


@dataclass
class SFTConfig(LoopConfig):
    method: str = field(default="full", metadata={"help": f"Which weights train: {', '.join(METHODS)}."})
    model: str = field(default="models/base", metadata={"help": "Base model folder or hub id."})
    data: str = field(
        default="data/synth/messages",
        metadata={"help": 'Dataset folder: conversational {"messages"} or {"prompt","completion"} rows.'},
    )
    out: str = field(default="models/sft-full", metadata={"help": "Output folder (model, or adapter for LoRA)."})
    max_length: int = field(default=256, metadata={"help": "Truncate (or pack) sequences to this many tokens."})
    packing: bool = field(default=False, metadata={"help": "Pack several examples into one sequence."})
    completion_only_loss: bool = field(
        default=True, metadata={"help": "Loss on the response tokens only (assistant turns for messages)."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r (lora/qlora)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha; the update is scaled by alpha/r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    train_special_tokens: bool = field(
        default=True,
        metadata={"help": "LoRA/QLoRA: also train the embedding rows of the tokenizer's added special "
                  "tokens (chat roles), which pre-training never saw (peft trainable_token_indices)."},
    )
    lora_target: str = field(
        default="all-linear", metadata={"help": "Modules that get adapters: 'all-linear' or a comma list."}
    )
    save_merged: bool = field(
        default=False,
        metadata={"help": "LoRA/QLoRA: also write the adapter merged into the base to <out>/merged (QLoRA's "
                  "into the unquantized base, as its paper deploys it), a plain folder later stages load."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.save_merged and self.method == "full":
            raise ValueError("save_merged applies to --method lora or qlora (full SFT writes a whole model)")
        for name in ("max_length", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


def _load_model(cfg: SFTConfig, name: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32}
    if cfg.method == "qlora":
        # Frozen base in 4-bit NF4 with double quantization; adapters and compute stay in fp32 on CPU.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        )
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if cfg.method == "qlora":
        keep_4bit_layers_differentiable(model)
    return model


def keep_4bit_layers_differentiable(model) -> None:
    """Turn off bitsandbytes' CPU inference packing on every 4-bit layer. On CPUs with AVX512-BF16,
    bitsandbytes 0.50 repacks a layer's weights at its first forward in eval mode (the Trainer's first
    evaluation) and from then on computes it with a bf16 kernel that has no backward: gradients stop
    at every frozen 4-bit layer and only the LoRA branches still learn. On such a CPU, QLoRA scored 10.5
    exact-match points below full SFT; on AVX2 CPUs, which never repack, it was within noise of it."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _peft_config(cfg: SFTConfig, tokenizer):
    if cfg.method == "full":
        return None
    from peft import LoraConfig

    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",")]
    # Chat-role tokens added for the template have untrained (random) embeddings in a base that only
    # saw plain text, and LoRA freezes embeddings: the model would have to read its turn markers
    # through noise. Training just those rows costs a few hundred parameters.
    role_ids = tokenizer.convert_tokens_to_ids(list(getattr(tokenizer, "extra_special_tokens", None) or []))
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
        trainable_token_indices={"embed_tokens": role_ids} if cfg.train_special_tokens and role_ids else None,
    )


# trl finds the assistant tokens of a conversation through {% generation %} markers in the chat template.
GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


def _last_reply_as_completion(row: dict) -> dict:
    *prompt, reply = row["messages"]
    return {"prompt": prompt, "completion": [reply]}


def _keep_training_columns(dataset, tokenizer):
    """Drop metadata columns (category, answer): trl takes only its standard fields. Conversations for a
    chat template without {% generation %} markers (most hub models', TinyLlama's too) become
    conversational prompt-completion rows, whose loss mask trl takes from the completion boundary."""
    cols = dataset["train"].column_names
    keep = {"messages"} if "messages" in cols else {"prompt", "completion"}
    if not keep <= set(cols):
        raise ValueError(f"SFT data needs 'messages' or 'prompt'+'completion' fields, found {cols}")
    dataset = dataset.remove_columns([c for c in cols if c not in keep])
    if "messages" in keep and not GENERATION_MARK.search(tokenizer.chat_template or ""):
        dataset = dataset.map(_last_reply_as_completion, remove_columns=["messages"])
    return dataset


# PEFT keeps these as sets and saves them in set order, which follows Python's per-process string hashing:
# two runs of one training (PYTHONHASHSEED differs) wrote the same weights with target_modules reordered.
SET_VALUED = ("target_modules", "modules_to_save", "exclude_modules")


def sort_adapter_modules(folder: Path) -> None:
    """Rewrite a saved PEFT `adapter_config.json` with its module lists sorted (no-op for a full model)."""
    path = Path(folder) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    config.update({k: sorted(config[k]) for k in SET_VALUED if isinstance(config.get(k), list)})
    path.write_text(json.dumps(config, indent=2, sort_keys=True))  # PEFT's own layout


def _merged_unquantized(adapter: Path):
    """A QLoRA adapter folder merged into its base loaded in full precision: merging into the NF4 weights
    would round the update away and leave a 4-bit model that later stages cannot train."""
    import torch
    from peft import AutoPeftModelForCausalLM

    return AutoPeftModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32).merge_and_unload()


def run_sft(cfg: SFTConfig) -> Path:
    from llm_data.tokenizer import load_tokenizer
    from transformers import set_seed
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    if relaunch(cfg, "llm_train.cli", "sft"):
        return Path(cfg.out)
    name = require_local_or_hub(cfg.model, "llm-train pretrain")
    tokenizer = load_tokenizer(name)
    data = _keep_training_columns(load_splits(cfg.data), tokenizer)
    conversational = "messages" in data["train"].column_names
    model = _load_model(cfg, name)
    # SFTTrainer wraps the model with the LoRA adapters before Trainer seeds the RNG, so the adapters'
    # random init (and with it the whole run) would differ between runs without this.
    set_seed(cfg.seed)
    args = TrlSFTConfig(
        **cfg.trainer_args(),
        **cfg.checkpoint_args(),
        max_length=cfg.max_length,
        packing=cfg.packing,
        # Completion-only loss: for conversations the loss mask comes from the template's
        # {% generation %} span; for prompt/completion rows from the completion boundary.
        assistant_only_loss=cfg.completion_only_loss and conversational,
        completion_only_loss=cfg.completion_only_loss and not conversational,
        # Plain NLL: trl's default chunked loss saves logit memory on big vocabularies, but it reads
        # `lm_head.bias`, which peft's trainable-token wrapper of a tied head does not expose.
        loss_type="nll",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        peft_config=_peft_config(cfg, tokenizer),
    )
    run = cfg.train(trainer)
    eval_loss = trainer.evaluate()["eval_loss"]
    model = trainer.model
    if cfg.method == "full":
        trainable = total = sum(p.numel() for p in model.parameters())
    else:
        trainable, total = model.get_nb_trainable_parameters()  # counts 4-bit weights unpacked
    with cfg.saving() as tmp:
        trainer.save_model(str(tmp))  # the adapter only, for lora/qlora
        sort_adapter_modules(tmp)
        tokenizer.save_pretrained(tmp)
        if cfg.save_merged and cfg.main_process:
            merged = model.merge_and_unload() if cfg.method == "lora" else _merged_unquantized(tmp)
            merged.save_pretrained(tmp / "merged")
            tokenizer.save_pretrained(tmp / "merged")
    if not cfg.main_process:
        return Path(cfg.out)
    cfg.done()
    write_metrics(
        cfg.metrics,
        {
            **run,
            "eval_loss": eval_loss,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": 100.0 * trainable / total,
            "size_mb": weights_mb(cfg.out),
        },
    )
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
