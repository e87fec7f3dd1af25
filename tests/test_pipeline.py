"""The balanced, alignment and inference learning paths end to end on the tiny profile, in a temporary repo copy."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from llm_eval.report.findings import read_back

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    """This process's environment, offline, with this venv's console scripts (llm-*, dvc, invoke) first on PATH,
    and one thread per torch process: the smol path runs beside the tiny ones (`smol_run`), and on 2 cores a
    2-thread process beside a busy one spin-waits on its own descheduled thread (a tiny reward-model stage took
    13.7 s alone at 2 threads, 23.5 s at 2 threads beside a busy core, 14.6 s at 1 thread beside it)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def _shell(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `cmd` offline with this venv's console scripts first on PATH."""
    return subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True)


def _run(cmd: str, cwd: Path) -> str:
    proc = _shell(cmd, cwd)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


# CI runs every stage of the balanced path, on less data and fewer epochs than the committed profile
# (which takes ~15 min on 2 cores): the plumbing, caching and reports are what this test checks.
REDUCED = {
    ("data", "synth", "n_per_category"): 150,
    ("data", "synth", "n_documents"): 600,
    ("train", "pretrain", "epochs"): 2,
    ("train", "sft", "full", "epochs"): 2,
    ("train", "sft", "lora", "epochs"): 1,
    ("train", "sft", "qlora", "epochs"): 1,
    ("compress", "distill", "epochs"): 1,
    ("align", "reward", "epochs"): 1,
    ("align", "reward", "max_per_category"): 30,
    ("align", "category_caps"): "safety=30,benign=30",
    ("eval", "align", "kl_samples"): 16,
    **{("align", "dpo", method, key): value
       for method in ("dpo", "ipo", "simpo", "orpo", "kto", "dpo_onpolicy", "dpo_gold", "dpo_gold_b05",
                      "dpo_gold_b01", "pft_gold", "ipo_gold", "kto_gold", "orpo_gold", "simpo_gold")
       for key, value in (("epochs", 1), ("max_per_category", 20))},
    ("align", "gold_pairs", "samples"): 4,
    ("align", "gold_pairs", "max_per_category"): 30,
    ("align", "gold_reward", "epochs"): 1,
    ("align", "gold_bon", "n"): "1,2,4",
    **{("align", "gold_ppo", run, key): value for run in ("ppo_gold", "ppo_gold_kl03", "ppo_gold_nokl")
       for key, value in (("max_steps", 4), ("batch_size", 8), ("curve_every", 2), ("curve_prompts", 16))},
    **{("align", "gold_grpo", method, key): value for method in ("grpo", "rloo")
       for key, value in (("max_steps", 4), ("batch_size", 16), ("curve_every", 2), ("curve_prompts", 16))},
    ("align", "collect", "max_per_category"): 20,
    ("align", "collect", "samples"): 2,
    ("align", "collect", "min_margin"): 0.0,  # the reduced reward model's margins are small
    **{("align", "ppo", run, key): value for run in ("ppo", "ppo_nokl")
       for key, value in (("max_steps", 4), ("batch_size", 8), ("curve_every", 2), ("curve_prompts", 16))},
    **{("align", "grpo", method, key): value for method in ("grpo", "rloo")
       for key, value in (("max_steps", 4), ("batch_size", 16), ("curve_every", 2), ("curve_prompts", 16))},
    ("compress", "calibration", "calibration_samples"): 16,
    ("infer", "vllm", "repeats"): 2,
    ("infer", "serve_vllm", "load_test_requests"): 16,
    ("infer", "parity", "max_samples"): 40,
    ("train", "mlm", "pretrain", "epochs"): 1,
    ("train", "reasoning", "epochs"): 1,
    ("eval", "mlm", "pppl_documents"): 8,
    ("train", "contrastive", "simcse", "epochs"): 1,
    ("train", "contrastive", "supervised", "epochs"): 1,
    # The smol path on SmolLM2-135M-Instruct: every stage, on a few dozen items and a few training steps.
    ("smol", "eval", "per_category"): 4,
    ("smol", "eval", "max_documents"): 6,
    ("smol", "sentiment", "max_samples"): 16,
    **{("smol", "sft", method, key): value for method in ("lora", "qlora")
       for key, value in (("max_steps", 2), ("batch_size", 4), ("eval_steps", 2))},
    ("smol", "kv_cache", "new_tokens"): "16",
    ("smol", "kv_cache", "repeats"): 2,
    ("smol", "attention", "seq_lens"): "32,64",
    ("smol", "attention", "repeats"): 2,
    ("smol", "speculative", "max_samples"): 2,
    ("smol", "speculative", "max_new_tokens"): 16,
    ("smol", "batch", "n_prompts"): 8,
    ("smol", "batch", "batch_sizes"): "1,4",
    ("smol", "batch", "max_new_tokens"): 8,
    ("smol", "compress", "calibration_samples"): 8,
    ("smol", "vllm", "n_prompts"): 8,
    ("smol", "vllm", "batch_sizes"): "8",
    ("smol", "vllm", "max_new_tokens"): 8,
    ("smol", "serve", "load_test_requests"): 4,
    ("smol", "serve", "load_test_clients"): 2,
    ("smol", "serve", "max_tokens"): 8,
    ("smol", "parity", "max_samples"): 4,
    ("smol", "parity", "max_new_tokens"): 8,
    ("smol", "gold", "data"): {"train": 16, "validation": 8, "test": 16},
    **{("smol", "gold", "pairs", key): value for key, value in (("samples", 3), ("max_new_tokens", 8))},
    **{("smol", "gold", "eval", key): value for key, value in (("max_new_tokens", 8), ("kl_samples", 4))},
}


def _reduce(params_file: Path, overrides: dict = REDUCED) -> None:
    """Set each (section, ..., key) of `overrides` in a params file; every key must already be there."""
    params = yaml.safe_load(params_file.read_text())
    for keys, value in overrides.items():
        section = params
        for key in keys[:-1]:
            section = section[key]
        assert keys[-1] in section, f"{params_file.name} has no {'.'.join(keys)}"
        section[keys[-1]] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def _copy_repo(dst: Path) -> None:
    """The repository's files as git sees them (no data/, models/, venv, committed reports or lock) into `dst`."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file() and not rel.startswith(("reports/", "dvc.lock")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """The repository's files as git sees them (no data/, models/, venv), as a fresh git repo, with
    the reduced-size params."""
    dst = tmp_path_factory.mktemp("lab") / "llm-lab"
    _copy_repo(dst)
    _reduce(dst / "params.yaml")
    _run("git init -q && git add -A && git -c user.email=ci@lab -c user.name=ci commit -qm init", dst)
    return dst


@pytest.fixture(scope="module")
def path_run(repo_copy):
    return _run("invoke path --name balanced", repo_copy)


@pytest.fixture(scope="module")
def smol_run(repo_copy, path_run, tmp_path_factory):
    """`invoke path --name smol`, started in the background in a copy of the repo taken once the balanced path
    is done (the smol report sets the tiny findings beside its own): the process, its copy and its log.

    It runs while the tiny alignment, inference and complete paths run in the first copy. One `dvc repro`
    holds its repository's lock, hence the copy. The tiny stages leave a core idle most of the time (Python
    and process start-up, not matrix work), so the smol path's one-thread stages take it."""
    dst = tmp_path_factory.mktemp("smol") / "llm-lab"
    shutil.copytree(repo_copy, dst, symlinks=True)
    log = dst.parent / "path_smol.log"
    with log.open("w") as out:
        proc = subprocess.Popen("invoke path --name smol", shell=True, cwd=dst, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc, dst, log
    if proc.poll() is None:  # a failed or interrupted session: no stages left running behind it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_path_writes_reports_and_metrics(repo_copy, path_run, smol_run):  # smol_run: started as early as it can
    assert "path balanced: done" in path_run
    report = (repo_copy / "reports" / "fast.md").read_text()
    for row in ("base", "sft_full", "sft_lora", "sft_qlora", "int8", "nf4"):
        assert row in report
        m = json.loads((repo_copy / "reports" / "metrics" / f"eval_{row}.json").read_text())
        assert 0 <= m["exact_match"] <= 100 and m["perplexity"] > 1
    assert (repo_copy / "reports" / "fast.html").is_file()
    sft = json.loads((repo_copy / "reports/metrics/eval_sft_full.json").read_text())["exact_match"]
    base = json.loads((repo_copy / "reports/metrics/eval_base.json").read_text())["exact_match"]
    assert sft > base  # fine-tuning on the tasks must beat the raw pre-trained model
    # The report opens with its key takeaways and its comparisons, each with an interval; the plumbing comes last.
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Key takeaways", "## Findings"] and headings[-1] == "## What ran"
    assert any(line.startswith("LoRA, exact match: sft_lora vs sft_full: ") for line in read_back(report))
    assert 3 <= len(report.split("## Key takeaways")[1].split("\n## ")[0].strip().splitlines()) <= 8
    card = (repo_copy / "reports" / "card.md").read_text()
    assert "| fast |" in card and "| balanced |" in card and "| Supervised fine-tuning | fast |" in card
    for row in ("sft_full", "sft_lora"):
        items = repo_copy / "reports" / "items" / f"eval_{row}" / "answers.jsonl"
        assert len(items.read_text().splitlines()) == json.loads(
            (repo_copy / "reports/metrics" / f"eval_{row}.json").read_text())["n_samples"]
    assert "train_base" in _run("dvc metrics show", repo_copy)
    assert (repo_copy / "dvc.lock").is_file()


def test_balanced_report_has_every_section(repo_copy, path_run):
    report = (repo_copy / "reports" / "balanced.md").read_text()
    for title in ("Knowledge distillation", "Decoding strategies", "KV cache", "Attention implementations",
                  "Speculative decoding", "Batching", "Serving", "Goals"):
        assert f"## {title}" in report
    assert "student_kd" in report and "student_sft" in report
    assert (repo_copy / "reports" / "balanced.html").is_file()
    serve = json.loads((repo_copy / "reports/metrics/infer_serve.json").read_text())
    assert serve["errors"] == 0 and serve["requests"] == 64
    spec = json.loads((repo_copy / "reports/metrics/infer_speculative.json").read_text())
    assert spec["prompt_lookup_identical_fraction"] == 1.0  # speculative decoding must not change greedy output


def test_second_run_does_nothing(repo_copy, path_run):
    out = _run("dvc repro report_fast report_balanced", repo_copy)
    assert "Running stage" not in out


def test_param_change_reruns_only_downstream(repo_copy, path_run):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["train"]["sft"]["lora"]["lora_r"] = 2
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    params["infer"]["generate"]["max_new_tokens"] = 16
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run("dvc repro report_fast report_balanced", repo_copy)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"sft@lora", "eval@sft_lora", "infer_generate", "report_fast", "report_balanced"}


def test_alignment_path_judges_every_policy(repo_copy, path_run):
    out = _run("invoke path --name alignment", repo_copy)
    assert "path alignment: done" in out
    report = (repo_copy / "reports" / "alignment.md").read_text()
    assert "## Alignment: reward model, preference optimisation and RL" in report
    findings = read_back(report)
    for policy in ("dpo", "ipo", "simpo", "orpo", "kto", "dpo_onpolicy", "ppo", "ppo_nokl", "grpo", "rloo"):
        m = json.loads((repo_copy / "reports/metrics" / f"align_{policy}.json").read_text())
        assert 0 <= m["win_rate_lo"] <= m["win_rate"] <= m["win_rate_hi"] <= 100
        assert any(line.startswith(f"{policy}, gold-judge win rate ") for line in findings), policy
    for policy in ("ppo", "ppo_nokl", "grpo", "rloo"):  # the over-optimisation curve's start-to-end changes
        assert any(line.startswith(f"{policy}, gold-judge score, last vs first training step") or
                   f"{policy}'s last step vs its first ({policy}, gold-judge score" in line for line in findings)
    assert any(line.startswith("grpo, exact match (arithmetic): grpo vs sft_full: ") or
               "grpo vs sft_full (grpo, exact match (arithmetic))" in line for line in findings)
    for image in ("overoptimisation", "rl_training"):
        assert (repo_copy / "reports" / "alignment" / f"alignment_{image}.png").is_file()
    gold = json.loads((repo_copy / "reports/metrics/reward_gold.json").read_text())
    assert 0 <= gold["accuracy"] <= 100 and gold["n_pairs"] > 100
    # The SFT reference and DPO on gold-labelled pairs, graded by the exact rule on every held-out sum.
    exact = json.loads((repo_copy / "reports/metrics/gold_sft_full.json").read_text())
    assert exact["n_prompts"] == 500 and 0 <= exact["gold_pass_lo"] <= exact["gold_pass"] <= exact["gold_pass_hi"]
    pairs = json.loads((repo_copy / "reports/metrics/gold_pairs.json").read_text())
    assert pairs["train_pairs"] > 0 and 0 <= pairs["train_label_noise"] <= 100
    for policy in ("dpo_gold", "dpo_gold_b05", "dpo_gold_b01", "pft_gold", "ipo_gold", "kto_gold", "orpo_gold",
                   "simpo_gold", "ppo_gold", "ppo_gold_kl03", "ppo_gold_nokl", "grpo_gold", "rloo_gold"):
        m = json.loads((repo_copy / "reports/metrics" / f"gold_{policy}.json").read_text())
        assert m["n_prompts"] == 500 and 0 <= m["win_rate_lo"] <= m["win_rate"] <= m["win_rate_hi"] <= 100
        assert any(line.startswith(f"{policy}, gold win rate ") for line in findings), policy
    proxy = json.loads((repo_copy / "reports/metrics/reward_gold_proxy.json").read_text())
    assert proxy["below_ceiling"] == pytest.approx(proxy["noise_ceiling"] - proxy["noisy_accuracy"], abs=1e-3)
    bon = json.loads((repo_copy / "reports/metrics/gold_bon.json").read_text())
    assert bon["n4_kl"] == pytest.approx(math.log(4) - 3 / 4) and bon["n_prompts"] == 500
    # The report opens with what each method bought against the gold, at what KL.
    takeaways = report.split("## Key takeaways", 1)[1].split("##", 1)[0]
    assert takeaways.strip().startswith("- Against the exact gold on 500 held-out sums")
    assert "## Alignment against an exact gold" in report
    for image in ("frontier", "overoptimisation"):
        assert (repo_copy / "reports" / "alignment" / f"gold_{image}.png").is_file()


def test_inference_path_compares_every_compressed_form(repo_copy, path_run):
    out = _run("invoke path --name inference", repo_copy)
    assert "path inference: done" in out
    report = (repo_copy / "reports" / "inference.md").read_text()
    for title in ("Compression side by side", "vLLM against transformers generate", "Serving with vLLM",
                  "Train/serve parity", "Batching", "Speculative decoding"):
        assert f"## {title}" in report, title
    findings = "\n".join(read_back(report))
    for row, kind in (("gptq", "quantization"), ("awq", "quantization"), ("quanto_int8", "quantization"),
                      ("quanto_int4", "quantization"), ("magnitude_70", "pruning"), ("sparsegpt_2of4", "pruning")):
        for metric in ("exact match", "perplexity change"):  # a row, or named among the identical ones
            assert (f"{row} {kind}, {metric}: {row} vs sft_full:" in findings
                    or f"{row} vs sft_full ({row} {kind}, {metric})" in findings), (row, metric)
    metrics = repo_copy / "reports" / "metrics"

    def load(name):
        return json.loads((metrics / f"{name}.json").read_text())

    for key in ("magnitude_50", "sparsegpt_50", "wanda_50"):  # the saved weights hold the asked-for zeros
        assert abs(load(f"prune_{key}")["sparsity"] - 0.5) < 0.01, key
    assert load("prune_sparsegpt_2of4")["groups_2_4"] == 1.0
    for key in ("gptq", "awq", "quanto_int4"):
        assert load(f"quantize_{key}")["size_ratio"] > 2.5, key
    assert load("infer_vllm")["vllm_available"] == 1 and load("infer_serve_vllm")["errors"] == 0
    parity = load("infer_parity")
    # The same weights through the same prompt pipeline: the transformers server and the merged adapter
    # reproduce in-process greedy replies exactly. vLLM's own fp32 kernels may flip a rare near-tie.
    assert parity["server_transformers_identical"] == 100.0 and parity["merged_identical"] == 100.0
    assert parity["server_vllm_identical"] >= 90.0
    assert (repo_copy / "reports" / "inference" / "pruning_curve.png").is_file()


ENCODERS = ("random", "causal", "mlm", "simcse", "supervised", "minilm")


def test_complete_path_adds_mlm_contrastive_and_cot_and_reruns_nothing_shared(repo_copy, path_run):
    """After the other paths, `complete` runs only its own stages (masked LM, contrastive encoders, chain of
    thought) and the report."""
    out = _run("invoke path --name complete", repo_copy)
    assert "path complete: done" in out
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"init_bert", "pretrain_mlm", "eval_mlm", "sft_reasoning@direct", "sft_reasoning@cot",
                   "eval_reasoning@direct", "eval_reasoning@cot", "contrastive@simcse", "contrastive@supervised",
                   *(f"embed@{name}" for name in ENCODERS), "report_complete"}, ran
    report = (repo_copy / "reports" / "complete.md").read_text()
    headings = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    for title in ("Masked-LM pre-training", "Encoders: the pre-training paradigms side by side, and contrastive "
                  "learning", "Chain-of-thought tuning", "Knowledge distillation",
                  "Alignment: reward model, preference optimisation and RL", "Compression side by side",
                  "vLLM against transformers generate", "Train/serve parity"):
        assert title in headings, title
    assert "[Chain-of-thought tuning](#chain-of-thought-tuning)" in report.split("## Key takeaways")[0]  # contents
    assert any(line.startswith("Chain-of-thought tuning, exact match: chain-of-thought vs direct:")
               or "chain-of-thought vs direct (Chain-of-thought tuning, exact match)" in line
               for line in read_back(report))
    metrics = repo_copy / "reports" / "metrics"
    mlm = json.loads((metrics / "eval_mlm.json").read_text())
    assert 0 <= mlm["masked_accuracy_lo"] <= mlm["masked_accuracy"] <= mlm["masked_accuracy_hi"] <= 100
    cot = json.loads((metrics / "eval_reasoning_cot.json").read_text())
    direct = json.loads((metrics / "eval_reasoning_direct.json").read_text())
    # The reduced run trains for a few steps only: what is checked is that both rows scored the same items.
    assert cot["n_samples"] == direct["n_samples"] > 20
    assert all(0 < m["reply_tokens"] <= 64 for m in (cot, direct))
    # Every encoder on the same held-out queries and probe texts; the table has a row for each.
    encoders = {name: json.loads((metrics / f"embed_{name}.json").read_text()) for name in ENCODERS}
    assert len({(m["queries"], m["documents"], m["probe_truth_items"]) for m in encoders.values()}) == 1
    assert all(0 <= m["retrieval_accuracy_lo"] <= m["retrieval_accuracy"] <= m["retrieval_accuracy_hi"] <= 100
               for m in encoders.values())
    assert encoders["minilm"]["dimension"] == 384 and encoders["minilm"]["retrieval_accuracy"] >= 80
    assert any(line.startswith("Encoders, retrieval accuracy@1: supervised contrastive vs masked LM:")
               or "supervised contrastive vs masked LM (Encoders, retrieval accuracy@1)" in line
               for line in read_back(report))


def test_smol_path_runs_a_real_model_and_sets_the_tiny_findings_beside_it(smol_run):
    proc, repo_copy, log = smol_run
    proc.wait()
    out = log.read_text()
    assert proc.returncode == 0 and "path smol: done" in out, f"invoke path --name smol failed:\n{out[-4000:]}"
    # The import wrote a plain fp32 folder: no GGUF quantization mark left for later loads to trip on.
    config = json.loads((repo_copy / "models/smollm2-135m-instruct/config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    report = (repo_copy / "reports" / "smol.md").read_text()
    for heading in ("## What carries from the tiny profile", "## Real text and real sentences", "## KV cache",
                    "## Attention implementations", "## Speculative decoding", "## Batching",
                    "## vLLM against transformers generate", "## Serving", "## Train/serve parity",
                    "## DPO with LoRA on the shipped model, graded by the exact gold"):
        assert heading in report
    dpo = json.loads((repo_copy / "reports/metrics/smol/gold_dpo_gold_lora.json").read_text())
    assert dpo["n_prompts"] == 16 and 0 <= dpo["win_rate_lo"] <= dpo["win_rate"] <= dpo["win_rate_hi"] <= 100
    # every compressed form has its size and its comparison with the shipped model
    for name in ("int8", "nf4", "gptq", "awq", "quanto_int4", "sparsegpt_50", "sparsegpt_2of4"):
        assert json.loads((repo_copy / f"reports/metrics/smol/eval_{name}.json").read_text())["n_samples"] == 24
    assert "gptq size on disk, fp32 / gptq (x)" in report
    vllm = report.split("## vLLM against transformers generate", 1)[1].split("\n## ", 1)[0]
    assert "mean over 3 separate runs" in vllm and "| run | vLLM tokens/s |" in vllm
    lessons = report.split("## What carries from the tiny profile", 1)[1].split("\n## ", 1)[0]
    assert "| LoRA teaches the tasks | sft_lora vs base:" in lessons  # measured on both profiles
    findings = read_back(report)
    # (two training steps may change no reply: then the comparison is listed as identical, still named)
    assert any("sft_lora vs base" in f and "exact match, skill categories" in f for f in findings)
    m = json.loads((repo_copy / "reports/metrics/smol/eval_base.json").read_text())
    assert m["n_samples"] == 24 and m["perplexity"] > 1
    sentiment = json.loads((repo_copy / "reports/metrics/smol/eval_sentiment_base.json").read_text())
    assert sentiment["n_samples"] == 16
    record = json.loads((repo_copy / "reports/paths/smol.json").read_text())
    assert record["preset"] == "smol" and record["seconds"] > 0
    assert "smol" in (repo_copy / "reports" / "card.md").read_text()


def test_unknown_preset_lists_valid_names(repo_copy):
    proc = _shell("invoke path --name nope", repo_copy)
    assert proc.returncode != 0 and "fast" in proc.stderr + proc.stdout
