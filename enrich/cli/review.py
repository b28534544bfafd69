"""`enrich review`."""

from __future__ import annotations

from pathlib import Path

import click

from enrich.cli.common import log_options


@click.command()
@click.argument("output", type=click.Path(exists=True))
@click.option(
    "-o", "--html", type=click.Path(dir_okay=False), help="Page to write (default OUTPUT.review.html)."
)
@click.option(
    "--max-flagged",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Rows with a flag or an error put on the page; past this many, a seeded sample of them.",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Other rows: a seeded sample.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the samples.")
@click.option("--overwrite", is_flag=True, help="Replace a page at -o that enrich did not write.")
@log_options
def review(
    output: str,
    html: str | None,
    max_flagged: int,
    sample: int,
    seed: int,
    overwrite: bool,
    log_format: str,
    quiet: bool,
    verbose: int,
) -> None:
    """Write a review page of a run's OUTPUT: one HTML file to open in a browser, from disk or by mail.

    The page shows the run at a glance (statuses, flags, tokens, lengths, speed, error reasons) and its
    rows, with unsupported words marked; filter, search and sort them, approve or reject rows one by one or
    all that a filter shows, and save the decisions as OUTPUT.decisions.jsonl. Every row counts in the
    figures; the page holds every row with a flag or an error up to --max-flagged, and a sample of the
    others.
    Given the folder of an `enrich eval`, writes its eval.html instead.

    \b
    Examples:
      enrich review out.parquet                  # writes out.parquet.review.html
      enrich review out.csv -o review.html --sample 5000
      enrich review out.parquet --max-flagged 20000 --seed 7
      enrich review eval/shop                    # writes eval/shop/eval.html

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a bad option; 3 unreadable input (an output or eval
    folder that cannot be read); 7 no room to write (disk full); 130 interrupted.
    """
    from enrich.review import write_eval_page, write_review

    path = Path(output)
    if path.is_dir():
        page = write_eval_page(path, overwrite)
    else:
        page = write_review(
            path,
            Path(html) if html else None,
            max_flagged=max_flagged,
            sample=sample,
            seed=seed,
            overwrite=overwrite,
        )
    click.echo(str(page))
