"""Job files: load and merge a TOML job with command-line overrides, and check it before cron runs it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.config import JobConfig, build_job
from enrich.contracts import FORMAT_SUFFIXES
from enrich.errors import ConfigError, EngineError, EnrichError, InputError


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


def read_job_table(path: Path) -> dict[str, Any]:
    """Read a TOML job file; relative paths in it are taken relative to the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    base = path.resolve().parent
    for dotted in (
        "input.path",
        "output.path",
        "output.errors",
        "output.report",
        "run.state_dir",
        "run.history_dir",
        "run.decisions",
        "model.ref",
    ):
        section, _, key = dotted.partition(".")
        table = data.get(section)
        if not (isinstance(table, dict) and isinstance(table.get(key), str)):
            continue
        value = os.path.expanduser(table[key])
        if dotted == "model.ref" and not value.startswith((".", "/", "~")) and not (base / value).exists():
            continue  # a preset name (smollm2-135m), not a path
        table[key] = value if Path(value).is_absolute() else os.path.normpath(base / value)  # no '..' in logs
    return data


def load_job(path: Path, overrides: dict[str, Any] | None = None) -> JobConfig:
    """A job file with overrides applied (the command line wins); raises ConfigError listing every problem."""
    return build_job(read_job_table(path), overrides, source=str(path))


def _input_problem(path: str) -> str | None:
    """Why the input cannot be read (missing, or not readable), or None."""
    if any(c in path for c in "*?["):
        root = Path("/") if Path(path).is_absolute() else Path()
        files = list(root.glob(path.lstrip("/") if Path(path).is_absolute() else path))
        if not files:
            return f"{path}: no file matches"
    elif not Path(path).is_file():
        return f"{path}: no such file"
    else:
        files = [Path(path)]
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    return f"{unreadable[0]}: not readable (permissions)" if unreadable else None


@dataclass(frozen=True)
class Problem:
    """One reason a job cannot run: where (a dotted path, after the file's name once validated), what, and the
    error that `jobs run` stops with for it (its exit code)."""

    where: str
    message: str
    error: type[EnrichError] = ConfigError


def check_job(job: JobConfig) -> list[Problem]:
    """Problems that a valid model can still have on this machine."""
    from enrich.model.engines import device_problem
    from enrich.model.reference import MODEL_PRESETS
    from enrich.run.target import Target

    problems: list[Problem] = []
    missing = _input_problem(job.input.path)
    if missing:
        problems.append(Problem("input.path", missing, InputError))
    for dotted, value, fmt in (
        ("input.path", job.input.path, job.input.format),
        ("output.path", job.output.path, job.output.format),
    ):
        if fmt == "auto" and Path(value).suffix.lower() not in FORMAT_SUFFIXES:
            problems.append(
                Problem(dotted, f"{value}: cannot tell the format from the suffix; use .parquet or .csv")
            )
    problems += [Problem(dotted, message) for dotted, message in Target.of(job).problems()]
    ref = job.model.ref
    if ref is not None and ref not in MODEL_PRESETS and not Path(ref).expanduser().exists():
        problems.append(
            Problem("model.ref", f"{ref!r}: not a preset ({', '.join(MODEL_PRESETS)}) nor an existing path")
        )
    no_device = device_problem(job.model.device) if job.model.engine in ("auto", "transformers") else None
    if no_device:
        problems.append(Problem("model.device", no_device, EngineError))
    return problems


def validate_file(path: Path, overrides: dict[str, Any] | None = None) -> list[Problem]:
    """Every problem of one job file; empty when it is good to run."""
    try:
        job = load_job(path, overrides)
    except ConfigError as err:  # its lines already name the file and the field
        return [Problem("", line) for line in str(err).splitlines()]
    return [Problem(f"{path}: {p.where}", p.message, p.error) for p in check_job(job)]


# Which problem decides the exit code of `jobs validate`, first to last: a job-file problem (2) is fixed before the
# input is looked at (3), and both before the machine's GPU matters (5).
_PRECEDENCE: tuple[type[EnrichError], ...] = (ConfigError, InputError, EngineError)


def validation_error(problems: list[Problem]) -> EnrichError:
    """One error listing every problem, a line each; its exit code is 2 where any problem is the job's, else 3
    where the input is missing or unreadable, else 5 (the device's GPU is not there)."""
    kinds = {p.error for p in problems}
    error = next(kind for kind in _PRECEDENCE if kind in kinds)
    return error("\n".join(f"{p.where}: {p.message}" if p.where else p.message for p in problems))


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A resolved job as TOML; unset fields (TOML has no null) appear as comments, so every field is shown.

    tomli-w writes each value (quoting, escapes, numbers); the walk over the tables stays here, for the comments,
    which tomli-w does not write.
    """
    import tomli_w

    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if isinstance(value, dict):
            continue
        lines.append(f"# {key} = (not set)\n" if value is None else tomli_w.dumps({key: value}))
    text = (f"[{prefix}]\n" if prefix and lines else "") + "".join(lines)
    for key, value in tables.items():
        text += ("\n" if text else "") + dump_toml(value, f"{prefix}.{key}" if prefix else key)
    return text
