"""A run, once its files are checked and its lock held: plan, resume decision, one pre-pass, the windows, the
final assembly. The way of a row:

    read (a window of the input) -> prepare (normalize, prompt) -> generate -> finish (clean, flag, status)
    -> part file (recorded in the journal) -> ... -> OUTPUT assembled from the input and the parts

A thread reads and prepares the next window while the engine works on the current one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from enrich.catalog.prepass import Prepass, prepass
from enrich.config import JobConfig
from enrich.contracts import COUNT_KEYS, RunReport, is_parquet
from enrich.errors import ConfigError, EnrichError, Interrupted, PartialFailure
from enrich.events import Event, no_events
from enrich.files import remove_stale_temps, write_json
from enrich.model.engines import make_engine, prompt_side
from enrich.model.generation import Engine
from enrich.quality.flags import FLAGS
from enrich.run.errorfile import assemble_errors, copy_errors
from enrich.run.history import keep, keep_failure, now
from enrich.run.incremental import (
    discard_other_run,
    manifest_note,
    merge_copied,
    prepare_reuse,
    previous_output,
    reuse_windows,
    take_unchanged,
)
from enrich.run.output import assemble, part_frame
from enrich.run.plan import Plan, check_output, plan_run
from enrich.run.process import Processor, Window, content_keys
from enrich.run.state import RunState, changed_settings, open_state, read_manifest
from enrich.run.tally import Tally
from enrich.run.target import MANIFEST, MARKER, Held, Target, clear
from enrich.signals import sigterm_as_interrupt


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
        plan = planned = plan_run(job, on_event)
        check_output(plan)
        report = _run(plan, started, t0, on_event, engine)
        held.keep()
        target.record_written(plan.out.path, plan.errors_path, plan.report_path)
        if target.review is not None:
            _write_review(plan, target.review, on_event)
            target.record_written(target.review)
    except BaseException as err:
        keep_failure(planned, started, t0, err)
        raise
    finally:
        held.release()  # a run that saved no window removes the state folder it created: a refusal leaves nothing
    keep(job.run.history_dir, report, started)
    return report


def _write_review(plan: Plan, page: Path, on_event: Event) -> None:
    """OUTPUT.review.html from the finished output; a page that cannot be written is a warning, never a failed
    run (the output is complete, and `enrich review OUTPUT` writes the page again)."""
    from enrich.review import write_review

    try:
        write_review(plan.out.path, page, overwrite=True)  # the target checked it is enrich's, or --overwrite
    except (EnrichError, OSError) as err:
        on_event("warning", {"message": f"{page}: the review page was not written ({err})"})
        return
    on_event("info", {"message": f"review page: {page}"})


def _remove_stale_temps(target: Target) -> None:
    """Temporary files of this output's files that a killed run left behind (their writer is gone)."""
    paths = [target.output, target.errors, target.report, *([target.review] if target.review else [])]
    for folder in target.state_dirs:
        paths += [folder / MANIFEST, folder / MARKER]
    for path in paths:
        remove_stale_temps(path)


def _run(plan: Plan, started: str, t0: float, on_event: Event, engine: Engine | None) -> RunReport:
    """Resume or start, generate the windows still to do, then assemble the output, its error file and report."""
    manifest = read_manifest(plan.state_dir)
    finished = _up_to_date(plan, manifest, on_event)
    if finished is not None:
        return finished
    previous = previous_output(plan, manifest)  # before open_state replaces the manifest
    scratch = plan.state_dir / "scratch"
    keys = scratch / "keys.parquet" if plan.job.run.incremental else None
    # Before any state is touched: a CSV whose bytes are bad fails the run here without discarding a saved one.
    fresh = not scratch.exists()
    try:
        first = prepass(plan.source, scratch, _key_function(plan) if keys else None, keys)
        restart = (
            plan.job.run.restart
            or bool(manifest.get("complete"))
            or discard_other_run(plan, manifest, on_event)
        )
        note = manifest_note(previous) if plan.job.run.incremental else None
        state = open_state(plan.state_dir, plan.fingerprint, plan.details, restart, note)
    except BaseException:
        if fresh:  # a run refused here (a damaged or another run's state) leaves nothing of its own behind
            clear(scratch)
        raise
    for warning in state.warnings:
        on_event("warning", {"message": warning})
    n_windows = plan.windows.count(first.rows)
    if state.resumed:
        on_event("info", {"message": f"resuming: {len(state.parts)} of {n_windows} windows already done"})
    tally = Tally(first.rows, t0, sum(int(p["rows"]) for p in state.parts.values()))
    on_event("start", tally.progress(state))
    pending = [k for k in range(n_windows) if k not in state.parts]
    workers = None
    try:
        with sigterm_as_interrupt():
            reuse = None
            if keys is not None and pending:
                reuse = prepare_reuse(plan, state, keys, first.rows, previous, on_event)
            if pending and plan.job.model.engine == "ray":
                from enrich.run.distributed import run_windows

                workers = run_windows(plan, state, pending, first.duplicates, tally, on_event)
            elif pending:
                _generate(plan, state, first, set(pending), reuse, tally, on_event, engine)
            n_errors = _assemble(plan, state, n_windows, tally)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {tally.done} of {tally.total} rows saved in {plan.state_dir}; run the same command "
            "to resume"
        ) from None
    clear(scratch)
    tally.seconds["total"] = time.perf_counter() - t0
    report = _report(plan, state, started, tally, n_errors, workers, on_event)
    write_json(plan.report_path, report.model_dump())
    state.mark_complete(report.model_dump())
    state.clear_parts()
    return report


def _up_to_date(plan: Plan, manifest: dict[str, Any], on_event: Event) -> RunReport | None:
    """The finished run's report where OUTPUT is complete with these settings; refuses an OUTPUT that this
    output's runs did not write, or one finished with other settings (without --restart)."""
    job = plan.job
    same = manifest.get("fingerprint") == plan.fingerprint
    if plan.out.path.exists() and same and manifest.get("complete") and not job.run.restart:
        on_event("info", {"message": f"{plan.out.path} is complete and up to date; nothing to do"})
        return _files_of_finished_run(plan, RunReport.model_validate(manifest["report"]))
    if plan.out.path.exists() and not job.output.overwrite and not same and not job.run.incremental:
        if not manifest.get("complete"):
            raise ConfigError(
                f"{plan.out.path}: exists and was not written by this run; pass --overwrite to replace it"
            )
        if not job.run.restart:  # enrich wrote it, with other settings: --restart regenerates it
            raise ConfigError(
                f"{plan.out.path}: holds a finished run with other settings (changed since: "
                f"{changed_settings(manifest, plan.details)}); pass --restart to regenerate it, or choose another -o"
            )
    return None


def _files_of_finished_run(plan: Plan, report: RunReport) -> RunReport:
    """An up-to-date run asked for its error file or report at other paths (--errors, --report): they are
    written there from the finished run's, which stay where they were."""
    before = Path(report.errors_file)
    if before.resolve() != plan.errors_path.resolve() and before.is_file():
        copy_errors(before, is_parquet(before), plan.errors_path, plan.job.output.errors_parquet())
        report = report.model_copy(update={"errors_file": str(plan.errors_path)})
    write_json(plan.report_path, report.model_dump())  # small; where --report names another file, it is there
    return report


def _key_function(plan: Plan) -> Any:
    return lambda start, columns: content_keys(plan, start, columns)


def _generate(
    plan: Plan,
    state: RunState,
    first: Prepass,
    pending: set[int],
    reuse: Path | None,
    tally: Tally,
    on_event: Event,
    engine: Engine | None,
) -> None:
    """The pending windows through the engine in this process, each recorded as it is done. The model loads
    before the first window, or, in an incremental run that may copy every row, at the first row to generate."""
    own = engine is None
    if engine is None and reuse is None:
        engine = _load_engine(plan, on_event)
    processor = Processor.of(plan, engine or prompt_side(plan.engine_name, plan.spec, plan.job.model))
    n_windows = plan.windows.count(first.rows)
    try:
        for window in _prefetched(_windows(plan, processor, first.duplicates, pending, reuse)):
            tally.seconds["read"] += window.seconds_read
            tally.seconds["prompt"] += window.seconds_prompt
            t = time.perf_counter()
            if window.prompts:
                engine = engine or _load_engine(plan, on_event)

                def batch_done(done: int, k: int = window.index, n: int = len(window.prompts)) -> None:
                    on_event("generating", {"window": k, "windows": n_windows, "done": done, "rows": n})

                results = processor.generate(window, engine, batch_done)
            else:
                results = {}
            tally.seconds["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            part, stats = processor.finish(window, results)
            merge_copied(window, part, stats)
            tally.seconds["postprocess"] += time.perf_counter() - t
            t = time.perf_counter()
            state.record(window.index, part_frame(part, plan.out.names), window.errors, stats)
            tally.seconds["write"] += time.perf_counter() - t
            tally.saved(state, len(window.rows), stats["tokens"]["output"], on_event)
        if engine is None:
            on_event(
                "info", {"message": "every row was copied from the previous output; the model was not loaded"}
            )
    finally:
        if own and engine is not None:
            engine.close()


def _load_engine(plan: Plan, on_event: Event) -> Engine:
    on_event("info", {"message": f"loading {plan.spec.name} ({plan.engine_name})"})
    t = time.perf_counter()
    engine = make_engine(plan.engine_name, plan.spec, plan.job.model, plan.batch_size)
    on_event("info", {"message": f"model {plan.spec.name} loaded in {time.perf_counter() - t:.1f}s"})
    return engine


def _windows(
    plan: Plan, processor: Processor, duplicates: dict[int, int], pending: set[int], reuse: Path | None
) -> Iterator[Window]:
    """The pending windows, read and prepared (rows that an incremental run copies taken off the engine's list)."""
    reused = reuse_windows(reuse, plan.windows)  # in step with the input's windows
    t = time.perf_counter()
    for index, columns in enumerate(plan.source.window_lists(plan.source.row_columns(), plan.windows)):
        old = next(reused)
        read = time.perf_counter() - t
        if index in pending:
            t = time.perf_counter()
            window = processor.prepare(index, plan.windows.start(index), columns, duplicates)
            take_unchanged(window, old, plan.context_key)
            window.seconds_read, window.seconds_prompt = read, time.perf_counter() - t
            yield window
        t = time.perf_counter()


_END = object()


def _prefetched(items: Iterator[Window]) -> Iterator[Window]:
    """items, each next one made in a thread while the caller works on the current one. One at a time: memory
    holds two windows. An error in the thread is raised here; a caller that stops early waits for the one read
    under way to end, then the thread ends too."""
    with ThreadPoolExecutor(1, thread_name_prefix="enrich-prefetch") as pool:
        ahead = pool.submit(next, items, _END)
        while (item := ahead.result()) is not _END:
            ahead = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]


def _assemble(plan: Plan, state: RunState, n_windows: int, tally: Tally) -> int:
    """OUTPUT from the input and the parts, then the error file; returns the number of error records."""
    t = time.perf_counter()
    assemble(plan.source, state, n_windows, plan.windows, plan.out)
    n_errors = assemble_errors(state, n_windows, plan.errors_path, plan.job.output.errors_parquet())
    tally.seconds["write"] += time.perf_counter() - t
    return n_errors


# Why a flag marks most rows, and what to change: the remedies of the common causes.
_REMEDIES = {
    "truncated": "were cut at the {limit}-token limit: raise --max-new-tokens, or use a model fine-tuned to end its "
    "descriptions (enrich finetune)",
    "empty": "came out empty: check that --template is the one the model was trained with",
    "repetition": "repeat themselves: raise --repetition-penalty (1.1 to 1.3)",
    "template_leak": "repeat the prompt's markers: the template is likely not the one the model was trained with",
    "unsupported_claims": "state facts that the product's data does not hold (enrich_unsupported lists them): have "
    "them written again (--set policies.unsupported_claims=regenerate), give the model the product's attributes "
    "(--attr), fine-tune it on your catalog with them, and review the rest on the review page",
    "wrong_type": "name another product type than the title's: fine-tune the model on your catalog",
    "off_topic": "name nothing of the product: check --template, or fine-tune the model on your catalog",
    "title_only": "say nothing but the title: have them written again (--set policies.title_only=regenerate), or "
    "give the model the product's attributes (--attr)",
}


def advice(flags: Counter[str] | dict[str, int], rows: int, limit: int) -> list[str]:
    """A line for each quality flag that marks more than half of the rows: how many, why, and what to change."""
    return [
        f"{flags[flag]} of {rows} rows " + remedy.format(limit=limit)
        for flag, remedy in _REMEDIES.items()
        if rows and flags.get(flag, 0) > rows / 2
    ]


def _regeneration(state: RunState) -> dict[str, int] | None:
    """What generating flagged rows again did, summed over the windows; None where no window did it."""
    total: Counter[str] = Counter()
    for part in state.parts.values():
        total.update(part.get("regeneration") or {})
    if not total:
        return None
    return {k: total.get(k, 0) for k in ("rows", "rescued", "still_flagged", "output_tokens")}


def _decisions_applied(plan: Plan, state: RunState, on_event: Event) -> dict[str, Any] | None:
    """What came of the decisions file: rows approved and rejected, and decisions on rows that changed since the
    review (their content key is no row's now), which are ignored and named."""
    if plan.decisions is None:
        return None
    applied: dict[str, set[str]] = {"approved": set(), "rejected": set()}
    for part in state.parts.values():
        for verdict, keys in part.get("decided", {}).items():
            applied[verdict].update(keys)
    stale = [
        d for key, d in plan.decisions.by_key.items() if key not in applied["approved"] | applied["rejected"]
    ]
    if stale:
        rows = ", ".join(str(d.id if d.id is not None else d.row) for d in stale[:5])
        more = ", ..." if len(stale) > 5 else ""
        on_event(
            "warning",
            {
                "message": f"{plan.decisions.path}: {len(stale)} decisions are on rows that changed since the "
                f"review ({rows}{more}); they were ignored"
            },
        )
    return {
        "file": plan.decisions.path,
        "seed": plan.decisions.seed,
        "approved": len(applied["approved"]),
        "rejected": len(applied["rejected"]),
        "stale": len(stale),
    }


def _report(
    plan: Plan,
    state: RunState,
    started: str,
    tally: Tally,
    n_errors: int,
    workers: list[dict[str, Any]] | None,
    on_event: Event = no_events,
) -> RunReport:
    counts: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    claims: Counter[str] = Counter()
    for part in state.parts.values():
        counts.update(part["counts"])
        tokens.update(part["tokens"])
        flags.update(part.get("flags", {}))
        claims.update(part.get("claims", {}))
    elapsed = max(tally.seconds["total"], 1e-9)
    return RunReport(
        status="partial" if n_errors else "ok",
        exit_code=PartialFailure.exit_code if n_errors else 0,
        started=started,
        finished=now(),
        resumed=state.resumed,
        **plan.report_fields(),
        counts={"rows": tally.total, **{k: counts.get(k, 0) for k in COUNT_KEYS}},
        tokens={"input": tokens.get("input", 0), "output": tokens.get("output", 0)},
        seconds=tally.stage_seconds(),
        flags={f: flags.get(f, 0) for f in FLAGS},
        claims=dict(claims),
        advice=advice(
            flags, counts.get("generated", 0) + counts.get("copied", 0), plan.sampling.max_new_tokens
        ),
        rows_per_s=round(tally.fresh / elapsed, 3),
        output_tokens_per_s=round(tally.tokens / elapsed, 3),
        workers=workers,
        regeneration=_regeneration(state),
        decisions=_decisions_applied(plan, state, on_event),
    )
