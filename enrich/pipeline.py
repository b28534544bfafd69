"""The data flow of a run: scan -> normalize -> prompt -> generate -> postprocess -> parts -> output."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from enrich import errorfile, history, incremental, io
from enrich.config import OUTPUT_COLUMNS, JobConfig, RunReport, is_parquet
from enrich.engines import Engine, Sampling, make_engine, prompt_side
from enrich.errors import ConfigError, Interrupted
from enrich.evaluate import FLAGS
from enrich.events import Event, no_events
from enrich.plan import Plan, path_problems, plan_run, settle_columns
from enrich.rows import Window, finish_window, prepare_window, tokenizer_hooks
from enrich.state import (
    LOCK,
    Lock,
    RunState,
    acquire_lock,
    changed_settings,
    open_state,
    read_manifest,
    write_json,
)


@dataclass
class _Prefetch:
    """Reads and prompts the next windows in a thread while the engine works on the current one."""

    source: Iterator[Window | BaseException | None]
    q: queue.Queue[Window | BaseException | None] = field(default_factory=lambda: queue.Queue(maxsize=2))
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._pump, name="enrich-prefetch", daemon=True).start()

    def _pump(self) -> None:
        try:
            for item in self.source:
                if not self._put(item):
                    return
        except BaseException as err:  # handed to the main thread, which raises it
            self._put(err)
            return
        self._put(None)

    def _put(self, item: Window | BaseException | None) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Window]:
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (cron's timeout, systemd stop) ends the run like Ctrl-C: state saved, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run(job: JobConfig, on_event: Event = no_events, engine: Engine | None = None) -> RunReport:
    """Run a job to the end (or to an interrupt), resuming from its state; returns the report."""
    started = _now()
    t0 = time.perf_counter()
    planned: Plan | JobConfig = job
    try:  # a run that fails here (no input, an unknown model, the lock taken) is a run too: cron's history shows it
        lf = io.scan(job.input.path, job.input.format, job.input.separator)
        job, names = settle_columns(job, lf, on_event)
        plan = planned = plan_run(job, on_event)
        problems = path_problems(job)
        if problems:
            raise ConfigError("\n".join(message for _, message in problems))
        if job.run.incremental and job.run.limit is not None and plan.output.is_file():
            had = io.output_rows(plan.output, plan.output_format, job.output_separator())
            if had is not None and had > job.run.limit:
                raise ConfigError(
                    f"{plan.output}: --limit with --incremental would replace this output's {had} rows with the "
                    f"first {job.run.limit}; drop --limit, or write to another -o"
                )
        clashes = [
            f"{job.input.path}: column {name!r} already exists; rename it in the input or pass "
            + ("--generated-column NAME" if std == OUTPUT_COLUMNS[0] else f"--set output.columns.{std}=NAME")
            for std, name in job.output.names().items()
            if name in names
        ]
        if clashes:
            raise ConfigError("\n".join(clashes))  # every one at once: a re-enriched output has all six
        _ensure_writable(plan)
        lock, warning = _lock_run(plan)
    except BaseException as err:
        history.keep_failure(planned, started, t0, err)
        raise
    try:
        if warning:
            on_event("warning", {"message": warning})
        # Counted under the lock, so a second run is refused at once; before any state is touched, so bad
        # bytes in a CSV fail the run without discarding a saved one.
        total = io.count_rows(lf, job.input.path, job.input.format)
        if job.run.limit is not None:
            total = min(total, job.run.limit)
        report = _run_locked(plan, lf, total, started, t0, on_event, engine)
    except BaseException as err:
        history.keep_failure(plan, started, t0, err)
        raise
    finally:
        lock.release()
    history.keep(job.run.history_dir, report, started)
    return report


@dataclass
class _Locks:
    """The locks a run holds, released together."""

    held: list[Lock]

    def release(self) -> None:
        for lock in reversed(self.held):
            lock.release()


def _lock_run(plan: Plan) -> tuple[_Locks, str | None]:
    """Lock the state folder and, where the state lives elsewhere (--state-dir), the output's default one too:
    one writer per state and one per output, whatever state folders two runs were given."""
    paths = [plan.state_dir / LOCK]
    beside = Path(f"{plan.output}.enrich") / LOCK
    if beside.resolve() != paths[0].resolve():
        paths.append(beside)
    held: list[Lock] = []
    warnings: list[str] = []
    try:
        for path in paths:
            lock, warning = acquire_lock(path, str(plan.output))
            held.append(lock)
            warnings += [warning] if warning else []
    except BaseException:
        for lock in held:
            lock.release()
        raise
    return _Locks(held), "; ".join(warnings) or None


def _ensure_writable(plan: Plan) -> None:
    """Create the state, output and history folders up front: a path that cannot be written is a clear
    configuration error (exit 2) before any work, not a traceback after hours of generation."""
    state_option = "--state-dir" if plan.job.run.state_dir else "-o"
    folders = [(plan.output.parent, "the output", "-o"), (plan.state_dir, "the run state", state_option)]
    folders += [
        (plan.errors_path.parent, "the error file", "--errors"),
        (plan.report_path.parent, "the report", "--report"),
    ]
    if plan.job.run.history_dir:
        folders.append((Path(plan.job.run.history_dir), "the report history", "--history-dir"))
    for folder, what, option in folders:
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(
                f"{blocker}: is a file, so {what} cannot be written under it; choose another {option}"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".enrich-write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise ConfigError(
                f"{folder}: cannot write {what} there ({err.strerror or err}); choose another {option}"
            ) from None


def _files_of_finished_run(plan: Plan, report: RunReport) -> RunReport:
    """An up-to-date run asked for its error file or report at other paths (--errors, --report): they are
    written there from the finished run's, which stay where they were."""
    before = Path(report.errors_file)
    if before.resolve() != plan.errors_path.resolve() and before.is_file():
        errorfile.copy_errors(before, is_parquet(before), plan.errors_path, plan.job.output.errors_parquet())
        report = report.model_copy(update={"errors_file": str(plan.errors_path)})
    write_json(plan.report_path, report.model_dump())  # small; where --report names another file, it is there
    return report


def _run_locked(
    plan: Plan, lf: Any, total: int, started: str, t0: float, on_event: Event, engine: Engine | None
) -> RunReport:
    job = plan.job
    manifest = read_manifest(plan.state_dir)
    same = manifest.get("fingerprint") == plan.fingerprint
    if plan.output.exists() and same and manifest.get("complete") and not job.run.restart:
        on_event("info", {"message": f"{plan.output} is complete and up to date; nothing to do"})
        return _files_of_finished_run(plan, RunReport.model_validate(manifest["report"]))
    if plan.output.exists() and not job.output.overwrite and not same and not job.run.incremental:
        if not manifest.get("complete"):
            raise ConfigError(
                f"{plan.output}: exists and was not written by this run; pass --overwrite to replace it"
            )
        if not job.run.restart:  # enrich wrote it, with other settings: --restart regenerates it
            raise ConfigError(
                f"{plan.output}: holds a finished run with other settings (changed since: "
                f"{changed_settings(manifest, plan.details)}); pass --restart to regenerate it, or choose another -o"
            )
    previous = incremental.previous_output(plan, manifest)  # before open_state replaces the manifest
    restart = (
        job.run.restart or bool(manifest.get("complete")) or incremental.restart(plan, manifest, on_event)
    )
    note = previous.note() if job.run.incremental else None
    state = open_state(plan.state_dir, plan.fingerprint, plan.details, restart, note)
    for w in state.warnings:
        on_event("warning", {"message": w})
    n_windows = (total + plan.window_rows - 1) // plan.window_rows
    if state.resumed:
        on_event("info", {"message": f"resuming: {len(state.parts)} of {n_windows} windows already done"})
    resumed_rows = sum(int(p["rows"]) for p in state.parts.values())
    on_event("start", state.progress(resumed_rows, total, 0, 0, max(time.perf_counter() - t0, 1e-9)))
    cols = job.input.columns
    duplicates = (
        io.duplicate_rows(lf, cols.id, job.run.limit, job.input.path, plan.state_dir / "scratch")
        if cols.id
        else {}
    )
    pending = [k for k in range(n_windows) if k not in state.parts]
    own_engine = engine is None
    seconds: defaultdict[str, float] = defaultdict(float)
    done_rows = sum(int(p["rows"]) for p in state.parts.values())
    fresh_rows = fresh_out_tokens = 0
    ray_workers: list[dict[str, Any]] | None = [] if job.model.engine == "ray" else None
    try:
        with _sigterm_as_interrupt():
            reuse = (
                incremental.prepare(plan, lf, state, total, pending, on_event, previous)
                if job.run.incremental
                else None
            )
            if (
                pending and ray_workers is not None
            ):  # issue 6: the windows go to a Ray Data actor pool instead
                from enrich import distributed

                spread = distributed.run_windows(
                    plan, state, total, pending, duplicates, reuse, seconds, on_event, t0
                )
                done_rows, fresh_rows, fresh_out_tokens = (
                    done_rows + spread.rows,
                    spread.rows,
                    spread.output_tokens,
                )
                ray_workers, pending = spread.workers, []
            # An incremental run may copy every row: it loads the model at the first row to generate, if any.
            lazy = engine is None and reuse is not None
            if pending and engine is None and not lazy:
                engine = _load_engine(plan, on_event)
            if pending:
                prompts_from = engine or prompt_side(plan.engine_name, plan.spec, job.model)
                render, count, max_prompt = tokenizer_hooks(prompts_from, plan)
                needed = [c for c in (cols.id, cols.title) if c]
                source = _windows(
                    plan, lf, needed, set(pending), duplicates, render, count, max_prompt, reuse
                )
                prefetch = _Prefetch(source)
                prefetch.start()
                try:
                    for window in prefetch:
                        seconds["read"] += window.seconds_read
                        seconds["prompt"] += window.seconds_prompt
                        t = time.perf_counter()
                        offs = list(window.prompts)
                        sampling = Sampling(
                            **{**plan.sampling.__dict__, "seed": plan.sampling.seed + window.index}
                        )
                        gens = []
                        if offs:
                            engine = engine or _load_engine(plan, on_event)
                            gens = engine.generate([window.prompts[o] for o in offs], sampling)
                        seconds["generate"] += time.perf_counter() - t
                        t = time.perf_counter()
                        part, stats = finish_window(window, dict(zip(offs, gens, strict=True)), plan)
                        incremental.merge(window, part, stats)
                        seconds["postprocess"] += time.perf_counter() - t
                        t = time.perf_counter()
                        state.record(
                            window.index,
                            io.part_frame(part, job.output.names()),
                            window.errors,
                            stats,
                        )
                        seconds["write"] += time.perf_counter() - t
                        done_rows += len(window.rows)
                        fresh_rows += len(window.rows)
                        fresh_out_tokens += stats["tokens"]["output"]
                        elapsed = time.perf_counter() - t0
                        on_event(
                            "progress",
                            state.progress(done_rows, total, fresh_rows, fresh_out_tokens, elapsed),
                        )
                finally:
                    prefetch.stop.set()
                if engine is None:
                    on_event(
                        "info",
                        {
                            "message": "every row was copied from the previous output; the model was not loaded"
                        },
                    )
            t = time.perf_counter()
            io.assemble_output(
                lf,
                job.input.path,
                state,
                n_windows,
                plan.window_rows,
                plan.output,
                plan.output_format,
                job.run.limit,
                job.output.names(),
                job.output_separator(),
            )
            n_errors = errorfile.assemble_errors(
                state, n_windows, plan.errors_path, job.output.errors_parquet()
            )
            seconds["write"] += time.perf_counter() - t
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {done_rows} of {total} rows saved in {plan.state_dir}; run the same command to resume"
        ) from None
    finally:
        if own_engine and engine is not None:
            engine.close()
    seconds["total"] = time.perf_counter() - t0
    report = _report(plan, state, started, seconds, total, fresh_rows, fresh_out_tokens, n_errors)
    if ray_workers is not None:
        report = report.model_copy(update={"workers": ray_workers})
    write_json(plan.report_path, report.model_dump())
    state.mark_complete(report.model_dump())
    shutil.rmtree(state.parts_dir, ignore_errors=True)
    return report


def _load_engine(plan: Plan, on_event: Event) -> Engine:
    t = time.perf_counter()
    engine = make_engine(plan.engine_name, plan.spec, plan.job.model, plan.batch_size)
    on_event("info", {"message": f"model {plan.spec.name} loaded in {time.perf_counter() - t:.1f}s"})
    return engine


def _windows(
    plan: Plan,
    lf: Any,
    needed: list[str],
    pending: set[int],
    duplicates: dict[int, int],
    render: Any,
    count: Callable[[str], int] | None,
    max_prompt: int,
    reuse: Path | None = None,
) -> Iterator[Window]:
    reused = incremental.windows(reuse, plan.window_rows)  # in step with the input's windows
    t = time.perf_counter()
    job = plan.job
    for index, columns in enumerate(
        io.iter_window_lists(lf, needed, plan.window_rows, job.input.path, job.run.limit)
    ):
        old = next(reused)
        read = time.perf_counter() - t
        if index in pending:
            t = time.perf_counter()
            start = index * plan.window_rows
            window = prepare_window(
                index, start, columns, plan, duplicates, render, count, max_prompt, job.input.path
            )
            incremental.apply(window, old, plan.context_key)
            window.seconds_read = read
            window.seconds_prompt = time.perf_counter() - t
            yield window
        t = time.perf_counter()


def _report(
    plan: Plan,
    state: RunState,
    started: str,
    seconds: defaultdict[str, float],
    total: int,
    fresh_rows: int,
    fresh_out_tokens: int,
    n_errors: int,
) -> RunReport:
    counts: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    for part in state.parts.values():
        counts.update(part["counts"])
        tokens.update(part["tokens"])
        flags.update(part.get("flags", {}))
    exit_code = 6 if n_errors else 0
    elapsed = max(seconds["total"], 1e-9)
    return RunReport(
        status="partial" if n_errors else "ok",
        exit_code=exit_code,
        started=started,
        finished=_now(),
        resumed=state.resumed,
        **plan.report_fields(),
        counts={
            "rows": total,
            **{k: counts.get(k, 0) for k in ("ok", "flagged", "error", "skipped", "generated", "copied")},
        },
        tokens={"input": tokens.get("input", 0), "output": tokens.get("output", 0)},
        seconds={
            k: round(seconds.get(k, 0.0), 4)
            for k in ("read", "prompt", "generate", "postprocess", "write", "total")
        },
        flags={f: flags.get(f, 0) for f in FLAGS},
        rows_per_s=round(fresh_rows / elapsed, 3),
        output_tokens_per_s=round(fresh_out_tokens / elapsed, 3),
    )
