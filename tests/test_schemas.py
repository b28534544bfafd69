"""schemas/ is generated from enrich/config.py (drift test) and real outputs of real runs validate against it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from _support import enrich

from enrich.schema import SCHEMAS, render

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def load(name: str) -> dict[str, object]:
    return dict(json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_matches_the_models(name: str) -> None:
    path = SCHEMA_DIR / name
    fresh = render(name)
    if os.environ.get("ENRICH_UPDATE_SCHEMAS") == "1":
        path.write_text(fresh, encoding="utf-8")
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    assert committed == fresh, f"{path} is out of date: run `just schema` (or ENRICH_UPDATE_SCHEMAS=1 pytest)"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schemas_are_valid_json_schemas(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load(name))


def _bad_catalog(catalog: Path, dest: Path) -> Path:
    """24 real rows with a null title, an empty one, a repeated id, an over-long title and a null id."""
    frame = pl.read_parquet(catalog).head(24)
    titles = frame["title"].to_list()
    ids = frame["id"].to_list()
    titles[2] = None
    titles[5] = "   "
    ids[7] = ids[6]
    titles[9] = "long " * 500
    ids[11] = None
    frame = frame.with_columns(pl.Series("title", titles), pl.Series("id", ids))
    frame.write_parquet(dest)
    return dest


@pytest.mark.parametrize("errors_suffix", [".errors.jsonl", ".errors.parquet"])
def test_real_report_errors_and_history_validate(
    tiny_model: Path, catalog: Path, tmp_path: Path, errors_suffix: str
) -> None:
    src = _bad_catalog(catalog, tmp_path / "bad.parquet")
    job = tmp_path / "job.toml"
    job.write_text(
        "#:schema ../schemas/job.schema.json\n"
        '[input]\npath = "bad.parquet"\n'
        f'[output]\npath = "out/enriched.parquet"\nerrors = "out/enriched{errors_suffix}"\n'
        "[sampling]\nmax_new_tokens = 4\n"
        "[batch]\nwindow_rows = 8\n"
        '[policies]\nmax_title_chars = 300\nlong_title = "error"\n'
        '[run]\nhistory_dir = "history"\n',
        encoding="utf-8",
    )
    (tmp_path / "out").mkdir()
    r = enrich("jobs", "run", job, "--model", tiny_model, "--log-format", "json")
    assert r.exit_code == 6, r.output
    assert src.exists()
    report = json.loads((tmp_path / "out" / "enriched.parquet.report.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, load("report.schema.json"))
    errors_path = tmp_path / "out" / f"enriched{errors_suffix}"
    if errors_suffix.endswith(".jsonl"):
        records = [json.loads(line) for line in errors_path.read_text(encoding="utf-8").splitlines()]
    else:
        records = pl.read_parquet(errors_path).to_dicts()
    assert len(records) == report["counts"]["error"] == 5
    assert {rec["row"] for rec in records} == {2, 5, 7, 9, 11}
    for record in records:
        jsonschema.validate(record, load("error.schema.json"))
    history = sorted((tmp_path / "history").glob("*.json"))
    assert len(history) == 1
    jsonschema.validate(json.loads(history[0].read_text(encoding="utf-8")), load("report.schema.json"))
    rows = pl.read_parquet(tmp_path / "out" / "enriched.parquet").to_dicts()
    statuses = {r["enrich_status"] for r in rows}
    assert "error" in statuses and len(statuses) >= 2, statuses  # failed rows and generated ones
    for row in rows:  # ok, flagged and failed rows alike
        jsonschema.validate(row, load("output.schema.json"))


def test_a_run_that_fails_before_it_starts_is_in_the_history_and_logs_json(tmp_path: Path) -> None:
    """A nightly job whose input is missing leaves a failed report in the history and one JSON error line."""
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "missing.parquet"\n[output]\npath = "out.parquet"\n'
        '[model]\nengine = "echo"\n[run]\nhistory_dir = "history"\n',
        encoding="utf-8",
    )
    r = enrich("jobs", "run", job, "--log-format", "json")
    assert r.exit_code == 3, r.output
    last = json.loads(r.output.strip().splitlines()[-1])
    assert last["level"] == "error" and last["exit_code"] == 3 and "missing.parquet" in last["message"]
    (kept,) = (tmp_path / "history").glob("*-failed.json")
    report = json.loads(kept.read_text(encoding="utf-8"))
    jsonschema.validate(report, load("report.schema.json"))
    assert report["exit_code"] == 3 and "missing.parquet" in report["error"]
    assert report["counts"]["rows"] == 0 and not (tmp_path / "out.parquet").exists()


def test_a_broken_report_fails_validation() -> None:
    """The schema has teeth: a report without counts, or with an unknown status, is rejected."""
    schema = load("report.schema.json")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"status": "ok"}, schema)
    error_schema = load("error.schema.json")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"id": "a", "row": -1, "stage": "read", "reason": "x", "value": None}, error_schema
        )
