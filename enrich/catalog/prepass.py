"""The one read of the input before a run's windows: how many rows, which rows repeat an earlier row's id, and
(for incremental runs) every row's content key. One pass where there used to be three."""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrich.catalog.source import Source
from enrich.files import atomic_file

# (first row of the window, the window's columns as lists) -> the rows' content keys
KeyFunction = Callable[[int, dict[str, list[Any]]], list[str]]

_READ_ROWS = 65536  # rows per batch of the pass: a few MB of ids and titles
_BUCKET_ROWS = 1 << 18  # ids per bucket file of the duplicate check: 4 MiB of (hash, row) pairs
_PAIR = np.dtype([("h", "<u8"), ("r", "<i8")])


@dataclass(frozen=True)
class Prepass:
    """What the pass found."""

    rows: int  # rows the run processes (the limit applied)
    duplicates: dict[int, int]  # row -> the first row with its id
    keys: Path | None  # (__row, enrich_key) per row in input order, where asked for


def prepass(
    source: Source, scratch: Path, keys_of: KeyFunction | None = None, keys_to: Path | None = None
) -> Prepass:
    """Read the input once for the rows' count, their duplicate ids (source.columns.id) and, with keys_of, their
    content keys (written to keys_to). Memory holds a batch and one bucket of id hashes, never every id.

    A Parquet file counts its rows in its footer: without an id column or keys nothing is read. A CSV is parsed
    whole, every column, so that bad bytes anywhere stop the run here, before any generation.
    """
    id_col = source.columns.id
    # A key is made of the id, the title and the attribute values, as the prompt states them.
    roles = [c for c in (id_col, source.columns.title, *(c for c, _ in source.attributes)) if c]
    needed = list(dict.fromkeys(roles if keys_of else [c for c in (id_col,) if c]))
    if source.format != "parquet":
        needed = source.names()  # every column: parsing them is the check of the file's bytes
    if not needed:
        return Prepass(source.rows(), {}, None)
    ids = _IdBuckets(scratch, _estimate_rows(source)) if id_col else None
    rows = 0
    roles = list(dict.fromkeys(roles))
    with _keys_file(keys_to) if keys_of and keys_to else contextlib.nullcontext() as keys:
        for frame in source.windows(needed, _READ_ROWS):
            if ids is not None and id_col is not None:
                ids.add(rows, frame.get_column(id_col).cast(pl.String))
            if keys is not None and keys_of is not None:
                made = keys_of(rows, {c: frame.get_column(c).to_list() for c in roles})
                row = pa.array(range(rows, rows + len(made)), pa.int64())
                keys.write_table(
                    pa.table({"__row": row, "enrich_key": made}), row_group_size=max(len(made), 1)
                )
            rows += frame.height
    duplicates = ids.found(source) if ids is not None else {}
    return Prepass(rows, duplicates, keys_to if keys_of and keys_to else None)


@contextlib.contextmanager
def _keys_file(path: Path) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer of (__row, enrich_key), written atomically."""
    schema = pa.schema([("__row", pa.int64()), ("enrich_key", pa.string())])
    with atomic_file(path) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        yield writer


def _estimate_rows(source: Source) -> int:
    """Rows to size the id buckets for: a Parquet footer's count, a CSV's upper bound of 32 bytes a row."""
    if source.format == "parquet":
        return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in source.files())
    return sum(f.stat().st_size for f in source.files()) // 32 + 1


class _IdBuckets:
    """Id hashes spread over bucket files on disk by hash, each sorted on its own at the end."""

    def __init__(self, scratch: Path, rows: int) -> None:
        self.scratch = scratch
        self.n = max(1, -(-rows // _BUCKET_ROWS))
        scratch.mkdir(parents=True, exist_ok=True)
        self.files: list[IO[bytes]] = [(scratch / f"ids-{b}.bin").open("wb") for b in range(self.n)]

    def add(self, start: int, ids: Any) -> None:
        hashes = ids.hash(seed=0).to_numpy()
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        keep = ~ids.is_null().to_numpy()
        hashes, rows = hashes[keep], rows[keep]
        buckets = hashes % self.n
        for b, f in enumerate(self.files):
            sel = buckets == b
            out = np.empty(int(sel.sum()), dtype=_PAIR)
            out["h"], out["r"] = hashes[sel], rows[sel]
            out.tofile(f)

    def found(self, source: Source) -> dict[int, int]:
        """{row: first row} of the repeated ids: by hash first, then checked against the ids themselves."""
        for f in self.files:
            f.close()
        by_hash: dict[int, int] = {}
        for b in range(self.n):
            path = self.scratch / f"ids-{b}.bin"
            data = np.fromfile(path, dtype=_PAIR)
            path.unlink()
            if len(data) < 2:
                continue
            data.sort(order=("h", "r"))
            same = data["h"][1:] == data["h"][:-1]
            if not same.any():
                continue
            starts = np.concatenate(([True], ~same))
            first = data["r"][np.maximum.accumulate(np.where(starts, np.arange(len(data)), 0))]
            for i in np.nonzero(~starts)[0]:
                by_hash[int(data["r"][i])] = int(first[i])
        return exact_duplicates(by_hash, source) if by_hash else {}


def exact_duplicates(by_hash: dict[int, int], source: Source) -> dict[int, int]:
    """by_hash ({row: first row of its id hash}) checked against the ids themselves, so that two ids whose 64-bit
    hashes collide stay two ids: a second read of the id column keeps only the rows involved (only where some
    hash repeats, which real duplicates make rare to need)."""
    id_col = str(source.columns.id)
    involved = sorted(set(by_hash) | set(by_hash.values()))
    ids: dict[int, str] = {}
    start = 0
    for frame in source.windows([id_col], _READ_ROWS):
        lo, hi = bisect.bisect_left(involved, start), bisect.bisect_left(involved, start + frame.height)
        if lo < hi:
            picked = frame.get_column(id_col).cast(pl.String).gather([r - start for r in involved[lo:hi]])
            ids.update(zip(involved[lo:hi], picked.to_list(), strict=True))
        start += frame.height
    groups: dict[int, list[int]] = {}
    for row, first in by_hash.items():
        groups.setdefault(first, [first]).append(row)
    found: dict[int, int] = {}
    for rows in groups.values():
        earliest: dict[str, int] = {}
        for row in sorted(rows):
            if ids[row] in earliest:
                found[row] = earliest[ids[row]]
            else:
                earliest[ids[row]] = row
    return found
