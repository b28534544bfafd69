"""`enrich review`: the page's figures, caps and samples on real files, its escaping, the decisions reader,
and the page driven in a real headless Chromium on a real run's output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _support import CATALOG, enrich, greedy_run_args

from enrich.errors import InputError
from enrich.review import read_decisions, write_eval_page, write_review
from enrich.review.source import reason_group

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no GPU, no sandbox (containers), no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL = "<script>alert(1)</script> <b>bold</b> & co"


def write_output(path: Path, rows: list[dict[str, Any]], report: dict[str, Any] | None = None) -> Path:
    """An output file (Parquet, or CSV with ';'-joined lists) of these rows, and its report if given."""
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
        frame.with_columns(pl.col(n).list.join(";") for n in lists).write_csv(path)
    if report is not None:
        Path(f"{path}.report.json").write_text(json.dumps(report))
    return path


def output_row(i: int, status: str = "ok", flags: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    text = None if status == "error" else f"Generated description {i}, a white lamp of 10 ft."
    return {
        "id": f"sku-{i:05d}",
        "title": f"Lamp {i}",
        "content": f"Existing description {i}.",
        "generated_description": text,
        "enrich_status": status,
        "enrich_finish_reason": None if status == "error" else "stop",
        "enrich_flags": flags or [],
        "enrich_output_tokens": None if status == "error" else 12 + i % 7,
        "enrich_key": f"key{i}",
        **extra,
    }


def embedded(html: str) -> dict[str, Any]:
    """The page's data: the JSON up to the first '</script>' after its tag, which must be all of it."""
    start = html.index('<script type="application/json" id="data">') + len(
        '<script type="application/json" id="data">'
    )
    data: dict[str, Any] = json.loads(html[start : html.index("</script>", start)])
    return data


def page_of(output: Path, **options: Any) -> tuple[str, dict[str, Any]]:
    html = write_review(output, **options).read_text(encoding="utf-8")
    return html, embedded(html)


def test_values_are_text_and_cannot_leave_the_json(tmp_path: Path) -> None:
    row = output_row(0, "flagged", ["unsupported_numbers"], enrich_unsupported=["</script><!--"])
    row.update(title=EVIL, generated_description="ok </script><script>alert(2)</script> <!-- </SCRIPT x")
    out = write_output(
        tmp_path / "o<i>ut.parquet",
        [row],
        {
            "model": {"name": "<img src=x onerror=alert(3)>"},
            "attributes": [{"column": "title", "label": "<u>"}],
        },
    )
    html, data = page_of(out)
    assert html.count("<script") == 2 and html.lower().count("</script") == 2  # the data's tag and the code's
    assert "<img" not in html and "<i>" not in html and "<u>" not in html
    assert "&lt;img src=x onerror=alert(3)&gt;" in html and "o&lt;i&gt;ut.parquet" in html
    assert data["rows"][0]["title"] == EVIL
    assert data["rows"][0]["text"] == row["generated_description"]
    assert data["rows"][0]["unsupported"] == ["</script><!--"]
    assert data["rows"][0]["attrs"] == [["<u>", EVIL]]


def test_caps_and_seeded_sample_on_a_large_parquet_output(tmp_path: Path) -> None:
    n = 50_000
    status = ["error" if i % 500 == 7 else "flagged" if i % 20 == 3 else "ok" for i in range(n)]
    flags = [["repetition"] if s == "flagged" else [] for s in status]
    texts = [None if s == "error" else f"Text {i} " + "word " * (i % 90) for i, s in enumerate(status)]
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(n)],
            "title": [f"Product {i}" for i in range(n)],
            "content": [f"Real {i}" for i in range(n)],
            "generated_description": texts,
            "enrich_status": status,
            "enrich_finish_reason": [None if t is None else "stop" for t in texts],
            "enrich_flags": pa.array(flags, pa.list_(pa.string())),
            "enrich_output_tokens": pa.array(
                [None if t is None else 10 + i % 50 for i, t in enumerate(texts)], pa.int32()
            ),
            "enrich_key": [f"k{i}" for i in range(n)],
        }
    )
    out = tmp_path / "big.parquet"
    pq.write_table(table, out, row_group_size=7_000)
    attention = sum(s != "ok" for s in status)  # 2,500 flagged + 100 errors
    html, data = page_of(out, max_flagged=1000, sample=500, seed=1)
    rows = data["rows"]
    assert sum(r["status"] != "ok" for r in rows) == 1000 and sum(r["status"] == "ok" for r in rows) == 500
    assert [r["row"] for r in rows] == sorted(r["row"] for r in rows)
    assert all(r["key"] == f"k{r['row']}" and r["id"] == f"p{r['row']}" for r in rows)
    ok_rows = [r["row"] for r in rows if r["status"] == "ok"]
    assert min(ok_rows) < 5_000 and max(ok_rows) > 45_000  # spread over the file, not its head
    note = f"Showing 1,000 of {attention:,} rows with a flag or an error and a random sample of 500 of {n - attention:,}"
    assert note in html
    assert "50,000" in html and "47,400" in html  # the figures count every row, not the page's
    again = page_of(out, max_flagged=1000, sample=500, seed=1)[1]["rows"]
    other = page_of(out, max_flagged=1000, sample=500, seed=2)[1]["rows"]
    assert [r["row"] for r in again] == [r["row"] for r in rows]
    assert [r["row"] for r in other] != [r["row"] for r in rows]
    everything = page_of(out, max_flagged=n, sample=n)
    assert len(everything[1]["rows"]) == n and "All 50,000 rows are on this page." in everything[0]


@pytest.mark.parametrize("separator", [",", ";"])
def test_csv_output_with_joined_lists(tmp_path: Path, separator: str) -> None:
    rows = [
        output_row(0, "flagged", ["truncated", "repetition"], enrich_unsupported=["white", "10 ft"]),
        output_row(1),
        output_row(2, "error"),
    ]
    frame = pl.from_dicts(rows)
    frame = frame.with_columns(pl.col("enrich_flags", "enrich_unsupported").list.join(";"))
    out = tmp_path / "out.csv"
    frame.write_csv(out, separator=separator)
    _, data = page_of(out)
    got = {r["row"]: r for r in data["rows"]}
    assert got[0]["flags"] == ["truncated", "repetition"] and got[0]["unsupported"] == ["white", "10 ft"]
    assert got[0]["tokens"] == 12 and got[1]["flags"] == [] and got[1]["unsupported"] == []
    assert got[2]["text"] is None and got[2]["tokens"] is None and got[2]["status"] == "error"
    assert got[0]["id"] == "sku-00000" and got[0]["key"] == "key0"


def test_renamed_columns_from_the_report(tmp_path: Path) -> None:
    rows = [
        {
            "sku": "A-1",
            "name": "Desk lamp",
            "body": "A lamp.",
            "brand": "Acme",
            "colour": None,
            "desc": "A white desk lamp.",
            "state": "flagged",
            "why_stop": "stop",
            "qflags": ["unsupported_claims"],
            "ntok": 5,
            "ckey": "abc",
            "bad_words": ["white"],
        }
    ]
    report = {
        "columns": {"id": "sku", "title": "name", "content": "body"},
        "attributes": [{"column": "brand", "label": "Brand"}, {"column": "colour", "label": "Colour"}],
        "output_columns": {
            "generated_description": "desc",
            "enrich_status": "state",
            "enrich_finish_reason": "why_stop",
            "enrich_flags": "qflags",
            "enrich_output_tokens": "ntok",
            "enrich_key": "ckey",
            "enrich_unsupported": "bad_words",
        },
    }
    _, data = page_of(write_output(tmp_path / "out.parquet", rows, report))
    (r,) = data["rows"]
    assert (r["id"], r["title"], r["content"], r["text"]) == (
        "A-1",
        "Desk lamp",
        "A lamp.",
        "A white desk lamp.",
    )
    assert (r["status"], r["flags"], r["tokens"], r["key"]) == ("flagged", ["unsupported_claims"], 5, "abc")
    assert r["unsupported"] == ["white"] and r["attrs"] == [["Brand", "Acme"]]  # a null attribute is left out
    assert data["flags"] == [["unsupported_claims", 1]]


def test_an_old_output_without_optional_columns_or_report(tmp_path: Path) -> None:
    rows = [{"title": "Lamp", "generated_description": "A lamp.", "enrich_status": "ok"}]
    html, data = page_of(write_output(tmp_path / "old.parquet", rows))
    (r,) = data["rows"]
    assert r["id"] is None and r["key"] is None and r["flags"] == [] and r["unsupported"] == []
    assert "no run report beside it" in html and "no error file found" in html
    with pytest.raises(InputError, match="no column 'enrich_status'"):
        write_review(write_output(tmp_path / "plain.parquet", [{"title": "Lamp"}]))
    with pytest.raises(InputError, match="no such file"):
        write_review(tmp_path / "missing.parquet")


def test_error_reasons_are_grouped_and_attached(tmp_path: Path) -> None:
    rows = [output_row(i, "error" if i in (1, 2, 3) else "ok") for i in range(5)]
    errors = tmp_path / "errs.jsonl"
    records = [
        (1, "validate", "/data/cat.parquet row 1: title is empty"),
        (2, "validate", "/data/cat.parquet row 2: title is empty"),
        (3, "prompt", "/data/cat.parquet row 3: prompt has 3001 tokens, over the 2040 that fit"),
    ]
    errors.write_text(
        "".join(
            json.dumps({"id": None, "row": r, "stage": s, "reason": t, "value": None}) + "\n"
            for r, s, t in records
        )
    )
    out = write_output(tmp_path / "out.parquet", rows, {"errors_file": "/elsewhere/errs.jsonl"})
    shutil.copy(errors, tmp_path / "out.parquet.errors.jsonl")  # the report's path does not resolve here
    html, data = page_of(out)
    assert reason_group(records[2][2]) == "prompt has N tokens, over the N that fit"
    assert '>2</td><td><span class="stage">validate</span> title is empty' in html.replace("\n", "")
    assert {r["row"]: r["error"] for r in data["rows"] if r["error"]} == {
        r: t.split(": ", 1)[1] for r, _, t in records
    }
    # The same records as a Parquet error file.
    pq.write_table(
        pa.Table.from_pylist([json.loads(x) for x in errors.read_text().splitlines()]), tmp_path / "e.parquet"
    )
    Path(f"{out}.report.json").write_text(json.dumps({"errors_file": str(tmp_path / "e.parquet")}))
    assert {r["row"] for r in page_of(out)[1]["rows"] if r["error"]} == {1, 2, 3}


def test_read_decisions(tmp_path: Path) -> None:
    good = tmp_path / "out.parquet.decisions.jsonl"
    good.write_text(
        '{"id": "a", "row": 3, "key": "k3", "decision": "rejected", "note": "says white"}\n\n'
        '{"id": null, "row": 0, "key": "k0", "decision": "approved", "note": null}\n'
    )
    first, second = read_decisions(good)
    assert (first.id, first.row, first.key, first.decision, first.note) == (
        "a",
        3,
        "k3",
        "rejected",
        "says white",
    )
    assert second.id is None and second.decision == "approved"
    line = '{"id": "a", "row": 1, "key": "k", "decision": "approved", "note": null}'
    bad = {
        "not json": "line 2: not JSON",
        '["a"]': "line 2: expected a JSON object",
        line.replace("approved", "maybe"): "line 2: decision: Input should be 'approved' or 'rejected'",
        line.replace('"row": 1', '"row": "1"'): "line 2: row: Input should be a valid integer",
        line.replace('"row": 1', '"row": -1'): "line 2: row: Input should be greater than or equal to 0",
        line.replace('"key": "k", ', ""): "line 2: missing 'key'",
        line.replace('"note"', '"notes"'): "line 2: unknown field 'notes'",
        line.replace('"row": 1', '"row": 3'): "line 2: row 3 was already decided on line 1",
    }
    for text, message in bad.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(
            f'{{"id": "b", "row": 3, "key": "k", "decision": "approved", "note": null}}\n{text}\n'
        )
        with pytest.raises(InputError) as err:
            read_decisions(path)
        assert str(err.value).startswith(f"{path} {message}"), str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="no such decisions file"):
        read_decisions(tmp_path / "none.jsonl")


def test_review_command(tmp_path: Path) -> None:
    out = write_output(tmp_path / "out.parquet", [output_row(0), output_row(1, "flagged", ["truncated"])])
    r = enrich("review", out)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"{out}.review.html" and Path(f"{out}.review.html").is_file()
    r = enrich("review", out, "-o", tmp_path / "p.html", "--sample", "0", "--seed", "3")
    assert r.exit_code == 0 and len(embedded((tmp_path / "p.html").read_text())["rows"]) == 1
    assert "Examples:" in enrich("review", "--help").output
    assert enrich("review", out, "--sample", "-1").exit_code == 2
    plain = write_output(tmp_path / "plain.parquet", [{"title": "Lamp"}])
    r = enrich("review", plain, "--log-format", "text")
    assert r.exit_code == 3 and "error: " in r.output and "enrich_status" in r.output


def write_eval_dir(path: Path) -> Path:
    path.mkdir()
    metrics = {"rouge_l": 0.2, "chrf": 30.0, "eos_rate": 0.9, "flag_rates": {"truncated": 0.1}}
    report = {
        "data": "holdout.parquet",
        "rows": 3,
        "seed": 0,
        "models": {
            "model": {
                "name": "shop",
                **metrics,
                "unsupported_rates": {"colour": 0.05},
                "attribute_coverage": 0.8,
            },
            "baseline": {"name": "<base>", **metrics, "sampling": {"temperature": 0.7}},
        },
    }
    (path / "eval_report.json").write_text(json.dumps(report))
    reference = "A red lamp made of steel with a round base"
    gens = [
        ("A red lamp made of steel with a round base", [], "A red lamp made of steel", []),  # close
        ("A lamp", [], "A red lamp made of steel with a round base", []),  # differ by overlap
        ("A red lamp", ["truncated"], "A red lamp", ["repetition"]),  # differ by flags
    ]
    with (path / "generations.jsonl").open("w") as f:
        for i, (m, mf, b, bf) in enumerate(gens):
            line = {
                "row": i * 10,
                "id": f"p{i}",
                "title": EVIL if i == 0 else f"Lamp {i}",
                "reference": reference,
                "attributes": {"Colour": "red"},
                "model": {"text": m, "finish": "stop", "flags": mf, "unsupported": ["white"]},
                "baseline": {"text": b, "finish": "stop", "flags": bf},
            }
            f.write(json.dumps(line) + "\n")
    return path


def test_eval_page(tmp_path: Path) -> None:
    html = write_eval_page(write_eval_dir(tmp_path / "eval")).read_text()
    data = embedded(html)
    assert [r["row"] for r in data["rows"]] == [10, 20, 0]  # most different first
    assert data["rows"][2]["title"] == EVIL and data["rows"][0]["attrs"] == [["Colour", "red"]]
    assert data["roles"] == [["model", "shop"], ["baseline", "<base>"]] and "&lt;base&gt;" in html
    labels = [
        "ROUGE-L F1",
        "chrF",
        "ends by EOS",
        "flag rate: truncated",
        "attribute coverage",
        "unsupported rates: colour",
    ]
    at = [html.index(f"<td>{label}</td>") for label in labels]
    assert at == sorted(at)  # the known metrics first, then the others by name
    assert '<td class="n">80.0%</td>' in html and '<td class="n">–</td>' in html  # the baseline lacks it
    assert html.count("<script") == 2


def _require_chromium() -> Any:
    """playwright's sync API, or a failure: CI installs chromium (.ci/run); ENRICH_SKIP_BROWSER=1 skips."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is missing: pip install -e '.[dev]'"
    if problem is None and not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if problem is not None:
        if os.environ.get("ENRICH_SKIP_BROWSER") == "1":
            pytest.skip(problem)
        pytest.fail(f"{problem} (or set ENRICH_SKIP_BROWSER=1 to skip the browser test)")
    return sync_playwright


@pytest.mark.browser
def test_review_page_in_chromium(greedy_model: Path, tmp_path: Path) -> None:
    sync_playwright = _require_chromium()
    src = tmp_path / "catalog.parquet"
    catalog = pl.read_parquet(CATALOG).head(24)
    titles = catalog["title"].to_list()
    titles[1], titles[2] = EVIL, ""  # markup as text; an empty title goes to the error file
    catalog.with_columns(pl.Series("title", titles)).write_parquet(src)
    out = tmp_path / "out.parquet"
    # Truncation kept (status ok, flag kept): the tiny model never stops within 8 tokens.
    args = greedy_run_args(
        src, out, greedy_model, 8, "--incremental", "--set", "policies.truncated=keep", max_new_tokens=8
    )
    run = enrich(*args)
    assert run.exit_code == 6, run.output[-2000:]  # one row in the error file
    output = pl.read_parquet(out)
    page = Path(f"{out}.review.html")  # the run wrote it
    assert page.is_file() and write_review(out) == page  # and enrich review writes it again

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 900})
        tab = context.new_page()
        problems: list[str] = []
        tab.on("pageerror", lambda e: problems.append(str(e)))

        def on_dialog(dialog: Any) -> None:  # an alert() from the data would mean markup ran
            problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        tab.on("dialog", on_dialog)
        tab.goto(page.as_uri())
        rows = tab.locator("#rows tbody tr")
        assert rows.count() == 24
        assert tab.locator('tr[data-row="1"] .title').inner_text() == EVIL

        tab.select_option("#f-status", "error")
        assert rows.count() == 1 and rows.first.get_attribute("data-row") == "2"
        assert "title is empty" in rows.first.inner_text()
        tab.select_option("#f-status", "")
        tab.select_option("#f-flag", "truncated")
        assert rows.count() == sum("truncated" in f for f in output["enrich_flags"].to_list()) == 23
        tab.select_option("#f-flag", "")

        tab.fill("#search", output["id"][5])
        tab.wait_for_function("document.querySelectorAll('#rows tbody tr').length === 1")
        assert rows.first.get_attribute("data-row") == "5"
        tab.fill("#search", "")
        tab.wait_for_function("document.querySelectorAll('#rows tbody tr').length === 24")

        tab.locator('tr[data-row="3"] button.reject').click()
        tab.locator('tr[data-row="3"] input.note').fill("invents a colour")
        tab.locator('tr[data-row="3"] input.note').press("Enter")  # change event: the note is kept
        tab.locator('tr[data-row="4"] button.approve').click()
        tab.select_option("#f-status", "error")
        tab.fill("#bulk-note", "no title")
        tab.click("#reject-shown")
        tab.reload()  # decisions persist in localStorage
        assert tab.locator('tr[data-row="3"] button.reject').get_attribute("aria-pressed") == "true"
        assert tab.locator('tr[data-row="4"] button.approve').get_attribute("aria-pressed") == "true"
        assert tab.locator("#decided").inner_text() == "1 approved · 2 rejected"
        tab.select_option("#f-decision", "rejected")
        assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.row)")) == ["2", "3"]
        tab.select_option("#f-decision", "")

        with tab.expect_download() as download:
            tab.click("#save")
        assert download.value.suggested_filename == "out.parquet.decisions.jsonl"
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        tab.evaluate("window.scrollTo(0, 0)")
        shot = tab.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert not problems, problems

    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    keys, ids = output["enrich_key"].to_list(), output["id"].to_list()
    assert [(d["row"], d["decision"], d["note"]) for d in lines] == [
        (2, "rejected", "no title"),
        (3, "rejected", "invents a colour"),
        (4, "approved", None),
    ]
    assert all(d["key"] == keys[d["row"]] and d["id"] == ids[d["row"]] for d in lines)
    assert [d.row for d in read_decisions(saved)] == [2, 3, 4]

    # The decisions go back to the run: the rejected row is written again, the approved one kept.
    again = enrich(*args, "--decisions", saved)
    assert again.exit_code == 6, again.output[-2000:]
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert (
        report["decisions"]["approved"],
        report["decisions"]["rejected"],
        report["decisions"]["stale"],
    ) == (1, 2, 0)
    texts, before = (
        pl.read_parquet(out)["generated_description"].to_list(),
        output["generated_description"].to_list(),
    )
    assert texts[3] != before[3] and texts[4] == before[4]

    from PIL import Image

    image = Image.open(tmp_path / "page.png").convert("RGB")
    assert image.width == 1366 and image.height >= 900 and len(shot) > 10_000
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50  # text, badges, bars: not a blank page
    if target := os.environ.get("ENRICH_REVIEW_SCREENSHOT"):  # bench/results keeps one from a real run
        shutil.copy(tmp_path / "page.png", target)
