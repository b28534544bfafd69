"""`enrich eval`: a model and its baseline on held-out rows, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from enrich.cli.common import (
    SEPARATOR_HELP,
    catalog_format,
    event_printer,
    given_value,
    log_options,
)

# eval's parameters -> EvalConfig's dotted paths; MODEL and DATA make the table they are merged over.
EVAL_FIELDS = {
    "engine": "model.engine",
    "dtype": "model.dtype",
    "fmt": "format",
    "separator": "separator",
    "id_col": "columns.id",
    "title_col": "columns.title",
    "content_col": "columns.content",
    "attr": "attributes",
    "template": "template",
    "sample": "sample",
    "seed": "seed",
    "batch_size": "batch_size",
    "references": "references",
    "overwrite": "overwrite",
    "temperature": "sampling.temperature",
    "top_p": "sampling.top_p",
    "max_new_tokens": "sampling.max_new_tokens",
    "repetition_penalty": "sampling.repetition_penalty",
    "penalty_scope": "sampling.penalty_scope",
}
BOTH_MODELS = (
    "For both models (default: MODEL's own, from its enrich.json or preset; the baseline decodes alike)."
)


@click.command("eval")
@click.argument("model")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report directory.")
@click.option(
    "--baseline",
    help="Model scored beside MODEL on the same rows (default: the base MODEL was trained on, if known).",
)
@click.option("--no-baseline", is_flag=True, help="Score MODEL alone.")
@click.option("--no-review", is_flag=True, help="Do not write OUT/eval.html, the page of every row.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in OUT that an earlier eval did not write (default: refuse, exit 2, before any model loads).",
)
@click.option(
    "--sample", type=int, default=200, show_default=True, help="Rows scored (seeded random sample)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of sampling.")
@catalog_format("DATA's file format; auto goes by suffix.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "transformers", "vllm"]),
    default="auto",
    show_default=True,
    help="auto: vllm where it is installed and a GPU is present, else transformers.",
)
@click.option(
    "--template", type=click.Choice(["alpaca", "alpaca-pt", "chat"]), help="Default: each model's own."
)
@click.option("--id-col", help="Id column (default: id).")
@click.option("--title-col", help="Title column (default: title).")
@click.option("--content-col", help="Real description column (default: content).")
@click.option("--separator", help=SEPARATOR_HELP)
@click.option(
    "--attr",
    multiple=True,
    metavar="COLUMN[=Label]",
    help="An attribute stated under the title in both models' prompts, as in run (repeat it); COLUMN=Label maps "
    "a column to a label MODEL was trained with. Default: MODEL's own (its enrich.json), else none.",
)
@click.option("--temperature", type=float, help=f"0 is greedy. {BOTH_MODELS}")
@click.option("--top-p", type=float, help=f"Nucleus sampling. {BOTH_MODELS}")
@click.option("--max-new-tokens", type=int, help=f"Tokens generated at most. {BOTH_MODELS}")
@click.option("--repetition-penalty", type=float, help=f"1 is none. {BOTH_MODELS}")
@click.option(
    "--penalty-scope",
    type=click.Choice(["all", "output"]),
    help=f"The tokens the repetition penalty counts: all (the prompt's too) or output. {BOTH_MODELS}",
)
@click.option("--batch-size", type=int, help="Prompts per generate call (transformers; default: 16).")
@click.option(
    "--references",
    type=click.Choice(["as-is", "faithful", "both"]),
    default="as-is",
    show_default=True,
    help="What ROUGE-L, chrF and BLEU score against: the real descriptions, the same cut to the sentences their "
    "title and attributes support (faithful_rouge_l etc.), or both.",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="Weights' dtype; auto: the engine's choice (transformers: bfloat16 on a GPU that has it, else float32).",
)
@log_options
def eval_cmd(
    model: str,
    data: str,
    output: str,
    baseline: str | None,
    no_baseline: bool,
    no_review: bool,
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Score MODEL's generations on held-out rows of DATA against their real descriptions (and a baseline).

    Both models are prompted with the attributes MODEL was trained with (its enrich.json; --attr maps
    columns), and their texts are checked against each row's title and attributes, never its description.
    Writes OUT/eval_report.json (per model: rouge_l, chrf, bleu, length_ratio, eos_rate, flag rates,
    unsupported_claim_rate, claim_rates per kind, wrong_type_rate, off_topic_rate, attribute_coverage),
    OUT/generations.jsonl, OUT/eval.png, OUT/summary.md and OUT/eval.html (each row, both models' texts
    side by side, unsupported words marked). Use rows the model was not trained on.

    \b
    Examples:
      enrich eval adapters/shop holdout.parquet -o eval/shop          # against its base model
      enrich eval adapters/shop holdout.parquet -o eval/shop --baseline smollm2-135m
      enrich eval adapters/shop holdout.parquet -o eval/shop --attr colour=Color --references both
      enrich eval models/shop holdout.csv -o eval/shop --title-col name --content-col body --sample 100

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a bad option or model, or no column for an attribute the
    model was trained with; 3 unreadable data, or no row with a title and a description; 5 the engine failed
    (no GPU, out of memory); 7 no room to write (disk full); 130 interrupted.
    """
    from enrich.config import build_config
    from enrich.evaluation.evaluate import EvalConfig, evaluate
    from enrich.model.reference import base_of

    if no_baseline:
        baseline = None
    elif baseline is None:
        baseline = base_of(model)  # an adapter or export against the model it was trained on
    options = {dotted: given_value(params[name]) for name, dotted in EVAL_FIELDS.items()}
    options["baseline"] = baseline
    options["sampling.seed"] = params["seed"]  # one seed: the sample's and the sampling's
    config = build_config(EvalConfig, {"model": {"ref": model}, "data": data}, options, source="eval")
    report = evaluate(config, Path(output), event_printer(log_format, quiet, verbose))
    _print_scores(report, output)
    if not no_review:
        from enrich.review import write_eval_page

        click.echo(f"review page: {write_eval_page(Path(output), config.overwrite)}")


def _print_scores(report: dict[str, Any], output: str) -> None:
    """The report's metrics, a column per model, as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    from enrich.evaluation.report import table_rows

    table = Table(title=f"enrich eval: {report['rows']} rows -> {output}")
    table.add_column("metric")
    for role in report["models"]:
        table.add_column(role, justify="right")
    for label, cells in table_rows(report):
        table.add_row(label, *cells)
    Console().print(table)
