"""Session fixtures built from llm-lab's own artifacts: a small synthetic task suite, its BPE chat tokenizer,
and two random Llamas (a 2-layer target and a 1-layer draft) sharing that tokenizer."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


def build_llama(tokenizer_dir, folder, hidden=64, layers=2, heads=4, seed=0):
    """Save a random Llama sized to the tokenizer in `tokenizer_dir` (plus the tokenizer) to `folder`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """`llm-data synth` output with a few rows per category (folders sft/, messages/, pretrain/, ...)."""
    from llm_data.synth import SynthConfig, run_synth

    out = tmp_path_factory.mktemp("data") / "synth"
    run_synth(SynthConfig(out=str(out), n_per_category=20, n_documents=50))
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(synth, tmp_path_factory):
    from llm_data.tokenizer import TokenizerConfig, run_tokenizer

    out = tmp_path_factory.mktemp("data") / "tokenizer"
    run_tokenizer(TokenizerConfig(data=str(synth), out=str(out), vocab_size=400))
    return out


@pytest.fixture(scope="session")
def tiny_model(tokenizer_dir, tmp_path_factory):
    """A 2-layer, 64-wide random Llama with the chat tokenizer."""
    return build_llama(tokenizer_dir, tmp_path_factory.mktemp("models") / "target")


@pytest.fixture(scope="session")
def draft_model(tokenizer_dir, tmp_path_factory):
    """A 1-layer, 32-wide random Llama with the same tokenizer (a draft for assisted generation)."""
    return build_llama(tokenizer_dir, tmp_path_factory.mktemp("models") / "draft", hidden=32, layers=1, seed=1)


@pytest.fixture(scope="session")
def sft_data(synth):
    return str(synth / "sft")


@pytest.fixture(scope="session")
def llama_builder():
    """`build_llama` for tests that need a model of their own (another size or tokenizer)."""
    return build_llama


@pytest.fixture(scope="session")
def chat_model(tiny_model, tmp_path_factory):
    """The tiny model with an untied output layer, so its greedy replies are not empty.

    With tied embeddings a random model's top next token is the token it just read, so it echoes the chat
    template's last token, `<|assistant|>`: a special token, decoded to '' — every reply would be empty.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("models") / "untied"
    config = AutoConfig.from_pretrained(tiny_model)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return str(out)
