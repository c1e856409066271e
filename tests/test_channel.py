"""bridge.channel: the serving tasks of a shard's channel end within a bound."""

from __future__ import annotations

import asyncio

import pytest

from bridge.channel import TASK_STOP_TIMEOUT_S, cancel_all


async def test_a_task_that_ignores_cancellation_does_not_hold_the_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Serving tasks are cancelled with a bound: a stuck one is named and left, the shard goes on."""

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores its cancellation

    async def polite() -> None:
        await asyncio.sleep(3600)

    stuck, fine = asyncio.create_task(stubborn()), asyncio.create_task(polite())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cancel_all({"reader": stuck, "watchdog": fine})
    assert loop.time() - started < TASK_STOP_TIMEOUT_S + 1
    assert fine.cancelled()
    assert "['reader']" in caplog.text
    release.set()
    await stuck
