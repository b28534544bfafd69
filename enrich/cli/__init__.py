"""Command line: parse options, build one config, call one entry function, render the result.

Heavy libraries (polars, torch, vllm) are imported inside commands, so `enrich --help` is instant.
"""

from __future__ import annotations

import click

from enrich.cli.claims import claims
from enrich.cli.common import EnrichGroup, overrides_from
from enrich.cli.evaluate import eval_cmd
from enrich.cli.jobs import jobs
from enrich.cli.model import export_cmd, finetune
from enrich.cli.review import review
from enrich.cli.run import models, run

__all__ = ["main", "overrides_from", "run"]


@click.group(
    cls=EnrichGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(package_name="enrich")
def main() -> None:
    """enrich: fine-tune a Llama on your catalog, then write product descriptions for every row.

    \b
    Examples:
      enrich run examples/catalog.parquet -o out.parquet
      enrich run catalog.csv -o out.csv --title-col name --dry-run --sample 20
      enrich jobs run jobs/nightly.toml
      enrich models
    """


for command in (run, models, jobs, finetune, export_cmd, eval_cmd, review, claims):
    main.add_command(command)
