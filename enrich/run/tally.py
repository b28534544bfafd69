"""What a run has done so far, for its progress events and its report: one tally for local and Ray runs."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from enrich.events import Event
from enrich.run.state import RunState

STAGES = ("read", "prompt", "generate", "postprocess", "write", "total")


@dataclass
class Tally:
    """Rows saved (resumed ones included), the rows and output tokens this process generated, stage seconds."""

    total: int  # rows of the run
    t0: float  # when the run began (time.perf_counter)
    done: int  # rows saved, resumed ones included
    fresh: int = 0  # rows this process saved
    tokens: int = 0  # output tokens of those rows
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def saved(self, state: RunState, rows: int, output_tokens: int, on_event: Event) -> None:
        """A window was recorded: count it and say so."""
        self.done += rows
        self.fresh += rows
        self.tokens += output_tokens
        on_event("progress", self.progress(state))

    def progress(self, state: RunState) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return state.progress(self.done, self.total, self.fresh, self.tokens, elapsed)

    def stage_seconds(self) -> dict[str, float]:
        return {k: round(self.seconds.get(k, 0.0), 4) for k in STAGES}
