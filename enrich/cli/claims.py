"""`enrich claims learn|show`: the claim vocabulary a catalog teaches, and the one a model carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from enrich.cli.common import SEPARATOR_HELP, EnrichGroup, catalog_format, log_options


@click.group(cls=EnrichGroup)
def claims() -> None:
    """The vocabulary of claims: the terms a catalog's descriptions state that its titles and attributes do
    not (necklines, pockets, materials...), which run and eval flag where the product's data does not support
    them. `enrich finetune` learns it from its catalog and keeps it with the model (claims.json).

    \b
    Examples:
      enrich claims learn shop.parquet -o claims.json --attr brand --attr color
      enrich claims show adapters/shop
      enrich run catalog.parquet -o out.parquet --set claims.remove='["polo"]'
    """


@claims.command("learn")
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Vocabulary file (JSON)."
)
@click.option(
    "--attr",
    "attributes",
    multiple=True,
    metavar="COLUMN[=Label]",
    help="An attribute column (repeat it). Default: none.",
)
@click.option("--title-col", default="title", show_default=True, help="Title column.")
@click.option("--content-col", default="content", show_default=True, help="Description column.")
@catalog_format("File format; auto goes by suffix.")
@click.option("--separator", default=",", show_default=True, help=SEPARATOR_HELP)
@click.option("--top", type=int, default=20, show_default=True, help="Terms shown.")
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing -o file that is not a vocabulary enrich wrote."
)
@log_options
def claims_learn(
    catalog: str,
    output: str,
    attributes: tuple[str, ...],
    title_col: str,
    content_col: str,
    fmt: str,
    separator: str,
    top: int,
    overwrite: bool,
    log_format: str,
    quiet: bool,
    verbose: int,
) -> None:
    """Learn the claim vocabulary of CATALOG (titles, attributes and descriptions) into a JSON file, for a
    model used without fine-tuning: put it beside the model as claims.json, or pass its terms with --set.
    An existing vocabulary at -o is replaced; any other file only with --overwrite.

    \b
    Examples:
      enrich claims learn shop.parquet -o claims.json --attr brand --attr color=Colour
      enrich claims learn shop.csv -o adapters/base/claims.json --attr brand

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a bad option; 3 unreadable input (the catalog); 7 no room to
    write (disk full); 130 interrupted.
    """
    from enrich.catalog.source import Source
    from enrich.config import Attribute, Columns
    from enrich.files import write_bytes
    from enrich.model.traindata import read_titles_and_descriptions
    from enrich.quality.learn import learn
    from enrich.quality.vocabulary import base_vocabulary

    given = [Attribute.model_validate(a) for a in attributes]
    _refuse_foreign(Path(output), overwrite)
    columns = Columns(title=title_col, content=content_col, id=None)
    source = Source.of(catalog, fmt, separator, columns, format_option="--format")
    source = source.with_attributes(tuple((a.column, a.text_label()) for a in given))
    rows = read_titles_and_descriptions(source)
    texts = [
        (t, a, d)
        for t, a, d in zip(rows["title"], rows["attributes"], rows["content"], strict=True)
        if isinstance(t, str)
    ]
    vocabulary = learn(((t, a, d if isinstance(d, str) else None) for t, a, d in texts), base_vocabulary())
    write_bytes(Path(output), (vocabulary.to_json() + "\n").encode())
    _show(vocabulary, top, f"learned from {len(texts)} rows of {catalog} -> {output}")


@claims.command("show")
@click.argument("ref")
@click.option("--top", type=int, default=40, show_default=True, help="Terms shown.")
@log_options
def claims_show(ref: str, top: int, log_format: str, quiet: bool, verbose: int) -> None:
    """List the claim vocabulary that REF carries: a model (its claims.json) or a vocabulary file.

    \b
    Examples:
      enrich claims show adapters/shop
      enrich claims show claims.json --top 100

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a bad option or model reference, or no vocabulary; 3 unreadable input
    (a damaged vocabulary file); 130 interrupted.
    """
    from enrich.errors import ConfigError, InputError
    from enrich.model.reference import resolve_model
    from enrich.quality.vocabulary import Vocabulary

    path = Path(ref)
    if path.is_file() and path.suffix == ".json":
        text: str | None = path.read_text(encoding="utf-8")
    else:
        text = resolve_model(ref).claims_vocabulary()
    if text is None:
        raise ConfigError(f"{ref}: carries no claim vocabulary (claims.json); enrich finetune writes one")
    try:
        vocabulary = Vocabulary.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{ref}: not a claim vocabulary ({err})") from None
    _show(vocabulary, top, str(ref))


def _refuse_foreign(path: Path, overwrite: bool) -> None:
    """enrich replaces only what it wrote: an existing -o that does not read as a vocabulary needs --overwrite."""
    from enrich.errors import ConfigError
    from enrich.quality.vocabulary import Vocabulary

    if overwrite or not path.exists():
        return
    try:
        Vocabulary.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path}: exists and is not a claim vocabulary enrich wrote; choose another -o or pass --overwrite"
        ) from None


def _show(vocabulary: Any, top: int, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"claims: {title}")
    for column in ("term", "kind", "stated", "unsupported", "as fact"):
        table.add_column(column, justify="left" if column in ("term", "kind") else "right")
    for t in vocabulary.top_terms(top):
        table.add_row(t.term, t.kind, str(t.stated), str(t.unsupported), str(t.as_fact))
    console = Console()
    console.print(table)
    brands = sorted(vocabulary.brands.values())
    types = list(vocabulary.types)
    console.print(
        f"{len(vocabulary.learned)} learned terms; {len(brands)} brands; {len(types)} product types: "
        + ", ".join(types[:15])
    )
