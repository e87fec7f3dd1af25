"""`llm-train <command>`: model init, GGUF import, pre-training, supervised fine-tuning and contrastive training."""

from __future__ import annotations

from llm_data.cli import dispatch

COMMANDS = {
    "init": ("llm_train.init", "InitConfig", "run_init"),
    "import": ("llm_train.gguf_import", "ImportConfig", "run_import"),
    "pretrain": ("llm_train.pretrain", "PretrainConfig", "run_pretrain"),
    "sft": ("llm_train.sft", "SFTConfig", "run_sft"),
    "contrastive": ("llm_train.contrastive", "ContrastiveConfig", "run_contrastive"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("llm-train", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
