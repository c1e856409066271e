"""bridge.memory: freed heap memory goes back to the operating system."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest

from bridge import memory


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_pages() -> None:
    """Many mid-sized objects freed at once stay resident until trim() hands them back."""
    memory.trim()
    keep = []
    garbage = []
    for i in range(40_000):
        garbage.append(bytes(2_000))  # above obmalloc's 512 B: glibc's heap
        if i % 100 == 0:
            keep.append(bytes(2_000))  # pins the heap so free() alone cannot shrink it
    before_free = rss_kb()
    del garbage
    after_free = rss_kb()
    assert memory.trim() is True
    after_trim = rss_kb()
    assert before_free - after_free < 20_000, "glibc already returned the pages; the test proves nothing"
    assert after_free - after_trim > 40_000
    assert keep


async def test_trim_periodically_runs_until_cancelled() -> None:
    """The worker's background trim fires every interval and stops only when cancelled."""
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(memory.trim_periodically(0.01, lambda: calls.append(loop.time())))
    await asyncio.sleep(0.1)
    assert not task.done()
    assert len(calls) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold() -> None:
    """After tune_gc the objects alive before it are frozen and gen0 collects at the given threshold."""
    before = gc.get_threshold()
    try:
        memory.tune_gc(12_345)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
