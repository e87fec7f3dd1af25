"""Direct preference optimisation and its family: DPO, IPO, SimPO, ORPO and KTO, with trl's trainers.

DPO (Rafailov et al. 2023, arXiv:2305.18290) skips the reward model and PPO: the policy's log-ratio
to a frozen reference *is* an implicit reward, and a logistic loss on (chosen - rejected) of that
reward fits the Bradley-Terry preference directly. IPO (Azar et al. 2023, arXiv:2310.12036) swaps the
logistic loss for a squared one so a deterministic preference cannot push the ratio to infinity.
SimPO (Meng et al. 2024, arXiv:2405.14734) drops the reference and uses the length-normalised
log-likelihood with a target margin (trl's CPOTrainer, `loss_type="simpo"`, `cpo_alpha=0`). ORPO (Hong
et al. 2024, arXiv:2403.07691) adds an odds-ratio penalty to the SFT loss, again with no reference.
KTO (Ethayarajh et al. 2024, arXiv:2402.01306) needs only a thumbs-up/down per reply: each pair is
split into a desirable and an undesirable example. Preferred-FT, the baseline of the DPO paper, is plain SFT
on the chosen replies: what the preference adds over imitating the better reply.

    llm-align dpo --method dpo --model models/sft-full --data data/synth/preference --out models/dpo
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_local_or_hub, write_metrics
from llm_eval.run import load_tokenizer
from llm_train.distributed import relaunch, world_size
from llm_train.loop import count_trained_tokens, write_loss_curves

from llm_align.base import AlignConfig, save_trained
from llm_align.data import load_pairs, to_dataset

logger = logging.getLogger(__name__)
# method -> (what it optimises, in a few words; its paper); the trainers are picked in _trainer.
METHODS = {
    "dpo": "logistic loss on the policy/reference log-ratio margin (Rafailov et al. 2023)",
    "ipo": "squared loss towards a fixed log-ratio margin 1/(2 beta) (Azar et al. 2023)",
    "simpo": "length-normalised likelihood margin, no reference model (Meng et al. 2024)",
    "orpo": "SFT loss plus an odds-ratio preference term, no reference model (Hong et al. 2024)",
    "kto": "prospect-theory loss on unpaired desirable / undesirable replies (Ethayarajh et al. 2024)",
    "preferred_ft": "SFT on the chosen replies alone, the rejected ones unused (the DPO paper's Preferred-FT)",
}
UNCOUNTED = ("orpo", "simpo")  # trl trainers whose batches the Trainer cannot count tokens in


@dataclass
class DPOConfig(AlignConfig):
    method: str = field(default="dpo", metadata={"help": "; ".join(f"{k}: {v}" for k, v in METHODS.items())})
    out: str = field(default="models/dpo", metadata={"help": "Output folder (the aligned policy)."})
    beta: float = field(
        default=0.1,
        metadata={
            "help": "Strength of the pull towards the reference (dpo, ipo, kto), the reward scale of simpo, "
            "or the weight of the odds-ratio term (orpo)."
        },
    )
    simpo_gamma: float = field(
        default=0.5, metadata={"help": "simpo: target margin between chosen and rejected rewards."}
    )
    sft_weight: float = field(
        default=0.0,
        metadata={
            "help": "dpo/ipo: add this weight times the NLL of the chosen reply (RPO, Pang et al. 2024). "
            "Pure DPO can lower the likelihood of both replies, the chosen one too (Razin et al. 2024); "
            "the NLL term keeps the chosen reply likely enough to be generated."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if self.sft_weight and self.method not in ("dpo", "ipo"):
            raise ValueError(f"sft_weight applies to dpo and ipo; {self.method} has its own (orpo) or none")


def _trainer(cfg: DPOConfig, model, tokenizer, train, validation):
    """The trl trainer of `cfg.method`, configured with llm-lab's loop settings."""
    # trl's experimental ORPO/CPO batches keep prompt, chosen and rejected ids apart, with no input_ids
    # for the Trainer to count: `run_dpo` counts their training passes instead (count_trained_tokens)
    common = dict(**cfg.trainer_args(count_tokens=cfg.method not in UNCOUNTED), **cfg.checkpoint_args(),
                  max_length=cfg.max_length)
    data = dict(train_dataset=to_dataset(train), eval_dataset=to_dataset(validation), processing_class=tokenizer,
                peft_config=cfg.peft_config("CAUSAL_LM"))
    if cfg.method in ("dpo", "ipo", "preferred_ft"):
        from trl import DPOConfig as TrlDPOConfig
        from trl import DPOTrainer

        # trl's "sft" loss is the chosen reply's NLL: alone, it is Preferred-FT
        loss = {"dpo": ["sigmoid"], "ipo": ["ipo"], "preferred_ft": ["sft"]}[cfg.method]
        loss += ["sft"] if cfg.sft_weight else []
        # The frozen reference's log-probs are the same every epoch: one pass before training, not one per step.
        # Not across processes: trl then writes them next to the dataset's cache files, and our in-memory
        # datasets keep those in each process's own temporary folder, where the other workers cannot read.
        args = TrlDPOConfig(
            **common,
            beta=cfg.beta,
            loss_type=loss,
            loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight else None,
            precompute_ref_log_probs=world_size() == 1,
        )
        return DPOTrainer(model=model, args=args, **data)
    if cfg.method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**common, beta=cfg.beta, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=cfg.simpo_gamma)
        return CPOTrainer(model=model, args=args, **data)
    if cfg.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(model=model, args=ORPOConfig(**common, beta=cfg.beta), **data)
    from trl import KTOConfig, KTOTrainer
    from trl.data_utils import unpair_preference_dataset

    # KTO's KL baseline needs mismatched (prompt, reply) pairs inside a batch, hence trl's sequential
    # sampler; shuffle the unpaired rows once, with the seed, so a batch still mixes prompts and labels.
    data["train_dataset"] = unpair_preference_dataset(data["train_dataset"]).shuffle(seed=cfg.seed)
    data["eval_dataset"] = unpair_preference_dataset(data["eval_dataset"])
    return KTOTrainer(model=model, args=KTOConfig(**common, beta=cfg.beta), **data)


def run_dpo(cfg: DPOConfig) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    if relaunch(cfg, "llm_align.cli", "dpo"):
        return Path(cfg.out)
    name = require_local_or_hub(cfg.model, "llm-train sft")
    train = load_pairs(cfg.data, "train", caps=cfg.caps)
    validation = load_pairs(cfg.data, "validation")
    tokenizer = load_tokenizer(name)
    set_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    trainer = _trainer(cfg, model, tokenizer, train, validation)
    if cfg.method in UNCOUNTED:
        count_trained_tokens(trainer, trainer.model)
    run = cfg.train(trainer)
    held_out = trainer.evaluate()  # the validation pairs, tokenized by the trainer as it trains
    if not save_trained(cfg, trainer, tokenizer):
        return Path(cfg.out)
    cfg.done()
    metrics = {**run, "train_pairs": len(train)}
    # The trainers' own diagnostics on the validation pairs: implicit-reward accuracy and margin where
    # the method defines them (batch means, no interval; `llm-eval align` measures the held-out
    # prompts, with intervals, for every policy alike). Not timings, nor trl's `num_tokens`: the training
    # tokens so far, which it counts afresh after a resume (train_tokens_seen counts the whole run).
    for key, value in held_out.items():
        if (key.startswith("eval_") and isinstance(value, int | float) and key != "eval_num_tokens"
                and not key.endswith(("_per_second", "runtime"))):
            metrics["validation_" + key[len("eval_") :].replace("/", "_")] = value
    logger.info("%s %s: %s", cfg.method, cfg.out, metrics)
    write_metrics(cfg.metrics, metrics)
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
