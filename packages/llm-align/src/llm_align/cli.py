"""`llm-align <command>`: reward model and preference optimisation (trl), one module per technique."""

from __future__ import annotations

from llm_data.cli import dispatch

PROG = "llm-align"
# name -> (module, config class, run function); torch / transformers / trl load inside `run_*`.
COMMANDS = {
    "collect": ("llm_align.collect", "CollectConfig", "run_collect"),
    "reward": ("llm_align.reward", "RewardConfig", "run_reward"),
    "dpo": ("llm_align.dpo", "DPOConfig", "run_dpo"),
    "ppo": ("llm_align.ppo", "PPOConfig", "run_ppo"),
    "grpo": ("llm_align.grpo", "GRPOConfig", "run_grpo"),
    "best_of_n": ("llm_align.bon", "BestOfNConfig", "run_best_of_n"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
