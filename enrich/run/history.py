"""The report history (run.history_dir): one report per run, ok or not, so cron leaves a record of every night."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.config import JobConfig
from enrich.contracts import COUNT_KEYS, Counts, RunReport, Seconds, Tokens
from enrich.errors import Interrupted, exit_code_of
from enrich.files import write_json
from enrich.model.reference import versions
from enrich.quality.flags import FLAGS
from enrich.run.target import JOURNAL

if TYPE_CHECKING:
    from enrich.run.plan import Plan


def now() -> str:
    """The time of day as the reports give it: ISO 8601, UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def keep(history_dir: str | None, report: RunReport, started: str | None = None) -> Path | None:
    """Write the report into the history folder under a name that sorts by start time (started: this process's,
    where the report is an earlier run's because the output was already up to date); None without a folder."""
    if not history_dir:
        return None
    folder = Path(history_dir)
    folder.mkdir(parents=True, exist_ok=True)
    when = started or report.started
    stamp = when.replace("-", "").replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")
    # The pid tells apart two processes started in the same second (a locked run beside the one holding the
    # lock); the counter tells apart two runs of one process in the same second. A report is never replaced.
    base = f"{stamp}-{os.getpid()}"
    for n in range(1000):
        path = folder / f"{base}{f'.{n}' if n else ''}-{report.status}.json"
        try:
            with path.open("x", encoding="utf-8"):
                pass  # claim the name; write_json then fills it atomically
        except FileExistsError:
            continue
        write_json(path, report.model_dump())
        return path
    raise OSError(f"{folder}: no free name for the run report {base}; clean the history folder")


def _saved_counts(state_dir: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Counts, tokens and flags of the windows journaled so far (informational: no checksum pass)."""
    counts: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    journal = state_dir / JOURNAL
    try:
        lines = journal.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry: dict[str, Any] = json.loads(line)
            counts.update(entry["counts"])
            tokens.update(entry["tokens"])
            flags.update(entry.get("flags", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return counts, tokens, flags


def _planless_fields(job: JobConfig) -> dict[str, Any]:
    """The report fields known of a run that failed before its plan was made (no input, an unknown model)."""
    return {
        "input": job.input.path,
        "output": job.output.path,
        "errors_file": str(job.output.errors_path()),
        "fingerprint": "",
        "model": {
            "ref": job.model.ref or "",
            "name": "",
            "engine": job.model.engine,
            "template": job.prompt.template or "",
        },
        "versions": versions(),
        "sampling": {},
    }


def failure_report(plan: Plan | JobConfig, started: str, t0: float, err: BaseException) -> RunReport:
    """A report for a run that did not finish: its exit code, the reason, and what was saved so far."""
    code = exit_code_of(err)
    if isinstance(plan, JobConfig):
        fields, counts, tokens, flags = _planless_fields(plan), Counter[str](), Counter[str](), Counter[str]()
    else:
        fields = plan.report_fields()
        counts, tokens, flags = _saved_counts(plan.state_dir)
    elapsed = time.perf_counter() - t0
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return RunReport(
        status="interrupted" if code == Interrupted.exit_code else "failed",
        exit_code=code,
        error=message[:500],
        started=started,
        finished=now(),
        resumed=False,
        **fields,
        counts=Counts(
            rows=sum(counts[k] for k in COUNT_KEYS if k not in ("generated", "copied")),
            **{k: counts[k] for k in COUNT_KEYS},
        ),
        tokens=Tokens(input=tokens["input"], output=tokens["output"]),
        seconds=Seconds(total=round(elapsed, 4)),
        flags={f: flags[f] for f in FLAGS},
        rows_per_s=0.0,
        output_tokens_per_s=0.0,
    )


def keep_failure(plan: Plan | JobConfig, started: str, t0: float, err: BaseException) -> None:
    """Record a failed or interrupted run in the history, planned or not; never hides the original error."""
    job = plan if isinstance(plan, JobConfig) else plan.job
    if not job.run.history_dir:
        return
    # The history must never replace the run's own error with one of its own.
    with contextlib.suppress(Exception):
        keep(job.run.history_dir, failure_report(plan, started, t0, err))
