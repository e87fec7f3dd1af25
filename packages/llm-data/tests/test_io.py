import pytest
from llm_data.io import read_jsonl, split_file


def test_split_file_names_the_missing_folder_or_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope: no such dataset folder \(create it with `llm-data synth`\)"):
        split_file(tmp_path / "nope", "train", "llm-data synth")
    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n')
    assert read_jsonl(split_file(tmp_path, "train"), {"text": str}) == [{"text": "a"}]
    with pytest.raises(FileNotFoundError, match=r"test.jsonl: no such file \(the dataset folder has no 'test' split"):
        split_file(tmp_path, "test")
