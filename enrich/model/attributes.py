"""Which attribute columns a model is prompted with: one rule for `run`, dry runs and `eval`."""

from __future__ import annotations

from enrich.catalog.source import Source
from enrich.config import Attribute
from enrich.errors import ConfigError
from enrich.events import Event, no_events
from enrich.model.reference import MODEL_PRESETS, ModelSpec

Pairs = tuple[tuple[str, str], ...]


def prompted_attributes(
    given: list[Attribute], spec: ModelSpec, source: Source, names: list[str], on_event: Event = no_events
) -> Pairs:
    """The (column, label) pairs the model is prompted with: those it was trained with (its enrich.json), each
    from its column or from the column --attr COLUMN=Label maps to its label; else those given. A model
    prompted without the facts it learned to read would write from the title alone what it was taught to take
    from them, so a missing one is refused, naming the option that maps it."""
    trained = [(str(a["column"]), str(a["label"])) for a in spec.info.get("attributes") or []]
    chosen = [(a.column, a.text_label()) for a in given]
    if trained:
        labels = [label for _, label in trained]
        other = [label for _, label in chosen if label not in labels]
        if other:
            raise ConfigError(
                f"--attr: model {spec.ref!r} was trained with the attributes {', '.join(labels)}, not {other[0]!r}; "
                "map your columns to those labels (--attr COLUMN=Label)"
            )
        by_label = {label: column for column, label in chosen}
        chosen = [(by_label.get(label, column), label) for column, label in trained]
    elif chosen and "attributes" in spec.info:
        on_event(
            "warning", {"message": f"model {spec.ref!r} was trained without attributes; --attr adds them"}
        )
    for column, label in chosen:
        if column not in names:
            how = "that the model was trained with" if trained else "given"
            raise ConfigError(
                f"{source.path}: no column {column!r} for the attribute {label!r} {how}; map one with "
                f"--attr COLUMN={label}{_or_base(spec)}"
            )
    return tuple(chosen)


def default_for(
    spec: ModelSpec, given: list[Attribute], source: Source, names: list[str], on_event: Event
) -> str | None:
    """Where the default model (a base with the adapter enrich ships, trained with attributes) cannot be prompted
    as it was trained (prompted_attributes refuses the input), the base it was trained on, said in a warning: a
    catalog without those columns still gets descriptions; a model the user names is refused instead."""
    preset = MODEL_PRESETS.get(spec.ref)
    if preset is None or preset.adapter is None:
        return None
    try:
        prompted_attributes(given, spec, source, names)
        return None
    except ConfigError:
        pass
    base = str(spec.info.get("base"))
    labels = ", ".join(str(a["label"]) for a in spec.info.get("attributes") or [])
    on_event(
        "warning",
        {
            "message": f"{source.path}: the default model {spec.ref} states {labels} under each title, and the input has "
            f"no column for them: using {base}, the base model, prompted with the title alone (map columns with "
            f"--attr COLUMN=Label, or choose a model with --model)"
        },
    )
    return base


def _or_base(spec: ModelSpec) -> str:
    """For a preset that is a base with a shipped adapter (the CPU default): the base, which needs no attribute."""
    preset = MODEL_PRESETS.get(spec.ref)
    if preset is None or preset.adapter is None:
        return ""
    return f", or use --model {spec.info.get('base')} (the base model, prompted with the title alone)"
