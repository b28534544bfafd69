"""Incremental runs: unchanged rows are copied from the previous output, only new or edited rows generated."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from _support import RESULT_COLUMNS, enrich, greedy_run_args


def run_args(src: Path, out: Path, model: Path, *extra: str) -> list[str | Path]:
    """Greedy, 4 new tokens, windows of 8 rows, JSON logs."""
    return greedy_run_args(src, out, model, 8, "--log-format", "json", *extra, max_new_tokens=4)


def run(src: Path, out: Path, model: Path, *extra: str) -> dict[str, object]:
    r = enrich(*run_args(src, out, model, *extra))
    assert r.exit_code == 0, r.output
    return dict(json.loads(Path(f"{out}.report.json").read_text()))


def counts(report: dict[str, object]) -> tuple[int, int, int]:
    c = report["counts"]
    assert isinstance(c, dict)
    return c["rows"], c["generated"], c["copied"]


def test_only_new_and_edited_rows_are_generated(catalog: Path, greedy_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    full = pl.read_parquet(catalog)
    full.head(40).write_parquet(src)
    out = tmp_path / "out.parquet"
    assert counts(run(src, out, greedy_model, "--incremental")) == (40, 40, 0)  # no previous output yet
    before = pl.read_parquet(out)
    # The next day: rows 5..9 are gone, 6 new products arrive at the end, two titles are edited.
    titles = full["title"].to_list()
    titles[12] += " XL"
    titles[30] = titles[30].upper()
    edited = full.with_columns(pl.Series("title", titles))
    changed = pl.concat([edited.head(5), edited.slice(10, 30), edited.slice(100, 6)])
    changed.write_parquet(src)
    report = run(src, out, greedy_model, "--incremental")
    assert counts(report) == (41, 8, 33)
    after = pl.read_parquet(out)
    assert after["id"].to_list() == changed["id"].to_list()  # gone rows are gone, input order kept
    old = before.filter(pl.col("id").is_in(after["id"].implode())).select("id", *RESULT_COLUMNS)
    kept_ids = [i for i in changed["id"].to_list() if i not in (full["id"][12], full["id"][30])][:33]
    assert (
        after.filter(pl.col("id").is_in(kept_ids))
        .select("id", *RESULT_COLUMNS)
        .equals(old.filter(pl.col("id").is_in(kept_ids)))
    )
    # The copies are exact: a fresh full run gives the same results (greedy decoding, fixed seed).
    fresh = tmp_path / "fresh.parquet"
    run(src, fresh, greedy_model)
    assert pl.read_parquet(fresh).select(RESULT_COLUMNS).equals(after.select(RESULT_COLUMNS))
    # Nothing changed since: nothing to do, the output stays.
    r = enrich(*run_args(src, out, greedy_model, "--incremental"))
    assert r.exit_code == 0 and "nothing to do" in r.output
    # The hourly export is rewritten with rows removed only: every row is copied, and the model (on a GPU,
    # a minute of vLLM start-up) is never loaded.
    changed.head(30).write_parquet(src)
    r = enrich(*run_args(src, out, greedy_model, "--incremental"))
    assert r.exit_code == 0, r.output
    assert counts(json.loads(Path(f"{out}.report.json").read_text())) == (30, 0, 30)
    assert "model was not loaded" in r.output and "loaded in" not in r.output
    assert pl.read_parquet(out).select(RESULT_COLUMNS).equals(after.head(30).select(RESULT_COLUMNS))


@pytest.mark.parametrize(
    "change",
    [
        ("--max-new-tokens", "5"),
        ("--template", "alpaca"),
        ("--seed", "1"),
        ("--temperature", "0.5"),
        ("--model", "OTHER"),
    ],
    ids=["max_new_tokens", "template", "seed", "temperature", "model"],
)
def test_a_change_of_model_template_or_sampling_invalidates_every_key(
    catalog: Path, greedy_model: Path, tiny_model: Path, tmp_path: Path, change: tuple[str, str]
) -> None:
    src = tmp_path / "in.parquet"
    pl.read_parquet(catalog).head(16).write_parquet(src)
    out = tmp_path / "out.parquet"
    run(src, out, greedy_model)
    flag, value = change
    extra = [flag, str(tiny_model) if value == "OTHER" else value, "--incremental"]
    r = enrich(
        *run_args(src, out, greedy_model, *extra)
    )  # the later option wins in click, so the change applies
    assert r.exit_code in (0, 6), r.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["copied"] == 0 and report["counts"]["generated"] == 16


def test_csv_previous_output_round_trips(catalog: Path, greedy_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pl.read_parquet(catalog).head(24).write_parquet(src)
    out = tmp_path / "out.csv"
    run(src, out, greedy_model, "--incremental")
    before = pl.read_csv(out, infer_schema=False)
    pl.read_parquet(catalog).head(26).write_parquet(src)  # two rows more
    assert counts(run(src, out, greedy_model, "--incremental")) == (26, 2, 24)
    after = pl.read_csv(out, infer_schema=False)
    assert after.head(24).select(RESULT_COLUMNS).equals(before.select(RESULT_COLUMNS))


def test_previous_output_that_is_not_from_enrich(catalog: Path, greedy_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pl.read_parquet(catalog).head(8).write_parquet(src)
    out = tmp_path / "out.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(out)
    r = enrich(
        "run",
        src,
        "-o",
        out,
        "--model",
        greedy_model,
        "--max-new-tokens",
        "4",
        "--incremental",
        "--log-format",
        "json",
    )
    assert r.exit_code == 2
    assert (
        "not an output of enrich, or one written under other column names (no column 'generated_description')"
        in r.output
    )
    assert counts(run(src, out, greedy_model, "--incremental", "--overwrite")) == (8, 8, 0)


def test_failed_rows_are_retried_not_copied(catalog: Path, greedy_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pl.read_parquet(catalog).head(8).write_parquet(src)
    out = tmp_path / "out.parquet"
    # policies.truncated = error sends every row (4 tokens: always truncated) to the error file...
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\npath = "{src}"\n[output]\npath = "{out}"\n[run]\nincremental = true\n')
    job_run = ["jobs", "run", job, "--model", greedy_model, "--max-new-tokens", "4", "--temperature", "0"]
    first = enrich(*job_run, "--set", "policies.truncated=error", "--log-format", "json")
    assert first.exit_code == 6, first.output
    # ...and the next incremental run generates them again instead of copying failures.
    second = enrich(*job_run, "--log-format", "json")
    assert second.exit_code == 0, second.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["generated"] == 8 and report["counts"]["copied"] == 0


def test_an_enriched_catalog_enriched_again_under_other_column_names(
    catalog: Path, greedy_model: Path, tmp_path: Path
) -> None:
    """The input already holds enrich's seven columns (last month's output): each can be written under another
    name, the input's own stay as they were, and an incremental run finds its results under the new names."""
    old = {"generated_description": "old text", "enrich_status": "ok", "enrich_finish_reason": "stop"}
    old |= {"enrich_flags": "", "enrich_unsupported": "", "enrich_output_tokens": "7", "enrich_key": "k"}
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pl.read_parquet(catalog).head(20).with_columns(pl.lit(v).alias(k) for k, v in old.items()).write_parquet(
        src
    )
    r = enrich(*run_args(src, out, greedy_model))  # every clash named at once, each with its option
    assert r.exit_code == 2 and "'generated_description' already exists" in r.output, r.output
    assert "--generated-column NAME" in r.output and not out.exists()
    assert "--set output.columns.enrich_status=NAME" in r.output and r.output.count("already exists") == 7
    renames = ["--generated-column", "v2_description"]
    for name in list(old)[1:]:
        renames += ["--set", f"output.columns.{name}=v2_{name}"]
    assert counts(run(src, out, greedy_model, "--incremental", *renames)) == (20, 20, 0)
    got = pl.read_parquet(out)
    assert got.columns[-7:] == ["v2_description", *(f"v2_{n}" for n in list(old)[1:])]
    assert all(got[k].to_list() == [v] * 20 for k, v in old.items())  # the input's own columns, untouched
    assert set(got["v2_enrich_status"]) <= {"ok", "flagged"} and got["v2_enrich_key"].n_unique() == 20
    # two rows more: the other 20 are found in the previous output under the new names
    pl.read_parquet(catalog).head(22).with_columns(pl.lit(v).alias(k) for k, v in old.items()).write_parquet(
        src
    )
    assert counts(run(src, out, greedy_model, "--incremental", *renames)) == (22, 2, 20)
    assert pl.read_parquet(out).head(20).select(got.columns[-7:]).equals(got.select(got.columns[-7:]))
    # the generated column renamed again: the finished run's manifest says where the previous results are
    renames[1] = "v3_description"
    assert counts(run(src, out, greedy_model, "--incremental", *renames)) == (22, 0, 22)
    again = pl.read_parquet(out)
    assert again["v3_description"].to_list()[:20] == got["v2_description"].to_list()
    # one name for two columns is refused before anything runs
    r = enrich(
        *run_args(src, out, greedy_model, *renames, "--set", "output.columns.enrich_flags=v2_enrich_key")
    )
    assert r.exit_code == 2 and "two output columns would be named 'v2_enrich_key'" in r.output, r.output


def test_a_rename_interrupted_before_the_reuse_file_resumes(catalog: Path, tmp_path: Path) -> None:
    """A crash right after the state is opened (before the previous output is read): the unfinished manifest
    notes where the previous results are, so the same command resumes and copies them under the new name."""
    from enrich.config import build_job
    from enrich.run import run

    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pl.read_parquet(catalog).head(12).write_parquet(src)
    echo = ["--engine", "echo", "--template", "alpaca", "--incremental", "--log-format", "json"]
    assert enrich("run", src, "-o", out, *echo).exit_code == 0

    def crash_at_start(kind: str, data: dict[str, object]) -> None:
        if kind == "start":
            raise RuntimeError("crashed")

    table = {"input": {"path": str(src)}, "output": {"path": str(out), "generated_column": "v2"}}
    overrides = {"model.engine": "echo", "prompt.template": "alpaca", "run.incremental": True}
    with pytest.raises(RuntimeError, match="crashed"):
        run(build_job(table, overrides), crash_at_start)
    manifest = json.loads((tmp_path / "out.parquet.enrich" / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["previous_output_names"]["generated_description"] == (
        "generated_description"
    )
    r = enrich("run", src, "-o", out, *echo, "--generated-column", "v2")
    assert r.exit_code == 0, r.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["copied"] == 12 and "v2" in pl.read_parquet(out).columns
