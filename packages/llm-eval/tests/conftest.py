"""Tiny fixtures built in the test session: a byte-level BPE chat tokenizer, a 2-layer Llama, datasets."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402

# The chat template of docs/contracts.md: BOS, then `<|role|>\n{content}</s>\n` per turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '</s>' }}{% endgeneration %}"
    "{%- else %}{{ message['content'] + '</s>' }}{%- endif %}"
    "{{ '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)

# (prompt, completion, category, answer): the answers test normalisation against a model that always
# replies "Paris." — right for facts (3/3), wrong for string (0/2), half right for arithmetic (1/2).
SFT_ROWS = [
    ("What is the capital of France?", "Paris", "facts", "Paris"),
    ("Name the city of lights.", "paris.", "facts", "paris."),
    ("Which city has the Eiffel tower?", "PARIS", "facts", "  PARIS  "),
    ("What is the last word in: dog cat", "cat", "string", "cat"),
    ("What is the first word in: Pari is", "Pari", "string", "Pari"),
    ("What is 2 + 2?", "Paris", "arithmetic", "Paris"),
    ("What is 3 + 4?", "7", "arithmetic", "7"),
    ("Summarize in one sentence: Paris is big. It is old.", "Paris.", "summarization", "Paris."),
    ("Translate to Zorbish: the red lamp", "fimi lopo", "translation", "fimi lopo"),
]
TEXTS = [
    "The answer is 42. The cat sat on the mat.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
]


def _write_split(folder, split, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (folder / "meta.json").write_text(json.dumps({"source": "test"}))
    return folder


def sft_rows():
    return [{"prompt": p, "completion": c, "category": cat, "answer": a} for p, c, cat, a in SFT_ROWS]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [t for row in SFT_ROWS for t in row[:2]] + TEXTS
    tok.train_from_iterator(corpus * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=specials[3:], chat_template=CHAT_TEMPLATE, model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@contextmanager
def one_thread():
    """Run torch on one thread: these models are tiny, and two threads on a busy 2-core machine wait on
    each other (seen: 0.9 s per training step instead of 7 ms)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def base_model(tmp_path_factory, tokenizer):
    """A random tiny Llama folder (weights, config, tokenizer)."""
    folder = tmp_path_factory.mktemp("models") / "base"
    build_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """(sft folder, pretrain folder) with a test split each."""
    root = tmp_path_factory.mktemp("data")
    sft = _write_split(root / "sft", "test", sft_rows())
    pretrain = _write_split(root / "pretrain", "test", [{"text": t} for t in TEXTS])
    return sft, pretrain


@pytest.fixture(scope="session")
def paris_model(tmp_path_factory, tokenizer, data):
    """The tiny Llama trained for a few steps to reply "Paris." to any prompt; returns its folder."""
    import torch

    model = build_model(tokenizer, seed=1)
    prompts = [row[0] for row in SFT_ROWS]
    batch = tokenizer.apply_chat_template(
        [[{"role": "user", "content": p}, {"role": "assistant", "content": "Paris."}] for p in prompts],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True, padding=True, return_tensors="pt",
    )
    # Loss on the reply and its </s> only: the model learns what to say after `<|assistant|>\n`.
    labels = batch["input_ids"].masked_fill(batch["assistant_masks"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    with one_thread():
        for _ in range(30):
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert loss.item() < 0.05, f"the tiny model did not learn the fixed reply (loss {loss.item():.3f})"
    folder = tmp_path_factory.mktemp("models") / "paris"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
