"""`llm-data hub`: the public-dataset adapters, run offline on fixtures in the public column layouts."""

import os

# before anything imports huggingface_hub / datasets, which read these once
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from llm_data.cli import main  # noqa: E402
from llm_data.io import SPLITS  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
DOLLY = FIXTURES / "dolly.jsonl"
HH = FIXTURES / "hh_rlhf"
SHP = FIXTURES / "shp"
TLDR = FIXTURES / "tldr"


def hub(out: Path, *args) -> Path:
    assert main(["hub", *map(str, args), "--out", str(out)]) == 0
    return out


def read(out: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}


def meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())


def fixture_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_rows(splits: dict[str, list[dict]]) -> list[dict]:
    return [row for s in SPLITS for row in splits[s]]


def key(prompt) -> str:
    """A prompt (text, or a message list) as a hashable key."""
    return json.dumps(prompt)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def pair(prompt, chosen: str, rejected: str) -> dict:
    """A preference row in trl's conversational shape, as the adapters write it."""
    return {"prompt": user(prompt) if isinstance(prompt, str) else prompt, "chosen": reply(chosen),
            "rejected": reply(rejected)}


def text(row: dict) -> str:
    """The prompt's text (every turn), for substring checks."""
    return "\n".join(m["content"] for m in row["prompt"]) if isinstance(row["prompt"], list) else row["prompt"]


def assert_disjoint(splits: dict[str, list[dict]]):
    prompts = {s: {key(row["prompt"]) for row in rows} for s, rows in splits.items()}
    assert all(prompts.values()), "every split has rows"
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]


# --- dolly ---------------------------------------------------------------------------------------------

def test_dolly_rows_and_carved_splits(tmp_path):
    out = hub(tmp_path / "dolly", "--name", "dolly", "--source", DOLLY, "--validation_fraction", 0.1,
              "--test_fraction", 0.1)
    splits = read(out)
    rows = all_rows(splits)
    assert [len(splits[s]) for s in SPLITS] == [16, 2, 2]
    assert_disjoint(splits)
    source = fixture_rows(DOLLY)
    assert sorted(r["category"] for r in rows) == sorted(r["category"] for r in source)
    by_prompt = {r["prompt"]: r for r in rows}
    assert len(by_prompt) == 20

    # a non-empty context is appended to the instruction
    virgin = source[0]
    prompt = f"{virgin['instruction']}\n\nContext:\n{virgin['context']}"
    assert by_prompt[prompt] == {
        "prompt": prompt,
        "completion": virgin["response"],
        "category": "closed_qa",
        "messages": [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": virgin["response"]},
        ],
    }
    # an empty (or whitespace-only) context leaves the instruction alone
    assert by_prompt["Which is a species of fish? Tope or Rope"]["completion"] == "Tope"
    assert "What river runs through the city described?" in by_prompt
    # replies are stripped of stray whitespace
    assert by_prompt["Name three primary colours."]["completion"] == "Red, yellow and blue."
    mobile = by_prompt["Why mobile is bad for human"]
    assert mobile["completion"] == "We are always engaged one phone which is not good."
    for row in rows:
        assert row["messages"] == [
            {"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]},
        ]

    m = meta(out)
    assert m["source"] == str(DOLLY)
    assert m["name"] == "dolly" and m["seed"] == 0 and m["subset"] == "" and m["shape"] == "sft"
    assert m["rows_read"] == {"train": 20}
    assert m["skipped"] == {} and m["filters"] == {}
    assert m["carved_from_train"] == {"validation": 0.1, "test": 0.1}
    assert m["counts"] == {"train": 16, "validation": 2, "test": 2}


def test_dolly_seed_and_max_rows(tmp_path):
    args = ["--name", "dolly", "--source", DOLLY, "--validation_fraction", 0.25, "--test_fraction", 0.25]
    a = read(hub(tmp_path / "a", *args, "--seed", 0))
    b = read(hub(tmp_path / "b", *args, "--seed", 1))
    assert a["validation"] != b["validation"]
    assert sorted(map(json.dumps, all_rows(a))) == sorted(map(json.dumps, all_rows(b)))

    out = hub(tmp_path / "small", *args, "--max_rows", 8)
    small = read(out)
    assert sum(len(r) for r in small.values()) == 8
    assert {json.dumps(r) for r in all_rows(small)} <= {json.dumps(r) for r in all_rows(a)}
    assert meta(out)["max_rows"] == 8


# --- hh-rlhf -------------------------------------------------------------------------------------------

def test_hh_rlhf_subset_keeps_test_and_carves_validation(tmp_path):
    out = hub(tmp_path / "hh", "--name", "hh-rlhf", "--source", HH, "--subset", "helpful-base")
    splits = read(out)
    assert [len(splits[s]) for s in SPLITS] == [10, 1, 4]
    assert_disjoint(splits)
    # the test split is the source's own test file, mapped row by row, as conversational messages
    assert splits["test"][0] == pair("How long should I steep green tea?", "About two to three minutes.", "An hour.")
    by_prompt = {key(r["prompt"]): r for r in splits["train"] + splits["validation"]}
    # multi-turn: the prompt is the whole shared transcript, through the last Human turn, one message per turn
    cat = [{"role": "user", "content": "What is a good name for a cat?"},
           {"role": "assistant", "content": "How about Miso?"},
           {"role": "user", "content": "Something longer, please."}]
    assert by_prompt[key(cat)] == pair(cat, "Maybe Sir Whiskers of Mapleton.", "I don't know.")
    # "Assistant:" inside a Human turn (no blank line before it) does not split the transcript
    assert key(user("Pretend you are my Assistant: what should I do first today?")) in by_prompt
    # blank lines inside a reply stay in the reply
    rainy = by_prompt[key(user("Give me three ideas for a rainy day."))]
    assert rainy["chosen"] == reply(
        "Here are three ideas:\n\n1. Bake bread.\n2. Build a blanket fort.\n3. Start a puzzle."
    )
    assert by_prompt[key(user("What's a quick breakfast?"))]["chosen"] == reply(
        "Oatmeal with banana takes five minutes."
    )
    for row in all_rows(splits):
        roles = [m["role"] for m in row["prompt"]]
        assert roles[0] == roles[-1] == "user" and all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert row["chosen"] != row["rejected"] and row["chosen"][0]["content"] and row["rejected"][0]["content"]
        assert "Human:" not in row["chosen"][0]["content"] + row["rejected"][0]["content"]
        assert not any("\n\nHuman:" in m["content"] or "\n\nAssistant:" in m["content"] for m in row["prompt"])

    m = meta(out)
    assert m["subset"] == "helpful-base" and m["shape"] == "preference"
    assert m["rows_read"] == {"train": 14, "test": 4}
    assert m["skipped"] == {"empty_reply": 1, "identical_replies": 1, "no_shared_prefix": 1}
    assert m["carved_from_train"] == {"validation": 0.05}


def test_hh_rlhf_all_subsets_and_single_file(tmp_path):
    out = hub(tmp_path / "all", "--name", "hh-rlhf", "--source", HH)
    m = meta(out)
    assert m["subset"] == ""
    assert m["rows_read"] == {"train": 18, "test": 6}
    assert m["skipped"] == {"empty_reply": 1, "ends_with_human_turn": 1, "identical_replies": 1,
                            "no_shared_prefix": 1}
    assert m["counts"]["test"] == 6
    assert any("pick a lock" in text(r) for r in read(out)["train"] + read(out)["validation"])

    # one file has no splits of its own: validation and test are both carved
    one = hub(tmp_path / "one", "--name", "hh-rlhf", "--source", HH / "helpful-base" / "train.jsonl",
              "--validation_fraction", 0.2, "--test_fraction", 0.2)
    splits = read(one)
    assert [len(splits[s]) for s in SPLITS] == [7, 2, 2]
    assert_disjoint(splits)
    assert meta(one)["carved_from_train"] == {"validation": 0.2, "test": 0.2}


# --- SHP -----------------------------------------------------------------------------------------------

RASP = ("What's the best way to disassemble raspberries? I've been pulling them apart with tweezers "
        "and it's really time consuming.")


def test_shp_hub_layout_direction_and_filter(tmp_path):
    out = hub(tmp_path / "shp", "--name", "shp", "--source", SHP)
    splits = read(out)
    assert [len(splits[s]) for s in SPLITS] == [12, 3, 3]
    assert_disjoint(splits)
    rasp = [r for r in splits["train"] if r["prompt"] == user(RASP)]
    pectinex = "Pectinex, perhaps? It's an enzyme that breaks down the connective tissue."
    freeze = "Freeze them first and the drupelets come apart easily."
    assert rasp == [
        # labels == 1: human_ref_A is preferred
        pair(RASP, pectinex, "Raspberry juice makes a bright stain that fades within weeks."),
        # labels == 0: human_ref_B is preferred
        pair(RASP, pectinex, freeze),
        pair(RASP, freeze, "Why would you want to do that?"),
    ]
    rows = all_rows(splits)
    chosen = {r["chosen"][0]["content"] for r in rows}
    # score_ratio exactly 2.0 passes the default filter; 80 vs 75 (1.07) does not
    assert "Hone it every day and sharpen it every few months." in chosen
    assert "A very sharp knife crushes fewer cells, so less of the irritant escapes." not in chosen
    assert not any(text(r).startswith("Why are old maps") for r in rows)

    m = meta(out)
    assert m["filters"] == {"min_score_ratio": 2.0}
    assert m["rows_read"] == {"train": 15, "validation": 4, "test": 5}
    assert m["skipped"] == {"score_ratio_below_min": 6}
    assert m["carved_from_train"] == {}


def test_shp_no_filter_domain_subset_and_single_file(tmp_path):
    everything = meta(hub(tmp_path / "all", "--name", "shp", "--source", SHP, "--min_score_ratio", 1))
    assert everything["counts"] == {"train": 15, "validation": 4, "test": 5}
    assert everything["skipped"] == {} and everything["filters"] == {"min_score_ratio": 1.0}

    hist = hub(tmp_path / "hist", "--name", "shp", "--source", SHP, "--subset", "askhistorians")
    assert meta(hist)["counts"] == {"train": 4, "validation": 1, "test": 1}
    assert meta(hist)["subset"] == "askhistorians"
    assert all("Ask" not in text(r) and "raspberries" not in text(r) for r in all_rows(read(hist)))

    # several pairs share one post: carving moves whole posts, so no post is in two splits
    one = hub(tmp_path / "one", "--name", "shp", "--source", SHP / "askculinary" / "train.json",
              "--validation_fraction", 0.2, "--test_fraction", 0.2)
    splits = read(one)
    assert_disjoint(splits)
    assert sum(len(r) for r in splits.values()) == 8


# --- TL;DR feedback ------------------------------------------------------------------------------------

LONELY = ("SUBREDDIT: r/relationships\n\nTITLE: Lonely after moving to a new city\n\nPOST: I (24F) moved "
          "to a new city for work three months ago. I like my job but I have not made any friends yet and "
          "the weekends feel really long. I tried a climbing gym once but felt awkward.\n\nTL;DR:")
PARK = ("TITLE: Old rail yard to become a park\n\nARTICLE: The city council voted on Tuesday to turn the old "
        "rail yard into a public park. Construction starts next spring and should take two years. Local "
        "businesses welcomed the plan.\n\nTL;DR:")


def test_tldr_feedback_comparisons(tmp_path):
    out = hub(tmp_path / "tldr", "--name", "tldr-feedback", "--source", TLDR)
    splits = read(out)
    assert_disjoint(splits)
    assert len(splits["validation"]) == 6
    assert len(splits["train"]) + len(splits["test"]) == 9
    # CNN/DailyMail rows have an article instead of a post; choice 0 then 1
    park = "council approves park on old rail yard, building starts next spring."
    assert splits["validation"][:2] == [pair(PARK, park, "a park."), pair(PARK, park, "businesses.")]
    lonely = [r for r in splits["train"] + splits["test"] if r["prompt"] == user(LONELY)]
    meet = "new city, no friends yet, weekends lonely. how do I meet people?"
    work = "moved for work, no friends after 3 months, climbing gym felt awkward."
    assert lonely == [
        pair(LONELY, meet, "I moved and I am sad."),
        pair(LONELY, meet, work),
        pair(LONELY, work, "I like my job."),
    ]
    m = meta(out)
    assert m["subset"] == "comparisons"
    assert m["rows_read"] == {"train": 10, "validation": 6}
    assert m["skipped"] == {"identical_replies": 1}
    assert m["carved_from_train"] == {"test": 0.05}


def test_tldr_feedback_parquet_export_layout(tmp_path):
    """The hub's refs/convert/parquet branch holds <config>/<split>/0000.parquet; same rows as the JSONL."""
    import pyarrow.json
    import pyarrow.parquet

    export = tmp_path / "export"
    for split in ("train", "validation"):
        (export / "comparisons" / split).mkdir(parents=True)
        table = pyarrow.json.read_json(TLDR / "comparisons" / f"{split}.jsonl")
        pyarrow.parquet.write_table(table, export / "comparisons" / split / "0000.parquet")
    parquet = hub(tmp_path / "p", "--name", "tldr-feedback", "--source", export, "--subset", "comparisons")
    jsonl = hub(tmp_path / "j", "--name", "tldr-feedback", "--source", TLDR)
    assert read(parquet) == read(jsonl)


# --- shared behaviour ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--name", "dolly", "--source", DOLLY],
    ["--name", "hh-rlhf", "--source", HH],
    ["--name", "shp", "--source", SHP / "askculinary" / "train.json", "--min_score_ratio", 1.5],
    ["--name", "tldr-feedback", "--source", TLDR, "--seed", 3],
], ids=["dolly", "hh-rlhf", "shp", "tldr-feedback"])
def test_deterministic(tmp_path, args):
    a, b = hub(tmp_path / "a", *args), hub(tmp_path / "b", *args)
    for name in [*(f"{s}.jsonl" for s in SPLITS), "meta.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_help_lists_hub(capsys):
    assert main(["--help"]) == 0
    assert "hub          Adapt public hub datasets" in capsys.readouterr().out


def _error(tmp_path, capsys, *args) -> str:
    out = tmp_path / "out"
    assert main(["hub", *map(str, args), "--out", str(out)]) == 2
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("llm-data hub: error: ")
    return last


def test_missing_field_names_file_row_and_field(tmp_path, capsys):
    bad = FIXTURES / "dolly_missing_field.jsonl"
    err = _error(tmp_path, capsys, "--name", "dolly", "--source", bad)
    assert f"{bad}: row 3: field 'response' is missing" in err


def test_unreadable_file_names_it(tmp_path, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(DOLLY_ROWS[0]) + "\n{not json\n")
    err = _error(tmp_path, capsys, "--name", "dolly", "--source", path)
    assert f"{path}: could not be read" in err


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _edit(rows: list[dict], i: int, **fields) -> list[dict]:
    rows = json.loads(json.dumps(rows))
    rows[i].update(fields)
    return rows


HH_ROWS = fixture_rows(HH / "helpful-base" / "train.jsonl")[:3]
SHP_ROWS = fixture_rows(SHP / "askculinary" / "train.json")[:3]
TLDR_ROWS = fixture_rows(TLDR / "comparisons" / "train.jsonl")[:3]
DOLLY_ROWS = fixture_rows(DOLLY)[:3]


@pytest.mark.parametrize(("name", "rows", "message"), [
    ("hh-rlhf", _edit(HH_ROWS, 1, chosen=""), "row 2: field 'chosen' is empty"),
    ("shp", [{**r, "labels": str(r["labels"])} for r in SHP_ROWS],
     "row 1: field 'labels' must be int, got str"),
    ("shp", _edit(SHP_ROWS, 2, labels=2), "row 3: field 'labels' must be 0 or 1, got 2"),
    ("shp", _edit(SHP_ROWS, 1, human_ref_B=None), "row 2: field 'human_ref_B' is missing"),
    ("tldr-feedback", _edit(TLDR_ROWS, 2, choice=2), "row 3: field 'choice' must be 0 or 1, got 2"),
    ("tldr-feedback", _edit(TLDR_ROWS, 0, summaries=TLDR_ROWS[0]["summaries"][:1]),
     "row 1: field 'summaries' must hold 2 summaries, got 1"),
    ("tldr-feedback", _edit(TLDR_ROWS, 1, summaries=[TLDR_ROWS[1]["summaries"][0], {"text": None}]),
     "row 2: field 'summaries[1].text' is missing"),
    ("tldr-feedback", _edit(TLDR_ROWS, 1, info={**TLDR_ROWS[1]["info"], "post": None}),
     "row 2: field 'info.post' is missing (and so is 'info.article')"),
    ("dolly", _edit(DOLLY_ROWS, 1, category="open-qa"), "row 2: field 'category' is 'open-qa', not one of"),
    ("shp", _edit(SHP_ROWS, 1, score_ratio="high"), "row 2: field 'score_ratio' must be int/float, got str"),
], ids=["hh-empty", "shp-type", "shp-label", "shp-null", "tldr-choice", "tldr-summaries", "tldr-text",
        "tldr-post", "dolly-category", "shp-ratio"])
def test_bad_rows(tmp_path, capsys, name, rows, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    err = _error(tmp_path, capsys, "--name", name, "--source", path)
    assert str(path) in err and message in err


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "alpaca"], "unknown name 'alpaca'; choose one of: dolly, hh-rlhf, shp, tldr-feedback"),
    (["--name", "dolly", "--validation_fraction", 0.7], "validation_fraction must be in (0, 0.5), got 0.7"),
    (["--name", "dolly", "--max_rows", -1], "max_rows must be >= 0"),
    (["--name", "dolly", "--subset", "x"], "dolly has no subsets"),
    (["--name", "hh-rlhf", "--subset", "red-team-attempts"], "red-team-attempts has another schema"),
    (["--name", "tldr-feedback", "--subset", "axis"], "Likert scores"),
    (["--name", "shp", "--min_score_ratio", 0.5], "min_score_ratio must be >= 1"),
    (["--name", "dolly", "--source", FIXTURES / "nope.jsonl"], "nope.jsonl: no such file or folder"),
    (["--name", "hh-rlhf", "--source", HH / "helpful-base" / "train.jsonl", "--subset", "helpful-base"],
     "is a file"),
    (["--name", "hh-rlhf", "--source", HH, "--subset", "helpful-online"], "no sub-folder 'helpful-online'"),
    (["--name", "dolly", "--source", "nobody/no-such-dataset"], "nobody/no-such-dataset: could not load"),
], ids=["name", "fraction", "max-rows", "dolly-subset", "red-team", "axis", "ratio", "no-file", "file-subset",
        "no-subfolder", "hub-offline"])
def test_bad_config(tmp_path, capsys, args, message):
    assert message in _error(tmp_path, capsys, *args)
