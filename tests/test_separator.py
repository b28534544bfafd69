"""CSV files separated by something other than a comma: ';' (spreadsheets in most of Europe), tab, '|'."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from _support import enrich

from enrich.catalog.source import Source
from enrich.config import InputConfig
from enrich.model.traindata import read_titles_and_descriptions

ECHO = ["--engine", "echo", "--template", "alpaca", "--log-format", "json"]

# Fields holding the separator, commas and quotes: each must come back exactly as it went in.
ROWS = {
    "id": ["a1", "a2", "a3", "a4", "a5"],
    "title": ["Stapler; black", 'Ruler, 12" steel', "Desk lamp", "Mug | 350 ml", "0042 zip-coded shelf"],
    "content": ["Staples; 20 sheets", "", "LED, dimmable", "Stoneware", "Pine"],
}


def write(path: Path, separator: str) -> Path:
    pl.DataFrame(ROWS).write_csv(path, separator=separator)
    return path


def test_semicolon_catalog_round_trips_with_its_separator(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.csv", ";")
    out = tmp_path / "out.csv"
    r = enrich("run", src, "-o", out, "--separator", ";", *ECHO, "--incremental")
    assert r.exit_code == 0, r.output
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("id;title;content;")
    back = pl.read_csv(out, separator=";", infer_schema=False)
    for column, values in ROWS.items():
        assert back[column].fill_null("").to_list() == values
    assert back["enrich_status"].to_list() == ["ok"] * 5
    # A new product the next night: the incremental run reads its previous output with the same separator,
    # copies the five rows it has and generates only the new one.
    more = {k: [*v, new] for (k, v), new in zip(ROWS.items(), ["a6", "Shelf; oak", "Oak"], strict=True)}
    pl.DataFrame(more).write_csv(src, separator=";")
    r = enrich("run", src, "-o", out, "--separator", ";", *ECHO, "--incremental")
    assert r.exit_code == 0, r.output
    summary = json.loads(out.with_name("out.csv.report.json").read_text())
    assert (summary["counts"]["generated"], summary["counts"]["copied"]) == (1, 5)
    assert pl.read_csv(out, separator=";", infer_schema=False)["title"].to_list() == more["title"]
    # The output's separator changed the next night: the previous output is read with the one it was written
    # with (its finished run recorded it), and every row is copied into a '|'-separated output.
    r = enrich("run", src, "-o", out, "--separator", ";", "--output-separator", "|", *ECHO, "--incremental")
    assert r.exit_code == 0, r.output
    summary = json.loads(out.with_name("out.csv.report.json").read_text())
    assert (summary["counts"]["generated"], summary["counts"]["copied"]) == (0, 6)
    back = pl.read_csv(out, separator="|", infer_schema=False)
    assert back["title"].to_list() == more["title"] and back["generated_description"].null_count() == 0


def test_tab_input_and_comma_output(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.tsv.csv", "\t")
    out = tmp_path / "out.csv"
    r = enrich("run", src, "-o", out, "--separator", "\\t", "--output-separator", ",", *ECHO)
    assert r.exit_code == 0, r.output
    back = pl.read_csv(out, infer_schema=False)
    assert back["title"].to_list() == ROWS["title"] and back["id"].to_list() == ROWS["id"]


def test_a_semicolon_file_read_as_commas_names_the_option(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.csv", ";")
    r = enrich("run", src, "-o", tmp_path / "out.csv", *ECHO)
    assert r.exit_code == 3, r.output
    assert "seems ';'-separated: pass --separator ';'" in r.output
    assert not (tmp_path / "out.csv").exists()


def test_a_ragged_line_is_named_in_a_semicolon_file(tmp_path: Path) -> None:
    src = tmp_path / "shop.csv"
    src.write_text("id;title\n1;Stapler\n2;Lamp;extra\n3;Mug\n", encoding="utf-8")
    r = enrich("run", src, "-o", tmp_path / "out.csv", "--separator", ";", *ECHO)
    assert r.exit_code == 3, r.output
    assert "line 3 has 3 fields, the header 2; quote fields holding ';'" in r.output


def test_ray_workers_read_their_window_with_the_separator(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.csv", ";")
    assert Source.of(str(src), separator=";").read_range(["id", "title"], 1, 4) == {
        "id": ROWS["id"][1:4],
        "title": ROWS["title"][1:4],
    }


def test_bad_separators_are_refused(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.csv", ";")
    for bad in ("ab", '"', ""):
        r = enrich("run", src, "-o", tmp_path / "out.csv", "--separator", bad, *ECHO)
        assert r.exit_code == 2, (bad, r.output)
        assert "separator" in r.output and "one character" in r.output
    assert InputConfig(path="x", separator="\\t").separator == "\t"


def test_changing_the_separator_mid_run_is_a_changed_setting(tmp_path: Path) -> None:
    src = write(tmp_path / "shop.csv", ";")
    out = tmp_path / "out.csv"
    assert enrich("run", src, "-o", out, "--separator", ";", *ECHO).exit_code == 0
    r = enrich("run", src, "-o", out, "--separator", ";", "--output-separator", "|", *ECHO)
    assert r.exit_code == 2, r.output
    r = enrich("run", src, "-o", out, "--separator", ";", "--output-separator", "|", *ECHO, "--restart")
    assert r.exit_code == 0, r.output
    assert out.read_text(encoding="utf-8").startswith("id|title|content|")


def test_finetune_and_eval_read_rows_with_the_separator(tmp_path: Path) -> None:

    src = write(tmp_path / "shop.csv", "|")
    rows = read_titles_and_descriptions(Source.of(str(src), separator="|"), with_id=True)
    assert rows["title"] == ROWS["title"] and rows["id"] == ROWS["id"]
    # Without the option the data is refused before any model loads, and the message says which option.
    r = enrich("finetune", src, "-o", tmp_path / "adapter", "--log-format", "text")
    assert r.exit_code == 3, r.output
    assert "seems '|'-separated: pass --separator '|'" in r.output
