"""One pass over a run's OUTPUT: figures over every row, and the rows a page embeds (every row with a flag or
an error up to a cap, and a seeded uniform sample of the others), in memory bounded by the window and the caps."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from enrich.review.source import Layout, windows

LENGTH_BUCKET = 10  # generated lengths are counted in buckets of this many characters
_MAX_WORDS = 50_000  # distinct unsupported words kept while counting; the rarest go first


@dataclass
class _BottomK:
    """The size rows with the smallest random keys seen so far: a uniform sample without replacement that
    needs no second pass and, for a given seed, is the same whatever the window size.

    Rows are kept as Python dicts: a polars frame filtered down to a few rows still holds the whole window's
    string buffers, so kept frames would hold every window that gave a row (1M rows: 1.4 GB instead of 0.3)."""

    size: int
    seen: int = 0
    heap: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)  # (-key, row, row's values)

    def offer(self, frame: pl.DataFrame) -> None:
        self.seen += frame.height
        if self.size == 0 or frame.height == 0:
            return
        if len(self.heap) >= self.size:
            frame = frame.filter(pl.col("__key") < -self.heap[0][0])
        if frame.height > self.size:
            frame = frame.bottom_k(self.size, by="__key")
        for values in frame.to_dicts():
            item = (-values.pop("__key"), values["row"], values)
            if len(self.heap) < self.size:
                heapq.heappush(self.heap, item)
            elif item[0] > self.heap[0][0]:
                heapq.heapreplace(self.heap, item)

    def rows(self) -> list[dict[str, Any]]:
        return [values for _, _, values in self.heap]


@dataclass
class Summary:
    """Figures over every row of OUTPUT, and the rows chosen for the page."""

    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    finish: Counter[str] = field(default_factory=Counter)
    tokens: Counter[int] = field(default_factory=Counter)  # output tokens -> rows
    lengths: Counter[int] = field(default_factory=Counter)  # generated chars // LENGTH_BUCKET -> rows
    generated: int = 0  # rows with a generated text
    generated_chars: int = 0
    content_rows: int = 0  # rows with an existing description
    content_chars: int = 0
    unsupported: Counter[str] = field(default_factory=Counter)  # unsupported word -> rows
    unsupported_rows: int = 0
    attention: int = 0  # rows flagged or in error, or carrying a flag (kept by policy) or an unsupported word
    others: int = 0
    chosen: list[dict[str, Any]] = field(default_factory=list)  # in row order

    @property
    def attention_shown(self) -> int:
        return sum(1 for r in self.chosen if r["attention"])


def summarize(output: Path, shape: Layout, max_flagged: int, sample: int, seed: int) -> Summary:
    """Read OUTPUT once, a window at a time."""
    summary = Summary()
    pools = (_BottomK(max_flagged), _BottomK(sample))
    rng = random.Random(seed)
    for frame in windows(output, shape):
        start = summary.rows
        frame = _complete(frame).with_columns(pl.int_range(start, start + frame.height).alias("row"))
        _count(summary, frame)
        keys = pl.Series("__key", [rng.random() for _ in range(frame.height)], pl.Float64)
        frame = frame.with_columns(keys, _needs_attention().alias("attention"))
        pools[0].offer(frame.filter(pl.col("attention")))
        pools[1].offer(frame.filter(~pl.col("attention")))
        if len(summary.unsupported) > _MAX_WORDS:
            summary.unsupported = Counter(dict(summary.unsupported.most_common(_MAX_WORDS // 2)))
    summary.attention, summary.others = pools[0].seen, pools[1].seen
    summary.chosen = sorted((*pools[0].rows(), *pools[1].rows()), key=lambda values: int(values["row"]))
    return summary


def _complete(frame: pl.DataFrame) -> pl.DataFrame:
    """Every page field present, null or empty where OUTPUT lacks its column (an older output)."""
    missing: list[pl.Expr] = []
    for name in ("id", "title", "content", "text", "finish", "key"):
        if name not in frame.columns:
            missing.append(pl.lit(None, pl.String).alias(name))
    for name in ("flags", "unsupported"):
        if name not in frame.columns:
            missing.append(pl.lit([], pl.List(pl.String)).alias(name))
    if "tokens" not in frame.columns:
        missing.append(pl.lit(None, pl.Int64).alias("tokens"))
    frame = frame.with_columns(missing) if missing else frame
    # Null lists (a row that was never generated) count as no flags.
    return frame.with_columns(pl.col("flags", "unsupported").fill_null(pl.lit([], pl.List(pl.String))))


def _needs_attention() -> pl.Expr:
    return (
        pl.col("status").is_in(["flagged", "error"])
        | (pl.col("flags").list.len() > 0)
        | (pl.col("unsupported").list.len() > 0)
    )


def _count(summary: Summary, frame: pl.DataFrame) -> None:
    summary.rows += frame.height
    summary.statuses.update(_value_counts(frame["status"].fill_null("(none)")))
    summary.flags.update(_value_counts(frame["flags"].list.unique().explode().drop_nulls()))
    summary.finish.update(_value_counts(frame["finish"].drop_nulls()))
    summary.tokens.update(_value_counts(frame["tokens"].drop_nulls()))
    lengths = frame["text"].drop_nulls().str.len_chars()
    summary.generated += lengths.len()
    summary.generated_chars += int(lengths.sum() or 0)
    summary.lengths.update(_value_counts(lengths // LENGTH_BUCKET))
    content = frame["content"].drop_nulls().str.len_chars()
    summary.content_rows += content.len()
    summary.content_chars += int(content.sum() or 0)
    words = frame["unsupported"].list.unique().explode().drop_nulls()
    summary.unsupported.update(_value_counts(words))
    summary.unsupported_rows += int((frame["unsupported"].list.len() > 0).sum())


def _value_counts(series: pl.Series) -> dict[Any, int]:
    if series.len() == 0:
        return {}
    counts = series.value_counts()
    return dict(zip(counts[series.name].to_list(), counts["count"].to_list(), strict=True))
