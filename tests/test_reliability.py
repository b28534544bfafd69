"""Reliability: real `enrich` processes killed, interrupted, raced and fed bad input.

Kill and signal tests start real subprocesses (no terminal, a cron-like environment) on a 64-row catalog with
the tiny model sampling at a fixed seed, stop them (SIGSTOP) at moments read from their own files, kill or
signal them there, re-run them and compare the output with an uninterrupted run's, byte for byte in content.
`bench/chaos.py` is the long version (20 random moments).

Bad input, each case run through the CLI (`test_bad_input`), with its exit code and message; a refusal also
leaves the folder as it was, logs each problem as a JSON error line with the exit code, and (exit 3) names the
input. The one table of bad input: test_run.py's cases are here.

| case                    | what                                              | exit | message contains                           |
|-------------------------|---------------------------------------------------|------|--------------------------------------------|
| missing_file            | INPUT does not exist                              | 3    | no such file                               |
| glob_matches_nothing    | INPUT is a glob with no match                     | 3    | no such file                               |
| input_is_a_folder       | INPUT is a directory                              | 2    | is a directory                             |
| unknown_input_suffix    | catalog.xlsx                                      | 2    | cannot tell the format from the suffix     |
| unknown_output_suffix   | -o out.json                                       | 2    | cannot tell the format from the suffix     |
| empty_csv               | a 0-byte .csv                                     | 3    | the file is empty                          |
| bom_only_csv            | a .csv holding only a UTF-8 BOM                   | 3    | the file is empty                          |
| empty_parquet           | a 0-byte .parquet                                 | 3    | cannot read it as parquet                  |
| random_bytes_parquet    | noise named .parquet                              | 3    | truncated, damaged or not Parquet          |
| bogus_footer_parquet    | 'PAR1' at both ends, no real footer               | 3    | cannot read it as parquet                  |
| truncated_parquet       | the first half of a real Parquet file             | 3    | truncated, damaged or not Parquet          |
| parquet_named_csv       | a Parquet file named .csv                         | 3    | is a Parquet file named like a CSV         |
| latin1_csv              | a CSV in Latin-1                                  | 3    | not valid UTF-8                            |
| ragged_csv              | a CSV line with more fields than the header       | 3    | line 2 has 4 fields, the header 2          |
| inch_mark_csv           | 12" in a field that is not quoted                 | 3    | inside a field that is not quoted          |
| unclosed_quote_csv      | a CSV quote never closed                          | 3    | cannot read it as csv                      |
| repeated_header_csv     | a CSV header naming 'title' twice                 | 3    | the header repeats the column 'title'      |
| semicolon_csv           | a ';'-separated file                              | 3    | seems ';'-separated                        |
| no_title_column         | no 'title' column                                 | 3    | no column 'title' for the title            |
| mapped_id_missing       | --id-col sku, no such column                      | 3    | no column 'sku' for the id                 |
| title_is_numbers        | the title column is Int64                         | 3    | holds Int64, not text                      |
| title_is_lists          | the title column is List(String)                  | 3    | holds List(String), not text               |
| title_is_bytes          | the title column is Binary                        | 3    | holds Binary, not text                     |
| clash_generated_column  | the input has generated_description               | 2    | --generated-column NAME                    |
| clash_status_column     | the input has enrich_status                       | 2    | 'enrich_status' already exists             |
| output_is_input         | -o the input file                                 | 2    | would overwrite the input                  |
| foreign_output_exists   | -o an existing file enrich did not write          | 2    | pass --overwrite to replace it             |
| output_under_a_file     | -o a path whose parent folder is a file           | 2    | is a file, so the output cannot be written |
| output_in_sysfs         | -o under /sys (not writable, even for root)       | 2    | cannot write the output there              |
| damaged_manifest        | the state's manifest.json is not JSON             | 2    | the resume manifest is damaged             |
| bad_model_reference     | --model no-such-model                             | 2    | not a preset                               |
| negative_limit          | --limit -3                                        | 2    | run.limit                                  |
| zero_window             | --window-rows 0                                   | 2    | batch.window_rows                          |
| temperature_too_high    | --temperature 9                                   | 2    | sampling.temperature                       |
| unknown_template        | --template fancy                                  | 2    | Invalid value for '--template'             |
| vllm_without_gpu        | --engine vllm on this CPU machine                 | 5    | engine 'vllm' needs                        |
| null_titles             | every title null                                  | 6    | 6 rows went to                             |
| blank_titles            | titles of spaces and tabs                         | 6    | 6 rows went to                             |
| null_ids                | every id null                                     | 6    | 6 rows went to                             |
| duplicate_ids           | one id on every row                               | 6    | 5 rows went to                             |
| huge_title_refused      | 100 KB titles with --long-title error             | 6    | 6 rows went to                             |
| huge_title_truncated    | 100 KB titles, default policy: cut and generated  | 0    | run finished                               |
| control_characters      | NUL, BEL and bidi override in titles              | 0    | run finished                               |
| header_only_csv         | a CSV with a header and no rows                   | 0    | run finished                               |
| errors_is_input         | --errors the input file                           | 2    | the error file would overwrite the input   |
| report_is_output        | --report the output file                          | 2    | the report would overwrite the output      |
| errors_in_state_parts   | --errors in OUTPUT.enrich/parts/ (deleted at end) | 2    | would overwrite the run state in           |
| errors_is_a_folder      | --errors an existing folder                       | 2    | the error file would replace a folder      |
| errors_unknown_suffix   | --errors errs.csv                                 | 2    | an error file is .jsonl, or Parquet        |
| internal_column_name    | --set output.columns.enrich_key=__row             | 2    | names starting with __ are enrich's own    |
| ray_incremental         | --engine ray --incremental                        | 2    | not spread over Ray yet                    |
| incremental_limit       | --incremental --limit 2 over an existing output   | 2    | would replace this output                  |
| dry_run_negative_sample | --dry-run --sample -1                             | 2    | run.sample                                 |
| dry_run_no_rows         | --dry-run on a CSV with a header only             | 3    | no rows to sample                          |
| foreign_state_folder    | --state-dir holding a parts/ of the user's        | 2    | which enrich did not write                 |
| input_inside_state      | the input inside --state-dir                      | 2    | the input lies inside the run state folder |
| foreign_errors_file     | --errors an existing file of the user's           | 2    | exists and enrich did not write it         |
| foreign_report_file     | --report an existing file of the user's           | 2    | pass --overwrite to replace it             |
| foreign_default_report  | OUTPUT.report.json exists, enrich did not write it | 2   | exists and enrich did not write it         |
| report_in_model_folder  | --report in a model folder, even with --overwrite | 2    | is a model folder; enrich never writes into one |
| nested_columns_csv_out  | struct and list columns, CSV output               | 2    | columns dims, sizes are nested             |
| utf16_csv               | a CSV in UTF-16 (with its BOM)                    | 3    | is UTF-16                                  |
| input_format_option     | a Parquet file named .data, --input-format parquet | 0   | run finished                               |
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from _support import (
    CATALOG,
    GUARD_S,
    REPO,
    RunEnded,
    call,
    enrich,
    freeze_when,
    holds_lock,
    kill_9,
    parts_done,
    seeded_run_args,
    start,
)

ROWS = 64
WINDOWS = ROWS // 8  # seeded_run_args: windows of 8 rows
run_args = seeded_run_args


def assert_same_as_reference(out: Path, reference: pl.DataFrame) -> None:
    got = pl.read_parquet(out)
    assert got.height == reference.height == ROWS  # exactly one output row per input row
    assert got["id"].to_list() == reference["id"].to_list()
    assert got.equals(reference)


def finish(args: list[str | Path]) -> subprocess.CompletedProcess[str]:
    done = call(*args)
    assert done.returncode == 0, done.stderr
    return done


def state_file(out: Path, name: str) -> Path:
    return Path(f"{out}.enrich") / name


def temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


# -- kill -9 ---------------------------------------------------------------------------------------------------
# Each run is stopped (SIGSTOP) once its files show the moment, so the kill lands there and not later; what the
# files held at the kill is asserted, so a kill that came too late fails the test instead of testing nothing.


def test_kill_9_during_an_incremental_run(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    """Killed mid-way, an incremental run resumes with the same reuse file and ends as a fresh run would."""
    src = tmp_path / "catalog.parquet"
    full = pl.read_parquet(source)
    full.head(ROWS // 2).write_parquet(src)  # yesterday: half the catalog
    out = tmp_path / "out.parquet"
    finish(run_args(src, out, greedy_model, "--incremental"))
    yesterday = out.read_bytes()
    full.write_parquet(src)  # today: the whole catalog, the first half unchanged
    args = run_args(src, out, greedy_model, "--incremental")
    proc = start(*args)
    parts = state_file(out, "parts")  # the finished run's parts went into its output: these are fresh
    freeze_when(proc, lambda: len(list(parts.glob("part-*"))) >= 2, "2 fresh parts saved")
    assert out.read_bytes() == yesterday  # stopped before today's output replaced yesterday's
    kill_9(proc)
    rerun = finish(args)
    assert "resuming:" in rerun.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["copied"] == ROWS // 2 and report["counts"]["generated"] == ROWS // 2
    assert_same_as_reference(out, reference)


# Where in window k a run is stopped: once the k windows before it are saved, once its error file is written, or
# once its part file is written (its journal line, the commit point, comes after both).
PHASES: dict[str, Callable[[Path, int], bool]] = {
    "saved": lambda out, k: parts_done(out) >= k,
    "errors_file": lambda out, k: state_file(out, f"parts/errors-{k:06d}.jsonl").exists(),
    "part_file": lambda out, k: state_file(out, f"parts/part-{k:06d}.parquet").exists(),
}


@pytest.mark.parametrize("seed", [1])
def test_kill_9_at_moments_and_a_random_instant_then_rerun_equals_an_uninterrupted_run(
    seed: int, source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    """One run killed three times, each re-run resuming what the last left: before its first window (the model
    loading), at a seeded random instant inside a middle window (between its error file, part file and journal
    line), and in its last window. Every kill holds the lock and leaves no output; each re-run takes the dead
    run's lock over and resumes from the windows saved; the last ends with an uninterrupted run's rows (sampled:
    each window is seeded by its index). `bench/chaos.py` kills at 20 random instants."""
    rng = random.Random(seed)
    k, phase = rng.randint(1, WINDOWS - 3), rng.choice(list(PHASES))
    kills: list[tuple[str, Callable[[Path], bool], Callable[[int], bool]]] = [
        # the moment, read from the run's files; and the windows saved when it is killed there
        ("before its first window", lambda out: state_file(out, "manifest.json").exists(), lambda n: n == 0),
        (f"{phase} of window {k}", lambda out: PHASES[phase](out, k), lambda n: k <= n < WINDOWS - 1),
        ("in its last window", lambda out: parts_done(out) >= WINDOWS - 1, lambda n: n == WINDOWS - 1),
    ]
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model)
    dead: tuple[int, int] | None = None  # the last killed run's pid, and the windows it left saved
    for moment, reached, saved_then in kills:
        proc = start(*args)
        freeze_when(proc, at_moment(out, proc, reached), moment)
        saved = parts_done(out)
        assert saved_then(saved) and not out.exists(), f"{moment}: stopped with {saved} windows saved"
        err = kill_9(proc)
        assert not out.exists() and parts_done(out) == saved
        assert_took_over(err, dead)
        dead = (proc.pid, saved)
    assert_took_over(finish(args).stderr, dead)
    assert_same_as_reference(out, reference)


def at_moment(out: Path, proc: subprocess.Popen[str], reached: Callable[[Path], bool]) -> Callable[[], bool]:
    return lambda: holds_lock(out, proc) and reached(out)


def assert_took_over(stderr: str, dead: tuple[int, int] | None) -> None:
    """A re-run's log names the killed run whose lock it took, and how many windows it resumes from."""
    if dead is None:
        return
    pid, saved = dead
    assert f"taking over the lock of a run that is gone (pid {pid} on " in stderr, stderr[-3000:]
    if saved:  # killed before its first window, a run leaves nothing to resume: the next starts afresh
        assert f"resuming: {saved} of {WINDOWS} windows already done" in stderr, stderr[-3000:]


def test_kill_9_during_assembly_leaves_no_temporary_file_for_good(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    """Killed while the output's temporary file is written: the re-run removes it and writes the output."""
    out = tmp_path / "out.parquet"
    args = run_args(source, out, greedy_model)
    for attempt in range(
        5
    ):  # the assembly of 64 rows takes milliseconds: a run may rename it before the stop
        proc = start(*args, *(["--restart"] if attempt else []))
        temp = tmp_path / f".out.parquet.{proc.pid}.tmp"
        try:
            freeze_when(proc, temp.exists, "the output's temporary file written", poll_s=0)
        except RunEnded:
            continue  # renamed and finished before the stop: again
        kill_9(proc)
        if temp.exists():
            break
    else:
        pytest.fail("five runs renamed their output before they could be stopped during its assembly")
    finish(args)
    assert not temp.exists() and temps(tmp_path) == []
    assert_same_as_reference(out, reference)


# -- SIGTERM and Ctrl-C ----------------------------------------------------------------------------------------


def test_sigterm_then_ctrl_c_each_save_state_and_exit_130(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    """cron's timeout (SIGTERM), then Ctrl-C (SIGINT) on the resumed run. Each signal goes to a run stopped once
    it has saved 2 windows of its own, so it lands mid-run; each run keeps what it saved, releases its lock, exits
    130 and leaves an interrupted report in the history; the last re-run ends with an uninterrupted run's rows."""
    out = tmp_path / "out.parquet"
    history = tmp_path / "history"
    args = run_args(source, out, greedy_model, "--history-dir", history)
    saved = 0
    for n, sig in enumerate((signal.SIGTERM, signal.SIGINT), start=1):
        proc = start(*args)
        freeze_when(proc, lambda target=saved + 2: parts_done(out) >= target, f"{saved + 2} windows saved")
        at_signal = parts_done(out)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=GUARD_S)
        assert proc.returncode == 130, err
        assert "run the same command to resume" in err and "taking over the lock" not in err
        if saved:
            assert f"resuming: {saved} of {WINDOWS} windows already done" in err
        assert not out.exists()
        saved = parts_done(out)
        assert at_signal <= saved < WINDOWS
        records = sorted(history.glob("*-interrupted.json"))
        assert len(records) == n
        record = json.loads(records[-1].read_text())
        assert record["exit_code"] == 130 and record["counts"]["rows"] == saved * 8
    rerun = finish(args)
    assert f"resuming: {saved} of {WINDOWS} windows already done" in rerun.stderr
    assert "taking over the lock" not in rerun.stderr  # a clean stop releases its lock
    assert_same_as_reference(out, reference)


# -- damaged state ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partial_state(source: Path, greedy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state of a run killed after at least 6 of its 8 windows, before its output (kept for copying)."""
    out = tmp_path_factory.mktemp("partial") / "out.parquet"
    proc = start(*run_args(source, out, greedy_model))
    freeze_when(proc, lambda: parts_done(out) >= 6, "6 windows saved")
    assert not out.exists()  # the parts are still in the state folder
    kill_9(proc)
    return Path(f"{out}.enrich")


def _truncate_part(state: Path) -> str:
    part = state / "parts" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    return "part-000001.parquet: missing or altered since it was written; window 1 is redone"


def _swap_part(state: Path) -> str:
    shutil.copy(state / "parts" / "part-000005.parquet", state / "parts" / "part-000002.parquet")
    return "part-000002.parquet: missing or altered since it was written; window 2 is redone"


def _delete_part(state: Path) -> str:
    (state / "parts" / "part-000003.parquet").unlink()
    return "part-000003.parquet: missing or altered since it was written; window 3 is redone"


def _edit_errors_file(state: Path) -> str:
    with (state / "parts" / "errors-000000.jsonl").open("a") as f:
        f.write(
            json.dumps({"id": "x", "row": 0, "stage": "generate", "reason": "made up", "value": None}) + "\n"
        )
    return "part-000000.parquet: missing or altered since it was written; window 0 is redone"


def _edit_journal_counts(state: Path) -> str:
    lines = (state / "parts.jsonl").read_text().splitlines()
    n, entry = next((n, json.loads(line)) for n, line in enumerate(lines) if json.loads(line)["index"] == 4)
    entry["counts"]["ok"] += 5  # the files are intact; only the numbers lie
    lines[n] = json.dumps(entry)
    (state / "parts.jsonl").write_text("\n".join(lines) + "\n")
    return f"parts.jsonl:{n + 1}: journal line altered since it was written; window 4 is redone"


def _garbage_journal_line(state: Path) -> str:
    lines = (state / "parts.jsonl").read_text().count("\n")
    with (state / "parts.jsonl").open("a") as f:
        f.write('{"index": 7, "rows": 8, "sha25')  # a torn write
    return f"parts.jsonl:{lines + 1}: unreadable journal line ignored"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "truncated_part": _truncate_part,
    "part_swapped_for_another": _swap_part,
    "part_deleted": _delete_part,
    "errors_file_edited": _edit_errors_file,
    "journal_counts_edited": _edit_journal_counts,
    "journal_torn_line": _garbage_journal_line,
}


def test_damaged_state_is_detected_and_redone(
    partial_state: Path, source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    """Six kinds of damage at once, each to its own window: each is named in a warning and its window redone."""
    out = tmp_path / "out.parquet"
    state = Path(f"{out}.enrich")
    shutil.copytree(partial_state, state)  # the fingerprint holds the input, not the output: it resumes here
    warnings = {name: damage(state) for name, damage in DAMAGE.items()}
    rerun = finish(run_args(source, out, greedy_model))
    for name, warning in warnings.items():
        assert warning in rerun.stderr, name
    assert_same_as_reference(out, reference)
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["rows"] == report["counts"]["ok"] + report["counts"]["flagged"] == ROWS


def test_edited_manifest_is_refused_until_restart(
    partial_state: Path, source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    state = Path(f"{out}.enrich")
    shutil.copytree(partial_state, state)
    manifest = state / "manifest.json"
    original = manifest.read_text()
    args = run_args(source, out, greedy_model)
    manifest.write_text(original[:40])
    refused = enrich(*args)  # refusals need no process of their own
    assert refused.exit_code == 2
    assert "the resume manifest is damaged; re-run with --restart" in refused.output
    manifest.write_text(original.replace('"fingerprint": "', '"fingerprint": "0'))
    refused = enrich(*args)
    assert refused.exit_code == 2
    assert "other settings (changed since: unknown: the manifest was edited)" in refused.output
    assert parts_done(out) >= 6  # refusing touched nothing
    finish([*args, "--restart"])
    assert_same_as_reference(out, reference)


def test_input_changed_between_runs_is_refused(source: Path, greedy_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "catalog.parquet"
    shutil.copy(source, src)
    out = tmp_path / "out.parquet"
    args = run_args(src, out, greedy_model)
    proc = start(*args)
    freeze_when(proc, lambda: parts_done(out) >= 2, "2 windows saved")
    assert not out.exists()
    kill_9(proc)
    frame = pl.read_parquet(src)
    frame.with_columns(pl.col("title").str.replace("^", "New: ")).write_parquet(src)
    refused = enrich(*args)
    assert refused.exit_code == 2
    assert "changed since: the input file's content" in refused.output
    assert "re-run with --restart to discard them" in refused.output
    restarted = enrich(*args, "--restart")  # compared with no other run: this process will do
    assert restarted.exit_code == 0, restarted.output
    got = pl.read_parquet(out)
    assert got.height == ROWS and got["title"].str.starts_with("New: ").all()


# -- two runs at once ------------------------------------------------------------------------------------------


def test_two_runs_of_one_job_at_once(
    source: Path, greedy_model: Path, reference: pl.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    job = tmp_path / "job.toml"
    job.write_text(
        f"#:schema {REPO / 'schemas' / 'job.schema.json'}\n"
        f'[input]\npath = "{source}"\n[output]\npath = "out.parquet"\n'
        f'[model]\nref = "{greedy_model}"\n'
        f"[sampling]\ntemperature = 0.8\nmax_new_tokens = 16\nseed = 11\n"  # as seeded_run_args
        f'[batch]\nwindow_rows = 8\nbatch_size = 2\n[run]\nhistory_dir = "history"\n'
    )
    first = start("jobs", "run", job)
    freeze_when(first, lambda: holds_lock(out, first), "the lock taken")  # the overlap is certain, not a race
    try:  # the other runs in this process: the lock is the frozen process's, not this one's
        second = enrich("jobs", "run", job)
        other_output = enrich(*run_args(source, out, greedy_model, "--max-new-tokens", "3"))
        other_state = enrich(*run_args(source, out, greedy_model, "--state-dir", tmp_path / "elsewhere"))
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.exit_code == 4, second.output
    assert re.search(
        rf"locked by another run \(pid {first.pid} on {re.escape(socket.gethostname())}, started 20",
        second.output,
    )
    assert other_output.exit_code == 4  # another command writing the same output is refused as well,
    assert other_state.exit_code == 4, other_state.output  # even with a state folder of its own
    _, err = first.communicate(timeout=GUARD_S)
    assert first.returncode == 0, err
    assert_same_as_reference(out, reference)
    outcomes = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "history").glob("*.json"))
    assert outcomes == ["failed.json", "ok.json"]  # the refused run is in cron's history too


# -- cron conditions -------------------------------------------------------------------------------------------


def test_cron_run_logs_json_lines_only(source: Path, greedy_model: Path, tmp_path: Path) -> None:
    """No terminal, a bare environment, another working folder: stdout stays empty, stderr is JSON lines."""
    out = tmp_path / "out.parquet"
    done = call(*run_args(source, out, greedy_model, "--limit", "16"), cwd=Path("/"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines and all(json.loads(line) for line in lines)
    assert json.loads(lines[-1])["message"] == "run finished"


# -- bad input -------------------------------------------------------------------------------------------------

Maker = Callable[[Path], list[str]]


def _base() -> pl.DataFrame:
    return pl.read_parquet(CATALOG).head(6)


def _pq(frame: pl.DataFrame) -> Maker:
    def make(d: Path) -> list[str]:
        frame.write_parquet(d / "in.parquet")
        return [str(d / "in.parquet")]

    return make


def _raw(name: str, data: bytes, *extra: str) -> Maker:
    def make(d: Path) -> list[str]:
        (d / name).write_bytes(data)
        return [str(d / name), *extra]

    return make


def _with(make: Maker, *extra: str) -> Maker:
    return lambda d: [*make(d), *extra]


def _output(make: Maker, output: Callable[[Path], str]) -> Maker:
    return lambda d: [*make(d), "-o", output(d)]


def _foreign_output(d: Path) -> str:
    _base().write_parquet(d / "theirs.parquet")
    return str(d / "theirs.parquet")


def _under_a_file(d: Path) -> str:
    (d / "blocker").write_text("a file where a folder should be")
    return str(d / "blocker" / "out.parquet")


def _damaged_manifest(d: Path) -> list[str]:
    state = d / "out.parquet.enrich"
    state.mkdir()
    (state / ".enrich-state").write_text('{"written_by": "enrich"}')  # an enrich state, torn manifest
    (state / "manifest.json").write_text('{"fingerprint": ')
    return _pq(_base())(d)


def _foreign_state(d: Path) -> list[str]:
    (d / "mine" / "parts").mkdir(parents=True)
    (d / "mine" / "parts" / "notes.txt").write_text("the user's own")
    return [*_pq(_base())(d), "--state-dir", str(d / "mine")]


def _input_in_state(d: Path) -> list[str]:
    (d / "st").mkdir()
    _base().write_parquet(d / "st" / "in.parquet")
    return [str(d / "st" / "in.parquet"), "--state-dir", str(d / "st")]


def _existing(name: str, option: str | None) -> Maker:
    """An input, and a file of the user's at name that the run would write (by option, or by default)."""

    def make(d: Path) -> list[str]:
        (d / name).write_text("the user's own")
        return [*_pq(_base())(d), *([option, str(d / name)] if option else [])]

    return make


def _model_folder(d: Path) -> list[str]:
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text("{}")
    (d / "model" / "model.safetensors").write_bytes(b"")
    return [*_pq(_base())(d), "--report", str(d / "model" / "report.json"), "--overwrite"]


def _odd_suffix(d: Path) -> list[str]:
    _base().write_parquet(d / "catalog.data")
    return [str(d / "catalog.data"), "--input-format", "parquet"]


def _folder(d: Path) -> list[str]:
    (d / "dir.parquet").mkdir()
    return [str(d / "dir.parquet")]


B = _base
BAD_INPUTS: dict[str, tuple[Maker, int, str]] = {
    "missing_file": (lambda d: [str(d / "nope.parquet")], 3, "no such file"),
    "glob_matches_nothing": (lambda d: [str(d / "none-*.parquet")], 3, "no such file"),
    "input_is_a_folder": (_folder, 2, "is a directory"),
    "unknown_input_suffix": (
        _raw("catalog.xlsx", b"PK\x03\x04"),
        2,
        "cannot tell the format from the suffix",
    ),
    "unknown_output_suffix": (
        _output(_pq(B()), lambda d: str(d / "out.json")),
        2,
        "cannot tell the format from the suffix",
    ),
    "empty_csv": (_raw("e.csv", b""), 3, "the file is empty"),
    "bom_only_csv": (_raw("bom.csv", b"\xef\xbb\xbf"), 3, "the file is empty"),
    "empty_parquet": (_raw("e.parquet", b""), 3, "cannot read it as parquet"),
    "random_bytes_parquet": (
        _raw("r.parquet", bytes(range(256)) * 40),
        3,
        "truncated, damaged or not Parquet",
    ),
    "bogus_footer_parquet": (
        _raw("f.parquet", b"PAR1 this is not parquet PAR1"),
        3,
        "cannot read it as parquet",
    ),
    "truncated_parquet": (
        _raw("t.parquet", CATALOG.read_bytes()[: CATALOG.stat().st_size // 2]),
        3,
        "truncated, damaged or not Parquet",
    ),
    "parquet_named_csv": (_raw("p.csv", CATALOG.read_bytes()), 3, "is a Parquet file named like a CSV"),
    "latin1_csv": (_raw("l.csv", "id,title\n1,Caf\xe9 cr\xe8me\n".encode("latin-1")), 3, "not valid UTF-8"),
    "ragged_csv": (
        _raw("rg.csv", b"id,title\n1,a,extra,more\n2,b\n"),
        3,
        "line 2 has 4 fields, the header 2",
    ),
    "inch_mark_csv": (
        _raw("in.csv", b'id,title\n1,Plain ruler\n2,Stanley 12" steel ruler\n3,Other\n'),
        3,
        "inside a field that is not quoted",  # the whole line names line 3; JSON escapes its quotes
    ),
    "unclosed_quote_csv": (_raw("q.csv", b'id,title\n1,"abc\n2,def\n'), 3, "cannot read it as csv"),
    "repeated_header_csv": (
        _raw("dh.csv", b"id,title,title\n1,a,b\n"),
        3,
        "the header repeats the column 'title'",
    ),
    "semicolon_csv": (_raw("sc.csv", b"id;title\n1;a\n"), 3, "seems ';'-separated"),
    "no_title_column": (_pq(B().drop("title")), 3, "no column 'title' for the title"),
    "mapped_id_missing": (_with(_pq(B()), "--id-col", "sku"), 3, "no column 'sku' for the id"),
    "title_is_numbers": (_pq(B().with_columns(pl.Series("title", range(6)))), 3, "holds Int64, not text"),
    "title_is_lists": (
        _pq(B().with_columns(pl.Series("title", [["a"]] * 6))),
        3,
        "holds List(String), not text",
    ),
    "title_is_bytes": (
        _pq(B().with_columns(pl.lit(b"\xff", pl.Binary).alias("title"))),
        3,
        "holds Binary, not text",
    ),
    "clash_generated_column": (
        _pq(B().with_columns(pl.lit("x").alias("generated_description"))),
        2,
        "--generated-column NAME",
    ),
    "clash_status_column": (
        _pq(B().with_columns(pl.lit("x").alias("enrich_status"))),
        2,
        "'enrich_status' already exists",
    ),
    "output_is_input": (_output(_pq(B()), lambda d: str(d / "in.parquet")), 2, "would overwrite the input"),
    "foreign_output_exists": (_output(_pq(B()), _foreign_output), 2, "pass --overwrite to replace it"),
    "output_under_a_file": (
        _output(_pq(B()), _under_a_file),
        2,
        "is a file, so the output cannot be written",
    ),
    "output_in_sysfs": (
        _output(_pq(B()), lambda d: "/sys/enrich-test-out.parquet"),
        2,
        "cannot write the output there",
    ),
    "damaged_manifest": (_damaged_manifest, 2, "the resume manifest is damaged"),
    "bad_model_reference": (_with(_pq(B()), "--model", "no-such-model"), 2, "not a preset"),
    "negative_limit": (_with(_pq(B()), "--limit", "-3"), 2, "run.limit"),
    "zero_window": (_with(_pq(B()), "--window-rows", "0"), 2, "batch.window_rows"),
    "temperature_too_high": (_with(_pq(B()), "--temperature", "9"), 2, "sampling.temperature"),
    "unknown_template": (_with(_pq(B()), "--template", "fancy"), 2, "Invalid value for '--template'"),
    "vllm_without_gpu": (_with(_pq(B()), "--engine", "vllm"), 5, "engine 'vllm' needs"),
    "null_titles": (_pq(B().with_columns(pl.lit(None, pl.String).alias("title"))), 6, "6 rows went to"),
    "blank_titles": (_pq(B().with_columns(pl.lit(" \t ").alias("title"))), 6, "6 rows went to"),
    "null_ids": (_pq(B().with_columns(pl.lit(None, pl.String).alias("id"))), 6, "6 rows went to"),
    "duplicate_ids": (_pq(B().with_columns(pl.lit("same").alias("id"))), 6, "5 rows went to"),
    "huge_title_refused": (
        _with(_pq(B().with_columns(pl.lit("x" * 100_000).alias("title"))), "--long-title", "error"),
        6,
        "6 rows went to",
    ),
    "huge_title_truncated": (
        _pq(B().with_columns(pl.lit("big " * 25_000).alias("title"))),
        0,
        "run finished",
    ),
    "control_characters": (
        _pq(B().with_columns(pl.lit("ab\x00c\x07d\u202e").alias("title"))),
        0,
        "run finished",
    ),
    "header_only_csv": (_raw("h.csv", b"id,title\n"), 0, "run finished"),
    "errors_is_input": (
        lambda d: [*_pq(B())(d), "--errors", str(d / "in.parquet")],
        2,
        "the error file would overwrite the input",
    ),
    "report_is_output": (
        lambda d: [*_pq(B())(d), "--report", str(d / "out.parquet")],
        2,
        "the report would overwrite the output",
    ),
    "errors_in_state_parts": (
        lambda d: [*_pq(B())(d), "--errors", str(d / "out.parquet.enrich" / "parts" / "e.jsonl")],
        2,
        "would overwrite the run state in",
    ),
    "errors_is_a_folder": (
        lambda d: [*_pq(B())(d), "--errors", str(_mkdir(d / "errs.jsonl"))],
        2,
        "the error file would replace a folder",
    ),
    "errors_unknown_suffix": (
        _with(_pq(B()), "--errors", "errs.csv"),
        2,
        "an error file is .jsonl, or Parquet",
    ),
    "internal_column_name": (
        _with(_pq(B()), "--set", "output.columns.enrich_key=__row"),
        2,
        "names starting with __ are enrich's own",
    ),
    "ray_incremental": (_with(_pq(B()), "--engine", "ray", "--incremental"), 2, "not spread over Ray yet"),
    "incremental_limit": (
        lambda d: [*_pq(B())(d), "--incremental", "--limit", "2", "-o", _foreign_output(d)],
        2,
        "would replace this output",
    ),
    "dry_run_negative_sample": (_with(_pq(B()), "--dry-run", "--sample", "-1"), 2, "run.sample"),
    "dry_run_no_rows": (_raw("h.csv", b"id,title\n", "--dry-run"), 3, "no rows to sample"),
    "foreign_state_folder": (_foreign_state, 2, "which enrich did not write"),
    "input_inside_state": (_input_in_state, 2, "the input lies inside the run state folder"),
    "foreign_errors_file": (_existing("notes.jsonl", "--errors"), 2, "exists and enrich did not write it"),
    "foreign_report_file": (_existing("notes.json", "--report"), 2, "pass --overwrite to replace it"),
    "foreign_default_report": (
        _existing("out.parquet.report.json", None),
        2,
        "exists and enrich did not write it",
    ),
    "report_in_model_folder": (_model_folder, 2, "is a model folder; enrich never writes into one"),
    "nested_columns_csv_out": (
        lambda d: [
            *_pq(B().with_columns(pl.struct(a=pl.lit(1)).alias("dims"), pl.lit([1, 2]).alias("sizes")))(d),
            "-o",
            str(d / "out.csv"),
        ],
        2,
        "columns dims, sizes are nested",
    ),
    "utf16_csv": (_raw("u.csv", "id,title\n1,Caf\xe9\n".encode("utf-16")), 3, "is UTF-16"),
    "input_format_option": (_odd_suffix, 0, "run finished"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_the_docstring_table_lists_every_case() -> None:
    assert __doc__ is not None
    rows = re.findall(r"^\| (\w+) +\|[^|]+\| (\d+) +\| (.+?) +\|$", __doc__, flags=re.M)
    table = {name: (int(code), message) for name, code, message in rows if name != "case"}
    assert table == {name: (code, message) for name, (_, code, message) in BAD_INPUTS.items()}
    assert len(table) >= 30


USAGE_ERRORS = {"unknown_template", "input_is_a_folder"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case: str, tiny_model: Path, tmp_path: Path) -> None:
    make, code, message = BAD_INPUTS[case]
    if case == "output_in_sysfs" and os.access("/sys", os.W_OK) and not Path("/sys/kernel").is_dir():
        pytest.skip("/sys is not sysfs here")
    given = make(tmp_path)
    before = _tree(tmp_path)
    args = [
        "run",
        given[0],
        "-o",
        str(tmp_path / "out.parquet"),
        "--model",
        str(tiny_model),
        "--max-new-tokens",
        "2",
        "--log-format",
        "json",
        *given[1:],
    ]
    result = enrich(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    if code in (0, 6):
        return
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before  # a refused run leaves nothing behind and changes nothing
    if case in USAGE_ERRORS:  # click refuses these while parsing, before enrich's JSON logging starts
        assert result.output.startswith("Usage: ")
        return
    # --log-format json: every line is JSON; each problem is an error line (all at once) with the exit code
    records = [json.loads(line) for line in result.output.splitlines()]
    errors = [r["message"] for r in records if r["level"] == "error" and r["exit_code"] == code]
    assert len(errors) == sum(r["level"] == "error" for r in records) >= 1, records
    assert any(message in e for e in errors)
    if code == 3 or case == "unknown_input_suffix":  # a problem with the input names the input
        assert any(given[0] in e for e in errors)


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with a checksum of its content (folders as 'dir')."""
    import hashlib

    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }
