"""How a run cuts its rows into windows: the unit that is read, generated, saved and resumed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Windows:
    """Window k's rows: the first window has `first` rows, each next one twice the last, up to `size`.

    A ramp, so that on a CPU the first window is saved within about a minute (a Ctrl-C early on keeps work,
    and progress shows at once) while later windows are large enough to keep the engine busy. The cut depends
    only on these two numbers, so a resumed run finds the same windows; first == size cuts equal windows.
    """

    size: int
    first: int

    @classmethod
    def fixed(cls, size: int) -> Windows:
        return cls(size, size)

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.size:
            raise ValueError(f"windows: first {self.first} must be between 1 and the size {self.size}")

    def _ramp(self) -> list[int]:
        sizes, n = [], self.first
        while n < self.size:
            sizes.append(n)
            n *= 2
        return sizes

    def sizes(self) -> Iterator[int]:
        """The windows' sizes, in order, without end."""
        yield from self._ramp()
        yield from itertools.repeat(self.size)

    def start(self, index: int) -> int:
        """The first row of window index."""
        ramp = self._ramp()
        if index <= len(ramp):
            return sum(ramp[:index])
        return sum(ramp) + (index - len(ramp)) * self.size

    def bounds(self, index: int, total: int) -> tuple[int, int]:
        """Window index's rows [start, stop) of a run of total rows."""
        start = self.start(index)
        return min(start, total), min(self.start(index + 1), total)

    def count(self, total: int) -> int:
        """How many windows total rows make."""
        ramp = self._ramp()
        if total <= sum(ramp):
            return next(k for k in range(len(ramp) + 1) if sum(ramp[:k]) >= total)
        return len(ramp) + -(-(total - sum(ramp)) // self.size)

    def index_of(self, row: int) -> int:
        """The window that holds row."""
        ramp = self._ramp()
        start = 0
        for k, n in enumerate(ramp):
            if row < start + n:
                return k
            start += n
        return len(ramp) + (row - start) // self.size
