"""`enrich eval`: generate for held-out rows with a model and its baseline, and score both against the real
descriptions."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from enrich.catalog.source import Source
from enrich.config import SEPARATOR_DESCRIPTION, Columns, CsvSeparator, ModelConfig, SamplingConfig
from enrich.errors import ConfigError, InputError
from enrich.events import Event, no_events
from enrich.quality.claims import facts
from enrich.quality.flags import inspect
from enrich.quality.vocabulary import base_vocabulary

if TYPE_CHECKING:
    from enrich.model.reference import ModelSpec


class EvalConfig(BaseModel):
    """One evaluation: a model (and a baseline) on a sample of rows with real descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = Field(description="The model under test and its engine settings.")
    baseline: str | None = Field(None, description="Model reference scored beside it with the same rows.")
    data: str = Field(description="Held-out catalog (Parquet, CSV or JSONL) with titles and descriptions.")
    format: Literal["auto", "parquet", "csv", "jsonl"] = Field(
        "auto", description="File format; auto by suffix."
    )
    columns: Columns = Field(
        default_factory=Columns, description="Which columns hold id, title and description."
    )
    separator: CsvSeparator = Field(",", description=SEPARATOR_DESCRIPTION)
    template: Literal["alpaca", "alpaca-pt", "chat"] | None = Field(
        None, description="Prompt template for both models; default each model's own (enrich.json or preset)."
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig,
        description="Decoding for both models; unset fields take the model's own (the baseline decodes alike).",
    )
    sample: int = Field(200, ge=1, description="Rows scored (a seeded random sample; all rows when fewer).")
    seed: int = Field(0, ge=0, description="Seed of the sample.")
    batch_size: int | None = Field(None, ge=1, description="Prompts per generate call (transformers engine).")


def _resolve(role: str, ref: str) -> ModelSpec:
    """A model reference resolved before anything is generated: a bad baseline must not cost the model's run."""
    from enrich.model.reference import resolve_model

    try:
        return resolve_model(ref)
    except ConfigError as err:
        if role == "model":
            raise
        raise ConfigError(f"baseline: {err} (pass --baseline REF, or --no-baseline)") from None


def _rows(config: EvalConfig) -> dict[str, list[Any]]:
    from enrich.model.traindata import read_titles_and_descriptions

    source = Source.of(config.data, config.format, config.separator, config.columns, format_option="--format")
    data = read_titles_and_descriptions(source, with_id=True)
    keep = [
        i
        for i, (t, c) in enumerate(zip(data["title"], data["content"], strict=True))
        if isinstance(t, str) and t.strip() and isinstance(c, str) and c.strip()
    ]
    if not keep:
        raise InputError(f"{config.data}: no row has both a title and a description to score against")
    chosen = sorted(random.Random(config.seed).sample(keep, min(config.sample, len(keep))))
    out = {role: [values[i] for i in chosen] for role, values in data.items()}
    out["row"] = chosen
    out.setdefault("id", [str(r) for r in chosen])  # no id column: row positions, as in `run`
    return out


def generate_for(
    config: EvalConfig, ref: str, titles: list[str], on_event: Event = no_events
) -> dict[str, Any]:
    """One model's cleaned generations, finish reasons, flags and token counts for the titles."""
    from enrich.model.engines import make_engine, pick_engine, resolve_sampling, special_tokens
    from enrich.model.prompts import build_prompts, clean_output, get_template
    from enrich.model.reference import resolve_model

    spec = resolve_model(ref)
    try:
        template = get_template(config.template or spec.template)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    sampling = resolve_sampling(config.sampling, spec)
    engine_name = pick_engine(config.model.engine)
    engine = make_engine(engine_name, spec, config.model, config.batch_size or 16)
    try:
        tok = engine.tokenizer
        if template.prompt is None and not getattr(tok, "chat_template", None):
            raise ConfigError(f"model {ref!r} has no chat template; use --template alpaca")
        prompts = build_prompts(
            titles, template, getattr(tok, "apply_chat_template", None), special_tokens(tok)
        )
        on_event("info", {"message": f"generating {len(prompts)} rows with {spec.name} ({engine.name})"})
        t0 = time.perf_counter()
        gens = engine.generate(prompts, sampling)
        seconds = time.perf_counter() - t0
    finally:
        engine.close()
    stop = spec.stop_strings()
    texts = [clean_output(g.text, stop) for g in gens]
    return {
        "ref": ref,
        "name": spec.name,
        "template": template.name,
        "sampling": {k: v for k, v in sampling.__dict__.items() if k != "ignore_eos"},
        "engine": engine.name,
        "texts": texts,
        "finish": [g.finish_reason for g in gens],
        "flags": [
            inspect(t, g.finish_reason, facts(title), template.markers, base_vocabulary()).flags
            for t, g, title in zip(texts, gens, titles, strict=True)
        ],
        "output_tokens": [g.output_tokens for g in gens],
        "seconds": round(seconds, 1),
    }


def evaluate(config: EvalConfig, out_dir: Path, on_event: Event = no_events) -> dict[str, Any]:
    """Generate for held-out rows with the model (and baseline), score both, write report, plot and summary."""
    from enrich.evaluation import metrics
    from enrich.evaluation.report import write_outputs
    from enrich.model.engines import resolve_sampling

    rows = _rows(config)
    refs = [c.strip() for c in rows["content"]]
    titles = [t.strip() for t in rows["title"]]
    refs_by_role = {"model": config.model.ref, "baseline": config.baseline}
    specs = {role: _resolve(role, ref) for role, ref in refs_by_role.items() if ref is not None}
    # The baseline decodes as the model does (the model's own settings fill what the command left unset): a
    # comparison of two models, not of two presets' token limits and penalties.
    s = resolve_sampling(config.sampling, specs["model"])
    alike = SamplingConfig(
        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
        repetition_penalty=s.repetition_penalty, seed=s.seed,
    )  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for role, ref in refs_by_role.items():
        if ref is None:
            continue
        gen = generate_for(config.model_copy(update={"sampling": alike}), ref, titles, on_event)
        scores = metrics.score(gen["texts"], refs, gen["finish"], gen["flags"], gen["output_tokens"])
        results[role] = {
            **{k: gen[k] for k in ("ref", "name", "template", "sampling", "engine", "seconds")},
            **scores,
        }
        results[role]["_gen"] = gen
    report = {
        "data": str(Path(config.data).resolve()),
        "rows": len(titles),
        "seed": config.seed,
        "models": {role: {k: v for k, v in r.items() if k != "_gen"} for role, r in results.items()},
    }
    write_outputs(Path(out_dir), report, rows, refs, {role: r["_gen"] for role, r in results.items()})
    return report
