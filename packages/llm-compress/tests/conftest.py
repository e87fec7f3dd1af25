"""A tiny Llama and byte-level BPE tokenizer saved as one model folder, built once per test session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

SENTENCES = [
    "The answer is 42.",
    "Quantization stores weights in fewer bits.",
    "The cat sat on the mat, and the dog sat on the log.",
    "Small models train fast on two CPU cores.",
]


def build_tiny_model(folder, hidden=64, layers=2, intermediate=128, vocab=320, tie=False, seed=0):
    """Save a random Llama plus a tokenizer trained on a few sentences to `folder`; returns the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "base")


# Distillation fixtures: a small llm-data task suite, its chat tokenizer (with the `{% generation %}`
# template) and a 4-layer, 128-wide random Llama teacher that uses it.


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """`llm-data synth` output with a few rows per category (messages/, sft/, pretrain/, ...)."""
    from llm_data.synth import SynthConfig, run_synth

    out = tmp_path_factory.mktemp("data") / "synth"
    run_synth(SynthConfig(out=str(out), n_per_category=12, n_documents=40, n_countries=4))
    return out


@pytest.fixture(scope="session")
def chat_tokenizer(synth, tmp_path_factory):
    from llm_data.tokenizer import TokenizerConfig, run_tokenizer

    out = tmp_path_factory.mktemp("data") / "tokenizer"
    run_tokenizer(TokenizerConfig(data=str(synth), out=str(out), vocab_size=400))
    return out


@pytest.fixture(scope="session")
def chat_teacher(chat_tokenizer, tmp_path_factory):
    """A 4-layer, 128-wide random Llama with the chat tokenizer (folder path str): wider than `nano`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("models") / "teacher"
    tokenizer = AutoTokenizer.from_pretrained(chat_tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
