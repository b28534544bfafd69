"""`enrich run --engine ray` on this CPU: one local worker against two, against a plain local run, same rows.

Each way is a real `enrich run` process (greedy, one torch thread per process or worker, as Ray gives a 1-CPU
worker), on the first --rows rows of examples/catalog.parquet. Prints a table of rows/s and checks that every
way wrote the same generated rows as the local run.

    python bench/ray_cpu.py [--model smollm2-135m] [--rows 48] [--new-tokens 32] [--window-rows 8]

Figures: `wall` counts everything a user waits for (process start, Ray start, model load per worker); `pool`
is rows over the busiest worker's generating time (reading, prompting, generating and postprocessing its
windows), the throughput once the workers are up; for the local run it is rows over its generate seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT_COLUMNS = ["generated_description", "enrich_status", "enrich_finish_reason", "enrich_output_tokens"]


def enrich_run(src: Path, out: Path, args: argparse.Namespace, *extra: str) -> tuple[float, dict[str, Any]]:
    """Run `enrich run` to the end in a fresh process; returns its wall seconds and its report."""
    argv = [
        sys.executable,
        "-m",
        "enrich.cli",
        "run",
        str(src),
        "-o",
        str(out),
        "--model",
        args.model,
        "--max-new-tokens",
        str(args.new_tokens),
        "--window-rows",
        str(args.window_rows),
        "--batch-size",
        str(args.batch_size),
        "--temperature",
        "0",
        "--restart",
        "--overwrite",
        "--log-format",
        "json",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if done.returncode not in (0, 6):
        raise SystemExit(f"enrich run {' '.join(extra)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(Path(f"{out}.report.json").read_text())


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The local run, then Ray with 1 and with 2 workers; one row of figures each."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = work / "catalog.parquet"
    pl.read_parquet(REPO / "examples" / "catalog.parquet").head(args.rows).write_parquet(src)
    ways: list[tuple[str, list[str]]] = [("local (1 process)", ["--engine", "transformers"])]
    for n in args.workers:
        ways.append(
            (
                f"ray, {n} worker{'s' if n > 1 else ''}",
                ["--engine", "ray", "--worker-engine", "transformers", "--workers", str(n)],
            )
        )
    rows: list[dict[str, Any]] = []
    reference: pl.DataFrame | None = None
    for label, extra in ways:
        out = work / f"out-{len(rows)}.parquet"
        wall, report = enrich_run(src, out, args, *extra)
        got = pl.read_parquet(out).select("id", *RESULT_COLUMNS)
        reference = got if reference is None else reference
        workers = report.get("workers") or []
        busy = max((w["busy_s"] for w in workers), default=report["seconds"]["generate"])
        rows.append(
            {
                "way": label,
                "rows": report["counts"]["rows"],
                "wall_s": round(wall, 1),
                "wall_rows_per_s": round(args.rows / wall, 2),
                "pool_rows_per_s": round(args.rows / busy, 2),
                "per_worker_rows_per_s": [w["rows_per_s"] for w in workers],
                "same_rows_as_local": got.equals(reference),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    base = rows[1]["pool_rows_per_s"] if len(rows) > 1 else rows[0]["pool_rows_per_s"]
    lines = [
        "| way | wall s | rows/s (wall) | rows/s (pool) | vs 1 worker | per worker rows/s | same rows |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{x:.2f}" for x in r["per_worker_rows_per_s"]) or "-"
        lines.append(
            f"| {r['way']} | {r['wall_s']} | {r['wall_rows_per_s']} | {r['pool_rows_per_s']} | "
            f"{r['pool_rows_per_s'] / base:.2f}x | {per} | {'yes' if r['same_rows_as_local'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--window-rows", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    ap.add_argument("--work", default="/tmp/enrich-ray-cpu")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "ray_cpu.json")
    args = ap.parse_args()
    load = os.getloadavg()[0]  # the machine is shared: its load says how far these figures can be trusted
    rows = measure(args)
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU, {platform.processor()}",
        "model": args.model,
        "rows": args.rows,
        "new_tokens": args.new_tokens,
        "window_rows": args.window_rows,
        "batch_size": args.batch_size,
        "load_average_1m": [round(load, 1), round(os.getloadavg()[0], 1)],
    }
    args.json.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
