import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
from llm_eval import run  # noqa: E402
from llm_eval.cli import main  # noqa: E402
from llm_eval.run import EvalConfig, run_eval  # noqa: E402

CATEGORIES = ("arithmetic", "facts", "string", "summarization", "translation")
SCORES = {"exact_match", "perplexity", "rougeL", "bleu"} | {f"exact_match_{c}" for c in CATEGORIES}
# Intervals need two items: summarization and translation have one prompt each, and both perplexity texts
# fit in one window of the tiny model.
WITH_INTERVAL = SCORES - {"exact_match_summarization", "exact_match_translation", "perplexity"}
# tokens_per_second has no interval here: the nine prompts make one generation batch.
KEYS = SCORES | {"memory_mb", "eval_seconds", "n_samples", "tokens_per_second"} | {
    f"{k}_{end}" for k in WITH_INTERVAL for end in ("lo", "hi")
}


def _eval(model, data, out_dir, **kwargs) -> dict:
    sft, pretrain = data
    cfg = EvalConfig(model=str(model), name="t", data=str(sft), text=str(pretrain), max_new_tokens=6,
                     out=str(out_dir / "eval_t.json"), **kwargs)
    return json.loads(run_eval(cfg).read_text())


@pytest.fixture(scope="module")
def base_metrics(base_model, data, tmp_path_factory):
    return _eval(base_model, data, tmp_path_factory.mktemp("base_eval"))


def test_normalize():
    assert run.normalize("  Paris.  ") == "paris"
    assert run.normalize("The  Red\n lamp.") == "the red lamp"
    assert run.normalize("3.5") == "3.5"  # only a trailing period goes
    assert run.normalize("a b .") == "a b"


def test_metrics_file_keys_and_ranges(base_metrics):
    m = base_metrics
    assert set(m) == KEYS
    assert all(isinstance(v, int | float) for v in m.values())
    for key in KEYS - {"perplexity", "memory_mb", "eval_seconds", "n_samples", "tokens_per_second"}:
        assert 0.0 <= m[key] <= 100.0, key
    for key in WITH_INTERVAL:
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"], key
    assert m["n_samples"] == 9 and isinstance(m["n_samples"], int)
    assert m["perplexity"] > 1.0 and m["memory_mb"] > 0 and m["eval_seconds"] > 0 and m["tokens_per_second"] > 0


def test_exact_match_normalisation_categories_and_items(paris_model, data, tmp_path):
    """A model that always says "Paris." is right exactly where the normalised answer is "paris"; --items
    writes what the report bootstraps, one row per prompt and per text window."""
    sft, pretrain = data
    # Enough text for several 128-token windows, so perplexity gets an interval too.
    texts = [json.loads(line)["text"] for line in (pretrain / "test.jsonl").read_text().splitlines()]
    pretrain = tmp_path / "pretrain"
    pretrain.mkdir()
    (pretrain / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 12))
    out, items = tmp_path / "metrics" / "eval_paris.json", tmp_path / "items" / "eval_paris"
    code = main(["run", "--model", str(paris_model), "--name", "paris", "--data", str(sft),
                 "--text", str(pretrain), "--max_new_tokens", "6", "--batch_size", "4", "--out", str(out),
                 "--items", str(items)])
    assert code == 0
    m = json.loads(out.read_text())
    assert m["exact_match_facts"] == 100.0  # "Paris", "paris.", "  PARIS  "
    assert m["exact_match_string"] == 0.0  # "cat", "Pari"
    assert m["exact_match_arithmetic"] == 50.0  # "Paris" right, "7" wrong
    assert m["exact_match_summarization"] == 100.0 and m["exact_match_translation"] == 0.0
    assert m["exact_match"] == pytest.approx(100 * 5 / 9, abs=1e-4)
    # ROUGE-L over the two free-text rows: "Paris." vs "Paris." (1.0) and vs "fimi lopo" (0.0).
    assert m["rougeL"] == pytest.approx(50.0)
    # Every score with an interval has lo <= value <= hi; all-right or all-wrong categories have no spread.
    for key in [k for k in m if f"{k}_lo" in m]:
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"], key
    assert {"perplexity_lo", "exact_match_lo", "rougeL_lo", "bleu_lo"} <= m.keys()
    assert m["exact_match_facts_lo"] == m["exact_match_facts_hi"] == 100.0
    assert m["rougeL_lo"] == 0.0 and m["rougeL_hi"] == 100.0  # two items, one 0 and one 100

    assert sorted(p.name for p in items.iterdir()) == ["answers.jsonl", "perplexity.jsonl", "timings.jsonl"]
    # One timing per batch of 4 prompts; every reply is "Paris." before its end-of-sequence token.
    timings = [json.loads(line) for line in (items / "timings.jsonl").read_text().splitlines()]
    assert len(timings) == 3 and all(t["seconds"] > 0 for t in timings)
    from transformers import AutoTokenizer

    reply_tokens = len(AutoTokenizer.from_pretrained(paris_model)("Paris.", add_special_tokens=False)["input_ids"])
    assert [t["tokens"] for t in timings] == [4 * reply_tokens, 4 * reply_tokens, reply_tokens]
    speed = sum(t["tokens"] for t in timings) / sum(t["seconds"] for t in timings)
    assert m["tokens_per_second"] == pytest.approx(speed, rel=1e-6)
    assert m["tokens_per_second_lo"] <= m["tokens_per_second"] <= m["tokens_per_second_hi"]
    records = [json.loads(line) for line in (items / "answers.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [json.loads(line)["prompt"] for line in
                                              (sft / "test.jsonl").read_text().splitlines()]
    assert {r["prediction"] for r in records} == {"Paris."}
    assert [r["correct"] for r in records] == [True, True, True, False, False, True, False, True, False]
    assert set(records[0]) == {"prompt", "category", "answer", "prediction", "correct", "rougeL", "bleu"}
    assert [r["rougeL"] for r in records] == [None] * 7 + [100.0, 0.0]
    assert records[0]["bleu"] is None and len(records[7]["bleu"]) == 10  # sys_len, ref_len, 4 + 4 n-gram counts
    windows = [json.loads(line) for line in (items / "perplexity.jsonl").read_text().splitlines()]
    assert len(windows) > 2 and all(w["tokens"] == 127 for w in windows[:-1])  # 128-token windows
    total = sum(w["nll"] for w in windows) / sum(w["tokens"] for w in windows)
    assert m["perplexity"] == pytest.approx(math.exp(total), rel=1e-5)


def test_text_overlap_scores_free_text_rows_only():
    rows = [{"prompt": "p", "answer": "x", "completion": "the red lamp is on", "category": "translation"},
            {"prompt": "p", "answer": "7", "completion": "7", "category": "arithmetic"}]
    scores, per_row = run.text_overlap(rows, ["the red lamp is on", "wrong"])
    assert scores == pytest.approx({"rougeL": 100.0, "bleu": 100.0})  # one item: no interval
    assert per_row[0]["rougeL"] == pytest.approx(100.0) and per_row[1] == {"rougeL": None, "bleu": None}
    # Without a category column (hub data) every row counts.
    hub = [{"prompt": "p", "answer": "a b c d", "completion": "a b c d"},
           {"prompt": "q", "answer": "z", "completion": "z"}]
    scores, per_row = run.text_overlap(hub, ["a b c d", "y"])
    assert scores["rougeL"] == pytest.approx(50.0) and (scores["rougeL_lo"], scores["rougeL_hi"]) == (0.0, 100.0)
    assert [r["rougeL"] for r in per_row] == pytest.approx([100.0, 0.0])
    assert run.text_overlap(rows[1:], ["7"]) == ({}, [{"rougeL": None, "bleu": None}])


def test_text_overlap_point_estimates_are_the_corpus_scores():
    """Per-item scores aggregate to exactly what the shipped ROUGE and BLEU modules give the whole set."""
    import evaluate

    refs = ["the cat sat on the mat", "the dog ran in the park", "the red lamp", "one two three four six"]
    preds = ["the cat sat on a mat today", "a dog ran in the big park", "red lamp", "one two three four five"]
    rows = [{"prompt": "p", "answer": r, "completion": r} for r in refs]
    scores, _ = run.text_overlap(rows, preds, seed=3)
    rouge = evaluate.load(str(run.METRICS_DIR / "rouge"), keep_in_memory=True)
    bleu = evaluate.load(str(run.METRICS_DIR / "bleu"), keep_in_memory=True)
    rouge_l = rouge.compute(predictions=preds, references=refs, rouge_types=["rougeL"])["rougeL"]
    assert scores["rougeL"] == pytest.approx(100 * rouge_l)
    assert scores["bleu"] == pytest.approx(bleu.compute(predictions=preds, references=refs)["score"])
    assert scores["bleu_lo"] < scores["bleu"] < scores["bleu_hi"]
    assert run.text_overlap(rows, preds, seed=3)[0] == scores  # seeded


def test_perplexity_equals_exp_of_the_loss(base_model, data, base_metrics):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model)
    tok = AutoTokenizer.from_pretrained(base_model)
    # One window holds both test documents: BOS text EOS BOS text EOS, every token predicted once.
    ids = [t for text in ("The answer is 42. The cat sat on the mat.",
                          "Paris is the capital of France, and Rome is the capital of Italy.")
           for t in tok(text)["input_ids"] + [tok.eos_token_id]]
    ids = torch.tensor([ids])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert base_metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_perplexity_windows_and_padding_count_tokens(base_model):
    """Windows shorter than the text, padded in one batch, give the token-weighted mean NLL."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model)
    tok = AutoTokenizer.from_pretrained(base_model)
    model.config.max_position_embeddings = 8
    texts = ["The cat sat on the mat, and the dog sat on the log."]
    stream = tok(texts[0])["input_ids"] + [tok.eos_token_id]
    assert len(stream) % 8 not in (0, 1)  # the last window is partial, so it is padded
    nll = count = 0
    with torch.no_grad():
        for i in range(0, len(stream), 8):
            w = torch.tensor([stream[i:i + 8]])
            nll += model(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1)
            count += w.shape[1] - 1
    assert run.perplexity(model, tok, texts, batch_size=1) == pytest.approx(math.exp(nll / count), rel=1e-5)
    # Per window (what the bootstrap resamples): every window but the padded last one predicts 7 tokens.
    windows = run.window_nll(model, tok, texts, batch_size=4)
    assert [t for _, t in windows] == [7] * (len(stream) // 8) + [len(stream) % 8 - 1]
    assert sum(n for n, _ in windows) == pytest.approx(nll, rel=1e-5)


def test_window_and_documents_cut_the_perplexity_text(base_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model)
    tok = AutoTokenizer.from_pretrained(base_model)
    texts = ["The cat sat on the mat, and the dog sat on the log."] * 3
    stream = 3 * (len(tok(texts[0])["input_ids"]) + 1)
    # --window 8 on a model whose context is longer: 8-token windows, each predicting 7 tokens.
    windows = [t for _, t in run.window_nll(model, tok, texts, 4, window=8)]
    # (a last window of one token predicts nothing and is dropped)
    assert len(windows) == sum(stream - i > 1 for i in range(0, stream, 8)) and windows[:-1] == [7] * (len(windows) - 1)
    assert len(run.window_nll(model, tok, texts, 4)) < len(run.window_nll(model, tok, texts, 4, window=8))


def test_per_category_keeps_the_first_rows_of_each(tmp_path):
    rows = [{"prompt": f"{c} {i}", "answer": "a", "category": c} for i in range(5) for c in ("x", "y")]
    rows += [{"prompt": "z 0", "answer": "a", "category": "z"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = run.load_rows(str(tmp_path), "test", per_category=2)
    assert [r["prompt"] for r in kept] == ["x 0", "y 0", "x 1", "y 1", "z 0"]
    assert len(run.load_rows(str(tmp_path), "test", max_samples=3, per_category=2)) == 3


@pytest.fixture(scope="module")
def lora_adapter(base_model, tmp_path_factory):
    """A PEFT LoRA folder (adapter weights + tokenizer, no config.json) whose base is `base_model`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model)
    # init_lora_weights=False: B is random, not zero, so the adapter visibly changes the outputs.
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = tmp_path_factory.mktemp("adapters") / "sft-lora"
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(adapter)
    return adapter


@pytest.fixture(scope="module")
def lora_metrics(lora_adapter, data, tmp_path_factory):
    return _eval(lora_adapter, data, tmp_path_factory.mktemp("lora_eval"))


def test_lora_adapter_folder_loads_its_base(lora_adapter, base_model, base_metrics, lora_metrics):
    adapter_config = json.loads((lora_adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base_model)
    assert not (lora_adapter / "config.json").exists()
    assert set(lora_metrics) == KEYS
    # The adapter changes the outputs and adds its parameters to memory.
    assert lora_metrics["perplexity"] != pytest.approx(base_metrics["perplexity"], rel=1e-3)
    assert lora_metrics["memory_mb"] > base_metrics["memory_mb"]


def test_adapter_on_an_nf4_base(lora_adapter, data, lora_metrics, tmp_path):
    """QLoRA-style evaluation: the adapter's base loads in 4-bit NF4."""
    m = _eval(lora_adapter, data, tmp_path, quantize="nf4")
    assert m["memory_mb"] < 0.8 * lora_metrics["memory_mb"]
    assert m["perplexity"] == pytest.approx(lora_metrics["perplexity"], rel=0.2)


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_quantize_on_the_fly(quantize, base_model, data, base_metrics, tmp_path):
    m = _eval(base_model, data, tmp_path, quantize=quantize)
    assert set(m) == KEYS
    assert m["memory_mb"] < 0.8 * base_metrics["memory_mb"]  # block linears in 4 or 8 bits
    # Rounding the weights moves the random model's perplexity only a little.
    assert m["perplexity"] == pytest.approx(base_metrics["perplexity"], rel=0.2)


def test_hub_shaped_rows_without_answer_or_category(tmp_path):
    """dolly-style {prompt, completion}: the completion is the answer, and every row counts for ROUGE."""
    hub = tmp_path / "hub"
    hub.mkdir()
    rows = [{"prompt": "Say hi", "completion": "hi there"}, {"prompt": "Count", "completion": "one two"}]
    (hub / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = run.load_rows(str(hub), "test")
    assert [r["answer"] for r in loaded] == ["hi there", "one two"]
    assert run.exact_match(loaded, ["Hi  there.", "three"])[0] == {
        "exact_match": 50.0, "exact_match_lo": 0.0, "exact_match_hi": 100.0}
    assert run.text_overlap(loaded, ["hi there", "zero"])[0]["rougeL"] == pytest.approx(50.0)
    assert run.load_rows(str(hub), "test", max_samples=1) == loaded[:1]


def test_prompts_use_the_chat_template_or_fall_back(tokenizer):
    texts, templated = run.render_prompts(tokenizer, ["What is 2 + 2?"])
    assert templated and texts == ["<s><|user|>\nWhat is 2 + 2?</s>\n<|assistant|>\n"]
    plain = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    assert not plain.chat_template
    assert run.render_prompts(plain, ["What is 2 + 2?"]) == (["What is 2 + 2?\n"], False)


def test_quanto_folder_evaluates_packed(base_model, data, base_metrics, tmp_path):
    """An optimum-quanto folder (quanto_qmap.json) loads through quanto, and its memory counts the packed
    int8 bytes, where transformers' get_memory_footprint would count fp32."""
    import torch
    from optimum.quanto import QuantizedModelForCausalLM, qint8
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "quanto"
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    QuantizedModelForCausalLM.quantize(model, weights=qint8, exclude="lm_head").save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(folder)
    m = _eval(folder, data, tmp_path)
    assert 0 <= m["exact_match"] <= 100 and m["perplexity"] > 1
    linear = sum(p.numel() for n, p in model.named_parameters() if "layers." in n and p.dim() == 2)
    # int8 saves 3 of fp32's 4 bytes per block-linear weight (less the per-channel scales).
    saved_mb = (base_metrics["memory_mb"] - m["memory_mb"]) * 2**20
    assert 0.9 * 3 * linear < saved_mb <= 3 * linear


def test_quantize_rejects_an_already_quantized_folder(base_model, data, tmp_path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = tmp_path / "nf4"
    AutoModelForCausalLM.from_pretrained(
        base_model, quantization_config=BitsAndBytesConfig(load_in_4bit=True), device_map="cpu"
    ).save_pretrained(folder)
    with pytest.raises(ValueError, match="already quantized"):
        _eval(folder, data, tmp_path, quantize="int8")


def _run_cli(capsys, tmp_path, *flags):
    out = tmp_path / "m" / "eval_x.json"
    code = main(["run", "--name", "x", "--out", str(out), *flags])
    err = capsys.readouterr().err.strip()
    return code, err, out


def test_missing_inputs_exit_2_with_one_line(base_model, data, tmp_path, capsys):
    sft, pretrain = data
    cases = [
        (["--model", str(tmp_path / "nope"), "--data", str(sft), "--text", str(pretrain)],
         "nope: no such folder"),
        (["--model", str(base_model), "--data", str(tmp_path / "nodata"), "--text", str(pretrain)], "nodata"),
        (["--model", str(base_model), "--data", str(sft), "--text", str(pretrain), "--split", "dev"],
         "dev.jsonl"),
    ]
    for flags, message in cases:
        code, err, out = _run_cli(capsys, tmp_path, *flags)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert err.startswith("llm-eval run: error:")
        assert not out.parent.exists()


def test_adapter_with_missing_base_names_it(tmp_path, data, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": str(tmp_path / "gone")}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, err, _ = _run_cli(capsys, tmp_path, "--model", str(adapter), "--data", str(data[0]), "--text", "")
    assert code == 2 and "gone" in err and "base of adapter" in err


def test_bad_rows_name_file_line_and_field(base_model, tmp_path, capsys):
    sft = tmp_path / "sft"
    sft.mkdir()
    good = {"prompt": "p", "completion": "c", "category": "facts", "answer": "a"}
    bad = {"prompt": "p", "completion": "c", "category": "facts"}
    (sft / "test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    code, err, out = _run_cli(capsys, tmp_path, "--model", str(base_model), "--data", str(sft), "--text", "")
    assert code == 2 and f"{sft / 'test.jsonl'}:2: missing field 'answer'" in err
    (sft / "test.jsonl").write_text(json.dumps({"completion": "c", "answer": "a"}) + "\n")
    code, err, out = _run_cli(capsys, tmp_path, "--model", str(base_model), "--data", str(sft), "--text", "")
    assert code == 2 and ":1: missing field 'prompt'" in err and not out.exists()


def test_config_validation():
    with pytest.raises(ValueError, match="quantize"):
        EvalConfig(quantize="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
    assert EvalConfig(name="nf4").out == "reports/metrics/eval_nf4.json"


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run " in out and "report " in out
