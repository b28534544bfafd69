"""The data flow of a run: scan -> normalize -> prompt -> generate -> postprocess -> parts -> output."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from enrich.catalog import source
from enrich.config import OUTPUT_COLUMNS, JobConfig, RunReport, is_parquet
from enrich.errors import ConfigError, Interrupted
from enrich.events import Event, no_events
from enrich.files import remove_stale_temps, write_json
from enrich.model.engines import Engine, Sampling, make_engine, prompt_side
from enrich.quality.flags import FLAGS
from enrich.run import errorfile, history, incremental
from enrich.run.plan import Plan, plan_run, settle_columns
from enrich.run.process import Window, finish_window, prepare_window, tokenizer_hooks
from enrich.run.state import RunState, changed_settings, open_state, read_manifest
from enrich.run.target import MANIFEST, MARKER, Held, Target


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


def run_held(
    job: JobConfig,
    target: Target,
    held: Held,
    started: str,
    t0: float,
    on_event: Event = no_events,
    engine: Engine | None = None,
) -> RunReport:
    """The run, once its files are checked and its lock held (enrich.run.run); releases the lock."""
    planned: Plan | JobConfig = job
    try:
        for warning in held.warnings:
            on_event("warning", {"message": warning})
        _remove_stale_temps(target)
        lf = source.scan(job.input.path, job.input.format, job.input.separator)
        job, names = settle_columns(job, lf, on_event)
        plan = planned = plan_run(job, on_event)
        if job.run.incremental and job.run.limit is not None and plan.output.is_file():
            had = source.output_rows(plan.output, plan.output_format, job.output_separator())
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
        nested = source.nested_columns(lf) if plan.output_format == "csv" else []
        if nested:  # refused now, not after the whole run's generation when the output is assembled
            raise ConfigError(
                f"{job.input.path}: columns {', '.join(nested)} are nested (lists, structs or bytes), which a CSV "
                "output cannot hold; write Parquet (-o OUTPUT.parquet), or drop those columns from the input"
            )
        # Counted before any state is touched, so bad bytes in a CSV fail the run without discarding a saved one.
        total = source.count_rows(lf, job.input.path, job.input.format)
        if job.run.limit is not None:
            total = min(total, job.run.limit)
        report = _run_locked(plan, lf, total, started, t0, on_event, engine)
        held.keep()
        target.record_written(plan.output, plan.errors_path, plan.report_path)
    except BaseException as err:
        history.keep_failure(planned, started, t0, err)
        raise
    finally:
        held.release()  # a run that saved no window removes the state folder it created: a refusal leaves nothing
    history.keep(job.run.history_dir, report, started)
    return report


def _remove_stale_temps(target: Target) -> None:
    """Temporary files of this output's files that a killed run left behind (their writer is gone)."""
    paths = [target.output, target.errors, target.report]
    for folder in target.state_dirs:
        paths += [folder / MANIFEST, folder / MARKER]
    for path in paths:
        remove_stale_temps(path)


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
    plan: Plan,
    lf: Any,
    total: int,
    started: str,
    t0: float,
    on_event: Event,
    engine: Engine | None,
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
    n_windows = plan.windows.count(total)
    if state.resumed:
        on_event("info", {"message": f"resuming: {len(state.parts)} of {n_windows} windows already done"})
    resumed_rows = sum(int(p["rows"]) for p in state.parts.values())
    on_event("start", state.progress(resumed_rows, total, 0, 0, max(time.perf_counter() - t0, 1e-9)))
    cols = job.input.columns
    duplicates = (
        source.duplicate_rows(lf, cols.id, job.run.limit, job.input.path, plan.state_dir / "scratch", total)
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
                from enrich.run import distributed

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
                windows = _windows(
                    plan, lf, needed, set(pending), duplicates, render, count, max_prompt, reuse
                )
                prefetch = _Prefetch(windows)
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

                            def batch_done(done: int, k: int = window.index, n: int = len(offs)) -> None:
                                on_event(
                                    "generating", {"window": k, "windows": n_windows, "done": done, "rows": n}
                                )

                            gens = engine.generate([window.prompts[o] for o in offs], sampling, batch_done)
                        seconds["generate"] += time.perf_counter() - t
                        t = time.perf_counter()
                        part, stats = finish_window(window, dict(zip(offs, gens, strict=True)), plan)
                        incremental.merge(window, part, stats)
                        seconds["postprocess"] += time.perf_counter() - t
                        t = time.perf_counter()
                        state.record(
                            window.index,
                            source.part_frame(part, job.output.names()),
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
            source.assemble_output(
                lf,
                job.input.path,
                state,
                n_windows,
                plan.windows,
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
    state.clear_parts()
    return report


def _load_engine(plan: Plan, on_event: Event) -> Engine:
    on_event("info", {"message": f"loading {plan.spec.name} ({plan.engine_name})"})
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
    reused = incremental.windows(reuse, plan.windows)  # in step with the input's windows
    t = time.perf_counter()
    job = plan.job
    for index, columns in enumerate(
        source.iter_window_lists(lf, needed, plan.windows, job.input.path, job.run.limit)
    ):
        old = next(reused)
        read = time.perf_counter() - t
        if index in pending:
            t = time.perf_counter()
            start = plan.windows.start(index)
            window = prepare_window(
                index, start, columns, plan, duplicates, render, count, max_prompt, job.input.path
            )
            incremental.apply(window, old, plan.context_key)
            window.seconds_read = read
            window.seconds_prompt = time.perf_counter() - t
            yield window
        t = time.perf_counter()


# Why a flag marks most rows, and what to change: the remedies of the common causes.
_REMEDIES = {
    "truncated": "were cut at the {limit}-token limit: raise --max-new-tokens, or use a model fine-tuned to end its "
    "descriptions (enrich finetune)",
    "empty": "came out empty: check that --template is the one the model was trained with",
    "repetition": "repeat themselves: raise --repetition-penalty (1.1 to 1.3)",
    "template_leak": "repeat the prompt's markers: the template is likely not the one the model was trained with",
    "unsupported_numbers": "state numbers the title lacks: fine-tune on your catalog, or send them to the error file "
    "with --set policies.unsupported_numbers=error",
}


def advice(flags: Counter[str] | dict[str, int], rows: int, limit: int) -> list[str]:
    """A line for each quality flag that marks more than half of the rows: how many, why, and what to change."""
    return [
        f"{flags[flag]} of {rows} rows " + remedy.format(limit=limit)
        for flag, remedy in _REMEDIES.items()
        if rows and flags.get(flag, 0) > rows / 2
    ]


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
        finished=history.now(),
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
        advice=advice(
            flags, counts.get("generated", 0) + counts.get("copied", 0), plan.sampling.max_new_tokens
        ),
        rows_per_s=round(fresh_rows / elapsed, 3),
        output_tokens_per_s=round(fresh_out_tokens / elapsed, 3),
    )
