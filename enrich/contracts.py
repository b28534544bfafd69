"""The file contracts: what an output row, the error file and the run report hold (schemas/ is generated from
these), and the file formats enrich tells by suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["read", "validate", "prompt", "generate", "postprocess"]
Flag = Literal[
    "truncated",
    "empty",
    "repetition",
    "template_leak",
    "unsupported_claims",
    "wrong_type",
    "off_topic",
    "title_only",
]
# The kinds of claim the checker finds unsupported (enrich.quality.claims), as the report counts them.
ClaimKind = Literal["number", "colour", "material", "group", "brand", "detail"]
OUTPUT_COLUMNS = (
    "generated_description",
    "enrich_status",
    "enrich_finish_reason",
    "enrich_flags",
    "enrich_unsupported",
    "enrich_output_tokens",
    "enrich_key",
)

# File formats by suffix: catalogs and outputs (Parquet or CSV), and the error file (JSON lines or Parquet).
FORMAT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".txt": "csv"}
PARQUET_SUFFIXES = tuple(s for s, f in FORMAT_SUFFIXES.items() if f == "parquet")
ERROR_FILE_SUFFIXES = (".jsonl", *PARQUET_SUFFIXES)


def is_parquet(path: str | Path) -> bool:
    """Parquet by the file's suffix, in any case."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


class FrozenModel(BaseModel):
    """A model of a file or a config table: immutable, and an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorRecord(FrozenModel):
    """One row that did not make it: a line of the error file."""

    id: str | None = Field(description="The row's id, where it has one.")
    row: int = Field(ge=0, description="0-based position of the row in the input.")
    stage: Stage = Field(description="Where it failed.")
    reason: str = Field(description="What went wrong and what to do.")
    value: str | None = Field(description="The offending value, cut to 200 characters.")


class OutputRow(BaseModel):
    """One row of OUTPUT: the input's columns, unchanged and in input order, then the generated columns
    (under these names unless output.generated_column or output.columns gives others)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    generated_description: str | None = Field(
        description="The generated text (named by output.generated_column); null where the row failed or "
        "was skipped (the error file says why)."
    )
    enrich_status: Literal["ok", "flagged", "error", "skipped", "kept", "regenerated"] = Field(
        description="ok; flagged (a quality flag whose policy is flag); error (in the error file); skipped (by "
        "policy); kept (the existing description, left as it was: output.only_missing); regenerated (flagged, "
        "generated again, and a candidate passed every check)."
    )
    enrich_finish_reason: Literal["stop", "length"] | None = Field(
        description="stop: ended by EOS or a stop string; length: cut at max_new_tokens; null: not generated."
    )
    enrich_flags: list[Flag] = Field(description="Quality flags of the generated text (CSV: joined by ';').")
    enrich_unsupported: list[str] = Field(
        description="The unsupported claims of the generated text, as it writes them (CSV: joined by ';')."
    )
    enrich_output_tokens: int | None = Field(ge=0, description="Tokens generated; null: not generated.")
    enrich_key: str = Field(
        description="Content key: the same id, title, model, template and sampling give the same key "
        "(incremental runs copy rows whose key is unchanged)."
    )


class Counts(FrozenModel):
    rows: int = 0
    ok: int = 0
    flagged: int = 0
    error: int = 0
    skipped: int = 0
    kept: int = Field(0, description="Rows whose existing description was kept (output.only_missing).")
    regenerated: int = Field(
        0, description="Flagged rows generated again whose candidate passed every check."
    )
    generated: int = 0
    copied: int = 0


# The counts a window adds to the report (every field of Counts but the run's rows).
COUNT_KEYS = tuple(k for k in Counts.model_fields if k != "rows")


class Tokens(FrozenModel):
    input: int = 0
    output: int = 0


class Seconds(FrozenModel):
    read: float = 0.0
    prompt: float = 0.0
    generate: float = 0.0
    postprocess: float = 0.0
    write: float = Field(0.0, description="Part files and the final assembly of the output.")
    total: float = 0.0


class RunReport(FrozenModel):
    """The run report written beside the output (OUTPUT.report.json)."""

    status: Literal["ok", "partial", "interrupted", "failed"]
    exit_code: int = Field(
        description="The process's exit code (DESIGN.md): 0 ok, 6 partial, 130 interrupted..."
    )
    error: str | None = Field(None, description="Why the run did not finish (failed or interrupted runs).")
    started: str = Field(description="ISO 8601 UTC.")
    finished: str = Field(description="ISO 8601 UTC.")
    input: str
    output: str
    errors_file: str
    fingerprint: str
    resumed: bool = Field(description="True when this invocation continued an earlier one.")
    model: dict[str, str] = Field(description="ref, name, engine, template.")
    columns: dict[str, str | None] = Field(
        default_factory=dict, description="The input columns of each role: id, title, content (null: none)."
    )
    attributes: list[dict[str, str]] = Field(
        default_factory=list, description="The attributes the prompts stated: column and label each."
    )
    output_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Each generated column's standard name and the name it was written under.",
    )
    versions: dict[str, str]
    sampling: dict[str, float | int | str]
    counts: Counts
    tokens: Tokens
    seconds: Seconds
    flags: dict[str, int] = Field(description="Rows carrying each quality flag.")
    claims: dict[ClaimKind, int] = Field(
        default_factory=dict, description="Rows with an unsupported claim of each kind."
    )
    rows_per_s: float
    output_tokens_per_s: float
    workers: list[dict[str, Any]] | None = Field(
        None, description="Ray runs: per worker (actor process) its windows, rows, busy seconds and rows/s."
    )
    regeneration: dict[str, int] | None = Field(
        None,
        description="With a regenerate policy: rows generated again, rescued (a candidate passed), still flagged, "
        "and the candidates' output tokens.",
    )
    decisions: dict[str, Any] | None = Field(
        None,
        description="A reviewer's decisions applied (run.decisions): the file, the seed its rejected rows were "
        "generated again with, and how many rows were approved, rejected, and stale (their row changed since).",
    )
    advice: list[str] = Field(
        default_factory=list,
        description="What to change where a quality flag marks most of the generated rows (the cause, the remedy).",
    )
