"""`llm-data real`: gensim's test corpora as the lab's dataset layouts, read from the installed wheel."""

import json
import sys

import pytest
from llm_data.cli import main
from llm_data.real import PROMPT


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_installed_corpora_become_news_and_sentiment(tmp_path):
    assert main(["real", "--out", str(tmp_path / "real")]) == 0
    news = _rows(tmp_path / "real" / "news" / "test.jsonl")
    calibration = _rows(tmp_path / "real" / "news" / "train.jsonl")
    sentiment = _rows(tmp_path / "real" / "sentiment" / "test.jsonl")
    assert len(news) == 100 and len(calibration) == 200 and all(row["text"].strip() for row in news + calibration)
    # Calibration text is never scored: no document is in both splits.
    assert not {row["text"] for row in news} & {row["text"] for row in calibration}
    assert len(sentiment) == 200
    assert sorted({row["answer"] for row in sentiment}) == ["negative", "positive"]
    # The file lists every negative first; alternated, any first rows are balanced.
    assert [row["answer"] for row in sentiment[:4]] == ["positive", "negative", "positive", "negative"]
    assert sentiment[0]["prompt"].startswith(PROMPT.format("")) and sentiment[0]["category"] == "sentiment"
    meta = json.loads((tmp_path / "real" / "news" / "meta.json").read_text())
    assert meta["counts"] == {"test": 100, "train": 200} and "LGPL-2.1" in meta["licence"]


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `fakecorpora` with test/test_data/ holding the two files, importable from tmp_path."""
    data = tmp_path / "site" / "fakecorpora" / "test" / "test_data"
    data.mkdir(parents=True)
    (data.parents[1] / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (data / "lee_background.cor").write_text("First story.\n\nSecond story.\n")
    (data / "pang_lee_polarity.cor").write_bytes("__label__neg a dull film .\n__label__neg bad .\n"
                                                 "__label__pos caf\xe9 charm .\n".encode("latin-1"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return data


def test_reads_latin1_without_importing_the_package(tmp_path, fake_package):
    assert main(["real", "--package", "fakecorpora", "--out", str(tmp_path / "out"), "--max_documents", "2",
                 "--news_test", "1"]) == 0
    assert "fakecorpora" not in sys.modules
    assert [r["text"] for r in _rows(tmp_path / "out" / "news" / "test.jsonl")] == ["First story."]
    assert [r["text"] for r in _rows(tmp_path / "out" / "news" / "train.jsonl")] == ["Second story."]
    rows = _rows(tmp_path / "out" / "sentiment" / "test.jsonl")
    assert [r["answer"] for r in rows] == ["positive", "negative"] and "café" in rows[0]["prompt"]


def test_a_malformed_line_names_file_and_line(tmp_path, fake_package, capsys):
    (fake_package / "pang_lee_polarity.cor").write_text("__label__pos fine .\n__label__meh odd .\n")
    assert main(["real", "--package", "fakecorpora", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pang_lee_polarity.cor:2: expected '__label__pos|__label__neg <sentence>'" in err
    assert not (tmp_path / "out").exists()


def test_missing_package_is_a_one_line_error(tmp_path, capsys):
    assert main(["real", "--package", "no_such_corpora", "--out", str(tmp_path / "out")]) == 2
    assert "package 'no_such_corpora' is not installed" in capsys.readouterr().err
