"""llm-eval mlm: masked-token accuracy, pseudo-perplexity and fill-mask examples of an encoder."""

import csv
import json
import math

import pytest
from llm_eval.cli import main
from llm_eval.mlm import _windows

TEXTS = ["The answer is 42. The cat sat on the mat.",
         "Paris is the capital of France, and Rome is the capital of Italy."]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tokenizer):
    """(untrained, memorising) tiny BERT folders: the second has read the test text, packed into 16-token
    windows as `llm-eval mlm --block_size 16` packs it, until it knows it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    root = tmp_path_factory.mktemp("encoders")
    tokenizer.save_pretrained(root / "tok")
    tok = AutoTokenizer.from_pretrained(root / "tok")
    tok.add_special_tokens({"mask_token": "<mask>"})
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, type_vocab_size=1,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folders = []
    for name, steps in (("untrained", 0), ("trained", 150)):
        model = BertForMaskedLM(config)
        collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        encoded = [{"input_ids": ids} for ids in _windows(tok, TEXTS * 3, 16)]
        for _ in range(steps):
            loss = model(**collator(encoded)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        folders.append(root / name)
    return folders


def _run(model, text, tmp_path, *extra):
    out, plots = tmp_path / f"{model.name}.json", tmp_path / f"plots_{model.name}"
    code = main(["mlm", "--model", str(model), "--text", str(text), "--block_size", "16", "--batch_size", "8",
                 "--mlm_probability", "0.3", "--out", str(out), "--plots", str(plots), *extra])
    return code, out, plots


def test_memorising_encoder_scores_far_above_untrained(encoders, tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    (text / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 3))
    results = {}
    for folder in encoders:
        code, out, plots = _run(folder, text, tmp_path)
        assert code == 0
        results[folder.name] = m = json.loads(out.read_text())
        assert m["masked_accuracy_lo"] <= m["masked_accuracy"] <= m["masked_accuracy_hi"]
        assert m["pseudo_perplexity"] >= 1.0 and m["masked_tokens"] > 10 and m["windows"] > 3
        rows = list(csv.DictReader(open(plots / "fill_mask.csv")))
        assert 0 < len(rows) <= 6 and all(r["masked sentence"].endswith("<mask>.") for r in rows)
        assert all(r["top guesses"].count("%") == 3 for r in rows)
    untrained, trained = results["untrained"], results["trained"]
    assert untrained["masked_accuracy"] < 15 and trained["masked_accuracy"] > 60
    assert trained["pseudo_perplexity"] < untrained["pseudo_perplexity"] / 5
    assert untrained["pseudo_perplexity"] > 100  # about a uniform guess over the ~400-token vocabulary
    assert math.isfinite(trained["pseudo_perplexity_hi"])


def test_decoder_or_missing_folder_is_one_line_error(base_model, data, tmp_path, capsys):
    _, text = data
    code, out, plots = _run(base_model, text, tmp_path)
    assert code == 2 and "no mask token" in capsys.readouterr().err
    code, out, plots = _run(tmp_path / "nope", text, tmp_path)
    assert code == 2 and "nope" in capsys.readouterr().err
    assert not out.exists() and not plots.exists()
