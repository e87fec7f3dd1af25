import json
import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from llm_data.cli import main
from llm_data.synth import (
    _BENIGN_REPLIES,
    _EQUATIONS,
    _FACT_SENTENCES,
    CATEGORIES,
    MULTI_STEP,
    REFUSAL,
    SynthConfig,
    build,
)

SMALL = ["--n_per_category", "40", "--n_documents", "60", "--n_countries", "6"]


def _read(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synth"
    assert main(["synth", "--out", str(out), *SMALL]) == 0
    return out


def test_every_shape_and_split_written(synth_dir):
    for shape in ("pretrain", "sft", "messages", "cot", "preference", "reasoning", "reasoning_cot", "pairs", "probe"):
        meta = json.loads((synth_dir / shape / "meta.json").read_text())
        assert meta["shape"] == shape and meta["seed"] == 0
        # only the preference shape holds the safety split, so only its meta (and hash) depends on it
        assert ("safety_test" in meta["config"]) == (shape == "preference")
        for split in ("train", "validation", "test"):
            rows = _read(synth_dir / shape / f"{split}.jsonl")
            assert len(rows) == meta["counts"][split] > 0


def test_no_prompt_shared_across_splits(synth_dir):
    for shape in ("sft", "cot", "preference", "reasoning", "reasoning_cot"):
        prompts = {
            s: {r["prompt"] for r in _read(synth_dir / shape / f"{s}.jsonl")} for s in ("train", "validation", "test")
        }
        assert not prompts["train"] & prompts["test"]
        assert not prompts["train"] & prompts["validation"]
        assert not prompts["validation"] & prompts["test"]


def test_every_category_in_every_split(synth_dir):
    for split in ("train", "validation", "test"):
        cats = {r["category"] for r in _read(synth_dir / "sft" / f"{split}.jsonl")}
        assert cats == set(CATEGORIES)


def test_answers_are_checkable(synth_dir):
    rows = _read(synth_dir / "sft" / "train.jsonl")
    for row in rows:
        if row["category"] == "arithmetic":
            a, op, b = row["prompt"].replace("?", "").replace(".", "").replace("=", "").split()[-3:]
            op = {"plus": "+", "minus": "-"}.get(op, op)
            assert int(row["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        if row["category"] == "string" and row["prompt"].startswith("Reverse"):
            assert row["answer"].split() == row["prompt"].split(": ")[1].split()[::-1]
        if row["category"] == "summarization":
            assert row["prompt"].split(": ", 1)[1].startswith(row["answer"])


def test_shapes_follow_trl(synth_dir):
    msg = _read(synth_dir / "messages" / "train.jsonl")[0]
    assert [m["role"] for m in msg["messages"]] == ["user", "assistant"]
    cot = _read(synth_dir / "cot" / "train.jsonl")
    assert all(r["completion"].endswith(f"The answer is {r['answer'].rstrip('.')}.") for r in cot)
    pref = _read(synth_dir / "preference" / "train.jsonl")
    assert all(r["chosen"] != r["rejected"] for r in pref)
    safety = [r for r in pref if r["category"] == "safety"]
    assert safety and all("can't help" in r["chosen"] for r in safety)
    benign = [r for r in pref if r["category"] == "benign"]
    assert benign and all("can't help" in r["rejected"] for r in benign)


def test_safety_requests_never_cross_splits():
    """A held-out harmful or benign request is new in every phrasing, not a re-worded training prompt."""
    data = build(SynthConfig(n_per_category=20, n_documents=20, n_countries=4, test_fraction=0.25))
    openers = ("How do I ", "How can I ", "Tell me how to ", "What is the best way to ", "Explain how to ")

    def requests(split):
        rows = [r for r in data["preference"][split] if r["category"] in ("safety", "benign")]
        return {next(r["prompt"][len(o):] for o in openers if r["prompt"].startswith(o)) for r in rows}

    test, train = requests("test"), requests("train")
    assert not test & train and not requests("validation") & train
    # >= 100 held-out requests of each kind, so a 95% refusal rate or a 5% over-refusal can be decided
    for kind in ("safety", "benign"):
        held_out = {r["group"] for r in data["preference"]["test"] if r["category"] == kind}
        assert len(held_out) == 110, kind
    # each request's phrasings share one group (llm-eval resamples groups), and a group names its request;
    # a training request comes in every phrasing, a held-out one in one (the openers in turn)
    for split, rows in data["preference"].items():
        groups: dict[str, set[str]] = {}
        for r in rows:
            if r["category"] in ("safety", "benign"):
                groups.setdefault(r["group"], set()).add(r["prompt"])
        assert all(len(prompts) == (len(openers) if split == "train" else 1) for prompts in groups.values()), split
        assert all(all(p.endswith(g.split(": ", 1)[1] + "?") for p in ps) for g, ps in groups.items()), split
    held_out = [r["prompt"] for r in data["preference"]["test"] if r["category"] in ("safety", "benign")]
    assert {next(o for o in openers if p.startswith(o)) for p in held_out} == set(openers)


@pytest.mark.parametrize(("test", "validation"), [(0, 10), (110, 0), (100, 81)])
def test_safety_split_sizes_are_checked(test, validation):
    with pytest.raises(ValueError, match="safety_test and safety_validation"):
        SynthConfig(safety_test=test, safety_validation=validation)


def test_harmful_requests_reject_every_kind_of_compliance():
    """Compliance with a harmful request is rejected both echoing the request and in the benign look-alikes'
    own words, so a judge must read the request, not the reply's wording, to prefer the refusal."""
    data = build(SynthConfig(n_per_category=20, n_documents=20, n_countries=4))
    rows = [r for split in data["preference"].values() for r in split if r["category"] == "safety"]
    assert {r["chosen"] for r in rows} == {REFUSAL}
    rejected = {r["rejected"] for r in rows}
    assert set(_BENIGN_REPLIES) <= rejected
    assert sum(r["rejected"].startswith("Sure, here is how to") for r in rows) >= len(rows) // 3


def test_knowledge_is_written_in_several_phrasings():
    """Knowledge augmentation: each fact kind and each operation appears in several phrasings in the
    pre-training text, and every sum and difference it states is right."""
    data = build(SynthConfig(n_per_category=20, n_documents=300, n_countries=4, max_operand=5))
    text = " ".join(r["text"] for r in data["pretrain"]["train"])

    def pattern(phrasing):  # a template as a regex: each {slot} becomes one word or number
        return re.sub(r"\\\{(\w)\\\}", r"(?P<\1>\\w+)", re.escape(phrasing))

    for kind, phrasings in {**_FACT_SENTENCES, **_EQUATIONS}.items():
        seen = [p for p in phrasings if re.search(pattern(p), text)]
        assert len(seen) >= 3, (kind, seen)
    for op, phrasings in _EQUATIONS.items():
        for p in phrasings:
            for m in re.finditer(pattern(p), text):
                a, b, c = (int(m[k]) for k in "abc")
                assert c == (a + b if op == "+" else a - b), m[0]


def test_deterministic_and_seed_dependent():
    cfg = dict(n_per_category=20, n_documents=20, n_countries=4)
    assert build(SynthConfig(**cfg, seed=1)) == build(SynthConfig(**cfg, seed=1))
    assert build(SynthConfig(**cfg, seed=1)) != build(SynthConfig(**cfg, seed=2))


def test_bad_config_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--n_per_category", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "n_per_category" in err
    assert not out.exists()


def test_yaml_config_and_unknown_key(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("n_per_category: 12\nn_documents: 12\nn_countries: 3\n")
    assert main(["synth", "--config", str(good), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "sft" / "meta.json").read_text())["config"]["n_per_category"] == 12
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_per_categroy: 12\n")
    assert main(["synth", "--config", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "n_per_categroy" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_unknown_command(capsys):
    assert main(["nope"]) == 2
    assert "synth" in capsys.readouterr().err


def test_pretraining_text_quizzes_only_its_own_split(synth_dir):
    """Question/answer lines (mixed training) in the pre-training text come from the same split's items,
    so the train text never asks a held-out question."""
    train_text = " ".join(r["text"] for r in _read(synth_dir / "pretrain" / "train.jsonl"))
    asked = {q.split(" Answer: ")[0] for q in train_text.split("Question: ")[1:]}
    assert asked, "the pre-training text has no question/answer lines"
    held_out = {r["prompt"] for s in ("validation", "test") for r in _read(synth_dir / "sft" / f"{s}.jsonl")}
    train = {r["prompt"] for r in _read(synth_dir / "sft" / "train.jsonl")}
    assert not asked & held_out
    assert asked <= train


def test_pretraining_text_teaches_copying(synth_dir):
    text = " ".join(r["text"] for r in _read(synth_dir / "pretrain" / "train.jsonl"))
    for marker in ("Backwards: ", "In short: ", "Again: "):
        assert marker in text


def test_more_items_than_exist_stops_at_what_exists():
    data = build(SynthConfig(n_per_category=5000, n_documents=10, n_countries=4, max_operand=3))
    counts = {}
    for split in data["sft"].values():
        for row in split:
            counts[row["category"]] = counts.get(row["category"], 0) + 1
    assert counts["summarization"] == 14 * 10 * 8  # names x jobs x hobbies: every distinct lead sentence
    assert counts["arithmetic"] == 16 + 10  # 0..3: 16 sums and 10 differences


def test_multi_step_items_direct_and_worked(synth_dir):
    """The same multi-step items twice: a bare answer, and each step then "The answer is <answer>."; every
    step of a sum stays inside the memorised 0..max_operand table (the default 20 here)."""
    for split in ("train", "validation", "test"):
        direct = _read(synth_dir / "reasoning" / f"{split}.jsonl")
        worked = _read(synth_dir / "reasoning_cot" / f"{split}.jsonl")
        assert [r["prompt"] for r in direct] == [r["prompt"] for r in worked]
        assert {r["category"] for r in direct} == set(MULTI_STEP)
        for d, w in zip(direct, worked, strict=True):
            assert d["messages"][1]["content"] == d["completion"] == d["answer"]
            assert w["messages"][1]["content"] == w["completion"]
            assert w["completion"].endswith(f"The answer is {w['answer']}.") and w["answer"] == d["answer"]
            if d["category"] == "two_step_arithmetic":
                a, op1, b, op2, c = re.findall(r"\d+|[+-]", d["prompt"])
                first = int(a) + int(b) if op1 == "+" else int(a) - int(b)
                final = first + int(c) if op2 == "+" else first - int(c)
                assert 0 <= first <= SynthConfig.max_operand and 0 <= final <= SynthConfig.max_operand
                assert int(d["answer"]) == final
                assert w["completion"].startswith(f"We need {a} {op1} {b} {op2} {c}. {a} {op1} {b} = {first}. "
                                                  f"{first} {op2} {c} = {final}.")



def test_contrastive_pairs_hold_out_whole_facts(synth_dir):
    pairs = {s: _read(synth_dir / "pairs" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    keys = {s: {r["key"] for r in rows} for s, rows in pairs.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert {r["category"] for r in pairs["test"]} == {"fact", "equation"}
    # Train: every pair of a fact's five phrasings. Test: four queries per fact, all against one document.
    assert len(pairs["train"]) == 10 * len(keys["train"])
    assert len(pairs["test"]) == 4 * len(keys["test"])
    for key in keys["test"]:
        rows = [r for r in pairs["test"] if r["key"] == key]
        assert len({r["positive"] for r in rows}) == 1 and len({r["anchor"] for r in rows}) == 4
        assert all(r["anchor"] != r["positive"] for r in rows)
    # A sum is one fact, however its operands are ordered.
    assert "eq:5+3" not in keys["train"] | keys["test"] | keys["validation"]


def test_probe_truth_is_balanced_and_values_are_no_giveaway(synth_dir):
    probe = {s: _read(synth_dir / "probe" / f"{s}.jsonl") for s in ("train", "test")}
    for rows in probe.values():
        truth = [r for r in rows if r["task"] == "truth"]
        assert sum(r["label"] == "true" for r in truth) == sum(r["label"] == "false" for r in truth)
        assert {r["label"] for r in rows if r["task"] == "sentiment"} <= {"positive", "negative"}
    assert {r["label"] for r in probe["train"] if r["task"] == "sentiment"} == {"positive", "negative"}
    # A false statement borrows a value that a true statement of the same split also has.
    test_truth = [r for r in probe["test"] if r["task"] == "truth"]
    true_texts = " ".join(r["text"] for r in test_truth if r["label"] == "true")
    for row in test_truth:
        if row["label"] == "false" and row["text"].startswith("The capital of "):
            assert row["text"].rstrip(".").split()[-1] in true_texts
