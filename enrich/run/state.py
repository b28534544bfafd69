"""The resume state beside the output: manifest (fingerprint), journal of finished parts, the run lock.

Every write is atomic (temporary file, fsync, rename) and every part is journaled with its checksum, so a
run killed at any instant leaves either a recorded, intact part or nothing that is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.errors import ConfigError
from enrich.files import no_room, write_bytes
from enrich.run.target import JOURNAL, MANIFEST, clear


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        write_bytes(self.errors_path(index), err_bytes)
        buf = pa.BufferOutputStream()
        pq.write_table(frame, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        write_bytes(self.part_path(index), data)
        entry = {
            "index": index,
            "rows": frame.num_rows,
            "sha256": hashlib.sha256(data).hexdigest(),
            "errors_sha256": hashlib.sha256(err_bytes).hexdigest(),
            **stats,
        }
        entry["check"] = _entry_check(entry)
        line = json.dumps(entry) + "\n"
        try:
            with (self.directory / JOURNAL).open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:  # a torn line is ignored on resume: the window is redone
            raise no_room(err, self.directory / JOURNAL, len(line)) or err from None
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

    def clear_parts(self) -> None:
        """Remove the part files (the output holds their rows now) and parts/ itself where nothing else is in it."""
        clear(self.parts_dir)

    def mark_complete(self, report: dict[str, Any]) -> None:
        manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        manifest.update(complete=True, report=report)
        write_bytes(self.directory / MANIFEST, json.dumps(manifest, indent=2).encode())


def changed_settings(manifest: dict[str, Any], details: dict[str, Any]) -> str:
    """The job fields that differ between a saved run's manifest and this run, with their old and new values."""
    changes: list[str] = []
    before = manifest.get("details", {})
    for key in sorted({*before, *details}):
        _differences(key, before.get(key), details.get(key), changes)
    return "; ".join(changes) or "unknown: the manifest was edited"


def _differences(path: str, old: Any, new: Any, out: list[str]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict) and path not in _OPAQUE:
        for key in sorted({*old, *new}):
            _differences(f"{path}.{key}", old.get(key), new.get(key), out)
        return
    if path in _OPAQUE:
        out.append(_OPAQUE[path])
        return
    field = next((f + path[len(p) :] for p, f in _FIELDS if path == p or path.startswith(p + ".")), path)
    out.append(f"{field} {_brief(old)} -> {_brief(new)}")


def _brief(value: Any) -> str:
    text = "(unset)" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# Fingerprint entries whose values say nothing to a reader (hashes), in words.
_OPAQUE = {"input_identity": "the input file's content", "context.model": "the model"}
# Fingerprint entries -> the job fields (and so the options) that set them.
_FIELDS = (
    ("input", "input.path"),
    ("columns", "input.columns"),
    ("context.sampling", "sampling"),
    ("context.template", "prompt.template"),
    ("context.engine", "model.engine"),
    ("window_rows", "batch.window_rows"),
    ("first_window_rows", "the first window's rows"),
    ("batch_size", "batch.batch_size"),
    ("limit", "run.limit"),
    ("generated_column", "output.generated_column"),
    ("output_columns", "output.columns"),
    ("separators", "input.separator, output.separator"),
)


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
        clear(directory / "parts")
        for p in (directory / JOURNAL, manifest_path):
            p.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"fingerprint": fingerprint, "details": details, "created": time.time(), "complete": False}
    manifest |= note or {}
    write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    (directory / JOURNAL).unlink(missing_ok=True)
    return RunState(directory, fingerprint, {}, resumed=False, warnings=warnings)


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
