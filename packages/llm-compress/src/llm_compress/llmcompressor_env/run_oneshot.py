"""One llm-compressor oneshot recipe (GPTQ, AWQ, SparseGPT or Wanda) on a local model folder.

Runs in this folder's environment (see pyproject.toml), called by llm-compress with one JSON request as
its only argument: {"method", "model", "out", "calibration" (JSONL of {"text"}), "max_seq_length", "seed",
and "group_size" (gptq/awq) or "sparsity" and "mask_structure" ("0:0" unstructured, "2:4")}. Writes the
compressed model and its tokenizer to `out` and one JSON line {"seconds": ...} to stdout.
"""

import contextlib
import json
import sys
import time


@contextlib.contextmanager
def no_pin_memory():
    """llm-compressor 0.14's AWQ cache pins offloaded tensors; a CUDA-build torch without a GPU raises on
    `pin_memory()`. Pinning only speeds up host-to-GPU copies, so on CPU it is skipped."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.pin_memory
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.pin_memory = original


def recipe(request: dict):
    method = request["method"]
    if method in ("gptq", "awq"):
        # 4-bit integer weights in groups of `group_size` input features, 16-bit activations (W4A16).
        # GPTQ's scheme is symmetric; AWQ's asymmetric one (a zero point per group), as in its paper.
        weights = {"num_bits": 4, "type": "int", "symmetric": method == "gptq", "strategy": "group",
                   "group_size": request["group_size"]}
        groups = {"group_0": {"targets": ["Linear"], "weights": weights}}
        if method == "gptq":
            from llmcompressor.modifiers.gptq import GPTQModifier

            return GPTQModifier(config_groups=groups, ignore=["lm_head"])
        from llmcompressor.modifiers.awq import AWQModifier

        return AWQModifier(config_groups=groups, ignore=["lm_head"])
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    modifier = SparseGPTModifier if method == "sparsegpt" else WandaPruningModifier
    return modifier(sparsity=request["sparsity"], mask_structure=request["mask_structure"], targets=["Linear"],
                    ignore=["re:.*lm_head"])


def main() -> None:
    request = json.loads(sys.argv[1])
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(request["seed"])
    tokenizer = AutoTokenizer.from_pretrained(request["model"])
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32)
    with open(request["calibration"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    with no_pin_memory():
        start = time.perf_counter()
        model = oneshot(
            model=model, tokenizer=tokenizer, dataset=Dataset.from_dict({"text": texts}), recipe=recipe(request),
            text_column="text", max_seq_length=request["max_seq_length"], num_calibration_samples=len(texts),
            shuffle_calibration_samples=False, pipeline="sequential",
        )
        seconds = time.perf_counter() - start
    # Quantized weights are saved packed (compressed-tensors "pack-quantized": 4 bits each); pruned ones
    # dense, so the saved zeros are what a later stage measures and any loader reads.
    model.save_pretrained(request["out"], save_compressed=request["method"] in ("gptq", "awq"))
    # Load-time arguments (local_files_only follows HF_HUB_OFFLINE) are not saved, as in llm_data.tokenizer.
    for key in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(request["out"])
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
