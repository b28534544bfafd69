"""Training data for `finetune`: read, clean (with a count per drop), split and tokenize catalog rows."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from enrich.catalog.source import Source
from enrich.errors import ConfigError, InputError
from enrich.model.engines import special_tokens
from enrich.model.prompts import ChatRenderer, Template, build_training_text, product_block, stated_attributes
from enrich.quality.claims import facts, faithful
from enrich.quality.learn import learn
from enrich.quality.vocabulary import Vocabulary, base_vocabulary

# Placeholders that vendors put where a description should be; training on them teaches the model to emit them.
_PLACEHOLDERS = {
    "value not found",
    "n/a",
    "na",
    "none",
    "null",
    "nan",
    "tbd",
    "see description",
    "no description",
}
_LETTER = re.compile(r"[^\W\d_]")
_CODE = re.compile(r"^[A-Za-z0-9\-_]{6,}$")  # a lone code: an ASIN, a SKU, a keyboard mash (DFGGHFHHFFG)


@dataclass
class Example:
    """One cleaned row: the title, the attribute values the prompt states, the description, and its tokens once
    tokenized."""

    title: str
    description: str
    attributes: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    input_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)

    @property
    def block(self) -> str:
        """What the prompt says of the product (model.prompts.product_block)."""
        return product_block(self.title, self.attributes)


@dataclass
class TrainData:
    """The split, tokenized data, what cleaning did, and the claim vocabulary learned from the rows."""

    train: list[Example]
    val: list[Example]
    counts: dict[str, Any]
    fingerprint: str
    vocabulary: Vocabulary | None = None
    faithful: dict[str, Any] = field(default_factory=dict)  # what cutting the targets did, with examples


def read_titles_and_descriptions(source: Source, with_id: bool = False) -> dict[str, list[Any]]:
    """Titles, descriptions, stated attributes (and ids) of a catalog in Parquet, CSV or JSON lines, by role."""
    columns = source.columns
    if columns.content is None:
        raise ConfigError("this command needs a description column: pass --content-col")
    lf = source.scan()
    roles = {"title": columns.title, "content": columns.content}
    # The default id column is optional, as in `run`: without it the caller uses row positions.
    default_missing = columns.id == "id" and "id" not in lf.collect_schema().names()
    if with_id and columns.id and not default_missing:
        roles["id"] = columns.id
    source.require_columns(lf, dict(roles))
    for column, label in source.attributes:
        if column not in lf.collect_schema().names():
            raise InputError(
                f"{source.path}: no column {column!r} for the attribute {label!r}; map one with --attr"
            )
    out: dict[str, list[Any]] = {role: [] for role in (*roles, "attributes")}
    wanted = list(dict.fromkeys([*roles.values(), *(c for c, _ in source.attributes)]))
    for window in source.window_lists(wanted, 65536):
        n = len(window[wanted[0]])
        for role, name in roles.items():
            out[role].extend(window[name])
        out["attributes"].extend(stated_attributes(source.attributes, window, n) or [[] for _ in range(n)])
    if not out["title"]:
        raise InputError(f"{source.path}: no rows")
    return out


def junk_reason(title: str, text: str, min_chars: int) -> str | None:
    """Why a description is not worth learning ('empty' or 'junk'), or None when it is."""
    if not text.strip() or not title.strip():
        return "empty"
    low = text.strip().lower()
    if (
        len(low) < min_chars
        or not _LETTER.search(low)
        or low in _PLACEHOLDERS
        or low == title.strip().lower()
        or _CODE.match(text.strip())
    ):
        return "junk"
    return None


def clean(
    titles: list[Any],
    texts: list[Any],
    min_chars: int,
    max_rows: int | None,
    attributes: list[list[tuple[str, str]]] | None = None,
) -> tuple[list[Example], Counter[str]]:
    """Drop empty, junk and duplicate descriptions; a repeated description keeps its first row only."""
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[Example] = []
    stated = attributes or [[] for _ in titles]
    for title, text, attrs in zip(titles, texts, stated, strict=True):
        title = title.strip() if isinstance(title, str) else ""
        text = text.strip() if isinstance(text, str) else ""
        reason = junk_reason(title, text, min_chars)
        # Vendor boilerplate repeated over many products would be learnt as the answer to everything.
        if reason is None and text in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(text)
        kept.append(Example(title, text, attrs))
        if max_rows is not None and len(kept) >= max_rows:
            break
    return kept, dropped


JUNK_CHARS = 20  # under this a description says nothing
LONG_CHARS = 300  # "auto" asks at most this much of a description


def longer_half(examples: list[Example]) -> tuple[list[Example], int]:
    """Descriptions of at least min(300 characters, the median length): the full-length ones where a catalog
    has them, the longer half where its descriptions are all short, so the data never empties."""
    if not examples:
        return examples, 0
    lengths = sorted(len(e.description) for e in examples)
    bar = min(LONG_CHARS, lengths[len(lengths) // 2])
    kept = [e for e in examples if len(e.description) >= bar]
    return kept, len(examples) - len(kept)


def tokenize(
    examples: list[Example],
    tokenizer: Any,
    template: Template,
    eos: str,
    render_chat: ChatRenderer | None,
    max_seq_length: int,
    max_response_tokens: int | None = None,
    specials: tuple[str, ...] = (),
) -> tuple[list[Example], dict[str, int]]:
    """Token ids and completion masks, as `run` tokenizes prompts (no added special tokens, and the tokenizer's
    special-token strings in titles and descriptions neutralised).

    Drops, and counts, rows longer than max_seq_length (`too_long`) and rows whose description with its EOS
    is longer than max_response_tokens (`long_response`): a model that never saw a response longer than what
    `run` generates learns to end within it."""
    kept: list[Example] = []
    dropped = {"too_long": 0, "long_response": 0}
    for ex in examples:
        prompt, completion = build_training_text(
            ex.block, ex.description, template, eos, render_chat, specials
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        if len(full_ids) > max_seq_length:
            dropped["too_long"] += 1
            continue
        # The completion starts where the two tokenizations diverge (a merge across the boundary moves it left).
        start = next(
            (i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b), len(prompt_ids)
        )
        if max_response_tokens is not None and len(full_ids) - start > max_response_tokens:
            dropped["long_response"] += 1
            continue
        ex.input_ids = full_ids
        ex.completion_mask = [0] * start + [1] * (len(full_ids) - start)
        kept.append(ex)
    return kept, dropped


FAITHFUL_EXAMPLES = 3  # cut descriptions shown in the training report


def faithful_targets(
    examples: list[Example], vocabulary: Vocabulary, floor: int
) -> tuple[list[Example], dict[str, Any]]:
    """Each description cut to the sentences (or clauses) whose claims the row's title and attributes support:
    a model learns to invent from references that state what only the product's pictures show. Rows whose cut
    description is shorter than floor are dropped. Returns the rows kept and what the cut did."""
    kept: list[Example] = []
    stats: dict[str, Any] = {
        "sentences_kept": 0,
        "sentences_cut": 0,
        "rows_cut": 0,
        "dropped": 0,
        "examples": [],
    }
    for ex in examples:
        cut = faithful(ex.description, facts(ex.title, ex.attributes), vocabulary)
        stats["sentences_kept"] += len(cut.sentences_kept)
        stats["sentences_cut"] += len(cut.sentences_cut)
        if cut.sentences_cut:
            stats["rows_cut"] += 1
            if len(stats["examples"]) < FAITHFUL_EXAMPLES and cut.text:
                stats["examples"].append({"title": ex.title, "before": ex.description, "after": cut.text})
        if len(cut.text) < floor:
            stats["dropped"] += 1
            continue
        ex.description = cut.text
        kept.append(ex)
    return kept, stats


def split(
    examples: list[Example], val_size: float, seed: int, path: str
) -> tuple[list[Example], list[Example]]:
    """A seeded train/validation split; val_size below 1 is a share, else a row count."""
    n_val = round(len(examples) * val_size) if val_size < 1 else int(val_size)
    n_val = max(1, min(n_val, len(examples) - 1))
    if len(examples) < 2:
        raise InputError(
            f"{path}: {len(examples)} usable rows after cleaning; fine-tuning needs at least 2 (see the drop counts)"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    return train, val


def fingerprint(examples: list[Example]) -> str:
    """A hash of the exact training text, recorded in enrich.json."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.block}\x1f{ex.description}\x1e".encode())
    return h.hexdigest()[:16]


def to_dataset(examples: list[Example]) -> Any:
    """A datasets.Dataset of input_ids and completion_mask (trl builds the labels from the mask)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in examples],
            "completion_mask": [e.completion_mask for e in examples],
        }
    )


def prepare(
    rows: dict[str, list[Any]],
    path: str,
    tokenizer: Any,
    template: Template,
    eos: str,
    max_seq_length: int,
    val_size: float,
    seed: int,
    min_chars: int | str,
    max_rows: int | None,
    max_response_tokens: int | None = None,
    targets: str = "as-is",
) -> TrainData:
    """Clean, learn the catalog's claim vocabulary, cut the targets to what the rows support (targets
    "faithful"), tokenize and split rows of read_titles_and_descriptions; counts say how many rows each step
    dropped."""
    titles, texts = rows["title"], rows["content"]
    render = getattr(tokenizer, "apply_chat_template", None) if template.prompt is None else None
    if template.prompt is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the base model's tokenizer has no chat template; pass --template alpaca")
    floor = JUNK_CHARS if min_chars == "auto" else int(min_chars)
    examples, dropped = clean(titles, texts, floor, max_rows, rows.get("attributes"))
    vocabulary = learn(((e.title, e.attributes, e.description) for e in examples), base_vocabulary())
    cut: dict[str, Any] = {}
    if targets == "faithful":
        examples, cut = faithful_targets(examples, vocabulary, floor)
        dropped["unfaithful"] = cut["dropped"]
    if min_chars == "auto":
        examples, dropped["short"] = longer_half(examples)
    examples, by_length = tokenize(
        examples,
        tokenizer,
        template,
        eos,
        render,
        max_seq_length,
        max_response_tokens,
        special_tokens(tokenizer),
    )
    dropped.update(by_length)
    if len(examples) < 2:
        gone = ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
        raise InputError(
            f"{path}: {len(examples)} usable rows of {len(titles)} after cleaning (dropped: {gone or 'none'}); "
            "fine-tuning needs at least 2"
        )
    train, val = split(examples, val_size, seed, path)
    reasons = ("empty", "junk", "duplicate", "unfaithful", "short", "too_long", "long_response")
    counts = {
        "rows": len(titles),
        "dropped": {k: dropped.get(k, 0) for k in reasons},
        "kept": len(examples),
        "train": len(train),
        "val": len(val),
        "train_tokens": sum(len(e.input_ids) for e in train),
        "train_completion_tokens": sum(sum(e.completion_mask) for e in train),
    }
    return TrainData(train, val, counts, fingerprint(train), vocabulary, cut)
