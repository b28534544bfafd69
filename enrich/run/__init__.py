"""A run of a job, from the input to the output; `run` is its entry.

The entry takes the run's lock before anything heavy loads (polars, torch, the model): a second run of the same
output exits 4 at once, and a run whose files are refused leaves nothing behind.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from enrich.events import Event, no_events
from enrich.run.history import keep_failure, now
from enrich.run.target import Target, require_problem_free

if TYPE_CHECKING:
    from enrich.config import JobConfig
    from enrich.contracts import RunReport
    from enrich.model.generation import Engine


def run(job: JobConfig, on_event: Event = no_events, engine: Engine | None = None) -> RunReport:
    """Run a job to the end (or to an interrupt), resuming from its state; returns the report."""
    started = now()
    t0 = time.perf_counter()
    try:  # a run refused here (its files, the lock taken) is a run too: cron's history shows it
        target = Target.of(job)
        require_problem_free(target)
        held = target.hold()
    except BaseException as err:
        keep_failure(job, started, t0, err)
        raise
    from enrich.run.memory import run_allocators

    with run_allocators():
        from enrich.run.loop import run_held  # polars, pyarrow and the engines load once the lock is held

        return run_held(job, target, held, started, t0, on_event, engine)
