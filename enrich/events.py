"""Progress events: every long call takes an on_event(kind, data) callback; the CLI renders them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = Callable[[str, dict[str, Any]], None]


def no_events(kind: str, data: dict[str, Any]) -> None:
    """The default callback: drop every event."""
    del kind, data
