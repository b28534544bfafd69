"""Quality flags: each rule on its own, and the repetition shortcut against the exact rate."""

from __future__ import annotations

import random
import re

import polars as pl
import pytest
from _support import CATALOG

from enrich.quality.claims import facts
from enrich.quality.flags import REPETITION_THRESHOLD, _repetitive, inspect, repetition_rate
from enrich.quality.normalize import has_digit, quantities
from enrich.quality.vocabulary import base_vocabulary

MARKERS = ("### Instruction:", "### Response:")
LOOP = "this drill is great for wood and metal " * 6


@pytest.mark.parametrize(
    ("text", "finish", "source", "expected"),
    [
        ("A plain, sturdy hammer for daily work.", "stop", "Hammer", []),
        ("A plain, sturdy hammer", "length", "Hammer", ["truncated"]),
        ("   ", "stop", "Hammer", ["empty"]),
        ("", "length", "Hammer", ["truncated", "empty"]),
        (LOOP, "stop", "Drill for wood and metal", ["repetition", "title_only"]),
        ("Drill for wood and metal, in its case.", "stop", "Drill for wood and metal", ["title_only"]),
        ("Great hammer. ### Response: more", "stop", "Hammer", ["template_leak"]),
        ("Pack of 12 hooks, 3.50 inches long.", "stop", "Hooks 12-pack", ["unsupported_claims"]),
        ("Pack of 1,000 screws, 2.50 in.", "stop", "Screws 1000 count 2.5 in", ["title_only"]),
        ("Clamp model 007 fits 7 sizes.", "stop", "Clamp 7", []),
    ],
)
def test_each_flag(text: str, finish: str, source: str, expected: list[str]) -> None:
    assert flags_of(text, finish, source) == expected


def flags_of(text: str, finish: str, title: str) -> list[str]:
    return inspect(text, finish, facts(title), MARKERS, base_vocabulary()).flags


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 ft, 10 feet, 10-foot, 10'", {("10", "ft")}),
        ("12\", 12 inch, 12-Inches, 12'', 12\u201d", {("12", "in")}),
        ("5 lb, 5 lbs, 5 LBS, 5 pounds", {("5", "lb")}),
        ("500 ml, 500mL", {("500", "ml")}),
        ("1,000 count, 1000-Pack, 1000 pcs", {("1000", "ct")}),
        (
            "12V 64GB 2.50 mm 8 fl oz 350\u00b0F",
            {("12", "v"), ("64", "gb"), ("2.5", "mm"), ("8", "oz"), ("350", "degf")},
        ),
        ("3/8 in", {("3", ""), ("8", "in")}),
        ("1 in. wide, 2 in x 3 in, 4 in deep", {("1", "in"), ("2", "in"), ("3", "in"), ("4", "in")}),
        ("fits 1 in every pocket, a 3-in-1 tool", {("1", ""), ("3", "")}),
        ("3M tape, 5 m long, 15A fuse, 2 a day", {("3", ""), ("5", "m"), ("15", "a"), ("2", "")}),
        (
            "the 1990's, 9.5L x 4W, 10 sq ft, 80 hooks",
            {("1990", ""), ("9.5", ""), ("4", ""), ("10", ""), ("80", "")},
        ),
    ],
)
def test_quantities_pair_numbers_with_canonical_units(text: str, expected: set[tuple[str, str]]) -> None:
    assert {(number, unit) for number, unit, _ in quantities(text)} == expected


@pytest.mark.parametrize(
    ("text", "source", "expected"),
    [
        # A number with a unit the title gives it with another unit only.
        ("A brass fitting for 3/8 ft lines.", "Brass fitting 3/8 in", ["unsupported_claims"]),
        ("A 10 ft cord.", "Cord 10 in", ["unsupported_claims"]),
        ("The scale holds 2.5 kg.", "Scale 2.50 lb", ["unsupported_claims"]),
        ("Each tape is 1 in. wide.", "Tape 1 ft", ["unsupported_claims"]),
        # The same unit, spelled another way.
        ("A 10 feet cord.", "Cord 10 ft", []),
        ("The kettlebell weighs 5 lbs.", "Kettlebell 5 lb", []),
        ("A 12 inch ruler.", 'Ruler 12"', []),
        ("A 1,000-pack of 2.50 mm pins.", "Pins 2.5mm 1000 Count", []),
        # A title that gives the number without a unit supports any unit.
        ("A 10 ft cord.", "Cord 10", []),
        ("The fitting fits 3/8 in. pipes.", "Fitting 3/8 x 10 ft", []),
        # Bare numbers as before: supported by the number anywhere in the title, whatever its unit.
        ("Pack of 12 hooks.", "Hooks 12 in", []),
        ("Pack of 4 hooks.", "Hooks 12 in", ["unsupported_claims"]),
        ("The wallet tool fits 1 in every hand, a 3-in-1 tool.", "Wallet tool 1 ft, 3 ft", []),
        # Numbers written as words count as numbers: ten foot is 10 ft, not the title's 10 in.
        ("A ten foot cord, one inch thick.", "Cord 10 in", ["unsupported_claims"]),
        ("A ten inch cord.", "Cord 10 in", []),
        # "in" before a hyphenated word is the preposition; a decimal without its 0 is the same number
        ("A set of 3 in high-quality leather.", "Leather Gloves, 3 Pack", []),
        ("This 0.75-inch tape.", "Electrical Tape, .75-Inch by 66-Foot", []),
        ("This 0.5-inch tape.", "Electrical Tape, .75-Inch by 66-Foot", ["unsupported_claims"]),
        ("Chanel No.5 in a 1.5 oz bottle.", "Chanel No. 5, 1.5 oz", []),
    ],
)
def test_unsupported_numbers_compares_units(text: str, source: str, expected: list[str]) -> None:
    # Short texts about their title's numbers: that most also say nothing more (title_only) is beside the point.
    assert [f for f in flags_of(text, "stop", source) if f != "title_only"] == expected


def test_repetition_shortcut_agrees_with_the_exact_rate() -> None:
    texts = pl.read_parquet(CATALOG)["content"].drop_nulls().to_list()
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
    assert has_digit(text) == (re.search(r"\d", text) is not None)
