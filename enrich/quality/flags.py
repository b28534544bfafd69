"""The quality flags of one generated text: what run and eval check of every row."""

from __future__ import annotations

import re
from typing import get_args

from enrich.config import Flag

# The quality flags, in report order; config.Flag (the output contract) names them.
FLAGS: tuple[str, ...] = get_args(Flag)
REPETITION_THRESHOLD = 0.3  # share of word 4-grams that repeat an earlier one
_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")

# Units of sizes and quantities after a number: canonical name <- spellings. The spellings of a unit compare
# equal ("10 ft" == "10-foot" == "10'"; pack, count, piece and sheet are one unit), units are not converted
# ("12 in" is not "1 ft"), and prefixes of area and volume ("sq ft", "cu in") are no units, so such a number
# counts as bare. Left out are single letters that mostly mean something else: L and W (length and width in
# "9.5L x 4W"), C, D and F ("2 C batteries", "3D", model codes); m, g and A count in one case only (below).
_UNIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "in": ("in", "inch", "inches", '"', "''", "\u201d", "\u2033"),  # right double quote, double prime
    "ft": ("ft", "feet", "foot", "'", "\u2019", "\u2032"),  # right single quote, prime
    "yd": ("yd", "yds", "yard", "yards"),
    "mil": ("mil", "mils"),
    "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "m": ("meter", "meters", "metre", "metres"),
    "oz": ("oz", "ozs", "ounce", "ounces", "fl"),  # "8 fl oz"
    "lb": ("lb", "lbs", "pound", "pounds"),
    "g": ("gram", "grams"),
    "kg": ("kg", "kgs", "kilogram", "kilograms"),
    "ml": ("ml", "milliliter", "milliliters", "millilitre", "millilitres"),
    "l": ("ltr", "liter", "liters", "litre", "litres"),
    "gal": ("gal", "gallon", "gallons"),
    "qt": ("qt", "quart", "quarts"),
    "pt": ("pint", "pints"),
    "v": ("v", "volt", "volts", "vac", "vdc"),
    "w": ("watt", "watts"),
    "a": ("amp", "amps", "ampere", "amperes"),
    "ma": ("ma",),
    "mah": ("mah",),
    "ohm": ("ohm", "ohms"),
    "kb": ("kb",),
    "mb": ("mb",),
    "gb": ("gb",),
    "tb": ("tb",),
    "hz": ("hz",),
    "khz": ("khz",),
    "mhz": ("mhz",),
    "ghz": ("ghz",),
    "psi": ("psi",),
    "rpm": ("rpm",),
    "%": ("%", "percent"),
    "degf": ("\u00b0f", "\u00baf"),  # degree sign, or the ordinal indicator that often stands for it
    "degc": ("\u00b0c", "\u00bac"),
    "ga": ("ga", "gauge", "awg"),
    "grit": ("grit",),
    "ct": ("count", "ct", "pack", "packs", "pk", "pkg", "piece", "pieces", "pc", "pcs", "sheet", "sheets"),
}
# Each spelling in lower case, upper case and capitalized ("in", "IN", "In"), plus the mixed ones of SI
# (mL, mAh, kHz): a lookup without str.lower(), and an odd case ("iNch") is no unit, so its number is bare.
_UNITS = {
    variant: unit
    for unit, spellings in _UNIT_SPELLINGS.items()
    for spelling in spellings
    for variant in (spelling, spelling.upper(), spelling.capitalize())
}
_UNITS |= {"mL": "ml", "mA": "ma", "mAh": "mah", "kHz": "khz", "MHz": "mhz", "GHz": "ghz"}
# Letters whose other case means something else: M is mega or the 3M brand, G giga or gauge, "a" the article
# ("2 a day"); only these cases are units.
_UNITS |= {"m": "m", "g": "g", "A": "a"}
# A number and what follows it: a word or %, or degrees, after at most one space or hyphen ("10 ft", "10-foot",
# "12V"), or a quote mark right after the digit ('12"', "6'", not "1990's"). "in" is a unit only where it
# cannot be the preposition: before the end of the text, punctuation, "x" or a dimension word ("1 in.",
# "1 in x 10 ft", "6 in deep"), never in "fits 1 in every pocket" or "3-in-1"; a sentence that ends "fits 1 in."
# is read as inches, which is harmless where the title has the 1 bare or in inches.
# \d\d* rather than \d+: a pattern that opens with a character set lets re skip to the next digit in C
# (5.9 us a text instead of 9.5 on real descriptions cut at 800 characters, and titles).
_QUANTITY = re.compile(
    r"(\d\d*(?:[.,]\d+)*)(?:(?:[\s-]?(?=[a-z%\u00b0\u00ba])|(?=['\"\u201d\u2033\u2019\u2032]))("
    r"in(?=\.|\s*(?:$|[,;:!?)\]]|[x\u00d7*](?![a-z])"
    r"|(?:long|wide|high|tall|thick|deep|dia|diameter|length|width|height|od|id|[lwhd])\b(?!-)))"
    r"|(?!in\b)[a-z]+\b|%|[\u00b0\u00ba][cf]"
    r"|''|[\"\u201d\u2033]|['\u2019\u2032](?![a-z])))?",
    re.IGNORECASE,
)


_DOT_DIGIT = re.compile(r"\.\d")  # a literal first character: re scans for it in C


def _with_leading_zeros(text: str) -> str:
    """ ".75-Inch" as "0.75-Inch": a decimal written without its 0, not a dot inside a word or a number ("No.5",
    "1.5"). A lookbehind in the pattern would cost a regex step at every character; this checks the dots only."""
    cuts = [
        m.start() for m in _DOT_DIGIT.finditer(text) if m.start() == 0 or not text[m.start() - 1].isalnum()
    ]
    cuts = [c for c in cuts if c == 0 or text[c - 1] != "."]
    if not cuts:
        return text
    parts, last = [], 0
    for c in cuts:
        parts += [text[last:c], "0"]
        last = c
    return "".join(parts) + text[last:]


def quantities_in(text: str) -> set[tuple[str, str]]:
    """(number, canonical unit or "") for each number in text; 1,000 and 1000 (and 2.50 and 2.5) are one number."""
    out = set()
    for number, unit in _QUANTITY.findall(text):
        plain = number.replace(",", "")
        if "." in plain:
            plain = plain.rstrip("0").rstrip(".")
        out.add((plain.lstrip("0") or "0", _UNITS.get(unit, "")))
    return out


def unsupported_numbers(text: str, source: str) -> bool:
    """Whether text has a number, or a number with a unit, that source does not support.

    A bare number needs the number anywhere in source; a number with a unit needs it with the same unit,
    or bare (a title that says "10" supports "10 ft"), so "10 ft" for a title that says "10 in" is unsupported.
    """
    said, given = quantities_in(text), quantities_in(source)
    if not _unsupported(said, given):
        return False
    # Where a decimal lacks its 0 (".75-Inch" supports "0.75-inch"), that side is read again: only rows that
    # looked unsupported pay for the check, and only the rare rows with such a decimal for the second reading.
    fixed_text, fixed_source = _with_leading_zeros(text), _with_leading_zeros(source)
    if fixed_text is text and fixed_source is source:
        return True
    return _unsupported(
        said if fixed_text is text else quantities_in(fixed_text),
        given if fixed_source is source else quantities_in(fixed_source),
    )


def _unsupported(said: set[tuple[str, str]], given: set[tuple[str, str]]) -> bool:
    extra = said - given
    if not extra:
        return False
    numbers = {number for number, _ in given}
    return any((number, "") not in given if unit else number not in numbers for number, unit in extra)


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


def _has_digit(text: str) -> bool:
    """_DIGIT.search(text), a sixth of its cost on ASCII text: ten substring scans instead of a Unicode regex."""
    if not text.isascii():
        return _DIGIT.search(text) is not None
    for digit in "0123456789":  # noqa: SIM110 (any() over a generator costs twice this loop)
        if digit in text:
            return True
    return False


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


def quality_flags(text: str, finish_reason: str, source: str, markers: tuple[str, ...]) -> list[str]:
    """Flags for one generation; source is the text the model was given (the title)."""
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if not text.strip():
        flags.append("empty")
        return flags
    if _repetitive(text):
        flags.append("repetition")
    for marker in markers:
        if marker in text:
            flags.append("template_leak")
            break
    # Most texts carry no digit: skip the number parsing for them (this runs once per row of the catalog).
    if _has_digit(text) and unsupported_numbers(text, source):
        flags.append("unsupported_numbers")
    return flags
