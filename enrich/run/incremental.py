"""Incremental runs: rows whose content key is unchanged are copied from the previous output, not generated.

The previous output is never loaded whole: the run's pre-pass writes the input's content keys to Parquet,
polars joins them with the previous output's key and result columns into a per-row 'reuse' file in the state
folder, and the run reads that file window by window, in step with the input. The reuse file lives in the
state's parts/ folder, so it is removed with the parts when the run completes and rebuilt after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from enrich.catalog.source import Source
from enrich.catalog.windows import Windows
from enrich.config import OutputConfig
from enrich.errors import ConfigError, InputError
from enrich.files import atomic_file, write_json
from enrich.run.output import OutputFile
from enrich.run.process import row_key
from enrich.run.state import RunState, sha256_file

if TYPE_CHECKING:
    from enrich.events import Event
    from enrich.run.plan import Plan
    from enrich.run.process import Window

REUSE = "reuse.parquet"
REUSE_META = "reuse.json"
# In the manifest of an unfinished incremental run: the names the previous output's results are under, and the
# separator it was written with.
NAMES_NOTE = "previous_output_names"
SEPARATOR_NOTE = "previous_output_separator"
# The previous output's columns an incremental run copies (standard names), besides the generated text.
REUSE_COLUMNS = (
    "enrich_key",
    "enrich_status",
    "enrich_finish_reason",
    "enrich_flags",
    "enrich_unsupported",
    "enrich_output_tokens",
)
# Columns that an output written by an earlier version of enrich lacks: read as empty.
_LATER = ("enrich_unsupported",)
_LIST_COLUMNS = ("enrich_flags", "enrich_unsupported")


def manifest_note(previous: OutputFile) -> dict[str, Any]:
    """For the manifest of an unfinished incremental run, which replaces the finished run's: how the previous
    output was written, so that a resume still reads it."""
    return {NAMES_NOTE: previous.names, SEPARATOR_NOTE: previous.separator}


def previous_output(plan: Plan, manifest: dict[str, Any]) -> OutputFile:
    """How the previous output was written: as its finished run recorded (a job may rename a column or change the
    separator between two incremental runs), or as an interrupted incremental run noted, else as this run writes."""
    this = plan.out
    if not manifest.get("complete") and isinstance(manifest.get(NAMES_NOTE), dict):
        separator = str(manifest.get(SEPARATOR_NOTE, this.separator))
        return OutputFile(this.path, this.format, separator, dict(manifest[NAMES_NOTE]))
    details = manifest.get("details", {}) if manifest.get("complete") else {}
    if "generated_column" not in details:
        return this
    renamed = OutputConfig(
        path=str(this.path),
        generated_column=details["generated_column"],
        columns=details.get("output_columns", {}),
    )
    separators = details.get("separators")  # recorded only where they were not commas
    return OutputFile(this.path, this.format, separators[1] if separators else ",", renamed.names())


def prepare_reuse(
    plan: Plan, state: RunState, keys: Path, rows: int, previous: OutputFile, on_event: Event
) -> Path | None:
    """Build (or, on resume, reuse) the reuse file from the input's content keys (the pre-pass wrote them to
    keys, rows of them); None when there is no previous output to copy from."""
    if not previous.path.is_file():
        on_event(
            "info", {"message": f"incremental: no previous output at {previous.path}; every row is generated"}
        )
        return None
    reuse = state.parts_dir / REUSE
    meta_path = state.parts_dir / REUSE_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if (
            meta["fingerprint"] == state.fingerprint
            and meta["rows"] == rows
            and sha256_file(reuse) == meta["sha256"]
        ):
            return reuse
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or altered: rebuilt below; its content is derived, so rebuilding is always safe
    state.parts_dir.mkdir(parents=True, exist_ok=True)
    try:
        matched = _join(keys, previous, reuse)
    except ConfigError:
        if not plan.job.output.overwrite:
            raise
        on_event(
            "warning",
            {"message": f"{previous.path} is not an enrich output; --overwrite: every row is generated"},
        )
        return None
    write_json(
        meta_path,
        {"fingerprint": state.fingerprint, "rows": rows, "sha256": sha256_file(reuse), "matched": matched},
    )
    on_event(
        "info",
        {
            "message": f"incremental: {matched} of {rows} rows unchanged since {previous.path}; {rows - matched} to generate"
        },
    )
    return reuse


def _join(keys: Path, previous: OutputFile, dest: Path) -> int:
    """Join the input's keys with the previous output's results (ok or flagged rows only) into dest, streaming.

    Memory: polars' streaming hash join holds the previous output's distinct keys and results, never the input;
    nothing is loaded into Python. Returns how many input rows found their key in the previous output.
    """
    try:
        prev = previous.as_source().scan()
        present = prev.collect_schema().names()
        standard = [
            c
            for c in ("generated_description", *REUSE_COLUMNS)
            if c not in _LATER or previous.names.get(c, c) in present
        ]
        wanted = [previous.names.get(c, c) for c in standard]
        missing = [c for c in wanted if c not in present]
        if missing:
            raise ConfigError(
                f"{previous.path}: not an output of enrich, or one written under other column names (no column "
                f"{missing[0]!r}), so an incremental run cannot reuse it; pass --overwrite to generate every row, "
                "or point -o elsewhere"
            )
        prev = prev.select(wanted).rename(dict(zip(wanted, standard, strict=True)))
        prev = prev.with_columns(pl.lit([], pl.List(pl.String)).alias(c) for c in _LATER if c not in standard)
        if previous.format == "csv":  # CSV holds text only: restore the list and integer columns
            prev = prev.with_columns(
                *(
                    pl.when(pl.col(c).is_null() | (pl.col(c) == ""))
                    .then(pl.lit([], pl.List(pl.String)))
                    .otherwise(pl.col(c).str.split(";"))
                    .alias(c)
                    for c in _LIST_COLUMNS
                    if c in standard
                ),
                pl.col("enrich_output_tokens").cast(pl.Int32, strict=False),
            )
        prev = prev.filter(
            pl.col("enrich_status").is_in(["ok", "flagged", "regenerated"])
            & pl.col("enrich_key").is_not_null()
        )
        prev = prev.unique(
            "enrich_key", keep="any"
        )  # the same content twice (duplicate ids kept): one result
        joined = pl.scan_parquet(keys).join(prev, on="enrich_key", how="left", maintain_order="left")
        joined = joined.with_columns(pl.col("enrich_status").is_not_null().alias("__hit"))
        with atomic_file(dest) as f:
            joined.sink_parquet(f, compression="zstd", engine="streaming")
        return int(pl.scan_parquet(dest).select(pl.col("__hit").sum()).collect().item() or 0)
    except pl.exceptions.PolarsError as err:
        raise InputError(
            f"{previous.path}: the previous output cannot be read ({str(err).strip().splitlines()[0][:200]}); "
            "delete it, or pass --overwrite to generate every row"
        ) from None


def reuse_windows(reuse: Path | None, cut: Windows) -> Iterator[dict[str, list[Any]] | None]:
    """The reuse file's windows, in step with the input's, or None forever when there is none."""
    if reuse is None:
        while True:
            yield None
    columns = ["__hit", "generated_description", *REUSE_COLUMNS]
    yield from Source(str(reuse), "parquet").window_lists(columns, cut)


def take_unchanged(window: Window, old: dict[str, list[Any]] | None, context_key: str) -> None:
    """Take rows with an unchanged key off the engine's list; their old results wait in window.reused."""
    if old is None:
        return
    for off in list(window.prompts):
        if (
            not old["__hit"][off] or window.decided.get(off) == "rejected"
        ):  # a reviewer asked for another text
            continue
        # The key is recomputed from the normalized row: a copy is never made on a mismatched key.
        if row_key(context_key, window.ids[off], window.block(off)) != old["enrich_key"][off]:
            continue
        window.reused[off] = {
            "generated_description": old["generated_description"][off],
            "enrich_status": old["enrich_status"][off],
            "enrich_finish_reason": old["enrich_finish_reason"][off],
            "enrich_flags": list(old["enrich_flags"][off] or []),
            "enrich_unsupported": list(old["enrich_unsupported"][off] or []),
            "enrich_output_tokens": old["enrich_output_tokens"][off],
        }
        window.status[off] = "copied"  # finish() counts it as copied and asks nothing of the engine
        del window.prompts[off]


def merge_copied(window: Window, part: dict[str, list[Any]], stats: dict[str, Any]) -> None:
    """Put the copied rows' old results into the window's part and count them as ok or flagged."""
    for off, old in window.reused.items():
        for column, value in old.items():
            part[column][off] = value
        stats["counts"][old["enrich_status"]] += 1
        for flag in old["enrich_flags"]:
            stats["flags"][flag] = stats["flags"].get(flag, 0) + 1


def discard_other_run(plan: Plan, manifest: dict[str, Any], on_event: Event) -> bool:
    """In incremental mode an unfinished state made from other input is dropped, not an error.

    The previous output still holds every result worth copying, and a changed input is what incremental runs
    are for: refusing would stop an hourly job until someone came to pass --restart.
    """
    if not plan.job.run.incremental or not manifest or manifest.get("fingerprint") == plan.fingerprint:
        return False
    on_event(
        "warning", {"message": f"{plan.state_dir}: an unfinished run on other input or settings is discarded"}
    )
    return True
