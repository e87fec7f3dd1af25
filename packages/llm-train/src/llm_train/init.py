"""Build a randomly initialised Llama-style decoder (or BERT-style encoder) sized for a tokenizer.

The Llama architecture (Touvron et al. 2023, arXiv:2302.13971) is a decoder-only transformer with
pre-RMSNorm, rotary position embeddings (RoPE) and SwiGLU feed-forward blocks. `--arch bert` builds
the encoder of BERT (Devlin et al. 2019, arXiv:1810.04805) instead: bidirectional attention and a
masked-LM head, for `llm-train pretrain --objective mlm`; `--arch modernbert` the same task on
ModernBERT's encoder (Warner et al. 2024, arXiv:2412.13663: pre-normalisation, RoPE, GeGLU), which
leaves the unigram plateau where a post-norm BERT of this size stays on it. Both add a mask token
to the tokenizer.
`--size` picks a preset; the vocabulary, special-token ids and context length come from the
tokenizer, so the model and tokenizer always agree.

    llm-train init --size tiny --tokenizer data/tokenizer --out models/init
    llm-train init --arch bert --size tiny --tokenizer data/tokenizer --out models/init-bert
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_local_or_hub

ARCHS = ("llama", "bert", "modernbert")
MASK_TOKEN = "<mask>"
# hidden, layers, heads, kv heads, intermediate (SwiGLU; BERT's GELU block) — 'tiny' trains in minutes on 2 CPU cores.
SIZES = {
    "nano": (64, 2, 4, 4, 128),
    "tiny": (128, 4, 4, 4, 512),
    "small": (256, 6, 8, 4, 1024),
    "base": (512, 8, 8, 4, 1536),
    # TinyLlama-1.1B's shape (the seed's first real model), for GPU throughput benchmarks: `invoke bench --gpu`
    "1b": (2048, 22, 32, 4, 5632),
}


@dataclass
class InitConfig:
    arch: str = field(
        default="llama",
        metadata={"help": "llama: a causal decoder (pretrain --objective clm); bert or modernbert: a masked-LM "
                  "encoder (pretrain --objective mlm), with a mask token added to the tokenizer."},
    )
    size: str = field(default="tiny", metadata={"help": f"Model size preset: {', '.join(SIZES)}."})
    tokenizer: str = field(default="data/tokenizer", metadata={"help": "Tokenizer folder (or hub id)."})
    out: str = field(default="models/init", metadata={"help": "Output model folder."})
    max_position_embeddings: int = field(
        default=0, metadata={"help": "Context length; 0 = the tokenizer's model_max_length."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the weight initialisation."})
    init_std: float = field(
        default=0.0,
        metadata={"help": "Std of the normal weight init; 0 = 1.5/sqrt(hidden size). Llama's 0.02 suits "
                  "4096-wide models: a 128-wide model then sits on a long plateau before it learns to copy."},
    )

    def __post_init__(self):
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0 (0 = 1.5/sqrt(hidden)), got {self.init_std}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of: {', '.join(ARCHS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose one of: {', '.join(SIZES)}")
        if self.max_position_embeddings < 0:
            raise ValueError(f"max_position_embeddings must be >= 0, got {self.max_position_embeddings}")


def _encoder(cfg: InitConfig, tok, context: int):
    """A masked-LM encoder of the size preset, for the tokenizer plus a mask token."""
    from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

    if tok.mask_token is None:
        tok.add_special_tokens({"mask_token": MASK_TOKEN})
    hidden, layers, heads, _, inter = SIZES[cfg.size]
    shape = dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                 intermediate_size=inter, max_position_embeddings=context, pad_token_id=tok.pad_token_id,
                 initializer_range=cfg.init_std or 1.5 / hidden**0.5)
    if cfg.arch == "bert":
        # One segment: no next-sentence pairs (RoBERTa, Liu et al. 2019, arXiv:1907.11692, dropped them).
        return BertForMaskedLM(BertConfig(**shape, type_vocab_size=1))
    # Every layer attends globally: the blocks are no longer than ModernBERT's local window anyway.
    return ModernBertForMaskedLM(ModernBertConfig(
        **shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, cls_token_id=tok.bos_token_id,
        sep_token_id=tok.eos_token_id, global_attn_every_n_layers=1))


def run_init(cfg: InitConfig) -> Path:
    import torch
    from llm_data.tokenizer import load_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(require_local_or_hub(cfg.tokenizer, "llm-data tokenizer"))
    hidden, layers, heads, kv_heads, inter = SIZES[cfg.size]
    context = cfg.max_position_embeddings or min(tok.model_max_length, 4096)
    if cfg.arch != "llama":
        torch.manual_seed(cfg.seed)
        return _save(cfg, _encoder(cfg, tok, context), tok)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=inter,
        max_position_embeddings=context,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        # Tied input/output embeddings: at this size the two vocab matrices would be a third of the model.
        tie_word_embeddings=True,
        # Attention logits scale with the square of the q/k weights: at std 0.02 and width 128 every
        # head starts uniform and gets almost no gradient, so induction heads (copying from context)
        # took > 3000 steps to form; at ~1/sqrt(width) they form within ~300 (measured on copy drills).
        initializer_range=cfg.init_std or 1.5 / hidden**0.5,
    )
    torch.manual_seed(cfg.seed)
    return _save(cfg, LlamaForCausalLM(config), tok)


def _save(cfg: InitConfig, model, tok) -> Path:
    with atomic_dir(cfg.out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(cfg.out)
