"""bridge.farewell: leaving agents' history before their tombstones, and read again after (late)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bridge.errors import GenesysError
from bridge.farewell import RECHECKS_S, Farewells
from bridge.genesys.history import Interval, UserHistory
from bridge.model import AgentState, Change, RoutingValue, VersionedRouting
from tests.shard_fakes import Clock, NullRest, shard_context

WALL = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class FlakyHistory(NullRest):
    """Analytics that fail first, then know only the first change, then both."""

    def __init__(self) -> None:
        self.calls = 0

    async def user_history(
        self, users: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UserHistory]:
        self.calls += 1
        if self.calls == 1:
            raise GenesysError("HTTP 503", status=503)
        idle = Interval(WALL, WALL + timedelta(seconds=10), RoutingValue("IDLE"))
        busy = Interval(
            WALL + timedelta(seconds=10), WALL + timedelta(seconds=20), RoutingValue("INTERACTING")
        )
        off = Interval(WALL + timedelta(seconds=20), None, RoutingValue("OFF_QUEUE"))
        routing = [idle, busy] if self.calls == 2 else [idle, busy, off]
        return {"gone": UserHistory("gone", [], routing)}


async def test_a_failed_farewell_is_read_again_and_written_late_once() -> None:
    """The first read fails: the tombstone goes anyway; the re-reads write what they find, late,
    each transition once, and only what came after the agent's last written change."""
    clock, rest = Clock(), FlakyHistory()
    wall = WALL + timedelta(minutes=1)
    ctx = shard_context(rest, clock, lambda: wall)
    late: list[Change] = []
    farewells = Farewells(ctx, lookback=timedelta(hours=1), write=lambda _c: None, write_late=late.append)
    last = AgentState("gone", routing=VersionedRouting(RoutingValue("IDLE"), WALL, "e-idle"))
    await farewells.say({"gone": last})
    assert rest.calls == 1 and late == [] and farewells.pending
    await farewells.recheck()
    assert rest.calls == 1, "not before its time"
    for delay in RECHECKS_S:
        clock.now = 100.0 + delay
        await farewells.recheck()
    assert rest.calls == 1 + len(RECHECKS_S)
    assert [(c.changed_at - WALL).total_seconds() for c in late] == [10.0, 20.0]
    assert not farewells.pending
