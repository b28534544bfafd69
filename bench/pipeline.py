"""Pipeline cost without generation: read, normalize, prompt, postprocess, write per row, and peak memory.

Runs `enrich run` with the echo engine (no model: a fixed answer at once) on the real Amazon sample repeated
to 10k, 100k and 1M rows with unique ids, each size in its own process so that peak RSS is its own.
Prints a table; target: under 20 microseconds a row, peak RSS flat within 10% from 10k to 1M.

    python bench/pipeline.py [--sizes 10000,100000,1000000] [--window-rows 8192]
"""

from __future__ import annotations

import argparse
import json
import os
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


# The functions through which a run reads its input, each call one pass over it: (module, function).
READERS = [
    ("enrich.catalog.source", "_batches"),
    ("enrich.catalog.source", "count_rows"),
    ("enrich.catalog.source", "input_identity"),
]


def trace_passes(passes: list[dict[str, object]]) -> None:
    """Wrap the input readers so that each pass over the input is recorded: who read, and for how long (from
    its start to its end, the consumer's work between batches included)."""
    import functools
    import importlib
    import inspect

    for module_name, name in READERS:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)

        def caller() -> str:
            frames = [f.function for f in inspect.stack()[2:8] if "enrich" in f.filename]
            return frames[0] if frames else "?"

        if inspect.isgeneratorfunction(fn):

            def gen(*a: object, _fn=fn, _name=name, **k: object):  # type: ignore[no-untyped-def]
                entry = {"reader": _name, "by": caller(), "seconds": 0.0}
                t = time.perf_counter()
                yield from _fn(*a, **k)
                entry["seconds"] = round(time.perf_counter() - t, 3)
                passes.append(entry)

            setattr(module, name, functools.wraps(fn)(gen))
        else:

            def plain(*a: object, _fn=fn, _name=name, **k: object):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                result = _fn(*a, **k)
                passes.append({"reader": _name, "by": caller(), "seconds": round(time.perf_counter() - t, 3)})
                return result

            setattr(module, name, functools.wraps(fn)(plain))


def child(catalog: str, out: str, window_rows: int) -> None:
    """One run in this process; prints the report's stage seconds, the passes over the input, peak RSS."""
    from enrich.config import build_job
    from enrich.run import run

    passes: list[dict[str, object]] = []
    trace_passes(passes)

    job = build_job(
        {"input": {"path": catalog}, "output": {"path": out, "overwrite": True}},
        {
            "model.engine": "echo",
            "batch.window_rows": window_rows,
            "prompt.template": "alpaca",
            "run.restart": True,
            "policies.duplicate_id": "keep",
        },
    )
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage0.ru_utime + usage0.ru_stime
    report = run(job)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024
    cpu_s = (
        usage.ru_utime + usage.ru_stime - cpu0
    )  # CPU time of the run itself, whatever else the machine does
    print(
        json.dumps(
            {
                "seconds": report.seconds.model_dump(),
                "rows": report.counts.rows,
                "rss_mb": rss_mb,
                "cpu_s": cpu_s,
                "passes": passes,
            }
        )
    )


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
    # The embedded model's tokenizer is not needed: the echo engine has none, prompts use the alpaca text.
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
        pipeline_s = s["read"] + s["prompt"] + s["postprocess"] + s["write"]
        results.append(
            {
                "rows": size,
                **s,
                "pipeline_us_per_row": 1e6 * pipeline_s / size,
                "total_us_per_row": 1e6 * s["total"] / size,
                "cpu_us_per_row": 1e6 * r["cpu_s"] / size,
                "rss_mb": r["rss_mb"],
                "wall_s": wall,
                "passes": r["passes"],
            }
        )
    print(f"\npipeline without generation (echo engine, window {args.window_rows}, POLARS_MAX_THREADS=1)")
    print(
        f"{'rows':>9} {'read s':>8} {'prompt s':>9} {'post s':>8} {'write s':>8} {'total s':>8} "
        f"{'µs/row (stages)':>16} {'µs/row (total)':>15} {'CPU µs/row':>11} {'peak RSS MB':>12}"
    )
    for r in results:
        print(
            f"{r['rows']:>9} {r['read']:>8.2f} {r['prompt']:>9.2f} {r['postprocess']:>8.2f} {r['write']:>8.2f} "
            f"{r['total']:>8.2f} {r['pipeline_us_per_row']:>16.2f} {r['total_us_per_row']:>15.2f} "
            f"{r['cpu_us_per_row']:>11.2f} {r['rss_mb']:>12.0f}"
        )
    for r in results:
        print(f"\npasses over the input, {r['rows']} rows: {len(r['passes'])}")
        for p in r["passes"]:
            print(f"  {p['reader']:<16} by {p['by']:<24} {p['seconds']:>8.2f} s")
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
                "window_rows": args.window_rows,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
