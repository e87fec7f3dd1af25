import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from llm_data.cli import main


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("tok")
    assert main(["synth", "--out", str(base / "synth"), "--n_per_category", "30", "--n_documents", "40"]) == 0
    assert main(["tokenizer", "--data", str(base / "synth"), "--out", str(base / "tok"), "--vocab_size", "400"]) == 0
    return base / "tok"


def test_loads_with_special_tokens_and_template(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert len(tok) <= 400
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 7?"}, {"role": "assistant", "content": "19"}], tokenize=False
    )
    assert text == "<s><|user|> What is 12 + 7?</s>\n<|assistant|> 19</s>\n"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")


def test_assistant_mask_covers_reply_and_eos(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red cat"}],
        return_dict=True, return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == " red cat</s>"


def test_digits_split_and_roundtrip(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = tok("12345 + 678", add_special_tokens=False).input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == list("12345678")
    assert tok.decode(tok("Translate to Zorbish: red dog").input_ids, skip_special_tokens=True) == (
        "Translate to Zorbish: red dog"
    )


def test_resaved_tokenizer_is_byte_identical_whatever_the_environment(tok_dir, tmp_path):
    # HF_HUB_OFFLINE=1 (set above) makes transformers record local_files_only=True in a loaded tokenizer;
    # every stage that loads and re-saves a tokenizer must still write the bytes it read.
    from llm_data.tokenizer import load_tokenizer

    load_tokenizer(str(tok_dir)).save_pretrained(tmp_path / "again")
    original = (tok_dir / "tokenizer_config.json").read_bytes()
    assert b"local_files_only" not in original
    assert (tmp_path / "again" / "tokenizer_config.json").read_bytes() == original


def test_missing_data_folder(tmp_path, capsys):
    assert main(["tokenizer", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "tok")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize(
    ("line", "needle"),
    [("not json", "not valid JSON"), ('{"txt": "a"}', "missing field 'text'"), ('{"text": 3}', "must be str"),
     ('{"text": "  "}', "is empty")],
)
def test_bad_rows_name_file_line_field(tmp_path, capsys, line, needle):
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    assert main(["tokenizer", "--data", str(data), "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{data / 'train.jsonl'}:2:" in err and needle in err and "\n" not in err
    assert not (tmp_path / "tok").exists()
