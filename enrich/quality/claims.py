"""Claims a generated description makes that the product's own data does not support, and faithful targets."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from enrich.quality.normalize import (
    BREAK,
    NUMBER_WORDS,
    PHRASE_FIRST,
    PHRASE_SYNONYMS,
    Located,
    has_digit,
    normalize_word,
    normalized,
    number_words,
    quantities,
    words,
)
from enrich.quality.vocabulary import IMPLIES, MARKETING, RULES, STOPWORDS, Kind, Vocabulary

Attributes = Sequence[tuple[str, str]]  # (label, value) pairs, rendered as text


@dataclass(frozen=True)
class Facts:
    """What a product's data supports, normalised once per row."""

    words: frozenset[str]  # every word's normal form, the groups they imply, single-word phrase synonyms
    joined: str  # " w w | w w w | ... ": the words in order, "|" where no phrase continues
    quantities: frozenset[tuple[str, str]]  # (number, canonical unit or "")
    numbers: frozenset[str]
    names: frozenset[str]  # content words of the title and the brand: what naming this product means


@dataclass(frozen=True)
class Claim:
    """An unsupported claim: its kind, the words as the text writes them, and their normal form."""

    kind: Kind
    surface: str
    term: str


@dataclass(frozen=True)
class Cut:
    """A description cut to what the facts support: the text kept, and the sentences (or clauses) kept and cut."""

    text: str
    sentences_kept: tuple[str, ...]
    sentences_cut: tuple[str, ...]


# A value that says the product lacks something: "Hood: No" must not support "hood".
_NEGATIVE = frozenset(
    {"no", "none", "not applicable", "n/a", "na", "0", "without", "false", "não", "nao", "sem"}
)
_AND = frozenset({normalize_word(w) for w in ("and", "or", "e", "ou", "with")})
# Words after which a term that needs context is read as that kind ("orange shade", "pine finish").
_CONTEXT = {
    "colour": frozenset(normalize_word(w) for w in ("colour", "shade", "tone", "hue", "tom")),
    "material": frozenset(
        normalize_word(w) for w in ("material", "fabric", "finish", "frame", "construction")
    ),
}


def facts(title: str, attributes: Attributes = (), description: str | None = None) -> Facts:
    """The normalised terms and quantities that a product's title, attribute values and description support."""
    texts = []
    with_labels = []
    brands = []
    for label, value in attributes:
        if not value or (len(value) < 20 and value.strip().lower() in _NEGATIVE):
            continue
        texts.append(value)
        # "Neck: Round" supports "round neck": a short value is read with a short label too.
        if len(value) <= 30 and len(label) <= 20:
            with_labels.append(f"{value} {label}")
        if is_brand_label(label):
            brands.append(value)
    if description:
        texts.append(description)
    title_norms = words(title)
    said_in = " | ".join([title, *texts])
    norms = [*title_norms, BREAK, *words(" | ".join([*texts, *with_labels]))]
    found = set(norms)
    extra = _phrase_synonyms(norms) if not PHRASE_FIRST.keys().isdisjoint(norms) else []
    for canonical in extra:
        found.update(canonical.split())
    for group in found.intersection(IMPLIES):
        found.update(IMPLIES[group])
    found.discard(BREAK)
    said = [(number, unit) for number, unit, _ in quantities(said_in)] if has_digit(said_in) else []
    if not NUMBER_WORDS.keys().isdisjoint(norms):
        said += [(number, unit) for number, unit, _, _ in number_words(norms)]
    names = set(title_norms).union(*(words(b) for b in brands)) - STOPWORDS - MARKETING
    return Facts(
        words=frozenset(found),
        joined=f" {' '.join(norms)} | {' | '.join(extra)} ",
        quantities=frozenset(said),
        numbers=frozenset([number for number, _ in said]),
        names=frozenset([w for w in names if len(w) > 1 and not w.isdigit()]),
    )


@lru_cache(maxsize=1024)
def is_brand_label(label: str) -> bool:
    """Whether an attribute's label names the brand ("Brand", "brand_name", "Marca")."""
    low = label.lower()
    return "brand" in low or "marca" in low


def _phrase_synonyms(norms: list[str]) -> list[str]:
    """The canonical forms of the phrase variants in a text ("Sleeve Less" -> "sleeveless")."""
    out = []
    for i in [i for i, w in enumerate(norms) if w in PHRASE_FIRST]:
        for n in range(min(PHRASE_FIRST[norms[i]], len(norms) - i), 1, -1):
            canonical = PHRASE_SYNONYMS.get(" ".join(norms[i : i + n]))
            if canonical is not None:
                out.append(canonical)
                break
    return out


# check() and type_check() of one text share its reading: the second call finds it here.
_LAST: tuple[str, list[str], list[str]] = ("", [], [])


def _read(text: str) -> tuple[list[str], list[str]]:
    global _LAST
    last = _LAST
    if last[0] is text:
        return last[1], last[2]
    chunks = text.split()
    norms = normalized(chunks)
    _LAST = (text, chunks, norms)
    return chunks, norms


def check(text: str, facts: Facts, vocabulary: Vocabulary) -> list[Claim]:
    """The claims of text that facts do not support: terms in text order, then numbers in digits, in words."""
    chunks, norms = _read(text)
    claims: dict[str, Claim] = {}
    located: Located | None = None

    def where() -> Located:  # built on the first claim only: most terms that a text names are supported
        nonlocal located
        if located is None:
            located = Located(text, chunks)
        return located

    if not vocabulary.starts.isdisjoint(norms):
        _check_terms(norms, facts, vocabulary, claims, where)
    if has_digit(text):
        for number, unit, written in quantities(text):
            term = _unsupported_quantity(number, unit, facts)
            if term and term not in claims:
                claims[term] = Claim("number", written, term)
    if not NUMBER_WORDS.keys().isdisjoint(norms):
        for number, unit, start, end in number_words(norms):
            term = _unsupported_quantity(number, unit, facts)
            if term and term not in claims:
                claims[term] = Claim("number", where().surface(start, end), term)
    return list(claims.values())


def _unsupported_quantity(number: str, unit: str, facts: Facts) -> str | None:
    """The term of a number the facts do not support: a bare number needs the number anywhere in the facts;
    one with a unit needs it with the same unit or bare (a title that says "10" supports "10 ft")."""
    if not unit:
        return None if number in facts.numbers else number
    if (number, unit) in facts.quantities or (number, "") in facts.quantities:
        return None
    return f"{number} {unit}"


def _check_terms(
    norms: list[str],
    facts: Facts,
    vocabulary: Vocabulary,
    claims: dict[str, Claim],
    where: Callable[[], Located],
) -> None:
    starts, anchors, terms = vocabulary.starts, vocabulary.anchors, vocabulary.terms
    n, done = len(norms), 0
    for i in [i for i, w in enumerate(norms) if w in starts]:
        if i < done:
            continue  # inside a longer term already read ("rose gold" is not also "gold")
        w = norms[i]
        start, end, key, kind = i, i + 1, w, terms.get(w)
        # The longest term anchored here; a phrase across punctuation holds "|" and is no term.
        for offset, size, step, neighbour in anchors.get(w, ()):
            if (
                0 <= i + step < n
                and norms[i + step] == neighbour
                and done <= i - offset
                and i - offset + size <= n
            ):
                phrase = " ".join(norms[i - offset : i - offset + size])
                phrase = PHRASE_SYNONYMS.get(phrase, phrase)
                if phrase in terms:
                    start, end, key, kind = i - offset, i - offset + size, phrase, terms[phrase]
                    break
        if kind is None:
            continue
        done = end
        if not supported(key, facts, terms) and _is_claim(key, kind, start, end, norms, vocabulary, where):
            claims.setdefault(key, Claim(kind, where().surface(start, end), key))


def _neighbour(norms: list[str], i: int, step: int) -> str:
    """The nearest word before (step -1) or after (step 1) position i, past "|", "and" and "or"."""
    for _ in range(3):
        i += step
        if not 0 <= i < len(norms):
            return ""
        if norms[i] != BREAK and norms[i] not in _AND:
            return norms[i]
    return ""


def _is_claim(
    key: str,
    kind: Kind,
    i: int,
    end: int,
    norms: list[str],
    vocabulary: Vocabulary,
    where: Callable[[], Located],
) -> bool:
    """Whether a term found at elements i..end is meant as its kind here (see the markers in vocab/*.txt)."""
    after = norms[end] if end < len(norms) else ""
    if kind == "brand":
        want = vocabulary.brand_case.get(key, "")
        return all(c == "A" or w == "." or c == w for c, w in zip(where().cases[i:end], want, strict=False))
    rule = RULES.get(key)
    if rule is None:
        return True
    if after in rule.not_before or (i and norms[i - 1] in rule.not_after):
        return False
    if not rule.needs_context:
        return True
    # Before a word of its kind ("orange shade") or a product type ("orange shirt"), or next to a term of the
    # same kind ("orange and teal", "red, orange"): not "orange juice", "olive oil".
    if after in _CONTEXT.get(kind, ()) or after in vocabulary.type_words:
        return True
    terms = vocabulary.terms
    return terms.get(_neighbour(norms, i, -1)) == kind or terms.get(_neighbour(norms, end - 1, 1)) == kind


def supported(key: str, facts: Facts, terms: dict[str, Kind]) -> bool:
    """Whether facts support a normalised term."""
    if key in facts.words:
        return True
    if " " not in key:
        return False
    if f" {key} " in facts.joined:
        return True
    # A phrase made only of terms is supported by its parts ("navy blue" by "Navy" and "Blue" values);
    # one with a word of its own is not ("rose gold" is not supported by "Gold").
    parts = key.split()
    return all(p in terms and p in facts.words for p in parts)


TypeFlag = Literal["wrong_type", "off_topic", "title_only"]
# A text that adds fewer content words than this to its title and brand only says the title again: the small
# default model does so for about one row in ten of a catalog (a shortened title, "Dremel Tungsten Cutter Taper
# DRE9934"), which no shop can publish as a description, while real descriptions almost never do (bench/claims.py).
TITLE_ONLY_NEW_WORDS = 3


def type_check(text: str, facts: Facts, vocabulary: Vocabulary) -> TypeFlag | None:
    """wrong_type: text names product types, never the product's own; off_topic: it names nothing of it;
    title_only: it says nothing but its title and brand."""
    _, norms = _read(text)
    if not norms or norms == [BREAK]:
        return None  # no words: the "empty" flag's case
    types = vocabulary.type_words
    own = types.intersection(facts.words)
    if own.isdisjoint(norms) and facts.names.isdisjoint(norms):
        return "off_topic" if own or facts.names else None
    content = {w for w in norms if len(w) > 1 and not w.isdigit()} - STOPWORDS - MARKETING - {BREAK}
    new = content - facts.names
    # More of the title's words than others, and few others: a short line about something else ("Stylish
    # sandals for men") is not the title said again.
    if len(new) < TITLE_ONLY_NEW_WORDS and len(content & facts.names) > len(new):
        return "title_only"
    # A subject is named more than once; other types named once are incidental ("pair it with sandals"), and
    # the product's own type named anywhere makes them all incidental. Measured on real descriptions with
    # their own facts and with another row's: "the first type named" flagged 3.8% of Amazon's real rows (its
    # descriptions open with boilerplate and name accessories), "never the own type" 6.1%, this rule 1.8%,
    # while it flags 69% (Amazon) and 84% (Flipkart) of descriptions given to a product of another type.
    # Where the facts name no known type there is nothing to compare with.
    if own and own.isdisjoint(norms) and not types.isdisjoint(norms):
        named = [w for w in norms if w in types]
        if len(named) > len(set(named)):
            return "wrong_type"
    return None


# A sentence ends at . ! ? before a space and a capital, digit or quote, or at a line break; clauses end at
# ";" or a bullet. Abbreviations before a dot ("Rs. 379", "No. 5", "approx. 2 in") end no sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'\u201c(\[A-Z0-9\u00c0-\u00dd])|\s*\n\s*")
_CLAUSE = re.compile(r"\s*([;\u2022\u00b7|\u25aa\u25ba\u2714\u2713\u25c6\u27a4])\s*")
_ABBREVIATIONS = frozenset(
    {"rs", "no", "nos", "mr", "mrs", "ms", "dr", "st", "vs", "approx", "etc", "inc", "ltd", "co", "fig", "dept",
     "est", "max", "min", "sr", "jr", "e.g", "i.e", "u.s", "vol", "ref"}
)  # fmt: skip


def _sentences(text: str) -> list[tuple[str, str]]:
    """(gap before, sentence) for each sentence of text, the gaps as written."""
    out: list[tuple[str, str]] = []
    last, gap = 0, ""
    for m in _SENTENCE_END.finditer(text):
        piece = text[last : m.start()]
        word = piece.rsplit(None, 1)[-1].rstrip(".").lower() if piece.strip() else ""
        if "\n" not in m.group() and word in _ABBREVIATIONS:
            continue
        if piece.strip():
            out.append((gap, piece))
            gap = m.group()
        last = m.end()
    if text[last:].strip():
        out.append((gap, text[last:]))
    return out


def faithful(description: str, facts: Facts, vocabulary: Vocabulary) -> Cut:
    """description cut to the sentences and clauses whose claims facts support, in order and as written.

    facts should hold the title and attributes only: a description always supports itself.
    """
    kept_text: list[str] = []
    kept: list[str] = []
    cut: list[str] = []
    for gap, sentence in _sentences(description):
        # ["clause", "sep", "clause", ...]: a clause keeps the separator written before it.
        parts = _CLAUSE.split(sentence)
        clauses = [(parts[k - 1] if k else "", parts[k]) for k in range(0, len(parts), 2)]
        out: list[str] = []
        for sep, clause in clauses:
            if not clause.strip():
                continue
            if check(clause, facts, vocabulary):
                cut.append(clause)
                continue
            kept.append(clause)
            if sep == ";":
                out.append(f"; {clause}" if out else clause)
            elif sep:
                out.append(f" {sep} {clause}" if out else f"{sep} {clause}")
            else:
                out.append(clause)
        if not out:
            continue
        joined = "".join(out)
        end = sentence.rstrip()[-1:]
        if end and end in ".!?" and not joined.endswith((".", "!", "?")):
            joined += end  # the sentence's last clause was cut with its full stop
        kept_text.append((gap if kept_text else "") + joined)
    return Cut("".join(kept_text), tuple(kept), tuple(cut))
