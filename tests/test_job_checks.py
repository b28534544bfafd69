"""Job files and --set values are checked strictly and helpfully: booleans are booleans, a missing input is the
same exit code whether validated or run, and an unknown key names the closest valid one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _support import CATALOG, call, enrich

from enrich.errors import ConfigError
from enrich.model.trainconfig import TRAIN_PRESETS, build_train_config


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


@pytest.mark.parametrize("preset", sorted(TRAIN_PRESETS))
def test_every_training_preset_goes_through_the_merge_path(preset: str) -> None:
    config = build_train_config({"data": "d.parquet", "preset": preset})
    assert config.preset == preset
    assert all(getattr(config, field) == value for field, value in TRAIN_PRESETS[preset].items())
    assert (
        build_train_config({"data": "d.parquet", "preset": preset, "columns.title": "name"}).columns.title
        == "name"
    )


def test_finetune_and_eval_list_every_problem_with_its_path_and_the_closest_name() -> None:
    with pytest.raises(ConfigError) as err:
        build_train_config({"data": "d.parquet", "lr": 0, "columns.titel": "name", "colums.title": "name"})
    assert str(err.value).splitlines() == [
        "finetune: columns.titel: unknown field 'titel'; did you mean 'title'?",
        "finetune: lr: Input should be greater than 0",
        "finetune: colums: unknown field 'colums'; did you mean 'columns'?",
    ]
    r = enrich(
        "eval", "smollm2-135m", CATALOG, "-o", "unused", "--sample", "0", "--temperature", "9", "--top-p", "0"
    )
    assert r.exit_code == 2, r.output
    for line in (
        "eval: sample: Input should be greater than or equal to 1",
        "eval: sampling.temperature: Input should be less than or equal to 5",
        "eval: sampling.top_p: Input should be greater than 0",
    ):
        assert line in r.output, r.output


def test_a_missing_input_is_exit_3_in_validate_and_in_run(tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"
    job = job_file(tmp_path, input_path=missing)
    r = call("jobs", "validate", job, "--log-format", "text")
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines() == [f"error: {job}: input.path: {missing}: no such file"]
    r = call("jobs", "run", job, "--log-format", "text")
    assert r.returncode == 3, r.stderr
    assert f"error: {missing}: no such file" in r.stderr and "Traceback" not in r.stderr
    # Every problem is still listed; one that is the job's own (a suffix enrich cannot read) makes it a 2.
    job.write_text(f'[input]\npath = "{missing}"\n[output]\npath = "out.xlsx"\n')
    r = enrich("jobs", "validate", job)
    assert r.exit_code == 2, r.output
    assert f"{job}: input.path: {missing}: no such file" in r.output and f"{job}: output.path:" in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_input_is_exit_3_in_validate(tmp_path: Path) -> None:
    unreadable = tmp_path / "catalog.parquet"
    unreadable.write_bytes(CATALOG.read_bytes())
    unreadable.chmod(0)
    r = enrich("jobs", "validate", job_file(tmp_path, input_path=unreadable))
    assert r.exit_code == 3 and f"{unreadable}: not readable" in r.output, r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_device_this_machine_lacks_is_exit_5_in_validate(tmp_path: Path) -> None:
    job = job_file(tmp_path, '[model]\ndevice = "cuda:1"\n')
    r = enrich("jobs", "validate", job)
    assert r.exit_code == 5, r.output
    assert f"{job}: model.device: --device cuda:1: this machine has no CUDA GPU" in r.output


def test_an_unknown_key_suggests_the_closest_valid_one(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        f'[input]\npath = "{CATALOG}"\ncolums = {{ title = "name" }}\n[ouptut]\npath = "out.parquet"\n'
        '[sampling]\ntemprature = 0\n[model]\nflavour = "x"\n'
    )
    r = call("jobs", "validate", job, "--log-format", "text")
    assert r.returncode == 2, r.stderr
    for line in (
        f"error: {job}: ouptut: unknown field 'ouptut'; did you mean 'output'?",
        f"error: {job}: input.colums: unknown field 'colums'; did you mean 'columns'?",
        f"error: {job}: sampling.temprature: unknown field 'temprature'; did you mean 'temperature'?",
        f"error: {job}: model.flavour: unknown field 'flavour'; valid here: ref, engine, dtype, device,",
    ):
        assert any(got.startswith(line) for got in r.stderr.splitlines()), (line, r.stderr)


def test_an_unknown_set_key_suggests_the_closest_valid_one(tmp_path: Path) -> None:
    r = enrich("run", CATALOG, "-o", tmp_path / "o.parquet", "--set", "policies.emty=flag")
    assert r.exit_code == 2
    assert "options: policies.emty: unknown field 'emty'; did you mean 'empty'?" in r.output
    r = enrich("jobs", "show", job_file(tmp_path), "--set", "input.columns.titel=name")
    assert (
        r.exit_code == 2 and "input.columns.titel: unknown field 'titel'; did you mean 'title'?" in r.output
    )
    # A key below a value (not a table) is a usage error too, not a crash.
    r = enrich("jobs", "show", job_file(tmp_path), "--set", "input.path.x=1")
    assert r.exit_code == 2 and "--set input.path.x: input.path is a value, not a table" in r.output
