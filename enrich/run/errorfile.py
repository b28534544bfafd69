"""The run's error file: the windows' error records joined into one JSON-lines or Parquet file, streamed a
window at a time, and copied (converted where the format changes) for a finished run asked for it elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.errors import InputError
from enrich.files import atomic_file
from enrich.run.state import RunState

# ErrorRecord's fields (enrich/config.py, schemas/error.schema.json); id and value may be null.
_ERROR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("row", pa.int64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("value", pa.string()),
    ]
)


def assemble_errors(state: RunState, n_windows: int, path: Path, parquet: bool) -> int:
    """Concatenate the windows' error files into one JSON-lines (or Parquet) file; returns the count."""
    count = 0
    with atomic_file(path) as out:
        if parquet:
            # A window at a time, a row group each: memory holds one window's errors, not the run's. With no
            # errors at all, still a valid file with the schema.
            with pq.ParquetWriter(out, _ERROR_SCHEMA, compression="zstd") as writer:
                for index in range(n_windows):
                    data = state.errors_path(index).read_bytes()
                    count += data.count(b"\n")
                    _write_lines(writer, data.splitlines())
        else:
            for index in range(n_windows):
                data = state.errors_path(index).read_bytes()
                count += data.count(b"\n")
                out.write(data)
    return count


def _write_lines(writer: pq.ParquetWriter, lines: list[bytes]) -> None:
    """JSON-lines error records as one row group of the Parquet error file (none where there are none)."""
    records = [json.loads(line) for line in lines if line.strip()]
    if records:
        writer.write_table(pa.Table.from_pylist(records, schema=_ERROR_SCHEMA))


def copy_errors(src: Path, src_parquet: bool, dest: Path, dest_parquet: bool) -> None:
    """A finished run's error file at another path, converted between JSON lines and Parquet where the two
    differ; streamed in batches like assemble_errors."""
    try:
        _copy_errors(src, src_parquet, dest, dest_parquet)
    except (ValueError, pa.ArrowException) as err:  # json's decode errors are ValueErrors
        raise InputError(
            f"{src}: the error file is damaged ({str(err).splitlines()[0][:120]}), so it cannot be written to "
            f"{dest}; re-run with --restart to regenerate the run"
        ) from None


def _copy_errors(src: Path, src_parquet: bool, dest: Path, dest_parquet: bool) -> None:
    with atomic_file(dest) as out:
        if src_parquet == dest_parquet:
            with src.open("rb") as f:
                shutil.copyfileobj(f, out)
        elif dest_parquet:
            with pq.ParquetWriter(out, _ERROR_SCHEMA, compression="zstd") as writer, src.open("rb") as f:
                while lines := f.readlines(1 << 24):
                    _write_lines(writer, lines)
        else:
            for batch in pq.ParquetFile(src).iter_batches():
                out.write(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch.to_pylist()).encode()
                )
