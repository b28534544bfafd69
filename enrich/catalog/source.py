"""Windowed reads, atomic part writes, the resume manifest, the run lock and output assembly.

The only module that imports polars. A run reads the input twice: once, with only the columns it needs,
window by window for generation; once more at the end, with every column, zipped with the part files
into the output. Memory is bounded by the window, whatever the catalog's size.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import hashlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrich.catalog import csvcheck
from enrich.config import FORMAT_SUFFIXES, is_parquet
from enrich.errors import ConfigError, InputError
from enrich.files import atomic_file, input_files
from enrich.run.state import RunState
from enrich.run.windows import Windows

# Arrow's default jemalloc pool keeps freed windows as resident memory; the system allocator returns
# them, which keeps a long run's footprint at one window instead of its high-water mark.
pa.set_memory_pool(pa.system_memory_pool())


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
    """During the output's assembly, window-sized buffers are mapped and unmapped instead of kept on the heap.

    glibc raises its mmap threshold each time a large block is freed; after that, window buffers come from the
    heap and stay resident once freed, so the assembly's memory crept up window after window (+26% from 10k
    to 1M rows; with this and polars' decay in __init__.py, +10.4%). Only here: torch's tensors during generation
    would pay a system call and page faults for every allocation (generation ran at half speed). Afterwards the
    threshold is left at 32 MiB, the highest the dynamic one reaches.
    """
    _mmap_threshold(128 * 1024, trim=True)
    try:
        yield
    finally:
        _mmap_threshold(32 * 1024 * 1024)


def file_format(path: str, fmt: str = "auto") -> str:
    """parquet or csv, from the option or the file's suffix."""
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in FORMAT_SUFFIXES:
        return FORMAT_SUFFIXES[suffix]
    raise ConfigError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; use .parquet or .csv, or name the format "
        "(run: --input-format, --output-format; finetune and eval: --format)"
    )


def _polars_error(path: str, err: Exception, fmt: str = "auto") -> InputError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return InputError(f"{path}: not valid UTF-8 ({text}); re-encode it, e.g. iconv -f latin1 -t utf-8")
    if isinstance(err, pl.exceptions.NoDataError) or "empty" in text.lower():
        return InputError(f"{path}: the file is empty; give a catalog with a header and rows")
    if "out of specification" in text or "PAR1" in text:  # polars' words for a torn or foreign file
        text += " (the file is truncated, damaged or not Parquet)"
    if file_format(path, fmt) == "csv" and ("malformed" in text or "fields" in text):
        where = next((w for p in input_files(path) if (w := csvcheck.first_bad_line(p))), None)
        text = where or text
    return InputError(f"{path}: cannot read it as {Path(path).suffix.lstrip('.') or 'a catalog'}: {text}")


def scan(path: str, fmt: str = "auto", separator: str = ",") -> pl.LazyFrame:
    """A lazy frame over the input; CSV columns stay text, so values round-trip unchanged (zip codes, SKUs)."""
    kind = file_format(path, fmt)
    if not any(True for _ in input_files(path)):
        raise InputError(f"{path}: no such file")
    if kind == "csv":
        _refuse_foreign_bytes(path)
    try:
        if kind == "parquet":
            lf = pl.scan_parquet(path)
        else:
            lf = pl.scan_csv(path, separator=separator, infer_schema=False, raise_if_empty=True)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise _polars_error(path, err, kind) from None
    if kind == "csv":
        _refuse_repeated_header(path, lf.collect_schema().names())
    return lf


# Byte-order marks of the encodings a CSV must be converted from (UTF-32 first: its LE mark starts as UTF-16's).
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _refuse_foreign_bytes(path: str) -> None:
    """A CSV that is a Parquet file, or text in UTF-16 or UTF-32, would be read as garbage column names; say
    what it is and how to convert it instead."""
    for p in input_files(path):
        with p.open("rb") as f:
            head = f.read(4)
        if head == b"PAR1":
            raise InputError(
                f"{p}: is a Parquet file named like a CSV; rename it .parquet or pass --input-format parquet"
            )
        encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
        if encoding:
            raise InputError(
                f"{p}: is {encoding} (it starts with a {encoding} byte-order mark); enrich reads UTF-8: convert "
                f"it, e.g. iconv -f {encoding} -t UTF-8 {p.name} > {p.stem}.utf8{p.suffix}"
            )


def nested_columns(lf: pl.LazyFrame) -> list[str]:
    """Columns that a CSV cannot hold: lists, arrays, structs (and maps, read as lists of structs), bytes."""
    return [
        name
        for name, dtype in lf.collect_schema().items()
        if isinstance(dtype, pl.List | pl.Array | pl.Struct) or dtype in (pl.Binary, pl.Object)
    ]


def _refuse_repeated_header(path: str, names: list[str]) -> None:
    """polars renames a repeated CSV header to NAME_duplicated_N; which one is the title would be a guess."""
    for name in names:
        base, sep, n = name.rpartition("_duplicated_")
        # Unnamed columns ('' and its repeats) are the trailing empty columns that spreadsheets export: keep them.
        if sep and n.isdigit() and base in names and base != "":
            raise InputError(f"{path}: the header repeats the column {base!r}; give each column its own name")


def output_rows(path: Path, fmt: str, separator: str = ",") -> int | None:
    """The rows of an existing output (Parquet from its footer), or None where it cannot be read."""
    try:
        if fmt == "parquet":
            return int(pq.ParquetFile(path).metadata.num_rows)
        return count_rows(scan(str(path), fmt, separator), str(path), fmt)
    except (OSError, pa.ArrowException, InputError, pl.exceptions.PolarsError):
        return None


def require_text(lf: pl.LazyFrame, path: str, column: str, option: str) -> None:
    """The title column must hold text: a whole column of numbers or lists is a mapping mistake, not row errors."""
    dtype = lf.collect_schema()[column]
    if dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(dtype, pl.Enum | pl.Categorical):
        raise InputError(
            f"{path}: column {column!r} holds {dtype}, not text; map a text column with {option}"
        )


def input_identity(path: str) -> str:
    """The input's content, hashed: every byte of every file (SHA-256, about 1 GB/s with the CPU's SHA
    instructions), with each file's name and size. A resume compares it, so any edit of the input is seen, also
    one that keeps the size and puts the modification time back."""
    h = hashlib.sha256()
    for p in input_files(path):
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
        with p.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:16]


def require_columns(
    lf: pl.LazyFrame, path: str, columns: dict[str, str | None], separator: str = ","
) -> list[str]:
    """Check that mapped columns exist; returns every input column name."""
    names = lf.collect_schema().names()
    for role, name in columns.items():
        if name is not None and name not in names:
            other = next(
                (c for c in csvcheck.SEPARATORS if c != separator and len(names) == 1 and c in names[0]), None
            )
            fix = (
                f"the file seems {other!r}-separated: pass --separator {other!r}"
                if other
                else f"map one with --{role}-col"
            )
            raise InputError(
                f"{path}: no column {name!r} for the {role} (columns: {', '.join(names[:20])}); {fix}"
            )
    return names


def count_rows(lf: pl.LazyFrame, path: str, fmt: str = "auto") -> int:
    """Number of rows. For CSV this parses every column once, so that bad bytes anywhere (not UTF-8,
    ragged lines) stop the run before any generation, not at the final assembly."""
    try:
        if file_format(path, fmt) == "csv":
            names = lf.collect_schema().names()
            checks = [pl.col(c).str.len_bytes().sum().alias(f"__{i}") for i, c in enumerate(names)]
            return int(lf.select(pl.len().alias("__n"), *checks).collect(engine="streaming")["__n"].item())
        return int(lf.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as err:
        raise _polars_error(path, err, fmt) from None


def _batches(lf: pl.LazyFrame, columns: Sequence[str], path: str, size: int) -> Iterator[pl.DataFrame]:
    """Record batches in file order. Parquet goes through pyarrow one row group at a time, which holds
    less in memory than polars' streaming collect; CSV goes through polars."""
    if is_parquet(path):
        for file in input_files(path):
            reader = pq.ParquetFile(file, buffer_size=1 << 20, pre_buffer=False)
            for batch in reader.iter_batches(batch_size=size, columns=list(columns), use_threads=False):
                yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]
        return
    yield from lf.select(columns).collect_batches(chunk_size=size)


def iter_windows(
    lf: pl.LazyFrame, columns: Sequence[str], windows: int | Windows, path: str, limit: int | None = None
) -> Iterator[pl.DataFrame]:
    """Frames cut as windows says (an int: windows of that many rows), the last may be shorter, in input order."""
    cut = Windows.fixed(windows) if isinstance(windows, int) else windows
    sizes = cut.sizes()
    want = next(sizes)
    pending: list[pl.DataFrame] = []
    held = 0
    left = limit if limit is not None else -1
    try:
        for batch in _batches(lf, columns, path, cut.size):
            if left >= 0:
                batch = batch.head(left)
                left -= batch.height
            pending.append(batch)
            held += batch.height
            while held >= want:
                frame = pl.concat(pending, rechunk=False)
                yield frame.slice(0, want)
                rest = frame.slice(want)
                pending, held = ([rest] if rest.height else []), rest.height
                want = next(sizes)
            if left == 0:
                break
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as err:
        raise _polars_error(path, err) from None
    if held:
        yield pl.concat(pending)


_BUCKET_ROWS = 1 << 18  # ids per bucket file of the duplicate check: 4 MiB of (hash, row) pairs


def duplicate_rows(
    lf: pl.LazyFrame, id_col: str, limit: int | None, path: str, scratch: Path, total: int
) -> dict[int, int]:
    """Rows whose id repeats an earlier row's: {row: first row}.

    Constant memory whatever the catalog's size: id hashes are spread over bucket files on disk by hash,
    then each bucket is sorted on its own, so memory holds one window and one bucket, never every id.
    """
    import numpy as np

    n_buckets = max(1, -(-total // _BUCKET_ROWS))
    scratch.mkdir(parents=True, exist_ok=True)
    pair = np.dtype([("h", "<u8"), ("r", "<i8")])
    files = [(scratch / f"ids-{b}.bin").open("wb") for b in range(n_buckets)]
    try:
        start = 0
        for frame in iter_windows(lf, [id_col], 65536, path, limit):
            ids = frame.get_column(id_col).cast(pl.String)
            hashes = ids.hash(seed=0).to_numpy()
            rows = np.arange(start, start + frame.height, dtype=np.int64)
            keep = ~ids.is_null().to_numpy()
            start += frame.height
            hashes, rows = hashes[keep], rows[keep]
            buckets = hashes % n_buckets
            for b, f in enumerate(files):
                sel = buckets == b
                out = np.empty(int(sel.sum()), dtype=pair)
                out["h"], out["r"] = hashes[sel], rows[sel]
                out.tofile(f)
    finally:
        for f in files:
            f.close()
    found: dict[int, int] = {}
    for b in range(n_buckets):
        data = np.fromfile(scratch / f"ids-{b}.bin", dtype=pair)
        (scratch / f"ids-{b}.bin").unlink()
        if len(data) < 2:
            continue
        data.sort(order=("h", "r"))
        same = data["h"][1:] == data["h"][:-1]
        if not same.any():
            continue
        starts = np.concatenate(([True], ~same))
        first = data["r"][np.maximum.accumulate(np.where(starts, np.arange(len(data)), 0))]
        for i in np.nonzero(~starts)[0]:
            found[int(data["r"][i])] = int(first[i])
    return _exact_duplicates(found, lf, id_col, limit, path) if found else found


def _exact_duplicates(
    by_hash: dict[int, int], lf: pl.LazyFrame, id_col: str, limit: int | None, path: str
) -> dict[int, int]:
    """by_hash ({row: first row of its id hash}) checked against the ids themselves, so that two ids whose 64-bit
    hashes collide stay two ids: a second read of the id column keeps only the rows involved."""
    involved = sorted(set(by_hash) | set(by_hash.values()))
    ids: dict[int, str] = {}
    start = 0
    for frame in iter_windows(lf, [id_col], 65536, path, limit):
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


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
    return frame.with_columns(pl.col(n).list.join(";") for n in lists) if lists else frame


def _output_schema(input_path: str, joined: pa.Schema, fixed: pa.Schema) -> pa.Schema:
    """OUTPUT's Arrow schema: a Parquet input's own column types (polars reads string as large_string, a
    dictionary's indices as uint32), then the generated columns with the types of the part files (fixed)."""
    # Parquet by its suffix, as _batches reads it (an explicit --input-format does not change how windows are read).
    first = next(input_files(input_path), None)
    parquet = is_parquet(input_path) and first is not None
    given = pq.read_schema(first) if parquet else pa.schema([])
    fields = []
    for field in joined:
        if field.name in fixed.names:
            fields.append(fixed.field(field.name))
        elif field.name in given.names:
            fields.append(given.field(field.name).remove_metadata())
        else:
            fields.append(field)
    return pa.schema(fields)


def assemble_output(
    lf: pl.LazyFrame,
    input_path: str,
    state: RunState,
    n_windows: int,
    windows: Windows,
    output: Path,
    fmt: str,
    limit: int | None,
    names: Mapping[str, str],
    separator: str = ",",
) -> None:
    """Zip the input (every column) with the part files, window by window, into OUTPUT atomically; names are
    the generated columns' (OutputConfig.names); separator is a CSV output's."""
    writer: pq.ParquetWriter | None = None
    columns = lf.collect_schema().names()
    fixed = part_schema(names)
    with _buffers_unmapped(), atomic_file(output) as f:
        header = True
        for index, frame in enumerate(iter_windows(lf, columns, windows, input_path, limit)):
            part = pl.read_parquet(state.part_path(index))
            if part.height != frame.height:
                raise InputError(
                    f"{input_path}: window {index} has {frame.height} rows now but {part.height} when it was "
                    "generated; the input changed during the run; re-run with --restart"
                )
            joined = pl.concat([frame, part.drop("__row")], how="horizontal")
            if fmt == "parquet":
                table = joined.to_arrow()
                if writer is None:
                    schema = _output_schema(input_path, table.schema, fixed)
                    writer = pq.ParquetWriter(f, schema, compression="zstd")
                writer.write_table(table.cast(writer.schema))
            else:
                _csv_ready(joined).write_csv(f, include_header=header, separator=separator)
                header = False
            if index + 1 > n_windows:
                raise InputError(f"{input_path}: the input grew during the run; re-run with --restart")
        if writer is None and header:  # no rows: still a valid file with every column (and CSV its header)
            empty = lf.head(0).collect().to_arrow()
            for field in fixed.remove(0):  # __row
                empty = empty.append_column(field, pa.array([], field.type))
            if fmt == "parquet":
                writer = pq.ParquetWriter(
                    f, _output_schema(input_path, empty.schema, fixed), compression="zstd"
                )
            else:
                _csv_ready(pl.from_arrow(empty)).write_csv(f, separator=separator)  # type: ignore[arg-type]
        if writer is not None:
            writer.close()


def iter_window_lists(
    lf: pl.LazyFrame, columns: Sequence[str], windows: int | Windows, path: str, limit: int | None = None
) -> Iterator[dict[str, list[Any]]]:
    """Windows as plain Python lists per column, for the code that knows nothing of polars."""
    for frame in iter_windows(lf, columns, windows, path, limit):
        yield {c: frame.get_column(c).to_list() for c in columns}


PART_TYPES = {
    "__row": pa.int64(),
    "generated_description": pa.string(),
    "enrich_status": pa.string(),
    "enrich_finish_reason": pa.string(),
    "enrich_flags": pa.list_(pa.string()),
    "enrich_output_tokens": pa.int32(),
    "enrich_key": pa.string(),
}


def part_schema(names: Mapping[str, str]) -> pa.Schema:
    """The part files' columns and fixed types, under the names the run writes (OutputConfig.names)."""
    return pa.schema([(names.get(n, n), t) for n, t in PART_TYPES.items()])


def part_frame(columns: dict[str, list[Any]], names: Mapping[str, str]) -> pa.Table:
    """A window's generated columns with fixed types (the output contract); built by Arrow straight
    from the Python lists, which is several times cheaper per row than a polars frame of list columns."""
    arrays = [
        _string_lists(columns[n]) if n == "enrich_flags" else pa.array(columns[n], type=t)
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


# Incremental runs: the previous output's results, joined to the input by content key, in input order.

REUSE_COLUMNS = (
    "enrich_key",
    "enrich_status",
    "enrich_finish_reason",
    "enrich_flags",
    "enrich_output_tokens",
)


def write_keys(path: Path, windows: Iterator[list[str]]) -> int:
    """Write the input's content keys (one per row, in input order) to a Parquet file; returns the row count."""
    writer: pq.ParquetWriter | None = None
    rows = 0
    schema = pa.schema([("__row", pa.int64()), ("enrich_key", pa.string())])
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        for keys in windows:
            table = pa.table(
                {"__row": pa.array(range(rows, rows + len(keys)), pa.int64()), "enrich_key": keys}
            )
            writer.write_table(table, row_group_size=max(len(keys), 1))
            rows += len(keys)
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def build_reuse(
    keys: Path, previous: Path, fmt: str, names: Mapping[str, str], dest: Path, separator: str = ","
) -> int:
    """Join the input's keys with the previous output's results (ok or flagged rows only) into dest, streaming.

    Memory: polars' streaming hash join holds the previous output's distinct keys and results, never the input;
    nothing is loaded into Python. Returns how many input rows found their key in the previous output.
    """
    kind = file_format(str(previous), fmt)
    standard = ["generated_description", *REUSE_COLUMNS]
    wanted = [names.get(c, c) for c in standard]
    try:
        prev = scan(str(previous), kind, separator)
        present = prev.collect_schema().names()
        missing = [c for c in wanted if c not in present]
        if missing:
            raise ConfigError(
                f"{previous}: not an output of enrich, or one written under other column names (no column "
                f"{missing[0]!r}), so an incremental run cannot reuse it; pass --overwrite to generate every row, "
                "or point -o elsewhere"
            )
        prev = prev.select(wanted).rename(dict(zip(wanted, standard, strict=True)))
        if kind == "csv":  # CSV holds text only: restore the list and integer columns
            flags = pl.col("enrich_flags")
            prev = prev.with_columns(
                pl.when(flags.is_null() | (flags == ""))
                .then(pl.lit([], pl.List(pl.String)))
                .otherwise(flags.str.split(";"))
                .alias("enrich_flags"),
                pl.col("enrich_output_tokens").cast(pl.Int32, strict=False),
            )
        prev = prev.filter(
            pl.col("enrich_status").is_in(["ok", "flagged"]) & pl.col("enrich_key").is_not_null()
        )
        prev = prev.unique(
            "enrich_key", keep="any"
        )  # the same content twice (duplicate ids kept): one result
        joined = pl.scan_parquet(keys).join(prev, on="enrich_key", how="left", maintain_order="left")
        joined = joined.with_columns(pl.col("enrich_status").is_not_null().alias("__hit"))
        tmp = dest.with_name(f".{dest.name}.tmp")
        joined.sink_parquet(tmp, compression="zstd", engine="streaming")
        os.replace(tmp, dest)
        return int(pl.scan_parquet(dest).select(pl.col("__hit").sum()).collect().item() or 0)
    except pl.exceptions.PolarsError as err:
        raise InputError(
            f"{previous}: the previous output cannot be read ({str(err).strip().splitlines()[0][:200]}); "
            "delete it, or pass --overwrite to generate every row"
        ) from None


def iter_reuse(path: Path, windows: Windows) -> Iterator[dict[str, list[Any]]]:
    """The reuse file's windows, in step with the input's windows."""
    columns = ["__hit", "generated_description", *REUSE_COLUMNS]
    yield from iter_window_lists(pl.scan_parquet(path), columns, windows, str(path))
