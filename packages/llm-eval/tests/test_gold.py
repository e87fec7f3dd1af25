"""The programmatic gold: an exact rubric for replies to the world's sums, and `llm-eval align --gold`."""

import json

import pytest
from llm_data.gold import GoldConfig, build
from llm_eval.cli import main
from llm_eval.gold import gold, grade, truth


@pytest.mark.parametrize(("prompt", "value"), [("What is 7 + 5 - 3?", 9), ("Compute 3 minus 1.", None),
                                               ("4 - 4 + 0 = ?", 0), ("Compute 2 + 9 - 8.", 3)])
def test_truth_evaluates_the_sum_left_to_right(prompt, value):
    if value is None:
        with pytest.raises(ValueError, match="no sum like"):
            truth(prompt)
    else:
        assert truth(prompt) == value


@pytest.mark.parametrize(("reply", "score"), [
    ("9", 1.0),  # the answer, alone
    ("9.", 1.0),
    (" The answer is 9.", 0.75),  # right, but not the requested form
    ("7 + 5 = 12. 12 - 3 = 9.", 0.75),  # a worked answer ends with its result
    ("Sure! I am happy to help. The answer is 9, I am sure.", 0.75),  # politeness earns nothing
    ("10", -0.15),  # one off
    ("12", -0.25),
    ("30", -0.6),  # ten or more off
    ("-9", -0.6),
    ("Sure! I am happy to help. The answer is 30.", -0.85),
    ("9 or 10", -0.4),  # a hedge is held to the number it ends on
    ("1 lamp tasaze. The animal of Lopia is the moth.", -0.75),  # a number among invented words
    ("I don't know.", -1.0),  # no number fails the task, below any attempt
    ("I can't help with that. It could hurt someone.", -1.0),
    ("", -1.0),
])
def test_the_rubric_reads_the_claim_not_the_style(reply, score):
    assert gold("What is 7 + 5 - 3?", reply) == score


def test_only_the_right_number_alone_passes():
    assert grade("What is 7 + 5 - 3?", "9").passed
    assert not grade("What is 7 + 5 - 3?", "The answer is 9.").passed
    assert grade("What is 7 + 5 - 3?", "9 apples").answer == 9


def test_every_generated_sum_is_graded_by_its_own_answer():
    rows = [row for split in build(GoldConfig()).values() for row in split]
    assert len(rows) == 1200
    assert all(truth(row["prompt"]) == int(row["answer"]) and gold(row["prompt"], row["answer"]) == 1.0
               for row in rows)


def _gold_data(tmp_path):
    folder = tmp_path / "gold"
    folder.mkdir()
    rows = build(GoldConfig(train=2, validation=2, test=6))["test"]
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder, rows


def test_align_grades_every_reply_by_the_rule(paris_model, tmp_path):
    """A policy that answers "Paris." to every sum claims no number: the lowest gold, nothing passes, and
    against itself every prompt ties."""
    data, rows = _gold_data(tmp_path)
    common = ["--reference", str(paris_model), "--gold", "arithmetic", "--data", str(data), "--max_new_tokens", "6",
              "--kl_samples", "0"]
    assert main(["align", "--model", str(paris_model), *common, "--items", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "ref.json")]) == 0
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert ref["n_prompts"] == 6 and ref["gold_pass"] == 0.0 and ref["gold_score"] == -1.0
    answers = [json.loads(line) for line in (tmp_path / "ref" / "answers.jsonl").read_text().splitlines()]
    assert [a["prompt"] for a in answers] == [r["prompt"] for r in rows]
    assert all(a["gold_score"] == gold(a["prompt"], a["prediction"]) for a in answers)
    assert main(["align", "--model", str(paris_model), *common, "--reference_items", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "self.json")]) == 0
    assert json.loads((tmp_path / "self.json").read_text())["tie"] == 100.0


def test_unknown_gold_or_prompts_without_a_sum_are_one_line_errors(paris_model, tmp_path, capsys):
    data, _ = _gold_data(tmp_path)
    assert main(["align", "--model", str(paris_model), "--gold", "poetry", "--data", str(data)]) == 2
    assert "gold: unknown 'poetry'; choose from: arithmetic" in capsys.readouterr().err
    (data / "test.jsonl").write_text(json.dumps({"prompt": "What is the capital of France?"}) + "\n")
    assert main(["align", "--model", str(paris_model), "--gold", "arithmetic", "--data", str(data),
                 "--kl_samples", "0", "--max_new_tokens", "4", "--out", str(tmp_path / "m.json")]) == 2
    assert "no sum like '7 + 5 - 3' in the prompt 'What is the capital of France?'" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
