"""The decisions file that a review page saves: one JSON object per line, a reviewer's verdict on a row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enrich.errors import InputError


class Decision(BaseModel):
    """One line of a decisions file (OUTPUT.decisions.jsonl)."""

    # Strict: "12" is not a row and true is not an id; a hand-edited file fails here, not in the next run.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str | None = Field(description="The row's id, where the output has an id column.")
    row: int = Field(ge=0, description="0-based position of the row in the input (and in OUTPUT).")
    key: str | None = Field(description="The row's enrich_key when it was reviewed: its content key.")
    decision: Literal["approved", "rejected"] = Field(description="The reviewer's verdict.")
    note: str | None = Field(None, description="The reviewer's note, if any.")


def read_decisions(path: Path) -> list[Decision]:
    """Every decision in a decisions file, in file order; InputError names the file and line of a bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such decisions file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a decisions file (not UTF-8 text)") from None
    decisions: list[Decision] = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        decision = _parse(line, f"{path} line {number}")
        if decision.row in first_line:
            raise InputError(
                f"{path} line {number}: row {decision.row} was already decided on line {first_line[decision.row]}"
            )
        first_line[decision.row] = number
        decisions.append(decision)
    return decisions


def _parse(line: str, where: str) -> Decision:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        return Decision.model_validate(data)
    except ValidationError as err:
        raise InputError(f"{where}: {_problem(err)}") from None


def _problem(err: ValidationError) -> str:
    """pydantic's first complaint, in the words of the file's fields."""
    problem = err.errors()[0]
    field = ".".join(str(p) for p in problem["loc"]) or "(line)"
    if problem["type"] == "missing":
        return f"missing {field!r}"
    if problem["type"] == "extra_forbidden":
        return f"unknown field {field!r} (fields: id, row, key, decision, note)"
    return f"{field}: {problem['msg']}"


@dataclass(frozen=True)
class Decisions:
    """A decisions file as a run applies it: each decision by the content key of the row it was made on."""

    path: str
    by_key: dict[str, Decision]
    seed: (
        int  # from the file's content: the next review's file regenerates its rejected rows with other seeds
    )

    @classmethod
    def load(cls, path: Path) -> Decisions:
        data = path.read_bytes() if path.is_file() else b""
        decisions = read_decisions(path)
        return cls(
            str(path),
            {d.key: d for d in decisions if d.key},
            int.from_bytes(hashlib.sha256(data).digest()[:4], "big"),
        )

    def digest(self) -> str:
        """What a run's fingerprint holds of the file: its decisions and the seed they lead to."""
        text = json.dumps(sorted([k, d.decision] for k, d in self.by_key.items()))
        return hashlib.sha256(f"{text}{self.seed}".encode()).hexdigest()[:16]

    def on(self, key: str, row_id: str | None, row: int) -> Decision | None:
        """The decision made on this row (same content key, and same id, or same position without ids)."""
        found = self.by_key.get(key)
        if found is None:
            return None
        same_row = found.id == row_id if found.id is not None else found.row == row
        return found if same_row else None
