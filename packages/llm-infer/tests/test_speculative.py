"""`llm-infer speculative`: assisted and prompt-lookup decoding give plain greedy's tokens; bad input exits 2."""

import csv
import json

import pytest
from llm_infer.cli import main
from llm_infer.speculative import SpeculativeConfig, run_speculative


@pytest.fixture(scope="module")
def result(tiny_model, draft_model, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("spec")
    cfg = SpeculativeConfig(model=tiny_model, draft=draft_model, data=sft_data, categories="", max_samples=4,
                            max_new_tokens=24, metrics=str(out / "m.json"), plots=str(out / "plots"))
    run_speculative(cfg)
    return json.loads((out / "m.json").read_text()), list(csv.DictReader(open(out / "plots" / "speculative.csv")))


def test_outputs_identical_to_greedy(result):
    metrics, _ = result
    assert metrics["assisted_identical_fraction"] == 1.0
    assert metrics["prompt_lookup_identical_fraction"] == 1.0


def test_speed_and_acceptance_measured(result):
    metrics, table = result
    assert [r["method"] for r in table] == ["greedy", "assisted", "prompt_lookup"]
    assert metrics["greedy_tokens_per_s"] > 0 and metrics["assisted_speedup"] > 0
    # The draft proposes tokens every step, and a random draft still agrees with a random target sometimes.
    assert 0.0 <= metrics["assisted_acceptance_rate"] <= 1.0
    assert metrics["draft_parameters"] < metrics["target_parameters"]
    assert metrics["new_tokens"] > 0
    for method in ("assisted", "prompt_lookup"):
        key = f"{method}_speedup"
        # Paired over prompts, each timed both ways; the point estimate is greedy's total time over the method's.
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
        assert metrics[key] == pytest.approx(metrics[f"{method}_tokens_per_s"] / metrics["greedy_tokens_per_s"],
                                             rel=1e-4)


def test_draft_with_another_tokenizer_is_refused(tiny_model, sft_data, tmp_path, capsys, llama_builder):
    from transformers import AutoTokenizer

    other = tmp_path / "tok"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_tokens(["<new-token>"])
    tok.save_pretrained(other)
    draft = llama_builder(other, tmp_path / "draft", hidden=32, layers=1)
    assert main(["speculative", "--model", tiny_model, "--draft", draft, "--data", sft_data]) == 2
    assert "tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--methods", "medusa"], "medusa"),
    (["--draft", ""], "draft"),
    (["--assistant_schedule", "fast"], "assistant_schedule"),
    (["--categories", "nope"], "no rows"),
])
def test_bad_input_exits_2(flags, message, tiny_model, draft_model, sft_data, capsys):
    args = ["speculative", "--model", tiny_model, "--draft", draft_model, "--data", sft_data, *flags]
    assert main(args) == 2
    assert message in capsys.readouterr().err
