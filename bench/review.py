"""The review page of a large run: seconds, peak memory and page size of `write_review` on synthetic outputs.

Builds a Parquet OUTPUT of N rows (cached in the work folder) from the real Amazon sample: titles and existing
descriptions of real products, generated texts of 300-600 characters cut from real descriptions, about 5% of
rows flagged (with unsupported words that occur in their text), 0.2% in the error file, and writes its page
with the default caps (5,000 rows with a flag or an error, a sample of 1,000 others). Each size runs in its own
process, so that its peak RSS is its own. Target: seconds for 1M rows, memory flat in the number of rows.
Then each page is opened in headless Chromium (Debian's /usr/bin/chromium, through playwright, as the browser
test does) and timed as a reviewer meets it: loaded with its rows drawn, a flag filter, a search.

    python bench/review.py [--sizes 100000,1000000,3000000] [--work /tmp/enrich-bench-review] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [
    HERE.parent.parent / "shared" / "data" / "amazon_products.parquet",
    HERE.parent / "examples" / "catalog.parquet",
]
FLAGGED = 0.05
ERRORS = 0.002
CHUNK = 50_000  # rows built and written at a time
WORDS = ["white", "10 ft", "stainless steel", "3 pockets", "for kids", "waterproof"]


def make_output(rows: int, path: Path) -> None:
    """A run's OUTPUT (and its error file and report) of `rows` rows, written a chunk at a time."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = pl.read_parquet(next(p for p in SOURCES if p.exists()))
    titles, contents = src["title"].to_list(), src["content"].to_list()
    corpus = " ".join(contents)
    rng = random.Random(0)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("title", pa.string()),
            ("content", pa.string()),
            ("generated_description", pa.string()),
            ("enrich_status", pa.string()),
            ("enrich_finish_reason", pa.string()),
            ("enrich_flags", pa.list_(pa.string())),
            ("enrich_output_tokens", pa.int32()),
            ("enrich_key", pa.string()),
            ("enrich_unsupported", pa.list_(pa.string())),
        ]
    )
    errors = []
    tmp = path.with_name(path.name + ".tmp")
    # Texts stay plain (no dictionary): a real run's generated texts are all different.
    with pq.ParquetWriter(
        tmp, schema, compression="zstd", use_dictionary=["enrich_status", "enrich_finish_reason"]
    ) as w:
        for start in range(0, rows, CHUNK):
            cols: dict[str, list[object]] = {name: [] for name in schema.names}
            for i in range(start, min(start + CHUNK, rows)):
                p = i % len(titles)
                at = rng.randrange(len(corpus) - 700)
                text: str | None = corpus[at : at + rng.randint(300, 600)]
                draw = rng.random()
                status, flags, unsupported = "ok", list[str](), list[str]()
                if draw < ERRORS:
                    status, text = "error", None
                    errors.append(
                        {
                            "id": f"p{i}",
                            "row": i,
                            "stage": "postprocess",
                            "value": None,
                            "reason": f"{path} row {i}: quality flag empty (policy: error)",
                        }
                    )
                elif draw < ERRORS + FLAGGED:
                    status = "flagged"
                    unsupported = rng.sample(WORDS, 2)
                    text = f"{text} Comes in {unsupported[0]}, {unsupported[1]}."
                    flags = ["unsupported_claims"] if draw < FLAGGED else ["unsupported_claims", "truncated"]
                cols["id"].append(f"p{i}")
                cols["title"].append(titles[p])
                cols["content"].append(contents[p][:1500])
                cols["generated_description"].append(text)
                cols["enrich_status"].append(status)
                cols["enrich_finish_reason"].append(None if text is None else "stop")
                cols["enrich_flags"].append(flags)
                cols["enrich_output_tokens"].append(None if text is None else len(text) // 4)
                cols["enrich_key"].append(f"{rng.getrandbits(64):016x}")
                cols["enrich_unsupported"].append(unsupported)
            w.write_table(pa.table(cols, schema=schema), row_group_size=8192)
    with Path(f"{path}.errors.jsonl").open("w") as f:
        f.writelines(json.dumps(e) + "\n" for e in errors)
    Path(f"{path}.report.json").write_text(
        json.dumps({"status": "ok", "errors_file": f"{path}.errors.jsonl", "model": {"name": "synthetic"}})
    )
    os.replace(tmp, path)


def child(output: str) -> None:
    """One page in this process; prints its seconds, peak RSS and size as JSON."""
    sys.path.insert(0, str(HERE.parent))  # this checkout's enrich, whichever one is installed
    from enrich.review import write_review

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    page = write_review(Path(output))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(rss, 1),
                "rss_after_imports_mb": round(rss_before, 1),
                "html_mb": round(page.stat().st_size / 2**20, 2),
            }
        )
    )


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


def open_in_browser(page: Path) -> dict[str, float | int | str]:
    """Seconds until the page is loaded with its rows drawn, and until a flag filter and a search have redrawn
    them (the count line above the rows changes when they are)."""
    from playwright.sync_api import sync_playwright

    count = "document.getElementById('count').textContent"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1366, "height": 900})
        t0 = time.perf_counter()
        tab.goto(page.as_uri(), wait_until="load", timeout=300_000)
        tab.wait_for_function("document.querySelectorAll('#rows tbody tr').length > 0", timeout=300_000)
        loaded = time.perf_counter() - t0
        everything = tab.evaluate(count)
        t0 = time.perf_counter()
        tab.select_option("#f-flag", "unsupported_claims")
        tab.wait_for_function(f"{count} !== {json.dumps(everything)}", timeout=300_000)
        filtered = time.perf_counter() - t0
        flagged = tab.evaluate(count)
        tab.select_option("#f-flag", "")
        tab.wait_for_function(f"{count} === {json.dumps(everything)}", timeout=300_000)
        t0 = time.perf_counter()
        tab.fill("#search", "stainless")
        tab.wait_for_function(f"{count} !== {json.dumps(everything)}", timeout=300_000)
        searched = time.perf_counter() - t0
        found = tab.evaluate(count)
        browser.close()
    return {
        "browser_load_s": round(loaded, 2),
        "browser_rows": everything,
        "browser_filter_s": round(filtered, 2),
        "browser_filter_rows": flagged,
        "browser_search_s": round(searched, 2),
        "browser_search_rows": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,3000000")
    parser.add_argument("--work", default="/tmp/enrich-bench-review")
    parser.add_argument("--no-browser", action="store_true", help="skip opening the pages in Chromium")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.make:
        make_output(int(args.make[0]), Path(args.make[1]))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        output = work / f"out-{rows}.parquet"
        if not output.exists():  # in a process of its own: a child inherits its parent's peak RSS
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--make", str(rows), str(output)], check=True)
            print(f"built {output} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(output)],
            capture_output=True,
            text=True,
            env=env,
            cwd=HERE.parent,
        )
        if done.returncode:
            sys.exit(f"page of {output} failed:\n{done.stderr}")
        result = {
            "rows": rows,
            "output_mb": round(output.stat().st_size / 2**20, 1),
            **json.loads(done.stdout),
        }
        if not args.no_browser:
            result |= open_in_browser(Path(f"{output}.review.html"))
        results.append(result)
        print(json.dumps(result))
    out = HERE / "results" / "review.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
