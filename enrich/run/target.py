"""What a run writes, and whether it may: its files, the state folder it owns, and the run lock.

enrich deletes or overwrites only what it created. Its state folder carries a marker file of its own, which
also lists the output, error file and report that runs of this output wrote; a file enrich did not write is
replaced only with --overwrite, a model folder's never. Everything here is checked before anything is
created, and a run refused after its lock was taken removes what it created, so a refused run leaves nothing.

Light on purpose: the lock is taken before polars, torch or a model loads, so a second run exits 4 at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.errors import ConfigError, RunLocked
from enrich.files import input_files, is_enrich_page, remove_stale_temps, write_json

if TYPE_CHECKING:
    from enrich.config import JobConfig

MANIFEST = "manifest.json"
JOURNAL = "parts.jsonl"
LOCK = "lock"
MARKER = ".enrich-state"  # the state folder's own mark: enrich wrote this folder
STATE_NAMES = (MANIFEST, JOURNAL, LOCK, "parts", "scratch")
# A folder holding any of these is a model: enrich writes nothing there, not even with --overwrite.
MODEL_FILES = ("enrich.json", "adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Target:
    """The files of one run, resolved from its job: output, error file, report and state folders."""

    output: Path
    errors: Path
    report: Path
    state_dir: Path
    state_option: str  # the option that names the state folder, for messages
    inputs: frozenset[Path]
    history_dir: Path | None
    overwrite: bool
    review: Path | None  # OUTPUT.review.html, where the run writes its review page

    @classmethod
    def of(cls, job: JobConfig) -> Target:
        out = job.output
        inputs = {p.resolve() for p in input_files(job.input.path)} | {Path(job.input.path).resolve()}
        return cls(
            output=Path(out.path),
            errors=out.errors_path(),
            report=out.report_path(),
            state_dir=Path(job.run.state_dir or f"{out.path}.enrich"),
            state_option="--state-dir" if job.run.state_dir else "-o",
            inputs=frozenset(inputs),
            history_dir=Path(job.run.history_dir) if job.run.history_dir else None,
            overwrite=job.output.overwrite,
            review=Path(f"{out.path}.review.html") if job.run.review else None,
        )

    @property
    def state_dirs(self) -> list[Path]:
        """The state folder, and the output's default one where --state-dir puts the state elsewhere: each holds
        a lock, so that two runs writing one output exclude each other whatever state folders they were given."""
        beside = Path(f"{self.output}.enrich")
        same = beside.resolve() == self.state_dir.resolve()
        return [self.state_dir] if same else [self.state_dir, beside]

    def problems(self) -> list[tuple[str, str]]:
        """Everything that forbids this run to write its files: (dotted job path, message) pairs, each message
        naming the file and the option that changes it. Creates nothing."""
        problems = self._overlaps()
        problems += [(d, m) for d, m in (self._state_problem(f) for f in self.state_dirs) if m]
        for dotted, what, option, path in self._files():
            folder = path.parent
            if _is_model_folder(folder):
                problems.append((dotted, f"{path}: {folder} is a model folder; enrich never writes into one; "
                                 f"choose another {option}"))  # fmt: skip
            elif path.is_file() and not self.overwrite and not self._ours(path) and what != "the output":
                problems.append((dotted, f"{path}: exists and enrich did not write it for {self.output}; pass "
                                 f"--overwrite to replace it, or choose another {option}"))  # fmt: skip
        folders = [(self.output.parent, "the output", "-o", "output.path")]
        folders += [(f, "the run state", self.state_option, "run.state_dir") for f in self.state_dirs]
        folders += [(p.parent, what, option, dotted) for dotted, what, option, p in self._files()[1:]]
        if self.history_dir is not None:
            folders.append((self.history_dir, "the report history", "--history-dir", "run.history_dir"))
        problems += [(d, m) for f, what, option, d in folders if (m := _unwritable(f, what, option))]
        return list(dict.fromkeys(problems))  # a folder shared by two files is named once

    def _files(self) -> list[tuple[str, str, str, Path]]:
        files = [
            ("output.path", "the output", "-o", self.output),
            ("output.errors", "the error file", "--errors", self.errors),
            ("output.report", "the report", "--report", self.report),
        ]
        if self.review is not None:
            files.append(("run.review", "the review page", "--no-review", self.review))
        return files

    def _overlaps(self) -> list[tuple[str, str]]:
        """Files that would overwrite the input, each other or the run state, or are folders."""
        states = [s.resolve() for s in self.state_dirs]
        owned = [*states, *(s / n for s in states for n in (MANIFEST, JOURNAL, LOCK, MARKER))]
        owned_folders = [s / n for s in states for n in ("parts", "scratch")]
        problems: list[tuple[str, str]] = []
        seen: dict[Path, str] = {}
        for dotted, what, option, path in self._files():
            real = path.resolve()
            if real in self.inputs:
                why = f"{what} would overwrite the input"
            elif real in seen:
                why = f"{what} would overwrite {seen[real]}"
            elif real in owned or any(f == real or f in real.parents for f in owned_folders):
                why = f"{what} would overwrite the run state in {self.state_dir}"
            elif path.is_dir():
                why = f"{what} would replace a folder"
            else:
                seen[real] = what
                continue
            problems.append((dotted, f"{path}: {why}; choose another {option}"))
        for state in states:
            inside = sorted(str(p) for p in self.inputs if state in p.parents)
            if inside:
                problems.append(("run.state_dir", f"{inside[0]}: the input lies inside the run state folder "
                                 f"{state}; choose another {self.state_option}"))  # fmt: skip
        return problems

    def _state_problem(self, folder: Path) -> tuple[str, str | None]:
        """A state folder that enrich did not write, or that is a file or a model folder."""
        if _is_model_folder(folder):
            return "run.state_dir", f"{folder}: is a model folder; choose another {self.state_option}"
        if not folder.exists() or (folder / MARKER).is_file():
            return "run.state_dir", None
        if not folder.is_dir():
            return "run.state_dir", f"{folder}: is a file, not a folder; choose another {self.state_option}"
        found = [n for n in STATE_NAMES if (folder / n).exists()]
        if not found or _earlier_state(folder, found):
            return "run.state_dir", None
        return "run.state_dir", (
            f"{folder}: holds {', '.join(found)}, which enrich did not write (no {MARKER} in it); enrich would "
            f"delete them: choose another {self.state_option}"
        )

    def _ours(self, path: Path) -> bool:
        """Whether an existing error file or report is an earlier one of this output: the state's marker lists
        it, or it is a report of this output, or such a report names it as its error file."""
        real = path.resolve()
        if real in self.written() or (path == self.review and is_enrich_page(path)):
            return True
        report = _read_json(self.report)
        if not (report and _same_path(report.get("output"), self.output)):
            return False
        return real == self.report.resolve() or _same_path(report.get("errors_file"), path)

    def written(self) -> set[Path]:
        """The files that runs of this output wrote, as their state folders' markers list them."""
        found: set[Path] = set()
        for folder in self.state_dirs:
            found |= {Path(p) for p in (_read_json(folder / MARKER) or {}).get("written", [])}
        return found

    def record_written(self, *paths: Path) -> None:
        """Add files this run wrote to the markers, so that the next run may replace them."""
        for folder in self.state_dirs:
            marker = _read_json(folder / MARKER) or _marker(self.output)
            listed = set(marker.get("written", []))
            new = listed | {str(p.resolve()) for p in paths}
            if new != listed:
                write_json(folder / MARKER, {**marker, "written": sorted(new)})

    def hold(self) -> Held:
        """Create the state folders (with their marker) and take their locks; RunLocked names the holder."""
        held = Held()
        try:
            for folder in self.state_dirs:
                made = [p for p in (folder, *folder.parents) if not p.exists()]
                held.created += made
                if made:
                    held.created_states.append(folder)
                folder.mkdir(parents=True, exist_ok=True)
                marker = folder / MARKER
                if not marker.is_file():
                    marker.write_text(json.dumps(_marker(self.output)) + "\n", encoding="utf-8")
                    held.created_files.append(marker)
                lock_path = folder / LOCK
                if not lock_path.exists():
                    held.created_files.append(lock_path)
                lock, warning = acquire_lock(lock_path, str(self.output))
                held.locks.append(lock)
                held.warnings += [warning] if warning else []
        except BaseException:
            held.release()
            raise
        return held


@dataclass
class Held:
    """The locks a run holds, and what taking them created: removed again when the run is refused."""

    locks: list[Lock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)  # folders this run made, deepest first
    created_states: list[Path] = field(default_factory=list)  # state folders among them
    created_files: list[Path] = field(default_factory=list)
    kept: bool = False  # the run finished: its state stays

    def keep(self) -> None:
        self.kept = True

    def release(self) -> None:
        """Release the locks. A run that failed before it saved a window (refused, no engine, stopped early)
        removes what it created: the state folders it made, with their files, and its marker and lock files."""
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []
        if self.kept:
            return
        for folder in self.created_states:
            journal = folder / JOURNAL
            if journal.is_file() and journal.stat().st_size:
                continue  # windows are saved there: a re-run resumes from them
            for name in (MANIFEST, JOURNAL):
                (folder / name).unlink(missing_ok=True)
            for sub in ("parts", "scratch"):
                clear(folder / sub)
        for path in self.created_files:
            if not (path.parent in self.created_states and (path.parent / JOURNAL).is_file()):
                path.unlink(missing_ok=True)
        for folder in self.created:
            with contextlib.suppress(OSError):  # only where it is empty: nothing of anyone else's goes
                folder.rmdir()


# The files a run writes in parts/ and scratch/: only these are ever deleted there.
_OWN_FILES = re.compile(r"(part|errors|ids)-\d+\.(parquet|jsonl|bin)|reuse\.(parquet|json)|keys\.parquet")


def clear(folder: Path) -> None:
    """Delete the files enrich writes in a state subfolder (parts/, scratch/) and the folder where it is then
    empty: a file of anyone else's stays."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if _OWN_FILES.fullmatch(p.name):
            p.unlink(missing_ok=True)
        elif p.name.startswith(".") and p.name.endswith(".tmp"):
            remove_stale_temps(folder / p.name[1:].rsplit(".", 2)[0])
    with contextlib.suppress(OSError):  # not empty: something enrich did not write is there
        folder.rmdir()


def _marker(output: Path) -> dict[str, Any]:
    return {"written_by": "enrich", "output": str(output.resolve()), "written": []}


def _earlier_state(folder: Path, found: list[str]) -> bool:
    """A state folder written before states carried a marker: a manifest of enrich's, or a lone lock file."""
    manifest = _read_json(folder / MANIFEST)
    if manifest is not None and {"fingerprint", "details"} <= manifest.keys():
        return True
    if found == [LOCK] and (folder / LOCK).is_file():
        text = (folder / LOCK).read_text(encoding="utf-8", errors="replace").strip()
        return not text or '"pid"' in text
    return False


def _is_model_folder(folder: Path) -> bool:
    """A folder holding enrich.json or an adapter, or a config beside weights."""
    if any((folder / name).is_file() for name in MODEL_FILES):
        return True
    return (folder / "config.json").is_file() and any(
        any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.gguf", "*.bin")
    )


def _unwritable(folder: Path, what: str, option: str) -> str | None:
    """Why files cannot be created under folder (its nearest existing ancestor decides), or None. The probe
    file is created and removed in that ancestor: nothing is left behind."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is None:
        return f"{folder}: no existing parent folder; choose another {option}"
    if not blocker.is_dir():
        return f"{blocker}: is a file, so {what} cannot be written under it; choose another {option}"
    probe = blocker / f".enrich-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        return f"{folder}: cannot write {what} there ({err.strerror or err}); choose another {option}"
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_path(recorded: Any, path: Path) -> bool:
    return isinstance(recorded, str) and bool(recorded) and Path(recorded).resolve() == path.resolve()


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


def require_problem_free(target: Target) -> None:
    """Raise ConfigError listing every problem of the target, one line each."""
    problems = target.problems()
    if problems:
        raise ConfigError("\n".join(message for _, message in problems))
