"""bridge.kafka.writer: the transactional writer thread, driven with a producer double (no broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from bridge.errors import DeliveryError, FencedError, SinkError
from bridge.kafka.txn import TxnState
from bridge.kafka.writer import ABORT_STUCK_CALLS, Close, Record, TxnWriter
from bridge.metrics import PRODUCE_ERRORS
from tests.fakes import NullProducer

WAIT_S = 5.0


@dataclass
class Item:
    records: list[Record]


@dataclass
class Events:
    """Everything the writer reported, with events to wait on."""

    started_with: list[SinkError | None] = field(default_factory=list)
    batches: list[list[Item]] = field(default_factory=list)
    failures: list[SinkError] = field(default_factory=list)
    up: threading.Event = field(default_factory=threading.Event)
    acked: threading.Event = field(default_factory=threading.Event)
    down: threading.Event = field(default_factory=threading.Event)

    def started(self, error: SinkError | None) -> None:
        self.started_with.append(error)
        self.up.set()

    def committed(self, batch: Sequence[Item]) -> None:
        self.batches.append(list(batch))

    def acknowledged(self) -> None:
        self.acked.set()

    def failed(self, error: SinkError) -> None:
        self.failures.append(error)

    def stopped(self) -> None:
        self.down.set()


class Recording(NullProducer):
    """Records the transactional calls in order."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.calls.append(f"produce {kwargs['key'].decode()}")

    def commit_transaction(self, *_args: Any) -> None:
        self.calls.append("commit")

    def abort_transaction(self, *_args: Any) -> None:
        self.calls.append("abort")


def writer_with(producer: NullProducer, events: Events, **overrides: Any) -> TxnWriter[Item]:
    options: dict[str, Any] = {
        "producer_factory": lambda _config: producer,
        "txn_max_s": 60.0,
        "txn_max_records": 100,
        "topics": "TOPIC t",
        "call_timeout_s": 1.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "monotonic": time.monotonic,
        "sleep": time.sleep,
    }
    options.update(overrides)
    return TxnWriter("shard 1", {"transactional.id": "b-shard-1"}, events, **options)


def item(key: str) -> Item:
    return Item([("t", key.encode(), b"{}", [])])


def start_and_flush(writer: TxnWriter[Item], events: Events, *keys: str) -> None:
    """Start the writer, then queue one item per key and ask for all of them to be committed."""
    writer.start(WAIT_S)
    assert events.up.wait(WAIT_S)
    writer.queue.extend(item(k) for k in keys)
    writer.flush_upto = len(keys)
    writer.wake.set()


def test_an_abortable_commit_aborts_and_commits_the_same_batch_once() -> None:
    """A commit needing an abort is aborted, the same records produced again, and committed once."""

    class AbortOnce(Recording):
        def commit_transaction(self, *args: Any) -> None:
            super().commit_transaction(*args)
            if self.calls.count("commit") == 1:
                raise KafkaException(
                    KafkaError(KafkaError._MSG_TIMED_OUT, "timed out", txn_requires_abort=True)
                )

    producer = AbortOnce({})
    events = Events()
    writer = writer_with(producer, events)
    writer.start(WAIT_S)
    assert events.up.wait(WAIT_S)
    assert writer.txn.state is TxnState.IDLE
    writer.queue.extend([item("a"), item("b")])
    writer.flush_upto = 1
    writer.wake.set()
    assert events.acked.wait(WAIT_S)
    writer.request(Close.DRAIN)
    assert events.down.wait(WAIT_S)
    assert producer.calls == [
        "begin", "produce a", "produce b", "commit",
        "abort", "begin", "produce a", "produce b", "commit",
    ]  # fmt: skip
    assert [[i.records[0][1] for i in batch] for batch in events.batches] == [[b"a", b"b"]]
    assert (writer.acked_items, writer.acked_records) == (2, 2)
    assert writer.txn.state is TxnState.CLOSED
    assert writer.failure is None


def test_a_retriable_init_is_retried_until_its_deadline() -> None:
    """init_transactions timing out is retried with backoff; past the start deadline it is a DeliveryError."""

    class Unreachable(Recording):
        def init_transactions(self, *_args: Any) -> None:
            self.calls.append("init")
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    producer = Unreachable({})
    events = Events()
    writer = writer_with(producer, events)
    writer.start(0.2)
    assert events.down.wait(WAIT_S)
    [error] = events.started_with
    assert isinstance(error, DeliveryError)
    assert "init_transactions failed" in str(error)
    assert producer.calls.count("init") > 2
    assert writer.txn.state is TxnState.CLOSED


def test_fencing_at_commit_fails_the_writer_as_fenced() -> None:
    """A fenced commit stops the writer: FAILED, one FencedError, nothing acknowledged, then CLOSED."""

    class FencedAtCommit(Recording):
        def commit_transaction(self, *_args: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    producer = FencedAtCommit({})
    events = Events()
    writer = writer_with(producer, events)
    start_and_flush(writer, events, "a")
    assert events.down.wait(WAIT_S)
    [error] = events.failures
    assert isinstance(error, FencedError)
    assert writer.failure is error
    assert events.batches == []
    assert writer.acked_items == 0
    assert writer.txn.state is TxnState.CLOSED


class FakeClock:
    """A monotonic clock that only the writer's sleeps move."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class StuckAbort(Recording):
    """A commit needing an abort, and an abort that only ever times out (librdkafka's EndTxn
    left queued for a coordinator it does not reconnect to after a broker restart)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.purged = self.closed = False

    def commit_transaction(self, *args: Any) -> None:
        super().commit_transaction(*args)
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "40 failed", txn_requires_abort=True))

    def abort_transaction(self, *args: Any) -> None:
        super().abort_transaction(*args)
        raise KafkaException(
            KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation to finish", retriable=True)
        )

    def purge(self) -> None:
        self.purged = True

    def close(self, *_args: Any) -> None:
        self.closed = True


def test_a_stuck_abort_replaces_the_producer_and_commits_the_batch_once() -> None:
    """An abort still timing out after ABORT_STUCK_CALLS call timeouts: the stuck producer is
    purged and dropped (never closed: close() would hang in that abort), a new one with the same
    transactional.id is initialised, and the same batch is produced again and committed once."""
    stuck = StuckAbort({})
    fresh = Recording({})
    made: list[dict[str, Any]] = []

    def factory(config: dict[str, Any]) -> NullProducer:
        made.append(config)
        return stuck if len(made) == 1 else fresh

    clock = FakeClock()
    events = Events()
    stuck_before = PRODUCE_ERRORS.labels(reason="stuck")._value.get()
    writer = writer_with(
        stuck, events, producer_factory=factory, monotonic=clock.monotonic, sleep=clock.sleep
    )
    start_and_flush(writer, events, "a", "b")
    assert events.acked.wait(WAIT_S)
    writer.request(Close.DRAIN)
    assert events.down.wait(WAIT_S)
    assert len(made) == 2 and made[1]["transactional.id"] == made[0]["transactional.id"]
    assert stuck.calls.count("abort") >= 2, "retried before it counts as stuck"
    stuck_s = ABORT_STUCK_CALLS * writer.call_timeout_s
    assert clock.now - 1000.0 >= stuck_s - 0.02, "given up only when stuck (less one backoff)"
    assert stuck.purged and not stuck.closed
    assert fresh.calls == ["begin", "produce a", "produce b", "commit"]
    assert [[i.records[0][1] for i in batch] for batch in events.batches] == [[b"a", b"b"]]
    assert (writer.acked_items, writer.failure) == (2, None)
    assert PRODUCE_ERRORS.labels(reason="stuck")._value.get() == stuck_before + 1
    assert writer.txn.state is TxnState.CLOSED


def test_a_replacement_fenced_at_init_stops_the_writer_as_fenced() -> None:
    """A newer owner took the shard while the abort was stuck: the replacement's init_transactions
    is fenced, and the writer stops as fenced with nothing acknowledged."""

    class FencedAtInit(Recording):
        def init_transactions(self, *_args: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    made: list[NullProducer] = []

    def factory(_config: dict[str, Any]) -> NullProducer:
        made.append(StuckAbort({}) if not made else FencedAtInit({}))
        return made[-1]

    clock = FakeClock()
    events = Events()
    writer = writer_with(
        NullProducer({}), events, producer_factory=factory, monotonic=clock.monotonic, sleep=clock.sleep
    )
    start_and_flush(writer, events, "a")
    assert events.down.wait(WAIT_S)
    [error] = events.failures
    assert isinstance(error, FencedError)
    assert (events.batches, writer.acked_items) == ([], 0)


def test_abandoning_a_writer_in_a_stuck_abort_drops_the_producer_without_closing_it() -> None:
    """Closing the sink while the abort hangs: the writer stops at the next attempt, and the stuck
    producer is purged, not closed (its close() would hang in the same abort)."""
    stuck = StuckAbort({})
    events = Events()
    writer = writer_with(stuck, events)  # the real clock: never stuck long enough
    start_and_flush(writer, events, "a")
    deadline = time.monotonic() + WAIT_S
    while "abort" not in stuck.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.request(Close.ABANDON)
    assert events.down.wait(WAIT_S)
    assert stuck.purged and not stuck.closed
    assert (events.batches, writer.failure) == ([], None)
