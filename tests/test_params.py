"""Every params.yaml section builds its command's config: a misspelt or stale key fails here."""

import dataclasses
import re

import pytest
import yaml
from llm_align.bon import BestOfNConfig
from llm_align.collect import CollectConfig
from llm_align.dpo import DPOConfig
from llm_align.grpo import GRPOConfig
from llm_align.ppo import PPOConfig
from llm_align.reward import RewardConfig
from llm_compress.distill import DistillConfig
from llm_compress.prune import PruneConfig
from llm_compress.quantize import QuantizeConfig
from llm_data.gold import GoldConfig
from llm_data.synth import SynthConfig
from llm_data.tokenizer import TokenizerConfig
from llm_eval.align import AlignEvalConfig
from llm_eval.cot import CotEvalConfig
from llm_eval.mlm import MlmEvalConfig
from llm_eval.report import gold as gold_report
from llm_eval.report.alignment import POLICIES
from llm_eval.report.sections import SECTIONS
from llm_eval.report.transfer import TUNED
from llm_eval.run import EvalConfig
from llm_infer.attention import AttentionConfig
from llm_infer.batch import BatchConfig
from llm_infer.generate import GenerateConfig
from llm_infer.kv_cache import KVCacheConfig
from llm_infer.parity import ParityConfig
from llm_infer.serve import ServeConfig
from llm_infer.speculative import SpeculativeConfig
from llm_train.gguf_import import ImportConfig
from llm_train.init import InitConfig
from llm_train.pretrain import PretrainConfig
from llm_train.sft import SFTConfig

from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
INFER = {"generate": GenerateConfig, "kv_cache": KVCacheConfig, "attention": AttentionConfig,
         "speculative": SpeculativeConfig, "batch": BatchConfig, "serve": ServeConfig, "vllm": BatchConfig,
         "serve_vllm": ServeConfig, "parity": ParityConfig}


def _sections():
    yield "data.synth", SynthConfig, PARAMS["data"]["synth"]
    yield "data.tokenizer", TokenizerConfig, PARAMS["data"]["tokenizer"]
    yield "data.gold", GoldConfig, PARAMS["data"]["gold"]
    yield "train.init", InitConfig, PARAMS["train"]["init"]
    yield "train.pretrain", PretrainConfig, PARAMS["train"]["pretrain"]
    yield "train.mlm.init", InitConfig, PARAMS["train"]["mlm"]["init"]
    yield "train.mlm.pretrain", PretrainConfig, PARAMS["train"]["mlm"]["pretrain"]
    yield "train.reasoning", SFTConfig, PARAMS["train"]["reasoning"]
    for method, section in PARAMS["train"]["sft"].items():
        yield f"train.sft.{method}", SFTConfig, {**section, "method": method}
    for name, section in PARAMS["compress"]["quantize"].items():
        yield f"compress.quantize.{name}", QuantizeConfig, section
    yield "compress.calibration", QuantizeConfig, PARAMS["compress"]["calibration"]
    for name, section in PARAMS["compress"]["prune"].items():
        yield f"compress.prune.{name}", PruneConfig, {**section, "out": f"models/sft-full-{name}"}
    yield "compress.distill", DistillConfig, PARAMS["compress"]["distill"]
    for name, cls in INFER.items():
        yield f"infer.{name}", cls, PARAMS["infer"][name]
    yield "align.reward", RewardConfig, PARAMS["align"]["reward"]
    for name, section in PARAMS["align"]["dpo"].items():
        yield f"align.dpo.{name}", DPOConfig, section
    yield "align.collect", CollectConfig, PARAMS["align"]["collect"]
    yield "align.gold_pairs", CollectConfig, PARAMS["align"]["gold_pairs"]
    for run, section in PARAMS["align"]["ppo"].items():
        yield f"align.ppo.{run}", PPOConfig, section
    for method, section in PARAMS["align"]["grpo"].items():
        yield f"align.grpo.{method}", GRPOConfig, {**section, "method": method}
    yield "align.gold_reward", RewardConfig, PARAMS["align"]["gold_reward"]
    yield "align.gold_bon", BestOfNConfig, PARAMS["align"]["gold_bon"]
    for run, section in PARAMS["align"]["gold_ppo"].items():
        yield f"align.gold_ppo.{run}", PPOConfig, section
    for method, section in PARAMS["align"]["gold_grpo"].items():
        yield f"align.gold_grpo.{method}", GRPOConfig, {**section, "method": method}
    yield "eval.run", EvalConfig, PARAMS["eval"]["run"]
    yield "eval.align", AlignEvalConfig, PARAMS["eval"]["align"]
    yield "eval.mlm", MlmEvalConfig, PARAMS["eval"]["mlm"]
    yield "eval.cot", CotEvalConfig, PARAMS["eval"]["cot"]
    smol = PARAMS["smol"]
    yield "smol.import", ImportConfig, smol["import"]
    yield "smol.eval", EvalConfig, smol["eval"]
    yield "smol.sentiment", EvalConfig, smol["sentiment"]
    for method, section in smol["sft"].items():
        yield f"smol.sft.{method}", SFTConfig, {**section, "method": method}
    for name in SMOL_INFER:
        yield f"smol.{name}", INFER[name], smol[name]
    calibration = {k: v for k, v in smol["compress"].items() if k not in ("quantize", "prune")}
    yield "smol.compress", QuantizeConfig, calibration
    for name, section in smol["compress"]["quantize"].items():
        yield f"smol.compress.quantize.{name}", QuantizeConfig, section
    for name, section in smol["compress"]["prune"].items():
        yield f"smol.compress.prune.{name}", PruneConfig, {**section, "out": f"models/smol-{name}"}
    for name, cls in (("data", GoldConfig), ("pairs", CollectConfig), ("dpo", DPOConfig), ("eval", AlignEvalConfig)):
        yield f"smol.gold.{name}", cls, smol["gold"][name]


# The inference measurements the smol path repeats on SmolLM2-135M-Instruct (smol_<name> stages).
SMOL_INFER = ("kv_cache", "attention", "speculative", "batch", "vllm", "serve", "parity")


def test_every_smol_section_has_a_stage():
    assert set(PARAMS["smol"]) == {"import", "eval", "sentiment", "sft", "compress", "gold", *SMOL_INFER}
    for name in SMOL_INFER:
        assert f"smol_{name}" in DVC["stages"], f"params.yaml smol.{name} has no dvc.yaml stage smol_{name}"


def test_every_compressed_smol_form_is_evaluated_and_reported():
    compressed = [*PARAMS["smol"]["compress"]["quantize"], *PARAMS["smol"]["compress"]["prune"]]
    evaluated = DVC["stages"]["smol_eval"]["foreach"]
    reported = _flag(DVC["stages"]["report_smol"]["cmd"], "models")
    for name in compressed:
        assert evaluated[name]["model"] == f"models/smol-{name}", f"smol_eval has no row {name}"
        assert name in reported, f"report_smol's --models lacks {name}"


def test_every_infer_section_has_a_stage():
    assert set(PARAMS["infer"]) == set(INFER)
    for name in INFER:
        assert f"infer_{name}" in DVC["stages"], f"params.yaml infer.{name} has no dvc.yaml stage infer_{name}"


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
            if key == "method" and name.startswith(("train.sft", "align.grpo", "align.gold_grpo")):
                continue  # the section key itself is the method
            assert f"--{key} " in dvc, f"params.yaml {name}.{key} is never passed by dvc.yaml"


def _flag(cmd: str, name: str) -> list[str]:
    match = re.search(rf"--{name} (\S+)", cmd)
    return match.group(1).split(",") if match else []


def _declared(kind: str):
    """Every path the stages declare under `kind` (metrics, outs), a foreach over a list expanded item by item."""
    for stage in DVC["stages"].values():
        items = stage["foreach"] if isinstance(stage.get("foreach"), list) else [None]
        for item in items:
            for entry in (stage["do"] if "do" in stage else stage).get(kind, []):
                for path in entry if isinstance(entry, dict) else [entry]:
                    yield path if item is None else path.replace("${item}", str(item))


# The encoders `llm-eval embed` scores (the embed stage's foreach keys), all of them in the encoders section.
PARAMS_EMBED = list(DVC["stages"]["embed"]["foreach"])


@pytest.mark.parametrize("stage", [s for s in DVC["stages"] if s.startswith("report_")])
def test_report_stage_deps_match_its_rows_and_sections(stage):
    """DVC cannot derive deps from params, so the report stages list their inputs twice: keep them equal."""
    cmd, deps = DVC["stages"][stage]["cmd"], set(DVC["stages"][stage]["deps"])
    rows = _flag(cmd, "models")
    metrics, items, plots_dir = (_flag(cmd, f"{kind}_dir")[0] for kind in ("metrics", "items", "plots"))
    expected = {f"{metrics}/eval_{row}.json" for row in rows} | {f"{items}/eval_{row}" for row in rows}
    for section in _flag(cmd, "sections"):
        if section == "alignment":  # joined per policy: judge win rates and refusals, the reward models
            policies = [row for row in rows if row in POLICIES]
            expected |= {f"reports/metrics/reward_{k}.json" for k in ("proxy", "gold")}
            expected |= {f"reports/metrics/align_{row}.json" for row in policies}
            expected |= {f"reports/items/align_{row}" for row in policies}
            # the RL policies' train metrics (curve changes), per-step logs and over-optimisation curves
            rl = [row for row in rows if row in PARAMS["align"]["ppo"] or row in PARAMS["align"]["grpo"]]
            expected |= {f"reports/metrics/train_{row}.json" for row in rl}
            expected |= {f"reports/plots/train_{row}/overopt.csv" for row in rl}
            expected |= {f"reports/plots/train_{row}/{'ppo' if row in PARAMS['align']['ppo'] else row}.csv"
                         for row in rl}
        if section == "gold":  # every policy graded by the exact gold, best-of-n, the proxy and its pairs
            graded = ["sft_full", *DVC["stages"]["gold_eval"]["foreach"]]
            assert set(graded[1:]) <= set(gold_report.POLICIES), "gold_eval grades a policy the section lacks"
            expected |= {f"reports/metrics/gold_{p}.json" for p in graded}
            expected |= {f"reports/items/gold_{p}" for p in graded}
            trained = graded[1:]
            expected |= {f"reports/metrics/train_{p}.json" for p in trained}
            expected |= {f"reports/plots/train_{p}/overopt.csv" for p in trained
                         if p in PARAMS["align"]["gold_ppo"] or p.removesuffix("_gold") in PARAMS["align"]["gold_grpo"]}
            expected |= {f"reports/metrics/{f}.json" for f in ("gold_bon", "reward_gold_proxy", "gold_pairs")}
            expected.add("reports/plots/gold_bon/bon.csv")
        if section == "smol_gold":  # the shipped model and its DPO-with-LoRA form, graded by the exact gold
            expected |= {f"{metrics}/gold_{p}.json" for p in ("base", "dpo_gold_lora")}
            expected |= {f"{items}/gold_{p}" for p in ("base", "dpo_gold_lora")}
            expected.add(f"{metrics}/train_dpo_gold_lora.json")
        if section == "cot":  # the direct and chain-of-thought rows, paired over their items
            expected |= {f"reports/{kind}/eval_reasoning_{row}{ext}" for row in ("direct", "cot")
                         for kind, ext in (("metrics", ".json"), ("items", ""))}
        if section == "encoders":  # every encoder's retrieval and probe results, and the contrastive train times
            expected |= {f"reports/{kind}/embed_{name}{ext}" for name in PARAMS_EMBED
                         for kind, ext in (("metrics", ".json"), ("items", ""))}
            expected |= {f"reports/metrics/train_contrastive_{m}.json" for m in PARAMS["train"]["contrastive"]}
        if section == "real":  # the shipped and tuned rows' answers on the real review sentences
            expected |= {f"{items}/eval_sentiment_{row}" for row in rows if row in ("base", *dict(TUNED))}
        # a benchmark run as separate stages (<file>_run<k>.json): every run's metrics and plots
        stem = f"{metrics}/{SECTIONS[section].metrics.removesuffix('.json')}_run"
        runs = [m for m in _declared("metrics") if m.startswith(stem)]
        for run in runs:
            expected |= {run, run.replace(metrics, plots_dir).removesuffix(".json")}
        if SECTIONS[section].metrics and not runs:
            expected.add(f"{metrics}/{SECTIONS[section].metrics}")
        plots = f"{plots_dir}/{SECTIONS[section].folder or f'infer_{section}'}"
        if any(plots in out for st in DVC["stages"].values() for out in st.get("outs", []) if isinstance(out, dict)):
            expected.add(plots)
    assert deps - {"packages/llm-eval/src"} == expected
    assert stage.removeprefix("report_") in _flag(cmd, "preset")


def test_every_embedded_encoder_has_a_row_in_the_encoders_section():
    from llm_eval.report.encoders import ENCODERS

    assert list(ENCODERS) == PARAMS_EMBED
