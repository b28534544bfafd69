"""The page of an eval: eval.html beside eval_report.json, with the metrics table and each held-out row's
real description beside every model's text, the rows where the models differ most first."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from enrich.errors import InputError
from enrich.files import read_json_object
from enrich.review.page import KNOWN_FLAGS
from enrich.review.render import cut, write_page

# Metrics in this order, then whatever other numbers a report's models hold, by name.
KNOWN_METRICS = {
    "rouge_l": "ROUGE-L F1",
    "chrf": "chrF",
    "bleu": "BLEU",
    "faithful_rouge_l": "ROUGE-L F1, faithful references",
    "faithful_chrf": "chrF, faithful references",
    "faithful_bleu": "BLEU, faithful references",
    "length_ratio": "length ratio (generated / real chars)",
    "mean_chars": "mean characters",
    "mean_output_tokens": "mean output tokens",
    "eos_rate": "ends by EOS",
    "flag_rates": "flag rate",
    "unsupported_claim_rate": "rows with an unsupported claim",
    "claim_rates": "unsupported claim",
    "wrong_type_rate": "wrong type",
    "off_topic_rate": "off topic",
    "attribute_coverage": "attribute coverage",
    "attribute_coverage_by_label": "attribute coverage",
}
_SKIP = {"rows", "seconds", "seed"}  # numbers of a model that are not metrics of its text
_WORD = re.compile(r"\w+")


def write_eval_page(eval_dir: Path, overwrite: bool = False) -> Path:
    """Write eval_dir/eval.html from eval_report.json and generations.jsonl; return its path. An eval.html that
    enrich did not write is replaced only with overwrite."""
    report = _read_json(eval_dir / "eval_report.json")
    models = report.get("models")
    if not isinstance(models, dict) or not models:
        raise InputError(f"{eval_dir / 'eval_report.json'}: no models in the report")
    roles = list(models)
    rows = _rows(eval_dir / "generations.jsonl", roles)
    rows.sort(key=lambda r: (-r["diff"], r["row"]))
    seen_flags = Counter(f for r in rows for role in roles for f in r["roles"][role]["flags"])
    flags = [f for f in KNOWN_FLAGS if seen_flags[f]] + sorted(f for f in seen_flags if f not in KNOWN_FLAGS)
    data = {
        "kind": "eval",
        "roles": [[role, str(models[role].get("name", role))] for role in roles],
        "flags": flags,
        "rows": rows,
    }
    return write_page(
        "eval.html.j2",
        eval_dir / "eval.html",
        data,
        overwrite,
        eval_dir=str(eval_dir),
        report=report,
        roles=[(role, models[role]) for role in roles],
        metrics=metric_rows(models),
        attributes=_attribute_names(report.get("attributes")),
    )


def _attribute_names(value: Any) -> str:
    """The report's attributes as the page names them: each label, with its column where the two differ."""
    names = []
    for a in value if isinstance(value, list) else []:
        if isinstance(a, dict) and a.get("label"):
            label, column = str(a["label"]), str(a.get("column") or a["label"])
            names.append(label if column == label else f"{label} ({column})")
    return ", ".join(names)


def metric_rows(models: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(label, one cell per model) for every numeric metric any model holds, nested tables flattened
    ('flag_rates' gives a row per flag); rates as percentages."""
    paths: dict[tuple[str, ...], None] = {}
    for m in models.values():
        for path in _numeric_paths(m):
            paths[path] = None
    order = list(KNOWN_METRICS)
    ranked = sorted(paths, key=lambda p: (order.index(p[0]) if p[0] in order else len(order), p[0]))
    out = []
    for path in ranked:
        label = KNOWN_METRICS.get(path[0], path[0].replace("_", " "))
        label = ": ".join([label, *path[1:]])
        out.append((label, [_cell(_get(m, path), path) for m in models.values()]))
    return out


def _numeric_paths(value: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, v in value.items():
        if not prefix and (key in _SKIP or key == "sampling"):
            continue
        if isinstance(v, dict):
            paths += _numeric_paths(v, (*prefix, key))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            paths.append((*prefix, key))
    return paths


def _get(m: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        m = m.get(key) if isinstance(m, dict) else None  # type: ignore[assignment]
    return m


def _cell(value: Any, path: tuple[str, ...]) -> str:
    if value is None:
        return "–"
    if any("rate" in p or "coverage" in p for p in path):
        return f"{value:.1%}"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def overlap(text: str | None, reference: str | None) -> float:
    """Word-overlap F1 of a text against the reference: a cheap per-row stand-in for ROUGE-L."""
    said = Counter(_WORD.findall((text or "").lower()))
    real = Counter(_WORD.findall((reference or "").lower()))
    common = sum((said & real).values())
    if not common:
        return 0.0
    precision, recall = common / sum(said.values()), common / sum(real.values())
    return 2 * precision * recall / (precision + recall)


def _rows(path: Path, roles: list[str]) -> list[dict[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    rows.append(_row(json.loads(line), roles, f"{path} line {number}"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (enrich eval writes it beside eval_report.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not the generations of enrich eval ({err})") from None
    return rows


def _row(line: dict[str, Any], roles: list[str], where: str) -> dict[str, Any]:
    reference = line.get("reference")
    per_role = {}
    for role in roles:
        g = line.get(role)
        if not isinstance(g, dict):
            raise InputError(f"{where}: no generation of {role!r}")
        per_role[role] = {
            "text": cut(g.get("text")),
            "finish": g.get("finish"),
            "flags": list(g.get("flags") or []),
            "unsupported": list(g.get("unsupported") or []),
            "score": round(overlap(g.get("text"), reference), 4),
        }
    return {
        "row": line.get("row"),
        "id": line.get("id"),
        "title": cut(line.get("title")),
        "attrs": _attributes(line.get("attributes")),
        "reference": cut(reference),
        "roles": per_role,
        "diff": _difference(list(per_role.values())),
    }


def _difference(gens: list[dict[str, Any]]) -> float:
    """How far apart two models' texts on a row are: the gap in word overlap with the reference, plus a
    quarter for each flag one has and the other has not."""
    if len(gens) < 2:
        return 0.0
    a, b = gens[0], gens[1]
    gap = abs(float(a["score"]) - float(b["score"]))
    return round(gap + 0.25 * len(set(a["flags"]) ^ set(b["flags"])), 4)


def _attributes(value: Any) -> list[list[str]]:
    """A row's attributes as [label, value] pairs, from a {label: value} table or a list of pairs or of
    {label, value} objects."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [
            (a.get("label") or a.get("column"), a.get("value")) if isinstance(a, dict) else tuple(a)
            for a in value
        ]
    else:
        return []
    return [[str(k), str(v)] for k, v in items if v is not None]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path, "an eval report", InputError)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file: give the folder that enrich eval wrote") from None
