"""enrich: batch catalog enrichment with fine-tuned Llama models."""

import os

__version__ = "0.1.0"

# polars' jemalloc keeps freed pages resident for seconds; a run frees a window's worth every few
# milliseconds, so over a long catalog they pile up. Return them at once. jemalloc reads this when polars
# is first imported, so it is set here, before any module of enrich imports polars (a program that imported
# polars earlier keeps its own setting). With io.py's allocator settings, peak memory grew 10.4% from 10k to
# 1M rows, against 26% without them (bench/RESULTS.md).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
