"""Per-window row work: normalize and prompt before the engine, postprocess after it. No I/O."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enrich.errors import ConfigError
from enrich.model.engines import Engine, Generation, PromptSide, special_tokens
from enrich.model.prompts import PromptTokens, build_prompts, clean_output
from enrich.quality.flags import FLAGS, quality_flags
from enrich.run.plan import Plan

VALUE_CHARS = 200


@dataclass
class Window:
    """One window after normalize and prompt, ready for the engine."""

    index: int
    rows: list[int]  # input positions
    ids: list[str | None]
    titles: list[str]
    prompts: dict[int, str]  # offset in window -> prompt, for rows that go to the engine
    status: dict[int, str]  # offset -> error/skipped, decided before generation
    errors: list[dict[str, Any]]
    seconds_read: float
    seconds_prompt: float
    originals: list[str | None] = field(default_factory=list)
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)  # offset -> old result (incremental)


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"


def _error(row: int, row_id: str | None, stage: str, reason: str, value: Any) -> dict[str, Any]:
    return {"id": row_id, "row": row, "stage": stage, "reason": reason, "value": _cut(value)}


def prepare_window(
    index: int,
    start: int,
    columns: dict[str, list[Any]],
    plan: Plan,
    duplicates: dict[int, int],
    render_chat: Any,
    token_count: Callable[[str], int] | None,
    max_prompt_tokens: int,
    input_path: str,
) -> Window:
    """Normalize a window's rows and build prompts; bad rows become error records, never exceptions."""
    cols = plan.job.input.columns
    pol = plan.job.policies
    raw_titles = columns[cols.title]
    n = len(raw_titles)
    raw_ids = columns[cols.id] if cols.id else [None] * n
    status: dict[int, str] = {}
    errors: list[dict[str, Any]] = []
    ids: list[str | None] = []
    titles: list[str] = []
    invalid = "skipped" if pol.invalid_row == "skip" else "error"
    for off in range(n):
        row = start + off
        rid = raw_ids[off]
        rid = str(rid) if rid is not None else (None if cols.id else str(row))
        ids.append(rid)
        title = raw_titles[off]
        title = title.strip() if isinstance(title, str) else title
        titles.append(title if isinstance(title, str) else "")
        problem = None
        if cols.id and (rid is None or not rid.strip()):
            problem = f"{cols.id} is null or empty"
        elif title is None:
            problem = f"{cols.title} is null"
        elif not isinstance(title, str):
            problem = f"{cols.title} is not text ({type(title).__name__})"
        elif not title:
            problem = f"{cols.title} is empty"
        if problem:
            status[off] = invalid
            if invalid == "error":
                errors.append(
                    _error(row, rid, "validate", f"{input_path} row {row}: {problem}", raw_titles[off])
                )
            continue
        if len(title) > pol.max_title_chars:
            if pol.long_title == "error":
                status[off] = "error"
                reason = f"{input_path} row {row}: {cols.title} has {len(title)} characters, over {pol.max_title_chars}"
                errors.append(
                    _error(row, rid, "validate", reason + "; raise policies.max_title_chars", title)
                )
                continue
            titles[off] = title[: pol.max_title_chars]
        if row in duplicates and pol.duplicate_id != "keep":
            status[off] = "skipped" if pol.duplicate_id == "skip" else "error"
            if pol.duplicate_id == "error":
                reason = (
                    f"{input_path} row {row}: duplicate {cols.id} {rid!r} (first at row {duplicates[row]})"
                )
                errors.append(_error(row, rid, "validate", reason, rid))
    todo = [off for off in range(n) if off not in status]
    # render_chat is tokenizer_hooks' PromptTokens: the chat renderer and the special tokens to neutralise.
    prompts = build_prompts(
        [titles[off] for off in todo], plan.template, render_chat.render_chat, render_chat.specials
    )
    ready: dict[int, str] = {}
    for off, prompt in zip(todo, prompts, strict=True):
        # A prompt of B bytes has at most B tokens (byte-level BPE), so most rows skip the tokenizer here.
        if token_count is not None and len(prompt.encode()) > max_prompt_tokens:
            n_tokens = token_count(prompt)
            if n_tokens > max_prompt_tokens:
                status[off] = "error"
                reason = (
                    f"{input_path} row {start + off}: prompt has {n_tokens} tokens, over the {max_prompt_tokens} "
                    "that fit with max_new_tokens; shorten the title or lower policies.max_title_chars"
                )
                errors.append(_error(start + off, ids[off], "prompt", reason, titles[off]))
                continue
        ready[off] = prompt
    return Window(index, list(range(start, start + n)), ids, titles, ready, status, errors, 0.0, 0.0)


def row_key(context_key: str, row_id: str | None, title: str) -> str:
    """The content key: same id, title, model, template and sampling give the same key."""
    return hashlib.sha256(f"{context_key}\x1f{row_id}\x1f{title}".encode()).hexdigest()[:32]


def finish_window(
    window: Window, results: dict[int, Generation], plan: Plan
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Postprocess: clean text, flags, status per policy; the part's columns and the window's stats.

    This runs once per row of the catalog, so it fills preset columns by position and touches only
    the generated rows in its loop (rows decided before generation keep their status).
    """
    pol = plan.job.policies
    stop = plan.spec.stop_strings()
    markers = plan.template.markers
    n = len(window.rows)
    texts: list[str | None] = [None] * n
    finishes: list[str | None] = [None] * n
    all_flags: list[list[str]] = [[] for _ in range(n)]
    n_outs: list[int | None] = [None] * n
    statuses: list[str | None] = [None] * n
    for off, status in window.status.items():
        statuses[off] = status
    flag_counts: Counter[str] = Counter()
    tokens_in = tokens_out = 0
    policy = {f: getattr(pol, f) for f in FLAGS}  # looked up once per window, not per row and flag
    for off, gen in results.items():
        tokens_in += gen.prompt_tokens
        tokens_out += gen.output_tokens
        n_outs[off] = gen.output_tokens
        finish = finishes[off] = gen.finish_reason
        text = clean_output(gen.text, stop)
        flags = all_flags[off] = quality_flags(text, finish, window.titles[off], markers)
        status = "ok"
        if flags:
            flag_counts.update(flags)
            failing = [f for f in flags if policy[f] == "error"]
            if failing:
                status = "error"
                row = window.rows[off]
                reason = f"{plan.job.input.path} row {row}: quality flag {', '.join(failing)} (policy: error)"
                window.errors.append(_error(row, window.ids[off], "postprocess", reason, text))
            elif any(policy[f] == "flag" for f in flags):
                status = "flagged"
        texts[off] = None if status == "error" else text  # a failed row's text is in the error file
        statuses[off] = status
    if len(window.errors) > 1:  # the error file is in row order: validation errors came first
        window.errors.sort(key=lambda e: int(e["row"]))
    counts = Counter(statuses)
    counts["generated"] = len(results)
    context = plan.context_key
    out: dict[str, list[Any]] = {
        "__row": window.rows,
        "generated_description": texts,
        "enrich_status": statuses,
        "enrich_finish_reason": finishes,
        "enrich_flags": all_flags,
        "enrich_output_tokens": n_outs,
        "enrich_key": [row_key(context, i, t) for i, t in zip(window.ids, window.titles, strict=True)],
    }
    stats = {
        "counts": {k: counts.get(k, 0) for k in ("ok", "flagged", "error", "skipped", "generated", "copied")},
        "tokens": {"input": tokens_in, "output": tokens_out},
        "flags": dict(flag_counts),
    }
    return out, stats


def tokenizer_hooks(
    engine: Engine | PromptSide, plan: Plan
) -> tuple[PromptTokens, Callable[[str], int] | None, int]:
    """What prepare_window needs of the engine's tokenizer: the chat renderer with the special tokens that
    catalog text must not spell, a token counter, and the most tokens a prompt may have."""
    tok = engine.tokenizer
    render = getattr(tok, "apply_chat_template", None) if tok is not None else None
    if plan.template.prompt is None and (render is None or not getattr(tok, "chat_template", None)):
        raise ConfigError(f"model {plan.spec.ref!r} has no chat template; use --template alpaca")
    count = (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])) if tok is not None else None
    tokens = PromptTokens(render, special_tokens(tok))
    return tokens, count, engine.max_model_len - plan.sampling.max_new_tokens
