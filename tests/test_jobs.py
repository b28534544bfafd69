"""Job files: every file in jobs/ loads, validates against the schema and runs; validate, show and overrides."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from _support import CATALOG, REPO, enrich

from enrich.config import JobConfig
from enrich.contracts import RunReport
from enrich.run import history
from enrich.run.jobs import load_job

JOB_FILES = sorted((REPO / "jobs").glob("*.toml"))
JOB_SCHEMA = json.loads((REPO / "schemas" / "job.schema.json").read_text(encoding="utf-8"))


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    """A copy of the repository's jobs/ and examples/, so that the jobs' relative paths write into tmp_path."""
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def test_there_are_the_three_example_jobs() -> None:
    assert {p.name for p in JOB_FILES} >= {"nightly.toml", "hourly-incremental.toml", "dry-run-sample.toml"}


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_job_file_loads_and_matches_the_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#:schema ../schemas/job.schema.json\n")
    jsonschema.validate(tomllib.loads(text), JOB_SCHEMA)
    job = load_job(path)
    assert isinstance(job, JobConfig)
    assert Path(job.input.path) == CATALOG  # relative to the file, not the cwd
    r = enrich("jobs", "validate", path)
    assert r.exit_code == 0, r.output
    assert f"ok: {path}" in r.output


def test_nightly_job_runs(sandbox: Path, tiny_model: Path) -> None:
    job = sandbox / "jobs" / "nightly.toml"
    r = enrich("jobs", "run", job, "--model", tiny_model, "--max-new-tokens", "4", "--limit", "40")
    assert r.exit_code == 0, r.output
    out = sandbox / "out" / "nightly" / "catalog.enriched.parquet"
    frame = pl.read_parquet(out)
    assert frame.height == 40
    assert (
        frame["id"].to_list()
        == pl.read_parquet(sandbox / "examples" / "catalog.parquet")["id"].head(40).to_list()
    )
    assert (sandbox / "out" / "nightly" / "catalog.errors.jsonl").read_text() == ""
    history = list((sandbox / "out" / "nightly" / "history").glob("*-ok.json"))
    assert len(history) == 1
    assert json.loads(history[0].read_text())["counts"]["generated"] == 40


def test_hourly_incremental_job_runs_twice(sandbox: Path, greedy_model: Path) -> None:
    job = sandbox / "jobs" / "hourly-incremental.toml"
    args = ("jobs", "run", job, "--model", greedy_model, "--max-new-tokens", "4", "--limit", "30")
    first = enrich(*args)
    assert first.exit_code == 0, first.output
    out = sandbox / "out" / "hourly" / "catalog.enriched.parquet"
    before = pl.read_parquet(out)
    # An hour later two titles changed: only those two are generated; the rest is copied.
    catalog = sandbox / "examples" / "catalog.parquet"
    frame = pl.read_parquet(catalog)
    titles = frame["title"].to_list()
    titles[3] = titles[3] + " (2-pack)"
    titles[17] = "Renamed: " + titles[17]
    frame.with_columns(pl.Series("title", titles)).write_parquet(catalog)
    second = enrich(*args)
    assert second.exit_code == 0, second.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["generated"] == 2 and report["counts"]["copied"] == 28
    after = pl.read_parquet(out)
    same = [i for i in range(30) if i not in (3, 17)]
    assert after[same].equals(before[same])
    history_dir = sandbox / "out" / "hourly" / "history"
    assert len(list(history_dir.glob("*.json"))) == 2
    # Two runs of one process in the same second (CliRunner, a fast machine) keep two reports, in start order.
    kept = [history.keep(str(history_dir), RunReport.model_validate(report)) for _ in range(2)]
    assert kept[0] != kept[1] and sorted(history_dir.glob("*.json"))[-2:] == kept
    assert json.loads(kept[1].read_text())["counts"] == report["counts"]


def test_dry_run_job_prints_and_writes_nothing(sandbox: Path, tiny_model: Path) -> None:
    job = sandbox / "jobs" / "dry-run-sample.toml"
    r = enrich("jobs", "run", job, "--model", tiny_model, "--max-new-tokens", "4", "--log-format", "json")
    assert r.exit_code == 0, r.output
    shown = json.loads(next(line for line in r.output.splitlines() if '"dry run"' in line))
    assert len(shown["rows"]) == 12 and shown["total_rows"] == 200
    assert not (sandbox / "out").exists()


def test_command_line_overrides_the_file() -> None:
    job = REPO / "jobs" / "nightly.toml"
    r = enrich(
        "jobs",
        "show",
        job,
        "--format",
        "json",
        "--limit",
        "5",
        "--temperature",
        "0.5",
        "--incremental",
        "--set",
        "policies.empty=flag",
        "--set",
        "batch.window_rows=8",
        "--set",
        "output.path=/tmp/x.csv",
    )
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["run"]["limit"] == 5 and shown["run"]["incremental"] is True
    assert shown["sampling"]["temperature"] == 0.5 and shown["sampling"]["seed"] == 0  # the file's, untouched
    assert shown["policies"]["empty"] == "flag" and shown["batch"]["window_rows"] == 8
    assert shown["output"]["path"] == "/tmp/x.csv"
    assert shown["output"]["errors"] == str(REPO / "out" / "nightly" / "catalog.errors.jsonl")
    plain = json.loads(enrich("jobs", "show", job, "--format", "json").output)
    assert plain["run"]["limit"] is None and plain["sampling"]["temperature"] is None  # the model's own


def test_show_prints_toml_that_loads_back(tmp_path: Path) -> None:
    r = enrich("jobs", "show", REPO / "jobs" / "hourly-incremental.toml")
    assert r.exit_code == 0, r.output
    (tmp_path / "resolved.toml").write_text(r.output)
    assert load_job(tmp_path / "resolved.toml") == load_job(REPO / "jobs" / "hourly-incremental.toml")
    assert "# report = (not set)" in r.output  # TOML has no null: an unset field is shown as a comment
    # Text that needs escaping (quotes, backslashes, a tab separator, control characters) is written as TOML.
    odd = ("--separator", "\\t", "--set", 'output.generated_column="a \\"b\\" \\\\ c\\n\\u0001"')
    r = enrich("jobs", "show", REPO / "jobs" / "nightly.toml", *odd)
    assert r.exit_code == 0, r.output
    (tmp_path / "odd.toml").write_text(r.output)
    shown = load_job(tmp_path / "odd.toml")
    assert shown.input.separator == "\t" and shown.output.generated_column == 'a "b" \\ c\n\x01'


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[input]\npath = "missing.parquet"\ncolums = { title = "name" }\n'
        '[output]\npath = "out.xlsx"\n'
        '[sampling]\ntemperature = -1\nmax_new_tokens = "many"\n'
        '[policies]\nempty = "ignore"\n'
        '[model]\nref = "no-such-model"\n'
    )
    good = REPO / "jobs" / "nightly.toml"
    r = enrich("jobs", "validate", good, bad)
    assert r.exit_code == 2, r.output
    assert f"ok: {good}" in r.output
    for dotted in ("input.colums", "sampling.temperature", "sampling.max_new_tokens", "policies.empty"):
        assert f"{bad}: {dotted}:" in r.output
    # A file whose fields are valid still gets checked against the machine, every problem listed.
    bad.write_text(
        '[input]\npath = "missing.parquet"\n[output]\npath = "out.xlsx"\n[model]\nref = "no-such-model"\n'
    )
    r = enrich("jobs", "validate", bad)
    assert r.exit_code == 2
    assert f"{bad}: input.path: {tmp_path / 'missing.parquet'}: no such file" in r.output
    assert f"{bad}: output.path:" in r.output and "suffix" in r.output
    assert f"{bad}: model.ref:" in r.output
    # One line per problem in either log format: JSON lines for cron, `error:` lines on a terminal.
    r = enrich("jobs", "validate", bad, "--log-format", "json")
    problems = [json.loads(line) for line in r.output.splitlines()]
    assert len(problems) == 3 and all(p["level"] == "error" and p["exit_code"] == 2 for p in problems)
    r = enrich("jobs", "validate", bad, "--log-format", "text")
    assert [line.split(": ")[0] for line in r.output.splitlines()] == ["error"] * 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[input\npath = 1", "not valid TOML"),
        ('[output]\npath = "o.parquet"\n', "input: Field required"),
        (
            '[input]\npath = "a.parquet"\n[output]\npath = "o.parquet"\n[run]\nlog_format = "xml"\n',
            "run.log_format",
        ),
        (
            '[input]\npath = "a.parquet"\n[output]\npath = "o.parquet"\n[batch]\nwindow_rows = 0\n',
            "batch.window_rows",
        ),
    ],
)
def test_validate_messages(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "job.toml"
    bad.write_text(text)
    r = enrich("jobs", "validate", bad)
    assert r.exit_code == 2
    assert expected in r.output


def test_output_folder_that_is_a_file_is_a_validation_problem(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\npath = "{CATALOG}"\n[output]\npath = "blocker/out.parquet"\n')
    r = enrich("jobs", "validate", job)
    assert r.exit_code == 2
    assert (
        f"output.path: {tmp_path / 'blocker'}: is a file, so the output cannot be written under it"
        in r.output
    )


def test_set_needs_key_and_value() -> None:
    r = enrich("jobs", "show", REPO / "jobs" / "nightly.toml", "--set", "policies.empty")
    assert r.exit_code == 2 and "expected DOTTED.KEY=VALUE" in r.output


def test_a_model_folder_in_a_job_file_is_relative_to_the_file(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cron starts in another folder: `ref = "./models/shop"` names the folder beside the job file; a preset
    name stays a preset name."""
    jobs = tmp_path / "jobs"
    (jobs / "models").mkdir(parents=True)
    (jobs / "models" / "shop").symlink_to(tiny_model)
    shutil.copy(CATALOG, jobs / "catalog.parquet")
    job = jobs / "a.toml"
    job.write_text(
        '[input]\npath = "catalog.parquet"\n[output]\npath = "out.parquet"\n[model]\nref = "./models/shop"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = enrich("jobs", "validate", job)
    assert r.exit_code == 0, r.output
    assert load_job(job).model.ref == str(jobs / "models" / "shop")
    job.write_text(
        '[input]\npath = "catalog.parquet"\n[output]\npath = "out.parquet"\n[model]\nref = "smollm2-135m"\n'
    )
    assert load_job(job).model.ref == "smollm2-135m"
