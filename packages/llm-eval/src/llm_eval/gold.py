"""A programmatic gold reward: `gold(prompt, reply)` grades a reply to a sum exactly, by rule, not by a model.

A learned judge shares the blind spots of the reward model it referees, so a policy that fools one often
fools both (Gao et al. 2022 used a much larger reward model as "gold" for that reason). A sum like "What is
7 + 5 - 3?" has a computable answer, so this gold reads the claim a reply makes and its form, nothing else;
politeness and length earn nothing. The rubric, for the world's arithmetic prompts (`llm-data gold`):

| reply | gold |
| --- | --- |
| the right number, alone | 1.0: the only reply that passes |
| a wrong number, alone | -0.1 - 0.05 * min(distance, 10): -0.15 one off, -0.6 ten or more off |
| either, among other words | 0.25 less: the request was the answer alone, and extra words invent things |
| no number (silence, a word, "I don't know", a refusal) | -1.0: the floor |

The claim is the reply's last number: a worked answer ("7 + 5 = 12. 12 - 3 = 9.") ends with its result, and
a hedge ("9 or 10") is held to the number it ends on. The graded steps give Bradley-Terry labels (`llm-align
collect --label gold`) room to prefer a near miss to a far one. A reply with no number fails the task
outright: were silence above a wrong number, a policy could gain by saying nothing (the SFT model's replies
to a quarter of the sums hold no number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXPRESSION = re.compile(r"(\d+(?:\s*[-+]\s*\d+)+)")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?![\d.]*\d)")
PASS = 1.0
WORDS = 0.25  # the cost of anything beyond the number
NO_ANSWER = -1.0
WRONG, WRONG_PER_STEP, FAR = -0.1, 0.05, 10


def passes(score: float) -> bool:
    """Whether a gold score is a pass: the right number, alone."""
    return score == PASS


def truth(prompt: str) -> int:
    """The value of the sum in `prompt`, evaluated left to right ("7 + 5 - 3" is 9)."""
    match = EXPRESSION.search(prompt)
    if match is None:
        raise ValueError(f"no sum like '7 + 5 - 3' in the prompt {prompt[:80]!r}: the gold grades arithmetic prompts")
    tokens = re.findall(r"\d+|[-+]", match.group(1))
    value = int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2], strict=True):
        value = value + int(operand) if op == "+" else value - int(operand)
    return value


@dataclass(frozen=True)
class Grade:
    score: float
    answer: int | None  # the number the reply claims (its last), None when it names none
    correct: bool
    bare: bool  # the reply is the number and nothing else

    @property
    def passed(self) -> bool:
        return passes(self.score)


def grade(prompt: str, reply: str) -> Grade:
    """The rubric above, applied to one reply."""
    right = truth(prompt)
    text = reply.strip().rstrip(".").strip()
    numbers = [int(n) for n in NUMBER.findall(text)]
    if not numbers:
        return Grade(NO_ANSWER, None, False, False)
    answer = numbers[-1]
    bare = text == str(answer)
    score = PASS if answer == right else WRONG - WRONG_PER_STEP * min(abs(answer - right), FAR)
    return Grade(round(score - (0 if bare else WORDS), 4), answer, answer == right, bare)


def gold(prompt: str, reply: str) -> float:
    return grade(prompt, reply).score


def gold_scores(prompts: list[str], replies: list[str]) -> list[float]:
    return [gold(p, r) for p, r in zip(prompts, replies, strict=True)]
