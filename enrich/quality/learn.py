"""A catalog's own claim vocabulary: the terms its descriptions state where titles and attributes do not."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from enrich.quality.claims import Attributes, facts, is_brand_label, supported
from enrich.quality.normalize import BREAK, NUMBER_WORDS, PHRASE_SYNONYMS, UNITS, phrase, tokens, words
from enrich.quality.vocabulary import (
    COMMON,
    FILE_KINDS,
    MARKETING,
    MEASURES,
    STOPWORDS,
    Kind,
    LearnedTerm,
    Thresholds,
    Vocabulary,
)

Row = tuple[str, Attributes, str | None]  # (title, attributes, description)

# A term is claim-like when
# - the catalog uses it as a fact: it is in the titles or attribute values of at least min_as_fact rows;
# - descriptions state it: at least min_stated of them;
# - where descriptions state it, the row's title and attributes lack it in at least min_unsupported_share of
#   the rows: words that descriptions mostly echo from the title ("love" of "Love Ring", "wedding") are out;
# - the catalog states it as a fact at least min_fact_share of the times it states it at all (rows as fact
#   over rows as fact plus rows unsupported): a term that the catalog names as a fact at least as often as
#   its descriptions state it without support is a facet of its products ("knee length", "borosilicate");
#   one mostly said without support is vocabulary of description writing ("include", "application",
#   "standard" in Amazon's descriptions: its titles are keyword lists that use almost any word in 5 rows).
# Measured on the real catalogs (bench/claims.py prints the learned terms): Flipkart's 599 rows learn formal,
# print, artificial, knee, knee length, aroma and regular fit besides packaged terms (black, white, red, brown,
# polyester, rubber: learned too, with their counts); Amazon's 6,680 rows learn about 150, such as ink
# cartridge, chisel, insulated, crimp, borosilicate, rotary, sterile and rechargeable, and some noise of its
# keyword-list titles (weekly, inspection, qty). The two shares at 0.5 are majorities, not fitted values; 5 rows
# of evidence each way keep out one seller's wording (at 3, "pot", "band", "system" and "sized" of a few
# Flipkart rows came in). One row is enough for a brand: it is a fact of the catalog wherever it appears.
DEFAULT_THRESHOLDS = Thresholds(
    min_as_fact=5,
    min_stated=5,
    min_unsupported_share=0.5,
    min_fact_share=0.5,
    min_type_titles=3,
    min_type_share=0.3,
    min_brand_rows=1,
)
# Brand values that name no brand.
_NO_BRAND = frozenset(
    {"generic", "unbranded", "unknown", "none", "na", "n a", "other", "no brand", "oem", "assorted"}
)
# A title's head is before the first of these: "Cycling Shorts, Pack of 3", "Watch - For Men", "Mug (350 ml)".
_TITLE_CUT = re.compile(r"\s+(?:for|with|para|com)\s+|[(,|]|\s[-\u2013\u2014]\s", re.IGNORECASE)
# Descriptions' n-grams seen once and never as a fact are dropped every this many rows, which bounds the
# counters on a catalog of millions of rows; counts are exact below it.
_PRUNE_EVERY = 100_000


def _grams(text: str) -> set[str]:
    """The normalised words and two-word phrases of text (no phrase across punctuation)."""
    out: set[str] = set()
    previous = ""
    for word in words(text):
        if word == BREAK:
            previous = ""
            continue
        out.add(word)
        if previous:
            pair = f"{previous} {word}"
            out.add(PHRASE_SYNONYMS.get(pair, pair))
        previous = word
    return out


def _claim_like(term: str) -> bool:
    """Whether a term could be a claim at all: words, no function, marketing, number or unit words."""
    parts = term.split()
    if len(parts) == 1 and (len(term) < 3 or term in MEASURES):
        return False
    return all(
        w.isalpha() and w not in STOPWORDS and w not in MARKETING and w not in NUMBER_WORDS and w not in UNITS
        for w in parts
    )


# Endings of adjectives and participles that end many titles ("Assorted", "Adjustable", "Graduated").
_NOT_NOUN = ("ed", "able", "ible", "ous", "ive", "ful", "less")


def head_noun(title: str, vocabulary: Vocabulary, brand: str = "") -> str | None:
    """The product type a title heads with: its last noun-like word before "for", "with", "(", ",", " - ", "|"."""
    pairs, norms = tokens(_TITLE_CUT.split(title, maxsplit=1)[0])
    own = set(tokens(brand)[1])
    for (_, raw), norm in zip(reversed(pairs), reversed(norms), strict=True):
        # Colours, materials, groups and details qualify a head ("Round Neck", "Gold"); model codes, sizes and
        # the brand follow it ("Watch 3045", "Shoes UK 8", "Beaker Karter Scientific").
        if (
            raw.isalpha()
            and _claim_like(norm)
            and norm not in vocabulary.terms
            and norm not in own
            and not (len(norm) > 5 and norm.endswith(_NOT_NOUN))
        ):
            return norm
    return None


@dataclass
class _Tally:
    """What learning counts over a catalog's rows: terms stated by descriptions (and without support), terms
    of the facts, the titles' head nouns and words, brands' rows and their spelling."""

    stated: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)
    as_fact: Counter[str] = field(default_factory=Counter)
    heads: Counter[str] = field(default_factory=Counter)
    in_titles: Counter[str] = field(default_factory=Counter)
    brand_rows: Counter[str] = field(default_factory=Counter)
    spelling: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row, base: Vocabulary) -> None:
        title, attributes, description = row
        row_facts = facts(title, attributes)
        fact_grams = _grams(title)
        brand = ""
        for label, value in attributes:
            fact_grams |= _grams(value)
            if is_brand_label(label) and value.strip():
                brand = value.strip()
                self.brand_rows[phrase(brand)] += 1
                self.spelling.setdefault(phrase(brand), brand)
        self.as_fact.update(fact_grams)
        self.in_titles.update(set(words(title)))
        head = head_noun(title, base, brand)
        if head is not None:
            self.heads[head] += 1
        if description:
            grams = _grams(description)
            self.stated.update(grams)
            self.unsupported.update(g for g in grams if not supported(g, row_facts, base.terms))

    def prune(self) -> None:
        """Forget the terms stated once and never a fact: a catalog of millions keeps its counters bounded."""
        for gram in [g for g, c in self.stated.items() if c == 1 and g not in self.as_fact]:
            del self.stated[gram]
            self.unsupported.pop(gram, None)


def learn(rows: Iterable[Row], base: Vocabulary, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Vocabulary:
    """base plus the claim terms, brands and product types of a catalog's (title, attributes, description) rows."""
    tally = _Tally()
    for n, row in enumerate(rows, 1):
        tally.add(row, base)
        if n % _PRUNE_EVERY == 0:
            tally.prune()
    brands = _brands(tally, base, thresholds)
    learned = _terms(tally, base, thresholds, brands)
    # New counts replace a term's old ones; the order of to_json, so that a round trip compares equal.
    merged = {t.term: t for t in (*base.learned, *learned)}
    return Vocabulary(
        learned=tuple(sorted(merged.values(), key=lambda t: (t.kind, t.term))),
        brands={**base.brands, **brands},
        types={**base.types, **_types(tally, thresholds)},
        added=base.added,
        added_types=base.added_types,
        removed=base.removed,
        thresholds=thresholds,
    )


def _brands(tally: _Tally, base: Vocabulary, thresholds: Thresholds) -> dict[str, str]:
    # A brand whose name the descriptions use in more than twice as many rows as the brand has is a word
    # first ("Need", "Ideal", "Universal"): checking it would flag the word in every other product's text.
    # (Only brands of one or two words are counted in descriptions; longer names are no everyday words.)
    return {
        b: tally.spelling[b]
        for b, c in tally.brand_rows.items()
        if c >= thresholds.min_brand_rows
        and _usable_brand(b)
        and b not in base.terms
        and b not in tally.heads
        and tally.stated[b] <= 2 * c
    }


def _types(tally: _Tally, thresholds: Thresholds) -> dict[str, int]:
    # A word that heads few of the titles it is in mostly qualifies other products ("Ink Cartridge", "Paper
    # Clips", "Clear Tape"): naming it says little about what a text describes.
    return {
        t: c
        for t, c in tally.heads.items()
        if c >= thresholds.min_type_titles and c >= thresholds.min_type_share * tally.in_titles[t]
    }


def _terms(
    tally: _Tally, base: Vocabulary, thresholds: Thresholds, brands: dict[str, str]
) -> list[LearnedTerm]:
    # A learned term with a brand's first word is the brand, written in part ("ACCO", "Texas" of Texas Instruments).
    brand_heads = {b.split()[0] for b in (*brands, *base.brands)}
    learned = []
    for term, count in tally.stated.items():
        as_fact, unsupported = tally.as_fact[term], tally.unsupported[term]
        if (
            count < thresholds.min_stated
            or as_fact < thresholds.min_as_fact
            or unsupported < thresholds.min_unsupported_share * count
            or as_fact < thresholds.min_fact_share * (as_fact + unsupported)
            or tally.heads[term] >= thresholds.min_type_titles  # a product noun: type_check's concern
            or term in brands
            or not _claim_like(term)
            or (term not in base.terms and not brand_heads.isdisjoint(term.split()))
        ):
            continue
        parts = term.split()
        kinds = [base.terms[w] for w in parts if base.terms.get(w) in FILE_KINDS]
        if len(parts) > 1 and len(kinds) == len(parts):
            continue  # "cotton lycra", "navy red": each word is checked on its own already
        kind: Kind = base.terms.get(term) or (kinds[0] if kinds else "detail")
        learned.append(LearnedTerm(term, kind, count, unsupported, as_fact))
    return learned


def _usable_brand(brand: str) -> bool:
    """A brand value that names a brand that text can be checked for."""
    parts = brand.split()
    # A brand of common words only ("All Quality", "Design Shop") cannot be told from the words.
    return (
        0 < len(parts) <= 4 and brand not in _NO_BRAND and any(len(w) > 1 and w not in COMMON for w in parts)
    )
