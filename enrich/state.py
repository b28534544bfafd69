"""The resume state beside the output: manifest (fingerprint), journal of finished parts, the run lock.

Every write is atomic (temporary file, fsync, rename) and every part is journaled with its checksum, so a
run killed at any instant leaves either a recorded, intact part or nothing that is trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.errors import ConfigError, RunLocked

MANIFEST = "manifest.json"


JOURNAL = "parts.jsonl"


LOCK = "lock"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, then rename: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON document atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def read_manifest(directory: Path) -> dict[str, Any]:
    """The state's manifest, or {} where there is none or it cannot be read (open_state reports that)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


@dataclass
class RunState:
    """The resume state beside the output: a manifest (fingerprint) and a journal of finished parts."""

    directory: Path
    fingerprint: str
    parts: dict[int, dict[str, Any]]
    resumed: bool
    warnings: list[str]

    @property
    def parts_dir(self) -> Path:
        return self.directory / "parts"

    def part_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:06d}.parquet"

    def errors_path(self, index: int) -> Path:
        return self.parts_dir / f"errors-{index:06d}.jsonl"

    def record(
        self, index: int, frame: pa.Table, errors: list[dict[str, Any]], stats: dict[str, Any]
    ) -> None:
        """Write a window's part and error files atomically, then journal them (the commit point)."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        err_bytes = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors).encode()
        atomic_write_bytes(self.errors_path(index), err_bytes)
        buf = pa.BufferOutputStream()
        pq.write_table(frame, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        atomic_write_bytes(self.part_path(index), data)
        entry = {
            "index": index,
            "rows": frame.num_rows,
            "sha256": hashlib.sha256(data).hexdigest(),
            "errors_sha256": hashlib.sha256(err_bytes).hexdigest(),
            **stats,
        }
        entry["check"] = _entry_check(entry)
        with (self.directory / JOURNAL).open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.parts[index] = entry

    def progress(
        self, rows_done: int, rows_total: int, fresh_rows: int, fresh_tokens: int, elapsed: float
    ) -> dict[str, Any]:
        """A `progress` event: rows saved (resumed ones included), errors so far, this process's rates and the
        time left at its rate (None before its first window)."""
        rate = fresh_rows / elapsed
        return {
            "rows_done": rows_done,
            "rows_total": rows_total,
            "errors": sum(p["counts"]["error"] for p in self.parts.values()),
            "rows_per_s": rate,
            "output_tokens_per_s": fresh_tokens / elapsed,
            "elapsed_s": elapsed,
            "eta_s": (rows_total - rows_done) / rate if rate > 0 else None,
        }

    def mark_complete(self, report: dict[str, Any]) -> None:
        manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        manifest.update(complete=True, report=report)
        atomic_write_bytes(self.directory / MANIFEST, json.dumps(manifest, indent=2).encode())


def changed_settings(manifest: dict[str, Any], details: dict[str, Any]) -> str:
    """The settings that differ between a saved run's manifest and this run, in words."""
    before = manifest.get("details", {})
    changed = [_SETTING_WORDS.get(k, k) for k in {**before, **details} if before.get(k) != details.get(k)]
    return ", ".join(changed) or "unknown: the manifest was edited"


def open_state(
    directory: Path,
    fingerprint: str,
    details: dict[str, Any],
    restart: bool,
    note: dict[str, Any] | None = None,
) -> RunState:
    """Load or start the resume state; a different fingerprint refuses to mix results unless restart. note:
    facts kept in a new manifest beside the details, outside the fingerprint (a resume finds them there)."""
    manifest_path = directory / MANIFEST
    warnings: list[str] = []
    if manifest_path.is_file() and not restart:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            old = manifest["fingerprint"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            raise ConfigError(
                f"{manifest_path}: the resume manifest is damaged; re-run with --restart to start over"
            ) from None
        if old != fingerprint:
            raise ConfigError(
                f"{directory}: holds an unfinished run with other settings (changed since: "
                f"{changed_settings(manifest, details)}); its results cannot be mixed with "
                "this run's: re-run with --restart to discard them, or use another --state-dir"
            )
        parts = _load_journal(directory, warnings)
        return RunState(directory, fingerprint, parts, resumed=bool(parts), warnings=warnings)
    if directory.exists():
        for p in [*directory.glob("parts/*"), directory / JOURNAL, manifest_path]:
            p.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"fingerprint": fingerprint, "details": details, "created": time.time(), "complete": False}
    manifest |= note or {}
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    (directory / JOURNAL).unlink(missing_ok=True)
    return RunState(directory, fingerprint, {}, resumed=False, warnings=warnings)


_SETTING_WORDS = {
    "input": "the input path",
    "input_identity": "the input file's content",
    "columns": "the column mapping",
    "context": "the model, template or sampling",
    "window_rows": "the window size",
    "batch_size": "the batch size",
    "limit": "the row limit",
    "policies": "the policies",
    "generated_column": "the generated column's name",
    "output_columns": "the output column names",
}


def _entry_check(entry: dict[str, Any]) -> str:
    """A checksum of a journal line's own fields, so that an edit to any of them is detected."""
    body = {k: v for k, v in entry.items() if k != "check"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _load_journal(directory: Path, warnings: list[str]) -> dict[int, dict[str, Any]]:
    """Journal entries whose files are intact; anything else is redone, never mixed in."""
    parts: dict[int, dict[str, Any]] = {}
    journal = directory / JOURNAL
    if not journal.is_file():
        return parts
    for n, line in enumerate(journal.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
            index = int(entry["index"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            warnings.append(f"{journal}:{n}: unreadable journal line ignored; its window is redone")
            continue
        if entry.get("check") != _entry_check(entry):  # an edited count or checksum would mix into the report
            warnings.append(
                f"{journal}:{n}: journal line altered since it was written; window {index} is redone"
            )
            continue
        part = directory / "parts" / f"part-{index:06d}.parquet"
        errs = directory / "parts" / f"errors-{index:06d}.jsonl"
        if (
            not (part.is_file() and errs.is_file())
            or sha256_file(part) != entry.get("sha256")
            or (sha256_file(errs) != entry.get("errors_sha256"))
        ):
            warnings.append(f"{part}: missing or altered since it was written; window {index} is redone")
            continue
        parts[index] = entry
    return parts


@dataclass
class Lock:
    """An flock on a file; the kernel drops it when the holder dies, kill -9 included."""

    path: Path
    fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)


def acquire_lock(path: Path, what: str) -> tuple[Lock, str | None]:
    """Take the lock or raise RunLocked naming the holder; returns a warning when a dead run's lock is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunLocked(
            f"{what} is locked by another run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}); wait for it or stop it ({path})"
        ) from None
    previous = _read_holder(fd)
    warning = None
    if previous.get("pid"):
        warning = (
            f"taking over the lock of a run that is gone (pid {previous['pid']} on {previous.get('host', '?')}, "
            f"started {previous.get('started', '?')})"
        )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return Lock(path, fd), warning


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        return dict(json.loads(data)) if data.strip() else {}
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return {}
