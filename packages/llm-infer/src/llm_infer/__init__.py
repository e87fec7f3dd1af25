"""llm-lab inference: decoding strategies, KV cache, attention backends, speculative decoding, batching, serving."""
