"""`llm-eval report`: a preset's side-by-side report, opening with its key takeaways; and the report card.

The report code: `build` (config, inputs, the model tables, goals, the report's blocks), `findings` (every
comparison as data, the findings table and the rules that pick the key takeaways), `sections` and its parts
(`alignment`, `encoders`, `compression`, `summary`), `render` (blocks to Markdown, Markdown to one HTML page)
and `card` (the report card across presets).
"""

from llm_eval.report.build import TECHNIQUES, ReportConfig, run_report

__all__ = ["TECHNIQUES", "ReportConfig", "run_report"]
