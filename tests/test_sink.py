"""bridge.sink against the real broker: transactions, batching, records, fencing, outages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bridge.errors import FencedError, SinkError
from bridge.events import Accepted, ShardState
from bridge.kafka.state import decode_state
from bridge.kafka.writer import ABORT_STUCK_CALLS
from bridge.metrics import DLQ_RECORDS, EVENT_DELIVERY, FENCED, PRODUCE_ERRORS, RECORDS_PRODUCED
from bridge.model import Change, Kind, Origin, PendingBackfill, PresenceValue, RoutingValue
from bridge.records import GapRecord, gap_id, model_for
from bridge.settings import DEFAULT_TOPIC_GAPS, Settings
from bridge.sink import ShardSink, transactional_id
from tests.conftest import KafkaBroker, localkafka
from tests.fakes import NullProducer

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
STATUSES = ["IDLE", "INTERACTING", "COMMUNICATING", "NOT_RESPONDING", "OFF_QUEUE"]


def make_settings(bootstrap: str, topics: dict[str, str], **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        id=f"test-{uuid.uuid4().hex[:8]}",
        topic_presence=topics["presence"],
        topic_routing_status=topics["routing"],
        topic_agent_state=topics["state"],
        topic_dlq=topics["dlq"],
        topic_gaps=topics.get("gaps", DEFAULT_TOPIC_GAPS),
        **extra,
    )


@pytest.fixture
def topics(kafka: KafkaBroker) -> dict[str, str]:
    return {
        "presence": kafka.create_topic("presence", partitions=2),
        "routing": kafka.create_topic("routing", partitions=2),
        "state": kafka.create_topic("state", config={"cleanup.policy": "compact"}),
        "dlq": kafka.create_topic("dlq"),
    }


def routing_change(user: str, n: int, *, correlation: str | None = "corr-1") -> Change:
    return Change(
        user_id=user,
        kind=Kind.ROUTING_STATUS,
        changed_at=T0 + timedelta(milliseconds=n),
        value=RoutingValue(STATUSES[n % len(STATUSES)]),
        observed_at=T0 + timedelta(milliseconds=n + 5),
        origin=Origin.STREAM,
        correlation_id=correlation,
        genesys_topic=f"v2.users.{user}.routingStatus",
        received_at=time.monotonic(),
    )


def presence_change(user: str, n: int) -> Change:
    return Change(
        user_id=user,
        kind=Kind.PRESENCE,
        changed_at=T0 + timedelta(milliseconds=n),
        value=PresenceValue("MEAL", "d-lunch", "", "PURECLOUD", True),
        observed_at=T0 + timedelta(milliseconds=n + 5),
        origin=Origin.RECONCILE,
    )


def accepted(state: ShardState, change: Change) -> Accepted:
    got = state.apply(change)
    assert isinstance(got, Accepted)
    return got


def read_all(
    bootstrap: str, topic: str, *, committed: bool = True, expect: int = 0, timeout_s: float = 20.0
) -> list[Any]:
    """Every record of ``topic`` up to its end; re-read until ``expect`` are there."""
    deadline = time.monotonic() + timeout_s
    while True:
        msgs = _read_once(bootstrap, topic, committed)
        if len(msgs) >= expect or time.monotonic() > deadline:
            return msgs
        time.sleep(0.2)


def _read_once(bootstrap: str, topic: str, committed: bool) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        eof: set[int] = set()
        out: list[Any] = []
        deadline = time.monotonic() + 15
        while len(eof) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            out.append(msg)
        return out
    finally:
        consumer.close()


def value_of(msg: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(msg.value())
    model_for(doc["schema"]).model_validate(doc)  # extra=forbid: exactly the contract's fields
    return doc


async def test_records_visible_to_read_committed_only_after_commit(
    kafka: KafkaBroker, topics: dict[str, str]
) -> None:
    """Event and state are produced in one open transaction and become visible together at commit."""
    settings = make_settings(kafka.bootstrap, topics, txn_max_ms=60_000, txn_max_records=1000)
    sink = ShardSink(settings, 3)
    await sink.start()
    try:
        state = ShardState()
        sink.submit(accepted(state, routing_change("u-1", 1)), "chan-1")
        assert sink.pending == 2
        uncommitted = read_all(kafka.bootstrap, topics["routing"], committed=False, expect=1)
        assert len(uncommitted) == 1, "the record reached the broker inside the open transaction"
        assert read_all(kafka.bootstrap, topics["routing"]) == []
        assert read_all(kafka.bootstrap, topics["state"]) == []
        await sink.flush()
        assert sink.pending == 0
        assert len(read_all(kafka.bootstrap, topics["routing"], expect=1)) == 1
        assert len(read_all(kafka.bootstrap, topics["state"], expect=1)) == 1
    finally:
        await sink.close()


async def test_event_record_headers_key_and_values(kafka: KafkaBroker, topics: dict[str, str]) -> None:
    """Records carry the userId key, the contract headers and values valid against the models."""
    settings = make_settings(kafka.bootstrap, topics)
    sink = ShardSink(settings, 7)
    produced_before = RECORDS_PRODUCED.labels(topic=topics["presence"])._value.get()
    delivered_before = EVENT_DELIVERY.sum(), EVENT_DELIVERY.count()
    await sink.start()
    try:
        state = ShardState(labels={"d-lunch": "Lunch"})
        sink.submit(accepted(state, routing_change("u-9", 1)), "chan-9")
        sink.submit(accepted(state, presence_change("u-9", 2)), None)
        await sink.flush()
    finally:
        await sink.close()
    [routing] = read_all(kafka.bootstrap, topics["routing"], expect=1)
    assert routing.key() == b"u-9"
    headers = dict(routing.headers())
    assert headers == {
        "schema": b"genesys.routing-status.v1",
        "event-type": b"routing-status",
        "genesys-topic": b"v2.users.u-9.routingStatus",
        "correlation-id": b"corr-1",
        "bridge-id": settings.id.encode(),
    }
    doc = value_of(routing)
    assert (doc["status"], doc["shard"], doc["channelId"], doc["origin"]) == (
        "INTERACTING",
        7,
        "chan-9",
        "stream",
    )
    [pres] = read_all(kafka.bootstrap, topics["presence"], expect=1)
    assert dict(pres.headers()) == {
        "schema": b"genesys.presence.v1",
        "event-type": b"presence",
        "bridge-id": settings.id.encode(),
    }
    pdoc = value_of(pres)
    assert (pdoc["presenceLabel"], pdoc["origin"], pdoc["channelId"]) == ("Lunch", "reconcile", None)
    states = read_all(kafka.bootstrap, topics["state"], expect=2)
    assert [m.key() for m in states] == [b"u-9", b"u-9"]
    last = value_of(states[-1])
    assert last["routingStatus"]["status"] == "INTERACTING"
    assert last["presence"]["presenceLabel"] == "Lunch"
    assert dict(states[-1].headers())["schema"] == b"genesys.agent-state.v1"
    assert RECORDS_PRODUCED.labels(topic=topics["presence"])._value.get() == produced_before + 1
    assert EVENT_DELIVERY.count() == delivered_before[1] + 1


async def test_transaction_closes_at_the_record_limit(kafka: KafkaBroker, topics: dict[str, str]) -> None:
    """With a long time limit, a transaction commits as soon as it holds txn_max_records."""
    settings = make_settings(kafka.bootstrap, topics, txn_max_ms=60_000, txn_max_records=4)
    sink = ShardSink(settings, 0)
    await sink.start()
    try:
        state = ShardState()
        for n in range(3):  # 6 records: one full transaction of 4, then 2 waiting
            sink.submit(accepted(state, routing_change(f"u-{n}", n)), None)
        assert len(read_all(kafka.bootstrap, topics["routing"], expect=2)) == 2
        await asyncio.sleep(0.5)
        assert len(read_all(kafka.bootstrap, topics["routing"])) == 2
        assert sink.pending == 2
    finally:
        await sink.close()
    assert len(read_all(kafka.bootstrap, topics["routing"], expect=3)) == 3, "close commits the rest"


async def test_atomic_submissions_commit_together_and_marked_states_say_what_is_pending(
    kafka: KafkaBroker, topics: dict[str, str]
) -> None:
    """Under atomic() records are never split across transactions, even past txn_max_records; an
    agent in pending_backfills gets a backfill field in its state; submit_state writes a state alone."""
    settings = make_settings(kafka.bootstrap, topics, txn_max_ms=60_000, txn_max_records=4)
    sink = ShardSink(settings, 0)
    pending = PendingBackfill(T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=5), ("e-1", "e-2"))

    class Marked:
        def pending(self) -> PendingBackfill:
            return pending

    sink.pending_backfills = {"u-0": Marked()}
    await sink.start()
    try:
        state = ShardState()
        with sink.atomic():
            for n in range(3):  # 6 records: more than one transaction holds, in one group
                sink.submit(accepted(state, routing_change(f"u-{n}", n)), None)
            assert sink.pending == 0, "nothing is queued before the group ends"
        assert len(read_all(kafka.bootstrap, topics["routing"], expect=3)) == 3
        assert sink.pending == 0
        sink.pending_backfills = {}
        current = state.get("u-0")
        assert current is not None
        sink.submit_state(current)
        await sink.flush()
    finally:
        await sink.close()
    assert len(read_all(kafka.bootstrap, topics["routing"])) == 3, "submit_state writes no event"
    states = [value_of(m) for m in read_all(kafka.bootstrap, topics["state"], expect=4)]
    u0 = [doc for doc in states if doc["userId"] == "u-0"]
    assert u0[0]["backfill"] == {
        "presenceFrom": "2026-05-01T09:00:00.000Z",
        "routingStatusFrom": "2026-05-01T09:00:01.000Z",
        "to": "2026-05-01T09:00:05.000Z",
        "eventIds": ["e-1", "e-2"],
    }
    assert "backfill" not in u0[1] and u0[1]["routingStatus"] == u0[0]["routingStatus"]
    assert all("backfill" not in doc for doc in states if doc["userId"] != "u-0")
    assert decode_state("u-0", orjson.dumps(u0[0])).pending == pending


async def test_transaction_closes_after_the_time_limit(kafka: KafkaBroker, topics: dict[str, str]) -> None:
    """Without flush, a small batch is committed about txn_max_ms after its first record."""
    settings = make_settings(kafka.bootstrap, topics, txn_max_ms=150, txn_max_records=10_000)
    sink = ShardSink(settings, 0)
    await sink.start()
    try:
        sink.submit(accepted(ShardState(), routing_change("u-1", 1)), None)
        t0 = time.monotonic()
        while sink.pending and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        assert sink.pending == 0
        assert 0.1 <= elapsed < 2.0
    finally:
        await sink.close()


async def test_tombstone_and_dlq(kafka: KafkaBroker, topics: dict[str, str]) -> None:
    """A tombstone is a null state value; a DLQ record is keyed by shard and carries the reason."""
    settings = make_settings(kafka.bootstrap, topics)
    sink = ShardSink(settings, 5)
    dlq_before = DLQ_RECORDS.labels(reason="bad_json")._value.get()
    await sink.start()
    try:
        sink.submit_tombstone("u-gone")
        sink.submit_dlq("bad_json", "Expecting value: line 1", "{not json", "chan-5")
        await sink.flush()
        assert sink.healthy
    finally:
        await sink.close()
    assert not sink.healthy
    [tomb] = read_all(kafka.bootstrap, topics["state"], expect=1)
    assert (tomb.key(), tomb.value()) == (b"u-gone", None)
    [dlq] = read_all(kafka.bootstrap, topics["dlq"], expect=1)
    assert dlq.key() == b"5"
    doc = value_of(dlq)
    assert (doc["reason"], doc["frame"], doc["channelId"]) == ("bad_json", "{not json", "chan-5")
    assert DLQ_RECORDS.labels(reason="bad_json")._value.get() == dlq_before + 1
    with pytest.raises(SinkError):
        sink.submit_tombstone("u-late")


async def test_late_record_skips_the_state_and_gap_record_lands_by_shard(
    kafka: KafkaBroker, topics: dict[str, str]
) -> None:
    """A late backfill change is an event record with late: true only; a gap record is keyed shard-<n>."""
    topics = {**topics, "gaps": kafka.create_topic("gaps")}
    settings = make_settings(kafka.bootstrap, topics)
    sink = ShardSink(settings, 4)
    produced_before = RECORDS_PRODUCED.labels(topic=topics["gaps"])._value.get()
    state = ShardState()
    newer = accepted(state, routing_change("u-4", 50))
    ten_ms = T0 + timedelta(milliseconds=10)
    older = Change(
        "u-4", Kind.ROUTING_STATUS, ten_ms, RoutingValue("OFF_QUEUE"), T0, Origin.BACKFILL, "e-old"
    )
    gap = GapRecord.model_validate(
        {
            "schema": "bridge.gaps.v1",
            "gap_id": gap_id(settings.id, 4, T0, "reconnect"),
            "shard": 4,
            "channel_id": "chan-4",
            "cause": "reconnect",
            "from": T0,
            "to": T0 + timedelta(seconds=30),
            "agents": 1,
            "backfilled": 1,
            "late": 1,
            "recovered": True,
            "fallback": None,
            "written_at": T0 + timedelta(seconds=45),
        }
    )
    await sink.start()
    try:
        sink.submit(newer, "chan-4")
        sink.submit_late(older, "chan-4")
        sink.submit_gap(gap)
        assert sink.pending == 4  # event + state, late event, gap: one transactional flow
        await sink.flush()
    finally:
        await sink.close()
    events = read_all(kafka.bootstrap, topics["routing"], expect=2)
    assert [value_of(m).get("late") for m in events] == [None, True]
    late = events[1]
    assert late.key() == b"u-4"
    assert dict(late.headers()) == {
        "schema": b"genesys.routing-status.v1",
        "event-type": b"routing-status",
        "bridge-id": settings.id.encode(),
    }
    assert (value_of(late)["origin"], value_of(late)["eventId"], value_of(late)["status"]) == (
        "backfill",
        "e-old",
        "OFF_QUEUE",
    )
    [only_state] = read_all(kafka.bootstrap, topics["state"], expect=1)
    assert value_of(only_state)["routingStatus"]["eventId"] == newer.change.event_id  # the newer state stays
    [written] = read_all(kafka.bootstrap, topics["gaps"], expect=1)
    assert written.key() == b"shard-4"
    assert dict(written.headers()) == {
        "schema": b"bridge.gaps.v1",
        "event-type": b"gap",
        "bridge-id": settings.id.encode(),
    }
    doc = value_of(written)
    assert (doc["gapId"], doc["from"], doc["to"], doc["recovered"]) == (
        gap.gap_id,
        "2026-05-01T09:00:00.000Z",
        "2026-05-01T09:00:30.000Z",
        True,
    )
    assert RECORDS_PRODUCED.labels(topic=topics["gaps"])._value.get() == produced_before + 1


async def test_second_owner_fences_the_first(kafka: KafkaBroker, topics: dict[str, str]) -> None:
    """A second sink on the same shard fences the first: it signals FencedError and writes nothing more."""
    settings = make_settings(kafka.bootstrap, topics)
    seen: list[SinkError] = []
    first = ShardSink(settings, 2, on_failure=seen.append)
    await first.start()
    state = ShardState()
    first.submit(accepted(state, routing_change("u-1", 1)), None)
    await first.flush()
    fenced_before = FENCED._value.get()

    second = ShardSink(settings, 2)
    assert second.transactional_id == first.transactional_id == transactional_id(settings, 2)
    await second.start()
    try:
        first.submit(accepted(state, routing_change("u-1", 2)), None)  # the zombie writes on
        with pytest.raises(FencedError):
            await asyncio.wait_for(first.flush(), 30)
        assert first.failed is not None
        assert isinstance(await first.failed, FencedError)
        assert seen and isinstance(seen[0], FencedError)
        assert not first.healthy
        assert FENCED._value.get() == fenced_before + 1
        with pytest.raises(FencedError):
            first.submit(accepted(state, routing_change("u-1", 3)), None)

        second.submit(accepted(state, routing_change("u-1", 4)), None)
        await second.flush()
    finally:
        await first.close()
        await second.close()
    statuses = [value_of(m)["changedAt"] for m in read_all(kafka.bootstrap, topics["routing"], expect=2)]
    assert statuses == ["2026-05-01T09:00:00.001Z", "2026-05-01T09:00:00.004Z"]


#: A frozen broker must not fence itself when it wakes: its controller would take the
#: leadership from it, and a commit in that moment loses its markers (see the template).
BROKER_SESSION_TIMEOUT_MS = 60_000
#: A TimeoutError ended the outage test once, on a loaded 2-CPU machine, during the restart.
RESTART_TIMEOUT_S = 150.0


def broker_pid(data_dir: Path) -> int | None:
    """The pid of the broker of ``data_dir`` (localkafka's pid file), None when none runs."""
    pid_file = data_dir / localkafka.PID_FILE
    return int(pid_file.read_text().strip()) if pid_file.exists() else None


#: The producer's own abort is what the outage tests exercise: their broker never aborts a
#: timed-out transaction itself. A sweep that comes before the writer's own abort fences the
#: writer (test_broker_timing_out_a_transaction_fences_its_writer), and one in the second after
#: a restarted node's old registration expires skips its markers (see the broker template).
NO_TIMEOUT_SWEEP_MS = 3_600_000
#: The broker that does abort timed-out transactions looks for them this often.
TIMEOUT_SWEEP_MS = 500


@dataclasses.dataclass(frozen=True)
class OwnBroker:
    """A broker of the test's own, to stop, start or freeze; restarted with the properties it began with."""

    data_dir: Path
    port: int
    extra: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = RESTART_TIMEOUT_S) -> None:
        localkafka.start(self.data_dir, self.port, None, timeout_s, True, self.extra)

    def stop(self) -> None:
        localkafka.stop(self.data_dir)

    def pid(self) -> int | None:
        return broker_pid(self.data_dir)


@contextlib.contextmanager
def own_broker(tmp_path: Path, sweep_ms: int, **extra: str) -> Iterator[OwnBroker]:
    """An :class:`OwnBroker` that sweeps timed-out transactions every ``sweep_ms``, with broker
    properties ``extra`` (dots written as underscores)."""
    props = {k.replace("_", "."): v for k, v in extra.items()}
    props["transaction.abort.timed.out.transaction.cleanup.interval.ms"] = str(sweep_ms)
    broker = OwnBroker(tmp_path / "kafka", localkafka.free_port(), props)
    broker.start(localkafka.DEFAULT_START_TIMEOUT_S)
    try:
        yield broker
    finally:
        pid = broker.pid()
        if pid is not None:  # a failed freeze test must not leave it stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        broker.stop()


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """Stopped and started again: Kafka's 9 s broker session, so the new process registers soon."""
    with own_broker(tmp_path, NO_TIMEOUT_SWEEP_MS) as broker:
        yield broker


@pytest.fixture
def freezable_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """Frozen and woken again: a long session timeout keeps it from fencing itself on waking."""
    with own_broker(
        tmp_path, NO_TIMEOUT_SWEEP_MS, broker_session_timeout_ms=str(BROKER_SESSION_TIMEOUT_MS)
    ) as broker:
        yield broker


@pytest.fixture
def sweeping_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    with own_broker(tmp_path, TIMEOUT_SWEEP_MS) as broker:
        yield broker


def own_topics(bootstrap: str) -> dict[str, str]:
    """The sink's four topics, two partitions each, on a broker of the test's own."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("presence", "routing", "state", "dlq")}
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=2, replication_factor=1) for n in names.values()]
    )
    for fut in futures.values():
        fut.result(30)
    return names


#: A transaction timeout short enough that the records of the open transaction time out
#: while the broker is down, and an outage long enough that the abort that follows is stuck.
TXN_TIMEOUT_MS = 3_000
#: Each blocking transactional call's timeout: an abort is stuck after 3 of them (6 s).
CALL_TIMEOUT_S = 2.0
OUTAGE_S = 14.0


@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_broker_outage_loses_and_duplicates_nothing(restartable_broker: OwnBroker) -> None:
    """Broker stopped 14 s mid-stream and restarted: every submitted change is committed exactly once.

    The open transaction's records time out while the broker is down (a 3 s transaction
    timeout), so its commit needs an abort. Most runs the abort cannot finish with the
    coordinator gone (librdkafka keeps the EndTxn queued for a connection it does not bring
    back: this test failed so in CI), and after ABORT_STUCK_CALLS call timeouts the writer
    replaces the producer; in some the abort finishes, and the batch is aborted and produced
    again until the broker is back. Which one happens depends on where the stop falls, so
    the replacement itself is asserted by the frozen-broker test below. A 20 s outage under
    the default 60 s timeout, where the commit is retried until the broker is back, is
    tests/worker/test_faults.py::test_broker_outage_of_20_seconds. The broker of this
    test never aborts a timed-out transaction itself: when it does before the writer's own
    abort, the writer is fenced (test_broker_timing_out_a_transaction_fences_its_writer)."""
    stuck_s = ABORT_STUCK_CALLS * CALL_TIMEOUT_S
    assert TXN_TIMEOUT_MS / 1000 + stuck_s < OUTAGE_S, "outlasts the records' timeout and the abort"
    broker = restartable_broker
    bootstrap = broker.bootstrap
    names = own_topics(bootstrap)
    settings = make_settings(
        bootstrap, names, txn_max_ms=100, txn_max_records=50, kafka_transaction_timeout_ms=TXN_TIMEOUT_MS
    )
    sink = ShardSink(settings, 1, call_timeout_s=CALL_TIMEOUT_S)
    await sink.start()
    state = ShardState()
    submitted: list[str] = []
    n = 0

    async def stream(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(5):
                n += 1
                got = accepted(state, routing_change(f"u-{n % 40}", n))
                sink.submit(got, "chan")
                submitted.append(got.change.event_id)
            await asyncio.sleep(0.02)

    try:
        await stream(1.0)
        stopping = asyncio.create_task(asyncio.to_thread(broker.stop))
        await stream(OUTAGE_S)
        await stopping
        assert not sink.healthy, "commits fail while the broker is down"
        assert sink.pending > 0
        await asyncio.to_thread(broker.start)
        await stream(1.0)
        await asyncio.wait_for(sink.flush(), 120)
        assert sink.pending == 0
        assert sink.healthy
    finally:
        await sink.close()
    records = read_all(bootstrap, names["routing"], expect=len(submitted), timeout_s=60)
    ids = Counter(value_of(m)["eventId"] for m in records)
    assert set(ids) == set(submitted)
    assert max(ids.values()) == 1, "no change committed twice"
    states = read_all(bootstrap, names["state"], expect=len(submitted), timeout_s=60)
    assert len(states) == len(submitted)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_frozen_broker_makes_the_abort_stuck_and_a_new_producer_writes_the_batch(
    freezable_broker: OwnBroker,
) -> None:
    """A broker that stops answering (SIGSTOP: a long GC pause, a frozen VM) keeps its connections open.

    The open transaction's first records are delivered (its partitions are in the
    transaction), the broker freezes, and the records after them time out (3 s), so the
    commit needs an abort. The abort's EndTxn is never answered; after ABORT_STUCK_CALLS
    call timeouts the writer replaces the producer, whose init_transactions waits for the
    broker. Once it answers again, the new producer aborts the open transaction and writes
    the whole batch again: every change committed exactly once, the replacement counted.
    """
    bootstrap = freezable_broker.bootstrap
    names = own_topics(bootstrap)
    settings = make_settings(
        bootstrap, names, txn_max_ms=60_000, txn_max_records=1000, kafka_transaction_timeout_ms=TXN_TIMEOUT_MS
    )
    stuck = PRODUCE_ERRORS.labels(reason="stuck")
    stuck_before = stuck._value.get()
    sink = ShardSink(settings, 1, call_timeout_s=1.0)
    await sink.start()
    state = ShardState()
    submitted: list[str] = []

    def submit(first: int, count: int) -> None:
        for n in range(first, first + count):
            got = accepted(state, routing_change(f"u-{n % 7}", n))
            sink.submit(got, "chan")
            submitted.append(got.change.event_id)

    pid = freezable_broker.pid()
    assert pid is not None, "the test's broker runs"
    try:
        submit(1, 10)
        delivered = await asyncio.to_thread(
            read_all, bootstrap, names["routing"], committed=False, expect=10, timeout_s=30
        )
        assert len(delivered) == 10, "the open transaction's first records reached the broker"
        os.kill(pid, signal.SIGSTOP)
        try:
            submit(11, 10)
            flushing = asyncio.ensure_future(sink.flush())
            deadline = time.monotonic() + 60
            while stuck._value.get() == stuck_before and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert stuck._value.get() == stuck_before + 1, "the stuck abort replaced the producer"
            assert not flushing.done()
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(flushing, 120)
        assert sink.pending == 0
        assert sink.healthy
    finally:
        await sink.close()
    records = read_all(bootstrap, names["routing"], expect=len(submitted), timeout_s=60)
    assert Counter(value_of(m)["eventId"] for m in records) == Counter(submitted), "each exactly once"
    assert len(read_all(bootstrap, names["state"], expect=len(submitted), timeout_s=60)) == len(submitted)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_broker_timing_out_a_transaction_fences_its_writer(sweeping_broker: OwnBroker) -> None:
    """A transaction open longer than its timeout is aborted by the broker, which bumps the epoch.

    The writer cannot tell that epoch bump from a newer owner's (both answer PRODUCER_FENCED),
    and taking the transactional.id back would fence a real new owner: it stops as fenced,
    says that the transaction had outlived its timeout, and commits nothing of it (the fleet
    starts the shard again if the partition is still ours). A frozen writer thread, a stalled
    VM or a link cut for longer than the timeout all end so; here the writer just holds its
    transaction open (txn_max_ms above the timeout)."""
    bootstrap = sweeping_broker.bootstrap
    names = own_topics(bootstrap)
    timeout_ms = 2_000
    settings = make_settings(
        bootstrap, names, txn_max_ms=60_000, txn_max_records=1000, kafka_transaction_timeout_ms=timeout_ms
    )
    stuck = PRODUCE_ERRORS.labels(reason="stuck")
    stuck_before, fenced_before = stuck._value.get(), FENCED._value.get()
    sink = ShardSink(settings, 1, call_timeout_s=1.0)
    await sink.start()
    state = ShardState()
    try:
        for n in range(1, 11):
            sink.submit(accepted(state, routing_change(f"u-{n % 3}", n)), "chan")
        delivered = await asyncio.to_thread(
            read_all, bootstrap, names["routing"], committed=False, expect=10, timeout_s=30
        )
        assert len(delivered) == 10, "the open transaction's records reached the broker"
        marks = await asyncio.to_thread(high_watermarks, bootstrap, names["routing"])
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(high_watermarks, bootstrap, names["routing"]) == marks:
            assert time.monotonic() < deadline, "the broker aborts the timed-out transaction"
            await asyncio.sleep(0.2)
        sink.submit(accepted(state, routing_change("u-9", 11)), "chan")
        with pytest.raises(FencedError, match="longer than its timeout"):
            await asyncio.wait_for(sink.flush(), 60)
        assert isinstance(await asyncio.wait_for(sink.failed, 5), FencedError)
        assert FENCED._value.get() == fenced_before + 1
        assert stuck._value.get() == stuck_before, "the writer did not take the transactional.id back"
    finally:
        await sink.close()
    assert read_all(bootstrap, names["routing"], expect=1, timeout_s=5) == [], "nothing committed"


def high_watermarks(bootstrap: str, topic: str) -> list[int]:
    """The high watermark of each of ``topic``'s two partitions (a transaction marker moves it)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{uuid.uuid4().hex[:6]}"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in (0, 1)]
    finally:
        consumer.close()


async def test_fencing_reported_by_poll_stops_the_sink_as_fenced() -> None:
    """poll() raises _FENCED as soon as librdkafka knows (before any commit): a fenced sink, not a crash."""

    class PollFencedProducer(NullProducer):
        def poll(self, *_args: Any) -> int:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))

    fenced_before = FENCED._value.get()
    sink = ShardSink(Settings(), 7, producer_factory=PollFencedProducer)
    await sink.start()
    assert sink.failed is not None
    state = ShardState()
    accepted = state.apply(routing_change("u-1", 1))
    assert isinstance(accepted, Accepted)
    sink.submit(accepted, "channel-1")
    error = await asyncio.wait_for(sink.failed, 5)
    assert isinstance(error, FencedError)
    assert FENCED._value.get() == fenced_before + 1
    with pytest.raises(FencedError):
        sink.submit(accepted, "channel-1")
    await sink.close()
