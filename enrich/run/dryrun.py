"""The dry run: generate for a seeded sample, measure, forecast the full run; write nothing."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from enrich.catalog.source import Source
from enrich.config import JobConfig
from enrich.errors import InputError
from enrich.events import Event, no_events
from enrich.model.engines import make_engine
from enrich.model.generation import Engine
from enrich.run.plan import plan_run
from enrich.run.process import Processor


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


def dry_run(job: JobConfig, sample: int, on_event: Event = no_events, engine: Engine | None = None) -> DryRun:
    """Generate for a seeded random sample and forecast the full run; writes nothing."""
    plan = plan_run(job, on_event)
    total = plan.source.rows()
    if total == 0:
        raise InputError(f"{plan.source.path}: no rows to sample")
    chosen = sorted(random.Random(job.sampling.seed).sample(range(total), min(sample, total)))
    cols = plan.source.columns
    picked = _pick(plan.source, [c for c in (cols.id, cols.title, cols.content) if c], chosen)
    own = engine is None
    if engine is None:
        engine = make_engine(plan.engine_name, plan.spec, job.model, plan.batch_size)
    try:
        processor = Processor.of(plan, engine)
        # Window 0: the sampled rows are prompted and seeded as the first window of a run.
        window = processor.prepare(0, 0, picked, {})
        t = time.perf_counter()
        results = processor.generate(window, engine)
        elapsed = max(time.perf_counter() - t, 1e-9)
    finally:
        if own:
            engine.close()
    if not results:
        errors = sorted(window.errors, key=lambda e: e["row"])
        why = (
            f"the first: {errors[0]['reason']}"
            if errors
            else "all were skipped as invalid (--invalid-row skip)"
        )
        raise InputError(
            f"{plan.source.path}: none of the {len(chosen)} sampled rows could be prompted ({len(errors)} would go "
            f"to the error file); {why}"
        )
    part, _ = processor.finish(window, results)
    originals = picked[cols.content] if cols.content else [None] * len(chosen)
    rows = [
        {
            "row": chosen[i],
            "id": window.ids[i] if cols.id else str(chosen[i]),
            "title": window.titles[i],
            "original": originals[i],
            "generated": part["generated_description"][i],
            "status": part["enrich_status"][i],
            "flags": part["enrich_flags"][i],
        }
        for i in range(len(chosen))
    ]
    rate = len(results) / elapsed
    return DryRun(
        rows=rows,
        total_rows=total,
        rows_per_s=rate,
        output_tokens_per_s=sum(g.output_tokens for g in results.values()) / elapsed,
        forecast_s=total / rate,
        engine=engine.name,
        model=plan.spec.name,
    )


def _pick(source: Source, columns: list[str], chosen: list[int]) -> dict[str, list[Any]]:
    """The chosen rows' columns, in one read of those columns."""
    picked: dict[str, list[Any]] = {c: [] for c in columns}
    wanted = iter(chosen)
    nxt = next(wanted, None)
    start = 0
    for window in source.window_lists(columns, 65536):
        n = len(window[columns[0]])
        while nxt is not None and nxt < start + n:
            for c in columns:
                picked[c].append(window[c][nxt - start])
            nxt = next(wanted, None)
        start += n
    return picked
