"""`llm-infer parity`: every form of one model answers the same prompts; identical forms agree 100%, a
different model is caught at its first differing prompt, and bad input exits 2."""

import csv
import json
import shutil

import pytest
from llm_infer.cli import main
from llm_infer.parity import Form, ParityConfig, agreement, compare, run_parity


def test_agreement_is_the_shared_prefix_over_the_longer_reply():
    assert agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert agreement([], []) == 1.0
    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert agreement([1, 2], [1, 2, 3, 4]) == 0.5
    assert agreement([7], [8]) == 0.0


def test_compare_names_the_first_differing_prompt(tiny_model):
    from transformers import AutoTokenizer

    rows = [{"prompt": f"q{i}", "answer": a} for i, a in enumerate(["a", "b", "c", "d"])]
    forms = {"reference": Form("reference", "", ["a", "b", "c", "x"]),
             "same": Form("same", "reference", ["a", "b", "c", "x"]),
             "off": Form("off", "reference", ["a", "z", "c", "d"])}
    metrics, table = compare(forms, rows, AutoTokenizer.from_pretrained(tiny_model), seed=0)
    assert metrics["same_identical"] == 100.0 and metrics["off_identical"] == 50.0
    assert metrics["reference_exact_match"] == 75.0 and metrics["off_exact_match_diff"] == 0.0
    rows_by_form = {r["form"]: r for r in table}
    assert rows_by_form["same"]["first differing prompt"] == ""
    assert rows_by_form["off"]["first differing prompt"] == "#1 'q1': reference 'b', off 'z'"


@pytest.fixture(scope="module")
def lora_adapter(chat_model, tmp_path_factory):
    """A LoRA adapter on the chat model whose update is not zero (B initialised randomly), so merging matters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("models") / "lora"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(chat_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(out)
    return str(out)


def test_every_form_of_one_model_agrees(chat_model, lora_adapter, sft_data, tmp_path):
    """A copy of the weights, the transformers server and the merged adapter all give the reference's replies."""
    copy = tmp_path / "copy"
    shutil.copytree(chat_model, copy)
    cfg = ParityConfig(model=chat_model, adapter=lora_adapter, variants=f"copy={copy}", servers="transformers",
                       data=sft_data, max_samples=12, max_new_tokens=8, metrics=str(tmp_path / "m.json"),
                       plots=str(tmp_path / "plots"))
    run_parity(cfg)
    m = json.loads((tmp_path / "m.json").read_text())
    for form in ("copy", "server_transformers", "merged"):
        assert m[f"{form}_identical"] == 100.0 and m[f"{form}_token_agreement"] == 100.0, form
        assert m[f"{form}_exact_match_diff"] == 0.0
    assert m["prompts"] == 12
    table = {r["form"]: r for r in csv.DictReader(open(tmp_path / "plots" / "parity.csv"))}
    assert list(table) == ["reference", "copy", "server_transformers", "adapter", "merged"]
    assert table["merged"]["compared with"] == "adapter" and table["merged"]["first differing prompt"] == ""


def test_another_model_is_caught_where_it_diverges(chat_model, llama_builder, tokenizer_dir, sft_data, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    other = tmp_path / "other"
    config = AutoConfig.from_pretrained(chat_model)
    LlamaForCausalLM(config).save_pretrained(other)  # fresh random weights: other replies
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(other)
    cfg = ParityConfig(model=chat_model, variants=f"other={other}", servers="", data=sft_data, max_samples=8,
                       max_new_tokens=6, plots=str(tmp_path / "plots"), metrics=str(tmp_path / "m.json"))
    run_parity(cfg)
    assert json.loads((tmp_path / "m.json").read_text())["other_identical"] < 100.0
    row = next(r for r in csv.DictReader(open(tmp_path / "plots" / "parity.csv")) if r["form"] == "other")
    assert row["first differing prompt"].startswith("#") and ": reference " in row["first differing prompt"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--variants", "int8"], "is not name=folder"),
    (["--variants", "merged=x", "--adapter", "y"], "form names ['merged'] are taken"),
    (["--servers", "tgi"], "servers: unknown ['tgi']"),
    (["--adapter", "/nonexistent/adapter", "--servers", ""], "/nonexistent/adapter/adapter_config.json"),
    (["--variants", "q=/nonexistent/q"], "/nonexistent/q"),
])
def test_bad_input_exits_2_with_one_line(chat_model, sft_data, tmp_path, capsys, flags, message):
    metrics = tmp_path / "m.json"
    code = main(["parity", "--model", chat_model, "--data", sft_data, "--max_samples", "2", "--max_new_tokens", "2",
                 "--metrics", str(metrics), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not metrics.exists()
