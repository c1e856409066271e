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


def _doc(user: str, minutes: float, state: str, event: str, **extra: object) -> dict[str, object]:
    return {
        "schema": wfm.PRESENCE_SCHEMA,
        "eventId": event,
        "userId": user,
        "changedAt": at(minutes).isoformat().replace("+00:00", "Z"),
        "systemPresence": state,
        "shard": 3,
        **extra,
    }


def test_late_backfill_splits_the_interval_it_belongs_to() -> None:
    """A late record moves the time inside a past interval to its state; a plain older one is stale."""
    tracker = wfm.TimeInState()
    tracker.apply(_doc("a", 0, "ON_QUEUE", "e1"))
    tracker.apply(_doc("a", 100, "ON_QUEUE", "e2", origin="reconcile"))
    # The 40-minute break inside the gap, found in Genesys's history after the hold:
    assert tracker.apply(_doc("a", 30, "BREAK", "e3", origin="backfill", late=True))
    assert tracker.apply(_doc("a", 70, "ON_QUEUE", "e4", origin="backfill", late=True))
    assert not tracker.apply(_doc("a", 50, "MEAL", "e5"))  # older and not late: stale
    assert not tracker.apply(_doc("a", 30, "BREAK", "e3", origin="backfill", late=True))  # repeat
    assert tracker.report(at(120))["a"]["presence"] == {"ON_QUEUE": 80 * 60.0, "BREAK": 40 * 60.0}
    assert (tracker.late, tracker.stale, tracker.duplicates) == (2, 1, 1)
    assert tracker.backfilled == {"a": 2}
    assert tracker.current("a") == ("ON_QUEUE", None)


def test_late_record_older_than_the_remembered_history_is_counted_not_placed() -> None:
    """Past HISTORY_MAX transitions the oldest intervals are folded; a late record before them is too late."""
    tracker = wfm.TimeInState()
    for i in range(wfm.HISTORY_MAX + 10):
        tracker.apply(_doc("a", i, "ON_QUEUE" if i % 2 else "AVAILABLE", f"e{i}"))
    assert not tracker.apply(_doc("a", 0.5, "BREAK", "late-1", origin="backfill", late=True))
    assert tracker.too_late == 1
    totals = tracker.report(at(wfm.HISTORY_MAX + 10))["a"]["presence"]
    assert sum(totals.values()) == (wfm.HISTORY_MAX + 10) * 60.0


def test_unrecovered_gap_marks_its_shards_agents_until_recovered() -> None:
    """A gap with recovered false is listed for the agents of its shard; a later record clears it."""
    tracker = wfm.TimeInState()
    tracker.apply(_doc("a", 0, "ON_QUEUE", "e1"))
    gap = {
        "schema": wfm.GAPS_SCHEMA,
        "gapId": "g1",
        "shard": 3,
        "from": "2026-11-30T09:10:00.000Z",
        "to": "2026-11-30T09:11:00.000Z",
        "recovered": False,
    }
    tracker.apply(gap)
    tracker.apply({**gap, "gapId": "g2", "shard": 4})
    assert tracker.unobservable("a") == [(at(10), at(11))]
    assert "(unobservable 09:10:00-09:11:00)" in tracker.table(at(20))
    tracker.apply({**gap, "recovered": True})
    assert tracker.unobservable("a") == []
