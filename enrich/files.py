"""Writing files safely: the one home of atomic writes, of their temporary files, and of a full disk.

Every file enrich writes goes through `atomic_file`: a temporary file beside the target, named
`.NAME.PID.tmp`, synced and renamed onto it, so that a crash at any instant leaves the previous file or the
complete new one. A kill -9 can leave the temporary file behind; `remove_stale_temps` removes those whose
writer is gone. A full disk (or a file-size limit) becomes `DiskFull` naming the file and the room it needs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from enrich.errors import DiskFull, EnrichError, is_no_room


def input_files(path: str) -> Iterator[Path]:
    """The input's files: those a glob matches, in name order, or the one file."""
    if any(c in path for c in "*?["):
        yield from sorted(Path().glob(path) if not Path(path).is_absolute() else Path("/").glob(path[1:]))
    elif Path(path).is_file():
        yield Path(path)


def temp_path(path: Path) -> Path:
    """The temporary file that stands in for path while it is written: hidden, and named by its writer."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make a rename in directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, needed: int = 0) -> Iterator[BinaryIO]:
    """A temporary file beside path, renamed onto it (both synced) when the block ends without an error.

    A replaced file keeps its permission bits (a catalog shared with a group stays shared). On any error the
    temporary file is removed; a full disk is raised as DiskFull, with needed (bytes, 0 if unknown) in it.
    """
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # created when the first file is written into it
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        raise no_room(err, path, needed) or err from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write data to path atomically."""
    with atomic_file(path, len(data)) as f:
        f.write(data)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON document atomically."""
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def no_room(err: BaseException, path: Path | str | None, needed: int = 0) -> DiskFull | None:
    """The DiskFull that an OSError (or a library's error carrying its text) stands for, or None."""
    if not is_no_room(err):
        return None
    code = getattr(err, "errno", None)
    text = str(err).lower()
    where = Path(path) if path is not None else Path(getattr(err, "filename", None) or ".")
    if code == errno.EFBIG or "file too large" in text:
        why = "over the file-size limit of this process (ulimit -f)"
    elif code == errno.EDQUOT:
        why = "over the disk quota"
    else:
        why = "no space left on the device"
    free = _free_bytes(where)
    room = f"it needs about {_mb(needed)} free, {_mb(free)} are" if needed else f"{_mb(free)} are free"
    return DiskFull(
        f"{where}: {why} ({room}); free some space and run the same command again: "
        "what was saved is kept and the run resumes"
    )


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of path (`.NAME.PID.tmp`) whose writer is gone: what a kill -9 during a
    write left behind. A live writer's file is kept. Returns the files removed."""
    removed = []
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for p in path.parent.iterdir():
            pid = p.name[len(prefix) : -len(".tmp")]
            if (
                p.name.startswith(prefix)
                and p.name.endswith(".tmp")
                and pid.isdigit()
                and not _alive(int(pid))
            ):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing before it cleans up: a file with its pid is an old one's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def read_json_object(path: Path, what: str, error: type[EnrichError], remedy: str = "") -> dict[str, Any]:
    """A JSON file that must hold an object (a report, enrich.json): its dict, or error naming the file as not
    being what, then the remedy (FileNotFoundError is the caller's: some files may be absent, others not)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path}: not {what} ({err}){remedy}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not {what} (not a JSON object){remedy}")
    return data


def is_eval_report(path: Path) -> bool:
    """Whether a file is an eval report that enrich wrote (an object with its data, rows and models)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("models"), dict) and {"data", "rows"} <= data.keys()


def is_enrich_page(path: Path) -> bool:
    """Whether a file is a page that enrich wrote (its generator mark, in its first lines)."""
    try:
        with path.open("rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return b'<meta name="generator" content="enrich">' in head
