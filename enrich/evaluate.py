"""Quality flags for generated text (per row), and the metrics of `enrich eval`."""

from __future__ import annotations

import re
from collections import Counter

FLAGS = ("truncated", "empty", "repetition", "template_leak", "unsupported_numbers")
REPETITION_THRESHOLD = 0.3  # share of word 4-grams that repeat an earlier one
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")


def numbers_in(text: str) -> set[str]:
    """Numbers in text, normalized so that 1,000 and 1000 (and 2.50 and 2.5) compare equal."""
    out = set()
    for match in _NUMBER.findall(text):
        plain = match.replace(",", "")
        if "." in plain:
            plain = plain.rstrip("0").rstrip(".")
        out.add(plain.lstrip("0") or "0")
    return out


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the text."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 8:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def quality_flags(text: str, finish_reason: str, source: str, markers: tuple[str, ...]) -> list[str]:
    """Flags for one generation; source is the text the model was given (the title)."""
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if not text.strip():
        flags.append("empty")
        return flags
    if repetition_rate(text) > REPETITION_THRESHOLD:
        flags.append("repetition")
    if any(m in text for m in markers):
        flags.append("template_leak")
    if numbers_in(text) - numbers_in(source):
        flags.append("unsupported_numbers")
    return flags
