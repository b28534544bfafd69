"""Job files and --set values are checked strictly and helpfully: booleans are booleans, a missing input is the
same exit code whether validated or run, and an unknown key names the closest valid one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import REPO, call
from click.testing import CliRunner, Result

from enrich.cli import main
from enrich.errors import ConfigError
from enrich.trainconfig import build_train_config

CATALOG = REPO / "examples" / "catalog.parquet"


def enrich(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def job_file(tmp_path: Path, extra: str = "", input_path: Path | str = CATALOG) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\npath = "{input_path}"\n[output]\npath = "out/out.parquet"\n{extra}')
    return job


@pytest.mark.parametrize(
    ("extra", "dotted", "value"),
    [
        ('overwrite = "yes"\n', "output.overwrite", "'yes'"),
        ("[run]\nincremental = 1\n", "run.incremental", "1"),
        ('[run]\nrestart = "false"\n', "run.restart", "'false'"),
        ("[model]\nenable_prefix_caching = 0\n", "model.enable_prefix_caching", "0"),
    ],
)
def test_a_boolean_field_takes_true_or_false_only(
    tmp_path: Path, extra: str, dotted: str, value: str
) -> None:
    job = job_file(tmp_path, extra)
    expected = f"{job}: {dotted}: expected true or false (unquoted), not {value}"
    r = enrich("jobs", "validate", job)
    assert r.exit_code == 2 and expected in r.output, r.output
    r = call("jobs", "run", job, "--log-format", "text")
    assert r.returncode == 2, r.stderr
    assert f"error: {expected}" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_set_booleans_are_strict_and_flags_still_work(tmp_path: Path) -> None:
    job = job_file(tmp_path)
    r = enrich("jobs", "show", job, "--set", "run.incremental=yes")
    assert (
        r.exit_code == 2
        and f"{job}: run.incremental: expected true or false (unquoted), not 'yes'" in r.output
    )
    r = enrich(
        "jobs", "show", job, "--format", "json", "--set", "run.incremental=true", "--overwrite", "--restart"
    )
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["run"]["incremental"] is True and shown["run"]["restart"] is True
    assert shown["output"]["overwrite"] is True
    plain = json.loads(enrich("jobs", "show", job, "--format", "json").output)
    assert plain["run"]["incremental"] is False and plain["output"]["overwrite"] is False


def test_finetune_switches_are_strict_booleans() -> None:
    assert build_train_config({"data": "d.parquet", "packing": True, "resume": False}).packing is True
    with pytest.raises(ConfigError, match="packing"):
        build_train_config({"data": "d.parquet", "packing": "yes"})
