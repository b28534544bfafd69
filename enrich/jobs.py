"""Job files: load and merge a TOML job with command-line overrides, and check it before cron runs it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from enrich.config import FORMAT_SUFFIXES, JobConfig, build_job, read_job_table
from enrich.errors import ConfigError


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--set a.b=VALUE` pairs as dotted overrides; VALUE is read as TOML (1, true, "x", [..]) or else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected DOTTED.KEY=VALUE, e.g. --set policies.empty=flag")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words (flag, ./out.parquet) are text, as a user means them
        out[key.strip()] = value
    return out


def load_job(path: Path, overrides: dict[str, Any] | None = None) -> JobConfig:
    """A job file with overrides applied (the command line wins); raises ConfigError listing every problem."""
    return build_job(read_job_table(path), overrides, source=str(path))


def _exists_glob(path: str) -> bool:
    if any(c in path for c in "*?["):
        root = Path("/") if Path(path).is_absolute() else Path()
        return any(root.glob(path.lstrip("/") if Path(path).is_absolute() else path))
    return Path(path).is_file()


def check_job(job: JobConfig) -> list[tuple[str, str]]:
    """Problems that a valid model can still have on this machine: (dotted path, message) pairs."""
    from enrich.models import PRESETS
    from enrich.target import Target

    problems: list[tuple[str, str]] = []
    if not _exists_glob(job.input.path):
        problems.append(("input.path", f"{job.input.path}: no such file"))
    for dotted, value, fmt in (
        ("input.path", job.input.path, job.input.format),
        ("output.path", job.output.path, job.output.format),
    ):
        if fmt == "auto" and Path(value).suffix.lower() not in FORMAT_SUFFIXES:
            problems.append(
                (dotted, f"{value}: cannot tell the format from the suffix; use .parquet or .csv")
            )
    problems += Target.of(job).problems()
    ref = job.model.ref
    if ref is not None and ref not in PRESETS and not Path(ref).expanduser().exists():
        problems.append(("model.ref", f"{ref!r}: not a preset ({', '.join(PRESETS)}) nor an existing path"))
    return problems


def validate_file(path: Path, overrides: dict[str, Any] | None = None) -> list[str]:
    """Every problem of one job file, each as 'FILE: dotted.path: message'; empty when it is good to run."""
    try:
        job = load_job(path, overrides)
    except ConfigError as err:
        return str(err).splitlines()
    return [f"{path}: {dotted}: {message}" for dotted, message in check_job(job)]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A resolved job as TOML; unset fields (TOML has no null) appear as comments, so every field is shown."""
    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if isinstance(value, dict):
            continue
        lines.append(f"# {key} = (not set)" if value is None else f"{key} = {_toml_value(value)}")
    text = (f"[{prefix}]\n" if prefix and lines else "") + "".join(line + "\n" for line in lines)
    for key, value in tables.items():
        text += ("\n" if text else "") + dump_toml(value, f"{prefix}.{key}" if prefix else key)
    return text
