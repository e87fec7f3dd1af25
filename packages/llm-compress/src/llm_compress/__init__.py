"""llm-compress."""
