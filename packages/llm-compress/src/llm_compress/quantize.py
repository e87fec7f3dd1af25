"""Post-training quantization: bitsandbytes 8-bit (LLM.int8()) or NF4, GPTQ or AWQ 4-bit, quanto int8 or int4.

Post-training quantization (PTQ) stores the weights of an already trained model in fewer bits, with
no retraining and no calibration data: the linear layers' weights are rounded to a small grid of
values plus a few scale factors, and the matmuls dequantize them on the fly. The model gets smaller
on disk and in memory, at the cost of some rounding error.

`--method bnb-int8` is LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339): each weight row is
scaled by its absolute maximum and stored as int8 (vector-wise quantization); at matmul time the few
activation features with outliers (|x| > 6) run in 16-bit and the rest in int8, which keeps large
models accurate. `--method bnb-nf4` is 4-bit NormalFloat from QLoRA (Dettmers et al. 2023,
arXiv:2305.14314): weights are scaled per block of 64 by their absmax and rounded to 16 levels placed
at the quantiles of a normal distribution, the best 4-bit grid for normally distributed weights.
Double quantization also quantizes those per-block scales to 8 bits (about 0.37 bits per parameter
saved). The embeddings, norms and output head stay in full precision, as transformers leaves them
by default.

`--method gptq` and `--method awq` calibrate on data: 4-bit integer weights in groups of `--group_size`
input features (W4A16), written packed in the compressed-tensors format by llm-compressor (run in its own
environment, see `oneshot.py`). GPTQ (Frantar et al. 2022, arXiv:2210.17323) rounds one weight column at
a time and updates the columns not yet rounded to cancel the error, using second-order statistics of the
calibration activations. AWQ (Lin et al. 2023, arXiv:2306.00978) scales up the weights that meet large
activations before rounding (and scales the activations down to match), protecting the ~1% of weights that
matter most. Transformers reloads both through compressed-tensors, which on CPU decompresses them to
dense layers: their gain here is size on disk; GPU kernels (Marlin, vLLM) run them packed.

`--method quanto-int8|quanto-int4` is optimum-quanto's weight-only quantization, with no calibration data:
each output channel's weights are scaled by their absmax and rounded to int8, or to int4 in groups of up to
128 input features (layers no wider than 128 get one scale per output channel instead). The weights stay
packed in memory (quanto's QTensors) and are unpacked at each matmul, so memory shrinks on CPU too; the
folder (`quanto_qmap.json` beside the weights) reloads through optimum-quanto, which `llm-eval run` does.

Metrics compare the quantized model with the fp32 reference: size on disk (weight files) and memory
footprint of the model as `llm-eval run` loads it (parameters and buffers, packed tensors at their stored size).

    llm-compress quantize --method bnb-nf4 --model models/sft-full --out models/sft-full-nf4 \\
        --metrics reports/metrics/quantize_nf4.json
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, require_model_folder, weights_mb, write_metrics

from llm_compress.oneshot import calibration_texts, input_features, model_reference, run_oneshot

logger = logging.getLogger(__name__)
METHODS = ("bnb-int8", "bnb-nf4", "gptq", "awq", "quanto-int8", "quanto-int4")
CALIBRATED = ("gptq", "awq")
QUANTO = {"quanto-int8": "qint8", "quanto-int4": "qint4"}
DTYPES = ("float32", "bfloat16", "float16")
_SUFFIX = {"bnb-int8": "int8", "bnb-nf4": "nf4", "gptq": "gptq", "awq": "awq", "quanto-int8": "quanto_int8",
           "quanto-int4": "quanto_int4"}
QUANTO_MAP = "quanto_qmap.json"  # what optimum-quanto writes beside the weights
_PRODUCER = "llm-train pretrain --out {0}` or `llm-train sft --method full --out {0}"


@dataclass
class QuantizeConfig:
    method: str = field(
        default="bnb-nf4",
        metadata={"help": f"Quantization: {' | '.join(METHODS)} (LLM.int8(), 4-bit NormalFloat, GPTQ, AWQ, quanto "
                  "weight-only int8 / int4)."},
    )
    model: str = field(
        default="models/sft-full",
        metadata={"help": "Full-precision model: a local transformers folder or a hub id."},
    )
    out: str = field(
        default="",
        metadata={"help": "Output folder; '' = '<model>-<int8|nf4|gptq|awq|quanto_int8|quanto_int4>' beside a "
                  "local model, "
                  "'models/<name>-<...>' for a hub id."},
    )
    metrics: str = field(
        default="",
        metadata={"help": "Write metrics JSON here (e.g. reports/metrics/quantize_nf4.json); '' = don't."},
    )
    double_quant: bool = field(
        default=True,
        metadata={"help": "bnb-nf4 only: also quantize the per-block scales (double quantization)."},
    )
    compute_dtype: str = field(
        default="float32",
        metadata={"help": f"dtype of 4-bit matmuls and unquantized layers: {', '.join(DTYPES)}."},
    )
    group_size: int = field(
        default=128, metadata={"help": "gptq/awq: input features sharing one scale; must divide every layer's."}
    )
    data: str = field(
        default="data/synth/sft",
        metadata={"help": "gptq/awq: calibration dataset folder (its train.jsonl: SFT or text rows)."},
    )
    calibration_samples: int = field(default=64, metadata={"help": "gptq/awq: calibration rows."})
    max_seq_length: int = field(default=128, metadata={"help": "gptq/awq: tokens per calibration row."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration rows and the reload check."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.compute_dtype not in DTYPES:
            raise ValueError(
                f"unknown compute_dtype {self.compute_dtype!r}; choose one of: {', '.join(DTYPES)}"
            )
        if not self.model.strip():
            raise ValueError("model must be a model folder or a hub id, got ''")
        if self.out and Path(self.out).expanduser().resolve() == Path(self.model).expanduser().resolve():
            raise ValueError(f"out must differ from model ({self.model}): the output folder is replaced")
        for name in ("group_size", "calibration_samples", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _out_dir(cfg: QuantizeConfig, name: str) -> Path:
    if cfg.out:
        return Path(cfg.out)
    suffix = _SUFFIX[cfg.method]
    local = Path(name)
    if local.is_dir():
        return local.with_name(f"{local.name}-{suffix}")
    return Path("models") / f"{name.rstrip('/').split('/')[-1]}-{suffix}"


def _source_folder(name: str) -> Path:
    """The folder holding the reference weights: the local folder, or the hub snapshot in the cache."""
    from transformers.utils import cached_file

    return Path(cached_file(name, "config.json")).parent


def _load_tokenizer(name: str):
    """The model's tokenizer; a name that is neither a local folder nor on the hub is bad input (exit 2)."""
    from llm_data.tokenizer import load_tokenizer

    try:
        return load_tokenizer(name)
    except OSError as e:
        if Path(name).is_dir():
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"{name}: no such model folder, and the hub did not provide it ({reason}); "
            f"create it with `{_PRODUCER.format(name)}`"
        ) from e


def _bnb_config(cfg: QuantizeConfig, dtype):
    from transformers import BitsAndBytesConfig

    # llm_int8_skip_modules stays None: transformers then keeps the output head (and anything tied
    # to it) in full precision, as bitsandbytes layers only replace nn.Linear blocks.
    if cfg.method == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


@contextlib.contextmanager
def _quiet_int8_cast_warning():
    """bitsandbytes logs 'inputs will be cast to float16' on every int8 matmul with fp32 inputs."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bnb_logger.setLevel(level)


def _check_reloads(folder: Path, device: str, seed: int) -> tuple[str, float]:
    """Load the saved folder as `llm-eval run` will and greedily generate a few tokens; (the text, the
    loaded model's memory in MiB)."""
    import torch
    from llm_eval.run import load_causal_lm, memory_mb
    from transformers import AutoTokenizer

    model = load_causal_lm(str(folder), "none", device)
    if getattr(model.config, "quantization_config", None) is None and not (folder / QUANTO_MAP).is_file():
        raise RuntimeError(f"{folder}: the reloaded model is not quantized (no quantization_config, no {QUANTO_MAP})")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer("The answer is", return_tensors="pt").to(model.device)
    torch.manual_seed(seed)
    with torch.no_grad(), _quiet_int8_cast_warning():
        ids = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = ids[0, inputs["input_ids"].shape[1]:]  # (new_tokens,)
    if new.numel() == 0:
        raise RuntimeError(f"{folder}: the reloaded model generated no tokens")
    return tokenizer.decode(new, skip_special_tokens=True), memory_mb(model)


def _check_group_size(name: str, group_size: int) -> None:
    for layer, width in input_features(name).items():
        if width % group_size:
            raise ValueError(f"{name}: group_size {group_size} does not divide the {width} input features of "
                             f"{layer}; pass a --group_size that does (e.g. 32)")


def _quantize_into(cfg: QuantizeConfig, name: str, tokenizer, texts: list[str], device: str, out: Path) -> float:
    """Write the quantized model and its tokenizer into `out`; the seconds quantization took."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.method in CALIBRATED:
        return run_oneshot(
            {"method": cfg.method, "model": model_reference(name), "out": str(out.resolve()),
             "group_size": cfg.group_size, "max_seq_length": cfg.max_seq_length, "seed": cfg.seed},
            texts,
        )
    if cfg.method in QUANTO:
        import optimum.quanto as quanto

        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        start = time.perf_counter()
        # The head is tied to the embedding: quantizing it would untie and duplicate it.
        model = quanto.QuantizedModelForCausalLM.quantize(model, weights=getattr(quanto, QUANTO[cfg.method]),
                                                          exclude="lm_head")
        seconds = time.perf_counter() - start
    else:
        # bitsandbytes quantizes each linear weight while from_pretrained loads it.
        dtype = getattr(torch, cfg.compute_dtype)
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            name, quantization_config=_bnb_config(cfg, dtype), dtype=dtype, device_map=device
        )
        seconds = time.perf_counter() - start
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return seconds


def run_quantize(cfg: QuantizeConfig) -> Path:
    import torch
    from llm_eval.run import memory_mb
    from transformers import AutoModelForCausalLM

    if cfg.method not in CALIBRATED:
        # Imported up front: its one-off import (and quanto's extension loading) is not quantization time.
        import bitsandbytes  # noqa: F401
        import optimum.quanto  # noqa: F401
    name = require_model_folder(cfg.model, _PRODUCER.format(cfg.model))
    out = _out_dir(cfg, name)
    tokenizer = _load_tokenizer(name)
    texts = []
    if cfg.method in CALIBRATED:  # bad settings and data fail before any weight loads
        _check_group_size(name, cfg.group_size)
        texts = calibration_texts(cfg.data, tokenizer, cfg.calibration_samples, cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # The fp32 reference: what the quantized model is compared against.
    reference = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    reference_memory_mb = memory_mb(reference)
    reference_size_mb = weights_mb(_source_folder(name))
    del reference
    gc.collect()
    with atomic_dir(out) as tmp:
        quantize_seconds = _quantize_into(cfg, name, tokenizer, texts, device, tmp)
        gc.collect()
        size_mb = weights_mb(tmp)
        sample, quantized_memory_mb = _check_reloads(tmp, device, cfg.seed)
    logger.info("reloaded %s and generated %r", out, sample)

    metrics = {
        "size_mb": size_mb,
        "memory_mb": quantized_memory_mb,
        "reference_size_mb": reference_size_mb,
        "reference_memory_mb": reference_memory_mb,
        "memory_ratio": reference_memory_mb / quantized_memory_mb,
        "size_ratio": reference_size_mb / size_mb,
        "quantize_seconds": quantize_seconds,
        "calibration_samples": len(texts),
    }
    logger.info(
        "%s: %.2f MiB in memory vs %.2f fp32 (%.2fx smaller), %.2f MiB on disk vs %.2f (%.2fx smaller)",
        cfg.method, quantized_memory_mb, reference_memory_mb, metrics["memory_ratio"], size_mb, reference_size_mb,
        metrics["size_ratio"],
    )
    write_metrics(cfg.metrics, metrics)
    return out
