"""`llm-infer <command>`: generation and serving of a trained model, each command measured, and the parity of
its forms (adapter, merged, quantized, served)."""

from __future__ import annotations

from llm_data.cli import dispatch

PROG = "llm-infer"
# name -> (module, config class, run function); torch / transformers load inside `run_*`.
COMMANDS = {
    "generate": ("llm_infer.generate", "GenerateConfig", "run_generate"),
    "bench-kv": ("llm_infer.kv_cache", "KVCacheConfig", "run_kv_cache"),
    "bench-attn": ("llm_infer.attention", "AttentionConfig", "run_attention"),
    "speculative": ("llm_infer.speculative", "SpeculativeConfig", "run_speculative"),
    "batch": ("llm_infer.batch", "BatchConfig", "run_batch"),
    "serve": ("llm_infer.serve", "ServeConfig", "run_serve"),
    "parity": ("llm_infer.parity", "ParityConfig", "run_parity"),
    "bench-report": ("llm_infer.benchmarks", "BenchReportConfig", "run_bench_report"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
