"""Exceptions and the exit codes they map to: the one place that decides how a run ends."""

from __future__ import annotations

import errno


class EnrichError(Exception):
    """An expected failure with a one-line message for the user."""

    exit_code = 1


class ConfigError(EnrichError):
    """Usage or configuration error: a bad option, job file or model reference."""

    exit_code = 2


class InputError(EnrichError):
    """The input is unreadable or invalid as a whole (missing column, corrupt file, not UTF-8)."""

    exit_code = 3


class RunLocked(EnrichError):
    """Another live run holds the lock on this output."""

    exit_code = 4


class EngineError(EnrichError):
    """The inference engine failed: out of memory, no GPU where one is needed, missing package."""

    exit_code = 5


class PartialFailure(EnrichError):
    """The run finished but some rows went to the error file."""

    exit_code = 6


class DiskFull(EnrichError):
    """A write found no room (disk full, quota, file-size limit): what was saved is kept; free space and re-run."""

    exit_code = 7


class Interrupted(EnrichError):
    """SIGINT/SIGTERM: state is saved and a re-run resumes."""

    exit_code = 130


def exit_codes() -> dict[int, str]:
    """Every exit code enrich ends with and what it means: 0, Python's own 1 for a bug, and each error's."""
    errors = {c.exit_code: (c.__doc__ or "").split(":")[0] for c in _subclasses(EnrichError)}
    return {0: "ok", 1: "a bug (the traceback is kept)", **dict(sorted(errors.items()))}


def _subclasses(cls: type[EnrichError]) -> list[type[EnrichError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def exit_code_of(err: BaseException) -> int:
    """The exit code a failure ends the process with (the CLI and the run history alike)."""
    if isinstance(err, EnrichError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return Interrupted.exit_code
    if is_no_room(err):
        return DiskFull.exit_code
    return 1


def is_no_room(err: BaseException) -> bool:
    """Whether a write failed for want of room: a full disk, a quota, a file-size limit (errno, or the words a
    library that wraps the OSError keeps of it)."""
    text = str(err).lower()
    return getattr(err, "errno", None) in _NO_ROOM or "no space left" in text or "file too large" in text


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # disk full, quota, file-size limit (ulimit -f)
