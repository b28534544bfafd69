"""Resolve a job into a run plan: paths, model, engine, template, sampling and the fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.catalog import source
from enrich.config import JobConfig, OutputColumns
from enrich.errors import ConfigError
from enrich.events import Event, no_events
from enrich.model.engines import Sampling, pick_engine
from enrich.model.prompts import Template, get_template
from enrich.model.reference import ModelSpec, resolve_model, versions
from enrich.run.windows import Windows

CPU_FIRST_WINDOW = 4  # rows: on 2 shared cores the embedded model writes them in well under a minute


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
    windows: Windows
    batch_size: int
    fingerprint: str
    details: dict[str, Any]
    context_key: str  # model + template + sampling: part of every row's content key

    def report_fields(self) -> dict[str, Any]:
        """The run report's fields that the plan decides: the same for a finished, failed or refused run."""
        return {
            "input": self.job.input.path,
            "output": str(self.output),
            "errors_file": str(self.errors_path),
            "fingerprint": self.fingerprint,
            "model": {
                "ref": self.spec.ref,
                "name": self.spec.name,
                "engine": self.engine_name,
                "template": self.template.name,
            },
            "versions": versions(),
            "sampling": {k: v for k, v in self.sampling.__dict__.items() if k != "ignore_eos"},
        }


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


def plan_run(job: JobConfig, on_event: Event = no_events) -> Plan:
    """Resolve paths, model, engine, template and sampling; compute the run's fingerprint."""
    from enrich.model.engines import cuda_available

    output = Path(job.output.path)
    out_fmt = source.file_format(str(output), job.output.format)
    gpu = cuda_available()
    spec = resolve_model(job.model.ref, gpu=gpu, on_event=on_event)
    engine_name = pick_engine(
        job.ray.engine if job.model.engine == "ray" else job.model.engine
    )  # ray: the workers'
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
    # On a CPU a window of the default size takes minutes: unless the size was chosen, the windows ramp up from
    # a few rows, so the first is saved (and shown) within about a minute.
    first = window_rows if on_gpu or job.batch.window_rows else min(CPU_FIRST_WINDOW, window_rows)
    context = {
        "model": spec.identity,
        "template": template.name,
        "sampling": sampling.__dict__,
        "engine": engine_name,
    }
    context_key = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
    details: dict[str, Any] = {
        "input": str(Path(job.input.path).resolve()),
        "input_identity": source.input_identity(job.input.path),
        "columns": job.input.columns.model_dump(),
        "context": context,
        "window_rows": window_rows,
        **({"first_window_rows": first} if first != window_rows else {}),
        "batch_size": batch_size,
        "limit": job.run.limit,
        "policies": job.policies.model_dump(),
        "generated_column": job.output.generated_column,
    }
    # Only where they differ from the defaults, so that runs saved before these settings existed still resume.
    if job.output.columns != OutputColumns():
        details["output_columns"] = job.output.columns.model_dump()
    if (job.input.separator, job.output_separator()) != (",", ","):
        details["separators"] = [job.input.separator, job.output_separator()]
    fingerprint = hashlib.sha256(json.dumps(details, sort_keys=True).encode()).hexdigest()[:16]
    return Plan(
        job=job,
        output=output,
        output_format=out_fmt,
        errors_path=job.output.errors_path(),
        report_path=job.output.report_path(),
        state_dir=Path(job.run.state_dir or f"{output}.enrich"),
        spec=spec,
        engine_name=engine_name,
        template=template,
        sampling=sampling,
        windows=Windows(window_rows, first),
        batch_size=batch_size,
        fingerprint=fingerprint,
        details=details,
        context_key=context_key,
    )


def settle_columns(job: JobConfig, lf: Any, on_event: Event = no_events) -> tuple[JobConfig, list[str]]:
    """Check the column mapping against the input; id and content left at their defaults are optional."""
    cols = job.input.columns
    names: list[str] = lf.collect_schema().names()
    update: dict[str, Any] = {}
    for role in ("id", "content"):
        name = getattr(cols, role)
        if name is not None and name not in names and role not in cols.model_fields_set:
            update[role] = None
            on_event(
                "info",
                {
                    "message": f"no {name!r} column: "
                    + ("ids are row positions" if role == "id" else "no original descriptions")
                },
            )
    if update:
        cols = cols.model_copy(update=update)
        job = job.model_copy(update={"input": job.input.model_copy(update={"columns": cols})})
    source.require_columns(
        lf,
        job.input.path,
        {"id": cols.id, "title": cols.title, "content": cols.content},
        job.input.separator,
    )
    source.require_text(lf, job.input.path, cols.title, "--title-col")
    return job, names
