"""Chaos: kill real `enrich run` processes at random instants, re-run them, and check every output.

The long version of tests/test_reliability.py. For each of N seeded random instants (default 20) a fresh run
is started and hit with SIGKILL (or, one time in four, SIGTERM) at that instant: during start-up, generation,
assembly or after the end alike. The same command is then re-run to the end, and its output must hold exactly
one row per input row and equal an uninterrupted run's output (greedy decoding, fixed seed).

    python bench/chaos.py                     # 20 moments, tiny random model (built once, ~1 min)
    python bench/chaos.py --kills 5 --rows 64
    python bench/chaos.py --model smollm2-135m --rows 40 --max-new-tokens 24

Exit status 0 when every moment passed, 1 otherwise; --json FILE keeps the per-moment results.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parent.parent


def build_tiny_model(dest: Path) -> Path:
    """The tests' greedy tiny Llama (untied embeddings, varied greedy words), built once."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _support import build_tiny_llama

    from enrich.model.reference import resolve_model

    return build_tiny_llama(Path(resolve_model("smollm2-135m").path), dest, tied=False, seed=3)


def env() -> dict[str, str]:
    """Cron-like: no terminal, a bare environment."""
    return {
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def command(src: Path, out: Path, args: argparse.Namespace, model: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "enrich.cli",
        "run",
        str(src),
        "-o",
        str(out),
        "--model",
        model,
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--window-rows",
        str(args.window_rows),
        "--batch-size",
        "2",
        "--temperature",
        "0",
        "--seed",
        "11",
        "--log-format",
        "json",
    ]


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO)


def parts_done(out: Path) -> int:
    try:
        return (Path(f"{out}.enrich") / "parts.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def one_moment(
    i: int,
    moment: tuple[str, float, int],
    sig: signal.Signals,
    src: Path,
    work: Path,
    args: argparse.Namespace,
    model: str,
    reference: pl.DataFrame,
) -> dict[str, Any]:
    """Start, hit with sig at the moment, re-run to the end, compare.

    A moment is ("time", seconds, 0): that long after the start; or ("window", seconds, k): that long after
    the k-th window was saved (under load start-up takes most of the time, so pure time draws miss the rest).
    """
    kind, delay, k = moment
    out = work / f"moment-{i:02d}" / "out.parquet"
    out.parent.mkdir(parents=True)
    cmd = command(src, out, args, model)
    proc = subprocess.Popen(
        cmd,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    if kind == "window":
        while proc.poll() is None and parts_done(out) < k:
            time.sleep(0.01)
    try:
        _, err = proc.communicate(timeout=delay)
        landed = "after the end"
    except subprocess.TimeoutExpired:
        saved = parts_done(out)
        landed = "start-up" if not Path(f"{out}.enrich").exists() else f"{saved} windows saved"
        proc.send_signal(sig)
        _, err = proc.communicate()
    first_rc = proc.returncode
    rerun = run_to_end(cmd)
    ok = rerun.returncode == 0 and out.is_file()
    equal = False
    rows = -1
    if ok:
        got = pl.read_parquet(out)
        rows = got.height
        equal = got.equals(reference)
    expected_rc = {signal.SIGKILL: (-9, 0), signal.SIGTERM: (130, 0)}[sig]
    if (
        landed == "start-up"
    ):  # a SIGTERM before Python has set its handler ends it with -15; nothing was written
        expected_rc += (-15,)
    return {
        "moment": i,
        "when": f"{delay:.2f}s after the start" if kind == "time" else f"{delay:.2f}s after window {k}",
        "signal": sig.name,
        "landed": landed,
        "exit": first_rc,
        "exit_expected": first_rc in expected_rc,
        "rerun_exit": rerun.returncode,
        "rows": rows,
        "identical": equal,
        "passed": ok and equal and rows == reference.height and first_rc in expected_rc,
        "stderr_tail": (rerun.stderr if not ok else err)[-300:] if not (ok and equal) else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--window-rows", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model", help="Model reference (default: a tiny random Llama built once).")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="Write the per-moment results here.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="enrich-chaos-"))
    try:
        model = args.model or str(build_tiny_model(Path(tempfile.gettempdir()) / "enrich-chaos-tiny-model"))
        src = work / "catalog.parquet"
        pl.read_parquet(REPO / "examples" / "catalog.parquet").head(args.rows).write_parquet(src)
        t = time.perf_counter()
        ref_out = work / "reference" / "out.parquet"
        ref_out.parent.mkdir()
        done = run_to_end(command(src, ref_out, args, model))
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        span = time.perf_counter() - t
        reference = pl.read_parquet(ref_out)
        print(
            f"reference run: {reference.height} rows in {span:.1f}s; {args.kills} moments in [0, {span * 1.1:.1f}]s"
        )
        results = []
        n_windows = -(-args.rows // args.window_rows)
        for i in range(args.kills):
            if i % 2 == 0:  # half the moments anywhere in time, half spread over the windows' progress
                moment = ("time", rng.uniform(0.0, span * 1.1), 0)
            else:
                moment = ("window", rng.uniform(0.0, 0.3), rng.randint(0, n_windows))
            sig = signal.SIGTERM if rng.random() < 0.25 else signal.SIGKILL
            r = one_moment(i, moment, sig, src, work, args, model, reference)
            results.append(r)
            print(
                f"{i:2d}  {r['signal']:7}  {r['when']:26}  ({r['landed']:17})  exit {r['exit']:4}  "
                f"re-run exit {r['rerun_exit']}  rows {r['rows']}  identical {r['identical']}  "
                f"{'PASS' if r['passed'] else 'FAIL ' + r['stderr_tail']}",
                flush=True,
            )
        passed = sum(r["passed"] for r in results)
        print(f"{passed}/{len(results)} moments passed")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if passed == len(results) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
