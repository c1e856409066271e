"""The assignment watch: partitions our consumer holds that the group coordinator gives to others."""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bridge.fleet.membership import Membership, MembershipEvent, _Assigned, _Disowned, _Revoked
from bridge.fleet.watch import STRIKES, AssignmentWatch, GroupView, assigned
from bridge.settings import Settings
from tests.conftest import KafkaBroker

ME = "member-a"


class Views:
    """What the fake group coordinator answers, round by round (None: no answer)."""

    def __init__(self, *views: GroupView | None) -> None:
        self.views = list(views)
        self.asked = 0

    def __call__(self) -> GroupView | None:
        self.asked += 1
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]


def stable(**members: set[int]) -> GroupView:
    return GroupView(True, {m.replace("_", "-"): frozenset(p) for m, p in members.items()})


def test_a_partition_the_group_gives_another_is_disowned_after_two_rounds() -> None:
    watch = AssignmentWatch(Views(stable(member_a={0}, member_b={1})))
    assert watch.check(ME, frozenset({0, 1})) == frozenset()
    assert watch.doubted == {1}, "one strike: doubted, not yet disowned"
    assert STRIKES == 2
    assert watch.check(ME, frozenset({0, 1})) == {1}
    assert watch.doubted == frozenset()


def test_a_member_the_group_does_not_know_is_disowned_of_everything() -> None:
    watch = AssignmentWatch(Views(stable(member_b={0, 1})))
    watch.check(ME, frozenset({0, 1}))
    assert watch.check(ME, frozenset({0, 1})) == {0, 1}


def test_agreement_a_rebalance_or_no_answer_is_no_verdict() -> None:
    agree = AssignmentWatch(Views(stable(member_a={0, 1})))
    assert [agree.check(ME, frozenset({0, 1})) for _ in range(3)] == [frozenset()] * 3
    rebalancing = AssignmentWatch(Views(GroupView(False, {"member-b": frozenset({1})})))
    assert [rebalancing.check(ME, frozenset({0, 1})) for _ in range(3)] == [frozenset()] * 3
    silent = AssignmentWatch(Views(None))
    assert [silent.check(ME, frozenset({0, 1})) for _ in range(3)] == [frozenset()] * 3


def test_strikes_must_come_in_a_row_with_the_same_assignment() -> None:
    # A rebalance between two rounds resets the count, and so does a changed assignment.
    views = Views(
        stable(member_a={0}),
        GroupView(False, {}),
        stable(member_a={0}),
        stable(member_a={0}),
        stable(member_a={0}),
    )
    watch = AssignmentWatch(views)
    assert watch.check(ME, frozenset({0, 1})) == frozenset()
    assert watch.check(ME, frozenset({0, 1})) == frozenset(), "rebalancing: the strike is forgotten"
    assert watch.check(ME, frozenset({0, 1})) == frozenset()
    assert watch.check(ME, frozenset({0, 1, 2})) == frozenset(), (
        "the assignment changed: a first strike again"
    )
    assert watch.check(ME, frozenset({0, 1, 2})) == {1, 2}


def test_nothing_held_asks_nothing() -> None:
    views = Views(stable(member_b={0}))
    watch = AssignmentWatch(views)
    assert watch.check(ME, frozenset()) == frozenset()
    assert views.asked == 0


def encoded(version: int, topics: dict[str, list[int]], user_data: bytes | None = None) -> bytes:
    """A consumer protocol assignment, written by hand from the protocol's layout."""
    out = struct.pack(">hi", version, len(topics))
    for name, partitions in topics.items():
        out += struct.pack(">h", len(name)) + name.encode()
        out += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    if user_data is None:
        return out + struct.pack(">i", -1)
    return out + struct.pack(">i", len(user_data)) + user_data


def test_a_member_assignment_is_decoded_for_the_control_topic_only() -> None:
    raw = encoded(3, {"other": [0, 1], "control": [2, 5]}, b"sticky")
    assert assigned(raw, "control") == {2, 5}
    assert assigned(raw, "missing") == frozenset()
    assert assigned(b"", "control") == frozenset(), "a member with nothing assigned"
    with pytest.raises(ValueError, match="assignment ends"):
        assigned(raw[:3], "control")
    with pytest.raises(ValueError, match="bad string length"):
        assigned(raw[:9], "control")


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_a_partition_held_without_the_group_is_given_up_on_a_real_broker(kafka: KafkaBroker) -> None:
    """Two members of a real group; the first also takes the second's partition behind the group's back.

    That is the state a missed rebalance callback leaves (librdkafka holding a partition the
    group coordinator gave away). The watch of the first sees it in the coordinator's record
    and gives the partition up: unassigned, and posted as disowned. Its own stays.
    """
    topic = kafka.create_topic("control", partitions=2)
    settings = Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        id=f"watch-{uuid.uuid4().hex[:6]}",
        topic_shard_map=topic,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
    )
    events: list[MembershipEvent] = []
    consumers: list[Any] = []

    def post(event: MembershipEvent) -> None:
        events.append(event)
        if isinstance(event, _Revoked) and event.done is not None:
            event.done.set_result(None)  # no shards to drain

    def factory(conf: dict[str, Any]) -> Any:
        consumers.append(Consumer(conf))
        return consumers[-1]

    def owned() -> set[int]:
        got: set[int] = set()
        for e in events:
            if isinstance(e, _Assigned):
                got |= set(e.partitions)
            elif isinstance(e, _Revoked | _Disowned):
                got -= set(e.partitions)
        return got

    membership = Membership(settings, post, consumer_factory=factory, revoke_wait_s=5.0)
    membership.start()
    other = threading.Event()
    other_done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def second_member() -> None:
        from bridge.fleet.membership import consumer_config

        consumer = Consumer({**consumer_config(settings), "client.id": "second"})
        consumer.subscribe([topic])
        try:
            while not other.is_set():
                consumer.poll(0.2)
        finally:
            consumer.close()
            other_done.set_result(None)

    try:
        await wait_for(lambda: owned() == {0, 1}, 30, "the first member gets both partitions")
        threading.Thread(target=second_member, daemon=True).start()
        await wait_for(lambda: len(owned()) == 1, 40, "the second member takes one")
        (mine,) = owned()
        theirs = 1 - mine
        consumers[0].incremental_assign([TopicPartition(topic, theirs, OFFSET_BEGINNING)])
        assert {tp.partition for tp in consumers[0].assignment()} == {0, 1}
        await wait_for(lambda: any(isinstance(e, _Disowned) for e in events), 40, "the watch gives it up")
        disowned = [e.partitions for e in events if isinstance(e, _Disowned)]
        assert disowned == [[theirs]]
        assert {tp.partition for tp in consumers[0].assignment()} == {mine}
        assert membership.doubted == frozenset()
    finally:
        other.set()
        await asyncio.wrap_future(other_done)
        await membership.close()


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)
