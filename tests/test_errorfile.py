"""The run's error file: the windows' error records, written by a real RunState, assembled as JSONL or Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich.contracts import ErrorRecord
from enrich.run.errorfile import assemble_errors
from enrich.run.state import RunState, open_state

ERROR_DTYPES = {"id": pl.String, "row": pl.Int64, "stage": pl.String, "reason": pl.String, "value": pl.String}


def _error(
    row: int, stage: str, reason: str, id_: str | None = "sku", value: str | None = None
) -> dict[str, Any]:
    return ErrorRecord.model_validate(
        {"id": id_, "row": row, "stage": stage, "reason": reason, "value": value}
    ).model_dump()


# Five windows, two of them without errors (empty files): nulls, empty strings, unicode, newlines, long values.
WINDOWS = [
    [
        _error(0, "validate", "empty title", value=None),
        _error(1, "prompt", "title too long", id_=None, value="x" * 200),
    ],
    [],
    [
        _error(8, "generate", 'línea\nnueva, 日本語 "quoted"', id_="é-1", value=""),
        _error(9, "read", "bad bytes", id_="", value="\u2028\x00tab\t"),
        _error(11, "postprocess", "empty output", id_=None, value=None),
    ],
    [],
    [_error(12, "validate", "duplicate id of row 3", value="sku")],
]


def _state(tmp_path: Path, windows: list[list[dict[str, Any]]]) -> RunState:
    state = open_state(tmp_path / "state", "fingerprint", {}, restart=False)
    for index, errors in enumerate(windows):
        state.record(index, pa.table({"__row": [index]}), errors, {})
    return state


def test_parquet_error_file_holds_the_jsonl_records(tmp_path: Path) -> None:
    state = _state(tmp_path, WINDOWS)
    jsonl, parquet = tmp_path / "out.errors.jsonl", tmp_path / "out.errors.parquet"
    assert assemble_errors(state, len(WINDOWS), jsonl, parquet=False) == 6
    assert assemble_errors(state, len(WINDOWS), parquet, parquet=True) == 6

    # JSONL: the window files, byte for byte, in window order.
    assert jsonl.read_bytes() == b"".join(state.errors_path(i).read_bytes() for i in range(len(WINDOWS)))
    # Split bytes, not text: str.splitlines would also cut at the raw U+2028 that json.dumps leaves in a value.
    lines = [json.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert lines == [e for w in WINDOWS for e in w]

    # Parquet: the same records in the same order, the contract's types, nulls kept null.
    frame = pl.read_parquet(parquet)
    assert frame.schema == pl.Schema(ERROR_DTYPES)
    assert frame.to_dicts() == lines
    assert frame["value"].null_count() == 2 and frame["id"].null_count() == 2
    for record in frame.to_dicts():
        ErrorRecord.model_validate(record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.errors.jsonl", "out.errors.parquet", "state"]


@pytest.mark.parametrize("n_windows", [0, 3])
def test_no_errors_give_an_empty_parquet_with_the_schema(tmp_path: Path, n_windows: int) -> None:
    state = _state(tmp_path, [[] for _ in range(n_windows)])
    parquet, jsonl = tmp_path / "none.errors.parquet", tmp_path / "none.errors.jsonl"
    assert assemble_errors(state, n_windows, parquet, parquet=True) == 0
    assert assemble_errors(state, n_windows, jsonl, parquet=False) == 0
    assert jsonl.read_bytes() == b""
    frame = pl.read_parquet(parquet)
    assert frame.height == 0 and frame.schema == pl.Schema(ERROR_DTYPES)
    assert pq.read_schema(parquet).names == list(ERROR_DTYPES)


def test_parquet_error_file_is_written_a_window_at_a_time(tmp_path: Path) -> None:
    """One row group per window with errors, in window order: no step held every window's records at once."""
    state = _state(tmp_path, WINDOWS)
    parquet = tmp_path / "out.errors.parquet"
    assemble_errors(state, len(WINDOWS), parquet, parquet=True)
    meta = pq.ParquetFile(parquet).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [len(w) for w in WINDOWS if w] == [2, 3, 1]
    assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {"ZSTD"}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_failed_assembly_leaves_the_previous_error_file(tmp_path: Path, suffix: str) -> None:
    """A window file that cannot be read stops the assembly: the old error file stays whole, no temporary is left."""
    state = _state(tmp_path, WINDOWS)
    path = tmp_path / f"out.errors{suffix}"
    path.write_bytes(b"previous run's errors\n")
    state.errors_path(3).unlink()
    with pytest.raises(FileNotFoundError):
        assemble_errors(state, len(WINDOWS), path, parquet=path.suffix == ".parquet")
    assert path.read_bytes() == b"previous run's errors\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, "state"]
