"""`enrich jobs validate|show|run`: job files (TOML) for cron."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from enrich.cli.common import EnrichGroup, execute, job_overrides, log_options, run_options, set_option


@click.group(cls=EnrichGroup)
def jobs() -> None:
    """Job files (TOML) for cron: validate, show and run them.

    \b
    Examples:
      enrich jobs validate jobs/*.toml
      enrich jobs show jobs/nightly.toml
      enrich jobs run jobs/nightly.toml --limit 100
    """


@jobs.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
@log_options
def jobs_validate(
    files: tuple[str, ...], sets: tuple[str, ...], log_format: str, quiet: bool, verbose: int
) -> None:
    """Check job files: every problem of every file at once, a line each with its dotted path.

    Checks the fields' types and ranges, unknown keys, that the input exists and can be read, that the
    output's folder can be written, that the model reference exists and that the device is on this
    machine. Nothing is loaded or run.

    \b
    Example:
      enrich jobs validate jobs/*.toml

    Exit codes, as `enrich jobs run` would stop: 0 every file ok; 1 a bug (traceback kept); 2 a problem in
    a job file or option (wins over the others); 3 only the input is missing or unreadable; 5 only the GPU
    that model.device names is missing; 130 interrupted.
    """
    from enrich.run.jobs import parse_sets, validate_file, validation_error

    overrides = parse_sets(sets)
    problems = []
    for f in files:
        found = validate_file(Path(f), overrides)
        if found:
            problems.extend(found)
        elif not quiet:
            click.echo(f"ok: {f}")
    if problems:
        raise validation_error(problems)


@jobs.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
@set_option
@run_options
@log_options
def jobs_show(
    file: str, fmt: str, sets: tuple[str, ...], log_format: str, quiet: bool, verbose: int, **params: Any
) -> None:
    """Print the resolved configuration of a job file: defaults filled, paths absolute, overrides applied.

    \b
    Examples:
      enrich jobs show jobs/nightly.toml
      enrich jobs show jobs/nightly.toml --limit 100 --format json

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a problem in the job file or an option; 130 interrupted.
    """
    import json

    from enrich.run.jobs import dump_toml, load_job

    job = load_job(Path(file), job_overrides(params, sets))
    click.echo(
        json.dumps(job.model_dump(), indent=2) if fmt == "json" else dump_toml(job.model_dump()), nl=False
    )


@jobs.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, default=None, help="Generate for a sample, print it; write nothing.")
@click.option("--sample", type=int, default=None, help="Rows in a dry run's sample (default 20).")
@set_option
@run_options
@log_options
def jobs_run(
    file: str,
    dry_run: bool | None,
    sample: int | None,
    sets: tuple[str, ...],
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Run a job file; options given here override the file. This is what cron calls.

    The defaults shown below are those of the fields that the file leaves unset.

    Exit codes: 0 every row ok; 1 a bug (traceback kept); 2 a problem in the job file or an option; 3 unreadable or
    invalid input; 4 another run holds the lock; 5 the engine failed (no GPU, out of memory); 6 finished,
    with rows in the error file; 7 no room to write (disk full: free space, a re-run resumes); 130 interrupted
    (state saved: a re-run resumes).

    \b
    Examples:
      enrich jobs run jobs/nightly.toml
      enrich jobs run jobs/hourly-incremental.toml --set policies.empty=flag
    \b
    Crontab (see README, "Running from cron"):
      15 2 * * * cd /srv/catalog && enrich jobs run jobs/nightly.toml >> /var/log/enrich.log 2>&1
    """
    overrides = job_overrides({**params, "log_format": log_format}, sets)
    if dry_run:
        overrides["run.dry_run"] = True
    if sample is not None:
        overrides["run.sample"] = sample
    from enrich.run.jobs import load_job

    job = load_job(Path(file), overrides)
    fmt = job.run.log_format if log_format == "auto" else log_format
    execute(job, fmt, quiet, verbose, job.run.dry_run, job.run.sample)
