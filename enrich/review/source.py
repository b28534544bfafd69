"""What a review page reads: a run's OUTPUT in windows under standard column names, its report and its error
file. Older outputs lack some columns and reports lack some fields; each has a default."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from enrich.catalog.source import Source, format_of
from enrich.contracts import is_parquet
from enrich.errors import InputError
from enrich.files import read_json_object

# About 10 MB of a catalog's texts per window. Larger windows cost memory, not time: on 1M rows of 1 kB, peak
# RSS was 264 MB with 8,192 rows, 338 with 16,384, 570 with 65,536, in 2.6-2.9 s (bench/review.py).
WINDOW_ROWS = 8192

# Standard name of each generated column -> the name the page's rows use.
GENERATED = {
    "generated_description": "text",
    "enrich_status": "status",
    "enrich_finish_reason": "finish",
    "enrich_flags": "flags",
    "enrich_output_tokens": "tokens",
    "enrich_key": "key",
    "enrich_unsupported": "unsupported",
}
LIST_FIELDS = ("flags", "unsupported")
ROLES = ("id", "title", "content")


@dataclass(frozen=True)
class Layout:
    """Which column of OUTPUT holds what: page field -> column name (absent fields are not in OUTPUT)."""

    columns: dict[str, str]
    attributes: list[tuple[str, str]] = field(default_factory=list)  # (column, label)
    separator: str = ","  # CSV outputs only


def read_report(output: Path) -> dict[str, Any]:
    """OUTPUT.report.json as a plain dict ({} where there is none): read leniently, since the report gains
    fields over time and a page must open on old and new runs alike."""
    path = Path(f"{output}.report.json")
    try:
        return read_json_object(path, "a run report", InputError)
    except FileNotFoundError:
        return {}


def layout(output: Path, report: dict[str, Any]) -> Layout:
    """The output's columns by role: the report's mappings where it has them, else enrich's default names."""
    if not output.is_file():
        raise InputError(f"{output}: no such file")
    separator = "," if is_parquet(output) else _sniff_separator(output, report)
    names = set(_column_names(output, separator))
    roles = report.get("columns") or {}
    renamed = report.get("output_columns") or {}
    columns: dict[str, str] = {}
    for role in ROLES:
        name = roles.get(role, role) if isinstance(roles, dict) else role
        if isinstance(name, str) and name in names:
            columns[role] = name
    for standard, page_field in GENERATED.items():
        name = renamed.get(standard, standard) if isinstance(renamed, dict) else standard
        if isinstance(name, str) and name in names:
            columns[page_field] = name
    if "status" not in columns:
        status = (
            renamed.get("enrich_status", "enrich_status") if isinstance(renamed, dict) else "enrich_status"
        )
        raise InputError(
            f"{output}: no column {status!r}, so it is not an output of enrich (or its report.json, which names "
            "renamed columns, is missing)"
        )
    attributes = [
        (a["column"], str(a.get("label") or a["column"]))
        for a in report.get("attributes") or []
        if isinstance(a, dict) and a.get("column") in names
    ]
    return Layout(columns, attributes, separator)


def _column_names(output: Path, separator: str) -> list[str]:
    if is_parquet(output):
        try:
            return list(pq.read_schema(output).names)
        except Exception as err:  # pyarrow raises several types for a file that is not Parquet
            raise InputError(f"{output}: cannot read it as Parquet: {str(err).splitlines()[0]}") from None
    return Source(str(output), "csv", separator).names()


def _sniff_separator(output: Path, report: dict[str, Any]) -> str:
    """A CSV output's separator: the one that splits the header into a status column. The report does not
    record it, and outputs are written with the input's separator (often ';' in Europe) by default."""
    renamed = report.get("output_columns") or {}
    status = renamed.get("enrich_status", "enrich_status") if isinstance(renamed, dict) else "enrich_status"
    with output.open(encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline()
    for separator in (",", ";", "\t", "|"):
        if status in next(csv.reader([header], delimiter=separator), []):
            return separator
    return ","


def windows(output: Path, shape: Layout) -> Iterator[pl.DataFrame]:
    """OUTPUT in windows of WINDOW_ROWS rows, in file order, with page field names and types: text columns
    as strings, flags and unsupported words as lists (CSV joins them by ';'), tokens as integers, and an
    attr0, attr1... column per attribute."""
    sources = dict(shape.columns)
    sources.update({f"attr{i}": column for i, (column, _) in enumerate(shape.attributes)})
    wanted = list(dict.fromkeys(sources.values()))
    read = Source(str(output), format_of(output, option="--output-format"), shape.separator)
    for frame in read.windows(wanted, WINDOW_ROWS):
        yield frame.select(_as_field(frame, name, column) for name, column in sources.items())


def _as_field(frame: pl.DataFrame, name: str, column: str) -> pl.Expr:
    dtype = frame.schema[column]
    col = pl.col(column)
    if name in LIST_FIELDS:
        if dtype == pl.String:  # CSV: 'a;b', and '' or null for none
            col = (
                pl.when(col.is_null() | (col == ""))
                .then(pl.lit([], pl.List(pl.String)))
                .otherwise(col.str.split(";"))
            )
        else:
            col = col.cast(pl.List(pl.String))
    elif name == "tokens":
        col = col.cast(pl.Int64, strict=False)
    else:
        col = col.cast(pl.String)
    return col.alias(name)


# The leading "FILE row N: " of a reason, then the values in it, so that one kind of failure is one group.
_ROW_PREFIX = re.compile(r"^.*? row \d+: ")
_QUOTED = re.compile(r"'[^']*'")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_group(reason: str) -> str:
    """An error reason without its file, row and values: 'title has N characters, over N; ...'."""
    text = _ROW_PREFIX.sub("", reason, count=1)
    return _NUMBER.sub("N", _QUOTED.sub("'…'", text))


@dataclass
class ErrorSummary:
    """The error file: its records counted by stage and reason group, and the reasons of chosen rows."""

    path: Path | None
    total: int = 0
    groups: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: dict[int, str] = field(default_factory=dict)


def read_errors(output: Path, report: dict[str, Any], rows: set[int]) -> ErrorSummary:
    """Count the error file's reasons and keep the full reason of each row in rows; one pass, a line or a
    batch at a time."""
    path = _errors_path(output, report)
    summary = ErrorSummary(path)
    if path is None:
        return summary
    try:
        for row, stage, reason in _error_records(path):
            summary.total += 1
            summary.groups[(stage, reason_group(reason))] += 1
            if row in rows:  # the page shows the row's number beside it
                summary.reasons[row] = _ROW_PREFIX.sub("", reason, count=1)
            if len(summary.groups) > 10_000:  # reasons with values the groups miss: keep the commonest
                summary.groups = Counter(dict(summary.groups.most_common(1_000)))
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise InputError(f"{path}: not an error file of enrich ({str(err).splitlines()[0][:120]})") from None
    return summary


def _errors_path(output: Path, report: dict[str, Any]) -> Path | None:
    """The report's error file; where that path does not resolve here (a relative path written elsewhere, a
    copied folder), the file of that name beside OUTPUT; else OUTPUT.errors.jsonl."""
    named = report.get("errors_file")
    candidates = [Path(named), output.parent / Path(named).name] if isinstance(named, str) and named else []
    candidates.append(Path(f"{output}.errors.jsonl"))
    return next((p for p in candidates if p.is_file()), None)


def _error_records(path: Path) -> Iterator[tuple[int, str, str]]:
    if is_parquet(path):
        for batch in pq.ParquetFile(path).iter_batches(columns=["row", "stage", "reason"]):
            yield from zip(*(batch.column(n).to_pylist() for n in ("row", "stage", "reason")), strict=True)
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                yield int(record["row"]), str(record["stage"]), str(record["reason"])
