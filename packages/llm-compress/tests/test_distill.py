import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import json  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from llm_compress.cli import main  # noqa: E402
from llm_compress.distill import ChatCollator, DistillConfig, build_student, layer_map, run_distill  # noqa: E402
from llm_train.faults import resume_differences, run_killed  # noqa: E402
from llm_train.loop import peak_flops  # noqa: E402

METRIC_KEYS = {
    "teacher_parameters", "student_parameters", "parameter_ratio", "train_seconds", "train_loss", "eval_loss",
    "teacher_eval_loss", "steps",
    # throughput over the run (llm_train.loop.throughput); mfu only on a GPU with a known peak
    "train_tokens_seen", "tokens_per_second", "model_flops_per_second",
} | ({"mfu"} if peak_flops() else set())
FAST = dict(max_steps=3, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, eval_steps=50, seed=0)


@pytest.fixture(scope="module")
def distill(chat_teacher, synth, tmp_path_factory):
    """Run (and cache) one distillation: returns (student folder, metrics dict)."""
    root, done = tmp_path_factory.mktemp("distill"), {}

    def run(**kw):
        key = tuple(sorted(kw.items()))
        if key not in done:
            out = root / f"student-{len(done)}"
            cfg = DistillConfig(teacher=chat_teacher, data=str(synth / "messages"), out=str(out),
                                metrics=str(out) + ".json", **{**FAST, **kw})
            assert run_distill(cfg) == out
            done[key] = out, json.loads(Path(cfg.metrics).read_text())
        return done[key]

    return run


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def test_layer_map_is_evenly_spaced_like_distilbert():
    assert layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # the teacher layers DistilBERT kept
    assert layer_map(4, 2) == [0, 3]
    assert layer_map(4, 1) == [0]


def test_student_copies_the_chosen_teacher_layers(chat_teacher):
    import torch
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(chat_teacher)
    student = build_student(teacher, DistillConfig(student_layers=2))
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == teacher.config.hidden_size
    for s, t in ((0, 0), (1, 3)):
        assert torch.equal(student.model.layers[s].mlp.down_proj.weight, teacher.model.layers[t].mlp.down_proj.weight)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert student.num_parameters() < teacher.num_parameters()
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():  # two layers dropped: a different function, not a copy
        assert not torch.allclose(student(ids).logits, teacher(ids).logits)


def test_collator_puts_the_loss_on_the_assistant_reply_only(chat_teacher, synth):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_teacher)
    rows = [json.loads(line) for line in (synth / "messages" / "train.jsonl").read_text().splitlines()[:4]]
    batch = ChatCollator(tok, max_length=256, prompts=True)(rows)
    for i, row in enumerate(rows):
        labels = [t for t in batch["labels"][i].tolist() if t != -100]
        assert tok.decode(labels) == f" {row['messages'][-1]['content']}</s>"
        prompt = batch["prompts"][i][batch["prompt_attention_mask"][i].bool()].tolist()
        expected = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
        assert prompt == expected
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i, :n].all()  # right padding for training


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_kd_trains_a_smaller_standalone_student(loss, distill, chat_teacher):
    from transformers import AutoModelForCausalLM, GenerationConfig

    out, metrics = distill(loss=loss, temperature=2.0, hard_weight=0.0)  # pure distillation
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(os.listdir(out))
    student = AutoModelForCausalLM.from_pretrained(out)
    assert student.config.num_hidden_layers == 2
    assert set(metrics) == METRIC_KEYS and metrics["steps"] == 3
    assert metrics["parameter_ratio"] > 1 and metrics["student_parameters"] == student.num_parameters()
    assert 0 < metrics["eval_loss"] < 20 and metrics["train_loss"] > 0
    teacher_gen, student_gen = GenerationConfig.from_pretrained(chat_teacher), student.generation_config
    assert (student_gen.eos_token_id, student_gen.pad_token_id) == (teacher_gen.eos_token_id, teacher_gen.pad_token_id)
    # Student layer 1 started as teacher layer 3: training moved it.
    key = "model.layers.{}.self_attn.q_proj.weight"
    assert not _weights(out)[key.format(1)].equal(_weights(chat_teacher)[key.format(3)])


def test_kd_and_sft_control_differ_only_in_the_loss(distill):
    kd_out, kd = distill()  # the defaults: forward KL at T=4 mixed half and half with the label NLL
    sft_out, sft = distill(method="sft")
    assert set(sft) == METRIC_KEYS and sft["steps"] == kd["steps"]
    assert sft["student_parameters"] == kd["student_parameters"]
    assert sft["teacher_eval_loss"] == pytest.approx(kd["teacher_eval_loss"])
    assert sft["train_loss"] != pytest.approx(kd["train_loss"], rel=1e-3)  # KL to the teacher vs NLL of labels
    kd_w, sft_w = _weights(kd_out), _weights(sft_out)
    assert kd_w.keys() == sft_w.keys()
    assert any(not kd_w[k].equal(sft_w[k]) for k in kd_w)


def test_sft_control_is_reproducible(distill, chat_teacher, synth, tmp_path):
    first, _ = distill(method="sft")
    cfg = DistillConfig(teacher=chat_teacher, data=str(synth / "messages"), out=str(tmp_path / "again"),
                        method="sft", **FAST)
    again = _weights(run_distill(cfg))
    assert all(again[k].equal(v) for k, v in _weights(first).items())


def test_on_policy_batches_are_sampled_from_the_student(distill, monkeypatch):
    from trl.experimental.gkd import GKDTrainer

    calls = []
    original = GKDTrainer.generate_on_policy_outputs

    def spy(model, inputs, generation_config):
        calls.append(inputs["prompts"].shape)
        return original(model, inputs, generation_config)

    monkeypatch.setattr(GKDTrainer, "generate_on_policy_outputs", staticmethod(spy))
    out, metrics = distill(on_policy=0.5, hard_weight=0.3, max_steps=4)
    assert 1 <= len(calls) <= 4 and metrics["steps"] == 4
    assert metrics["eval_loss"] > 0 and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("method", ["kd", "sft"])
def test_killed_distillation_resumes_to_the_uninterrupted_runs_metrics(method, chat_teacher, synth, tmp_path):
    """SIGKILL right after checkpoint 4 of 8 (`llm_train.faults`), rerun with --resume: every metric but the
    timings equals one clean run's; KD samples half its batches from the student (on-policy, GKD), so the
    resumed run must also continue the sampling's random stream."""

    def command(out):
        return ["distill", "--method", method, "--teacher", chat_teacher, "--data", str(synth / "messages"),
                "--out", str(out), "--metrics", f"{out}.json", "--max_steps", "8", "--save_steps", "2",
                "--batch_size", "4", "--eval_steps", "4", "--on_policy", "0.5"]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(command(clean)) == 0  # here, as is the resume: only the killed run needs its own process
    died = run_killed(4, "llm-compress", command(killed))
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
    assert not killed.exists() and (Path(f"{killed}.ckpt") / "checkpoint-4" / "trainer_state.json").is_file()
    assert main([*command(killed), "--resume", "true"]) == 0
    a, b = (json.loads(Path(f"{p}.json").read_text()) for p in (clean, killed))
    assert resume_differences(a, b) == {}
    assert all(w.equal(_weights(clean)[k]) for k, w in _weights(killed).items())


def test_student_size_gives_a_narrower_random_student(chat_teacher, synth, tmp_path):
    from transformers import AutoConfig

    out, metrics, plots = tmp_path / "nano", tmp_path / "m.json", tmp_path / "plots"
    code = main(["distill", "--teacher", chat_teacher, "--data", str(synth / "messages"), "--out", str(out),
                 "--student_size", "nano", "--max_steps", "2", "--batch_size", "4", "--eval_steps", "1",
                 "--metrics", str(metrics), "--plots", str(plots)])
    assert code == 0
    config = AutoConfig.from_pretrained(out)
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    assert json.loads(metrics.read_text())["parameter_ratio"] > 2
    assert (plots / "train.csv").is_file() and len((plots / "eval.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--loss", "kl"], "forward_kl, reverse_kl, jsd"),
        (["--method", "distil"], "kd, sft"),
        (["--student_size", "huge"], "nano"),
        (["--on_policy", "1.5"], "on_policy"),
        (["--hard_weight", "1"], "hard_weight"),
        (["--temperature", "0"], "temperature"),
        (["--student_layers", "4"], "[1, 4)"),
        (["--student_size", "tiny"], "not smaller than the teacher"),
        (["--teacher", "{tmp}/missing"], "llm-train sft --method full"),
        (["--data", "{synth}/sft"], "'messages'"),
    ],
)
def test_bad_input_exits_2_without_output(flags, message, chat_teacher, synth, tmp_path, capsys):
    flags = [f.format(tmp=tmp_path, synth=synth) for f in flags]
    out = tmp_path / "student"
    base = ["--teacher", chat_teacher, "--data", str(synth / "messages"), "--out", str(out), "--max_steps", "1"]
    assert main(["distill", *base, *flags]) == 2
    err = capsys.readouterr().err
    assert "llm-compress distill: error:" in err and message in err
    assert not out.exists()
