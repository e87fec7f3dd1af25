"""Preference pairs from a dataset folder, checked row by row and shaped the way trl's trainers read them.

A preference row is `{"prompt", "chosen", "rejected"}` (plus an optional `category`). Plain-text rows
(the synthetic suite, the hub adapters) become trl's *conversational* shape — the prompt a user turn,
each reply an assistant turn — so the policy sees its chat template exactly as SFT trained it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from llm_data.io import read_jsonl, split_file

TEXT = (str, list)  # plain text, or a list of {"role", "content"} messages
HALVES = ("all", "first", "second")


def _check_pair(row: dict) -> str | None:
    if row["chosen"] == row["rejected"]:
        return "field 'rejected' is identical to 'chosen' (the pair states no preference)"
    for name in ("prompt", "chosen", "rejected"):
        if isinstance(row[name], list) and not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in row[name]
        ):
            return f"field {name!r}: a message list needs {{'role': str, 'content': str}} items"
    return None


def half_of(prompt) -> str:
    """'first' or 'second': a stable hash of the prompt, so two reward models can train on disjoint prompts."""
    digest = hashlib.sha256(str(prompt).encode()).digest()
    return HALVES[1 + digest[0] % 2]


def _conversational(row: dict) -> dict:
    def turn(role, text):
        return [{"role": role, "content": text}] if isinstance(text, str) else text

    return {
        "prompt": turn("user", row["prompt"]),
        "chosen": turn("assistant", row["chosen"]),
        "rejected": turn("assistant", row["rejected"]),
    }


def parse_caps(text: str, default: int) -> dict[str, int]:
    """'safety=0,benign=50' -> {'safety': 0, 'benign': 50, '': default}: pairs to read per category (0 = all),
    the '' entry for every category not named."""
    caps = {"": default}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not name.strip() or not value.strip().isdigit():
            raise ValueError(f"category_caps: {part!r} is not name=N with N >= 0 (e.g. safety=0,benign=50)")
        caps[name.strip()] = int(value)
    return caps


def over_cap(caps: Mapping[str, int] | int, category: str, taken: dict[str, int]) -> bool:
    """Whether `taken` already holds the most rows `caps` (see `parse_caps`; an int caps every category)
    allows for `category`."""
    cap = caps if isinstance(caps, int) else caps.get(category, caps.get("", 0))
    return bool(cap) and taken.get(category, 0) >= cap


def load_pairs(folder: str, split: str, half: str = "all", caps: Mapping[str, int] | int = 0) -> list[dict]:
    """Checked preference rows of one split (the `half` of its prompts; at most `caps[category]` per
    category, else `caps['']`, the first in file order, 0 = all; an int caps every category), in
    conversational shape, with `category` kept."""
    path = split_file(folder, split)
    rows = read_jsonl(path, {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT}, check=_check_pair)
    out, taken = [], {}
    for row in rows:
        if half != "all" and half_of(row["prompt"]) != half:
            continue
        category = row.get("category", "")
        if over_cap(caps, category, taken):
            continue
        taken[category] = taken.get(category, 0) + 1
        out.append({**_conversational(row), "category": category})
    if not out:
        raise ValueError(f"{path}: no rows left after half={half!r}")
    return out


def to_dataset(rows: list[dict]):
    """The pairs as a `datasets.Dataset` with trl's columns only (category is metadata)."""
    from datasets import Dataset

    return Dataset.from_list([{c: r[c] for c in ("prompt", "chosen", "rejected")} for r in rows])


def distinct_prompts(folder: str, split: str, caps: Mapping[str, int] | int = 0) -> list[list[dict]]:
    """The distinct prompts of a preference split (as user-turn message lists), for online RL to sample
    replies to; `caps` selects the pairs read as in `load_pairs`."""
    seen, out = set(), []
    for row in load_pairs(folder, split, caps=caps):
        key = str(row["prompt"])
        if key not in seen:
            seen.add(key)
            out.append(row["prompt"])
    return out
