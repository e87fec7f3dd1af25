"""llm-eval."""
