"""The claim vocabulary: the packaged word lists, what a catalog taught, what a user changed; JSON both ways."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from enrich.quality.normalize import PHRASE_SYNONYMS, normalize_word, phrase, tokens, vocab_lines

Kind = Literal["number", "colour", "material", "group", "brand", "detail"]
FILE_KINDS: tuple[Kind, ...] = ("colour", "material", "group", "detail")
# What with_changes accepts: the kinds of terms, plus product types.
CHANGE_KINDS = (*FILE_KINDS, "brand", "type")
FORMAT = "enrich.claims/1"
# Where a multi-word term is found: the anchor's offset in the term, the term's length in words, and a word
# next to the anchor (its offset from the anchor, the word).
Anchor = tuple[int, int, int, str]


@dataclass(frozen=True)
class Rule:
    """Where a packaged term is no claim: outside its kind's context, or right before or after certain words."""

    needs_context: bool
    not_before: frozenset[str]
    not_after: frozenset[str]


def _base() -> tuple[dict[str, Kind], dict[str, Rule]]:
    terms: dict[str, Kind] = {}
    rules: dict[str, Rule] = {}
    for kind in FILE_KINDS:
        for line in vocab_lines(f"{kind}.txt"):
            words = line.split()
            marks = [w for w in words if w == "?" or w[0] in "-<"]
            term = phrase(" ".join(w for w in words if w not in marks))
            if term in terms:
                raise ValueError(f"vocab/{kind}.txt: {term!r} is already a {terms[term]} term")
            terms[term] = kind
            if marks:
                not_before = frozenset(normalize_word(w[1:]) for w in marks if w[0] == "-")
                not_after = frozenset(normalize_word(w[1:]) for w in marks if w[0] == "<")
                rules[term] = Rule("?" in marks, not_before, not_after)
    return terms, rules


BASE_TERMS, RULES = _base()
STOPWORDS = frozenset(normalize_word(w) for w in vocab_lines("stopwords.txt"))
MARKETING = frozenset(normalize_word(w) for w in vocab_lines("marketing.txt"))
MEASURES = frozenset(normalize_word(w) for w in vocab_lines("measures.txt"))
COMMON = STOPWORDS | MARKETING | MEASURES


def _implies() -> dict[str, tuple[str, ...]]:
    out = {}
    for line in vocab_lines("implies.txt"):
        fact, _, implied = line.partition(">")
        out[phrase(fact)] = tuple(phrase(w) for w in implied.split(","))
    return out


IMPLIES = _implies()


@dataclass(frozen=True)
class LearnedTerm:
    """A term a catalog's descriptions state where the row's title and attributes do not, with its counts."""

    term: str
    kind: Kind
    stated: int  # rows whose description states it
    unsupported: int  # of those, rows whose title and attributes do not
    as_fact: int  # rows whose title or attribute values state it


@dataclass(frozen=True)
class Thresholds:
    """What makes a term claim-like, and a title head a product type (learn.py says why these values)."""

    min_as_fact: int
    min_stated: int
    min_unsupported_share: float
    min_fact_share: float
    min_type_titles: int
    min_type_share: float
    min_brand_rows: int


@dataclass(frozen=True)
class Vocabulary:
    """The packaged terms plus a catalog's learned terms, brands and product types, and a user's changes."""

    learned: tuple[LearnedTerm, ...] = ()
    brands: Mapping[str, str] = field(default_factory=dict)  # normal form -> the catalog's spelling
    types: Mapping[str, int] = field(default_factory=dict)  # product type -> titles it heads
    added: Mapping[str, Kind] = field(default_factory=dict)  # term -> kind, added by a user
    added_types: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    thresholds: Thresholds | None = None
    # Compiled once: check() looks each word up in these dicts instead of looping over the vocabulary.
    terms: dict[str, Kind] = field(init=False, repr=False, compare=False)
    anchors: dict[str, tuple[Anchor, ...]] = field(init=False, repr=False, compare=False)
    starts: frozenset[str] = field(init=False, repr=False, compare=False)  # one-word terms and anchors
    type_words: frozenset[str] = field(init=False, repr=False, compare=False)
    brand_case: dict[str, str] = field(init=False, repr=False, compare=False)  # "U" or "l" a word

    def __post_init__(self) -> None:
        terms: dict[str, Kind] = dict(BASE_TERMS)
        terms |= {t.term: t.kind for t in self.learned}
        terms |= {b: "brand" for b in self.brands}
        terms |= self.added
        for term in self.removed:
            terms.pop(term, None)
        # Multi-word terms are found at an anchor: their first word that is not a common word ("A World Of
        # Deals", a brand, at "world", not at every "a"; "3/4 sleeve" at "sleeve"). The word next to the anchor
        # rules out most candidates with one comparison before any phrase is built.
        anchors: dict[str, set[Anchor]] = {}
        for term in [*terms, *(v for v, c in PHRASE_SYNONYMS.items() if c in terms)]:
            words = term.split()
            if len(words) > 1:
                at = next((k for k, w in enumerate(words) if len(w) > 1 and w not in COMMON), 0)
                step = 1 if at + 1 < len(words) else -1
                anchors.setdefault(words[at], set()).add((at, len(words), step, words[at + step]))
        brand_case = {b: _case(spelling) for b, spelling in self.brands.items()}
        type_words = (frozenset(self.types) | self.added_types) - self.removed
        object.__setattr__(self, "terms", terms)
        longest_first = {w: tuple(sorted(found, key=lambda a: -a[1])) for w, found in anchors.items()}
        object.__setattr__(self, "anchors", longest_first)
        object.__setattr__(self, "starts", frozenset(t for t in terms if " " not in t) | frozenset(anchors))
        object.__setattr__(self, "type_words", type_words)
        object.__setattr__(self, "brand_case", brand_case)

    def with_changes(
        self, add: Mapping[str, Iterable[str]] | None = None, remove: Iterable[str] = ()
    ) -> Vocabulary:
        """This vocabulary with terms added by kind (colour, material, group, detail, brand, type) and removed."""
        add = add or {}
        unknown = sorted(set(add) - set(CHANGE_KINDS))
        if unknown:
            raise ValueError(f"unknown kind {unknown[0]!r}; choose one of {', '.join(CHANGE_KINDS)}")
        added, brands, types = dict(self.added), dict(self.brands), set(self.added_types)
        for kind, words in add.items():
            for word in words:
                if kind == "brand":
                    brands[phrase(word)] = word
                elif kind == "type":
                    types.add(phrase(word))
                else:
                    added[phrase(word)] = next(k for k in FILE_KINDS if k == kind)
        put = set(added) | set(brands) | types
        removed = (self.removed - put) | {phrase(w) for w in remove}
        return replace(
            self, added=added, brands=brands, added_types=frozenset(types), removed=frozenset(removed)
        )

    def top_terms(self, n: int) -> list[LearnedTerm]:
        """The n learned terms most often unsupported where the catalog's descriptions state them."""
        kept = [t for t in self.learned if t.term not in self.removed]
        return sorted(kept, key=lambda t: (-t.unsupported, -t.stated, t.term))[:n]

    def to_json(self) -> str:
        """The catalog's part of the vocabulary as JSON (the packaged word lists are not repeated)."""
        learned: dict[str, dict[str, dict[str, int]]] = {}
        for t in sorted(self.learned, key=lambda t: (t.kind, t.term)):
            counts = {"stated": t.stated, "unsupported": t.unsupported, "as_fact": t.as_fact}
            learned.setdefault(t.kind, {})[t.term] = counts
        added: dict[str, list[str]] = {}
        for term, kind in sorted(self.added.items()):
            added.setdefault(kind, []).append(term)
        if self.added_types:
            added["type"] = sorted(self.added_types)
        doc = {
            "format": FORMAT,
            "thresholds": None if self.thresholds is None else asdict(self.thresholds),
            "learned": learned,
            "brands": sorted(self.brands.values()),
            "types": dict(sorted(self.types.items(), key=lambda kv: (-kv[1], kv[0]))),
            "added": added,
            "removed": sorted(self.removed),
        }
        return json.dumps(doc, ensure_ascii=False, indent=1)

    @staticmethod
    def from_json(text: str) -> Vocabulary:
        """A vocabulary written by to_json, over this package's word lists."""
        doc: dict[str, Any] = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a claim vocabulary ({FORMAT}): format is {doc.get('format')!r}")
        kinds = set(doc["learned"]) | set(doc["added"])
        if not kinds <= set(CHANGE_KINDS):
            raise ValueError(f"unknown kind {sorted(kinds - set(CHANGE_KINDS))[0]!r} in a claim vocabulary")
        learned = tuple(
            LearnedTerm(term, kind, c["stated"], c["unsupported"], c["as_fact"])
            for kind, terms in doc["learned"].items()
            for term, c in terms.items()
        )
        added = {term: kind for kind, terms in doc["added"].items() if kind != "type" for term in terms}
        return Vocabulary(
            learned=learned,
            brands={phrase(b): b for b in doc["brands"]},
            types=dict(doc["types"]),
            added=added,
            added_types=frozenset(doc["added"].get("type", [])),
            removed=frozenset(doc["removed"]),
            thresholds=None if doc["thresholds"] is None else Thresholds(**doc["thresholds"]),
        )


def _case(spelling: str) -> str:
    """How a brand must be written, a letter a word: "U" capitalised, "l" lower case, "." either (a function word).

    A brand is named only where the text capitalises it as the catalog does (or in capitals): "Pilot" the pen
    brand, not "pilot light"; "Small Parts", not "small parts"; "uxcell" as it is spelled; "A World of Deals".
    """
    pairs, norms = tokens(spelling)
    out = []
    for (_, word), norm in zip(pairs, norms, strict=True):
        mark = "." if norm in STOPWORDS else "U" if word[0].isupper() else "l"
        out.append(mark * len(norm.split()))
    return "".join(out)


def base_vocabulary() -> Vocabulary:
    """The packaged word lists alone: no catalog brands, product types or learned terms."""
    return _BASE


_BASE = Vocabulary()
