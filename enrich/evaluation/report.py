"""What `enrich eval` writes: eval_report.json, generations.jsonl, eval.png and summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enrich.errors import ConfigError
from enrich.evaluation.faithfulness import KINDS
from enrich.files import is_enrich_page, is_eval_report
from enrich.quality.flags import FLAGS

# Flags that the faithfulness rows report as rates of their own (unsupported_claim_rate, wrong_type_rate...).
FAITHFULNESS_FLAGS = (
    "unsupported_claims",
    "wrong_type",
    "off_topic",
)  # title_only is a flag rate, not a fact

ROWS = (
    ("rouge_l", "ROUGE-L F1", "{:.4f}"),
    ("chrf", "chrF", "{:.2f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("faithful_rouge_l", "ROUGE-L F1, faithful references", "{:.4f}"),
    ("faithful_chrf", "chrF, faithful references", "{:.2f}"),
    ("faithful_bleu", "BLEU, faithful references", "{:.2f}"),
    ("length_ratio", "length ratio (generated / real chars)", "{:.3f}"),
    ("mean_output_tokens", "mean output tokens", "{:.1f}"),
    ("eos_rate", "ends by EOS", "{:.1%}"),
)


def table_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, one cell per model) for the summary table; rendered as markdown here and by rich in the CLI."""
    models = report["models"]
    out = [("model", [m["name"] for m in models.values()])]
    for key, label, fmt in ROWS:
        if any(key in m for m in models.values()):  # faithful_* only with --references faithful or both
            out.append((label, [_cell(fmt, m.get(key)) for m in models.values()]))
    for flag in FLAGS:
        if flag not in FAITHFULNESS_FLAGS:
            out.append((f"flag rate: {flag}", [f"{m['flag_rates'][flag]:.1%}" for m in models.values()]))
    columns = [faithfulness_rows(m) for m in models.values()]
    for k, (label, _) in enumerate(columns[0]):
        out.append((label, [_cell("{:.1%}", rows[k][1]) for rows in columns]))
    out.append(("decoding", [_decoding(m["sampling"]) for m in models.values()]))
    return out


def faithfulness_rows(m: dict[str, Any]) -> list[tuple[str, float | None]]:
    """One model's faithfulness as (label, share): the claim rates (lower is better), then the attribute
    coverage (higher is better), its mean and per label."""
    rows: list[tuple[str, float | None]] = [
        ("rows with an unsupported claim", m.get("unsupported_claim_rate"))
    ]
    rows += [(f"unsupported claim: {kind}", m.get("claim_rates", {}).get(kind)) for kind in KINDS]
    rows += [("wrong type", m.get("wrong_type_rate")), ("off topic", m.get("off_topic_rate"))]
    by_label = m.get("attribute_coverage_by_label") or {}
    if by_label:
        rows.append(("attribute coverage", m.get("attribute_coverage")))  # the mean over labels
        rows += [(f"attribute coverage: {label}", share) for label, share in by_label.items()]
    return rows


def _cell(fmt: str, value: float | None) -> str:
    return "–" if value is None else fmt.format(value)


def _decoding(s: dict[str, Any]) -> str:
    kind = "greedy" if s["temperature"] == 0 else f"T={s['temperature']}, top_p={s['top_p']}"
    scope = " (output)" if s.get("penalty_scope") == "output" else ""
    return f"{kind}, max {s['max_new_tokens']} tokens, rep. penalty {s['repetition_penalty']}{scope}"


EVAL_FILES = ("eval_report.json", "generations.jsonl", "eval.png", "summary.md", "eval.html")


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Before any model loads: out_dir may receive an eval's files only where those already there are an earlier
    eval's (its report enrich's, its page enrich's), or with overwrite. enrich replaces only what it wrote."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: not a directory; choose another -o")
    if overwrite or not out_dir.exists():
        return
    ours = is_eval_report(out_dir / "eval_report.json")
    for name in EVAL_FILES:
        path = out_dir / name
        if path.exists() and not (is_enrich_page(path) if name == "eval.html" else ours):
            raise ConfigError(
                f"{path}: exists and enrich did not write it; pass --overwrite to replace it, or choose another -o"
            )


def write_outputs(
    out_dir: Path,
    report: dict[str, Any],
    rows: dict[str, list[Any]],
    refs: list[str],
    gens: dict[str, dict[str, Any]],
) -> None:
    """Write the report, every generation, the plot and the markdown summary into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with (out_dir / "generations.jsonl").open("w", encoding="utf-8") as f:
        for i, ref in enumerate(refs):
            line: dict[str, Any] = {
                "row": rows["row"][i],
                "id": rows["id"][i],
                "title": rows["title"][i],
                "reference": ref,
                "attributes": [list(a) for a in rows["attributes"][i]],  # [label, value]: as prompted
            }
            if "faithful_reference" in rows:
                line["faithful_reference"] = rows["faithful_reference"][i]
            for role, gen in gens.items():
                claims = gen["claims"][i]
                line[role] = {
                    "text": gen["texts"][i],
                    "finish": gen["finish"][i],
                    "flags": gen["flags"][i],
                    "unsupported": [c.surface for c in claims],  # as the text writes them: marked on the page
                    "claims": [[c.kind, c.surface] for c in claims],
                }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    _plot(report, out_dir / "eval.png")
    _summary(report, out_dir / "summary.md", rows, refs, gens)


# The text metrics' bars, each on a 0-1 scale (chrF and BLEU are percentages); faithful_* where scored.
TEXT_BARS = (
    ("rouge_l", "ROUGE-L", 1),
    ("chrf", "chrF/100", 100),
    ("bleu", "BLEU/100", 100),
    ("faithful_rouge_l", "ROUGE-L, faithful refs", 1),
    ("faithful_chrf", "chrF/100, faithful refs", 100),
    ("faithful_bleu", "BLEU/100, faithful refs", 100),
)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    models = list(report["models"].items())
    text = [(key, label, scale) for key, label, scale in TEXT_BARS if any(key in m for _, m in models)]
    flags = [f for f in FLAGS if f not in FAITHFULNESS_FLAGS]
    panels = [
        (
            [label for _, label, _ in text] + ["ends by EOS", *flags],
            [
                [*[m.get(key, 0.0) / scale for key, _, scale in text], m["eos_rate"]]
                + [m["flag_rates"][f] for f in flags]
                for _, m in models
            ],
            f"enrich eval on {report['rows']} held-out rows (flags: lower is better)",
        ),
        (
            [label for label, _ in faithfulness_rows(models[0][1])],
            [[share or 0.0 for _, share in faithfulness_rows(m)] for _, m in models],
            "faithfulness to title and attributes (claims: lower is better; coverage: higher is better)",
        ),
    ]
    fig, axes = plt.subplots(2, 1, figsize=(11, 8))
    width = 0.8 / max(len(models), 1)
    for ax, (labels, values, title) in zip(axes, panels, strict=True):
        for k, (role, m) in enumerate(models):
            ax.bar(
                [i + k * width for i in range(len(labels))], values[k], width, label=f"{role}: {m['name']}"
            )
        ax.set_xticks(
            [i + width * (len(models) - 1) / 2 for i in range(len(labels))], labels, rotation=30, ha="right"
        )
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_AGAINST = {
    "as-is": "as they are",
    "faithful": "cut to what their title and attributes support (faithful_*)",
    "both": "as they are and cut to what their title and attributes support (faithful_*)",
}


def _summary(
    report: dict[str, Any],
    path: Path,
    rows: dict[str, list[Any]],
    refs: list[str],
    gens: dict[str, dict[str, Any]],
) -> None:
    roles = list(report["models"])
    lines = [f"# enrich eval: {report['rows']} rows of {report['data']}", ""]
    lines.append("| metric | " + " | ".join(roles) + " |")
    lines.append("| --- |" + " --- |" * len(roles))
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_rows(report)]
    if {"model", "baseline"} <= set(roles):
        m, b = report["models"]["model"], report["models"]["baseline"]
        lines += [
            "",
            "Relative to the baseline: "
            + ", ".join(f"{k} {(m[k] - b[k]) / b[k]:+.1%}" for k, _, _ in TEXT_BARS if b.get(k) and k in m)
            + ".",
        ]
    labels = ", ".join(a["label"] for a in report.get("attributes", [])) or "none"
    lines += [
        "",
        f"Claims are checked against each row's title and attributes ({labels}), never its real description; "
        f"ROUGE-L, chrF and BLEU score against the real descriptions {_AGAINST[report.get('references', 'as-is')]}.",
        "",
        "## Examples",
        "",
    ]
    for i in range(min(3, len(refs))):
        stated = "; ".join(f"{label}: {value}" for label, value in rows["attributes"][i])
        lines += [
            f"**{rows['title'][i]}**" + (f" ({stated})" if stated else ""),
            "",
            f"- real: {_short(refs[i])}",
        ]
        for role, g in gens.items():
            words = ", ".join(c.surface for c in g["claims"][i])
            lines.append(f"- {role}: {_short(g['texts'][i])}" + (f" (unsupported: {words})" if words else ""))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "…"
