"""The output file: the part files' columns and types, and the final assembly of OUTPUT from input and parts.

The assembly reads the input once more, every column, window by window, zips each window with its part file
and writes OUTPUT atomically; memory holds one window, whatever the catalog's size.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrich.catalog.source import Source
from enrich.catalog.windows import Windows
from enrich.errors import InputError
from enrich.files import atomic_file
from enrich.run.state import RunState

# The generated columns of a part file, and of OUTPUT, with their fixed types (the output contract).
PART_TYPES = {
    "__row": pa.int64(),
    "generated_description": pa.string(),
    "enrich_status": pa.string(),
    "enrich_finish_reason": pa.string(),
    "enrich_flags": pa.list_(pa.string()),
    "enrich_unsupported": pa.list_(pa.string()),
    "enrich_output_tokens": pa.int32(),
    "enrich_key": pa.string(),
}


@dataclass(frozen=True)
class OutputFile:
    """Where and how OUTPUT is written: its path, format, CSV separator and generated columns' names."""

    path: Path
    format: str
    separator: str
    names: dict[str, str]  # each generated column's standard name -> the name written (OutputConfig.names)

    def as_source(self) -> Source:
        """The output read back as a catalog: an incremental run's previous output."""
        return Source(str(self.path), self.format, self.separator, format_option="--output-format")

    def rows(self) -> int | None:
        """The rows of the existing output (Parquet from its footer), or None where it cannot be read."""
        try:
            return self.as_source().count()
        except (OSError, pa.ArrowException, InputError, pl.exceptions.PolarsError):
            return None

    def schema(self) -> pa.Schema:
        return part_schema(self.names)


_LISTS = ("enrich_flags", "enrich_unsupported")


def part_schema(names: Mapping[str, str]) -> pa.Schema:
    """The part files' columns and fixed types, under the names the run writes (OutputConfig.names)."""
    return pa.schema([(names.get(n, n), t) for n, t in PART_TYPES.items()])


def part_frame(columns: dict[str, list[Any]], names: Mapping[str, str]) -> pa.Table:
    """A window's generated columns with fixed types; built by Arrow straight from the Python lists, which is
    several times cheaper per row than a polars frame of list columns."""
    arrays = [
        _string_lists(columns[n]) if n in _LISTS else pa.array(columns[n], type=t)
        for n, t in PART_TYPES.items()
    ]
    return pa.Table.from_arrays(arrays, schema=part_schema(names))


def _string_lists(values: list[list[str]]) -> pa.Array:
    """A list<string> array from offsets and flat values: a ninth of pa.array's cost on a list of lists."""
    offsets = [0]
    flat: list[str] = []
    for value in values:
        if value:
            flat.extend(value)
        offsets.append(len(flat))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.string()))


def assemble(source: Source, state: RunState, n_windows: int, cut: Windows, out: OutputFile) -> None:
    """Zip the input (every column) with the part files, window by window, into OUTPUT atomically."""
    writer: pq.ParquetWriter | None = None
    lf = source.scan()
    columns = lf.collect_schema().names()
    fixed = out.schema()
    parts = sum(p.stat().st_size for p in state.parts_dir.glob("part-*.parquet"))
    inputs = sum(p.stat().st_size for p in source.files())
    with _buffers_unmapped(), atomic_file(out.path, needed=parts + inputs) as f:
        header = True
        for index, frame in enumerate(source.windows(columns, cut)):
            part = pl.read_parquet(state.part_path(index))
            if part.height != frame.height:
                raise InputError(
                    f"{source.path}: window {index} has {frame.height} rows now but {part.height} when it was "
                    "generated; the input changed during the run; re-run with --restart"
                )
            joined = pl.concat([frame, part.drop("__row")], how="horizontal")
            if out.format == "parquet":
                table = joined.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(f, _schema(source, table.schema, fixed), compression="zstd")
                writer.write_table(table.cast(writer.schema))
            else:
                _csv_ready(joined).write_csv(f, include_header=header, separator=out.separator)
                header = False
            if index + 1 > n_windows:
                raise InputError(f"{source.path}: the input grew during the run; re-run with --restart")
        if writer is None and header:  # no rows: still a valid file with every column (and CSV its header)
            empty = lf.head(0).collect().to_arrow()
            for field in fixed.remove(0):  # __row
                empty = empty.append_column(field, pa.array([], field.type))
            if out.format == "parquet":
                writer = pq.ParquetWriter(f, _schema(source, empty.schema, fixed), compression="zstd")
            else:
                _csv_ready(pl.from_arrow(empty)).write_csv(f, separator=out.separator)  # type: ignore[arg-type]
        if writer is not None:
            writer.close()


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """enrich's list columns (the flags) joined by ';': the input's own nested columns were refused up front."""
    lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
    return frame.with_columns(pl.col(n).list.join(";") for n in lists) if lists else frame


def _schema(source: Source, joined: pa.Schema, fixed: pa.Schema) -> pa.Schema:
    """OUTPUT's Arrow schema: a Parquet input's own column types (polars reads string as large_string, a
    dictionary's indices as uint32), then the generated columns with the types of the part files (fixed)."""
    first = next(source.files(), None)
    given = pq.read_schema(first) if source.format == "parquet" and first is not None else pa.schema([])
    fields = []
    for field in joined:
        if field.name in fixed.names:
            fields.append(fixed.field(field.name))
        elif field.name in given.names:
            fields.append(given.field(field.name).remove_metadata())
        else:
            fields.append(field)
    return pa.schema(fields)


def _mmap_threshold(size: int, trim: bool = False) -> None:
    """Set glibc's mmap threshold (M_MMAP_THRESHOLD), and hand the heap's free pages back to the system first
    where trim; nothing where the C library is not glibc."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        if trim:
            libc.malloc_trim(0)
        libc.mallopt(-3, size)


@contextlib.contextmanager
def _buffers_unmapped() -> Iterator[None]:
    """During the assembly, window-sized buffers are mapped and unmapped instead of kept on the heap.

    glibc raises its mmap threshold each time a large block is freed; after that, window buffers come from the
    heap and stay resident once freed, so the assembly's memory crept up window after window (bench/RESULTS.md:
    +26% from 10k to 1M rows without this and the allocator settings of enrich.run.memory). Only here: torch's
    tensors during generation would pay a system call and page faults for every allocation (generation ran at
    half speed). Afterwards the threshold is left at 32 MiB, the highest the dynamic one reaches.
    """
    _mmap_threshold(128 * 1024, trim=True)
    try:
        yield
    finally:
        _mmap_threshold(32 * 1024 * 1024)
