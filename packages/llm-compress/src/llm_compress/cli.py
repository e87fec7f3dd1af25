"""`llm-compress <command>`: compression of a trained model: knowledge distillation into a smaller student
(trl GKD: forward/reverse KL or JSD, optionally on-policy), post-training quantization (bitsandbytes 8-bit /
4-bit NF4, GPTQ, AWQ) and pruning (magnitude, Wanda, SparseGPT; unstructured or 2:4)."""

from __future__ import annotations

from llm_data.cli import dispatch

PROG = "llm-compress"
# name -> (module, config class, run function); torch / transformers load inside `run_*`.
COMMANDS = {
    "quantize": ("llm_compress.quantize", "QuantizeConfig", "run_quantize"),
    "distill": ("llm_compress.distill", "DistillConfig", "run_distill"),
    "prune": ("llm_compress.prune", "PruneConfig", "run_prune"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
