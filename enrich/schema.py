"""Generate the JSON Schemas in schemas/ from the pydantic models: `python -m enrich.schema` (or `just schema`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from enrich.config import JobConfig
from enrich.contracts import ErrorRecord, OutputRow, RunReport

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "job.schema.json": (
        JobConfig,
        "enrich job file (TOML): everything of a run; `enrich jobs validate` checks it.",
    ),
    "report.schema.json": (
        RunReport,
        "enrich run report (OUTPUT.report.json, and one per run in run.history_dir).",
    ),
    "error.schema.json": (ErrorRecord, "enrich error record: one line of OUTPUT.errors.jsonl."),
    "output.schema.json": (
        OutputRow,
        "enrich output row: one row of OUTPUT (Parquet or CSV) as JSON; the input's columns pass through.",
    ),
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "schemas"


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file contract, by its file name in schemas/."""
    model, description = SCHEMAS[name]
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://enrich.invalid/schemas/{name}",  # stable id; editors resolve the file by path
        **model.model_json_schema(mode="validation"),
    }
    schema["description"] = description
    return schema


def render(name: str) -> str:
    """The schema as the committed text: 2-space JSON, one trailing newline, so diffs stay small."""
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema into directory; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in SCHEMAS:
        path = directory / name
        text = render(name)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Entry point: write the schemas into the folder given (default: the repository's schemas/)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0].startswith("-"):
        print("usage: python -m enrich.schema [DIRECTORY]  (default: the repository's schemas/)")
        return 0 if args[0] in ("-h", "--help") else 2
    directory = Path(args[0]) if args else DEFAULT_DIR
    for path in write_all(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
