"""Normalisation shared by both sides of a claim check: tokens, plurals, synonyms, number words, quantities."""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cached_property
from importlib import resources
from itertools import accumulate, chain

# A word and the text before it: the gap tells whether two words can form a phrase. "women's" is one word (its
# "'s" is dropped when it is normalised).
_TOKEN = re.compile(r"(\W*)(\w+(?:['\u2019]\w+)?)")
# Gaps that keep two words in one phrase: spaces, hyphens ("navy-blue" is "navy blue") and slashes ("3/4").
_JOINERS = " \t-/\u2010\u2011'\u2019"

Pair = tuple[str, str]  # (gap before the word, the word as written)


def vocab_lines(name: str) -> list[str]:
    """The lines of a packaged vocabulary file, without comments and blank lines."""
    text = resources.files("enrich.quality").joinpath("vocab", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def joinable(gap: str) -> bool:
    """Whether two words with this gap between them can be one phrase."""
    return not gap.strip(_JOINERS)


def singular(word: str) -> str:
    """The singular of a lower-case English or Portuguese word by simple rules (plurals.txt lists the rest)."""
    if len(word) <= 3 or word[-1] != "s" or not word.isalpha() or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    return word[:-1]


def _plural_table() -> dict[str, str]:
    table = {}
    for line in vocab_lines("plurals.txt"):
        plural, _, one = line.lower().partition(" ")
        table[plural] = one.strip() or plural
    return table


_PLURALS = _plural_table()


def fold(word: str) -> str:
    """Lower case, no possessive, singular: the form before synonyms."""
    w = word.lower()
    if w.endswith(("'s", "\u2019s")):
        w = w[:-2]
    return _PLURALS.get(w) or singular(w)


def _synonym_tables() -> tuple[dict[str, str], dict[str, str]]:
    """Single-word variants (canonical may be a phrase: "vneck" -> "v neck") and phrase variants."""
    words: dict[str, str] = {}
    entries: list[tuple[str, list[str]]] = []
    for line in vocab_lines("synonyms.txt"):
        canonical, _, listed = line.partition("=")
        entries.append((canonical, [v for v in listed.split(",") if v.strip()]))

    def folded(text: str) -> str:
        return " ".join(fold(w) for _, w in _TOKEN.findall(text))

    for canonical, variants in entries:  # single words first: phrases are normalised through them
        for variant in variants:
            key = folded(variant)
            if " " not in key:
                words[key] = folded(canonical)
    phrases: dict[str, str] = {}
    for canonical, variants in entries:
        target = " ".join(words.get(w, w) for w in folded(canonical).split())
        for variant in variants:
            key = " ".join(words.get(w, w) for w in folded(variant).split())
            if " " in key:
                phrases[key] = target
    return words, phrases


def _heads(phrases: dict[str, str]) -> dict[str, int]:
    """First word of each phrase -> the longest phrase's length in words, to find phrases by one dict lookup."""
    out: dict[str, int] = {}
    for variant in phrases:
        words = variant.split()
        out[words[0]] = max(out.get(words[0], 0), len(words))
    return out


_WORD_SYNONYMS, PHRASE_SYNONYMS = _synonym_tables()
PHRASE_FIRST = _heads(PHRASE_SYNONYMS)

# The normal form of each word seen: a word normalises the same way every time, and a catalog's words are few,
# so one dict lookup replaces lower(), the plural rules and the synonyms on every later occurrence.
_CACHE: dict[str, str] = {}
# The same for whitespace-separated chunks of text ("Navy-blue," -> ("navy", "blue", "|")): str.split() and one
# lookup a chunk cost about half of one regex pass over the text. The normal form holds words and "|" where a
# phrase cannot continue (punctuation); _SPANS holds where each of its elements is in the chunk.
_NORMS: dict[str, tuple[str, ...]] = {}
_SPANS: dict[str, tuple[tuple[int, int], ...]] = {}
# And how each element is written: "A" in capitals, "U" capitalised, "l" otherwise, "|" a break.
_CASES: dict[str, str] = {}
_CACHE_LIMIT = 200_000  # entries of each cache; a catalog of millions of rows has more distinct chunks
BREAK = "|"


def _normalize_new(word: str) -> str:
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    w = fold(word)
    out = _CACHE[word] = _WORD_SYNONYMS.get(w, w)
    return out


def normalize_word(word: str) -> str:
    """The normal form of one word as written: lower case, singular, canonical synonym (may be a phrase)."""
    return _CACHE.get(word) or _normalize_new(word)


def tokens(text: str) -> tuple[list[Pair], list[str]]:
    """The (gap, word) pairs of text and each word's normal form."""
    pairs = _TOKEN.findall(text)
    get = _CACHE.get
    return pairs, [get(w) or _normalize_new(w) for _, w in pairs]


def _analyse(chunk: str) -> None:
    elements: list[str] = []
    spans: list[tuple[int, int]] = []
    cases = []
    end = 0
    for m in _TOKEN.finditer(chunk):
        gap, word = m.groups()
        if gap and not joinable(gap):
            elements.append(BREAK)
            spans.append(m.span(1))
            cases.append(BREAK)
        case = "A" if word.isupper() else "U" if word[0].isupper() else "l"
        for part in normalize_word(word).split():  # "vneck" -> "v neck": both parts span the word
            elements.append(part)
            spans.append(m.span(2))
            cases.append(case)
        end = m.end()
    if not elements or not joinable(chunk[end:]):
        elements.append(BREAK)
        spans.append((end, len(chunk)))
        cases.append(BREAK)
    _NORMS[chunk] = tuple(elements)
    _SPANS[chunk] = tuple(spans)
    _CASES[chunk] = "".join(cases)


def normalized(chunks: list[str]) -> list[str]:
    """The normal forms of the words of text.split(), with "|" where a phrase cannot continue."""
    try:
        return list(chain.from_iterable(map(_NORMS.__getitem__, chunks)))
    except KeyError:
        _fill(chunks)
        return list(chain.from_iterable(map(_NORMS.__getitem__, chunks)))


def _fill(chunks: list[str]) -> None:
    """Analyse the chunks not in the caches; start the caches afresh when they are full."""
    if len(_NORMS) + len(chunks) >= _CACHE_LIMIT:
        # Another thread may be between its read of a text and the claims' surfaces: it fills again (Located).
        _NORMS.clear()
        _SPANS.clear()
        _CASES.clear()
    for chunk in chunks:
        if chunk not in _NORMS or chunk not in _SPANS or chunk not in _CASES:
            _analyse(chunk)


def words(text: str) -> list[str]:
    """The normal forms of text's words in order, with "|" where a phrase cannot continue."""
    return normalized(text.split())


def phrase(text: str) -> str:
    """The normal form of a term, a brand or a phrase (words normalised, phrase synonyms applied)."""
    joined = " ".join(w for w in words(text) if w != BREAK)
    return PHRASE_SYNONYMS.get(joined, joined)


class Located:
    """Where the normalised elements of a text are in it, for the text of a claim as written."""

    def __init__(self, text: str, chunks: list[str]) -> None:
        self.text, self.chunks = text, chunks

    @cached_property
    def cases(self) -> str:
        """How each element is written: "A" in capitals, "U" capitalised, "l" otherwise, "|" a break."""
        try:
            return "".join(map(_CASES.__getitem__, self.chunks))
        except KeyError:
            _fill(self.chunks)
            return "".join(map(_CASES.__getitem__, self.chunks))

    @cached_property
    def _ends(self) -> list[int]:
        try:
            return list(accumulate(map(len, map(_SPANS.__getitem__, self.chunks))))
        except KeyError:
            _fill(self.chunks)
            return list(accumulate(map(len, map(_SPANS.__getitem__, self.chunks))))

    def _at(self, k: int) -> tuple[int, tuple[int, int]]:
        i = bisect_right(self._ends, k)
        chunk = self.chunks[i]
        if chunk not in _SPANS:
            _analyse(chunk)
        return i, _SPANS[chunk][k - (self._ends[i - 1] if i else 0)]

    def surface(self, start: int, end: int) -> str:
        """Elements start..end-1 as written: a substring of the text."""
        i, (a, _) = self._at(start)
        j, (_, b) = self._at(end - 1)
        if i == j:
            return self.chunks[i][a:b]
        pieces = [self.chunks[i][a:], *self.chunks[i + 1 : j], self.chunks[j][:b]]
        # The chunks were split at any whitespace: find them in the text with what was between them.
        text, at = self.text, self.text.find(pieces[0])
        while at >= 0:
            pos = at + len(pieces[0])
            for piece in pieces[1:]:
                while pos < len(text) and text[pos].isspace():
                    pos += 1
                if not text.startswith(piece, pos):
                    break
                pos += len(piece)
            else:
                return text[at:pos]
            at = text.find(pieces[0], at + 1)
        return " ".join(pieces)


def _number_words() -> dict[str, int]:
    out = {}
    for line in vocab_lines("numbers.txt"):
        word, value = line.split()
        out[normalize_word(word)] = int(value)
    return out


NUMBER_WORDS = _number_words()
_DOZEN = {normalize_word("dozen"), normalize_word("dúzia")}
_HALF = {normalize_word("half"), normalize_word("meia")}

# ---- Numbers with units: the rules of enrich's unsupported_numbers flag, with the text they were read from ----

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
UNITS = {
    variant: unit
    for unit, spellings in _UNIT_SPELLINGS.items()
    for spelling in spellings
    for variant in (spelling, spelling.upper(), spelling.capitalize())
}
UNITS |= {"mL": "ml", "mA": "ma", "mAh": "mah", "kHz": "khz", "MHz": "mhz", "GHz": "ghz"}
# Letters whose other case means something else: M is mega or the 3M brand, G giga or gauge, "a" the article
# ("2 a day"); only these cases are units.
UNITS |= {"m": "m", "g": "g", "A": "a"}
# A number and what follows it: a word or %, or degrees, after at most one space or hyphen ("10 ft", "10-foot",
# "12V"), or a quote mark right after the digit ('12"', "6'", not "1990's"). "in" is a unit only where it
# cannot be the preposition: before the end of the text, punctuation, "x" or a dimension word ("1 in.",
# "1 in x 10 ft", "6 in deep"), never in "fits 1 in every pocket" or "3-in-1"; a sentence that ends "fits 1 in."
# is read as inches, which is harmless where the title has the 1 bare or in inches.
# \d\d* rather than \d+: a pattern that opens with a character set lets re skip to the next digit in C.
_QUANTITY = re.compile(
    r"(\d\d*(?:[.,]\d+)*)(?:(?:[\s-]?(?=[a-z%\u00b0\u00ba])|(?=['\"\u201d\u2033\u2019\u2032]))("
    r"in(?=\.|\s*(?:$|[,;:!?)\]]|[x\u00d7*](?![a-z])"
    r"|(?:long|wide|high|tall|thick|deep|dia|diameter|length|width|height|od|id|[lwhd])\b(?!-)))"
    r"|(?!in\b)[a-z]+\b|%|[\u00b0\u00ba][cf]"
    r"|''|[\"\u201d\u2033]|['\u2019\u2032](?![a-z])))?",
    re.IGNORECASE,
)

Quantity = tuple[str, str, str]  # (number, canonical unit or "", the text it was read from)


def has_digit(text: str) -> bool:
    """Whether text has a digit; ten substring scans cost a sixth of a regex on ASCII text."""
    if not text.isascii():
        return re.search(r"\d", text) is not None
    for digit in "0123456789":  # noqa: SIM110 (any() over a generator costs twice this loop)
        if digit in text:
            return True
    return False


def _plain(number: str) -> str:
    """1,000 and 1000, 2.50 and 2.5, 007 and 7 are one number."""
    plain = number.replace(",", "")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    plain = plain.lstrip("0") or "0"
    return "0" + plain if plain[0] == "." else plain


def quantities(text: str) -> list[Quantity]:
    """Each number written in digits, with its canonical unit and the text it was read from."""
    out = []
    for m in _QUANTITY.finditer(text):
        number, unit = m.group(1), m.group(2) or ""
        start = m.start()
        # ".75-Inch" is 0.75 in: a dot right before the digits that follows no word or number ("No.5", "1.5")
        # is the decimal point of a number written without its 0. One character check a match, no lookbehind.
        if (
            start
            and text[start - 1] == "."
            and (start == 1 or not (text[start - 2].isalnum() or text[start - 2] == "."))
        ):
            number, start = "0." + number, start - 1
        unit = UNITS.get(unit, "")
        out.append((_plain(number), unit, text[start : m.end() if unit else m.end(1)]))
    return out


def number_words(norms: list[str]) -> list[tuple[str, str, int, int]]:
    """Each count written in words ("three pockets", "set of two", "a dozen", "two-pack", "três bolsos"), with
    the elements it was read from (start, end)."""
    out = []
    n = len(norms)
    for i, w in enumerate(norms):
        value = NUMBER_WORDS.get(w)
        if value is None or (w in _DOZEN and i and norms[i - 1] in NUMBER_WORDS):
            continue  # "two dozen" is read at "two"
        start, j = i, i + 1
        if w in _DOZEN and i and norms[i - 1] in _HALF:  # "half dozen"
            value, start = 6, i - 1
        elif w in _DOZEN and i > 1 and norms[i - 2] in _HALF:  # "half a dozen"
            value, start = 6, i - 2
        elif j < n and norms[j] in _DOZEN:
            value, j = value * 12, j + 1
        # A unit word after a count word; not "in" ("three in a row") nor single letters ("two a day").
        unit = UNITS.get(norms[j], "") if j < n and len(norms[j]) > 2 else ""
        out.append((str(value), unit, start, j + 1 if unit else j))
    return out
