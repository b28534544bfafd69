"""Faithfulness of `enrich eval`: the rows whose text makes claims the product's facts do not support (per
kind), names another product or none, how often the text states each attribute it was given; and the real
descriptions cut to what those facts support, to score against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, get_args

from enrich.quality.claims import Attributes, Claim, Facts, facts, faithful
from enrich.quality.normalize import has_digit, phrase, quantities
from enrich.quality.vocabulary import STOPWORDS, Kind, Vocabulary

KINDS: tuple[Kind, ...] = get_args(Kind)


def states(value: str, said: Facts) -> bool | None:
    """Whether a text states an attribute's value, said being the text's facts (claims.facts of the text alone):
    every word of the value other than function words is among the text's words, normalised as the claim checker
    reads both (case, plurals, hyphens, synonyms, phrase variants), in any order; or, read with its numbers
    compared as numbers (1,499 is 1499.0; "three" is 3; a number's unit is not required: 1" states "1 inch"),
    its numbers are among the text's numbers and its other words among its words. None where the value has
    nothing to state (only function words: "No", "N/A")."""
    whole = [w for w in phrase(value).split() if w not in STOPWORDS]
    if whole and all(w in said.words for w in whole):
        return True  # as written, which keeps names with digits whole: the brand "3M" is one word, not 3 m
    numbers: set[str] = set()
    rest = value
    if has_digit(value):
        found = quantities(value)
        numbers = {number for number, _, _ in found}
        for _, _, written in found:  # the number and its unit: what is left are the value's words
            rest = rest.replace(written, " ", 1)
    content = [w for w in phrase(rest).split() if w not in STOPWORDS and not has_digit(w)]
    if not whole and not numbers and not content:
        return None
    return numbers <= said.numbers and all(w in said.words for w in content)


def attribute_coverage(
    texts: Sequence[str], attributes: Sequence[Attributes], labels: Sequence[str]
) -> dict[str, float | None]:
    """Per label, the share of rows with a value for it whose text states that value; None where no row has one."""
    rows: Counter[str] = Counter()
    stated: Counter[str] = Counter()
    for text, pairs in zip(texts, attributes, strict=True):
        if not pairs:
            continue
        said = facts(text)
        for label, value in pairs:
            found = states(value, said)
            if found is not None:
                rows[label] += 1
                stated[label] += found
    return {label: round(stated[label] / rows[label], 4) if rows[label] else None for label in labels}


def faithfulness(
    texts: Sequence[str],
    claims: Sequence[Sequence[Claim]],
    flags: Sequence[Sequence[str]],
    attributes: Sequence[Attributes],
    labels: Sequence[str],
) -> dict[str, Any]:
    """The faithfulness metrics of one model's texts: shares of rows with an unsupported claim (any, and of each
    kind), of wrong_type and off_topic rows, and the attribute coverage per label and its mean over labels."""
    n = len(texts)
    if n == 0:
        return {}

    def share(count: int) -> float:
        return round(count / n, 4)

    coverage = attribute_coverage(texts, attributes, labels) if labels else {}
    known = [c for c in coverage.values() if c is not None]
    return {
        "unsupported_claim_rate": share(sum(1 for found in claims if found)),
        "claim_rates": {
            k: share(sum(1 for found in claims if any(c.kind == k for c in found))) for k in KINDS
        },
        "wrong_type_rate": share(sum(1 for f in flags if "wrong_type" in f)),
        "off_topic_rate": share(sum(1 for f in flags if "off_topic" in f)),
        "attribute_coverage": round(sum(known) / len(known), 4) if known else None,
        "attribute_coverage_by_label": coverage,
    }


def faithful_references(
    refs: Sequence[str], titles: Sequence[str], attributes: Sequence[Attributes], vocabulary: Vocabulary
) -> list[str]:
    """Each real description cut to the sentences and clauses that its title and attributes support, as
    fine-tuning cuts its targets (--targets faithful): what a faithful model can be expected to write."""
    return [
        faithful(ref, facts(title, pairs), vocabulary).text.strip()
        for ref, title, pairs in zip(refs, titles, attributes, strict=True)
    ]
