"""Incremental runs: rows whose content key is unchanged are copied from the previous output, not generated.

The previous output is never loaded whole: a pre-pass writes the input's keys to Parquet, polars joins them
with the previous output's key and result columns into a per-row 'reuse' file in the state folder, and the
run reads that file window by window, in step with the input. The reuse file lives in the state's parts/
folder, so it is removed with the parts when the run completes and rebuilt after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.catalog import source
from enrich.config import OutputConfig
from enrich.errors import ConfigError, InputError
from enrich.files import write_json
from enrich.run.state import RunState, sha256_file
from enrich.run.windows import Windows

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


def _keys(plan: Plan, lf: Any) -> Iterator[list[str]]:
    """Every input row's content key, computed as prepare_window + finish_window do (apply() re-checks it)."""
    from enrich.run.process import row_key

    job = plan.job
    cols = job.input.columns
    pol = job.policies
    needed = [c for c in (cols.id, cols.title) if c]
    start = 0
    for columns in source.iter_window_lists(lf, needed, plan.windows, job.input.path, job.run.limit):
        titles = columns[cols.title]
        ids = columns[cols.id] if cols.id else [None] * len(titles)
        keys = []
        for off, (raw_id, raw_title) in enumerate(zip(ids, titles, strict=True)):
            rid = str(raw_id) if raw_id is not None else (None if cols.id else str(start + off))
            title = raw_title.strip() if isinstance(raw_title, str) else ""
            if len(title) > pol.max_title_chars and pol.long_title == "truncate":
                title = title[: pol.max_title_chars]
            keys.append(row_key(plan.context_key, rid, title))
        start += len(titles)
        yield keys


@dataclass(frozen=True)
class Previous:
    """How the previous output was written: its column names and (for CSV) its separator."""

    names: dict[str, str]
    separator: str

    def note(self) -> dict[str, Any]:
        """For the manifest of an unfinished incremental run, which replaces the finished run's."""
        return {NAMES_NOTE: self.names, SEPARATOR_NOTE: self.separator}


def previous_output(plan: Plan, manifest: dict[str, Any]) -> Previous:
    """How the previous output was written: as its finished run recorded (a job may rename a column or change the
    separator between two incremental runs), or as an interrupted incremental run noted, else as this run writes."""
    this = Previous(plan.job.output.names(), plan.job.output_separator())
    if not manifest.get("complete") and isinstance(manifest.get(NAMES_NOTE), dict):
        return Previous(dict(manifest[NAMES_NOTE]), str(manifest.get(SEPARATOR_NOTE, this.separator)))
    details = manifest.get("details", {}) if manifest.get("complete") else {}
    if "generated_column" not in details:
        return this
    renamed = OutputConfig(
        path=plan.job.output.path,
        generated_column=details["generated_column"],
        columns=details.get("output_columns", {}),
    )
    separators = details.get("separators")  # recorded only where they were not commas
    return Previous(renamed.names(), separators[1] if separators else ",")


def prepare(
    plan: Plan,
    lf: Any,
    state: RunState,
    total: int,
    pending: list[int],
    on_event: Event,
    written: Previous,
) -> Path | None:
    """Build (or, on resume, reuse) the reuse file for this run; None when there is nothing to copy from.
    written: how the previous output was written (previous_output)."""
    previous = plan.output
    if not pending:
        return None
    if not previous.is_file():
        on_event(
            "info", {"message": f"incremental: no previous output at {previous}; every row is generated"}
        )
        return None
    reuse = state.parts_dir / REUSE
    meta_path = state.parts_dir / REUSE_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if (
            meta["fingerprint"] == state.fingerprint
            and meta["rows"] == total
            and sha256_file(reuse) == meta["sha256"]
        ):
            return reuse
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or altered: rebuilt below; its content is derived, so rebuilding is always safe
    state.parts_dir.mkdir(parents=True, exist_ok=True)
    keys = state.parts_dir / "keys.parquet"
    rows = source.write_keys(keys, _keys(plan, lf))
    if rows != total:
        raise InputError(f"{plan.job.input.path}: the input changed while it was read; run again")
    try:
        matched = source.build_reuse(
            keys, previous, plan.output_format, written.names, reuse, written.separator
        )
    except ConfigError:
        if not plan.job.output.overwrite:
            raise
        on_event(
            "warning", {"message": f"{previous} is not an enrich output; --overwrite: every row is generated"}
        )
        return None
    finally:
        keys.unlink(missing_ok=True)
    meta = {
        "fingerprint": state.fingerprint,
        "rows": total,
        "sha256": sha256_file(reuse),
        "matched": matched,
    }
    write_json(meta_path, meta)
    on_event(
        "info",
        {
            "message": f"incremental: {matched} of {total} rows unchanged since {previous}; {total - matched} to generate"
        },
    )
    return reuse


def windows(reuse: Path | None, cut: Windows) -> Iterator[dict[str, list[Any]] | None]:
    """The reuse file's windows, or None forever when there is none."""
    if reuse is None:
        while True:
            yield None
    yield from source.iter_reuse(reuse, cut)


def apply(window: Window, old: dict[str, list[Any]] | None, context_key: str) -> None:
    """Take rows with an unchanged key off the engine's list; their old results wait in window.reused."""
    if old is None:
        return
    from enrich.run.process import row_key

    for off in list(window.prompts):
        if not old["__hit"][off]:
            continue
        # The key is recomputed from the normalized row: a copy is never made on a mismatched key.
        if row_key(context_key, window.ids[off], window.titles[off]) != old["enrich_key"][off]:
            continue
        window.reused[off] = {
            "generated_description": old["generated_description"][off],
            "enrich_status": old["enrich_status"][off],
            "enrich_finish_reason": old["enrich_finish_reason"][off],
            "enrich_flags": list(old["enrich_flags"][off] or []),
            "enrich_output_tokens": old["enrich_output_tokens"][off],
        }
        window.status[off] = "copied"  # finish_window counts it as copied and asks nothing of the engine
        del window.prompts[off]


def merge(window: Window, part: dict[str, list[Any]], stats: dict[str, Any]) -> None:
    """Put the copied rows' old results into the window's part and count them as ok or flagged."""
    for off, old in window.reused.items():
        for column, value in old.items():
            part[column][off] = value
        stats["counts"][old["enrich_status"]] += 1
        for flag in old["enrich_flags"]:
            stats["flags"][flag] = stats["flags"].get(flag, 0) + 1


def restart(plan: Plan, manifest: dict[str, Any], on_event: Event) -> bool:
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
