"""bridge.statestore against the real broker: compacted state read back, tombstones, speed."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from bridge.errors import SinkError
from bridge.events import Accepted, ShardState
from bridge.model import AgentState, Change, Kind, Origin, PresenceValue, RoutingValue
from bridge.records import encode_state
from bridge.settings import Settings
from bridge.sink import ShardSink
from bridge.statestore import load_shard_states, load_states
from tests.conftest import KafkaBroker

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
WRITTEN = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def make_settings(kafka: KafkaBroker, state_topic: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        id=f"test-{uuid.uuid4().hex[:8]}",
        topic_presence=kafka.create_topic("presence"),
        topic_routing_status=kafka.create_topic("routing"),
        topic_agent_state=state_topic,
        topic_dlq=kafka.create_topic("dlq"),
    )


def change(user: str, n: int, kind: Kind) -> Change:
    value: PresenceValue | RoutingValue
    if kind is Kind.PRESENCE:
        value = PresenceValue("MEAL" if n % 2 else "AVAILABLE", f"d-{n % 3}", "msg" if n % 2 else None)
    else:
        value = RoutingValue("IDLE" if n % 2 else "INTERACTING")
    at = T0 + timedelta(milliseconds=n)
    return Change(user, kind, at, value, at, Origin.STREAM)


def encoded(state: AgentState) -> bytes:
    return encode_state(state, 0, WRITTEN)


async def test_round_trip_with_updates_and_tombstones(kafka: KafkaBroker) -> None:
    """States written by the sink load back as the latest per agent; tombstoned agents are gone."""
    settings = make_settings(
        kafka, kafka.create_topic("state", partitions=3, config={"cleanup.policy": "compact"})
    )
    shard = ShardState(labels={"d-1": "Lunch"})
    sink = ShardSink(settings, 0)
    await sink.start()
    try:
        for n in range(1, 4):
            for u in range(30):
                for kind in Kind:
                    got = shard.apply(change(f"u-{u}", n * 10 + u % 7, kind))
                    assert isinstance(got, Accepted)
                    sink.submit(got, None)
        for u in range(25, 30):
            assert shard.remove_user(f"u-{u}")
            sink.submit_tombstone(f"u-{u}")
        await sink.flush()
    finally:
        await sink.close()

    loaded = load_states(settings)
    assert sorted(loaded) == sorted(shard.users())
    assert len(loaded) == 25
    for user, state in loaded.items():
        expected = shard.get(user)
        assert expected is not None
        assert encoded(state) == encoded(expected)
    assert any(s.presence and s.presence.value.presence_label == "Lunch" for s in loaded.values())

    some = load_states(settings, user_ids=["u-1", "u-2", "u-27", "nobody"])
    assert sorted(some) == ["u-1", "u-2"]


async def test_uncommitted_states_are_not_loaded(kafka: KafkaBroker) -> None:
    """Aborted states are never loaded; a transaction open at the call is waited for, then obeyed."""
    topic = kafka.create_topic("state", config={"cleanup.policy": "compact"})
    settings = make_settings(kafka, topic)
    producer = Producer(kafka.config(**{"transactional.id": f"tx-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"u-ok", value=encoded(AgentState("u-ok")))
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"u-aborted", value=encoded(AgentState("u-aborted")))
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"u-open", value=encoded(AgentState("u-open")))
    producer.produce(topic, key=b"u-ok", value=None)
    producer.flush(30)
    loading = asyncio.create_task(asyncio.to_thread(load_states, settings, None, timeout_s=20))
    await asyncio.sleep(0.5)
    assert not loading.done(), "the load waits for the open transaction"
    producer.commit_transaction(30)
    assert sorted(await loading) == ["u-open"]


def test_empty_and_missing_topics(kafka: KafkaBroker) -> None:
    """An empty state topic loads as no agents; a missing one is a SinkError."""
    settings = make_settings(kafka, kafka.create_topic("state", partitions=2))
    assert load_states(settings) == {}
    with pytest.raises(SinkError):
        load_states(settings.model_copy(update={"topic_agent_state": "no-such-topic"}), timeout_s=5)


def test_a_shard_load_tells_since_when_the_fleet_writes_states_of_other_agents(kafka: KafkaBroker) -> None:
    """fleet_since: the oldest updatedAt of the latest states that carry this fleet's bridge-id (not
    another fleet's, not a tombstone, not one of the members)."""
    topic = kafka.create_topic("state", config={"cleanup.policy": "compact"})
    settings = make_settings(kafka, topic)
    producer = Producer(kafka.config())

    def put(user: str, fleet: str, value: bytes | None) -> None:
        producer.produce(topic, key=user.encode(), value=value, headers=[("bridge-id", fleet.encode())])
        producer.flush(10)

    put("member", settings.id, encoded(AgentState("member")))
    put("elsewhere", "another-fleet", encoded(AgentState("elsewhere")))
    put("gone", settings.id, encoded(AgentState("gone")))
    put("gone", settings.id, None)
    first = load_shard_states(settings, ["member", "new"], 0)
    assert sorted(first.states) == ["member"] and first.fleet_since is None
    put("other", settings.id, encoded(AgentState("other")))
    assert load_shard_states(settings, ["member", "new"], 0).fleet_since == WRITTEN


AGENTS = 20_000


def test_twenty_thousand_agents_load_in_seconds(kafka: KafkaBroker) -> None:
    """20,000 agents (two records each, one skipped by a tombstone) load within a few seconds."""
    topic = kafka.create_topic("state", partitions=6, config={"cleanup.policy": "compact"})
    settings = make_settings(kafka, topic)
    producer = Producer(kafka.config(**{"linger.ms": 20, "compression.type": "lz4"}))
    state = ShardState()
    for u in range(AGENTS):
        for kind in Kind:
            got = state.apply(change(f"user-{u:05d}", u % 50, kind))
            assert isinstance(got, Accepted)
            producer.produce(topic, key=got.change.user_id.encode(), value=encoded(got.state))
        if u % 5_000 == 0:
            producer.poll(0)
    producer.produce(topic, key=b"user-00000", value=None)
    assert producer.flush(30) == 0

    t0 = time.monotonic()
    loaded = load_states(settings)
    elapsed = time.monotonic() - t0
    assert len(loaded) == AGENTS - 1
    assert "user-00000" not in loaded
    print(f"load_states: {AGENTS} agents ({2 * AGENTS + 1} records) in {elapsed:.2f} s")
    assert elapsed < 10.0
