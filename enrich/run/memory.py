"""The allocator settings of a run: set by `enrich.run.run` for the run's duration, not by importing enrich.

A run frees a window's worth of memory every few milliseconds; allocators that keep freed pages resident let
them pile up over a long catalog. With these settings and the assembly's (enrich.run.output), peak memory grew
about 10% from 10 thousand to 1 million rows, against 26% without them (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# jemalloc (polars' allocator) returns freed pages at once instead of after seconds. It reads this when polars
# is first imported, so it takes effect where the run imports polars first (the command line); a program that
# imported polars earlier keeps its own setting.
_JEMALLOC = ("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")


@contextlib.contextmanager
def run_allocators() -> Iterator[None]:
    """jemalloc's decay for polars, and the system allocator for Arrow's buffers (its default jemalloc pool keeps
    freed windows resident); both put back as they were afterwards."""
    name, value = _JEMALLOC
    before = os.environ.get(name)
    os.environ.setdefault(name, value)
    import pyarrow as pa

    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        if before is None:
            os.environ.pop(name, None)
