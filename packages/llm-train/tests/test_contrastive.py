"""Contrastive training: SimCSE and supervised pairs with in-batch negatives (sentence-transformers)."""

import json

import pytest
from llm_data.io import write_dataset
from llm_train.cli import main
from llm_train.contrastive import training_pairs


def _train(workspace, encoder, out, method, data=None):
    return main(["contrastive", "--method", method, "--model", str(encoder),
                 "--data", str(data or workspace / "synth" / "pairs"), "--out", str(out), "--max_steps", "3",
                 "--batch_size", "8", "--eval_steps", "3", "--learning_rate", "1e-3",
                 "--metrics", str(out.parent / f"{out.name}.json")])


@pytest.mark.parametrize("method", ["simcse", "supervised"])
def test_contrastive_trains_a_sentence_encoder(workspace, encoder, tmp_path, method):
    import torch
    from sentence_transformers import SentenceTransformer

    out = tmp_path / method
    assert _train(workspace, encoder, out, method) == 0
    assert (out / "modules.json").is_file() and not (out / "README.md").exists()
    metrics = json.loads((tmp_path / f"{method}.json").read_text())
    assert metrics["steps"] == 3 and metrics["train_loss"] > 0  # SimCSE's dropout views differ: loss > 0
    rows = [json.loads(line) for line in (workspace / "synth" / "pairs" / "train.jsonl").read_text().splitlines()]
    assert metrics["train_pairs"] == len(training_pairs(rows, method)["anchor"])
    sentences = ["The capital of Kania is Lybe.", "3 + 5 = 8."]
    before = SentenceTransformer(str(encoder), device="cpu").encode(sentences, convert_to_tensor=True)
    after = SentenceTransformer(str(out), device="cpu").encode(sentences, convert_to_tensor=True)
    assert not torch.allclose(before, after)
    # ModernBERT has no dropout by default; SimCSE needs it, so training set it, and it is saved.
    assert json.loads((out / "config.json").read_text())["attention_dropout"] == 0.1
    assert "local_files_only" not in (out / "tokenizer_config.json").read_text()


def test_simcse_pairs_each_distinct_sentence_with_itself():
    rows = [{"anchor": "a", "positive": "b"}, {"anchor": "b", "positive": "c"}]
    assert training_pairs(rows, "simcse") == {"anchor": ["a", "b", "c"], "positive": ["a", "b", "c"]}
    assert training_pairs(rows, "supervised") == {"anchor": ["a", "b"], "positive": ["b", "c"]}


def test_pairs_missing_a_side_and_unknown_method(workspace, encoder, tmp_path, capsys):
    bad = tmp_path / "bad"
    write_dataset(bad, {"train": [{"anchor": "one", "positive": "two"}, {"anchor": "three"}],
                        "validation": [{"anchor": "one", "positive": "two"}]}, {"source": "test"})
    out = tmp_path / "out"
    assert _train(workspace, encoder, out, "supervised", data=bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.jsonl:2: missing field 'positive'" in err
    assert not out.exists()
    assert _train(workspace, encoder, out, "triplet") == 2
    assert "unknown method 'triplet'; choose one of: simcse, supervised" in capsys.readouterr().err


def test_contrastive_counts_the_tokens_of_its_training_passes(workspace, encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    rows = [{"anchor": f"Where is item {i}?" + " Far away." * (i % 3), "positive": f"Item {i} is here."}
            for i in range(16)]
    data, out = tmp_path / "pairs", tmp_path / "out"
    write_dataset(data, {"train": rows, "validation": rows[:4]}, {"source": "test"})
    assert main(["contrastive", "--method", "supervised", "--model", str(encoder), "--data", str(data),
                 "--out", str(out), "--epochs", "2", "--batch_size", "8", "--eval_steps", "1",
                 "--metrics", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    # two epochs of every sentence as the encoder tokenizes it alone (so unpadded), the gradient-free
    # evaluation passes left out
    model = SentenceTransformer(str(encoder), device="cpu")
    lengths = [int(model.preprocess([row[side]])["attention_mask"].sum()) for row in rows
               for side in ("anchor", "positive")]
    assert metrics["train_tokens_seen"] == 2 * sum(lengths)
    assert metrics["model_flops_per_second"] == pytest.approx(
        6 * metrics["trainable_params"] * metrics["tokens_per_second"])
