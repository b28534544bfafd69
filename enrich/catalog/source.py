"""The catalog a command reads, as one value: `Source` (path or glob, format, separator, columns, limit).

Built once when a run, a fine-tuning or an eval is planned, and passed whole to whatever reads the input:
scanning, counting, the one pre-pass (counts, duplicate ids, content keys), the windows, a Ray worker's rows,
the final assembly. The format is decided here, once. CSV columns stay text, so values round-trip unchanged
(zip codes, SKUs). Reading is windowed: memory holds a window, whatever the catalog's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrich.catalog import csvcheck
from enrich.catalog.windows import Windows
from enrich.config import Columns
from enrich.errors import ConfigError, InputError
from enrich.files import input_files

# Formats by suffix: catalogs and outputs are Parquet or CSV; finetune and eval also read JSON lines.
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".txt": "csv", ".jsonl": "jsonl"}
SUFFIXES |= {".ndjson": "jsonl"}


def format_of(path: str | Path, fmt: str = "auto", option: str = "--input-format") -> str:
    """parquet, csv or jsonl: fmt where it is given, else by the file's suffix. option names the option that
    gives it, for the message where the suffix does not tell."""
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise ConfigError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; use .parquet or .csv, or pass {option}"
    )


@dataclass(frozen=True)
class Source:
    """What is read: the catalog's files, their format, CSV separator, column roles and a row limit."""

    path: str
    format: str  # parquet, csv or jsonl: decided by Source.of
    separator: str = ","
    columns: Columns = field(default_factory=Columns)
    limit: int | None = None
    format_option: str = "--input-format"  # the option that names the format, for messages
    attributes: tuple[tuple[str, str], ...] = ()  # (column, label): the facts a prompt states under the title

    @classmethod
    def of(
        cls,
        path: str,
        fmt: str = "auto",
        separator: str = ",",
        columns: Columns | None = None,
        limit: int | None = None,
        format_option: str = "--input-format",
    ) -> Source:
        return cls(
            path, format_of(path, fmt, format_option), separator, columns or Columns(), limit, format_option
        )

    def with_columns(self, columns: Columns) -> Source:
        return replace(self, columns=columns)

    def with_attributes(self, attributes: tuple[tuple[str, str], ...]) -> Source:
        return replace(self, attributes=attributes)

    def row_columns(self) -> list[str]:
        """What a window's processing reads of each row: id, title, the existing description, the attributes."""
        cols = self.columns
        roles = [c for c in (cols.id, cols.title, cols.content) if c]
        return list(dict.fromkeys([*roles, *(column for column, _ in self.attributes)]))

    def files(self) -> Iterator[Path]:
        """The input's files: those a glob matches, in name order, or the one file."""
        return input_files(self.path)

    def scan(self) -> pl.LazyFrame:
        """A lazy frame over every column; a file that cannot be read as its format is an InputError."""
        if not any(True for _ in self.files()):
            raise InputError(f"{self.path}: no such file")
        if self.format == "csv":
            self._refuse_foreign_bytes()
        try:
            if self.format == "parquet":
                lf = pl.scan_parquet(self.path)
            elif self.format == "jsonl":
                lf = pl.scan_ndjson(self.path, infer_schema_length=10000)
            else:
                lf = pl.scan_csv(self.path, separator=self.separator, infer_schema=False, raise_if_empty=True)
            names = lf.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as err:
            raise self._error(err) from None
        if self.format == "csv":
            _refuse_repeated_header(self.path, names)
        return lf

    def names(self) -> list[str]:
        return self.scan().collect_schema().names()

    def count(self) -> int:
        """Rows in the files (the limit aside). A CSV is parsed whole, every column, so that bad bytes anywhere
        (not UTF-8, ragged lines) stop a run before any generation, not at the final assembly."""
        lf = self.scan()
        try:
            if self.format == "parquet":
                return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in self.files())
            names = lf.collect_schema().names()
            checks = [pl.col(c).str.len_bytes().sum().alias(f"__{i}") for i, c in enumerate(names)]
            if self.format == "jsonl":
                checks = []
            return int(lf.select(pl.len().alias("__n"), *checks).collect(engine="streaming")["__n"].item())
        except (pl.exceptions.PolarsError, pa.ArrowException) as err:
            raise self._error(err) from None

    def rows(self) -> int:
        """Rows that a command processes: the count, or the limit where it is lower."""
        total = self.count()
        return total if self.limit is None else min(total, self.limit)

    def windows(self, columns: Sequence[str], cut: int | Windows) -> Iterator[pl.DataFrame]:
        """Frames of the given columns cut as windows says (an int: windows of that many rows), in input order,
        up to the limit; the last may be shorter."""
        cut = Windows.fixed(cut) if isinstance(cut, int) else cut
        sizes = cut.sizes()
        want = next(sizes)
        pending: list[pl.DataFrame] = []
        held = 0
        left = self.limit if self.limit is not None else -1
        try:
            for batch in self._batches(columns, cut.size):
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
            raise self._error(err) from None
        if held:
            yield pl.concat(pending)

    def window_lists(self, columns: Sequence[str], cut: int | Windows) -> Iterator[dict[str, list[Any]]]:
        """Windows as plain Python lists per column, for the code that knows nothing of polars."""
        for frame in self.windows(columns, cut):
            yield {c: frame.get_column(c).to_list() for c in columns}

    def read_range(self, columns: list[str], start: int, stop: int) -> dict[str, list[Any]]:
        """Rows [start, stop) as lists per column, in the order the windows read them: a Ray worker's window.
        Parquet is read by row group, so a worker reads only its own rows; a CSV is scanned from its start."""
        if self.format != "parquet":
            frame = self.scan().slice(start, stop - start).select(columns).collect()
            return {c: frame.get_column(c).to_list() for c in columns}
        out: dict[str, list[Any]] = {c: [] for c in columns}
        offset = 0
        for file in self.files():
            reader = pq.ParquetFile(file)
            meta = reader.metadata
            for group in range(meta.num_row_groups):
                n = meta.row_group(group).num_rows
                lo, hi = max(start, offset), min(stop, offset + n)
                if lo < hi:
                    table = reader.read_row_group(group, columns=columns).slice(lo - offset, hi - lo)
                    for c in columns:
                        out[c].extend(table.column(c).to_pylist())
                offset += n
                if offset >= stop:
                    return out
        return out

    def identity(self) -> str:
        """The input's content, hashed: every byte of every file (SHA-256, about 1 GB/s with the CPU's SHA
        instructions), with each file's name and size. A resume compares it, so any edit of the input is seen,
        also one that keeps the size and puts the modification time back."""
        h = hashlib.sha256()
        for p in self.files():
            h.update(f"{p.name}:{p.stat().st_size}\n".encode())
            with p.open("rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        return h.hexdigest()[:16]

    def require_columns(self, lf: pl.LazyFrame, roles: dict[str, str | None]) -> list[str]:
        """Check that the mapped columns exist (roles: role -> column); returns every column name."""
        names = lf.collect_schema().names()
        for role, name in roles.items():
            if name is not None and name not in names:
                other = next(
                    (
                        c
                        for c in csvcheck.SEPARATORS
                        if c != self.separator and len(names) == 1 and c in names[0]
                    ),
                    None,
                )
                fix = (
                    f"the file seems {other!r}-separated: pass --separator {other!r}"
                    if other
                    else f"map one with --{role}-col"
                )
                raise InputError(
                    f"{self.path}: no column {name!r} for the {role} (columns: {', '.join(names[:20])}); {fix}"
                )
        return names

    def require_text(self, lf: pl.LazyFrame, column: str, option: str) -> None:
        """A column that must hold text: a whole column of numbers or lists is a mapping mistake, not row errors."""
        dtype = lf.collect_schema()[column]
        if dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(
            dtype, pl.Enum | pl.Categorical
        ):
            raise InputError(
                f"{self.path}: column {column!r} holds {dtype}, not text; map a text column with {option}"
            )

    def _batches(self, columns: Sequence[str], size: int) -> Iterator[pl.DataFrame]:
        """Record batches in file order. Parquet goes through pyarrow one row group at a time, which holds less
        in memory than polars' streaming collect; CSV and JSON lines go through polars."""
        if self.format == "parquet":
            for file in self.files():
                reader = pq.ParquetFile(file, buffer_size=1 << 20, pre_buffer=False)
                for batch in reader.iter_batches(batch_size=size, columns=list(columns), use_threads=False):
                    yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]
            return
        yield from self.scan().select(columns).collect_batches(chunk_size=size)

    def _error(self, err: Exception) -> InputError:
        """A reader's error as one line that says what is wrong with the file and how to mend it."""
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "utf-8" in text.lower() or "utf8" in text.lower():
            return InputError(
                f"{self.path}: not valid UTF-8 ({text}); re-encode it, e.g. iconv -f latin1 -t utf-8"
            )
        if isinstance(err, pl.exceptions.NoDataError) or "empty" in text.lower():
            return InputError(f"{self.path}: the file is empty; give a catalog with a header and rows")
        if "out of specification" in text or "PAR1" in text:  # polars' words for a torn or foreign file
            text += " (the file is truncated, damaged or not Parquet)"
        if self.format == "csv" and ("malformed" in text or "fields" in text):
            text = next((w for p in self.files() if (w := csvcheck.first_bad_line(p))), text)
        return InputError(f"{self.path}: cannot read it as {self.format}: {text}")

    def _refuse_foreign_bytes(self) -> None:
        """A CSV that is a Parquet file, or text in UTF-16 or UTF-32, would be read as garbage column names; say
        what it is and how to convert it instead."""
        for p in self.files():
            with p.open("rb") as f:
                head = f.read(4)
            if head == b"PAR1":
                raise InputError(
                    f"{p}: is a Parquet file named like a CSV; rename it .parquet or pass "
                    f"{self.format_option} parquet"
                )
            encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
            if encoding:
                raise InputError(
                    f"{p}: is {encoding} (it starts with a {encoding} byte-order mark); enrich reads UTF-8: "
                    f"convert it, e.g. iconv -f {encoding} -t UTF-8 {p.name} > {p.stem}.utf8{p.suffix}"
                )


# Byte-order marks of the encodings a CSV must be converted from (UTF-32 first: its LE mark starts as UTF-16's).
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _refuse_repeated_header(path: str, names: list[str]) -> None:
    """polars renames a repeated CSV header to NAME_duplicated_N; which one is the title would be a guess."""
    for name in names:
        base, sep, n = name.rpartition("_duplicated_")
        # Unnamed columns ('' and its repeats) are the trailing empty columns that spreadsheets export: keep them.
        if sep and n.isdigit() and base in names and base != "":
            raise InputError(f"{path}: the header repeats the column {base!r}; give each column its own name")


def nested_columns(lf: pl.LazyFrame) -> list[str]:
    """Columns that a CSV cannot hold: lists, arrays, structs (and maps, read as lists of structs), bytes."""
    return [
        name
        for name, dtype in lf.collect_schema().items()
        if isinstance(dtype, pl.List | pl.Array | pl.Struct) or dtype in (pl.Binary, pl.Object)
    ]
