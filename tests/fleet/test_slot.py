"""bridge.fleet.slot: what a slot takes of its partition's map records."""

from __future__ import annotations

from bridge.fleet.map import MapRecord
from bridge.fleet.slot import Slot


def _record(shard: int, epoch: int, *users: str) -> MapRecord:
    return MapRecord(shard=shard, epoch=epoch, client_index=0, users=users, bridge_id="unit")


async def test_a_slot_keeps_the_newest_record_of_its_own_shard() -> None:
    """An older epoch or another shard's record never replaces the member list."""
    slot = Slot(2)
    slot.offer(_record(2, 5, "a", "b"))
    slot.offer(_record(2, 4, "old"))
    slot.offer(_record(3, 9, "other"))
    assert slot.users == ("a", "b")
    slot.offer(_record(2, 5, "c"))
    assert slot.users == ("c",), "the latest record of an epoch wins"


async def test_a_slot_wakes_its_driver_only_once_caught_up() -> None:
    """Records before the end of the partition wait; catching up, and later records, wake the driver."""
    slot = Slot(0)
    slot.offer(_record(0, 1, "a"))
    assert not slot.wake.is_set()
    slot.catch_up()
    assert slot.wake.is_set() and slot.caught_up
    slot.wake.clear()
    slot.offer(_record(0, 2, "a", "b"))
    assert slot.wake.is_set()
    assert slot.describe(now=10.0, wall=1e3) == {
        "users": 2,
        "fenced": False,
        "epoch": 2,
        "clientIndex": 0,
    }
