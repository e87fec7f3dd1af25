"""Every params.yaml section builds its command's config: a misspelt or stale key fails here."""

import dataclasses

import pytest
import yaml
from llm_compress.quantize import QuantizeConfig
from llm_data.synth import SynthConfig
from llm_data.tokenizer import TokenizerConfig
from llm_eval.run import EvalConfig
from llm_train.init import InitConfig
from llm_train.pretrain import PretrainConfig
from llm_train.sft import SFTConfig

from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _sections():
    yield "data.synth", SynthConfig, PARAMS["data"]["synth"]
    yield "data.tokenizer", TokenizerConfig, PARAMS["data"]["tokenizer"]
    yield "train.init", InitConfig, PARAMS["train"]["init"]
    yield "train.pretrain", PretrainConfig, PARAMS["train"]["pretrain"]
    for method, section in PARAMS["train"]["sft"].items():
        yield f"train.sft.{method}", SFTConfig, {**section, "method": method}
    for name, section in PARAMS["compress"]["quantize"].items():
        yield f"compress.quantize.{name}", QuantizeConfig, section
    yield "eval.run", EvalConfig, PARAMS["eval"]["run"]


@pytest.mark.parametrize(("name", "cls", "section"), list(_sections()), ids=lambda v: v if isinstance(v, str) else "")
def test_section_builds_config(name, cls, section):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(section) - fields
    assert not unknown, f"params.yaml {name}: keys no command reads: {sorted(unknown)}"
    cls(**section)  # __post_init__ validates the values


def test_every_params_key_is_used_by_dvc_yaml():
    dvc = (REPO / "dvc.yaml").read_text()
    for name, _cls, section in _sections():
        for key in section:
            if key == "method" and name.startswith("train.sft"):
                continue  # the section key itself is the method
            assert f"--{key} " in dvc, f"params.yaml {name}.{key} is never passed by dvc.yaml"
