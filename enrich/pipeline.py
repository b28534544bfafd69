"""The data flow of a run: scan -> normalize -> prompt -> generate -> postprocess -> parts -> output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from enrich import history, incremental, io
from enrich.config import OUTPUT_COLUMNS, JobConfig, RunReport
from enrich.engines import Engine, Generation, Sampling, make_engine, pick_engine
from enrich.errors import ConfigError, EngineError, EnrichError, Interrupted
from enrich.evaluate import FLAGS, quality_flags
from enrich.models import ModelSpec, resolve_model, versions
from enrich.prompts import Template, build_prompts, clean_output, get_template

Event = Callable[[str, dict[str, Any]], None]
VALUE_CHARS = 200


def _noop(kind: str, data: dict[str, Any]) -> None:
    del kind, data


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, resolved once from the job config."""

    job: JobConfig
    output: Path
    output_format: str
    errors_path: Path
    report_path: Path
    state_dir: Path
    spec: ModelSpec
    engine_name: str
    template: Template
    sampling: Sampling
    window_rows: int
    batch_size: int
    fingerprint: str
    details: dict[str, Any]
    context_key: str  # model + template + sampling: part of every row's content key


@dataclass
class Window:
    """One window after normalize and prompt, ready for the engine."""

    index: int
    rows: list[int]  # input positions
    ids: list[str | None]
    titles: list[str]
    prompts: dict[int, str]  # offset in window -> prompt, for rows that go to the engine
    status: dict[int, str]  # offset -> error/skipped, decided before generation
    errors: list[dict[str, Any]]
    seconds_read: float
    seconds_prompt: float
    originals: list[str | None] = field(default_factory=list)
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)  # offset -> old result (incremental)


def _resolve_sampling(job: JobConfig, spec: ModelSpec) -> Sampling:
    s = job.sampling
    d = spec.sampling

    def pick(name: str) -> Any:
        value = getattr(s, name)
        return value if value is not None else d[name]

    return Sampling(
        temperature=float(pick("temperature")),
        top_p=float(pick("top_p")),
        max_new_tokens=int(pick("max_new_tokens")),
        repetition_penalty=float(pick("repetition_penalty")),
        seed=s.seed,
    )


def plan_run(job: JobConfig, on_event: Event = _noop) -> Plan:
    """Resolve paths, model, engine, template and sampling; compute the run's fingerprint."""
    from enrich.engines import cuda_available

    output = Path(job.output.path)
    out_fmt = io.file_format(str(output), job.output.format)
    gpu = cuda_available()
    spec = resolve_model(job.model.ref, gpu=gpu)
    engine_name = pick_engine(job.ray.engine if job.model.engine == "ray" else job.model.engine)  # ray: the workers'
    if job.model.engine == "auto":
        on_event("info", {"message": f"engine: {engine_name} ({'GPU' if gpu else 'no GPU'})"})
    try:
        template = get_template(job.prompt.template or spec.template)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    sampling = _resolve_sampling(job, spec)
    on_gpu = engine_name == "vllm"
    batch_size = job.batch.batch_size or (256 if on_gpu else 16)
    window_rows = job.batch.window_rows or (8192 if on_gpu else 4 * batch_size)
    context = {
        "model": spec.identity,
        "template": template.name,
        "sampling": sampling.__dict__,
        "engine": engine_name,
    }
    context_key = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
    details = {
        "input": str(Path(job.input.path).resolve()),
        "input_identity": io.input_identity(job.input.path),
        "columns": job.input.columns.model_dump(),
        "context": context,
        "window_rows": window_rows,
        "batch_size": batch_size,
        "limit": job.run.limit,
        "policies": job.policies.model_dump(),
        "generated_column": job.output.generated_column,
    }
    fingerprint = hashlib.sha256(json.dumps(details, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        job=job,
        output=output,
        output_format=out_fmt,
        errors_path=Path(job.output.errors or f"{output}.errors.jsonl"),
        report_path=Path(job.output.report or f"{output}.report.json"),
        state_dir=Path(job.run.state_dir or f"{output}.enrich"),
        spec=spec,
        engine_name=engine_name,
        template=template,
        sampling=sampling,
        window_rows=window_rows,
        batch_size=batch_size,
        fingerprint=fingerprint,
        details=details,
        context_key=context_key,
    )


def settle_columns(job: JobConfig, lf: Any, on_event: Event = _noop) -> tuple[JobConfig, list[str]]:
    """Check the column mapping against the input; id and content left at their defaults are optional."""
    cols = job.input.columns
    names: list[str] = lf.collect_schema().names()
    update: dict[str, Any] = {}
    for role in ("id", "content"):
        name = getattr(cols, role)
        if name is not None and name not in names and role not in cols.model_fields_set:
            update[role] = None
            on_event("info", {"message": f"no {name!r} column: " + ("ids are row positions" if role == "id" else "no original descriptions")})
    if update:
        cols = cols.model_copy(update=update)
        job = job.model_copy(update={"input": job.input.model_copy(update={"columns": cols})})
    io.require_columns(lf, job.input.path, {"id": cols.id, "title": cols.title, "content": cols.content})
    io.require_text(lf, job.input.path, cols.title, "--title-col")
    return job, names


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"


def _error(row: int, row_id: str | None, stage: str, reason: str, value: Any) -> dict[str, Any]:
    return {"id": row_id, "row": row, "stage": stage, "reason": reason, "value": _cut(value)}


def prepare_window(
    index: int,
    start: int,
    columns: dict[str, list[Any]],
    plan: Plan,
    duplicates: dict[int, int],
    render_chat: Any,
    token_count: Callable[[str], int] | None,
    max_prompt_tokens: int,
    input_path: str,
) -> Window:
    """Normalize a window's rows and build prompts; bad rows become error records, never exceptions."""
    cols = plan.job.input.columns
    pol = plan.job.policies
    raw_titles = columns[cols.title]
    n = len(raw_titles)
    raw_ids = columns[cols.id] if cols.id else [None] * n
    status: dict[int, str] = {}
    errors: list[dict[str, Any]] = []
    ids: list[str | None] = []
    titles: list[str] = []
    invalid = "skipped" if pol.invalid_row == "skip" else "error"
    for off in range(n):
        row = start + off
        rid = raw_ids[off]
        rid = str(rid) if rid is not None else (None if cols.id else str(row))
        ids.append(rid)
        title = raw_titles[off]
        title = title.strip() if isinstance(title, str) else title
        titles.append(title if isinstance(title, str) else "")
        problem = None
        if cols.id and (rid is None or not rid.strip()):
            problem = f"{cols.id} is null or empty"
        elif title is None:
            problem = f"{cols.title} is null"
        elif not isinstance(title, str):
            problem = f"{cols.title} is not text ({type(title).__name__})"
        elif not title:
            problem = f"{cols.title} is empty"
        if problem:
            status[off] = invalid
            if invalid == "error":
                errors.append(_error(row, rid, "validate", f"{input_path} row {row}: {problem}", raw_titles[off]))
            continue
        if len(title) > pol.max_title_chars:
            if pol.long_title == "error":
                status[off] = "error"
                reason = f"{input_path} row {row}: {cols.title} has {len(title)} characters, over {pol.max_title_chars}"
                errors.append(_error(row, rid, "validate", reason + "; raise policies.max_title_chars", title))
                continue
            titles[off] = title[: pol.max_title_chars]
        if row in duplicates and pol.duplicate_id != "keep":
            status[off] = "skipped" if pol.duplicate_id == "skip" else "error"
            if pol.duplicate_id == "error":
                reason = f"{input_path} row {row}: duplicate {cols.id} {rid!r} (first at row {duplicates[row]})"
                errors.append(_error(row, rid, "validate", reason, rid))
    todo = [off for off in range(n) if off not in status]
    prompts = build_prompts([titles[off] for off in todo], plan.template, render_chat)
    ready: dict[int, str] = {}
    for off, prompt in zip(todo, prompts, strict=True):
        # A prompt of B bytes has at most B tokens (byte-level BPE), so most rows skip the tokenizer here.
        if token_count is not None and len(prompt.encode()) > max_prompt_tokens:
            n_tokens = token_count(prompt)
            if n_tokens > max_prompt_tokens:
                status[off] = "error"
                reason = (
                    f"{input_path} row {start + off}: prompt has {n_tokens} tokens, over the {max_prompt_tokens} "
                    "that fit with max_new_tokens; shorten the title or lower policies.max_title_chars"
                )
                errors.append(_error(start + off, ids[off], "prompt", reason, titles[off]))
                continue
        ready[off] = prompt
    return Window(index, list(range(start, start + n)), ids, titles, ready, status, errors, 0.0, 0.0)


def row_key(context_key: str, row_id: str | None, title: str) -> str:
    """The content key: same id, title, model, template and sampling give the same key."""
    return hashlib.sha256(f"{context_key}\x1f{row_id}\x1f{title}".encode()).hexdigest()[:32]


def finish_window(
    window: Window, results: dict[int, Generation], plan: Plan
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Postprocess: clean text, flags, status per policy; the part's columns and the window's stats."""
    pol = plan.job.policies
    stop = tuple(s for s in (*plan.spec.stop, plan.spec.eos or "") if s)
    out: dict[str, list[Any]] = {name: [] for name in ("__row", *OUTPUT_COLUMNS)}
    counts: Counter[str] = Counter()
    flag_counts: Counter[str] = Counter()
    tokens_in = tokens_out = 0
    for off, row in enumerate(window.rows):
        text = None
        finish = None
        flags: list[str] = []
        n_out = None
        status = window.status.get(off)
        if status is None:
            gen = results[off]
            tokens_in += gen.prompt_tokens
            tokens_out += gen.output_tokens
            n_out = gen.output_tokens
            finish = gen.finish_reason
            text = clean_output(gen.text, stop)
            flags = quality_flags(text, finish, window.titles[off], plan.template.markers)
            flag_counts.update(flags)
            failing = [f for f in flags if getattr(pol, f) == "error"]
            if failing:
                status = "error"
                reason = f"{plan.job.input.path} row {row}: quality flag {', '.join(failing)} (policy: error)"
                window.errors.append(_error(row, window.ids[off], "postprocess", reason, text))
                text = None
            else:
                status = "flagged" if any(getattr(pol, f) == "flag" for f in flags) else "ok"
            counts["generated"] += 1
        counts[status] += 1
        out["__row"].append(row)
        out["generated_description"].append(text)
        out["enrich_status"].append(status)
        out["enrich_finish_reason"].append(finish)
        out["enrich_flags"].append(flags)
        out["enrich_output_tokens"].append(n_out)
        out["enrich_key"].append(row_key(plan.context_key, window.ids[off], window.titles[off]))
    stats = {
        "counts": {k: counts.get(k, 0) for k in ("ok", "flagged", "error", "skipped", "generated", "copied")},
        "tokens": {"input": tokens_in, "output": tokens_out},
        "flags": dict(flag_counts),
    }
    return out, stats


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


def _tokenizer_hooks(engine: Engine, plan: Plan) -> tuple[Any, Callable[[str], int] | None, int]:
    tok = engine.tokenizer
    render = getattr(tok, "apply_chat_template", None) if tok is not None else None
    if plan.template.prompt is None and (render is None or not getattr(tok, "chat_template", None)):
        raise ConfigError(f"model {plan.spec.ref!r} has no chat template; use --template alpaca")
    count = (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])) if tok is not None else None
    return render, count, engine.max_model_len - plan.sampling.max_new_tokens


def run(job: JobConfig, on_event: Event = _noop, engine: Engine | None = None) -> RunReport:
    """Run a job to the end (or to an interrupt), resuming from its state; returns the report."""
    started = _now()
    t0 = time.perf_counter()
    lf = io.scan(job.input.path, job.input.format)
    job, names = settle_columns(job, lf, on_event)
    plan = plan_run(job, on_event)
    if plan.output.exists() and plan.output.resolve() == Path(job.input.path).resolve():
        raise ConfigError(f"{plan.output}: the output would overwrite the input; choose another -o")
    clash = [c for c in (job.output.generated_column, *OUTPUT_COLUMNS[1:]) if c in names]
    if clash:
        raise ConfigError(
            f"{job.input.path}: column {clash[0]!r} already exists; rename it in the input"
            + (" or pass --generated-column NAME" if clash[0] == job.output.generated_column else "")
        )
    _ensure_writable(plan)
    try:
        lock, warning = _lock_run(plan)
    except EnrichError as err:  # a run that found the lock taken is a run too: cron's history shows it
        history.keep_failure(plan, started, t0, err)
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
    history.keep(job.run.history_dir, report)
    return report


@dataclass
class _Locks:
    """The locks a run holds, released together."""

    held: list[io.Lock]

    def release(self) -> None:
        for lock in reversed(self.held):
            lock.release()


def _lock_run(plan: Plan) -> tuple[_Locks, str | None]:
    """Lock the state folder and, where the state lives elsewhere (--state-dir), the output's default one too:
    one writer per state and one per output, whatever state folders two runs were given."""
    paths = [plan.state_dir / io.LOCK]
    beside = Path(f"{plan.output}.enrich") / io.LOCK
    if beside.resolve() != paths[0].resolve():
        paths.append(beside)
    held: list[io.Lock] = []
    warnings: list[str] = []
    try:
        for path in paths:
            lock, warning = io.acquire_lock(path, str(plan.output))
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
    folders += [(plan.errors_path.parent, "the error file", "--errors"), (plan.report_path.parent, "the report", "--report")]
    if plan.job.run.history_dir:
        folders.append((Path(plan.job.run.history_dir), "the report history", "--history-dir"))
    for folder, what, option in folders:
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(f"{blocker}: is a file, so {what} cannot be written under it; choose another {option}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".enrich-write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise ConfigError(
                f"{folder}: cannot write {what} there ({err.strerror or err}); choose another {option}"
            ) from None


def _run_locked(
    plan: Plan, lf: Any, total: int, started: str, t0: float, on_event: Event, engine: Engine | None
) -> RunReport:
    job = plan.job
    manifest = io.read_manifest(plan.state_dir)
    same = manifest.get("fingerprint") == plan.fingerprint
    if plan.output.exists() and same and manifest.get("complete") and not job.run.restart:
        on_event("info", {"message": f"{plan.output} is complete and up to date; nothing to do"})
        return RunReport.model_validate(manifest["report"])
    if plan.output.exists() and not job.output.overwrite and not same and not job.run.incremental:
        raise ConfigError(
            f"{plan.output}: exists and was not written by this run; pass --overwrite to replace it"
        )
    restart = job.run.restart or bool(manifest.get("complete")) or incremental.restart(plan, manifest, on_event)
    state = io.open_state(plan.state_dir, plan.fingerprint, plan.details, restart)
    for w in state.warnings:
        on_event("warning", {"message": w})
    n_windows = (total + plan.window_rows - 1) // plan.window_rows
    if state.resumed:
        on_event("info", {"message": f"resuming: {len(state.parts)} of {n_windows} windows already done"})
    on_event("start", {"rows_total": total, "rows_done": sum(int(p["rows"]) for p in state.parts.values())})
    cols = job.input.columns
    duplicates = io.duplicate_rows(lf, cols.id, job.run.limit, job.input.path, plan.state_dir / "scratch") if cols.id else {}
    pending = [k for k in range(n_windows) if k not in state.parts]
    own_engine = engine is None
    seconds: Counter[str] = Counter()
    done_rows = sum(int(p["rows"]) for p in state.parts.values())
    fresh_rows = fresh_out_tokens = 0
    ray_workers: list[dict[str, Any]] | None = [] if job.model.engine == "ray" else None
    try:
        with _sigterm_as_interrupt():
            reuse = incremental.prepare(plan, lf, state, total, pending, on_event) if job.run.incremental else None
            if pending and ray_workers is not None:  # issue 6: the windows go to a Ray Data actor pool instead
                from enrich import distributed

                spread = distributed.run_windows(plan, state, total, pending, duplicates, reuse, seconds, on_event, t0)
                done_rows, fresh_rows, fresh_out_tokens = done_rows + spread.rows, spread.rows, spread.output_tokens
                ray_workers, pending = spread.workers, []
            if pending and engine is None:
                t = time.perf_counter()
                engine = make_engine(plan.engine_name, plan.spec, job.model, plan.batch_size)
                on_event("info", {"message": f"model {plan.spec.name} loaded in {time.perf_counter() - t:.1f}s"})
            if pending:
                assert engine is not None
                render, count, max_prompt = _tokenizer_hooks(engine, plan)
                needed = [c for c in (cols.id, cols.title) if c]
                source = _windows(plan, lf, needed, set(pending), duplicates, render, count, max_prompt, reuse)
                prefetch = _Prefetch(source)
                prefetch.start()
                try:
                    for window in prefetch:
                        seconds["read"] += window.seconds_read
                        seconds["prompt"] += window.seconds_prompt
                        t = time.perf_counter()
                        offs = list(window.prompts)
                        sampling = Sampling(**{**plan.sampling.__dict__, "seed": plan.sampling.seed + window.index})
                        gens = engine.generate([window.prompts[o] for o in offs], sampling) if offs else []
                        seconds["generate"] += time.perf_counter() - t
                        t = time.perf_counter()
                        part, stats = finish_window(window, dict(zip(offs, gens, strict=True)), plan)
                        incremental.merge(window, part, stats)
                        seconds["postprocess"] += time.perf_counter() - t
                        t = time.perf_counter()
                        state.record(window.index, io.part_frame(part, job.output.generated_column), window.errors, stats)
                        seconds["write"] += time.perf_counter() - t
                        done_rows += len(window.rows)
                        fresh_rows += len(window.rows)
                        fresh_out_tokens += stats["tokens"]["output"]
                        elapsed = time.perf_counter() - t0
                        on_event(
                            "progress",
                            {
                                "rows_done": done_rows,
                                "rows_total": total,
                                "errors": sum(p["counts"]["error"] for p in state.parts.values()),
                                "rows_per_s": fresh_rows / elapsed,
                                "output_tokens_per_s": fresh_out_tokens / elapsed,
                                "elapsed_s": elapsed,
                            },
                        )
                finally:
                    prefetch.stop.set()
            t = time.perf_counter()
            io.assemble_output(
                lf, job.input.path, state, n_windows, plan.window_rows, plan.output, plan.output_format, job.run.limit
            )
            n_errors = io.assemble_errors(state, n_windows, plan.errors_path)
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
    io.write_json(plan.report_path, report.model_dump())
    state.mark_complete(report.model_dump())
    shutil.rmtree(state.parts_dir, ignore_errors=True)
    return report


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
    for index, columns in enumerate(io.iter_window_lists(lf, needed, plan.window_rows, job.input.path, job.run.limit)):
        old = next(reused)
        read = time.perf_counter() - t
        if index in pending:
            t = time.perf_counter()
            start = index * plan.window_rows
            window = prepare_window(index, start, columns, plan, duplicates, render, count, max_prompt, job.input.path)
            incremental.apply(window, old, plan.context_key)
            window.seconds_read = read
            window.seconds_prompt = time.perf_counter() - t
            yield window
        t = time.perf_counter()


def _report(
    plan: Plan,
    state: io.RunState,
    started: str,
    seconds: Counter[str],
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
        input=plan.job.input.path,
        output=str(plan.output),
        errors_file=str(plan.errors_path),
        fingerprint=plan.fingerprint,
        resumed=state.resumed,
        model={"ref": plan.spec.ref, "name": plan.spec.name, "engine": plan.engine_name, "template": plan.template.name},
        versions=versions(),
        sampling={k: v for k, v in plan.sampling.__dict__.items() if k != "ignore_eos"},
        counts={"rows": total, **{k: counts.get(k, 0) for k in ("ok", "flagged", "error", "skipped", "generated", "copied")}},
        tokens={"input": tokens.get("input", 0), "output": tokens.get("output", 0)},
        seconds={k: round(seconds.get(k, 0.0), 4) for k in ("read", "prompt", "generate", "postprocess", "write", "total")},
        flags={f: flags.get(f, 0) for f in FLAGS},
        rows_per_s=round(fresh_rows / elapsed, 3),
        output_tokens_per_s=round(fresh_out_tokens / elapsed, 3),
    )


@dataclass(frozen=True)
class DryRun:
    """What a dry run shows: sample rows with their generations, and the measured speed."""

    rows: list[dict[str, Any]]
    total_rows: int
    rows_per_s: float
    output_tokens_per_s: float
    forecast_s: float
    engine: str
    model: str


def dry_run(job: JobConfig, sample: int, on_event: Event = _noop, engine: Engine | None = None) -> DryRun:
    """Generate for a seeded random sample and forecast the full run; writes nothing."""
    lf = io.scan(job.input.path, job.input.format)
    job, _ = settle_columns(job, lf, on_event)
    plan = plan_run(job, on_event)
    cols = job.input.columns
    total = io.count_rows(lf, job.input.path, job.input.format)
    if job.run.limit is not None:
        total = min(total, job.run.limit)
    chosen = sorted(random.Random(job.sampling.seed).sample(range(total), min(sample, total)))
    needed = [c for c in (cols.id, cols.title, cols.content) if c]
    picked: dict[str, list[Any]] = {c: [] for c in needed}
    wanted = iter(chosen)
    nxt = next(wanted, None)
    for index, columns in enumerate(io.iter_window_lists(lf, needed, 65536, job.input.path, job.run.limit)):
        start = index * 65536
        while nxt is not None and nxt < start + len(columns[needed[0]]):
            for c in needed:
                picked[c].append(columns[c][nxt - start])
            nxt = next(wanted, None)
    own = engine is None
    if engine is None:
        engine = make_engine(plan.engine_name, plan.spec, job.model, plan.batch_size)
    try:
        render, count, max_prompt = _tokenizer_hooks(engine, plan)
        window = prepare_window(0, 0, picked, plan, {}, render, count, max_prompt, job.input.path)
        offs = list(window.prompts)
        t = time.perf_counter()
        gens = engine.generate([window.prompts[o] for o in offs], plan.sampling) if offs else []
        elapsed = max(time.perf_counter() - t, 1e-9)
    finally:
        if own:
            engine.close()
    part, _ = finish_window(window, dict(zip(offs, gens, strict=True)), plan)
    originals = picked[cols.content] if cols.content else [None] * len(chosen)
    rows = [
        {
            "row": chosen[i],
            "id": window.ids[i],
            "title": window.titles[i],
            "original": originals[i],
            "generated": part["generated_description"][i],
            "status": part["enrich_status"][i],
            "flags": part["enrich_flags"][i],
        }
        for i in range(len(chosen))
    ]
    rate = len(offs) / elapsed
    if not offs:
        raise EngineError("no sampled row could be prompted; see the error reasons with a real run")
    return DryRun(
        rows=rows,
        total_rows=total,
        rows_per_s=rate,
        output_tokens_per_s=sum(g.output_tokens for g in gens) / elapsed,
        forecast_s=total / rate,
        engine=engine.name,
        model=plan.spec.name,
    )
