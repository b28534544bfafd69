"""Scale-out: a run's windows spread over a Ray Data actor pool of engines (`--engine ray`).

Design. The driver (the `enrich run` process) keeps everything that must have one writer: the lock, the
fingerprint, the resume journal and the part files. Windows stay the unit of work, exactly as in a local run:
window k is the same input rows (plan.windows). Ray Data gets one small item per pending window (its index
and its duplicate-id rows) and maps it, with `map_batches(batch_size=1)` over a fixed `ActorPoolStrategy`,
through `_Worker`: one engine per actor (one per GPU, or per CPU worker; all started before the first window is
given out, so that every worker gets its share of a few windows), which reads the window's rows from the
input itself (Parquet by row group, so each worker reads only its own rows), then runs the same `Processor`
(prepare, generate, finish) as a local run, with the same per-window seed. It
answers the part table (Arrow IPC bytes), the error records and the stats; the driver records each answer with
`RunState.record` as it arrives, in any order. So the state folder of a Ray run is the state folder of a local
run (same fingerprint, same window files, same journal): a killed Ray run resumes with Ray or without it, and
the assembly zips parts and input in input order as always.

Faults. Ray Data starts pool actors with `max_restarts=-1`; we pass `max_task_retries=3`, so a worker killed
mid-window is restarted and its window retried (at least once); a window that kills its worker every time fails
the run instead of looping. A retried window that had already answered is ignored by index: never doubled.
The driver killed with SIGKILL loses at most the windows in flight (a re-run resumes from the journal); SIGTERM
or Ctrl-C stops the local Ray it started and exits 130, like a local run.

Why our own actor pool and not `ray.data.llm`'s vLLM processor (measured in bench/RESULTS.md, "Ray Data"):
- On CPU it cannot run at all: `ray.data.llm` needs vLLM (not installable without CUDA here) and, in ray 2.60,
  `import ray.data.llm` fails without the `ray[llm]` extra; the CPU engine (transformers) has no place in it.
- Its unit is the row: rows come back in any order, one by one, so the window files, the per-window seeds, the
  resume journal and the error records would have to be rebuilt around it; its own chat-template, tokenize and
  detokenize stages would replace ours, where a template or EOS mismatch is the failure enrich exists to avoid.
- On a GPU our worker already runs vLLM's offline engine on a whole window per call (at 0.96 of bare vLLM's
  speed, bench/RESULTS.md), so the processor's continuous feeding has little left to win; bench/ray_gpu.py
  measures both.

Limits: every node must see the input path and have enrich installed; incremental runs are not spread yet;
CSV windows are found by scanning from the file's start (prefer Parquet for large catalogs); a dry run runs the
workers' engine in this process; stage seconds in the report are summed over workers, `total` is wall time.
Results equal a local run's where the arithmetic is the same (same hardware and thread count per engine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from enrich.errors import ConfigError, EngineError, EnrichError, InputError
from enrich.model.engines import make_engine
from enrich.run.output import part_frame
from enrich.run.process import Processor
from enrich.run.state import RunState
from enrich.run.tally import Tally

if TYPE_CHECKING:
    from enrich.events import Event
    from enrich.run.plan import Plan

TASK_RETRIES = 3  # a window that kills its worker this many more times fails the run instead of looping
# Windows and parts are a few MB each; Ray's default object store (30% of RAM) would be far too much.
LOCAL_OBJECT_STORE = 1 << 30


_ERRORS: dict[str, type[EnrichError]] = {c.__name__: c for c in (ConfigError, InputError, EngineError)}


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class _Worker:
    """One engine in Ray Data's actor pool: reads, prepares, generates and finishes whole windows."""

    def __init__(self, plan: Plan, total: int) -> None:
        import ray

        self.plan = plan
        self.total = total
        # A failed start (no chat template, no GPU, out of memory) is answered by the first call instead (below).
        self.failed: EnrichError | None = None
        try:
            self.engine = make_engine(plan.engine_name, plan.spec, plan.job.model, plan.batch_size)
            self.processor = Processor.of(plan, self.engine)
        except EnrichError as err:
            self.failed = err
        self.needed = plan.source.row_columns()
        gpus = [str(g) for g in ray.get_gpu_ids()]
        self.identity = {
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "node": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "pid": os.getpid(),
            "device": f"gpu {','.join(gpus)}" if gpus else "cpu",
        }

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "index": [],
            "part": [],
            "errors": [],
            "stats": [],
            "worker": [],
            "failure": [],
        }
        for index, dups in zip(batch["index"], batch["duplicates"], strict=True):
            part, failure = b"", ""
            errors: list[dict[str, Any]] = []
            stats: dict[str, Any] = {}
            try:
                if self.failed is not None:
                    raise self.failed
                part, errors, stats = self._window(
                    int(index), {int(k): v for k, v in json.loads(str(dups)).items()}
                )
            except EnrichError as err:
                # Answered as data: Ray hands the driver a worker's exception as text only (ray 2.60 drops its
                # cause on the way), and the driver must raise the same error, with its exit code, as a local run.
                failure = json.dumps({"kind": type(err).__name__, "message": str(err)})
            out["index"].append(int(index))
            out["part"].append(part)
            out["errors"].append(json.dumps(errors, ensure_ascii=False))
            out["stats"].append(json.dumps(stats))
            out["worker"].append(json.dumps(self.identity))
            out["failure"].append(failure)
        return out

    def _window(
        self, index: int, duplicates: dict[int, int]
    ) -> tuple[bytes, list[dict[str, Any]], dict[str, Any]]:
        plan = self.plan
        start, stop = plan.windows.bounds(index, self.total)
        t0 = time.perf_counter()
        columns = plan.source.read_range(self.needed, start, stop)
        if len(columns[self.needed[0]]) != stop - start:
            raise InputError(
                f"{plan.source.path}: fewer rows than when the run started; the input changed; re-run"
            )
        t1 = time.perf_counter()
        window = self.processor.prepare(index, start, columns, duplicates)
        t2 = time.perf_counter()
        results = self.processor.generate(window, self.engine)
        t3 = time.perf_counter()
        part, stats = self.processor.finish(window, results)
        table = part_frame(part, plan.out.names)
        t4 = time.perf_counter()
        stats["seconds"] = {"read": t1 - t0, "prompt": t2 - t1, "generate": t3 - t2, "postprocess": t4 - t3}
        return _to_ipc(table), window.errors, stats


def _connect(plan: Plan) -> bool:
    """Join the configured cluster, or start a local Ray; True when this call started it (and must stop it)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'enrich[ray]'") from None
    if ray.is_initialized():  # an embedding program (or a test session) already holds a Ray connection
        return False
    cfg = plan.job.ray
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}  # keep cron's JSON log lines pure
    # ray.init replaces the SIGTERM handler with its own (exit 1, or death by the signal, with raylet and GCS left
    # running); enrich's (SIGTERM acts as Ctrl-C: state saved, Ray shut down below, exit 130) is put back after.
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        if cfg.address:
            ray.init(address=cfg.address, **quiet)  # type: ignore[arg-type]
        else:
            # As many logical CPUs as the workers ask for: the user chose N workers on this machine.
            cpus = max(os.cpu_count() or 1, math.ceil(cfg.workers * cfg.cpus_per_worker))
            ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE, **quiet)  # type: ignore[arg-type]
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = cfg.address or "a local Ray"
        raise ConfigError(
            f"cannot start or join {where}: {str(err).splitlines()[0]}; check --ray-address"
        ) from None
    finally:
        if threading.current_thread() is threading.main_thread() and on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    return True


def _dataset(plan: Plan, total: int, pending: list[int], duplicates: dict[int, int]) -> Any:
    """One item per pending window, mapped through the actor pool of engines."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress lines would break cron's JSON log
    # Its trace of a failed start; the driver raises the error again, as one line (run_windows).
    logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # enrich draws its own progress
    # Every worker has loaded its engine before the first window goes out, so the windows are spread over all of
    # them (Ray Data gives each to the least busy worker). Without the wait the first worker ready took up to 4
    # queued windows: measured on 2 H200s, 2 windows of 2,048 rows both went to one GPU (0.95x, not 2x).
    context.wait_for_min_actors_s = math.ceil(plan.job.ray.start_timeout_s)
    by_window: dict[int, dict[str, int]] = {}
    for row, first in duplicates.items():
        by_window.setdefault(plan.windows.index_of(row), {})[str(row)] = first
    items = [{"index": k, "duplicates": json.dumps(by_window.get(k, {}))} for k in pending]
    cfg = plan.job.ray
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = float(plan.job.model.tensor_parallel_size) if plan.engine_name == "vllm" else 0.0
    # max_task_retries has no named parameter in 2.60, and passing it the only way there is warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _Worker,
            fn_constructor_kwargs={"plan": plan, "total": total},
            batch_size=1,  # one window per call: the unit of retry and of the journal
            # Ray Data queues up to 4 windows on each actor; a killed actor's queued windows are retried on its
            # restart (holding one in flight instead left a killed worker nothing to retry, and its restart idle).
            compute=ray.data.ActorPoolStrategy(size=min(cfg.workers, len(pending))),
            num_gpus=gpus or None,
            num_cpus=cfg.cpus_per_worker,
            max_task_retries=TASK_RETRIES,
        )


def run_windows(
    plan: Plan, state: RunState, pending: list[int], duplicates: dict[int, int], tally: Tally, on_event: Event
) -> list[dict[str, Any]]:
    """Generate the pending windows on a Ray Data actor pool; record each in the run state as it arrives.
    Returns the per-worker figures of the report."""
    started_here = _connect(plan)
    import ray

    job = plan.job
    workers: dict[str, dict[str, Any]] = {}
    on_event(
        "info", {"message": f"ray: {len(pending)} windows over {job.ray.workers} {plan.engine_name} workers"}
    )
    answers = iter(_dataset(plan, tally.total, pending, duplicates).iter_rows())
    try:
        for answer in answers:
            if answer["failure"]:
                failure = json.loads(answer["failure"])
                raise _ERRORS.get(failure["kind"], EnrichError)(failure["message"])
            index = int(answer["index"])
            if index in state.parts:  # a retried window whose first answer was already recorded
                continue
            stats = json.loads(answer["stats"])
            worker = json.loads(answer["worker"])
            table = _from_ipc(answer["part"])
            t = time.perf_counter()
            busy = stats.pop("seconds")
            state.record(index, table, json.loads(answer["errors"]), stats)
            tally.seconds["write"] += time.perf_counter() - t
            for stage, s in busy.items():  # summed over workers: the cost of each stage, not wall time
                tally.seconds[stage] += s
            _count(workers, worker, table.num_rows, stats, sum(busy.values()))
            on_event("window", {"index": index, **worker})
            tally.saved(state, table.num_rows, stats["tokens"]["output"], on_event)
    except ray.exceptions.GetTimeoutError:
        cfg = job.ray
        raise EngineError(
            f"ray: the {cfg.workers} workers did not all start within {cfg.start_timeout_s:g} s "
            f"(free in the cluster: {_free(ray)}); lower --workers or --gpus-per-worker, "
            "or raise --ray-start-timeout where engines load slowly"
        ) from None
    finally:
        # Closing the iterator shuts Ray Data's executor down at once. Left to the garbage collector (an
        # exception, SIGTERM's included, keeps it alive in its traceback), its threads outlived ray.shutdown()
        # and touched a core worker already gone, which ends the process with exit 1 instead of 130.
        close = getattr(answers, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # the error under way, if any, is the one to report
                close()
        if started_here:
            ray.shutdown()
    missing = [k for k in pending if k not in state.parts]
    if missing:  # Ray Data answered every item or raised; a gap here would be a bug, never a silent loss
        raise RuntimeError(f"ray: windows {missing[:10]} were never answered")
    return [_rates(w) for w in workers.values()]


def _free(ray: Any) -> str:
    """The cluster's unclaimed CPUs and GPUs, for the message of a pool that could not start."""
    free = ray.available_resources()
    return ", ".join(f"{free.get(r, 0):g} {r}" for r in ("CPU", "GPU"))


def _count(
    workers: dict[str, dict[str, Any]], worker: dict[str, Any], rows: int, stats: dict[str, Any], busy: float
) -> None:
    w = workers.setdefault(
        worker["worker"],
        {**worker, "windows": 0, "rows": 0, "generated": 0, "output_tokens": 0, "busy_s": 0.0},
    )
    w["windows"] += 1
    w["rows"] += rows
    w["generated"] += stats["counts"]["generated"]
    w["output_tokens"] += stats["tokens"]["output"]
    w["busy_s"] += busy


def _rates(w: dict[str, Any]) -> dict[str, Any]:
    busy = max(w["busy_s"], 1e-9)
    return {
        **w,
        "busy_s": round(w["busy_s"], 3),
        "rows_per_s": round(w["rows"] / busy, 3),
        "output_tokens_per_s": round(w["output_tokens"] / busy, 3),
    }
