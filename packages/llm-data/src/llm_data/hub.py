"""Adapt public hub datasets (dolly-15k, hh-rlhf, SHP, TL;DR feedback) into llm-lab dataset folders.

Each adapter reads one public dataset in its exact column layout and maps its rows onto TRL's standard
shapes: dolly-15k becomes prompt-completion rows (plus `messages`) for SFT, while Anthropic hh-rlhf,
Stanford Human Preferences (Ethayarajh et al. 2022) and OpenAI's summarize-from-feedback comparisons
(Stiennon et al. 2020) become explicit-prompt preference pairs for reward modelling and DPO, in TRL's
*conversational* shape: the prompt is a list of messages (hh-rlhf's "Human:/Assistant:" transcript
split into user and assistant turns) and each reply one assistant message, so a trainer applies the
model's chat template instead of learning the source's raw markup. The source's
splits are kept and missing ones carved from train (seeded, whole prompts at a time, so no prompt is in
two splits); a local file or folder in the public layout works in place of the hub id, which is how the
tests run offline.

    llm-data hub --name hh-rlhf --subset helpful-base --max_rows 5000 --out data/hub/hh-rlhf
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import SPLITS, write_dataset

logger = logging.getLogger(__name__)

HUB_IDS = {
    "dolly": "databricks/databricks-dolly-15k",
    "hh-rlhf": "Anthropic/hh-rlhf",
    "shp": "stanfordnlp/SHP",
    "tldr-feedback": "openai/summarize_from_feedback",
}
DOLLY_CATEGORIES = (
    "brainstorming", "classification", "closed_qa", "creative_writing",
    "general_qa", "information_extraction", "open_qa", "summarization",
)
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# summarize_from_feedback is a script dataset that recent `datasets` refuse to run; the hub's parquet
# export of it has one folder per config (comparisons/, axis/).
TLDR_REVISION = "refs/convert/parquet"
TLDR_SUBSET = "comparisons"
_LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_ASSISTANT = "\n\nAssistant:"
_HUMAN = "\n\nHuman:"


@dataclass
class HubConfig:
    name: str = field(default="dolly", metadata={"help": f"Dataset adapter: one of {', '.join(HUB_IDS)}."})
    source: str = field(
        default="",
        metadata={"help": "Hub id, or a local .json/.jsonl/.parquet file or folder in the public layout. "
                          "Empty: the public hub id of --name."},
    )
    out: str = field(default="", metadata={"help": "Output dataset folder. Empty: data/hub/<name>."})
    subset: str = field(
        default="",
        metadata={"help": "Sub-folder of the source: an hh-rlhf data_dir (helpful-base, harmless-base, "
                          "...; empty = all), an SHP domain (askculinary, ...), or the tldr config "
                          "(comparisons, the default)."},
    )
    max_rows: int = field(
        default=0, metadata={"help": "Keep at most this many rows per source split (seeded sample); 0 = all."}
    )
    validation_fraction: float = field(
        default=0.05, metadata={"help": "Share of train carved out as validation when the source has none."}
    )
    test_fraction: float = field(
        default=0.05, metadata={"help": "Share of train carved out as test when the source has none."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the max_rows sample and of carved splits."})
    min_score_ratio: float = field(
        default=2.0,
        metadata={"help": "SHP only: keep pairs whose preferred answer has at least this many times the "
                          "other's score (1 keeps all)."},
    )

    def __post_init__(self):
        if self.name not in HUB_IDS:
            raise ValueError(f"unknown name {self.name!r}; choose one of: {', '.join(HUB_IDS)}")
        self.source = self.source or HUB_IDS[self.name]
        self.out = self.out or f"data/hub/{self.name}"
        if self.name == "dolly" and self.subset:
            raise ValueError(f"dolly has no subsets, got subset={self.subset!r}")
        if self.name == "hh-rlhf" and self.subset not in ("", *HH_SUBSETS):
            why = ""
            if self.subset == "red-team-attempts":
                why = " (red-team-attempts has another schema and no preference pairs)"
            raise ValueError(f"hh-rlhf subset must be empty or one of {', '.join(HH_SUBSETS)}, "
                             f"got {self.subset!r}{why}")
        if self.name == "tldr-feedback" and self.subset not in ("", TLDR_SUBSET):
            raise ValueError(f"tldr-feedback reads the {TLDR_SUBSET!r} config only (the 'axis' config holds "
                             f"Likert scores, not pairs), got subset={self.subset!r}")
        if self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 (0 = all), got {self.max_rows}")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        if self.min_score_ratio < 1.0:
            raise ValueError(f"min_score_ratio must be >= 1 (score_ratio is the larger score over the "
                             f"smaller), got {self.min_score_ratio}")


# --- field access: every error names where the row came from, its number and the field ---------------

def _get(row: dict, path: str, where: str, typ: type | tuple[type, ...] = str, *,
         optional: bool = False, allow_empty: bool = False, name: str = ""):
    """Look up a dotted field (`info.post`); None/absent is an error unless `optional`.

    `name` is how errors call the field when it is not the path (`summaries[1].text`).
    """
    name = name or path
    value = row
    parts = path.split(".")
    for i, key in enumerate(parts):
        if not isinstance(value, dict):
            parent = ".".join(name.split(".")[:i])
            raise ValueError(f"{where}: field {parent!r} must be an object, got {type(value).__name__}")
        value = value.get(key)
        if value is None:
            if optional:
                return None
            raise ValueError(f"{where}: field {name!r} is missing")
    # bool is an int subclass; a True label is a data error, not a 1
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ValueError(f"{where}: field {name!r} must be {want}, got {type(value).__name__}")
    if isinstance(value, str) and not allow_empty and not value.strip():
        raise ValueError(f"{where}: field {name!r} is empty")
    return value


def _binary(row: dict, path: str, where: str) -> int:
    value = _get(row, path, where, int)
    if value not in (0, 1):
        raise ValueError(f"{where}: field {path!r} must be 0 or 1, got {value}")
    return value


def _pair(prompt: str | list[dict], chosen: str, rejected: str, skipped: Counter) -> dict | None:
    """A conversational preference row; a plain-text prompt becomes one user turn."""
    # an identical pair carries no preference signal (and a zero DPO gradient)
    if chosen == rejected:
        skipped["identical_replies"] += 1
        return None
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_messages(transcript: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:' -> user a, assistant b, user c.

    A turn starts only at a blank line plus its speaker, so "Assistant:" inside a sentence stays text.
    """
    parts = _HH_TURN.split(transcript)  # ['', 'Human', ' a', 'Assistant', ' b', ...]
    speakers, texts = parts[1::2], parts[2::2]
    turns = [{"role": _HH_ROLES[w], "content": t.strip()} for w, t in zip(speakers, texts, strict=True)]
    return turns[:-1] if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"] else turns


# --- the adapters: one public row -> one of our rows, or None when skipped ----------------------------

def _dolly(row: dict, where: str, cfg: HubConfig, skipped: Counter) -> dict | None:
    instruction = _get(row, "instruction", where).strip()
    context = _get(row, "context", where, allow_empty=True).strip()
    response = _get(row, "response", where).strip()
    category = _get(row, "category", where)
    if category not in DOLLY_CATEGORIES:
        valid = ", ".join(DOLLY_CATEGORIES)
        raise ValueError(f"{where}: field 'category' is {category!r}, not one of {valid}")
    prompt = f"{instruction}\n\nContext:\n{context}" if context else instruction
    return {
        "prompt": prompt, "completion": response, "category": category,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
    }


def _hh(row: dict, where: str, cfg: HubConfig, skipped: Counter) -> dict | None:
    chosen = _get(row, "chosen", where)
    rejected = _get(row, "rejected", where)
    cut = chosen.rfind(_ASSISTANT)
    prompt = chosen[: cut + len(_ASSISTANT)]
    # both transcripts must answer the same conversation: identical text up to their last "Assistant:"
    if cut < 0 or not rejected.startswith(prompt) or _ASSISTANT in rejected[len(prompt):]:
        skipped["no_shared_prefix"] += 1
        return None
    tail_c, tail_r = chosen[len(prompt):], rejected[len(prompt):]
    if _HUMAN in tail_c or _HUMAN in tail_r:
        skipped["ends_with_human_turn"] += 1
        return None
    tail_c, tail_r = tail_c.strip(), tail_r.strip()
    if not tail_c or not tail_r:
        skipped["empty_reply"] += 1
        return None
    return _pair(_hh_messages(prompt), tail_c, tail_r, skipped)


def _shp(row: dict, where: str, cfg: HubConfig, skipped: Counter) -> dict | None:
    history = _get(row, "history", where)
    ref_a = _get(row, "human_ref_A", where)
    ref_b = _get(row, "human_ref_B", where)
    label = _binary(row, "labels", where)
    ratio = _get(row, "score_ratio", where, (int, float))
    # a small score gap is a weak (often noisy) preference; the SHP authors filter the same way
    if ratio < cfg.min_score_ratio:
        skipped["score_ratio_below_min"] += 1
        return None
    chosen, rejected = (ref_a, ref_b) if label == 1 else (ref_b, ref_a)
    return _pair(history, chosen.strip(), rejected.strip(), skipped)


def _tldr_prompt(row: dict, where: str) -> str:
    info = _get(row, "info", where, dict)
    if info.get("post") is not None:
        post = _get(row, "info.post", where).strip()
        title = _get(row, "info.title", where).strip()
        subreddit = _get(row, "info.subreddit", where).strip()
        return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
    # CNN/DailyMail rows (the out-of-domain part of the validation split) carry an article, no post
    if info.get("article") is None:
        raise ValueError(f"{where}: field 'info.post' is missing (and so is 'info.article')")
    article = _get(row, "info.article", where).strip()
    title = (_get(row, "info.title", where, optional=True, allow_empty=True) or "").strip()
    head = f"TITLE: {title}\n\n" if title else ""
    return f"{head}ARTICLE: {article}\n\nTL;DR:"


def _tldr(row: dict, where: str, cfg: HubConfig, skipped: Counter) -> dict | None:
    prompt = _tldr_prompt(row, where)
    summaries = _get(row, "summaries", where, list)
    if len(summaries) != 2:
        raise ValueError(f"{where}: field 'summaries' must hold 2 summaries, got {len(summaries)}")
    # the texts start with a space because they continued "TL;DR:"; trainers add their own separator
    texts = [
        _get({"s": s}, "s.text", where, name=f"summaries[{i}].text").strip() for i, s in enumerate(summaries)
    ]
    choice = _binary(row, "choice", where)
    return _pair(prompt, texts[choice], texts[1 - choice], skipped)


ADAPTERS: dict[str, Callable[[dict, str, HubConfig, Counter], dict | None]] = {
    "dolly": _dolly, "hh-rlhf": _hh, "shp": _shp, "tldr-feedback": _tldr,
}
SHAPES = {"dolly": "sft", "hh-rlhf": "preference", "shp": "preference", "tldr-feedback": "preference"}


# --- loading: a hub id, a file, or a folder laid out like the hub repo -------------------------------

def _loader(path: Path) -> str:
    suffixes = [s for s in path.suffixes[-2:] if s not in _COMPRESSED]
    builder = _LOADERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise ValueError(f"{path}: unsupported file type; use .json, .jsonl or .parquet (optionally .gz)")
    return builder


def _one_line(e: Exception) -> str:
    # the CLI prints errors as one line; library messages often span several
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def _is_data(path: Path) -> bool:
    try:
        _loader(path)
    except ValueError:
        return False
    return True


def _load_file(path: Path):
    import datasets

    builder = _loader(path)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # pyarrow/datasets errors on malformed files: report them as bad input
        raise ValueError(f"{path}: could not be read ({_one_line(e)})") from e


def _folder_files(folder: Path, subset: str, default_subset: str) -> tuple[str, dict[str, list[Path]]]:
    """Resolve split -> data files the way `load_dataset(folder, data_dir=subset)` would."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    used = subset or (default_subset if (folder / default_subset).is_dir() else "")
    base = folder / used if used else folder
    if not base.is_dir():
        raise FileNotFoundError(f"{folder}: no sub-folder {used!r} (the --subset)")
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(base)), base_path=str(base))
    except Exception as e:  # EmptyDatasetError and friends: a folder without data files
        raise FileNotFoundError(f"{base}: no data files found ({e})") from e
    # READMEs and the like can match a split pattern; only data files count
    splits = {str(split): sorted(Path(f) for f in fs if _is_data(Path(f))) for split, fs in files.items()}
    splits = {s: fs for s, fs in splits.items() if fs}
    if not splits:
        raise FileNotFoundError(f"{base}: no .json, .jsonl or .parquet data files found")
    return used, splits


def _load(cfg: HubConfig) -> tuple[dict, dict[str, list[tuple[str, Iterable[dict]]]]]:
    """Return (where the data came from, split -> [(label for errors, rows)])."""
    import datasets

    path = Path(cfg.source)
    default_subset = TLDR_SUBSET if cfg.name == "tldr-feedback" else ""
    if path.is_file():
        if cfg.subset:
            raise ValueError(f"--subset picks a sub-folder, but {path} is a file")
        return {"subset": ""}, {"train": [(str(path), _load_file(path))]}
    if path.is_dir():
        used, files = _folder_files(path, cfg.subset, default_subset)
        return {"subset": used}, {s: [(str(f), _load_file(f)) for f in fs] for s, fs in files.items()}
    if path.suffix in (*_LOADERS, *_COMPRESSED) or not _HUB_ID.fullmatch(cfg.source):
        raise FileNotFoundError(f"{cfg.source}: no such file or folder (and not a hub id like org/name)")
    kwargs: dict = {"data_dir": cfg.subset or default_subset or None}
    if cfg.name == "tldr-feedback":
        kwargs["revision"] = TLDR_REVISION
    try:
        loaded = datasets.load_dataset(cfg.source, **kwargs)
    except Exception as e:  # offline, unknown id, gated: one clear line instead of a traceback
        raise ValueError(f"{cfg.source}: could not load from the hub ({_one_line(e)})") from e
    origin = {"subset": kwargs.pop("data_dir") or "", **kwargs}
    return origin, {str(s): [(f"{cfg.source} ({s} split)", ds)] for s, ds in loaded.items()}


# --- splits ------------------------------------------------------------------------------------------

def _sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    if not n or len(rows) <= n:
        return rows
    keep = sorted(rng.sample(range(len(rows)), n))  # keep source order: diffs stay readable
    return [rows[i] for i in keep]


def _carve(rows: list[dict], fractions: dict[str, float], rng: random.Random, label: str) -> dict[str, list]:
    """Carve the named splits out of `rows`, whole prompt groups at a time so no prompt is in two splits."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(json.dumps(row["prompt"]), []).append(i)  # a message-list prompt is not hashable
    if len(groups) <= len(fractions):
        raise ValueError(f"{label}: only {len(groups)} distinct prompts, too few to carve "
                         f"{' and '.join(fractions)} out of train")
    keys = list(groups)
    rng.shuffle(keys)
    taken: dict[str, list[int]] = {}
    for name, fraction in fractions.items():
        target = max(1, round(fraction * len(rows)))
        taken[name] = []
        # leave at least one group for train
        while keys[1:] and len(taken[name]) < target:
            taken[name] += groups[keys.pop()]
    taken["train"] = [i for key in keys for i in groups[key]]
    return {name: [rows[i] for i in sorted(idx)] for name, idx in taken.items()}


def build(cfg: HubConfig) -> tuple[dict[str, list[dict]], dict]:
    """Load, map, filter, sample and split; return (split -> rows, meta)."""
    origin, parts = _load(cfg)
    unknown = sorted(set(parts) - set(SPLITS))
    if unknown:
        raise ValueError(f"{cfg.source}: unexpected splits {unknown}; expected some of {', '.join(SPLITS)}")
    if "train" not in parts:
        raise ValueError(f"{cfg.source}: no train split (found {', '.join(parts)})")
    adapt = ADAPTERS[cfg.name]
    skipped: Counter = Counter()
    read: dict[str, int] = {}
    splits: dict[str, list[dict]] = {}
    for split in SPLITS:
        if split not in parts:
            continue
        rows, read[split] = [], 0
        for label, data in parts[split]:
            for n, row in enumerate(data, 1):
                read[split] += 1
                mapped = adapt(row, f"{label}: row {n}", cfg, skipped)
                if mapped is not None:
                    rows.append(mapped)
        if not rows:
            raise ValueError(f"{cfg.source}: no usable rows in the {split} split "
                             f"({read[split]} read, skipped: {dict(skipped)})")
        splits[split] = _sample(rows, cfg.max_rows, random.Random(f"{cfg.seed}-{split}"))
    missing = {s: getattr(cfg, f"{s}_fraction") for s in SPLITS if s not in splits}
    if missing:
        splits.update(_carve(splits["train"], missing, random.Random(cfg.seed), cfg.source))
    meta = {
        "source": cfg.source,
        "name": cfg.name,
        **origin,
        "shape": SHAPES[cfg.name],
        "seed": cfg.seed,
        "max_rows": cfg.max_rows,
        "filters": {"min_score_ratio": cfg.min_score_ratio} if cfg.name == "shp" else {},
        "rows_read": read,
        "skipped": dict(sorted(skipped.items())),
        "carved_from_train": missing,
    }
    return {s: splits[s] for s in SPLITS}, meta


def run_hub(cfg: HubConfig) -> Path:
    splits, meta = build(cfg)
    logger.info("%s: %s, skipped %s", cfg.name, {s: len(r) for s, r in splits.items()}, meta["skipped"])
    return write_dataset(cfg.out, splits, meta)
