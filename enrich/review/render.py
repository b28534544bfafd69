"""Rendering shared by the run and eval pages: the Jinja environment, the embedded JSON, inline SVG
histograms and the atomic write of one self-contained HTML file."""

from __future__ import annotations

import json
import math
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from enrich.errors import ConfigError
from enrich.files import atomic_file, is_enrich_page

MAX_TEXT_CHARS = 4000  # a text longer than this is cut on the page (catalog descriptions run to 10k+)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("enrich.review", "assets"),
        autoescape=True,  # every value from a catalog is text, never markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, int) else f"{n:,.1f}"
    env.filters["pct"] = lambda x: f"{x:.1%}"
    return env


def write_page(
    template: str, dest: Path, data: dict[str, Any], overwrite: bool = False, **context: Any
) -> Path:
    """Render template with the page's CSS and JS inline and data embedded as JSON; write it atomically. A file at
    dest that enrich did not write is replaced only with overwrite."""
    if dest.exists() and not overwrite and not (dest.is_file() and is_enrich_page(dest)):
        raise ConfigError(
            f"{dest}: exists and enrich did not write it; pass --overwrite to replace it, or choose another -o"
        )
    assets = resources.files("enrich.review") / "assets"
    html = (
        _environment()
        .get_template(template)
        .render(
            css=Markup(assets.joinpath("page.css").read_text(encoding="utf-8")),
            js=Markup(assets.joinpath("page.js").read_text(encoding="utf-8")),
            data=json_for_script(data),
            **context,
        )
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as f:
        f.write(html.encode("utf-8"))
    return dest


def json_for_script(data: Any) -> Markup:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' at all, so no value can close
    the tag or open a comment ('</script>', '<!--'); JSON.parse reads the escapes back as the characters."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def cut(text: str | None, limit: int = MAX_TEXT_CHARS) -> str | None:
    """A text for the page: as it is, or its first limit characters and an ellipsis."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + " …"


def histogram(
    counts: Counter[int], scale: int, unit: str, bins: int = 24, width: int = 300, height: int = 64
) -> dict[str, Any] | None:
    """An SVG bar chart's geometry for values counted in units of scale (counts maps value // scale -> rows):
    equal bins from the smallest value to the 99th percentile, the tail in the last bin."""
    if not counts:
        return None
    values = sorted(counts)
    total = sum(counts.values())
    running, top = 0, values[-1]
    for value in values:
        running += counts[value]
        if running >= 0.99 * total:
            top = value
            break
    low = values[0]
    step = max(1, math.ceil((top - low + 1) / bins))
    heights = [0] * min(bins, (top - low) // step + 1)
    for value, n in counts.items():
        heights[min((value - low) // step, len(heights) - 1)] += n
    tallest = max(heights)
    bar = width / len(heights)
    bars = []
    for i, n in enumerate(heights):
        first, last = (low + i * step) * scale, (low + (i + 1) * step) * scale - 1
        span = f"{first:,}+" if i == len(heights) - 1 and values[-1] > top else f"{first:,}–{last:,}"
        h = round(height * n / tallest, 1)
        bars.append(
            {
                "x": round(i * bar, 1),
                "y": height - h,
                "w": max(round(bar - 1, 1), 1),
                "h": h,
                "n": n,
                "label": f"{span} {unit}: {n:,} rows",
            }
        )
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "low": f"{low * scale:,}",
        "high": f"{(top + 1) * scale:,}" + ("+" if values[-1] > top else ""),
        "unit": unit,
    }
