"""A window's way through the model: prepare (normalize, prompt), generate, finish (clean, flag, status).

`Processor` is the one sequence that local runs, Ray workers and dry runs use; it does no I/O. Bad rows become
error records, never exceptions, so one row never fails a window.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from enrich.contracts import COUNT_KEYS
from enrich.errors import ConfigError
from enrich.model.engines import PromptSide, special_tokens
from enrich.model.generation import Engine, Generation, Progress, Sampling
from enrich.model.prompts import PromptTokens, build_prompts, clean_output, product_block, stated_attributes
from enrich.quality.claims import facts
from enrich.quality.flags import Inspection, inspect
from enrich.run.plan import Plan

VALUE_CHARS = 200  # an error record's offending value is cut to this
# How rows a reviewer rejected, or a check flagged for regeneration, are sampled where the run decodes greedily:
# the recipe's sampling.
REVIEW_TEMPERATURE, REVIEW_TOP_P = 0.7, 0.9
REGENERATION_SEED = 7919  # candidates' seeds differ from the first generation's of the same window
REGENERABLE = (
    "unsupported_claims",
    "wrong_type",
    "off_topic",
    "title_only",
)  # the checks whose policy may be regenerate


@dataclass
class Window:
    """One window after normalize and prompt, ready for the engine."""

    index: int
    rows: list[int]  # input positions
    ids: list[str | None]
    titles: list[str]
    prompts: dict[int, str]  # offset in window -> prompt, for rows that go to the engine
    status: dict[int, str]  # offset -> error/skipped/kept, decided before generation
    errors: list[dict[str, Any]]
    attributes: list[list[tuple[str, str]]] = field(default_factory=list)  # per row: (label, value) stated
    contents: list[str | None] = field(default_factory=list)  # per row: the existing description
    kept: dict[int, str] = field(default_factory=dict)  # offset -> the existing description it keeps
    decided: dict[int, str] = field(default_factory=dict)  # offset -> approved/rejected by a reviewer
    inspected: dict[int, tuple[str, Inspection]] = field(default_factory=dict)  # offset -> its text, checked
    regenerated: dict[str, int] = field(default_factory=dict)  # rows, rescued, still_flagged, output_tokens
    seconds_read: float = 0.0
    seconds_prompt: float = 0.0
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)  # offset -> old result (incremental)

    def block(self, off: int) -> str:
        """What the prompt says of row off: its title and attribute lines (model.prompts.product_block)."""
        return product_block(self.titles[off], self.attributes[off]) if self.attributes else self.titles[off]


def error_record(row: int, row_id: str | None, stage: str, reason: str, value: Any) -> dict[str, Any]:
    """A line of the error file (config.ErrorRecord)."""
    text = None if value is None else str(value)
    if text is not None and len(text) > VALUE_CHARS:
        text = text[:VALUE_CHARS] + "…"
    return {"id": row_id, "row": row, "stage": stage, "reason": reason, "value": text}


def row_id(raw: Any, row: int, id_col: str | None) -> str | None:
    """A row's id as the run knows it: the id column's value as text, or the row's position without one."""
    return str(raw) if raw is not None else (None if id_col else str(row))


def row_title(raw: Any, max_chars: int, truncate: bool) -> str:
    """A title as it is prompted: stripped, cut where the policy cuts long titles; not text gives ''."""
    title = raw.strip() if isinstance(raw, str) else ""
    return title[:max_chars] if truncate and len(title) > max_chars else title


def row_key(context_key: str, rid: str | None, block: str) -> str:
    """The content key: the same id, product block (title and attribute values), model, template and sampling
    give the same key; a changed colour or price is a changed key, so an incremental run generates that row."""
    return hashlib.sha256(f"{context_key}\x1f{rid}\x1f{block}".encode()).hexdigest()[:32]


def content_keys(plan: Plan, start: int, columns: dict[str, list[Any]]) -> list[str]:
    """The content keys of input rows from start on, as finish() writes them: an incremental run's pre-pass
    computes them for every row, and apply() checks each again before a row is copied."""
    cols, pol = plan.source.columns, plan.job.policies
    titles = columns[cols.title]
    ids = columns[cols.id] if cols.id else [None] * len(titles)
    truncate = pol.long_title == "truncate"
    attributes = stated_attributes(plan.source.attributes, columns, len(titles))
    keys = []
    for off, (i, t) in enumerate(zip(ids, titles, strict=True)):
        title = row_title(t, pol.max_title_chars, truncate)
        block = product_block(title, attributes[off]) if attributes else title
        keys.append(row_key(plan.context_key, row_id(i, start + off, cols.id), block))
    return keys


@dataclass(frozen=True)
class Processor:
    """Prepare, generate and finish windows for one plan, with one engine's tokenizer and context."""

    plan: Plan
    tokens: PromptTokens  # the chat renderer and the special tokens that catalog text must not spell
    count: Callable[[str], int] | None  # a prompt's tokens; None where the engine has no tokenizer
    max_prompt: int  # the most tokens a prompt may have, max_new_tokens left free

    @classmethod
    def of(cls, plan: Plan, engine: Engine | PromptSide) -> Processor:
        tok = engine.tokenizer
        render = getattr(tok, "apply_chat_template", None) if tok is not None else None
        if plan.template.prompt is None and (render is None or not getattr(tok, "chat_template", None)):
            raise ConfigError(f"model {plan.spec.ref!r} has no chat template; use --template alpaca")
        count = (
            (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])) if tok is not None else None
        )
        tokens = PromptTokens(render, special_tokens(tok))
        return cls(plan, tokens, count, engine.max_model_len - plan.sampling.max_new_tokens)

    def prepare(
        self, index: int, start: int, columns: dict[str, list[Any]], duplicates: dict[int, int]
    ) -> Window:
        """Normalize a window's rows and build their prompts."""
        window = self._validate(index, start, columns, duplicates)
        n = len(window.rows)
        window.attributes = stated_attributes(self.plan.source.attributes, columns, n)
        content = self.plan.source.columns.content
        window.contents = [_text(v) for v in columns[content]] if content else [None] * n
        self._keep_existing(window)
        self._apply_decisions(window)
        todo = [off for off in range(n) if off not in window.status]
        prompts = build_prompts(
            [window.block(off) for off in todo],
            self.plan.template,
            self.tokens.render_chat,
            self.tokens.specials,
        )
        for off, prompt in zip(todo, prompts, strict=True):
            # A prompt of B bytes has at most B tokens (byte-level BPE), so most rows skip the tokenizer here.
            if self.count is not None and len(prompt.encode()) > self.max_prompt:
                n_tokens = self.count(prompt)
                if n_tokens > self.max_prompt:
                    row = start + off
                    window.status[off] = "error"
                    reason = (
                        f"{self.plan.source.path} row {row}: prompt has {n_tokens} tokens, over the "
                        f"{self.max_prompt} that fit with max_new_tokens; shorten the title or lower "
                        "policies.max_title_chars"
                    )
                    window.errors.append(
                        error_record(row, window.ids[off], "prompt", reason, window.titles[off])
                    )
                    continue
            window.prompts[off] = prompt
        return window

    def _apply_decisions(self, window: Window) -> None:
        """Which rows a reviewer approved or rejected (run.decisions), by their content key and id."""
        decisions = self.plan.decisions
        if decisions is None:
            return
        for off, rid in enumerate(window.ids):
            found = decisions.on(
                row_key(self.plan.context_key, rid, window.block(off)), rid, window.rows[off]
            )
            if found is not None:  # a row that cannot be prompted (no title) stays in the error file
                window.decided[off] = found.decision

    def _keep_existing(self, window: Window) -> None:
        """With output.only_missing, a row whose existing description is long enough keeps it: status kept."""
        out = self.plan.job.output
        if not out.only_missing:
            return
        for off, text in enumerate(window.contents):
            if off not in window.status and text is not None and len(text) >= out.min_chars:
                window.status[off] = "kept"
                window.kept[off] = text

    def _validate(
        self, index: int, start: int, columns: dict[str, list[Any]], duplicates: dict[int, int]
    ) -> Window:
        """The rows' ids and titles; invalid, too long and duplicate rows get their status and error records."""
        cols, pol, path = self.plan.source.columns, self.plan.job.policies, self.plan.source.path
        raw_titles = columns[cols.title]
        raw_ids = columns[cols.id] if cols.id else [None] * len(raw_titles)
        rows = list(range(start, start + len(raw_titles)))
        ids = [row_id(i, row, cols.id) for i, row in zip(raw_ids, rows, strict=True)]
        titles = [t.strip() if isinstance(t, str) else "" for t in raw_titles]
        window = Window(index, rows, ids, titles, {}, {}, [])
        invalid = "skipped" if pol.invalid_row == "skip" else "error"
        for off, (row, rid, raw) in enumerate(zip(rows, ids, raw_titles, strict=True)):
            title = window.titles[off]
            problem = _problem(rid, raw, title, cols.id, cols.title)
            if problem:
                window.status[off] = invalid
                if invalid == "error":
                    window.errors.append(
                        error_record(row, rid, "validate", f"{path} row {row}: {problem}", raw)
                    )
                continue
            if len(title) > pol.max_title_chars:
                if pol.long_title == "error":
                    window.status[off] = "error"
                    reason = (
                        f"{path} row {row}: {cols.title} has {len(title)} characters, over {pol.max_title_chars}; "
                        "raise policies.max_title_chars"
                    )
                    window.errors.append(error_record(row, rid, "validate", reason, title))
                    continue
                window.titles[off] = title[: pol.max_title_chars]
            if row in duplicates and pol.duplicate_id != "keep":
                window.status[off] = "skipped" if pol.duplicate_id == "skip" else "error"
                if pol.duplicate_id == "error":
                    reason = f"{path} row {row}: duplicate {cols.id} {rid!r} (first at row {duplicates[row]})"
                    window.errors.append(error_record(row, rid, "validate", reason, rid))
        return window

    def generate(
        self, window: Window, engine: Engine, on_progress: Progress | None = None
    ) -> dict[int, Generation]:
        """The engine's results for the window's prompts, seeded by the window: a row's text does not depend
        on which process or worker ran its window, nor on whether earlier windows ran."""
        rejected = [o for o in window.prompts if window.decided.get(o) == "rejected"]
        offs = [o for o in window.prompts if window.decided.get(o) != "rejected"]
        sampling = replace(self.plan.sampling, seed=self.plan.sampling.seed + window.index)
        results: dict[int, Generation] = {}
        if offs:
            gens = engine.generate([window.prompts[o] for o in offs], sampling, on_progress)
            results.update(zip(offs, gens, strict=True))
        if rejected and self.plan.decisions is not None:
            # A reviewer rejected these texts: another seed (the decisions file's), and sampling where the run
            # decodes greedily, which would write the same text again.
            again = replace(sampling, seed=sampling.seed + self.plan.decisions.seed)
            if again.temperature == 0:
                again = replace(again, temperature=REVIEW_TEMPERATURE, top_p=REVIEW_TOP_P)
            gens = engine.generate([window.prompts[o] for o in rejected], again)
            results.update(zip(rejected, gens, strict=True))
        if any(getattr(self.plan.job.policies, f) == "regenerate" for f in REGENERABLE):
            self._regenerate(window, results, engine, sampling)
        return results

    def _regenerate(
        self, window: Window, results: dict[int, Generation], engine: Engine, sampling: Sampling
    ) -> None:
        """Rows flagged by a check whose policy is regenerate, generated again in this window: up to
        policies.candidates rounds, each one request of one sampled candidate for every row still flagged
        (seeded by the window and the round); a row takes the first candidate that passes every check (status
        regenerated), else, after the last round, its text with the fewest unsupported words.

        Rounds, not N candidates at once for every flagged row: most rows pass with their first candidate, so
        the rounds cost about one candidate a flagged row where N at once would cost N."""
        flagged = [off for off, gen in results.items() if self._asks_regeneration(window, off, gen)]
        tally = Counter({"rows": len(flagged)})
        best = {off: (results[off], *window.inspected[off]) for off in flagged}
        again = replace(sampling, seed=sampling.seed + REGENERATION_SEED)
        if again.temperature == 0:  # greedy decoding would write the same text again
            again = replace(again, temperature=REVIEW_TEMPERATURE, top_p=REVIEW_TOP_P)
        for attempt in range(self.plan.job.policies.candidates):
            if not flagged:
                break
            round_sampling = replace(again, seed=again.seed + attempt * REGENERATION_SEED)
            gens = engine.generate([window.prompts[o] for o in flagged], round_sampling)
            tally["output_tokens"] += sum(g.output_tokens for g in gens)
            still = []
            for off, gen in zip(flagged, gens, strict=True):
                text, found = self._inspect(window, off, gen)
                if self._passes(found):
                    best[off] = (gen, text, found)
                    window.status[off] = "regenerated"
                    continue
                if len(found.claims) < len(best[off][2].claims):
                    best[off] = (gen, text, found)
                still.append(off)
            flagged = still
        for off, (gen, text, found) in best.items():
            results[off] = gen
            window.inspected[off] = (text, found)
        tally["rescued"] = sum(window.status.get(off) == "regenerated" for off in best)
        tally["still_flagged"] = len(best) - tally["rescued"]
        window.regenerated = dict(tally) if best else {}

    def _asks_regeneration(self, window: Window, off: int, gen: Generation) -> bool:
        """Inspect a generation (kept for finish) and say whether a flag of it asks to generate it again."""
        window.inspected[off] = self._inspect(window, off, gen)
        policies = self.plan.job.policies
        return any(getattr(policies, f, None) == "regenerate" for f in window.inspected[off][1].flags)

    def _passes(self, found: Inspection) -> bool:
        """No flag of the text asks for anything: every one it has is kept by its policy."""
        return all(getattr(self.plan.job.policies, f) == "keep" for f in found.flags)

    def finish(
        self, window: Window, results: dict[int, Generation]
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """Clean text, flags and status per policy: the part's columns and the window's stats.

        This runs once per row of the catalog, so it fills preset columns by position and touches only the
        generated rows in its loop (rows decided before generation keep their status).
        """
        plan = self.plan
        n = len(window.rows)
        texts: list[str | None] = [window.kept.get(off) for off in range(n)]
        finishes: list[str | None] = [None] * n
        all_flags: list[list[str]] = [[] for _ in range(n)]
        unsupported: list[list[str]] = [[] for _ in range(n)]
        n_outs: list[int | None] = [None] * n
        statuses: list[str | None] = [window.status.get(off) for off in range(n)]
        flag_counts: Counter[str] = Counter()
        claim_counts: Counter[str] = Counter()
        tokens_in = tokens_out = 0
        for off, gen in results.items():
            tokens_in += gen.prompt_tokens
            tokens_out += gen.output_tokens
            n_outs[off], finishes[off] = gen.output_tokens, gen.finish_reason
            text, found = window.inspected.get(off) or self._inspect(window, off, gen)
            all_flags[off], unsupported[off] = found.flags, [c.surface for c in found.claims]
            flag_counts.update(found.flags)
            claim_counts.update({c.kind for c in found.claims})
            statuses[off] = self._status(window, off, found.flags, text)
            texts[off] = (
                None if statuses[off] == "error" else text
            )  # a failed row's text is in the error file
        if len(window.errors) > 1:  # the error file is in row order: validation errors came first
            window.errors.sort(key=lambda e: int(e["row"]))
        counts = Counter(statuses)
        counts["generated"] = len(results)
        part: dict[str, list[Any]] = {
            "__row": window.rows,
            "generated_description": texts,
            "enrich_status": statuses,
            "enrich_finish_reason": finishes,
            "enrich_flags": all_flags,
            "enrich_unsupported": unsupported,
            "enrich_output_tokens": n_outs,
            "enrich_key": [
                row_key(plan.context_key, rid, window.block(off)) for off, rid in enumerate(window.ids)
            ],
        }
        stats = {
            "decided": {
                verdict: [part["enrich_key"][o] for o, v in window.decided.items() if v == verdict]
                for verdict in ("approved", "rejected")
            },
            "counts": {k: counts.get(k, 0) for k in COUNT_KEYS},
            "tokens": {"input": tokens_in, "output": tokens_out},
            "flags": dict(flag_counts),
            "claims": dict(claim_counts),
            "regeneration": window.regenerated,
        }
        return part, stats

    def _inspect(self, window: Window, off: int, gen: Generation) -> tuple[str, Inspection]:
        """A generation's text, cleaned, and what the checks found in it against the row's facts: its title,
        attribute values and existing description."""
        plan = self.plan
        text = clean_output(gen.text, plan.spec.stop_strings())
        known = facts(
            window.titles[off], window.attributes[off] if window.attributes else (), window.contents[off]
        )
        return text, inspect(text, gen.finish_reason, known, plan.template.markers, plan.vocabulary)

    def _status(self, window: Window, off: int, flags: list[str], text: str) -> str:
        """ok, flagged or error, as the policies of the row's flags say; an error is recorded."""
        policies = self.plan.job.policies
        failing = [f for f in flags if getattr(policies, f) == "error"]
        if failing:
            row = window.rows[off]
            reason = f"{self.plan.source.path} row {row}: quality flag {', '.join(failing)} (policy: error)"
            window.errors.append(error_record(row, window.ids[off], "postprocess", reason, text))
            return "error"
        if window.status.get(off) == "regenerated":  # a candidate passed every check
            return "regenerated"
        # A flag that regeneration could not clear leaves the row flagged.
        return "flagged" if any(getattr(policies, f) in ("flag", "regenerate") for f in flags) else "ok"


def _text(value: Any) -> str | None:
    """An existing description as text: stripped, None where there is none."""
    text = value.strip() if isinstance(value, str) else None
    return text or None


def _problem(rid: str | None, raw: Any, title: str, id_col: str | None, title_col: str) -> str | None:
    """Why a row cannot be prompted (its id or title), or None."""
    if id_col and (rid is None or not rid.strip()):
        return f"{id_col} is null or empty"
    if raw is None:
        return f"{title_col} is null"
    if not isinstance(raw, str):
        return f"{title_col} is not text ({type(raw).__name__})"
    if not title:
        return f"{title_col} is empty"
    return None
