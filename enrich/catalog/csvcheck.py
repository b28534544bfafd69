"""What is wrong with a CSV that polars refused, in words: the line, and why. Plain Python, streamed, only called
once a read has failed; io.py turns polars' errors into one-line messages with it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

SEPARATORS = ",;\t|"  # the separators a CSV's header is checked for, to name the one a file uses


def _stray_quote(separator: str) -> re.Pattern[str]:
    """A quote after other text in a field that did not open with one."""
    sep = re.escape(separator)
    return re.compile(f'(?:^|{sep})[^"{sep}\r\n]+"')


def header_separator(path: Path) -> str:
    """The separator the header line uses most, of SEPARATORS: the file's own, for a diagnosis after a failed read."""
    # Counting, not csv.Sniffer: on one header line Sniffer falls back to its order of preference (a ';'-separated
    # header with a comma in a name reads as ','), it raises on a one-column header, and on the ragged lines of a
    # file polars refused (the only time this is called) it cannot decide at all.
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    return max(SEPARATORS, key=header.count) if any(c in header for c in SEPARATORS) else ","


def first_bad_line(path: Path) -> str | None:
    """Where a CSV that polars refused goes wrong, in words: a line with another field count than the header, or
    a quote inside a field that is not quoted (12" for inches). Only called once the read has failed."""
    separator = header_separator(path)
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:  # streamed: catalogs are large
        rows = csv.reader(f, delimiter=separator)
        try:
            width = len(next(rows, []))
            for row in rows:
                if row and len(row) != width:
                    return (
                        f"line {rows.line_num} has {len(row)} fields, the header {width}; "
                        f"quote fields holding {'commas' if separator == ',' else repr(separator)}"
                    )
        except csv.Error as err:
            return f"line {rows.line_num}: {err}"
    stray = _stray_quote(separator)
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        for number, line in enumerate(f, start=1):
            if number > 1 and stray.search(line):
                return (
                    f'line {number}: a " inside a field that is not quoted (12" for inches?); quote the field and '
                    'double the quote: "Stanley 12"" ruler"'
                )
    return None
