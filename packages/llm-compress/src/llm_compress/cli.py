"""`llm-compress <command>`: post-training compression of a trained model (bitsandbytes 8-bit / 4-bit NF4)."""

from __future__ import annotations

from llm_data.cli import dispatch

PROG = "llm-compress"
# name -> (module, config class, run function); torch / transformers load inside `run_*`.
COMMANDS = {
    "quantize": ("llm_compress.quantize", "QuantizeConfig", "run_quantize"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
