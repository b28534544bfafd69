"""A reviewer's decisions fed back to a run: rejected rows generated again with a new seed, approved rows kept,
decisions on rows that changed since reported and ignored; the same decisions give the same texts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
from _support import greedy_run_args
from click.testing import CliRunner

from enrich.cli import main


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_rejected_rows_are_generated_again_and_approved_rows_kept(
    source: Path, greedy_model: Path, tmp_path: Path
) -> None:
    src = tmp_path / "catalog.parquet"
    pl.read_parquet(source).head(12).write_parquet(src)
    out = tmp_path / "out.parquet"
    args = greedy_run_args(src, out, greedy_model, 4, "--incremental", max_new_tokens=12)
    code, output = run(*args)
    assert code == 0, output
    assert Path(f"{out}.review.html").is_file()  # the run wrote its review page
    before = pl.read_parquet(out)
    keys, ids = before["enrich_key"].to_list(), before["id"].to_list()
    decisions = tmp_path / "out.parquet.decisions.jsonl"
    lines = [
        {"id": ids[0], "row": 0, "key": keys[0], "decision": "rejected", "note": "wrong colour"},
        {"id": ids[1], "row": 1, "key": keys[1], "decision": "approved", "note": None},
        {"id": ids[2], "row": 2, "key": keys[2], "decision": "rejected", "note": None},
        {"id": ids[5], "row": 5, "key": "0" * 32, "decision": "rejected", "note": "its row changed since"},
    ]
    decisions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    again = tmp_path / "again.parquet"
    shutil.copy(out, again)  # the same previous output, for a second run with the same decisions
    code, output = run(*args, "--decisions", decisions)
    assert code == 0, output
    assert "1 decisions are on rows that changed since the review" in output
    after = pl.read_parquet(out)
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["decisions"] | {"file": None, "seed": None} == {
        "file": None,
        "seed": None,
        "approved": 1,
        "rejected": 2,
        "stale": 1,
    }
    assert report["counts"]["generated"] == 2 and report["counts"]["copied"] == 10
    texts, old = after["generated_description"].to_list(), before["generated_description"].to_list()
    assert texts[1] == old[1] and texts[3:] == old[3:]  # approved and undecided rows: as they were
    assert texts[0] != old[0] and texts[2] != old[2]  # rejected: another seed, sampled where greedy
    assert after["enrich_key"].to_list() == keys
    # The same decisions on the same previous output give the same texts.
    other = greedy_run_args(src, again, greedy_model, 4, "--incremental", max_new_tokens=12)
    code, output = run(*other, "--decisions", decisions)
    assert code == 0, output
    assert pl.read_parquet(again)["generated_description"].to_list() == texts


def test_decisions_need_an_incremental_run_and_a_good_file(
    source: Path, greedy_model: Path, tmp_path: Path
) -> None:
    decisions = tmp_path / "d.jsonl"
    decisions.write_text('{"id": "a", "row": 0, "key": "k", "decision": "maybe"}\n')
    out = tmp_path / "out.parquet"
    code, output = run(*greedy_run_args(source, out, greedy_model, 4, "--decisions", decisions))
    assert code == 2 and "pass --incremental" in output
    code, output = run(
        *greedy_run_args(source, out, greedy_model, 4, "--incremental", "--decisions", decisions)
    )
    assert code == 3 and f"{decisions} line 1: decision" in output
    assert not out.exists()
