"""deploy/examples/wfm_consumer.py against the real broker, fed records in the bridge's format."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from bridge.model import Change, Kind, Origin
from bridge.records import encode_event
from tests.conftest import KafkaBroker, load_module
from tests.test_tail import change

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "wfm_consumer.py"
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


wfm = load_module("wfm_consumer", EXAMPLE)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.kafka
def test_time_in_state_from_committed_bridge_records(kafka: KafkaBroker) -> None:
    """Committed records only, duplicates and stale records ignored, reconcile closes the gap."""
    presence = kafka.create_topic("presence", partitions=3)
    routing = kafka.create_topic("routing", partitions=3)
    producer = Producer(kafka.config(**{"transactional.id": f"wfm-test-{uuid.uuid4().hex[:8]}"}))
    producer.init_transactions(30)

    def txn(*changes: tuple[str, Change], commit: bool = True) -> None:
        producer.begin_transaction()
        for topic, c in changes:
            producer.produce(topic, key=c.user_id.encode(), value=encode_event(c, 0, "ch-1"))
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)

    a_available = change("agent-a", Kind.PRESENCE, at(0), "AVAILABLE")
    a_on_queue = change("agent-a", Kind.PRESENCE, at(10), "ON_QUEUE")
    a_meal = change("agent-a", Kind.PRESENCE, at(70), "MEAL")
    # Found by reconciliation after a socket gap: Genesys's own changedAt still closes MEAL at 100.
    a_back = change("agent-a", Kind.PRESENCE, at(100), "ON_QUEUE", Origin.RECONCILE)
    a_idle = change("agent-a", Kind.ROUTING_STATUS, at(10), "IDLE")
    a_busy = change("agent-a", Kind.ROUTING_STATUS, at(20), "INTERACTING")
    b_available = change("agent-b", Kind.PRESENCE, at(0), "AVAILABLE")
    b_break_aborted = change("agent-b", Kind.PRESENCE, at(5), "BREAK")
    b_stale = change("agent-b", Kind.PRESENCE, at(-30), "OFFLINE")

    txn((presence, a_available), (presence, b_available))
    txn((presence, a_on_queue), (routing, a_idle))
    txn((presence, b_break_aborted), commit=False)  # never visible to read_committed
    txn((routing, a_busy), (presence, a_meal))
    txn((presence, a_meal))  # a new shard owner repeats a change: same eventId
    txn((presence, b_stale))
    txn((presence, a_back))

    consumer = wfm.build_consumer(kafka.bootstrap, f"wfm-{uuid.uuid4().hex[:6]}", [presence, routing])
    tracker = wfm.TimeInState()
    deadline = time.monotonic() + 30
    try:
        wfm.consume(
            consumer,
            tracker,
            should_stop=lambda: (
                tracker.applied + tracker.duplicates + tracker.stale >= 9 or time.monotonic() > deadline
            ),
        )
    finally:
        consumer.close()

    assert tracker.applied == 7
    assert tracker.duplicates == 1
    assert tracker.stale == 1
    assert tracker.current("agent-a") == ("ON_QUEUE", "INTERACTING")
    assert tracker.current("agent-b") == ("AVAILABLE", None)
    report = tracker.report(at(120))
    assert report["agent-a"]["presence"] == {
        "AVAILABLE": 600.0,
        "ON_QUEUE": 60 * 60.0 + 20 * 60.0,
        "MEAL": 30 * 60.0,
    }
    assert report["agent-a"]["routing"] == {"IDLE": 600.0, "INTERACTING": 100 * 60.0}
    assert report["agent-b"]["presence"] == {"AVAILABLE": 120 * 60.0}
    assert tracker.reconciled == {"agent-a": 1}
    text = tracker.table(at(120))
    assert "agent-a  presence[AVAILABLE=600s MEAL=1800s ON_QUEUE=4800s]" in text
    assert "(reconciled x1)" in text
