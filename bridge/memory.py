"""Give memory the worker no longer uses back to the operating system.

glibc's malloc keeps what Python frees in its heaps and returns it only when
the top of a heap is free. A reconciliation parses thousands of REST entities
and encodes thousands of records at once; a flood leaves a backlog of
records behind. Both are freed a moment later, but the pages stay resident:
a worker holding 5,000 agents measured 130 MB after start-up and 89 MB after
one ``malloc_trim(0)``, which also releases free pages inside the heaps
(``tests/bench/bench_bridge.py`` reports the resident memory).

:func:`trim` runs after every reconciliation and every
:data:`TRIM_INTERVAL_S` seconds (:func:`trim_periodically`). Elsewhere than
glibc (musl, macOS) it does nothing.

:func:`tune_gc` runs once, when the worker has started: the cyclic garbage
collector's young generation fills up every few hundred container
allocations, and each change allocates a dozen (its value, state, records
and headers), most of which live until their transaction commits. At the
default threshold (700) a worker spent about a third of its CPU per change in
collections, most of them full ones walking every object the imports and the
agents' states left behind (``tests/bench/bench_hotpath.py``). Freezing what
exists at start-up takes it out of every later collection, and a young
threshold of :data:`GC_YOUNG_THRESHOLD` makes collections rare (a young
collection walks every container allocated since the last one, the pending
transaction's batch and records with them: about 10 ms each). Reference
counting still frees everything acyclic at once; only cyclic garbage waits
longer (at most that many objects).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable

__all__ = ["GC_YOUNG_THRESHOLD", "TRIM_INTERVAL_S", "trim", "trim_periodically", "tune_gc"]

#: How often the worker trims anyway (a trim took 4 ms after freeing 90 MB, microseconds otherwise).
TRIM_INTERVAL_S = 30.0
#: Container allocations (net of deallocations) between two young-generation collections
#: (CPython: 700). Higher made collections rarer still in bench_hotpath (100,000: 2 per
#: 300,000 changes), but a real worker makes some cyclic garbage per frame, and each
#: such collection then walked so much that p99 delivery at 1,000 changes/s went from
#: about 100 ms to 190-240 ms.
GC_YOUNG_THRESHOLD = 20_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return function


def trim() -> bool:
    """Return free heap memory to the OS; True when the C library did (glibc only)."""
    function = _malloc_trim()
    if function is None:
        return False
    return bool(function(0))


async def trim_periodically(
    interval_s: float = TRIM_INTERVAL_S, trimmer: Callable[[], object] = trim
) -> None:
    """``trimmer`` (:func:`trim`) every ``interval_s`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        trimmer()


def tune_gc(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Freeze the objects that exist now out of the cyclic GC and collect the young generation less often.

    Call once, after start-up (module docstring); the older generations keep their thresholds.
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
