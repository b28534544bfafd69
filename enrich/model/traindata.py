"""Training data for `finetune`: read, clean (with a count per drop), split and tokenize catalog rows."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrich.config import Columns
from enrich.errors import ConfigError, InputError
from enrich.model.engines import special_tokens
from enrich.model.prompts import ChatRenderer, Template, build_training_text

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
    """One cleaned row: the title and description, and its tokens once tokenized."""

    title: str
    description: str
    input_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)


@dataclass
class TrainData:
    """The split, tokenized data and what cleaning did."""

    train: list[Example]
    val: list[Example]
    counts: dict[str, Any]
    fingerprint: str


def read_titles_and_descriptions(
    path: str, fmt: str, columns: Columns, with_id: bool = False, separator: str = ","
) -> dict[str, list[Any]]:
    """Titles and descriptions (and ids) from Parquet, CSV or JSONL; source.py reads Parquet and CSV."""
    from enrich.catalog import source

    if columns.content is None:
        raise ConfigError("this command needs a description column: pass --content-col")
    kind = (
        fmt if fmt != "auto" else ("jsonl" if Path(path).suffix.lower() in (".jsonl", ".ndjson") else "auto")
    )
    lf = _scan_jsonl(path) if kind == "jsonl" else source.scan(path, kind, separator)
    roles = {"title": columns.title, "content": columns.content}
    # The default id column is optional, as in `run`: without it the caller uses row positions.
    default_missing = columns.id == "id" and "id" not in lf.collect_schema().names()
    if with_id and columns.id and not default_missing:
        roles["id"] = columns.id
    checked: dict[str, str | None] = dict(roles)
    source.require_columns(lf, path, checked, separator)
    out: dict[str, list[Any]] = {role: [] for role in roles}
    for window in source.iter_window_lists(lf, list(roles.values()), 65536, path):
        for role, name in roles.items():
            out[role].extend(window[name])
    if not out["title"]:
        raise InputError(f"{path}: no rows")
    return out


# The old name, kept while tests/test_separator.py imports it; remove with that import.
read_rows = read_titles_and_descriptions


def _scan_jsonl(path: str) -> Any:
    import polars as pl  # source.py has no JSONL reader; this is the one other place polars is used

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        lf = pl.scan_ndjson(path, infer_schema_length=10000)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise InputError(f"{path}: cannot read it as JSONL: {str(err).strip().splitlines()[0]}") from None
    return lf


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
    titles: list[Any], texts: list[Any], min_chars: int, max_rows: int | None
) -> tuple[list[Example], Counter[str]]:
    """Drop empty, junk and duplicate descriptions; a repeated description keeps its first row only."""
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[Example] = []
    for title, text in zip(titles, texts, strict=True):
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
        kept.append(Example(title, text))
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
            ex.title, ex.description, template, eos, render_chat, specials
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
        h.update(f"{ex.title}\x1f{ex.description}\x1e".encode())
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
) -> TrainData:
    """Clean, tokenize and split rows of read_titles_and_descriptions; counts say how many rows each step dropped."""
    titles, texts = rows["title"], rows["content"]
    render = getattr(tokenizer, "apply_chat_template", None) if template.prompt is None else None
    if template.prompt is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the base model's tokenizer has no chat template; pass --template alpaca")
    examples, dropped = clean(titles, texts, JUNK_CHARS if min_chars == "auto" else int(min_chars), max_rows)
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
    reasons = ("empty", "junk", "duplicate", "short", "too_long", "long_response")
    counts = {
        "rows": len(titles),
        "dropped": {k: dropped.get(k, 0) for k in reasons},
        "kept": len(examples),
        "train": len(train),
        "val": len(val),
        "train_tokens": sum(len(e.input_ids) for e in train),
        "train_completion_tokens": sum(sum(e.completion_mask) for e in train),
    }
    return TrainData(train, val, counts, fingerprint(train))
