"""The cyclic garbage collector set for bulk work (a send, an import, a worker's batches).

A bulk run allocates millions of short-lived dicts, tuples and lists that reference
counting alone frees, while the process holds hundreds of thousands of long-lived
objects (the ORM, templates, rendered contents). By default every 700 allocations start
a collection, and each full collection walks every long-lived object again: on a
100,000-recipient send that was 18 % of the CPU. Inside `bulk_gc()` the objects alive at
its start are frozen out of every collection and a collection starts every 50,000
allocations instead; the sizes of what a run holds at once (a batch or a chunk) stay the
same, so memory stays flat. Settings are restored on exit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 50_000  # allocations between two young collections (CPython's default: 700)


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Collect less often, and never walk what existed before, for the block's duration."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(BULK_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
