"""Claims a generated description makes that the product's own data does not support, and faithful targets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from enrich.quality.normalize import (
    NUMBER_WORDS,
    PHRASE_FIRST,
    PHRASE_SYNONYMS,
    Pair,
    has_digit,
    joinable,
    normalize_word,
    number_words,
    quantities,
    tokens,
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
_NEGATIVE = frozenset({"no", "none", "not applicable", "n a", "na", "without", "false", "nao", "não", "sem", "0"})
_BRAND_LABELS = frozenset({"brand", "marca", "manufacturer", "fabricante"})
_AND = frozenset({normalize_word(w) for w in ("and", "or", "&", "e", "ou", "with")})
# Words after which a term that needs context is read as that kind ("orange shade", "pine finish").
_CONTEXT = {
    "colour": frozenset(normalize_word(w) for w in ("colour", "shade", "tone", "hue", "tom")),
    "material": frozenset(normalize_word(w) for w in ("material", "fabric", "finish", "frame", "construction")),
}


def facts(title: str, attributes: Attributes = (), description: str | None = None) -> Facts:
    """The normalised terms and quantities that a product's title, attribute values and description support."""
    texts = [title]
    names: set[str] = set()
    for label, value in attributes:
        if not value or value.strip().lower() in _NEGATIVE:
            continue
        texts.append(value)
        label_words = tokens(label)[1]
        # "Neck: Round" supports "round neck": a short value is read with its label too.
        if len(value) <= 30:
            texts.append(f"{value} {label}")
        if _BRAND_LABELS.intersection(label_words):
            names.update(tokens(value)[1])
    if description:
        texts.append(description)
    parts: list[str] = []
    words: set[str] = set()
    extra: list[str] = []
    said: list[tuple[str, str, str]] = []
    for text in texts:
        pairs, norms = tokens(text)
        for (gap, _), w in zip(pairs, norms, strict=True):
            if gap and not joinable(gap):
                parts.append("|")
            parts.append(w)
        parts.append("|")
        words.update(norms)
        extra += _phrase_synonyms(pairs, norms)
        if has_digit(text):
            said += quantities(text)
        if not NUMBER_WORDS.keys().isdisjoint(norms):
            said += number_words(pairs, norms)
    for canonical in extra:
        words.update(canonical.split())
        words.add(canonical)
    for group in words.intersection(IMPLIES):
        words.update(IMPLIES[group])
    title_words = tokens(title)[1]
    names.update(w for w in title_words if len(w) > 1 and not w.isdigit())
    return Facts(
        words=frozenset(words),
        joined=" " + " ".join(parts) + " | " + " | ".join(extra) + " ",
        quantities=frozenset((number, unit) for number, unit, _ in said),
        numbers=frozenset(number for number, _, _ in said),
        names=frozenset(names - STOPWORDS - MARKETING),
    )


def _phrase_synonyms(pairs: list[Pair], norms: list[str]) -> list[str]:
    """The canonical forms of the phrase variants in a text ("Sleeve Less" -> "sleeveless")."""
    out = []
    for i, w in enumerate(norms):
        longest = PHRASE_FIRST.get(w)
        if longest is None:
            continue
        for n in range(min(longest, len(norms) - i), 1, -1):
            if all(joinable(pairs[k][0]) for k in range(i + 1, i + n)):
                canonical = PHRASE_SYNONYMS.get(" ".join(norms[i : i + n]))
                if canonical is not None:
                    out.append(canonical)
                    break
    return out


# check() and type_check() of one text share its tokens: the second call finds them here.
_LAST: tuple[str, list[Pair], list[str]] = ("", [], [])


def _read(text: str) -> tuple[list[Pair], list[str]]:
    global _LAST
    last = _LAST
    if last[0] is text:
        return last[1], last[2]
    pairs, norms = tokens(text)
    _LAST = (text, pairs, norms)
    return pairs, norms


def check(text: str, facts: Facts, vocabulary: Vocabulary) -> list[Claim]:
    """The claims of text that facts do not support: terms in text order, then numbers in text order."""
    pairs, norms = _read(text)
    claims: dict[str, Claim] = {}
    if not vocabulary.first.keys().isdisjoint(norms):
        _check_terms(pairs, norms, facts, vocabulary, claims)
    if has_digit(text) or not NUMBER_WORDS.keys().isdisjoint(norms):
        said = quantities(text) if has_digit(text) else []
        said += number_words(pairs, norms)
        for number, unit, surface in said:
            given = facts.quantities
            if (number in facts.numbers) if not unit else ((number, unit) in given or (number, "") in given):
                continue
            term = f"{number} {unit}" if unit else number
            claims.setdefault(term, Claim("number", surface, term))
    return list(claims.values())


def _check_terms(
    pairs: list[Pair], norms: list[str], facts: Facts, vocabulary: Vocabulary, claims: dict[str, Claim]
) -> None:
    first, terms = vocabulary.first, vocabulary.terms
    n, done = len(norms), 0
    for i in [i for i, w in enumerate(norms) if w in first]:
        if i < done:
            continue  # inside a longer term already read ("rose gold" is not also "gold")
        for size in range(min(first[norms[i]], n - i), 0, -1):
            if size == 1:
                key = norms[i]
            elif all(joinable(pairs[k][0]) for k in range(i + 1, i + size)):
                key = " ".join(norms[i : i + size])
                key = PHRASE_SYNONYMS.get(key, key)
            else:
                continue
            kind = terms.get(key)
            if kind is None:
                continue
            done = i + size
            if _is_claim(key, kind, i, done, pairs, norms, vocabulary) and not supported(key, facts, terms):
                surface = "".join(g + w for g, w in pairs[i:done])[len(pairs[i][0]) :]
                claims.setdefault(key, Claim(kind, surface, key))
            break


def _is_claim(
    key: str, kind: Kind, i: int, end: int, pairs: list[Pair], norms: list[str], vocabulary: Vocabulary
) -> bool:
    """Whether a term found at words i..end is meant as its kind here (see the markers in vocab/*.txt)."""
    after = norms[end] if end < len(norms) else ""
    if kind == "brand":
        case = vocabulary.brand_case.get(key, ())
        written = [w for _, w in pairs[i:end]]
        return all(w.isupper() or w[0].isupper() == upper for w, upper in zip(written, case, strict=False))
    rule = RULES.get(key)
    if rule is None:
        return True
    if after in rule.not_before and joinable(pairs[end][0]):
        return False
    if not rule.needs_context:
        return True
    # Next to a term of the same kind ("orange and teal", "red, orange"), before a word of its kind
    # ("orange shade") or before a product type ("orange shirt"): not "orange juice", "olive oil".
    if after in _CONTEXT.get(kind, ()) or after in vocabulary.type_words:
        return True
    terms = vocabulary.terms
    before = norms[i - 1] if i else ""
    if before in _AND and i > 1:
        before = norms[i - 2]
    if after in _AND and end + 1 < len(norms):
        after = norms[end + 1]
    return terms.get(before) == kind or terms.get(after) == kind


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


TypeFlag = Literal["wrong_type", "off_topic"]


def type_check(text: str, facts: Facts, vocabulary: Vocabulary) -> TypeFlag | None:
    """wrong_type: text names product types, never the product's own; off_topic: it names nothing of it."""
    pairs, norms = _read(text)
    if not norms:
        return None  # no words: the "empty" flag's case
    own = vocabulary.type_words.intersection(facts.words)
    if own.isdisjoint(norms) and facts.names.isdisjoint(norms):
        return "off_topic" if own or facts.names else None
    # The product's own type named anywhere makes other types incidental ("pair it with sandals"). The first
    # type named is no better a subject: "top quality", "watch out" and styling tips open real descriptions.
    # Where the facts name no known type there is nothing to compare with.
    if own and own.isdisjoint(norms) and not vocabulary.type_words.isdisjoint(norms):
        return "wrong_type"
    return None


# A sentence ends at . ! ? before a space and a capital, digit or quote, or at a line break; clauses end at
# ";" or a bullet. Abbreviations before a dot ("Rs. 379", "No. 5", "approx. 2 in") end no sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'\u201c(\[A-Z0-9\u00c0-\u00dd])|\s*\n\s*")
_CLAUSE = re.compile(r"\s*([;\u2022\u00b7|\u25aa\u25ba\u2714\u2713\u25c6\u27a4])\s*")
_ABBREVIATIONS = frozenset(
    "rs no nos mr mrs ms dr st vs approx etc inc ltd co fig dept est max min sr jr e.g i.e u.s vol ref".split()
)


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
