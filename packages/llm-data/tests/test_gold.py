"""`llm-data gold`: two-step sums split by expression, from their own random stream."""

import json

from llm_data.cli import main
from llm_data.gold import GoldConfig, build


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_splits_hold_distinct_sums_with_their_answers(tmp_path):
    out = tmp_path / "gold"
    assert main(["gold", "--out", str(out), "--train", "40", "--validation", "10", "--test", "30"]) == 0
    splits = {name: _rows(out / f"{name}.jsonl") for name in ("train", "validation", "test")}
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 40, "validation": 10, "test": 30}
    groups = [row["group"] for rows in splits.values() for row in rows]
    assert len(groups) == len(set(groups))  # no expression in two splits, none twice
    for row in splits["test"]:
        assert row["category"] == "two_step_arithmetic" and 0 <= int(row["answer"]) <= 9
    assert json.loads((out / "meta.json").read_text())["counts"]["test"] == 30


def test_deterministic_and_seed_dependent():
    cfg = GoldConfig(train=20, validation=5, test=10)
    assert build(cfg) == build(GoldConfig(train=20, validation=5, test=10))
    assert build(cfg)["test"] != build(GoldConfig(train=20, validation=5, test=10, seed=1))["test"]


def test_more_sums_than_exist_is_a_one_line_error(tmp_path, capsys):
    assert main(["gold", "--out", str(tmp_path / "g"), "--max_operand", "2", "--test", "500"]) == 2
    err = capsys.readouterr().err
    assert "max_operand 2 allows" in err and "raise max_operand" in err
    assert not (tmp_path / "g").exists()
