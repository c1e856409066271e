"""``presence-bridge tail`` in its plain (non-terminal) mode against the real broker."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)
from bridge.records import encode_event, encode_state
from bridge.tail import TailView, format_age
from tests.conftest import KafkaBroker

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def change(user: str, kind: Kind, at: datetime, value: str, origin: Origin = Origin.STREAM) -> Change:
    """A change as the bridge builds it (its eventId included)."""
    v: PresenceValue | RoutingValue = (
        PresenceValue(system_presence=value, presence_definition_id=f"def-{value}", message="")
        if kind is Kind.PRESENCE
        else RoutingValue(value)
    )
    return Change(user, kind, at, v, at, origin, event_id=event_id(user, kind, at, v))


def state_of(user: str, presence: Change | None, routing: Change | None) -> AgentState:
    state = AgentState(user)
    if presence is not None:
        assert isinstance(presence.value, PresenceValue)
        state.presence = VersionedPresence(presence.value, presence.changed_at, presence.event_id)
    if routing is not None:
        assert isinstance(routing.value, RoutingValue)
        state.routing = VersionedRouting(routing.value, routing.changed_at, routing.event_id)
    return state


def test_view_ignores_events_the_state_already_holds() -> None:
    """An event at or before the loaded state's change is not applied twice."""
    view = TailView()
    p = change("u1", Kind.PRESENCE, T0, "AVAILABLE")
    view.load_state("u1", encode_state(state_of("u1", p, None), 0, T0))
    assert view.apply_event(encode_event(p, 0, None)) is None
    older = change("u1", Kind.PRESENCE, T0 - timedelta(seconds=5), "MEAL")
    assert view.apply_event(encode_event(older, 0, None)) is None
    newer = change("u1", Kind.PRESENCE, T0 + timedelta(seconds=5), "ON_QUEUE")
    line = view.apply_event(encode_event(newer, 0, None))
    assert line is not None and "u1 presence ON_QUEUE" in line
    assert view.presence_counts() == {"ON_QUEUE": 1}
    view.load_state("u1", None)
    assert view.rows == {}
    assert format_age(3725) == "1h02m" and format_age(65) == "1m05s"


def test_table_fits_the_terminal() -> None:
    view = TailView()
    for i in range(50):
        view.load_state(
            f"u{i}",
            encode_state(state_of(f"u{i}", change(f"u{i}", Kind.PRESENCE, T0, "AVAILABLE"), None), 0, T0),
        )
    lines = view.table(T0 + timedelta(minutes=2), 100, 20, "title")
    assert len(lines) <= 20
    assert all(len(line) <= 100 for line in lines)
    assert "AVAILABLE 50" in lines[1]


@pytest.fixture
def topics(kafka: KafkaBroker) -> Iterator[dict[str, str]]:
    yield {
        "presence": kafka.create_topic("presence", partitions=3),
        "routing": kafka.create_topic("routing", partitions=3),
        "state": kafka.create_topic("state", partitions=3, config={"cleanup.policy": "compact"}),
    }


def _txn_producer(kafka: KafkaBroker) -> Producer:
    producer = Producer(kafka.config(**{"transactional.id": f"tail-test-{uuid.uuid4().hex[:8]}"}))
    producer.init_transactions(30)
    return producer


def _write(producer: Producer, topics: dict[str, str], c: Change, state: AgentState, commit: bool) -> None:
    producer.begin_transaction()
    topic = topics["presence"] if c.kind is Kind.PRESENCE else topics["routing"]
    producer.produce(topic, key=c.user_id.encode(), value=encode_event(c, 0, "ch-1"))
    producer.produce(topics["state"], key=c.user_id.encode(), value=encode_state(state, 0, c.changed_at))
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)
        producer.abort_transaction(30)


@pytest.mark.kafka
def test_tail_plain_mode_loads_state_then_follows_committed_changes(
    kafka: KafkaBroker, topics: dict[str, str]
) -> None:
    """State topic first, then one line per committed change; aborted ones never show; --user filters."""
    producer = _txn_producer(kafka)
    p_a = change("agent-a", Kind.PRESENCE, T0, "AVAILABLE")
    r_a = change("agent-a", Kind.ROUTING_STATUS, T0, "IDLE")
    p_b = change("agent-b", Kind.PRESENCE, T0, "MEAL")
    _write(producer, topics, p_a, state_of("agent-a", p_a, None), True)
    _write(producer, topics, r_a, state_of("agent-a", p_a, r_a), True)
    _write(producer, topics, p_b, state_of("agent-b", p_b, None), True)

    def start(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "tail",
                "--bootstrap",
                kafka.bootstrap,
                "--state-topic",
                topics["state"],
                "--topic",
                topics["presence"],
                "--topic",
                topics["routing"],
                "--seconds",
                "8",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    everyone = start()
    only_b = start("--user", "agent-b")
    lines: dict[str, list[str]] = {"all": [], "b": []}
    loaded = {"all": threading.Event(), "b": threading.Event()}

    def read(name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines[name].append(line.rstrip("\n"))
            if line.startswith("tail: "):
                loaded[name].set()

    readers = [
        threading.Thread(target=read, args=("all", everyone), daemon=True),
        threading.Thread(target=read, args=("b", only_b), daemon=True),
    ]
    for t in readers:
        t.start()
    assert loaded["all"].wait(30) and loaded["b"].wait(30), lines
    time.sleep(0.5)
    p_b2 = change("agent-b", Kind.PRESENCE, T0 + timedelta(seconds=30), "ON_QUEUE")
    r_a2 = change("agent-a", Kind.ROUTING_STATUS, T0 + timedelta(seconds=40), "INTERACTING")
    p_a_aborted = change("agent-a", Kind.PRESENCE, T0 + timedelta(seconds=50), "BREAK")
    _write(producer, topics, p_b2, state_of("agent-b", p_b2, None), True)
    _write(producer, topics, p_a_aborted, state_of("agent-a", p_a_aborted, r_a2), False)
    _write(producer, topics, r_a2, state_of("agent-a", p_a, r_a2), True)
    assert everyone.wait(30) == 0, everyone.stderr.read() if everyone.stderr else ""
    assert only_b.wait(30) == 0
    for t in readers:
        t.join(5)

    out = lines["all"]
    assert "state agent-a presence=AVAILABLE routing=IDLE since=2026-11-30T09:00:00.000Z" in out
    assert "state agent-b presence=MEAL routing=- since=2026-11-30T09:00:00.000Z" in out
    assert f"tail: 2 agents loaded from {topics['state']}" in out
    changes = [line for line in out if line.startswith("change ")]
    assert changes == [
        "change 2026-11-30T09:00:30.000Z agent-b presence ON_QUEUE [stream]",
        "change 2026-11-30T09:00:40.000Z agent-a routing INTERACTING [stream]",
    ]
    assert out[-1] == "counts agents=2 changes=2 | AVAILABLE=1 ON_QUEUE=1 | -=1 INTERACTING=1"
    only = lines["b"]
    assert [line for line in only if line.startswith(("state ", "change "))] == [
        "state agent-b presence=MEAL routing=- since=2026-11-30T09:00:00.000Z",
        "change 2026-11-30T09:00:30.000Z agent-b presence ON_QUEUE [stream]",
    ]
