"""The Kafka sink of one shard: a fenced, transactional confluent-kafka producer.

Contract (README "Delivery promise" and "Topics and records"):

- One producer per shard with ``transactional.id = f"{settings.id}-shard-{shard}"``.
  :meth:`ShardSink.start` calls ``init_transactions()``, which fences any
  previous owner of the shard: a zombie worker cannot write after a takeover.
- :meth:`ShardSink.submit` enqueues, without blocking, the event record
  (presence or routing-status topic) and the agent's new compacted state;
  both go into the SAME transaction. Keys are the user id; headers are
  ``schema``, ``event-type``, ``bridge-id`` (``settings.id``: several fleets
  may share the data topics; tombstones and audits stay within their own
  fleet) and, when known, ``genesys-topic`` and ``correlation-id``.
- A transaction closes ``txn_max_ms`` after its first record or at
  ``txn_max_records`` records, whichever comes first (an event and its state
  are never split), or at once when someone awaits :meth:`ShardSink.flush`.
  While it is open, the sink thread hands new records to librdkafka every
  :data:`PRODUCE_INTERVAL_S`, so the commit has little left to send.
- Records are *acknowledged* only when ``commit_transaction`` returns; only then
  are ``bridge_records_produced_total{topic}``, ``bridge_event_delivery_seconds``
  and ``bridge_event_lag_seconds`` (and ``bridge_dlq_records_total{reason}``)
  counted.

Threading: the blocking librdkafka calls run in ONE dedicated thread per sink;
the asyncio side only appends to a deque and wakes that thread. Results come
back through ``loop.call_soon_threadsafe``.

Failure handling follows librdkafka's transactional error classes
(:func:`classify`):

- retriable (e.g. ``_TIMED_OUT`` while the broker is down): call the same
  operation again after a capped exponential backoff. Records keep queueing
  in memory meanwhile, so a broker outage of any length below the
  transaction timeout (:data:`DEFAULT_TRANSACTION_TIMEOUT_MS`) loses nothing.
- abortable (``txn_requires_abort()``, e.g. a message timed out): abort the
  transaction and produce the SAME batch again in a new one; read_committed
  readers see it exactly once.
- fenced (``_FENCED``, ``PRODUCER_FENCED``, ``INVALID_PRODUCER_EPOCH``): count
  ``bridge_fenced_total``, stop accepting, signal :class:`FencedError`.
- other fatal errors: stop, signal :class:`DeliveryError`.

Each failure counts ``bridge_produce_errors_total{reason}`` with the class as
reason (``retriable``, ``abortable``, ``fenced``, ``fatal``, ``buffer_full``).
A failure is signalled through :attr:`ShardSink.failed` (a future whose result
is the error), the ``on_failure`` callback, every pending :meth:`flush`, and
every later :meth:`submit`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from bridge.acl import authorization_error
from bridge.errors import AuthorizationError, DeliveryError, FencedError, SinkError
from bridge.events import Accepted
from bridge.metrics import DLQ_RECORDS, EVENT_DELIVERY, EVENT_LAG, FENCED, PRODUCE_ERRORS, RECORDS_PRODUCED
from bridge.model import Change, Kind
from bridge.records import (
    DLQ_SCHEMA,
    PRESENCE_SCHEMA,
    ROUTING_STATUS_SCHEMA,
    STATE_SCHEMA,
    encode_dlq,
    encode_event,
    encode_state,
    event_type,
    utc_now_ms,
)
from bridge.settings import DEFAULT_KAFKA_TRANSACTION_TIMEOUT_MS, Settings

__all__ = [
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_CALL_TIMEOUT_S",
    "DEFAULT_CLOSE_TIMEOUT_S",
    "DEFAULT_LINGER_MS",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "Action",
    "ProducerFactory",
    "ShardSink",
    "classify",
    "producer_config",
    "transactional_id",
]

log = logging.getLogger(__name__)

#: A transaction closes every ~100 ms anyway; a short linger only groups one burst.
DEFAULT_LINGER_MS = 5
DEFAULT_COMPRESSION = "lz4"
#: How long the coordinator keeps an open transaction of a silent producer
#: (``BRIDGE_KAFKA_TRANSACTION_TIMEOUT_MS``). It bounds the broker outage a
#: transaction survives without an abort (and librdkafka lowers
#: ``message.timeout.ms`` to it).
DEFAULT_TRANSACTION_TIMEOUT_MS = DEFAULT_KAFKA_TRANSACTION_TIMEOUT_MS
#: Reconnect quickly once the broker is back (librdkafka's default caps at 10 s).
DEFAULT_RECONNECT_BACKOFF_MAX_MS = 1_000
#: Timeout of one blocking commit/abort/init call; a retriable timeout is retried.
DEFAULT_CALL_TIMEOUT_S = 5.0
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_CLOSE_TIMEOUT_S = 8.0
DEFAULT_BACKOFF_INITIAL_S = 0.1
DEFAULT_BACKOFF_MAX_S = 2.0
#: While a transaction is open the sink thread produces what arrived this
#: often, so that a commit has little left to send (see _loop_forever).
PRODUCE_INTERVAL_S = 0.01
#: How long the idle sink thread sleeps between checks of its stop flag.
IDLE_WAIT_S = 0.5
#: Extra wait, after an abandoned close, for the sink thread's last blocking call.
ABANDON_GRACE_S = 1.0
LIBRDKAFKA_LOGGER = "bridge.sink.librdkafka"
STATE_EVENT_TYPE = "agent-state"
_STATE_HEADERS = (("schema", STATE_SCHEMA.encode()), ("event-type", STATE_EVENT_TYPE.encode()))
DLQ_EVENT_TYPE = "dlq"
_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})

ProducerFactory = Callable[[dict[str, Any]], Any]
Headers = list[tuple[str, bytes]]


class Action(enum.StrEnum):
    """What to do about a librdkafka transactional error (also the metric reason)."""

    RETRY = "retriable"
    ABORT = "abortable"
    FENCED = "fenced"
    FATAL = "fatal"


def classify(err: KafkaError) -> Action:
    """Retry policy as data: fenced before fatal, abortable before retriable.

    Errors that are neither (an illegal state) are fatal: retrying cannot help.
    """
    if err.code() in _FENCED_CODES:
        return Action.FENCED
    if err.fatal():
        return Action.FATAL
    if err.txn_requires_abort():
        return Action.ABORT
    if err.retriable():
        return Action.RETRY
    return Action.FATAL


def _cause(producer: Any, err: KafkaError, timeout_s: float) -> KafkaError:
    """The error behind librdkafka's generic ``_FATAL``.

    Once a producer has hit a fatal error, ``produce()`` only says "Local:
    Fatal error"; the transactional API reports the original one (e.g.
    ``_FENCED`` when a newer owner took the shard), which decides between a
    fenced shard and a broken producer. Seen in the fleet's zombie test.
    """
    try:
        producer.abort_transaction(timeout_s)
    except KafkaException as exc:
        cause: KafkaError = exc.args[0]
        return cause
    return err


def transactional_id(settings: Settings, shard: int) -> str:
    """The shard's transactional id, ``<bridge-id>-shard-<p>`` (README "Architecture": fencing)."""
    return f"{settings.id}-shard-{shard}"


def producer_config(settings: Settings, shard: int) -> dict[str, Any]:
    """librdkafka settings of a shard's transactional producer."""
    return {
        **settings.kafka_config(),
        "client.id": f"{settings.id}-sink-{shard}",
        "transactional.id": transactional_id(settings, shard),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": DEFAULT_LINGER_MS,
        "compression.type": DEFAULT_COMPRESSION,
        "transaction.timeout.ms": settings.kafka_transaction_timeout_ms,
        "reconnect.backoff.max.ms": DEFAULT_RECONNECT_BACKOFF_MAX_MS,
        # librdkafka's own log lines go to Python logging (served by poll()), not stderr.
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        # BRIDGE_KAFKA_CONFIG last: it may retune linger, compression, ... (never an owned key).
        **settings.kafka_passthrough(),
    }


@dataclass(slots=True)
class _Item:
    """Records that must commit together, plus what the metrics need after the commit."""

    records: list[tuple[str, bytes, bytes | None, Headers]]
    change: Change | None = None
    dlq_reason: str | None = None


class _Stop(Exception):
    """Internal: the worker thread must stop (failure already recorded)."""


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
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
    ) -> None:
        self.shard = shard
        self._settings = settings
        self._factory = producer_factory
        self._clock = clock or utc_now_ms
        self._mono = monotonic
        self._sleep = sleep
        self._on_failure = on_failure
        self._config = {**producer_config(settings, shard), **(extra_config or {})}
        self._call_timeout = call_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._txn_max_s = settings.txn_max_ms / 1000.0
        self._txn_max_records = settings.txn_max_records
        self._topics = {
            Kind.PRESENCE: settings.topic_presence,
            Kind.ROUTING_STATUS: settings.topic_routing_status,
        }
        self._schemas = {Kind.PRESENCE: PRESENCE_SCHEMA, Kind.ROUTING_STATUS: ROUTING_STATUS_SCHEMA}
        # Encoded once: these headers are the same on every record of a kind.
        self._bridge_id = ("bridge-id", settings.id.encode())
        self._event_headers = {
            kind: (("schema", schema.encode()), ("event-type", event_type(kind).encode()), self._bridge_id)
            for kind, schema in self._schemas.items()
        }
        self._state_headers: Headers = [*_STATE_HEADERS, self._bridge_id]
        self._produced = {
            t: RECORDS_PRODUCED.labels(topic=t)
            for t in (
                settings.topic_presence,
                settings.topic_routing_status,
                settings.topic_agent_state,
                settings.topic_dlq,
            )
        }
        self._shard_key = str(shard).encode()

        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._abandon = False
        self._failure: SinkError | None = None
        self._committing_ok = True
        # Sequence numbers: submitted (asyncio side) vs acknowledged (sink thread).
        self._submitted_items = 0
        self._submitted_records = 0
        self._acked_items = 0
        self._acked_records = 0
        self._flush_upto = 0
        self._batch_open = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.failed: asyncio.Future[SinkError] | None = None
        """Set by :meth:`start`; its result is the error that stopped the sink."""

    # -- public state -----------------------------------------------------------

    @property
    def transactional_id(self) -> str:
        return str(self._config["transactional.id"])

    @property
    def pending(self) -> int:
        """Records submitted but not yet committed."""
        return self._submitted_records - self._acked_records

    @property
    def healthy(self) -> bool:
        """For /readyz: started, not failed, not closing, and the last commit attempt succeeded."""
        return (
            self._thread is not None and self._failure is None and not self._closing and self._committing_ok
        )

    @property
    def error(self) -> SinkError | None:
        """The error that stopped the sink, if any."""
        return self._failure

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Create the producer and ``init_transactions()`` (fencing the previous owner).

        Raises :class:`FencedError` or :class:`DeliveryError` when that fails or
        does not finish within ``timeout_s``.
        """
        if self._thread is not None:
            raise RuntimeError("sink already started")
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._stopped = self._loop.create_future()
        self.failed = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(timeout_s,), name=f"sink-shard-{self.shard}", daemon=True
        )
        self._thread.start()
        await self._started

    async def flush(self) -> None:
        """Resolve when everything submitted so far is committed (commits at once)."""
        if self._failure is not None:
            raise self._failure
        target = self._submitted_items
        if self._acked_items >= target:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((target, fut))
        self._flush_upto = max(self._flush_upto, target)
        self._wake.set()
        await fut

    async def drain_to(self, max_pending_items: int) -> None:
        """Resolve when at most ``max_pending_items`` submitted items are uncommitted.

        Backpressure for a reader that got ahead of Kafka: unlike :meth:`flush`
        it does not force a commit, so transactions keep their normal size.
        """
        if self._failure is not None:
            raise self._failure
        target = self._submitted_items - max_pending_items
        if self._acked_items >= target:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        await fut

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Stop accepting, commit what is queued (within ``timeout_s``) and close the producer.

        What is not committed by then is left uncommitted (never half-visible):
        the next owner reconciles it. Never raises for a sink that already failed.
        """
        if self._thread is None or self._stopped is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout_s)
        except TimeoutError:
            log.warning(
                "shard %d: sink close timed out with %d records uncommitted", self.shard, self.pending
            )
            self._abandon = True
            self._wake.set()
            # A blocking librdkafka call finishes within call_timeout_s; don't wait longer.
            await asyncio.wait({self._stopped}, timeout=self._call_timeout + ABANDON_GRACE_S)

    # -- submissions (asyncio side, never block) --------------------------------------

    def submit(self, accepted: Accepted, channel_id: str | None) -> None:
        """Queue the event record and the agent's new state, to commit in one transaction."""
        self._check_open()
        change = accepted.change
        key = change.user_id.encode()
        kind = change.kind
        headers: Headers = list(self._event_headers[kind])
        if change.genesys_topic is not None:
            headers.append(("genesys-topic", change.genesys_topic.encode()))
        if change.correlation_id is not None:
            correlation = ("correlation-id", change.correlation_id.encode())
            headers.append(correlation)
            state_headers: Headers = [*self._state_headers, correlation]
        else:
            state_headers = list(self._state_headers)
        item = _Item(
            [
                (self._topics[kind], key, encode_event(change, self.shard, channel_id), headers),
                (
                    self._settings.topic_agent_state,
                    key,
                    encode_state(accepted.state, self.shard, self._clock()),
                    state_headers,
                ),
            ],
            change=change,
        )
        self._enqueue(item)

    def submit_tombstone(self, user_id: str) -> None:
        """Queue a tombstone (null value) for an agent that left the roster."""
        self._check_open()
        self._enqueue(
            _Item([(self._settings.topic_agent_state, user_id.encode(), None, list(self._state_headers))])
        )

    def submit_dlq(self, reason: str, error: str, frame: str, channel_id: str | None) -> None:
        """Queue a frame that could not be understood, keyed by the shard, with its reason."""
        self._check_open()
        value = encode_dlq(
            shard=self.shard,
            channel_id=channel_id,
            reason=reason,
            error=error,
            frame=frame,
            observed_at=self._clock(),
        )
        headers: Headers = [
            ("schema", DLQ_SCHEMA.encode()),
            ("event-type", DLQ_EVENT_TYPE.encode()),
            self._bridge_id,
        ]
        self._enqueue(_Item([(self._settings.topic_dlq, self._shard_key, value, headers)], dlq_reason=reason))

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise SinkError(f"shard {self.shard}: sink is closed")
        if self._thread is None:
            raise SinkError(f"shard {self.shard}: sink not started")

    def _enqueue(self, item: _Item) -> None:
        self._submitted_items += 1
        self._submitted_records += len(item.records)
        queue = self._queue
        queue.append(item)
        # Wake the sink thread only when it has something to do: to open a
        # transaction, or when a full one is waiting. Waking it for every
        # change would hand the GIL back and forth at the change rate; an open
        # transaction is closed by its deadline anyway.
        if (not self._batch_open or len(queue) >= self._txn_max_records) and not self._wake.is_set():
            self._wake.set()

    # -- asyncio callbacks (run in the loop thread) -------------------------------------

    def _resolve(self) -> None:
        acked = self._acked_items
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
        err = self._failure or SinkError(f"shard {self.shard}: sink closed before commit")
        for _target, fut in self._waiters:
            if not fut.done():
                fut.set_exception(err)
        self._waiters = []

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # -- the sink thread ----------------------------------------------------------------

    def _run(self, start_timeout_s: float) -> None:
        producer: Any = None
        try:
            try:
                producer = self._factory(self._config)
                self._init(producer, start_timeout_s)
            except _Stop:
                self._call_soon(self._set_started, self._failure)
                return
            except KafkaException as exc:
                self._fail(DeliveryError(f"shard {self.shard}: cannot create the producer: {exc}"))
                self._call_soon(self._set_started, self._failure)
                return
            self._call_soon(self._set_started, None)
            self._loop_forever(producer)
        except _Stop:
            pass
        except Exception as exc:  # a bug must not leave awaiting callers hanging
            log.exception("shard %d: sink thread crashed", self.shard)
            self._fail(DeliveryError(f"shard {self.shard}: sink thread crashed: {exc!r}"))
        finally:
            if producer is not None:
                try:
                    if self._failure is not None:
                        # A fenced or fatally failed producer can neither abort nor flush:
                        # drop what it holds and let the handle go.
                        producer.purge()
                    elif self._abandon:
                        # close() aborts and flushes: with nothing left to send it cannot hang.
                        producer.purge()
                        producer.close()
                    else:
                        producer.close()
                except Exception:  # closing a failed producer may raise
                    log.debug("shard %d: producer close failed", self.shard, exc_info=True)
            self._call_soon(self._set_stopped)

    def _init(self, producer: Any, timeout_s: float) -> None:
        deadline = self._mono() + timeout_s
        delay = self._backoff_initial
        while True:
            try:
                producer.init_transactions(max(0.1, min(self._call_timeout, deadline - self._mono())))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                action = self._handle(err, "init_transactions")
                if action is not Action.RETRY or self._mono() + delay >= deadline:
                    if self._failure is None:
                        self._fail(
                            DeliveryError(f"shard {self.shard}: init_transactions failed: {err.str()}")
                        )
                    raise _Stop from None
            self._sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    def _loop_forever(self, producer: Any) -> None:
        batch: list[_Item] = []
        records = 0
        deadline = 0.0
        queue = self._queue
        while True:
            if self._abandon:
                return
            if not batch:
                self._wake.clear()
                if not queue:
                    if self._closing:
                        return
                    self._wake.wait(IDLE_WAIT_S)
                    continue
                self._txn_call(producer, "begin_transaction")
                deadline = self._mono() + self._txn_max_s
                self._batch_open = True
            while queue and records < self._txn_max_records:
                item = queue.popleft()
                batch.append(item)
                records += len(item.records)
                self._produce(producer, item)
            self._poll(producer, 0)
            urgent = self._closing or self._flush_upto > self._acked_items
            now = self._mono()
            if records >= self._txn_max_records or now >= deadline or urgent:
                self._batch_open = False
                self._commit(producer, batch)
                self._acked_items += len(batch)
                self._acked_records += records
                self._call_soon(self._resolve)
                batch = []
                records = 0
            else:
                self._wake.clear()
                if len(queue) < self._txn_max_records - records:
                    # Hand what arrives to librdkafka every few ms, not only at the
                    # deadline: the records then travel while the window is open
                    # and the commit is little more than EndTxn.
                    self._wake.wait(min(deadline - now, PRODUCE_INTERVAL_S))

    def _produce(self, producer: Any, item: _Item) -> None:
        for topic, key, value, headers in item.records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers)
                    break
                except BufferError:
                    PRODUCE_ERRORS.labels(reason="buffer_full").inc()
                    self._poll(producer, 0.1)
                except KafkaException as exc:
                    err: KafkaError = exc.args[0]
                    if self._handle(err, "produce", producer) is not Action.RETRY:
                        # Abortable errors surface again at commit, which aborts and re-produces.
                        if self._failure is not None:
                            raise _Stop from None
                        return
                    self._poll(producer, 0.1)

    def _poll(self, producer: Any, timeout_s: float) -> None:
        """Serve librdkafka's callbacks; a fatal error (``_FENCED``) surfaces here too.

        ``poll()`` raises a fatal error as soon as librdkafka has one, which
        with a poll every few ms is usually before the commit would; it is
        classified like any other (fenced → :class:`FencedError`). An
        abortable or retriable one is left for the commit to handle.
        """
        try:
            producer.poll(timeout_s)
        except KafkaException as exc:
            self._handle(exc.args[0], "poll", producer)
            if self._failure is not None:
                raise _Stop from None

    def _txn_call(self, producer: Any, name: str) -> None:
        """``begin_transaction``: only fails for a fenced or fatally failed producer."""
        try:
            getattr(producer, name)()
        except KafkaException as exc:
            self._handle(exc.args[0], name, producer)
            if self._failure is None:
                self._fail(DeliveryError(f"shard {self.shard}: {name} failed: {exc.args[0].str()}"))
            raise _Stop from None

    def _commit(self, producer: Any, batch: list[_Item]) -> None:
        """Commit ``batch``; retry, or abort and re-produce it, until it is committed or the sink stops."""
        delay = self._backoff_initial
        while True:
            if self._abandon:
                raise _Stop
            try:
                producer.commit_transaction(self._call_timeout)
                break
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                action = self._handle(err, "commit_transaction", producer)
                if action is Action.RETRY:
                    self._sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
                    continue
                if action is not Action.ABORT:
                    raise _Stop from None
            self._abort(producer)
            self._txn_call(producer, "begin_transaction")
            for item in batch:
                self._produce(producer, item)
        self._committing_ok = True
        self._acknowledge(batch)

    def _abort(self, producer: Any) -> None:
        delay = self._backoff_initial
        while True:
            if self._abandon:
                raise _Stop
            try:
                producer.abort_transaction(self._call_timeout)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if self._handle(err, "abort_transaction") is not Action.RETRY:
                    raise _Stop from None
                self._sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    def _handle(self, err: KafkaError, op: str, producer: Any = None) -> Action:
        """Count and log one error; record a terminal failure (fenced/fatal)."""
        if producer is not None and err.code() == KafkaError._FATAL:
            err = _cause(producer, err, self._call_timeout)
        action = classify(err)
        forbidden = self._forbidden(err)
        if forbidden is not None:
            PRODUCE_ERRORS.labels(reason=Action.FATAL.value).inc()
            log.error("shard %d: %s", self.shard, forbidden)
            self._fail(forbidden)
            return Action.FATAL
        PRODUCE_ERRORS.labels(reason=action.value).inc()
        if action is Action.FENCED:
            FENCED.inc()
            log.warning("shard %d: fenced by a newer owner during %s: %s", self.shard, op, err.str())
            self._fail(FencedError(f"shard {self.shard}: fenced by a newer owner ({err.name()})"))
        elif action is Action.FATAL:
            log.error("shard %d: fatal Kafka error during %s: %s", self.shard, op, err.str())
            self._fail(DeliveryError(f"shard {self.shard}: fatal Kafka error during {op}: {err.str()}"))
        else:
            self._committing_ok = False
            log.warning("shard %d: %s error during %s: %s", self.shard, action.value, op, err.str())
        return action

    def _forbidden(self, err: KafkaError) -> AuthorizationError | None:
        """A missing ACL, named: the transactional id, or the topics this sink writes."""
        code = err.code()
        if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            return authorization_error(err, "WRITE", f"TRANSACTIONAL_ID {self.transactional_id}")
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            s = self._settings
            topics = ", ".join(
                dict.fromkeys([s.topic_presence, s.topic_routing_status, s.topic_agent_state, s.topic_dlq])
            )
            return authorization_error(err, "WRITE", f"TOPIC (one of {topics})")
        if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            return authorization_error(err, "IDEMPOTENT_WRITE", "CLUSTER kafka-cluster")
        return None

    def _fail(self, err: SinkError) -> None:
        if self._failure is not None:
            return
        self._failure = err
        self._call_soon(self._signal_failure, err)

    def _acknowledge(self, batch: list[_Item]) -> None:
        """Metrics for a committed batch (README "Metrics")."""
        now_mono = self._mono()
        now = self._clock()
        # Counted per batch: one locked update per topic and per histogram
        # instead of four per change, on the GIL the socket reader needs.
        per_topic: collections.Counter[str] = collections.Counter()
        delivery: list[float] = []
        lag: list[float] = []
        for item in batch:
            for topic, _key, _value, _headers in item.records:
                per_topic[topic] += 1
            change = item.change
            if change is not None:
                if change.received_at > 0:
                    delivery.append(max(0.0, now_mono - change.received_at))
                lag.append(max(0.0, (now - change.changed_at).total_seconds()))
            elif item.dlq_reason is not None:
                DLQ_RECORDS.labels(reason=item.dlq_reason).inc()
        EVENT_DELIVERY.observe_many(delivery)
        EVENT_LAG.observe_many(lag)
        produced = self._produced
        for topic, count in per_topic.items():
            counter = produced.get(topic)
            if counter is None:
                counter = produced[topic] = RECORDS_PRODUCED.labels(topic=topic)
            counter.inc(count)
