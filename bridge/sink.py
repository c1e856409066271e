"""The Kafka sink of one shard: a fenced, transactional confluent-kafka producer.

Contract (README "Delivery promise" and "Topics and records"):

- One producer per shard with ``transactional.id = f"{settings.id}-shard-{shard}"``.
  :meth:`ShardSink.start` calls ``init_transactions()``, which fences any
  previous owner of the shard: a zombie worker cannot write after a takeover.
- :meth:`ShardSink.submit` enqueues, without blocking, the event record
  (presence or routing-status topic) and the agent's new compacted state;
  both go into the SAME transaction. :meth:`ShardSink.submit_late` writes a
  backfilled change that arrived after the agent's newer records: the event
  record only, with ``late: true``, never the compacted state (which holds
  something newer). Keys are the user id; headers are
  ``schema``, ``event-type``, ``bridge-id`` (``settings.id``: several fleets
  may share the data topics; tombstones and audits stay within their own
  fleet) and, when known, ``genesys-topic`` and ``correlation-id``.
- An agent in :attr:`ShardSink.pending_backfills` (the backfill's agents
  released before their history was read) gets a ``backfill`` field in
  every state record; :meth:`ShardSink.submit_state` writes a state alone
  (without it, when that backfill is done), and everything submitted under
  :meth:`ShardSink.atomic` commits in one transaction.
- :meth:`ShardSink.submit_gap` writes a :class:`~bridge.records.GapRecord`
  to the gaps topic, keyed ``shard-<n>``, headers ``schema``, ``event-type:
  gap`` and ``bridge-id``; like the DLQ record, in the same transactional flow
  as every other submission.
- A transaction closes ``txn_max_ms`` after its first record or at
  ``txn_max_records`` records, whichever comes first (an event and its state
  are never split), or at once when someone awaits :meth:`ShardSink.flush`.
  While it is open, the sink thread hands new records to librdkafka every
  :data:`~bridge.kafka.writer.PRODUCE_INTERVAL_S`, so the commit has little left to send.
- Records are *acknowledged* only when ``commit_transaction`` returns; only then
  are ``bridge_records_produced_total{topic}``, ``bridge_event_delivery_seconds``
  and ``bridge_event_lag_seconds`` (and ``bridge_dlq_records_total{reason}``)
  counted.

Threading: the blocking librdkafka calls run in ONE dedicated thread per sink
(:class:`~bridge.kafka.writer.TxnWriter`); the asyncio side only appends to a
deque and wakes that thread. Results come back through
``loop.call_soon_threadsafe``.

Failure handling follows librdkafka's transactional error classes
(:func:`bridge.kafka.errors.classify`):

- retriable (e.g. ``_TIMED_OUT`` while the broker is down): call the same
  operation again after a capped exponential backoff. Records keep queueing
  in memory meanwhile, so a broker outage of any length below the
  transaction timeout (``BRIDGE_KAFKA_TRANSACTION_TIMEOUT_MS``) loses nothing.
- abortable (``txn_requires_abort()``, e.g. a message timed out): abort the
  transaction and produce the SAME batch again in a new one; read_committed
  readers see it exactly once.
- fenced (``_FENCED``, ``PRODUCER_FENCED``, ``INVALID_PRODUCER_EPOCH``): count
  ``bridge_fenced_total``, stop accepting, signal :class:`FencedError`.
- other fatal errors: stop, signal :class:`DeliveryError`.

Each failure counts ``bridge_produce_errors_total{reason}`` with the class as
reason (``retriable``, ``abortable``, ``fenced``, ``fatal``, ``buffer_full``;
``stuck`` when an abort that could not finish made the writer replace its
producer, see :mod:`bridge.kafka.writer`). A failure is signalled through
:attr:`ShardSink.failed` (a future whose result is the error), the
``on_failure`` callback, every pending :meth:`flush`, and every later
:meth:`submit`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import Producer

from bridge.encoder import Encoder, Item
from bridge.errors import SinkError
from bridge.events import Accepted
from bridge.kafka.config import (
    DEFAULT_COMPRESSION,
    DEFAULT_LINGER_MS,
    DEFAULT_RECONNECT_BACKOFF_MAX_MS,
    ProducerFactory,
    transactional_producer_config,
)
from bridge.kafka.txn import TXN_BACKOFF_INITIAL_S, TXN_BACKOFF_MAX_S, TxnState
from bridge.kafka.writer import ABANDON_GRACE_S, Close, TxnWriter
from bridge.metrics import DLQ_RECORDS, EVENT_DELIVERY, EVENT_LAG, RECORDS_PRODUCED
from bridge.model import AgentState, Change
from bridge.records import GapRecord, Pending, utc_now_ms
from bridge.settings import Settings

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "DEFAULT_CLOSE_TIMEOUT_S",
    "DEFAULT_START_TIMEOUT_S",
    "ProducerFactory",
    "ShardSink",
    "producer_config",
    "transactional_id",
]

log = logging.getLogger(__name__)

#: Timeout of one blocking commit/abort/init call; a retriable timeout is retried.
DEFAULT_CALL_TIMEOUT_S = 5.0
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_CLOSE_TIMEOUT_S = 8.0
# Looked up for every change: an enum member's attribute access costs ~10x a global's.
_OPEN = TxnState.OPEN
_RUN = Close.RUN


def transactional_id(settings: Settings, shard: int) -> str:
    """The shard's transactional id, ``<bridge-id>-shard-<p>`` (README "Architecture": fencing)."""
    return f"{settings.id}-shard-{shard}"


def producer_config(settings: Settings, shard: int) -> dict[str, Any]:
    """librdkafka settings of a shard's transactional producer."""
    return transactional_producer_config(
        settings,
        client_id=f"{settings.id}-sink-{shard}",
        transactional_id=transactional_id(settings, shard),
        # Bounds the broker outage a transaction survives without an abort
        # (and librdkafka lowers ``message.timeout.ms`` to it).
        transaction_timeout_ms=settings.kafka_transaction_timeout_ms,
        tuning={
            "linger.ms": DEFAULT_LINGER_MS,
            "compression.type": DEFAULT_COMPRESSION,
            "reconnect.backoff.max.ms": DEFAULT_RECONNECT_BACKOFF_MAX_MS,
        },
    )


class _Acknowledger:
    """Metrics for committed batches (README "Metrics"); runs in the sink thread."""

    def __init__(
        self, settings: Settings, clock: Callable[[], datetime], monotonic: Callable[[], float]
    ) -> None:
        self._clock = clock
        self._mono = monotonic
        self._produced = {
            t: RECORDS_PRODUCED.labels(topic=t)
            for t in (
                settings.topic_presence,
                settings.topic_routing_status,
                settings.topic_agent_state,
                settings.topic_dlq,
                settings.topic_gaps,
            )
        }

    def count(self, batch: Sequence[Item]) -> None:
        now_mono = self._mono()
        now = self._clock()
        batch = [part for item in batch for part in (item.parts or (item,))]
        # Counted per batch: one locked update per topic and per histogram
        # instead of four per change, on the GIL the socket reader needs.
        per_topic = collections.Counter([record[0] for item in batch for record in item.records])
        delivery = [now_mono - item.received_at for item in batch if item.received_at > 0]
        lag = [(now - item.changed_at).total_seconds() for item in batch if item.changed_at is not None]
        for item in batch:
            if item.dlq_reason is not None:
                DLQ_RECORDS.labels(reason=item.dlq_reason).inc()
        # A clock step can make either negative: those count as 0.
        EVENT_DELIVERY.observe_many([d if d > 0 else 0.0 for d in delivery])
        EVENT_LAG.observe_many([d if d > 0 else 0.0 for d in lag])
        produced = self._produced
        for topic, count in per_topic.items():
            counter = produced.get(topic)
            if counter is None:
                counter = produced[topic] = RECORDS_PRODUCED.labels(topic=topic)
            counter.inc(count)


class _Events:
    """The writer's reports (in its thread), handed to the sink's event loop."""

    def __init__(self, sink: ShardSink, acknowledger: _Acknowledger) -> None:
        self._sink = sink
        self.committed = acknowledger.count

    def started(self, error: SinkError | None) -> None:
        self._sink._call_soon(self._sink._set_started, error)

    def acknowledged(self) -> None:
        self._sink._call_soon(self._sink._resolve)

    def failed(self, error: SinkError) -> None:
        self._sink._call_soon(self._sink._signal_failure, error)

    def stopped(self) -> None:
        self._sink._call_soon(self._sink._set_stopped)


class ShardSink:
    """Transactional writer of one shard; see the module docstring for the contract.

    Use from one asyncio event loop: ``await start()``, then ``submit*`` (never
    blocks), ``await flush()``, ``await close()``.
    """

    def __init__(
        self,
        settings: Settings,
        shard: int,
        *,
        producer_factory: ProducerFactory = Producer,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_failure: Callable[[SinkError], None] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        backoff_initial_s: float = TXN_BACKOFF_INITIAL_S,
        backoff_max_s: float = TXN_BACKOFF_MAX_S,
    ) -> None:
        self.shard = shard
        clock = clock or utc_now_ms
        self._on_failure = on_failure
        self._encode = Encoder(settings, shard, clock)
        s = settings
        topics = ", ".join(
            dict.fromkeys(
                [s.topic_presence, s.topic_routing_status, s.topic_agent_state, s.topic_dlq, s.topic_gaps]
            )
        )
        self._writer: TxnWriter[Item] = TxnWriter(
            f"shard {shard}",
            {**producer_config(settings, shard), **(extra_config or {})},
            _Events(self, _Acknowledger(settings, clock, monotonic)),
            producer_factory=producer_factory,
            txn_max_s=settings.txn_max_ms / 1000.0,
            txn_max_records=settings.txn_max_records,
            topics=f"TOPIC (one of {topics})",
            call_timeout_s=call_timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            monotonic=monotonic,
            sleep=sleep,
        )
        # The hot path (_enqueue) reads these for every change: bound once.
        self._queue = self._writer.queue
        self._wake = self._writer.wake
        self._txn = self._writer.txn
        self._txn_max_records = settings.txn_max_records
        self._loop: asyncio.AbstractEventLoop | None = None
        # Sequence numbers: submitted (asyncio side) vs acknowledged (the writer's).
        self._submitted_items = 0
        self._submitted_records = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._group: list[Item] | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.failed: asyncio.Future[SinkError] | None = None
        """Set by :meth:`start`; its result is the error that stopped the sink."""

    # -- public state -----------------------------------------------------------

    @property
    def transactional_id(self) -> str:
        return self._writer.transactional_id

    @property
    def pending(self) -> int:
        """Records submitted but not yet committed."""
        return self._submitted_records - self._writer.acked_records

    @property
    def healthy(self) -> bool:
        """For /readyz: started, not failed, not closing, and the last commit attempt succeeded."""
        w = self._writer
        return w.thread is not None and w.failure is None and w.close_request is Close.RUN and w.committing_ok

    @property
    def error(self) -> SinkError | None:
        """The error that stopped the sink, if any."""
        return self._writer.failure

    @property
    def pending_backfills(self) -> Mapping[str, Pending]:
        """Agents whose state records carry a ``backfill`` field (their backfill is pending)."""
        return self._encode.pending

    @pending_backfills.setter
    def pending_backfills(self, agents: Mapping[str, Pending]) -> None:
        self._encode.pending = agents

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Create the producer and ``init_transactions()`` (fencing the previous owner).

        Raises :class:`FencedError` or :class:`DeliveryError` when that fails or
        does not finish within ``timeout_s``.
        """
        if self._writer.thread is not None:
            raise RuntimeError("sink already started")
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._stopped = self._loop.create_future()
        self.failed = self._loop.create_future()
        self._writer.start(timeout_s)
        await self._started

    async def flush(self) -> None:
        """Resolve when everything submitted so far is committed (commits at once)."""
        await self._wait_acked(self._submitted_items, commit_now=True)

    async def drain_to(self, max_pending_items: int) -> None:
        """Resolve when at most ``max_pending_items`` submitted items are uncommitted.

        Backpressure for a reader that got ahead of Kafka: unlike :meth:`flush`
        it does not force a commit, so transactions keep their normal size.
        """
        await self._wait_acked(self._submitted_items - max_pending_items, commit_now=False)

    def _wait_acked(self, target: int, *, commit_now: bool) -> asyncio.Future[None]:
        """A future resolved once ``target`` items are acknowledged (raises if failed).

        ``commit_now`` closes the open transaction at once instead of at its deadline.
        """
        w = self._writer
        if w.failure is not None:
            raise w.failure
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        if w.acked_items >= target:
            fut.set_result(None)
            return fut
        self._waiters.append((target, fut))
        if commit_now:
            w.flush_upto = max(w.flush_upto, target)
        self._wake.set()
        return fut

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Stop accepting, commit what is queued (within ``timeout_s``) and close the producer.

        What is not committed by then is left uncommitted (never half-visible):
        the next owner reconciles it. Never raises for a sink that already failed.
        """
        if self._writer.thread is None or self._stopped is None:
            return
        self._writer.request(Close.DRAIN)
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout_s)
        except TimeoutError:
            log.warning(
                "shard %d: sink close timed out with %d records uncommitted", self.shard, self.pending
            )
            self._writer.request(Close.ABANDON)
            # A blocking librdkafka call finishes within call_timeout_s; don't wait longer.
            await asyncio.wait({self._stopped}, timeout=self._writer.call_timeout_s + ABANDON_GRACE_S)

    # -- submissions (asyncio side, never block) --------------------------------------

    def submit(self, accepted: Accepted, channel_id: str | None) -> None:
        """Queue the event record and the agent's new state, to commit in one transaction."""
        w = self._writer
        if w.failure is not None or w.close_request is not _RUN or w.thread is None:
            self._check_open()  # raises why (one check per change instead of a call)
        self._enqueue(self._encode.change(accepted, channel_id))

    def submit_late(self, change: Change, channel_id: str | None) -> None:
        """Queue a backfilled change older than what is already written: event record only, ``late: true``."""
        self._check_open()
        self._enqueue(self._encode.late(change, channel_id))

    def submit_state(self, state: AgentState) -> None:
        """Queue the agent's compacted state alone (no event), marked if in :attr:`pending_backfills`."""
        self._check_open()
        self._enqueue(self._encode.state(state))

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Everything submitted inside commits in one transaction (nested: the outermost's).

        A backfill's late transitions and the state saying it is done must
        not be split: a new owner reading the state would skip what it names.
        """
        if self._group is not None:
            yield
            return
        group: list[Item] = []
        self._group = group
        try:
            yield
        finally:
            self._group = None
            if len(group) == 1:
                self._enqueue(group[0])
            elif group:
                self._enqueue(Item([r for item in group for r in item.records], parts=tuple(group)))

    def submit_gap(self, gap: GapRecord) -> None:
        """Queue a gap record for the gaps topic, keyed ``shard-<n>``."""
        self._check_open()
        self._enqueue(self._encode.gap(gap))

    def submit_tombstone(self, user_id: str) -> None:
        """Queue a tombstone (null value) for an agent that left the roster."""
        self._check_open()
        self._enqueue(self._encode.tombstone(user_id))

    def submit_dlq(self, reason: str, error: str, frame: str, channel_id: str | None) -> None:
        """Queue a frame that could not be understood, keyed by the shard, with its reason."""
        self._check_open()
        self._enqueue(self._encode.dlq(reason, error, frame, channel_id))

    def _check_open(self) -> None:
        w = self._writer
        if w.failure is not None:
            raise w.failure
        if w.close_request is not _RUN:
            raise SinkError(f"shard {self.shard}: sink is closed")
        if w.thread is None:
            raise SinkError(f"shard {self.shard}: sink not started")

    def _enqueue(self, item: Item) -> None:
        if self._group is not None:
            self._group.append(item)
            return
        self._submitted_items += 1
        self._submitted_records += len(item.records)
        queue = self._queue
        queue.append(item)
        # Wake the sink thread only when it has something to do: to open a
        # transaction, or when a full one is waiting. Waking it for every
        # change would hand the GIL back and forth at the change rate; an open
        # transaction is closed by its deadline anyway.
        if (self._txn.state is not _OPEN or len(queue) >= self._txn_max_records) and not self._wake.is_set():
            self._wake.set()

    # -- asyncio callbacks (run in the loop thread) -------------------------------------

    def _resolve(self) -> None:
        acked = self._writer.acked_items
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if target <= acked:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def _signal_failure(self, err: SinkError) -> None:
        for _target, fut in self._waiters:
            if not fut.done():
                fut.set_exception(err)
        self._waiters = []
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(err)
        if self._on_failure is not None:
            self._on_failure(err)

    def _set_started(self, err: SinkError | None) -> None:
        assert self._started is not None
        if self._started.done():
            return
        if err is None:
            self._started.set_result(None)
        else:
            self._started.set_exception(err)

    def _set_stopped(self) -> None:
        assert self._stopped is not None
        if not self._stopped.done():
            self._stopped.set_result(None)
        # Flushes that can no longer complete (closed before commit) must not hang.
        err = self._writer.failure or SinkError(f"shard {self.shard}: sink closed before commit")
        for _target, fut in self._waiters:
            if not fut.done():
                fut.set_exception(err)
        self._waiters = []

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)
