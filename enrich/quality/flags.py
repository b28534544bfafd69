"""The quality flags of one generated text: what run and eval check of every row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from enrich.contracts import Flag
from enrich.quality.claims import Claim, Facts, check, type_check
from enrich.quality.vocabulary import Vocabulary

# The quality flags, in report order; config.Flag (the output contract) names them.
FLAGS: tuple[str, ...] = get_args(Flag)
REPETITION_THRESHOLD = 0.3  # share of word 4-grams that repeat an earlier one


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the text."""
    # Whitespace words (punctuation kept) cost a sixth of a regex split; repetition shows the same either way.
    return _repeated_share(text.lower().split(), n)


def _repeated_share(words: list[str], n: int = 4) -> float:
    total = len(words) - n + 1
    if total < 8:
        return 0.0
    distinct = len(set(zip(*(words[i:] for i in range(n)), strict=False)))
    return (total - distinct) / total


def _repetitive(text: str) -> bool:
    """repetition_rate(text) > REPETITION_THRESHOLD, without building the n-grams when it cannot be.

    A 4-gram that repeats an earlier one is made of words that occurred earlier, so the repeated 4-grams
    are at most the repeated words: where those are few (most texts), a set of words settles it.
    """
    words = text.lower().split()
    total = len(words) - 3
    if total < 8 or len(words) - len(set(words)) <= REPETITION_THRESHOLD * total:
        return False
    return _repeated_share(words) > REPETITION_THRESHOLD


@dataclass(frozen=True)
class Inspection:
    """What the checks found in one generated text: its flags, and the unsupported claims behind a claim flag."""

    flags: list[str]
    claims: list[Claim]


NOTHING: list[Claim] = []


def inspect(
    text: str,
    finish_reason: str,
    facts: Facts,
    markers: tuple[str, ...],
    vocabulary: Vocabulary,
) -> Inspection:
    """Every flag of one generation. facts: what the product's data supports (claims.facts of its title,
    attribute values and existing description); vocabulary: what counts as a claim (packaged, learned, the job's)."""
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if not text.strip():
        flags.append("empty")
        return Inspection(flags, NOTHING)
    if _repetitive(text):
        flags.append("repetition")
    for marker in markers:
        if marker in text:
            flags.append("template_leak")
            break
    claims = check(text, facts, vocabulary)
    if claims:
        flags.append("unsupported_claims")
    kind = type_check(text, facts, vocabulary)  # shares check()'s reading of the same text
    if kind is not None:
        flags.append(kind)
    return Inspection(flags, claims)
