"""Quality flags: each rule on its own, and the repetition shortcut against the exact rate."""

from __future__ import annotations

import random
import re

import polars as pl
import pytest
from _support import REPO

from enrich.evaluate import REPETITION_THRESHOLD, _has_digit, _repetitive, quality_flags, repetition_rate

MARKERS = ("### Instruction:", "### Response:")
LOOP = "this drill is great for wood and metal " * 6


@pytest.mark.parametrize(
    ("text", "finish", "source", "expected"),
    [
        ("A plain, sturdy hammer for daily work.", "stop", "Hammer", []),
        ("A plain, sturdy hammer", "length", "Hammer", ["truncated"]),
        ("   ", "stop", "Hammer", ["empty"]),
        ("", "length", "Hammer", ["truncated", "empty"]),
        (LOOP, "stop", "Drill", ["repetition"]),
        ("Great hammer. ### Response: more", "stop", "Hammer", ["template_leak"]),
        ("Pack of 12 hooks, 3.50 inches long.", "stop", "Hooks 12-pack", ["unsupported_numbers"]),
        ("Pack of 1,000 screws, 2.50 in.", "stop", "Screws 1000 count 2.5 in", []),
        ("Model 007 fits 7 sizes.", "stop", "Clamp 7", []),
    ],
)
def test_each_flag(text: str, finish: str, source: str, expected: list[str]) -> None:
    assert quality_flags(text, finish, source, MARKERS) == expected


def test_repetition_shortcut_agrees_with_the_exact_rate() -> None:
    texts = pl.read_parquet(REPO / "examples" / "catalog.parquet")["content"].drop_nulls().to_list()
    rng = random.Random(0)
    words = LOOP.split()
    for _ in range(500):  # loops of every length, cut anywhere, with noise words between them
        k = rng.randint(1, 12)
        texts.append(" ".join(rng.choice(words) if rng.random() < 0.2 else words[i % k] for i in range(60)))
    exact = [repetition_rate(t) > REPETITION_THRESHOLD for t in texts]
    assert [_repetitive(t) for t in texts] == exact
    assert 50 < sum(exact) < len(texts) - 50  # both answers are well represented


@pytest.mark.parametrize("text", ["no digits here", "model 7", "٣ arabic-indic", "fullwidth １", "", "é 0"])
def test_digit_shortcut_agrees_with_the_regex(text: str) -> None:
    assert _has_digit(text) == (re.search(r"\d", text) is not None)
