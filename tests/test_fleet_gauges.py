"""bridge.fleet: the coordinator-only gauges of a worker that stops coordinating."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridge import metrics
from bridge.fleet import Fleet
from bridge.settings import Settings


class _Coordinator:
    """Stands in for bridge.fleet.Coordinator: reports a roster that does not fit, then waits."""

    refreshes = 0

    def __init__(self, _announce: Callable[[int], None]) -> None:
        self.reported = asyncio.Event()

    async def run(self) -> None:
        metrics.ROSTER_USERS.set(350)
        metrics.ROSTER_UNASSIGNED.set(50)
        self.refreshes = 1
        self.reported.set()
        await asyncio.Event().wait()


def _no_shard(*_args: Any) -> Any:
    raise AssertionError("no shard in this test")


async def test_losing_the_coordinator_role_clears_the_roster_gauges() -> None:
    """A former coordinator reports 0 unassigned: max() over the fleet must not keep its stale 50."""
    fleet = Fleet(Settings(), shard_factory=_no_shard, coordinator_factory=_Coordinator)  # type: ignore[arg-type]
    fleet._start_coordinator()
    assert isinstance(fleet.coordinator, _Coordinator)
    await asyncio.wait_for(fleet.coordinator.reported.wait(), 5)
    assert metrics.ROSTER_UNASSIGNED._value.get() == 50
    await fleet._stop_coordinator()
    assert metrics.ROSTER_UNASSIGNED._value.get() == 0
    assert metrics.ROSTER_USERS._value.get() == 0
