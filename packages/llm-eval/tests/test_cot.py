"""llm-eval cot: the final answer after the marker, scored like `run`, and the reply length."""

import json

import pytest
from llm_eval.cli import main
from llm_eval.cot import final_answer
from llm_eval.items import load_items


@pytest.mark.parametrize(("reply", "answer"), [
    ("2 + 3 = 5. 5 - 1 = 4. The answer is 4.", "4"),
    ("the answer is Paris. Then more text", "Paris"),
    ("The answer is 3. Wait, the ANSWER IS 5.", "5"),  # the last marker counts
    ("Paris.", "Paris."),  # no marker: the whole reply (a model tuned on direct answers)
    ("The answer is", ""),
])
def test_final_answer(reply, answer):
    assert final_answer(reply, "The answer is") == answer


def test_direct_replies_are_scored_whole(paris_model, data, tmp_path):
    sft, _ = data
    out, items = tmp_path / "eval_direct.json", tmp_path / "items" / "eval_direct"
    assert main(["cot", "--model", str(paris_model), "--name", "direct", "--data", str(sft), "--max_new_tokens", "6",
                 "--batch_size", "4", "--out", str(out), "--items", str(items)]) == 0
    m = json.loads(out.read_text())
    assert m["exact_match"] == pytest.approx(100 * 5 / 9, abs=1e-4)  # as `llm-eval run` scores "Paris."
    assert m["with_marker_percent"] == 0.0
    from transformers import AutoTokenizer

    tokens = len(AutoTokenizer.from_pretrained(paris_model)("Paris.", add_special_tokens=False)["input_ids"])
    assert m["reply_tokens"] == tokens and m["n_samples"] == 9
    assert sorted(p.name for p in items.iterdir()) == ["answers.jsonl", "perplexity.jsonl", "timings.jsonl"]
    assert (items / "perplexity.jsonl").read_text() == ""
    loaded = load_items(tmp_path / "items", "direct")  # what the report pairs: answers, and no text windows
    assert len(loaded.prompts) == 9 and loaded.nll == [] and sum(loaded.correct) == 5


def test_cot_rejects_text_and_empty_marker(paris_model, data, tmp_path, capsys):
    sft, pretrain = data
    base = ["cot", "--model", str(paris_model), "--data", str(sft), "--out", str(tmp_path / "m.json")]
    assert main([*base, "--text", str(pretrain)]) == 2
    assert "leave --text empty" in capsys.readouterr().err
    assert main([*base, "--answer_marker", " "]) == 2
    assert "answer_marker must not be empty" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
