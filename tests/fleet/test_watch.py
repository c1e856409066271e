"""The assignment watch: partitions our consumer holds that the group coordinator gives to others."""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from bridge.fleet.membership import (
    Membership,
    MembershipEvent,
    _Assigned,
    _Disowned,
    _Revoked,
    consumer_config,
)
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


#: The real-broker tests check every second, not every session timeout (6 s at least).
WATCH_EVERY_S = 1.0


def control_settings(kafka: KafkaBroker) -> Settings:
    """A fleet id of its own and a 2-partition control topic; the broker's minimum session (6 s)."""
    return Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        id=f"watch-{uuid.uuid4().hex[:6]}",
        topic_shard_map=kafka.create_topic("control", partitions=2),
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
    )


class Recorder:
    """The events a Membership posts (a revocation is acknowledged at once: no shards to drain)."""

    def __init__(self) -> None:
        self.events: list[MembershipEvent] = []

    def __call__(self, event: MembershipEvent) -> None:
        self.events.append(event)
        if isinstance(event, _Revoked) and event.done is not None:
            event.done.set_result(None)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_a_missed_revocation_is_found_and_the_partition_given_up(kafka: KafkaBroker) -> None:
    """Two members of a real group; the first never hears that the second took a partition.

    Its revocation callback is dropped (the state a missed callback leaves: the application
    holds a partition the group coordinator gave away). The watch reads the coordinator's
    record, finds the partition given to the other member on two checks in a row, and posts
    it as disowned; the first member's own partition stays, and it keeps its consumer.
    """
    settings = control_settings(kafka)
    topic = settings.topic_shard_map
    recorder = Recorder()
    consumers: list[Any] = []

    def factory(conf: dict[str, Any]) -> Any:
        consumers.append(Consumer(conf))
        return consumers[-1]

    membership = Membership(settings, recorder, consumer_factory=factory, revoke_wait_s=5.0)
    membership._on_revoke = lambda *_args: None  # type: ignore[method-assign]  # the missed callback
    membership._watch_every_s = WATCH_EVERY_S
    membership.start()
    stop = threading.Event()
    theirs: list[int] = []
    second_done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def second_member() -> None:
        consumer = Consumer({**consumer_config(settings), "client.id": "second"})
        consumer.subscribe([topic], on_assign=lambda _c, parts: theirs.extend(tp.partition for tp in parts))
        try:
            while not stop.is_set():
                consumer.poll(0.2)
        finally:
            consumer.close()
            second_done.set_result(None)

    try:
        await wait_for(lambda: membership._held == {0, 1}, 30, "the first member gets both partitions")
        threading.Thread(target=second_member, daemon=True).start()
        await wait_for(lambda: len(theirs) == 1, 40, "the second member takes one")
        assert membership._held == {0, 1}, "the first did not hear of it"
        await wait_for(lambda: recorder.of(_Disowned), 40, "the watch gives it up")
        assert [e.partitions for e in recorder.of(_Disowned)] == [theirs]
        assert membership._held == {1 - theirs[0]}
        assert len(consumers) == 1, "a known member keeps its consumer"
    finally:
        stop.set()
        await asyncio.wrap_future(second_done)
        await membership.close()


class ForgetfulAdmin:
    """The group's record, as list_groups gives it: for the first ``rounds`` calls a stable group
    that does not know the asking member; then no answer (the check gives no verdict)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def list_groups(self, group: str, timeout: float) -> list[Any]:
        if self.rounds <= 0:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        self.rounds -= 1
        other = SimpleNamespace(id="someone-else", assignment=b"")
        return [SimpleNamespace(id=group, error=None, state="Stable", members=[other])]


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_a_member_the_group_forgot_rejoins_with_a_new_consumer(kafka: KafkaBroker) -> None:
    """The group's record does not know the member (its session was dropped and librdkafka never
    joined again): its partitions are disowned and a new consumer joins, which gets them back."""
    settings = control_settings(kafka)
    recorder = Recorder()
    consumers: list[Any] = []

    def factory(conf: dict[str, Any]) -> Any:
        consumers.append(Consumer(conf))
        return consumers[-1]

    membership = Membership(
        settings,
        recorder,
        consumer_factory=factory,
        admin_factory=lambda _conf: ForgetfulAdmin(STRIKES),
        revoke_wait_s=5.0,
    )
    membership._watch_every_s = WATCH_EVERY_S
    membership.start()
    try:
        await wait_for(lambda: membership._held == {0, 1}, 30, "the member gets both partitions")
        await wait_for(lambda: len(consumers) == 2, 40, "a second consumer replaces the first")
        assert [e.partitions for e in recorder.of(_Disowned)] == [[0, 1]]
        await wait_for(lambda: membership._held == {0, 1}, 40, "the new consumer joins and gets them")
        disowned_at = recorder.events.index(recorder.of(_Disowned)[0])
        gained = [p for e in recorder.events[disowned_at:] if isinstance(e, _Assigned) for p in e.partitions]
        assert sorted(gained) == [0, 1], "the new consumer's assignment reaches the fleet"
        with pytest.raises(RuntimeError):
            consumers[0].assignment()  # the old consumer was closed
    finally:
        await membership.close()


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)
