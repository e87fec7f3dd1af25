"""The ROUGE and BLEU `evaluate` modules shipped in the package load from their folder with no network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import socket  # noqa: E402
from importlib.resources import files  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(name):
    import evaluate

    path = files("llm_eval") / "metrics" / name
    assert (path / f"{name}.py").is_file()  # inside the package, so the wheel ships it
    return evaluate.load(str(path), keep_in_memory=True)


def test_rouge_loads_offline_and_scores_lcs(no_network):
    rouge = _load("rouge")
    same = rouge.compute(predictions=["the red lamp is on"], references=["the red lamp is on"])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    # LCS "the cat sat" = 3 words: precision 3/3, recall 3/4, F = 2PR / (P + R) = 6/7.
    partial = rouge.compute(predictions=["the cat sat"], references=["the cat sat down"],
                            rouge_types=["rougeL"])
    assert partial == pytest.approx({"rougeL": 6 / 7})
    # Word order matters for ROUGE-L but not ROUGE-1; the corpus score is the mean over pairs.
    swapped = rouge.compute(predictions=["b a", "x"], references=["a b", "y"])
    assert swapped == pytest.approx({"rouge1": 0.5, "rouge2": 0.0, "rougeL": 0.25})
    # use_aggregator=False: each pair's F-measure, whose mean is the corpus score (what run bootstraps).
    per_pair = rouge.compute(predictions=["b a", "x"], references=["a b", "y"], rouge_types=["rougeL"],
                             use_aggregator=False)
    assert per_pair == {"rougeL": pytest.approx([0.5, 0.0])}


def test_bleu_loads_offline_and_matches_sacrebleu(no_network):
    import sacrebleu

    bleu = _load("bleu")
    same = bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    assert same["score"] == pytest.approx(100.0) and same["bp"] == 1.0
    assert bleu.compute(predictions=["a b c d"], references=["w x y z"])["score"] == pytest.approx(0.0)
    preds = ["the cat sat on a mat today", "a dog ran in the big park"]
    refs = ["the cat sat on the mat", "the dog ran in the park"]
    expected = sacrebleu.corpus_bleu(preds, [refs]).score
    assert 0 < expected < 100
    assert bleu.compute(predictions=preds, references=refs)["score"] == pytest.approx(expected)
    # Several references per prediction: sacrebleu's reference streams.
    multi = bleu.compute(predictions=preds, references=[[r, p] for r, p in zip(refs, preds, strict=True)])
    assert multi["score"] == pytest.approx(100.0)
