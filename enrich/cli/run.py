"""`enrich run` and `enrich models`."""

from __future__ import annotations

from typing import Any

import click

from enrich.cli.common import execute, job_overrides, log_options, run_options, set_option


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Output file (.parquet or .csv); required, except with --dry-run.",
)
@click.option(
    "--dry-run", is_flag=True, help="Generate for a sample, print it with a forecast; write nothing."
)
@click.option("--sample", type=int, default=None, help="Rows in a dry run's sample (default 20).")
@run_options
@set_option
@log_options
def run(
    input_path: str,
    output: str | None,
    dry_run: bool,
    sample: int | None,
    sets: tuple[str, ...],
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Stream INPUT (Parquet or CSV) through the model into OUTPUT, resuming after a crash.

    OUTPUT keeps every input row and column in input order and adds generated_description,
    enrich_status, enrich_finish_reason, enrich_flags, enrich_output_tokens and enrich_key.
    Rows that fail go to OUTPUT.errors.jsonl; OUTPUT.report.json holds the run report.

    \b
    Examples:
      enrich run examples/catalog.parquet -o out.parquet
      enrich run shop.csv -o shop.out.csv --title-col name --id-col sku --content-col body
      enrich run catalog.parquet --dry-run --sample 20
      enrich run catalog.parquet -o out.parquet --model ./my-adapter --temperature 0 --limit 1000
      enrich run catalog.parquet -o out.parquet --set policies.empty=flag

    Exit codes: 0 every row ok; 1 a bug (traceback kept); 2 usage or configuration; 3 unreadable or
    invalid input; 4 another run holds the lock; 5 the engine failed (no GPU, out of memory); 6 finished,
    with rows in the error file; 7 no room to write (disk full: free space, a re-run resumes); 130 interrupted
    (state saved: a re-run resumes).
    """
    from enrich.config import build_job
    from enrich.errors import ConfigError

    if not dry_run and not output:
        raise ConfigError("missing -o OUTPUT (or use --dry-run)")
    table = {"input": {"path": input_path}, "output": {"path": output or f"{input_path}.dry-run.parquet"}}
    overrides = job_overrides({**params, "log_format": log_format}, sets)
    if sample is not None:
        overrides["run.sample"] = sample  # validated with the job (at least 1)
    job = build_job(table, overrides)
    execute(job, log_format, quiet, verbose, dry_run, job.run.sample)


@click.command()
@log_options
def models(log_format: str, quiet: bool, verbose: int) -> None:
    """List model presets and what each needs.

    \b
    Examples:
      enrich models
      enrich run catalog.parquet -o out.parquet --model llama-3.1-8b-4bit
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from enrich.console import use_json
    from enrich.model.reference import MODEL_PRESETS

    if use_json(log_format):
        click.echo(json.dumps([p.__dict__ for p in MODEL_PRESETS.values()], indent=2))
        return
    table = Table(title="model presets")
    for col in ("name", "needs", "template", "sampling", "what"):
        table.add_column(col)
    for p in MODEL_PRESETS.values():
        needs = ("GPU, " if p.needs_gpu else "CPU, ") + p.memory
        sampling = ", ".join(f"{k}={v}" for k, v in p.sampling.items())
        table.add_row(p.name, needs, p.template, sampling, p.description)
    Console().print(table)
