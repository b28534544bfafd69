"""The files a run writes: only its own, atomically, on a full disk too; and what a resume compares.

Real `enrich` processes (and the CLI in this process where no process is needed) on the 64-row catalog with
the tiny model; a kill -9 during the output's assembly is in test_reliability.py. A full disk is stood in for by a
file-size limit (RLIMIT_FSIZE, which any user may lower and CI can run): writes past it fail with EFBIG, as
they fail with ENOSPC on a full disk, and both take the same path in enrich.
"""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
from _support import (
    REPO,
    call,
    cron_env,
    default_sigint,
    enrich,
    enrich_argv,
    freeze_when,
    holds_lock,
    kill_9,
    parts_done,
    seeded_run_args,
    start,
)

run_args = seeded_run_args  # windows of 8 rows; `reference` (conftest) is an uninterrupted run of these


def call_limited(limit: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`enrich ARGS` with every file it writes limited to `limit` bytes (Python ignores SIGXFSZ: writes fail)."""

    def limited() -> None:
        default_sigint()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = cron_env(PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        enrich_argv(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=600, preexec_fn=limited
    )


def temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def test_full_disk_while_assembling_is_exit_7_and_a_rerun_resumes(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model)
    # Parts of 8 rows fit in 24 KB; the output of 64 rows with every input column does not.
    full = call_limited(24_000, *args)
    assert full.returncode == 7, full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert f"{out}: over the file-size limit" in last and "run the same command again" in last
    assert "Traceback" not in full.stderr
    assert not out.exists() and temps(tmp_path) == []  # no half output, no temporary file left
    rerun = call(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 8 of 8 windows already done" in rerun.stderr
    assert pl.read_parquet(out).equals(reference)


def test_full_disk_while_writing_a_part_is_exit_7_and_a_rerun_resumes(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model)
    full = call_limited(1_500, *args)  # the manifest fits, no part file does
    assert full.returncode == 7, full.stderr
    assert "part-000000.parquet: over the file-size limit" in full.stderr
    assert temps(tmp_path) == []
    rerun = call(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert pl.read_parquet(out).equals(reference)


def test_temporary_files_of_a_dead_writer_are_removed_and_a_live_ones_kept(
    source: Path, greedy_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    dead = tmp_path / ".out.parquet.99999999.tmp"  # no pid reaches this: its writer is gone
    dead.write_bytes(b"half an output")
    live = tmp_path / f".out.parquet.{os.getpid()}.tmp"  # this test process is alive
    live.write_bytes(b"someone is writing")
    report_temp = tmp_path / ".out.parquet.report.json.99999998.tmp"
    report_temp.write_text("{")
    done = call(*run_args(source, out, greedy_model, "--limit", "8"))
    assert done.returncode == 0, done.stderr
    assert not dead.exists() and not report_temp.exists()
    assert live.read_bytes() == b"someone is writing"


def test_a_rerun_keeps_the_outputs_file_mode(source: Path, greedy_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model, "--limit", "8")
    assert enrich(*args).exit_code == 0
    out.chmod(0o640)
    again = enrich(*[*args[:-1], "16"], "--restart")  # another limit: the output is written again
    assert again.exit_code == 0, again.output
    assert pl.read_parquet(out).height == 16
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_only_the_states_own_files_are_deleted(source: Path, greedy_model: Path, tmp_path: Path) -> None:
    """A state folder shared with the user's files: a finished run and a restart delete only enrich's."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "notes.txt").write_text("the user's")
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model, "--limit", "16", "--state-dir", state)
    assert enrich(*args).exit_code == 0
    assert (state / "notes.txt").read_text() == "the user's" and (state / ".enrich-state").is_file()
    assert not (state / "parts").exists()  # the parts are in the output now
    (state / "parts").mkdir()
    (state / "parts" / "mine.parquet").write_bytes(b"the user's too")
    again = enrich(*args, "--restart", "--max-new-tokens", "4")
    assert again.exit_code == 0, again.output
    assert (state / "parts" / "mine.parquet").read_bytes() == b"the user's too"
    assert [p.name for p in (state / "parts").iterdir()] == ["mine.parquet"]


def test_an_edit_that_keeps_size_and_time_is_seen_by_resume(
    greedy_model: Path, source: Path, tmp_path: Path
) -> None:
    src = tmp_path / "catalog.csv"
    pl.read_parquet(source).select("id", "title").write_csv(src)
    out = tmp_path / "out.parquet"
    args = run_args(src, out, greedy_model)
    proc = start(*args)
    freeze_when(proc, lambda: parts_done(out) >= 2, "2 windows saved")
    kill_9(proc)  # a run to resume, which compares its input with the one it started on
    before = src.stat()
    text = src.read_text()
    middle = text.index("\n", len(text) // 2) + 1  # a title in the middle of the file, one letter changed
    line_end = text.index("\n", middle)
    at = next(i for i in range(middle + 20, line_end) if text[i].isalpha())  # a letter of the title
    src.write_text(text[:at] + ("x" if text[at] != "x" else "y") + text[at + 1 :])
    os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert src.stat().st_size == before.st_size and src.stat().st_mtime_ns == before.st_mtime_ns
    refused = enrich(*args)
    assert refused.exit_code == 2, refused.output
    assert "the input file's content" in refused.output


def test_a_locked_run_exits_4_before_torch_or_polars_load(
    source: Path, greedy_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model)
    first = start(*args)
    freeze_when(first, lambda: holds_lock(out, first), "the lock taken")  # holds the lock, certainly
    try:
        second = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "enrich.cli", *map(str, args)],
            cwd=REPO,
            env=cron_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        kill_9(first)  # its run is not what this test is about
    assert second.returncode == 4, second.stderr
    imported = {
        line.split("|")[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")
    }
    assert "click" in imported  # the trace is there
    assert not {"torch", "transformers", "polars"} & imported


def test_a_model_folder_is_never_written(tiny_model: Path, source: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before = sorted(p.name for p in model.iterdir())
    done = enrich(*run_args(source, model / "out.parquet", model, "--overwrite"))
    assert done.exit_code == 2
    assert "is a model folder; enrich never writes into one" in done.output
    assert sorted(p.name for p in model.iterdir()) == before
