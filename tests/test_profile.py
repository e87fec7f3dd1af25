"""The TinyLlama GPU profile's pipeline on local stand-ins: a small Llama saved under TinyLlama's hub name
(with TinyLlama's chat template) and dolly / hh-rlhf files in the public column layouts. Same commands,
same DVC stages, as a user with a GPU and the hub runs them; only the sizes are cut."""

import json
import random

import pytest

from tests.test_pipeline import _copy_repo, _reduce, _run

pytestmark = pytest.mark.slow

# TinyLlama-1.1B-Chat-v1.0's chat template (tokenizer_config.json on the hub): no {% generation %} marks.
TINYLLAMA_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
SHRINK = {
    ("data", "dolly", "validation_fraction"): 0.1, ("data", "dolly", "test_fraction"): 0.15,
    ("data", "hh", "max_rows"): 0, ("data", "hh", "validation_fraction"): 0.1,
    ("data", "hh", "test_fraction"): 0.15,
    ("train", "sft", "batch_size"): 8, ("train", "sft", "max_length"): 96, ("train", "sft", "lora_r"): 4,
    ("train", "sft", "lora_alpha"): 8, ("train", "sft", "eval_steps"): 10,
    ("align", "max_length"): 96, ("align", "reward", "lora_r"): 4, ("align", "dpo", "lora_r"): 4,
    ("align", "reward", "eval_steps"): 10, ("align", "dpo", "eval_steps"): 10,
    ("eval", "max_new_tokens"): 12,
    ("infer", "serve", "load_test_requests"): 4, ("infer", "serve", "load_test_clients"): 2,
    ("infer", "serve", "max_tokens"): 8,
}


def _dolly_rows(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rows.append({"instruction": f"What is {a} plus {b}? (#{i})", "context": "",
                     "response": f"{a} plus {b} is {a + b}.", "category": "open_qa"})
    return rows


def _hh_rows(n: int) -> list[dict]:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        human = f"\n\nHuman: Could you add {a} and {b} for me? (#{i})\n\nAssistant:"
        rows.append({"chosen": f"{human} Sure, {a} plus {b} is {a + b}.",
                     "rejected": f"{human} No. Work it out yourself."})
    return rows


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    dst = root / "llm-lab"
    _copy_repo(dst)
    here = dst / "profiles" / "tinyllama"
    # Public layouts: dolly-15k's one JSONL; hh-rlhf's <subset>/{train,test}.jsonl of chosen/rejected transcripts.
    fixtures = root / "fixtures"
    (fixtures / "hh" / "helpful-base").mkdir(parents=True)
    (fixtures / "dolly.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _dolly_rows(160)))
    hh = _hh_rows(200)
    for split, rows in (("train", hh[:160]), ("test", hh[160:])):
        (fixtures / "hh" / "helpful-base" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The stand-in: a nano Llama on a tokenizer trained here, saved where the hub id resolves as a folder.
    _run(f"llm-data synth --out {root}/synth --n_per_category 20 --n_documents 60 --n_countries 4", dst)
    _run(f"llm-data tokenizer --data {root}/synth --out {root}/tok --vocab_size 400", dst)
    stand_in = here / "TinyLlama" / "TinyLlama-1.1B-Chat-v1.0"
    _run(f"llm-train init --size nano --tokenizer {root}/tok --out {stand_in}", dst)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stand_in)
    tokenizer.chat_template = TINYLLAMA_TEMPLATE
    tokenizer.save_pretrained(stand_in)
    sources = {("data", "dolly", "source"): str(fixtures / "dolly.jsonl"),
               ("data", "hh", "source"): str(fixtures / "hh")}
    _reduce(here / "params.yaml", {**SHRINK, **sources})
    _run("git init -q && git add -A && git -c user.email=ci@lab -c user.name=ci commit -qm init", dst)
    out = _run("invoke profile --name tinyllama", dst)
    return here, out


def test_profile_runs_every_stage_on_the_stand_ins(profile):
    here, _ = profile
    metrics = {p.stem: json.loads(p.read_text()) for p in (here / "reports" / "metrics").glob("*.json")}
    assert set(metrics) == {"train_sft", "reward", "train_dpo", "eval_sft", "eval_dpo", "align_sft", "align_dpo",
                            "serve"}
    # QLoRA on the hub-style name, merged into the unquantized base for the next stages
    assert json.loads((here / "models/sft-qlora/adapter_config.json").read_text())["base_model_name_or_path"] == (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert "quantization_config" not in json.loads((here / "models/sft-qlora/merged/config.json").read_text())
    assert metrics["train_sft"]["tokens_per_second"] > 0 and metrics["train_dpo"]["tokens_per_second"] > 0
    # reward and DPO trained LoRA adapters and saved them merged: plain folders, no adapter files
    for folder in ("reward", "dpo"):
        assert (here / "models" / folder / "model.safetensors").is_file()
        assert not (here / "models" / folder / "adapter_config.json").exists()
    assert 0 <= metrics["reward"]["accuracy"] <= 100
    assert 0 <= metrics["align_dpo"]["win_rate"] <= 100
    assert metrics["serve"]["errors"] == 0 and metrics["serve"]["requests"] == 4


def test_profile_is_up_to_date_after_its_run(profile):
    here, _ = profile
    assert "up to date" in _run("dvc status profiles/tinyllama/dvc.yaml", here.parents[1]).lower()
