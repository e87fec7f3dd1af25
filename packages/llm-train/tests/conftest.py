import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from llm_data.cli import main as data_main
from llm_train.cli import main


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A small synthetic dataset, its tokenizer and a 2-layer `nano` model, built once per session."""
    root = tmp_path_factory.mktemp("train")
    synth = ["--n_per_category", "20", "--n_documents", "60", "--n_countries", "4"]
    assert data_main(["synth", "--out", str(root / "synth"), *synth]) == 0
    assert (
        data_main(["tokenizer", "--data", str(root / "synth"), "--out", str(root / "tok"), "--vocab_size", "400"]) == 0
    )
    assert main(["init", "--size", "nano", "--tokenizer", str(root / "tok"), "--out", str(root / "init")]) == 0
    return root


@pytest.fixture(scope="session")
def encoder(workspace, tmp_path_factory):
    """A random `nano` ModernBERT with the workspace tokenizer: the contrastive tests' starting encoder."""
    out = tmp_path_factory.mktemp("encoder") / "init-modernbert"
    assert main(["init", "--arch", "modernbert", "--size", "nano", "--tokenizer", str(workspace / "tok"),
                 "--out", str(out)]) == 0
    return out
