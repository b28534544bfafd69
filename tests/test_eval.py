"""`enrich eval`: the metrics on real descriptions, the report files, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from _support import CATALOG, enrich

from enrich.evaluation.metrics import rouge_l, score


def real_descriptions(n: int) -> list[str]:
    return pl.read_parquet(CATALOG)["content"].head(n).to_list()


def test_metrics_on_real_descriptions() -> None:
    refs = real_descriptions(20)
    same = score(refs, refs, ["stop"] * 20, [[]] * 20, [50] * 20)
    assert same["rouge_l"] == 1.0 and same["chrf"] == 100.0 and same["bleu"] == 100.0
    assert same["length_ratio"] == 1.0 and same["eos_rate"] == 1.0
    shifted = refs[1:] + refs[:1]  # every row scored against another product's description
    other = score(shifted, refs, ["stop"] * 10 + ["length"] * 10, [["truncated"]] * 10 + [[]] * 10, [50] * 20)
    assert other["rouge_l"] < 0.3 and other["chrf"] < 40 and other["bleu"] < 10
    assert other["eos_rate"] == 0.5 and other["flag_rates"]["truncated"] == 0.5
    # A half-right description scores between the two.
    halves = [r[: len(r) // 2] for r in refs]
    assert other["rouge_l"] < rouge_l(halves, refs) < 1.0


def test_eval_writes_report_plot_and_summary(tiny_model: Path, tmp_path: Path) -> None:
    csv = tmp_path / "holdout.csv"
    pl.read_parquet(CATALOG).head(12).rename({"title": "name", "content": "body", "id": "sku"}).write_csv(csv)
    out = tmp_path / "eval"
    r = enrich(
        "eval",
        tiny_model,
        csv,
        "-o",
        out,
        "--title-col",
        "name",
        "--content-col",
        "body",
        "--id-col",
        "sku",
        "--sample",
        "5",
        "--seed",
        "3",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--log-format",
        "json",
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "eval_report.json").read_text())
    m = report["models"]["model"]
    for key in ("rouge_l", "chrf", "bleu", "eos_rate", "length_ratio"):
        assert isinstance(m[key], float), key
    assert set(m["flag_rates"]) == {
        "truncated",
        "empty",
        "repetition",
        "template_leak",
        "unsupported_numbers",
    }
    assert m["sampling"]["temperature"] == 0.0 and m["sampling"]["max_new_tokens"] == 6
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["id"].startswith("amz18-")
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ROUGE-L F1 |" in (out / "summary.md").read_text()


def test_eval_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    r = enrich("eval", tiny_model, CATALOG, "-o", tmp_path / "e", "--content-col", "body")
    assert r.exit_code == 3 and "no column 'body'" in r.output
    r = enrich("eval", tiny_model, CATALOG, "-o", tmp_path / "e", "--sample", "0")
    assert r.exit_code == 2 and "sample" in r.output
    r = enrich("eval", tmp_path / "nowhere", CATALOG, "-o", tmp_path / "e")
    assert r.exit_code == 2 and "nowhere" in r.output
    # a baseline that does not resolve fails before the model generates anything
    r = enrich(
        "eval",
        tiny_model,
        CATALOG,
        "-o",
        tmp_path / "e",
        "--baseline",
        tmp_path / "gone",
        "--log-format",
        "text",
    )
    assert r.exit_code == 2 and "baseline:" in r.output and "--no-baseline" in r.output, r.output
    assert "generating" not in r.output and not (tmp_path / "e").exists()
