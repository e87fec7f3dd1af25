"""`llm-eval <command>`: evaluate models (exact match, perplexity, ROUGE, BLEU; MLM; CoT; encoders), write reports."""

from __future__ import annotations

from llm_data.cli import dispatch

PROG = "llm-eval"
# name -> (module, config class, run function); torch / transformers / matplotlib load inside `run_*`.
COMMANDS = {
    "run": ("llm_eval.run", "EvalConfig", "run_eval"),
    "align": ("llm_eval.align", "AlignEvalConfig", "run_align_eval"),
    "mlm": ("llm_eval.mlm", "MlmEvalConfig", "run_mlm_eval"),
    "cot": ("llm_eval.cot", "CotEvalConfig", "run_cot_eval"),
    "embed": ("llm_eval.embed", "EmbedEvalConfig", "run_embed_eval"),
    "report": ("llm_eval.report", "ReportConfig", "run_report"),
    "seeds": ("llm_eval.seeds", "SeedsConfig", "run_seeds"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
