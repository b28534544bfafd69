"""Resolve a job into a run plan: what is read, what is written, the model, engine, template, sampling,
windows and the run's fingerprint. Everything after this step takes the plan."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.catalog.source import Source, format_of, nested_columns
from enrich.catalog.windows import Windows
from enrich.config import ClaimsConfig, JobConfig, OutputColumns
from enrich.contracts import OUTPUT_COLUMNS
from enrich.errors import ConfigError
from enrich.events import Event, no_events
from enrich.model.attributes import default_for, prompted_attributes
from enrich.model.engines import check_sampling, pick_engine, resolve_sampling
from enrich.model.generation import Sampling
from enrich.model.prompts import Template, get_template
from enrich.model.reference import ModelSpec, resolve_model, versions
from enrich.quality.vocabulary import Vocabulary, base_vocabulary
from enrich.review.decisions import Decisions
from enrich.run.output import PART_TYPES, OutputFile

CPU_FIRST_WINDOW = 4  # rows: on 2 shared cores the embedded model writes them in well under a minute


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, resolved once from the job config."""

    job: JobConfig
    source: Source  # what is read, its columns settled against the file
    out: OutputFile
    names: list[str]  # every input column
    errors_path: Path
    report_path: Path
    state_dir: Path
    spec: ModelSpec
    engine_name: str
    template: Template
    sampling: Sampling
    windows: Windows
    vocabulary: Vocabulary  # what counts as a claim: packaged, learned by the model, changed by the job
    decisions: Decisions | None  # a reviewer's decisions on the previous output's rows (run.decisions)
    batch_size: int
    fingerprint: str
    details: dict[str, Any]
    context_key: str  # model + template + sampling: part of every row's content key

    def report_fields(self) -> dict[str, Any]:
        """The run report's fields that the plan decides: the same for a finished, failed or refused run."""
        return {
            "input": self.source.path,
            "output": str(self.out.path),
            "errors_file": str(self.errors_path),
            "fingerprint": self.fingerprint,
            "model": {
                "ref": self.spec.ref,
                "name": self.spec.name,
                "engine": self.engine_name,
                "template": self.template.name,
            },
            "columns": self.source.columns.model_dump(),
            "attributes": [{"column": column, "label": label} for column, label in self.source.attributes],
            "output_columns": dict(self.out.names),
            "versions": versions(),
            "sampling": self.sampling.reported(),
        }


def plan_run(job: JobConfig, on_event: Event = no_events) -> Plan:
    """Read the input's columns, resolve the model, engine, template and sampling; compute the fingerprint."""
    from enrich.model.generation import cuda_available

    source, names = settle_columns(job, on_event)
    job = job.model_copy(update={"input": job.input.model_copy(update={"columns": source.columns})})
    out = OutputFile(
        Path(job.output.path),
        format_of(job.output.path, job.output.format, "--output-format"),
        job.output_separator(),
        job.output.names(),
    )
    gpu = cuda_available()
    spec = _model(job, source, names, gpu, on_event)
    engine_name = pick_engine(
        job.ray.engine if job.model.engine == "ray" else job.model.engine
    )  # ray: the workers'
    if job.model.engine == "auto":
        on_event("info", {"message": f"engine: {engine_name} ({'GPU' if gpu else 'no GPU'})"})
    try:
        template = get_template(job.prompt.template or spec.template)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    sampling = resolve_sampling(job.sampling, spec)
    check_sampling(engine_name, sampling)
    source = source.with_attributes(prompted_attributes(job.input.attributes, spec, source, names, on_event))
    if job.output.only_missing and not source.columns.content:
        raise ConfigError(
            f"{source.path}: --only-missing keeps existing descriptions, and the input has no description column; "
            "map one with --content-col"
        )
    vocabulary = vocabulary_for(spec, job.claims)
    decisions = _decisions(job)
    on_gpu = engine_name == "vllm"
    batch_size = job.batch.batch_size or (256 if on_gpu else 16)
    window_rows = job.batch.window_rows or (8192 if on_gpu else 4 * batch_size)
    # On a CPU a window of the default size takes minutes: unless the size was chosen, the windows ramp up from
    # a few rows, so the first is saved (and shown) within about a minute.
    first = window_rows if on_gpu or job.batch.window_rows else min(CPU_FIRST_WINDOW, window_rows)
    context = {
        "model": spec.identity,
        "template": template.name,
        "sampling": sampling.identity(),
        "engine": engine_name,
    }
    details = _details(job, source, context, window_rows, first, batch_size)
    if decisions is not None:
        details["decisions"] = decisions.digest()
    if vocabulary != base_vocabulary():
        details["claims"] = _digest({"vocabulary": vocabulary.to_json()})
    return Plan(
        job=job,
        source=source,
        out=out,
        names=names,
        errors_path=job.output.errors_path(),
        report_path=job.output.report_path(),
        state_dir=Path(job.run.state_dir or f"{out.path}.enrich"),
        spec=spec,
        engine_name=engine_name,
        template=template,
        sampling=sampling,
        windows=Windows(window_rows, first),
        vocabulary=vocabulary,
        decisions=decisions,
        batch_size=batch_size,
        fingerprint=_digest(details),
        details=details,
        context_key=_digest(context),
    )


def _model(job: JobConfig, source: Source, names: list[str], gpu: bool, on_event: Event) -> ModelSpec:
    """The job's model; the default one gives way to its base for an input without its attribute columns."""
    spec = resolve_model(job.model.ref, gpu=gpu, on_event=on_event)
    if job.model.ref is None and (base := default_for(spec, job.input.attributes, source, names, on_event)):
        return resolve_model(base, on_event=on_event)
    return spec


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _details(
    job: JobConfig, source: Source, context: dict[str, Any], window_rows: int, first: int, batch_size: int
) -> dict[str, Any]:
    """What the run's fingerprint holds: a resume continues only a state made with the same."""
    details: dict[str, Any] = {
        "input": str(Path(source.path).resolve()),
        "input_identity": source.identity(),
        "columns": source.columns.model_dump(),
        "context": context,
        "window_rows": window_rows,
        **({"first_window_rows": first} if first != window_rows else {}),
        "batch_size": batch_size,
        "limit": source.limit,
        "policies": job.policies.model_dump(),
        "generated_column": job.output.generated_column,
        "part_columns": list(PART_TYPES),
    }
    if source.attributes:
        details["attributes"] = [list(a) for a in source.attributes]
    if job.output.only_missing:
        details["only_missing"] = job.output.min_chars
    # Only where they differ from the defaults, so that runs saved before these settings existed still resume.
    if job.output.columns != OutputColumns():
        details["output_columns"] = job.output.columns.model_dump()
    if (source.separator, job.output_separator()) != (",", ","):
        details["separators"] = [source.separator, job.output_separator()]
    return details


def _decisions(job: JobConfig) -> Decisions | None:
    """The decisions file of run.decisions, read and checked (a bad line is exit 3 naming it)."""
    if job.run.decisions is None:
        return None
    if not job.run.incremental:
        raise ConfigError(
            f"--decisions {job.run.decisions}: decisions are on the rows of the previous output; pass --incremental"
        )
    return Decisions.load(Path(job.run.decisions))


def vocabulary_for(spec: ModelSpec, changes: ClaimsConfig) -> Vocabulary:
    """What counts as a claim: the packaged word lists, the terms the model learned from its catalog, and the
    job's additions and removals."""
    learned = spec.claims_vocabulary()
    vocabulary = Vocabulary.from_json(learned) if learned else base_vocabulary()
    if changes.add or changes.remove:
        vocabulary = vocabulary.with_changes({str(k): v for k, v in changes.add.items()}, changes.remove)
    return vocabulary


def check_output(plan: Plan) -> None:
    """What OUTPUT's columns cannot be: names the input already has, or nested columns in a CSV."""
    job = plan.job
    clashes = [
        f"{plan.source.path}: column {name!r} already exists; rename it in the input or pass "
        + ("--generated-column NAME" if std == OUTPUT_COLUMNS[0] else f"--set output.columns.{std}=NAME")
        for std, name in plan.out.names.items()
        if name in plan.names
    ]
    if clashes:
        raise ConfigError("\n".join(clashes))  # every one at once: a re-enriched output has them all
    nested = nested_columns(plan.source.scan()) if plan.out.format == "csv" else []
    if nested:  # refused now, not after the whole run's generation when the output is assembled
        raise ConfigError(
            f"{plan.source.path}: columns {', '.join(nested)} are nested (lists, structs or bytes), which a CSV "
            "output cannot hold; write Parquet (-o OUTPUT.parquet), or drop those columns from the input"
        )
    if job.run.incremental and job.run.limit is not None and plan.out.path.is_file():
        had = plan.out.rows()
        if had is not None and had > job.run.limit:
            raise ConfigError(
                f"{plan.out.path}: --limit with --incremental would replace this output's {had} rows with the "
                f"first {job.run.limit}; drop --limit, or write to another -o"
            )


def settle_columns(job: JobConfig, on_event: Event = no_events) -> tuple[Source, list[str]]:
    """The input as a Source whose column mapping is checked against the file: id and content left at their
    defaults are optional (row positions are the ids; no original descriptions). Returns its column names too."""
    source = Source.of(
        job.input.path, job.input.format, job.input.separator, job.input.columns, job.run.limit
    )
    lf = source.scan()
    cols = job.input.columns
    names: list[str] = lf.collect_schema().names()
    update: dict[str, Any] = {}
    for role in ("id", "content"):
        name = getattr(cols, role)
        if name is not None and name not in names and role not in cols.model_fields_set:
            update[role] = None
            what = "ids are row positions" if role == "id" else "no original descriptions"
            on_event("info", {"message": f"no {name!r} column: {what}"})
    if update:
        source = source.with_columns(cols.model_copy(update=update))
    cols = source.columns
    source.require_columns(lf, {"id": cols.id, "title": cols.title, "content": cols.content})
    source.require_text(lf, cols.title, "--title-col")
    return source, names
