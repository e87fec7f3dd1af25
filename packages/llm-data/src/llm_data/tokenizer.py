"""Train a byte-level BPE tokenizer with a chat template and save it as a transformers tokenizer.

Byte-level BPE (Sennrich et al. 2016; byte-level as in GPT-2, Radford et al. 2019) starts from the
256 byte values, so no input is ever out of vocabulary, and greedily merges the most frequent pairs
into a vocabulary of the size asked for. Digits are split one by one before merging, so numbers keep
a regular structure the model can learn arithmetic on. The chat template marks each turn with a role
token and a space, and ends it with `</s>`; the assistant turn sits in `{% generation %}` so trainers can compute
the loss on the assistant's tokens only.

    llm-data tokenizer --data data/synth --out data/tokenizer --vocab_size 1024
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, read_jsonl

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Turns render as `<|role|> content</s>\n`. The space after the role token matters: byte-level BPE
# gives " green" and "green" different tokens, so with the space a reply uses the same tokens as the
# words it copies or recalls from the prompt and from pre-training text. The generation prompt
# ends at the role token (no trailing space) so the model emits the space-prefixed token itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{ ' ' + message['content'] + '</s>' }}{% endgeneration %}"
    "{%- else %}{{ ' ' + message['content'] + '</s>' }}{%- endif %}"
    "{{ '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>' }}{%- endif %}"
)
# Text fields of each dataset shape that the tokenizer should see.
_SHAPE_FIELDS = {"pretrain": ("text",), "sft": ("prompt", "completion"), "cot": ("prompt", "completion")}


# transformers 5 copies these load-time arguments into a loaded tokenizer's init kwargs, and so into every
# folder saved from it; `local_files_only` follows HF_HUB_OFFLINE, so one stage saved other bytes with and
# without that variable set. They describe how a folder was read, not the tokenizer.
LOAD_TIME_KWARGS = ("local_files_only", "is_local")


def load_tokenizer(name: str):
    """`AutoTokenizer.from_pretrained(name)` without the load-time arguments, so saving it again writes
    the same `tokenizer_config.json` whatever the environment."""
    from transformers import AutoTokenizer

    return without_load_time_kwargs(AutoTokenizer.from_pretrained(name))


def without_load_time_kwargs(tokenizer):
    """Drop `LOAD_TIME_KWARGS` from a tokenizer loaded by another library (sentence-transformers) before it
    is saved; returns the tokenizer."""
    for key in LOAD_TIME_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


@dataclass
class TokenizerConfig:
    data: str = field(
        default="data/synth",
        metadata={"help": "Folder of datasets from `llm-data synth` (its pretrain/sft/cot train splits), "
                  "or one dataset folder whose train.jsonl has a `text` field."},
    )
    out: str = field(default="data/tokenizer", metadata={"help": "Output tokenizer folder."})
    vocab_size: int = field(default=1024, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair count for a merge."})
    model_max_length: int = field(default=256, metadata={"help": "Context length recorded in the tokenizer."})
    seed: int = field(default=0, metadata={"help": "Recorded for reproducibility; BPE training is deterministic."})

    def __post_init__(self):
        if self.vocab_size < 256 + 8:
            raise ValueError(f"vocab_size must be >= 264 (256 bytes + special tokens), got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.model_max_length < 16:
            raise ValueError(f"model_max_length must be >= 16, got {self.model_max_length}")


def _training_texts(data: Path) -> list[str]:
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such dataset folder (run `llm-data synth --out {data}` first)")
    if (data / "train.jsonl").is_file():
        return [row["text"] for row in read_jsonl(data / "train.jsonl", {"text": str})]
    texts = []
    for shape, fields in _SHAPE_FIELDS.items():
        path = data / shape / "train.jsonl"
        if path.is_file():
            for row in read_jsonl(path, dict.fromkeys(fields, str)):
                texts += [row[f] for f in fields]
    if not texts:
        raise FileNotFoundError(f"{data}: found neither train.jsonl nor {{pretrain,sft,cot}}/train.jsonl")
    return texts


def run_tokenizer(cfg: TokenizerConfig) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = _training_texts(Path(cfg.data))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # BOS is prepended to plain encoded text (as Llama does); the chat template writes its own BOS, so
    # rendered conversations are tokenized with add_special_tokens=False.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS), model_max_length=cfg.model_max_length,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    with atomic_dir(cfg.out) as tmp:
        hf.save_pretrained(tmp)
    return Path(cfg.out)
