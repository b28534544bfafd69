"""Pipeline cost without generation: read, normalize, prompt, postprocess, write per row; the passes over the
input; peak memory.

Runs `enrich run` on the real Amazon sample repeated to 10k, 100k and 1M rows with unique ids, each size in its
own process so that peak RSS is its own. The engine answers at once with real text: the description of another
row of the catalog (numbers, units, colours and materials as real copy has them), so that the quality flags
and claim checks do the work they do in a real run. Prints tables; targets: under 20 microseconds a row, peak
RSS flat within 10% from 10k to 1M, the input read at most three times (one pre-pass, the windows, the
assembly).

Stage seconds overlap: a thread reads and prompts the next window while the main thread finishes and writes
the current one. The per-row figure here is therefore wall time (the run's total less the engine's), not the
sum of the stages, which would count the overlapping seconds twice; the stages are shown per thread.

    python bench/pipeline.py [--sizes 10000,100000,1000000] [--window-rows 8192]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCES = [
    HERE.parent.parent / "shared" / "data" / "amazon_products.parquet",
    HERE.parent / "examples" / "catalog.parquet",
]
# The methods through which a run reads its input: each call is one pass over it.
READERS = ("windows", "count", "identity")


def make_catalog(rows: int, path: Path) -> None:
    """The real sample repeated to `rows` rows, ids made unique."""
    import polars as pl

    src = next(p for p in SOURCES if p.exists())
    base = pl.read_parquet(src).drop("description_raw", strict=False)
    reps = -(-rows // base.height)
    big = pl.concat([base.with_columns(pl.col("id") + f"-{i}") for i in range(reps)]).head(rows)
    # One row-group size for every catalog: a Parquet reader holds a row group, so memory is bounded by
    # max(window, row group); with the same row groups the sizes compare the pipeline, not the files.
    big.write_parquet(path, row_group_size=8192)


class CatalogEngine:
    """Answers each prompt at once with a real description: another row's, chosen by the prompt's hash."""

    name = "catalog"
    tokenizer = None
    max_model_len = 1 << 30

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = [t[:800] for t in texts if t]

    def generate(self, prompts: Sequence[str], sampling: Any, on_progress: Any = None) -> list[Any]:
        from enrich.model.generation import Generation

        n = len(self.texts)
        return [Generation(self.texts[zlib.crc32(p.encode()) % n], "stop", len(p) // 4, 96) for p in prompts]

    def close(self) -> None:
        pass


def trace_passes(passes: list[dict[str, object]], catalog: str) -> None:
    """Wrap the file readers so that each pass is recorded: whether it read the input (the review page reads
    the output through the same reader), who read it (the first caller outside the reader), which columns, and
    for how long (its consumer's work between batches included)."""
    from enrich.catalog.source import Source

    here = inspect.getsourcefile(Source)

    def caller() -> str:
        return next((f.function for f in inspect.stack()[2:12] if f.filename != here), "?")

    for name in READERS:
        fn = getattr(Source, name)
        if inspect.isgeneratorfunction(fn):

            def traced_gen(self: Source, *a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
                if self.path.endswith("reuse.parquet"):
                    yield from _fn(self, *a, **k)  # the state's own file, not the input
                    return
                entry = {
                    "reader": _name,
                    "input": os.path.abspath(self.path) == os.path.abspath(catalog),
                    "by": caller(),
                    "columns": len(a[0]) if a else 0,
                }
                t = time.perf_counter()
                yield from _fn(self, *a, **k)
                passes.append({**entry, "seconds": round(time.perf_counter() - t, 3)})

            setattr(Source, name, functools.wraps(fn)(traced_gen))
        else:

            def traced(self: Source, *a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
                t = time.perf_counter()
                result = _fn(self, *a, **k)
                passes.append(
                    {
                        "reader": _name,
                        "input": os.path.abspath(self.path) == os.path.abspath(catalog),
                        "by": caller(),
                        "columns": 0,
                        "seconds": round(time.perf_counter() - t, 3),
                    }
                )
                return result

            setattr(Source, name, functools.wraps(fn)(traced))


def child(catalog: str, out: str, window_rows: int) -> None:
    """One run in this process; prints the report's stage seconds, the passes over the input, peak RSS."""
    import polars as pl

    from enrich.config import build_job
    from enrich.run import run

    texts = pl.read_parquet(next(p for p in SOURCES if p.exists()), columns=["content"])["content"].to_list()
    passes: list[dict[str, object]] = []
    trace_passes(passes, catalog)
    job = build_job(
        {"input": {"path": catalog}, "output": {"path": out, "overwrite": True}},
        {
            "model.engine": "echo",  # no model loads: the engine below answers
            "batch.window_rows": window_rows,
            "prompt.template": "alpaca",
            "run.restart": True,
            "policies.duplicate_id": "keep",
        },
    )
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    report = run(job, engine=CatalogEngine(texts))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (
        usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    )  # the run's, whatever else runs
    result = {
        "seconds": report.seconds.model_dump(),
        "rows": report.counts.rows,
        "flags": report.flags,
        "rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": cpu_s,
        "passes": passes,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--window-rows", type=int, default=8192)
    parser.add_argument("--work", default=str(HERE / "work"))
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.window_rows)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        cat = work / f"catalog-{size}.parquet"
        if not cat.exists():
            make_catalog(size, cat)
        out = work / f"out-{size}.parquet"
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(cat), str(out), "--window-rows", str(args.window_rows)],
            capture_output=True,
            text=True,
            env={**os.environ, "POLARS_MAX_THREADS": "1"},
            check=False,
        )
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"run of {size} rows failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        s = r["seconds"]
        results.append(
            {
                "rows": size,
                **s,
                "wall_us_per_row": 1e6 * (s["total"] - s["generate"]) / size,
                "cpu_us_per_row": 1e6 * r["cpu_s"] / size,
                "rss_mb": r["rss_mb"],
                "wall_s": wall,
                "flags": r["flags"],
                "passes": r["passes"],
            }
        )
    report(results, args.window_rows)


def report(results: list[dict[str, Any]], window_rows: int) -> None:
    print(
        f"\npipeline without generation (real texts answered at once, window {window_rows}, POLARS_MAX_THREADS=1)"
    )
    print(
        f"{'rows':>9} {'read+prompt s':>14} {'post+write s':>13} {'total s':>8} {'µs/row (wall)':>14} "
        f"{'CPU µs/row':>11} {'peak RSS MB':>12} {'rows flagged':>13}"
    )
    for r in results:
        flagged = max(r["flags"].values()) if r["flags"] else 0
        print(
            f"{r['rows']:>9} {r['read'] + r['prompt']:>14.2f} {r['postprocess'] + r['write']:>13.2f} "
            f"{r['total']:>8.2f} {r['wall_us_per_row']:>14.2f} {r['cpu_us_per_row']:>11.2f} {r['rss_mb']:>12.0f} "
            f"{flagged:>13}"
        )
    for r in results:
        reads = sum(p["reader"] == "windows" and p["input"] for p in r["passes"])
        print(f"\npasses over the input, {r['rows']} rows: {reads} reads of its data (and the others listed)")
        for p in r["passes"]:
            what = "input " if p["input"] else "output"
            print(
                f"  {what} {p['reader']:<9} by {p['by']:<22} {p['columns']:>3} columns {p['seconds']:>8.2f} s"
            )
    lo, hi = min(r["rss_mb"] for r in results), max(r["rss_mb"] for r in results)
    print(f"peak RSS spread: {100 * (hi - lo) / lo:.1f}% (target ≤ 10%)")
    import platform
    from datetime import UTC, datetime

    out = HERE / "results" / "pipeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.machine(),
                "load_average": os.getloadavg(),
                "window_rows": window_rows,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
