"""`enrich eval`: generate for held-out rows with a model and its baseline, and score both against the real
descriptions."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from enrich.catalog.source import Source
from enrich.config import (
    SEPARATOR_DESCRIPTION,
    Attribute,
    Columns,
    CsvSeparator,
    ModelConfig,
    SamplingConfig,
    attribute_list,
)
from enrich.errors import ConfigError, InputError
from enrich.events import Event, no_events
from enrich.quality.claims import Attributes, facts
from enrich.quality.flags import inspect
from enrich.quality.vocabulary import Vocabulary, base_vocabulary

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
    attributes: Annotated[list[Attribute], BeforeValidator(attribute_list)] = Field(
        default_factory=list,
        description="Columns stated in both models' prompts under the title, as in `run`. Default: the ones the "
        "model was trained with (its enrich.json); COLUMN=Label maps another column to one of them.",
    )
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
    overwrite: bool = Field(
        False, description="Replace files in the report directory that an earlier eval did not write."
    )
    references: Literal["as-is", "faithful", "both"] = Field(
        "as-is",
        description="What ROUGE-L, chrF and BLEU score against: the real descriptions as they are, the same cut to "
        "the sentences their title and attributes support (reported as faithful_rouge_l etc.), or both.",
    )


def _resolve(role: str, ref: str) -> ModelSpec:
    """A model reference resolved before anything is generated: a bad baseline must not cost the model's run."""
    from enrich.model.reference import resolve_model

    try:
        return resolve_model(ref)
    except ConfigError as err:
        if role == "model":
            raise
        raise ConfigError(f"baseline: {err} (pass --baseline REF, or --no-baseline)") from None


def _rows(
    config: EvalConfig, spec: ModelSpec, on_event: Event
) -> tuple[dict[str, list[Any]], tuple[tuple[str, str], ...]]:
    """The sampled rows' ids, titles, descriptions and stated attributes ([(label, value)] per row), and the
    (column, label) pairs of the attributes."""
    from enrich.model.attributes import prompted_attributes
    from enrich.model.traindata import read_titles_and_descriptions

    source = Source.of(config.data, config.format, config.separator, config.columns, format_option="--format")
    attributes = prompted_attributes(config.attributes, spec, source, source.names(), on_event)
    data = read_titles_and_descriptions(source.with_attributes(attributes), with_id=True)
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
    return out, attributes


def generate_for(
    config: EvalConfig,
    ref: str,
    titles: list[str],
    on_event: Event = no_events,
    attributes: Sequence[Attributes] = (),
    vocabulary: Vocabulary | None = None,
) -> dict[str, Any]:
    """One model's cleaned generations, finish reasons, flags, unsupported claims and token counts for the
    titles, each prompted with its row's (label, value) attributes where given, as runs prompt
    (model.prompts.product_block). The checks take the title and attributes as the facts, never the real
    description: that is what the model is asked to predict."""
    from enrich.model.engines import (
        check_sampling,
        make_engine,
        pick_engine,
        resolve_sampling,
        special_tokens,
    )
    from enrich.model.prompts import build_prompts, clean_output, get_template, product_block
    from enrich.model.reference import resolve_model

    spec = resolve_model(ref)
    try:
        template = get_template(config.template or spec.template)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    sampling = resolve_sampling(config.sampling, spec)
    blocks = [product_block(t, a) for t, a in zip(titles, attributes, strict=True)] if attributes else titles
    engine_name = pick_engine(config.model.engine)
    check_sampling(engine_name, sampling)
    engine = make_engine(engine_name, spec, config.model, config.batch_size or 16)
    try:
        tok = engine.tokenizer
        if template.prompt is None and not getattr(tok, "chat_template", None):
            raise ConfigError(f"model {ref!r} has no chat template; use --template alpaca")
        prompts = build_prompts(
            blocks, template, getattr(tok, "apply_chat_template", None), special_tokens(tok)
        )
        on_event("info", {"message": f"generating {len(prompts)} rows with {spec.name} ({engine.name})"})
        t0 = time.perf_counter()
        gens = engine.generate(prompts, sampling)
        seconds = time.perf_counter() - t0
    finally:
        engine.close()
    stop = spec.stop_strings()
    texts = [clean_output(g.text, stop) for g in gens]
    stated, vocabulary = attributes or [()] * len(titles), vocabulary or base_vocabulary()
    found = [
        inspect(t, g.finish_reason, facts(title, a), template.markers, vocabulary)
        for t, g, title, a in zip(texts, gens, titles, stated, strict=True)
    ]
    return {
        "ref": ref,
        "name": spec.name,
        "template": template.name,
        "sampling": sampling.reported(),
        "engine": engine.name,
        "texts": texts,
        "finish": [g.finish_reason for g in gens],
        "flags": [i.flags for i in found],
        "claims": [i.claims for i in found],
        "output_tokens": [g.output_tokens for g in gens],
        "seconds": round(seconds, 1),
    }


def _vocabulary(spec: ModelSpec) -> Vocabulary:
    """What counts as a claim, for the model and the baseline alike: the packaged word lists with the terms the
    model learned from its catalog (claims.json beside its enrich.json), else the packaged lists."""
    learned = spec.claims_vocabulary()
    return Vocabulary.from_json(learned) if learned else base_vocabulary()


def _scores(
    gen: dict[str, Any],
    refs: list[str],
    cut: list[str] | None,
    mode: str,
    attributes: list[Attributes],
    labels: list[str],
) -> dict[str, Any]:
    """One model's text metrics against the real descriptions (as they are, cut to what their facts support
    as faithful_*, or both: mode) and its faithfulness to the rows' facts."""
    from enrich.evaluation import metrics
    from enrich.evaluation.faithfulness import faithfulness

    texts = gen["texts"]
    scores = metrics.score(texts, refs, gen["finish"], gen["flags"], gen["output_tokens"], mode != "faithful")
    if cut is not None:
        # A reference cut to nothing is left out: any text scores 0 against it, so it says nothing of the model.
        kept = [i for i, ref in enumerate(cut) if ref]
        if kept:
            against = metrics.text_metrics([texts[i] for i in kept], [cut[i] for i in kept])
            scores |= {f"faithful_{k}": v for k, v in against.items()}
    return {**scores, **faithfulness(texts, gen["claims"], gen["flags"], attributes, labels)}


def _faithful_references(
    config: EvalConfig,
    refs: list[str],
    titles: list[str],
    attributes: list[Attributes],
    vocabulary: Vocabulary,
) -> tuple[list[str] | None, dict[str, Any]]:
    """The real descriptions cut to what each row's title and attributes support (None with --references
    as-is), and the report's account of the cut."""
    from enrich.evaluation.faithfulness import faithful_references

    if config.references == "as-is":
        return None, {"references": "as-is"}
    cut = faithful_references(refs, titles, attributes, vocabulary)
    rows_cut = sum(1 for c, r in zip(cut, refs, strict=True) if c != r)
    empty = sum(1 for c in cut if not c)
    return cut, {"references": config.references, "faithful_references": {"cut": rows_cut, "empty": empty}}


def evaluate(config: EvalConfig, out_dir: Path, on_event: Event = no_events) -> dict[str, Any]:
    """Generate for held-out rows with the model (and baseline), score both, write report, plot and summary."""
    from enrich.evaluation.report import check_out_dir, write_outputs
    from enrich.model.engines import resolve_sampling

    check_out_dir(Path(out_dir), config.overwrite)

    refs_by_role = {"model": config.model.ref, "baseline": config.baseline}
    specs = {role: _resolve(role, ref) for role, ref in refs_by_role.items() if ref is not None}
    rows, attributes = _rows(config, specs["model"], on_event)
    refs = [c.strip() for c in rows["content"]]
    titles = [t.strip() for t in rows["title"]]
    labels = [label for _, label in attributes]
    vocabulary = _vocabulary(specs["model"])
    cut, about_refs = _faithful_references(config, refs, titles, rows["attributes"], vocabulary)
    if cut is not None:
        rows["faithful_reference"] = cut
    # The baseline decodes as the model does (the model's own settings fill what the command left unset): a
    # comparison of two models, not of two presets' token limits and penalties.
    s = resolve_sampling(config.sampling, specs["model"])
    alike = SamplingConfig(
        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
        repetition_penalty=s.repetition_penalty, penalty_scope=s.penalty_scope, seed=s.seed,
    )  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for role, ref in refs_by_role.items():
        if ref is None:
            continue
        # The baseline is prompted with the model's attributes: both are given the same facts of each product.
        stated = rows["attributes"] if attributes else ()
        gen = generate_for(
            config.model_copy(update={"sampling": alike}), ref, titles, on_event, stated, vocabulary
        )
        results[role] = {
            **{k: gen[k] for k in ("ref", "name", "template", "sampling", "engine", "seconds")},
            **_scores(gen, refs, cut, config.references, rows["attributes"], labels),
        }
        results[role]["_gen"] = gen
    report = {
        "data": str(Path(config.data).resolve()),
        "rows": len(titles),
        "seed": config.seed,
        "attributes": [{"column": column, "label": label} for column, label in attributes],
        **about_refs,
        "models": {role: {k: v for k, v in r.items() if k != "_gen"} for role, r in results.items()},
    }
    write_outputs(Path(out_dir), report, rows, refs, {role: r["_gen"] for role, r in results.items()})
    return report
