"""The review page of a run: OUTPUT.review.html, one self-contained file to look at a run's rows, filter
them, and approve or reject them into a decisions file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from enrich.errors import ConfigError
from enrich.quality.flags import FLAGS
from enrich.review.render import cut, histogram, write_page
from enrich.review.source import ErrorSummary, Layout, layout, read_errors, read_report
from enrich.review.summary import LENGTH_BUCKET, Summary, summarize

# Shown in this order, then any others a newer run writes.
STATUSES = ("ok", "flagged", "error", "skipped", "kept", "regenerated")
# FLAGS, then the flag of outputs written before claims were checked beyond numbers.
KNOWN_FLAGS = (*FLAGS, "unsupported_numbers")
MAX_FLAGGED = 5000
SAMPLE = 1000


def write_review(
    output: Path,
    dest: Path | None = None,
    *,
    max_flagged: int = MAX_FLAGGED,
    sample: int = SAMPLE,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the review page of a run's OUTPUT (default OUTPUT.review.html) and return its path."""
    if max_flagged < 0 or sample < 0:
        raise ConfigError(f"max_flagged and sample are counts of rows, not {min(max_flagged, sample)}")
    report = read_report(output)
    shape = layout(output, report)
    summary = summarize(output, shape, max_flagged, sample, seed)
    errors = read_errors(output, report, {r["row"] for r in summary.chosen if r["status"] == "error"})
    rows = [_page_row(r, shape, errors) for r in summary.chosen]
    data = {
        "kind": "run",
        "storageKey": f"enrich.review:{output.resolve()}",
        "decisionsName": f"{output.name}.decisions.jsonl",
        "statuses": _ordered(STATUSES, Counter(r["status"] for r in rows)),
        "flags": _ordered(KNOWN_FLAGS, Counter(f for r in rows for f in r["flags"])),
        "rows": rows,
    }
    dest = dest or Path(f"{output}.review.html")
    context = _glance(output, report, summary, errors)
    return write_page("review.html.j2", dest, data, overwrite, note=_note(summary, seed), **context)


def _page_row(r: dict[str, Any], shape: Layout, errors: ErrorSummary) -> dict[str, Any]:
    attrs = [
        [label, r[f"attr{i}"]] for i, (_, label) in enumerate(shape.attributes) if r[f"attr{i}"] is not None
    ]
    return {
        "row": r["row"],
        "id": r["id"],
        "key": r["key"],
        "title": cut(r["title"]),
        "attrs": attrs,
        "content": cut(r["content"]),
        "text": cut(r["text"]),
        "chars": len(r["text"]) if r["text"] is not None else None,
        "tokens": r["tokens"],
        "status": r["status"],
        "finish": r["finish"],
        "flags": r["flags"],
        "unsupported": r["unsupported"],
        "error": errors.reasons.get(r["row"]),
    }


def _ordered(known: tuple[str, ...], counts: Counter[str]) -> list[list[Any]]:
    """[name, count] pairs: the known names that occur, in their order, then the others by count."""
    names = [n for n in known if counts[n]] + sorted(
        (n for n in counts if n not in known), key=lambda n: -counts[n]
    )
    return [[n, counts[n]] for n in names]


def _note(summary: Summary, seed: int) -> str:
    """What part of the run the rows on the page are: all of it, or capped and sampled."""
    shown_attention = summary.attention_shown
    shown_others = len(summary.chosen) - shown_attention
    if shown_attention == summary.attention and shown_others == summary.others:
        return f"All {summary.rows:,} rows are on this page."
    return (
        f"Showing {shown_attention:,} of {summary.attention:,} rows with a flag or an error and a random sample of "
        f"{shown_others:,} of {summary.others:,} other rows (seed {seed}); the figures above count every row."
    )


def _glance(output: Path, report: dict[str, Any], summary: Summary, errors: ErrorSummary) -> dict[str, Any]:
    """The run at a glance: everything above the rows, computed over every row of OUTPUT."""
    rows = max(summary.rows, 1)
    statuses = _ordered(STATUSES, summary.statuses)
    flags = _ordered(KNOWN_FLAGS, summary.flags)
    tokens_total = sum(n * c for n, c in summary.tokens.items())
    tokens_rows = sum(summary.tokens.values())
    return {
        "output": str(output),
        "output_name": output.name,
        "report": report,
        "model": {k: v for k, v in (report.get("model") or {}).items() if v is not None},
        "sampling": report.get("sampling") or {},
        "rows": summary.rows,
        "statuses": [(name, n, n / rows) for name, n in statuses],
        "flags": [(name, n, n / rows) for name, n in flags],
        "any_flag": summary.attention,
        "finish": _ordered(("stop", "length"), summary.finish),
        "tokens": {
            "total": tokens_total,
            "mean": tokens_total / tokens_rows if tokens_rows else None,
            "chart": histogram(summary.tokens, 1, "tokens"),
        },
        "lengths": {
            "mean": summary.generated_chars / summary.generated if summary.generated else None,
            "content_mean": summary.content_chars / summary.content_rows if summary.content_rows else None,
            "chart": histogram(summary.lengths, LENGTH_BUCKET, "chars"),
        },
        "unsupported": summary.unsupported.most_common(20),
        "unsupported_rows": summary.unsupported_rows,
        "errors": {
            "path": str(errors.path) if errors.path else None,
            "total": errors.total,
            "groups": [(stage, text, n) for (stage, text), n in errors.groups.most_common(12)],
            "other": errors.total - sum(n for _, n in errors.groups.most_common(12)),
        },
    }
