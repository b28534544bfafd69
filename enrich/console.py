"""What the user sees: progress, log lines, summary tables. With cli.py, the only user of rich."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from enrich.contracts import RunReport


def use_json(log_format: str) -> bool:
    """JSON logs when asked, or by default when stderr is not a terminal (cron, pipes)."""
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def json_line(level: str, message: str, **fields: Any) -> str:
    """One JSON log line, as cron's logs carry them."""
    line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "level": level, "message": message, **fields}
    return json.dumps(line, ensure_ascii=False)


class Reporter:
    """Turns pipeline events into a progress bar on a terminal or JSON lines on stderr."""

    def __init__(self, log_format: str = "auto", verbosity: int = 0, every_s: float = 10.0) -> None:
        self.json = use_json(log_format)
        self.verbosity = verbosity
        self.every_s = every_s
        self.err = Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_log = 0.0
        self.lock = threading.Lock()  # one line at a time: the heartbeat thread logs too
        self.latest: dict[str, Any] = {}  # the last progress event, and when it came (monotonic)
        self.latest_at = 0.0
        self.saved_at: float | None = None  # when this process last saved a window
        self.stop = threading.Event()
        self.beat: threading.Thread | None = None

    def log(self, level: str, message: str, **fields: Any) -> None:
        if level == "debug" and self.verbosity < 1:
            return
        if level == "info" and self.verbosity < 0:
            return
        if self.json:
            with self.lock:
                sys.stderr.write(json_line(level, message, **fields) + "\n")
                sys.stderr.flush()
        else:
            style = {"warning": "yellow", "error": "red"}.get(level, "dim")
            (self.progress.console if self.progress else self.err).print(f"[{style}]{level}:[/] {message}")

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("info", "warning"):
            self.log(kind, data["message"])
        elif kind == "start":
            self._start(data)
        elif kind == "progress":
            self._progress(data)
        elif kind == "generating" and self.progress is not None:
            # Inside a window, between saves: on a CPU a window takes minutes, its batches tens of seconds.
            step = f"window {data['window'] + 1}/{data['windows']}: {data['done']}/{data['rows']} generated"
            self.progress.update(self.task, step=step)

    def _start(self, data: dict[str, Any]) -> None:
        """data: a progress event (rows resumed, errors saved, time since the run began)."""
        total, done = int(data["rows_total"]), int(data["rows_done"])
        if self.json and self.verbosity >= 0 and self.beat is None:
            # Progress events come once a window, which on a CPU can take minutes (and the model loads before the
            # first): between them a heartbeat repeats the last figures every every_s, the rates brought up to now.
            self.latest, self.latest_at, self.saved_at = dict(data), time.monotonic(), None
            self.last_log = self.latest_at
            self.beat = threading.Thread(target=self._heartbeat, name="enrich-heartbeat", daemon=True)
            self.beat.start()
        if self.json or self.verbosity < 0:
            return
        self.progress = Progress(
            TextColumn("[bold]enrich[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[rate]:.2f} rows/s · {task.fields[tps]:.0f} tok/s · {task.fields[errors]} errors"
            ),
            TimeRemainingColumn(),
            TextColumn("{task.fields[step]}"),
            console=self.err,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "rows", total=total, completed=done, rate=0.0, tps=0.0, errors=data["errors"], step=""
        )

    def _progress(self, data: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                step="",
                completed=data["rows_done"],
                rate=data["rows_per_s"],
                tps=data["output_tokens_per_s"],
                errors=data["errors"],
            )
        elif self.json:
            with self.lock:
                self.latest = data
                self.latest_at = self.saved_at = time.monotonic()
            if time.monotonic() - self.last_log >= self.every_s or data["rows_done"] == data["rows_total"]:
                self._log_progress(data)

    def _log_progress(self, data: dict[str, Any], **extra: Any) -> None:
        self.last_log = time.monotonic()
        fields = {k: round(v, 3) if isinstance(v, float) else v for k, v in {**data, **extra}.items()}
        self.log("info", "progress", **fields)

    def _heartbeat(self) -> None:
        every = max(self.every_s, 0.1)
        while not self.stop.wait(every):
            if time.monotonic() - self.last_log < every:
                continue
            with self.lock:
                data, now = dict(self.latest), time.monotonic()
                since = now - self.latest_at
                saved = None if self.saved_at is None else now - self.saved_at  # None: no window saved yet
            elapsed = data["elapsed_s"] + since
            if data["elapsed_s"] > 0:  # the rates of the rows saved so far, over the time until now
                for key in ("rows_per_s", "output_tokens_per_s"):
                    data[key] *= data["elapsed_s"] / elapsed
            rate, left = data["rows_per_s"], data["rows_total"] - data["rows_done"]
            data |= {"elapsed_s": elapsed, "eta_s": left / rate if rate > 0 else None}
            self._log_progress(data, heartbeat=True, since_save_s=saved)

    def close(self) -> None:
        self.stop.set()
        if self.beat is not None:
            self.beat.join()
            self.beat = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_report(report: RunReport, log_format: str = "auto") -> None:
    """The end-of-run summary: a table on a terminal, the report as one JSON line otherwise."""
    if use_json(log_format):
        print(json_line("info", "run finished", report=report.model_dump()), file=sys.stderr, flush=True)
        return
    c = report.counts
    table = Table(title=f"enrich run: {report.status}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("output", report.output)
    table.add_row("rows", f"{c.rows} (ok {c.ok}, flagged {c.flagged}, error {c.error}, skipped {c.skipped})")
    table.add_row("generated / copied", f"{c.generated} / {c.copied}")
    table.add_row("tokens in / out", f"{report.tokens.input} / {report.tokens.output}")
    s = report.seconds
    table.add_row(
        "seconds",
        f"total {s.total:.1f} (read {s.read:.1f}, prompt {s.prompt:.1f}, generate {s.generate:.1f}, write {s.write:.1f})",
    )
    table.add_row(
        "speed", f"{report.rows_per_s:.2f} rows/s, {report.output_tokens_per_s:.1f} output tokens/s"
    )
    flags = ", ".join(f"{k} {v}" for k, v in report.flags.items() if v) or "none"
    table.add_row("quality flags", flags)
    table.add_row(
        "model", f"{report.model['name']} ({report.model['engine']}, template {report.model['template']})"
    )
    if c.error:
        table.add_row("errors file", report.errors_file)
    for line in report.advice:
        table.add_row("[yellow]advice[/]", line)
    Console().print(table)


def print_dry_run(result: Any, log_format: str = "auto") -> None:
    """The dry run's sample table, speed and forecast."""
    if use_json(log_format):
        print(json.dumps({"level": "info", "message": "dry run", **result.__dict__}, ensure_ascii=False))
        return
    table = Table(
        title=f"dry run: {len(result.rows)} sampled rows ({result.model}, {result.engine})", show_lines=True
    )
    widest = max((len(str(r["id"])) for r in result.rows), default=2)
    table.add_column("id", no_wrap=True, min_width=min(widest, 24))  # an id cut in two cannot be searched for
    table.add_column("title", max_width=30)
    table.add_column("original", max_width=45)
    table.add_column("generated", max_width=60)
    table.add_column("flags")
    for r in result.rows:
        original = (r["original"] or "")[:300]
        generated = r["generated"] if r["generated"] is not None else f"[red]{r['status']}[/]"
        table.add_row(str(r["id"]), r["title"], original, generated, ", ".join(r["flags"]))
    console = Console()
    console.print(table)
    console.print(
        f"speed: {result.rows_per_s:.2f} rows/s, {result.output_tokens_per_s:.1f} output tokens/s; "
        f"forecast for {result.total_rows} rows: {_duration(result.forecast_s)} (nothing was written)"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
