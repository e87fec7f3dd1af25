"""Findings: every comparison a report states, as data, and the rules that pick its key takeaways.

A finding is one paired comparison of `a` with `b` on one metric: the difference (or ratio) with its 95%
interval, and a verdict that names a winner only when the interval excludes "no effect". Speed ratios get
one more state: an interval spanning more than a factor of two says the timings themselves were unstable
(one outlier run can do that), so the verdict asks for more repeats instead of calling it "within noise".

The report prints every finding in one table grouped by technique; the key takeaways above it are chosen
by rules, not by hand: the largest decided effects, the trade-offs (a technique that wins on one metric
and loses on another), the nulls worth knowing, unstable timings, and the goals' tally.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from llm_eval.stats import Estimate

UNSTABLE_SPAN = 2.0  # a speed ratio whose interval's upper end is over twice its lower end
MAX_TAKEAWAYS = 8


@dataclass(frozen=True)
class Finding:
    technique: str  # the group it is listed under: "Supervised fine-tuning", "KV cache", "nf4 quantization"
    metric: str  # "exact match", "perplexity change", "speed", "gold-judge win rate", ...
    a: str
    b: str
    diff: Estimate  # a - b (or a / b when null is 1)
    unit: str = " points"
    null: float = 0.0  # the value of no effect
    higher_is_better: bool = True
    digits: int = 1

    @property
    def is_ratio(self) -> bool:
        return self.null == 1.0

    @property
    def difference(self) -> str:
        return f"{self.diff.fmt(self.digits, signed=not self.is_ratio)}{self.unit}"

    @property
    def unstable(self) -> bool:
        d = self.diff
        return self.is_ratio and d.has_interval and d.lo > 0 and d.hi / d.lo > UNSTABLE_SPAN

    @property
    def identical(self) -> bool:
        """No difference on any item: the difference and both ends of its interval are exactly null."""
        d = self.diff
        return d.value == d.lo == d.hi == self.null

    @property
    def decided(self) -> bool:
        return self.diff.has_interval and not self.unstable and not self.diff.contains(self.null)

    @property
    def within_noise(self) -> bool:
        """The interval holds no effect (identical comparisons included): no winner can be named."""
        return self.diff.has_interval and not self.unstable and not self.decided

    @property
    def winner(self) -> str | None:
        if not self.decided:
            return None
        return self.a if (self.diff.value > self.null) == self.higher_is_better else self.b

    @property
    def verdict(self) -> str:
        if not self.diff.has_interval:
            return "no interval (a single run)"
        if self.unstable:
            return "unstable timings (interval spans over 2x): rerun with more repeats"
        if self.diff.contains(self.null):
            return "within noise"
        return f"{self.winner} is better"

    @property
    def comparison(self) -> str:
        return f"{self.a} vs {self.b}"

    @property
    def line(self) -> str:
        """The finding in one line: 'technique, metric: a vs b: difference, verdict'."""
        if not self.diff.has_interval:
            return f"{self.technique}, {self.metric}: {self.comparison}: {self.difference} (no interval: a single run)"
        return f"{self.technique}, {self.metric}: {self.comparison}: {self.difference}, {self.verdict}"

    @property
    def size(self) -> float:
        """How far from no effect, comparable within one unit: points as they are, ratios on a log scale."""
        if self.is_ratio:
            return abs(math.log(self.diff.value)) if self.diff.value > 0 else math.inf
        return abs(self.diff.value - self.null)

    def as_dict(self) -> dict:
        d = self.diff
        return {"technique": self.technique, "metric": self.metric, "a": self.a, "b": self.b, "value": d.value,
                "lo": d.lo if d.has_interval else None, "hi": d.hi if d.has_interval else None, "unit": self.unit,
                "difference": self.difference, "verdict": self.verdict, "decided": self.decided}


def exact_match(technique: str, diff: Estimate, a: str, b: str) -> Finding:
    return Finding(technique, "exact match", a, b, diff)


def perplexity(technique: str, change: Estimate, a: str, b: str) -> Finding:
    return Finding(technique, "perplexity change", a, b, change, unit="%", higher_is_better=False)


def speed(technique: str, ratio: Estimate, a: str, b: str) -> Finding:
    return Finding(technique, "speed", a, b, ratio, unit="x", null=1.0, digits=2)


def ratio_note(estimate: Estimate) -> str:
    """What a speed ratio's interval allows a sentence to say: '' when it decides, else why it does not."""
    if speed("", estimate, "", "").unstable:
        return " (unstable timings: the interval spans over 2x; rerun with more repeats)"
    return " (within noise: no measurable difference)" if estimate.contains(1.0) else ""


# ----------------------------------------------------------------------------- table


FINDINGS_COLUMNS = ("technique", "comparison", "metric", "difference [95% interval]", "verdict")


def table(findings: list[Finding]) -> tuple[list[list[str]], list[Finding]]:
    """(rows grouped by technique in order of first appearance, the findings identical on every item).

    The technique is named on its group's first row only. Identical comparisons are left out of the rows: the
    report lists them in one line."""
    shown = [f for f in findings if not f.identical]
    rows = []
    for technique in dict.fromkeys(f.technique for f in shown):
        group = [f for f in shown if f.technique == technique]
        rows += [[technique if i == 0 else "", f.comparison, f.metric, f.difference, f.verdict]
                 for i, f in enumerate(group)]
    return rows, [f for f in findings if f.identical]


def identical_line(identical: list[Finding]) -> str:
    names = "; ".join(f"{f.comparison} ({f.technique}, {f.metric})" for f in identical)
    return f"Identical on every test item, so not in the table ({len(identical)}): {names}."


def read_back(markdown: str) -> list[str]:
    """A report's findings table, read from its Markdown, as `Finding.line`s (a blank technique cell continues
    the group above it); then the line of comparisons identical on every item, if there is one."""
    section = markdown.split("## Findings", 1)[1].split("\n## ", 1)[0]
    lines, technique = [], ""
    for row in section.splitlines():
        if not row.startswith("| ") or row.startswith(("| technique |", "| --- |")):
            continue
        cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in row.strip()[1:-1].split(" | ")]
        technique = cells[0] or technique
        lines.append(f"{technique}, {cells[2]}: {cells[1]}: {cells[3]}, {cells[4]}")
    return lines + [row for row in section.splitlines() if row.startswith("Identical on every test item")]


# ----------------------------------------------------------------------------- takeaways


UNIT_ORDER = (" points", "x", "%")  # exact match first: the checkable answers are what the lab measures


def _rank(f: Finding) -> tuple[int, float]:
    return (UNIT_ORDER.index(f.unit) if f.unit in UNIT_ORDER else len(UNIT_ORDER), -f.size)


def headline(group: list[Finding]) -> Finding:
    """A technique's one number: its largest decided effect, else its first comparison that differs at all."""
    decided = [f for f in group if f.decided]
    if decided:
        return min(decided, key=_rank)
    return next((f for f in group if not f.identical), group[0])


def _technique_sentence(group: list[Finding]) -> str:
    """A trade-off when the technique's model wins on one metric and loses on another against the same model,
    else its largest effect."""
    wins = sorted((f for f in group if f.winner == f.a), key=_rank)
    losses = sorted((f for f in group if f.winner == f.b), key=_rank)
    traded = [(w, lo) for w in wins for lo in losses if lo.comparison == w.comparison]
    if traded:
        win, loss = traded[0]
        return (f"{win.technique} trades one metric for another: {win.comparison} is better on {win.metric} "
                f"({win.difference}) and worse on {loss.metric} ({loss.difference}).")
    f = headline(group)
    if f.is_ratio:
        return f"{f.technique}: {f.a} runs at {f.difference} the {f.metric} of {f.b}."
    return f"{f.technique}: {f.comparison}, {f.metric} {f.difference}; {f.winner} is better."


def _family(technique: str) -> str:
    """Levels of one kind of technique ("magnitude_50 pruning", "sparsegpt_70 pruning") share one takeaway."""
    last = technique.rsplit(" ", 1)[-1]
    return last if last in ("pruning", "quantization") else technique


def _count(n: int, total: int) -> str:
    return f"{n} of {total} comparisons {'is' if n == 1 else 'are'}"


def takeaways(findings: list[Finding], goal_tally: dict[str, int] | None = None,
              costs: tuple[str, set[str]] | None = None) -> list[str]:
    """At most MAX_TAKEAWAYS sentences, by rule.

    1. The four techniques with the largest decided effects (exact match first, then speed ratios, then percent
       changes; one per family, so pruning levels do not crowd out the rest), one sentence each: a trade-off
       where the technique's model wins on one metric and loses on another, else its largest effect.
    2. `costs`: a sentence on what techniques save or spend (size on disk next to the quality lost) and the
       techniques it covers, which rule 1 then skips.
    3. The nulls, once: how many comparisons are within noise, naming the largest, and how many are identical
       on every item.
    4. Unstable timings.
    5. The goals' tally (met, missed, not decided)."""
    cost, covered = costs or ("", set())
    decided = sorted((f for f in findings if f.decided and f.technique not in covered), key=_rank)
    chosen, families = [], set()
    for technique in dict.fromkeys(f.technique for f in decided):
        if _family(technique) not in families and len(chosen) < 4:
            chosen.append(technique)
            families.add(_family(technique))
    out = [_technique_sentence([f for f in decided if f.technique == technique]) for technique in chosen]
    out += [cost] if cost else []
    nulls = [f for f in findings if f.within_noise and not f.identical]
    identical = [f for f in findings if f.identical]
    same = f"{len(identical)} identical on every test item (named under the findings table)" if identical else ""
    if nulls:
        named = sorted(nulls, key=lambda f: f.size, reverse=True)[:3]
        out.append(f"{_count(len(nulls), len(findings))} within noise (the interval holds no effect), the largest "
                   + "; ".join(f"{f.comparison}, {f.metric}: {f.difference}" for f in named)
                   + (f"; {same}" if same else "") + ".")
    elif same:
        out.append(f"{_count(len(identical), len(findings))}{same.removeprefix(str(len(identical)))}.")
    unstable = [f for f in findings if f.unstable]
    if unstable:
        out.append("Unstable timings, to rerun with more repeats before reading them: "
                   + "; ".join(f"{f.comparison} {f.difference}" for f in unstable) + ".")
    if goal_tally and sum(goal_tally.values()):
        out.append("Goals: " + ", ".join(f"{n} {state}" for state, n in goal_tally.items() if n)
                   + " (not decided: the interval straddles the target).")
    if not out:
        out.append("No two rows of this report are compared.")
    return out[:MAX_TAKEAWAYS]


__all__ = ["FINDINGS_COLUMNS", "Finding", "exact_match", "headline", "identical_line", "perplexity", "ratio_note",
           "read_back", "speed", "table", "takeaways"]
