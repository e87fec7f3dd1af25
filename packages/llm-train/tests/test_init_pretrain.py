import json

import torch
from llm_train.cli import main
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_init_matches_tokenizer(workspace):
    tok = AutoTokenizer.from_pretrained(workspace / "init")
    model = AutoModelForCausalLM.from_pretrained(workspace / "init")
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64


def test_init_is_seeded(workspace, tmp_path):
    args = ["init", "--size", "nano", "--tokenizer", str(workspace / "tok")]
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_updates_weights_and_writes_curves(workspace, tmp_path):
    out, metrics, plots = tmp_path / "base", tmp_path / "m.json", tmp_path / "plots"
    rc = main(
        [
            "pretrain",
            "--model",
            str(workspace / "init"),
            "--data",
            str(workspace / "synth" / "pretrain"),
            "--out",
            str(out),
            "--max_steps",
            "12",
            "--batch_size",
            "4",
            "--block_size",
            "32",
            "--eval_steps",
            "6",
            "--save_steps",
            "6",
            "--metrics",
            str(metrics),
            "--plots",
            str(plots),
        ]
    )
    assert rc == 0
    before = AutoModelForCausalLM.from_pretrained(workspace / "init").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    m = json.loads(metrics.read_text())
    assert m["trainable_params"] == m["total_params"] > 0 and m["eval_loss"] > 0 and m["size_mb"] > 0
    assert m["train_tokens"] == 12 * 4 * 32
    assert (plots / "train.csv").read_text().startswith("step,loss\n")
    assert len((plots / "eval.csv").read_text().splitlines()) >= 3  # header + evals at steps 6 and 12
    assert not (tmp_path / "base.ckpt").exists()  # checkpoints only live while a run is unfinished


def test_pretrain_resumes_from_checkpoint(workspace, tmp_path, monkeypatch):
    from transformers import Trainer

    args = [
        "pretrain",
        "--model",
        str(workspace / "init"),
        "--data",
        str(workspace / "synth" / "pretrain"),
        "--out",
        str(tmp_path / "base"),
        "--max_steps",
        "8",
        "--batch_size",
        "4",
        "--block_size",
        "32",
        "--save_steps",
        "4",
        "--eval_steps",
        "4",
    ]
    seen = {}
    original = Trainer.train

    def crash_after_first_checkpoint(self, resume_from_checkpoint=None, **kw):
        seen["resume"] = resume_from_checkpoint
        self.args.max_steps = 4
        original(self, resume_from_checkpoint=resume_from_checkpoint, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", crash_after_first_checkpoint)
    try:
        main(args)
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "base.ckpt" / "checkpoint-4").is_dir() and not (tmp_path / "base").exists()
    monkeypatch.setattr(
        Trainer,
        "train",
        lambda self, resume_from_checkpoint=None, **kw: (
            seen.__setitem__("resume", resume_from_checkpoint),
            original(self, resume_from_checkpoint=resume_from_checkpoint),
        )[1],
    )
    assert main([*args, "--resume", "true"]) == 0
    assert seen["resume"] == str(tmp_path / "base.ckpt" / "checkpoint-4") and (tmp_path / "base").is_dir()


def test_missing_model_folder_is_one_line_error(workspace, tmp_path, capsys):
    missing = tmp_path / "models" / "nope"
    rc = main(
        [
            "pretrain",
            "--model",
            str(missing),
            "--data",
            str(workspace / "synth" / "pretrain"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and "llm-train init" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("init", "pretrain", "sft"))


def test_init_std_scales_with_width(workspace, tmp_path):
    args = ["init", "--size", "nano", "--tokenizer", str(workspace / "tok")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert abs(config["initializer_range"] - 1.5 / 64**0.5) < 1e-9
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert abs(a.model.layers[0].self_attn.q_proj.weight.std().item() - 1.5 / 64**0.5) < 0.02
    assert main([*args, "--out", str(tmp_path / "b"), "--init_std", "0.02"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["initializer_range"] == 0.02


def test_cpu_training_is_fp32_without_checkpointing():
    """trl's configs default to bf16 autocast and gradient checkpointing; on CPU both must be off."""
    import torch
    from llm_train.loop import LoopConfig

    args = LoopConfig().trainer_args("out")
    if not torch.cuda.is_available():
        assert args["bf16"] is False and args["fp16"] is False and args["use_cpu"] is True
    else:  # mixed precision by default on a GPU: bf16 where the device has it, else fp16
        assert args["bf16"] == torch.cuda.is_bf16_supported() and args["fp16"] != args["bf16"]
    assert args["gradient_checkpointing"] is False
    assert LoopConfig(precision="fp32").trainer_args("out")["bf16"] is False
    assert LoopConfig(precision="bf16").trainer_args("out")["bf16"] is True  # CPU autocast, when asked for


def test_precision_and_processes_are_checked(monkeypatch):
    import pytest
    import torch
    from llm_train.loop import LoopConfig

    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        LoopConfig(precision="fp8")
    with pytest.raises(ValueError, match=r"batch_size \(6\) is the global batch.*num_processes \(4\)"):
        LoopConfig(batch_size=6, num_processes=4)
    with pytest.raises(FileNotFoundError, match="nope.yaml: no such accelerate config"):
        LoopConfig(num_processes=2, accelerate_config="nope.yaml")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
            LoopConfig(precision="fp16").trainer_args("out")
    monkeypatch.setenv("LLM_LAB_NUM_PROCESSES", "2")
    assert LoopConfig().num_processes == 2  # `invoke path --processes 2` reaches every stage this way
    monkeypatch.setenv("LLM_LAB_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="LLM_LAB_NUM_PROCESSES='two'"):
        LoopConfig()
    monkeypatch.setenv("WORLD_SIZE", "2")  # inside a 2-process launch each process takes half the batch
    monkeypatch.delenv("LLM_LAB_NUM_PROCESSES")
    assert LoopConfig(batch_size=16).trainer_args("out")["per_device_train_batch_size"] == 8


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    """A SIGKILL while checkpoint-8 is written leaves it without trainer_state.json: resume from checkpoint-4."""
    from llm_train.loop import LoopConfig

    cfg = LoopConfig(resume=True)
    cfg.out = str(tmp_path / "m")
    assert cfg.resume_from() is None
    for step in (4, 8):
        (cfg.ckpt_dir / f"checkpoint-{step}").mkdir(parents=True)
    (cfg.ckpt_dir / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert cfg.resume_from() == str(cfg.ckpt_dir / "checkpoint-4")
    (cfg.ckpt_dir / "checkpoint-8" / "trainer_state.json").write_text("{}")
    assert cfg.resume_from() == str(cfg.ckpt_dir / "checkpoint-8")
