"""Attributes in the prompt: the product block for every template and column type, models that carry their
attributes, content keys that follow an attribute's value, and --only-missing."""

from __future__ import annotations

import datetime
import decimal
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from _support import greedy_run_args, results
from click.testing import CliRunner

from enrich.cli import main
from enrich.model.prompts import ALPACA, ALPACA_PT, attribute_text, build_prompt, product_block


def enrich(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1499, "1499"),
        (1499.0, "1499"),  # a price read as a float is written as the integer it is
        (2.5, "2.5"),
        (0.0001, "0.0001"),  # never scientific notation
        (1e20, "100000000000000000000"),
        (decimal.Decimal("12.500"), "12.5"),
        (True, "yes"),
        ("  Cotton \n Lycra ", "Cotton Lycra"),  # one line: a line break would start another attribute
        (["Red", None, "Blue"], "Red, Blue"),
        ({"w": 2.0, "h": None}, "w: 2"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (None, None),
        ("", None),
        ([], None),
        (float("nan"), None),
    ],
)
def test_attribute_values_are_written_plainly(value: object, text: str | None) -> None:
    assert attribute_text(value) == text


def test_a_long_value_is_cut() -> None:
    text = attribute_text("word " * 100)
    assert text is not None and len(text) == 120 and text.endswith("…")


BLOCK = "Alisha Solid Women's Cycling Shorts\nBrand: Alisha\nPrice: 379"


def test_the_product_block_is_the_title_then_a_line_per_attribute() -> None:
    assert (
        product_block("Alisha Solid Women's Cycling Shorts", [("Brand", "Alisha"), ("Price", "379")]) == BLOCK
    )
    assert product_block("A title") == "A title"  # a title-only model is prompted as it always was


@pytest.mark.parametrize("template", [ALPACA, ALPACA_PT])
def test_text_templates_put_the_block_where_the_title_went(template: object) -> None:
    prompt = build_prompt(BLOCK, template)  # type: ignore[arg-type]
    head, _, tail = template.prompt.partition("{input}")  # type: ignore[attr-defined]
    assert prompt == head + BLOCK + tail


def test_the_chat_template_puts_the_block_in_the_user_turn(embedded_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    from enrich.model.prompts import CHAT

    prompt = build_prompt(BLOCK, CHAT, tok.apply_chat_template)
    assert "Describe the following product in detail.\n\n" + BLOCK + "<|im_end|>" in prompt


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    """Real Flipkart rows (tests/data) with brand, colour and a price read as a float, nulls among them."""
    rows = pl.read_parquet(Path(__file__).parent / "data" / "claims_rows.parquet").filter(
        pl.col("source") == "flipkart"
    )
    frame = rows.select("id", "title", "content", "brand", "color", "retail_price").head(12)
    path = tmp_path / "shop.parquet"
    frame.with_columns(pl.col("retail_price").cast(pl.Float64)).write_parquet(path)
    return path


def test_a_run_states_the_attributes_and_the_key_follows_them(
    shop: Path, greedy_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = greedy_run_args(shop, out, greedy_model, 4, "--attr", "brand", "--attr", "retail_price=Price")
    code, output = enrich(*args, "--incremental")
    assert code == 0, output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["attributes"] == [
        {"column": "brand", "label": "Brand"},
        {"column": "retail_price", "label": "Price"},
    ]
    first = results(out)
    # One price and one brand change: an incremental run generates exactly those two rows again.
    frame = pl.read_parquet(shop)
    changed = frame.with_columns(
        pl.when(pl.arange(0, frame.height) == 2)
        .then(999.0)
        .otherwise(pl.col("retail_price"))
        .alias("retail_price"),
        pl.when(pl.arange(0, frame.height) == 5)
        .then(pl.lit("Other"))
        .otherwise(pl.col("brand"))
        .alias("brand"),
    )
    changed.write_parquet(shop)
    code, output = enrich(*args, "--incremental")
    assert code == 0, output
    again = json.loads(Path(f"{out}.report.json").read_text())
    assert again["counts"]["generated"] == 2 and again["counts"]["copied"] == 10
    second = results(out)
    differs = [i for i in range(12) if first["enrich_key"][i] != second["enrich_key"][i]]
    assert differs == [2, 5]


def test_a_model_trained_with_attributes_refuses_an_input_without_them(
    shop: Path, greedy_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(greedy_model, model)
    info = json.loads((model / "enrich.json").read_text())
    info["attributes"] = [{"column": "brand", "label": "Brand"}, {"column": "fabric", "label": "Fabric"}]
    (model / "enrich.json").write_text(json.dumps(info))
    out = tmp_path / "out.parquet"
    code, output = enrich(*greedy_run_args(shop, out, model, 4))
    assert code == 2
    assert "no column 'fabric' for the attribute 'Fabric' that the model was trained with" in output
    assert "--attr COLUMN=Fabric" in output
    # Mapped to another column, it runs, and the run states both of the model's attributes.
    code, output = enrich(*greedy_run_args(shop, out, model, 4, "--attr", "color=Fabric", "--limit", "4"))
    assert code == 0, output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert [a["label"] for a in report["attributes"]] == ["Brand", "Fabric"]
    assert report["attributes"][1]["column"] == "color"


def test_only_missing_keeps_existing_descriptions(shop: Path, greedy_model: Path, tmp_path: Path) -> None:
    frame = pl.read_parquet(shop)
    short = frame.with_columns(
        pl.when(pl.arange(0, frame.height) < 3)
        .then(pl.lit(None))
        .otherwise(pl.col("content"))
        .alias("content")
    )
    short.write_parquet(shop)
    out = tmp_path / "out.parquet"
    code, output = enrich(*greedy_run_args(shop, out, greedy_model, 4, "--only-missing", "--min-chars", "40"))
    assert code == 0, output
    got = pl.read_parquet(out)
    kept = got.filter(pl.col("enrich_status") == "kept")
    assert kept.height == 9 and (kept["generated_description"] == kept["content"].str.strip_chars()).all()
    assert kept["enrich_output_tokens"].is_null().all()
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["kept"] == 9 and report["counts"]["generated"] == 3
