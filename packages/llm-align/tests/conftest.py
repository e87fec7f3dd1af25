"""A small synthetic suite (with its preference pairs), its chat tokenizer and a `nano` Llama, once per session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest  # noqa: E402
from llm_data.cli import main as data_main  # noqa: E402
from llm_train.cli import main as train_main  # noqa: E402


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """root/synth (with preference/), root/tok, root/policy: a random `nano` chat model standing in for SFT."""
    root = tmp_path_factory.mktemp("align")
    synth = ["--n_per_category", "12", "--n_documents", "40", "--n_countries", "4"]
    assert data_main(["synth", "--out", str(root / "synth"), *synth]) == 0
    assert (
        data_main(["tokenizer", "--data", str(root / "synth"), "--out", str(root / "tok"), "--vocab_size", "400"]) == 0
    )
    assert train_main(["init", "--size", "nano", "--tokenizer", str(root / "tok"), "--out", str(root / "policy")]) == 0
    return root
