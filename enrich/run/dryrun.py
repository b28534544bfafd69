"""The dry run: generate for a seeded sample, measure, forecast the full run; write nothing."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from enrich.catalog import source
from enrich.config import JobConfig
from enrich.errors import InputError
from enrich.events import Event, no_events
from enrich.model.engines import Engine, make_engine
from enrich.run.plan import plan_run, settle_columns
from enrich.run.process import finish_window, prepare_window, tokenizer_hooks


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
    lf = source.scan(job.input.path, job.input.format, job.input.separator)
    job, _ = settle_columns(job, lf, on_event)
    plan = plan_run(job, on_event)
    cols = job.input.columns
    total = source.count_rows(lf, job.input.path, job.input.format)
    if job.run.limit is not None:
        total = min(total, job.run.limit)
    if total == 0:
        raise InputError(f"{job.input.path}: no rows to sample")
    chosen = sorted(random.Random(job.sampling.seed).sample(range(total), min(sample, total)))
    needed = [c for c in (cols.id, cols.title, cols.content) if c]
    picked: dict[str, list[Any]] = {c: [] for c in needed}
    wanted = iter(chosen)
    nxt = next(wanted, None)
    for index, columns in enumerate(
        source.iter_window_lists(lf, needed, 65536, job.input.path, job.run.limit)
    ):
        start = index * 65536
        while nxt is not None and nxt < start + len(columns[needed[0]]):
            for c in needed:
                picked[c].append(columns[c][nxt - start])
            nxt = next(wanted, None)
    own = engine is None
    if engine is None:
        engine = make_engine(plan.engine_name, plan.spec, job.model, plan.batch_size)
    try:
        render, count, max_prompt = tokenizer_hooks(engine, plan)
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
    if not offs:
        errors = sorted(window.errors, key=lambda e: e["row"])
        why = (
            f"the first: {errors[0]['reason']}"
            if errors
            else "all were skipped as invalid (--invalid-row skip)"
        )
        raise InputError(
            f"{job.input.path}: none of the {len(chosen)} sampled rows could be prompted ({len(errors)} would go "
            f"to the error file); {why}"
        )
    rate = len(offs) / elapsed
    return DryRun(
        rows=rows,
        total_rows=total,
        rows_per_s=rate,
        output_tokens_per_s=sum(g.output_tokens for g in gens) / elapsed,
        forecast_s=total / rate,
        engine=engine.name,
        model=plan.spec.name,
    )
