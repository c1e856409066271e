"""The thread of one transactional producer: batches in, committed transactions out.

:class:`TxnWriter` owns a confluent-kafka producer and the one thread that
makes its blocking calls. Callers append items (each a list of records that
must commit together) to :attr:`TxnWriter.queue` and set :attr:`TxnWriter.wake`;
the thread opens a transaction, produces what arrived every
:data:`PRODUCE_INTERVAL_S`, and commits ``txn_max_s`` after the first record,
at ``txn_max_records`` records, or at once when asked (:attr:`TxnWriter.flush_upto`,
closing). Its :class:`~bridge.kafka.txn.TxnState` is explicit and checked.

Failures follow :mod:`bridge.kafka.errors`: retriable calls are retried with
:func:`~bridge.kafka.txn.retry_call`; an abortable commit aborts and produces
the SAME batch again in a new transaction (read_committed readers see it
exactly once). An abort that has not finished after :data:`ABORT_STUCK_CALLS`
call timeouts (15 s by default) is stuck: after a broker restart librdkafka
can leave the EndTxn request queued for a coordinator connection it never
brings back, and every retry times out. The
writer then replaces the producer: it purges and drops the stuck one (whose
``close()`` would hang in that same abort), creates a new one with the same
``transactional.id`` (its ``init_transactions`` bumps the epoch, which aborts
the open transaction and fences the old handle) and produces the batch again.
Fenced and fatal errors stop the writer with
:class:`FencedError` / :class:`DeliveryError`, a missing ACL with
:class:`AuthorizationError`. Each failure counts
``bridge_produce_errors_total{reason}`` (``retriable``, ``abortable``,
``fenced``, ``fatal``, ``buffer_full``, and ``stuck`` once per replaced
producer); fencing also counts
``bridge_fenced_total``.

What happens is reported through :class:`WriterEvents`, called IN the
writer thread (the owner hands them to its event loop).
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException

from bridge.errors import DeliveryError, FencedError, SinkError
from bridge.kafka.config import ProducerFactory
from bridge.kafka.errors import Action, classify, fatal_cause, producer_authorization_error
from bridge.kafka.txn import TxnState, TxnStateMachine, doubling, retry_call
from bridge.metrics import FENCED, PRODUCE_ERRORS

__all__ = [
    "ABANDON_GRACE_S",
    "ABORT_STUCK_CALLS",
    "IDLE_WAIT_S",
    "PRODUCE_INTERVAL_S",
    "Batchable",
    "Close",
    "Headers",
    "Record",
    "TxnWriter",
    "WriterEvents",
]

log = logging.getLogger(__name__)

#: While a transaction is open the writer thread produces what arrived this
#: often, so that a commit has little left to send (see TxnWriter._loop).
PRODUCE_INTERVAL_S = 0.01
#: How long the idle writer thread sleeps between checks of its stop request.
IDLE_WAIT_S = 0.5
#: Extra wait, after an abandoned close, for the writer thread's last blocking call.
ABANDON_GRACE_S = 1.0
#: A buffer-full or retriable ``produce()`` serves callbacks this long before trying again.
PRODUCE_RETRY_POLL_S = 0.1
#: ``init_transactions`` gets at least this long per attempt, even just before its deadline.
MIN_CALL_TIMEOUT_S = 0.1
#: An ``abort_transaction`` retried for this many call timeouts without finishing is stuck:
#: the producer is replaced.
ABORT_STUCK_CALLS = 3

Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes, bytes | None, Headers]


class Batchable(Protocol):
    """An item of the queue: records (topic, key, value, headers) that commit together."""

    @property
    def records(self) -> Sequence[Record]: ...


Item = TypeVar("Item", bound=Batchable)
Item_contra = TypeVar("Item_contra", bound=Batchable, contravariant=True)


class Close(enum.IntEnum):
    """What the owner asked for; it only ever escalates (RUN < DRAIN < ABANDON)."""

    RUN = 0
    """Keep writing."""
    DRAIN = 1
    """Commit what is queued, then stop."""
    ABANDON = 2
    """Stop at the next chance; what is not committed stays uncommitted."""


class WriterEvents(Protocol[Item_contra]):
    """What the writer reports, called in its thread."""

    def started(self, error: SinkError | None) -> None:
        """``init_transactions`` succeeded (None) or the writer could not start."""

    def committed(self, batch: Sequence[Item_contra]) -> None:
        """``batch`` is committed (before it counts as acknowledged)."""

    def acknowledged(self) -> None:
        """:attr:`TxnWriter.acked_items` grew."""

    def failed(self, error: SinkError) -> None:
        """The writer stopped for good with ``error`` (called once)."""

    def stopped(self) -> None:
        """The thread ended and the producer is closed."""


class _Stop(Exception):
    """Internal: the writer thread must stop (failure already recorded)."""


class _Outcomes(Generic[Item]):
    """What a Kafka error means for a writer: counted, logged, and a terminal one recorded.

    The base of :class:`TxnWriter` (its thread state is there); ``name``
    prefixes every log line and error, ``topics`` names the topic resource
    for a missing WRITE ACL.
    """

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        events: WriterEvents[Item],
        topics: str,
        call_timeout_s: float,
        *,
        monotonic: Callable[[], float],
    ) -> None:
        self.name = name
        self._mono = monotonic
        self.config = config
        self._events = events
        self._topics = topics
        self.call_timeout_s = call_timeout_s
        self.txn = TxnStateMachine()
        self.failure: SinkError | None = None
        self.committing_ok = True
        #: When the open transaction began (``monotonic()``), None while none is open.
        self.txn_began: float | None = None

    @property
    def transactional_id(self) -> str:
        return str(self.config["transactional.id"])

    def _handle(self, err: KafkaError, op: str, producer: Any = None) -> Action:
        """Count and log one error; record a terminal failure (fenced/fatal)."""
        if producer is not None and err.code() == KafkaError._FATAL:
            err = fatal_cause(producer, err, self.call_timeout_s)
        action = classify(err)
        forbidden = producer_authorization_error(err, self.transactional_id, self._topics)
        if forbidden is not None:
            PRODUCE_ERRORS.labels(reason=Action.FATAL.value).inc()
            log.error("%s: %s", self.name, forbidden)
            self._fail(forbidden)
            return Action.FATAL
        PRODUCE_ERRORS.labels(reason=action.value).inc()
        if action is Action.FENCED:
            FENCED.inc()
            why = f"fenced by a newer owner ({err.name()}){self._outlived()}"
            log.warning("%s: %s during %s: %s", self.name, why, op, err.str())
            self._fail(FencedError(f"{self.name}: {why}"))
        elif action is Action.FATAL:
            log.error("%s: fatal Kafka error during %s: %s", self.name, op, err.str())
            self._fail(DeliveryError(f"{self.name}: fatal Kafka error during {op}: {err.str()}"))
        else:
            self.committing_ok = False
            log.warning("%s: %s error during %s: %s", self.name, action.value, op, err.str())
        return action

    def _outlived(self) -> str:
        """What to add to a fence when the open transaction outlived ``transaction.timeout.ms``.

        The broker aborts such a transaction itself and bumps the producer's epoch, which
        the producer sees as PRODUCER_FENCED, exactly as a newer owner's. Which of the two
        it was is not the writer's to decide (taking the id back would fence a real owner).
        """
        if self.txn_began is None:
            return ""
        age_s = self._mono() - self.txn_began
        timeout_ms = int(self.config.get("transaction.timeout.ms", 0))
        if not timeout_ms or age_s * 1000 <= timeout_ms:
            return ""
        return (
            f", or by the broker: the transaction was open {age_s:.0f} s, longer than its timeout "
            f"(transaction.timeout.ms {timeout_ms}), and the broker aborts such a transaction"
        )

    def _fail(self, err: SinkError) -> None:
        if self.failure is not None:
            return
        self.failure = err
        self.txn.to(TxnState.FAILED)
        self._events.failed(err)


class TxnWriter(_Outcomes[Item]):
    """One transactional producer and its thread; see the module docstring.

    ``name`` prefixes every log line and error (``shard 3``); ``topics``
    names the topic resource for a missing WRITE ACL.
    """

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        events: WriterEvents[Item],
        *,
        producer_factory: ProducerFactory,
        txn_max_s: float,
        txn_max_records: int,
        topics: str,
        call_timeout_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        monotonic: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        super().__init__(name, config, events, topics, call_timeout_s, monotonic=monotonic)
        self._factory = producer_factory
        self._txn_max_s = txn_max_s
        self.txn_max_records = txn_max_records
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._sleep = sleep
        self.queue: collections.deque[Item] = collections.deque()
        self.wake = threading.Event()
        self.close_request = Close.RUN
        self.flush_upto = 0
        # Acknowledged (committed) so far; written by the writer thread only.
        self.acked_items = 0
        self.acked_records = 0
        self.thread: threading.Thread | None = None
        # The producer in use: written by the writer thread only.
        self._producer: Any = None

    def start(self, timeout_s: float) -> None:
        """Start the thread: create the producer, ``init_transactions`` within ``timeout_s``, write."""
        if self.thread is not None:
            raise RuntimeError(f"{self.name}: writer already started")
        self.thread = threading.Thread(
            target=self._run, args=(timeout_s,), name=f"sink-{self.name.replace(' ', '-')}", daemon=True
        )
        self.thread.start()

    def request(self, close: Close) -> None:
        """Ask the thread to drain or abandon (never de-escalates)."""
        self.close_request = max(self.close_request, close)
        self.wake.set()

    # -- the writer thread ---------------------------------------------------------------

    def _run(self, start_timeout_s: float) -> None:
        try:
            try:
                self._init(self._create(), start_timeout_s)
            except _Stop:
                self._events.started(self.failure)
                return
            self._events.started(None)
            self._loop()
        except _Stop:
            pass
        except Exception as exc:  # a bug must not leave awaiting callers hanging
            log.exception("%s: sink thread crashed", self.name)
            self._fail(DeliveryError(f"{self.name}: sink thread crashed: {exc!r}"))
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    if self.failure is not None or self.txn.state is TxnState.ABORTING:
                        # A fenced or fatally failed producer can neither abort nor flush,
                        # and close() would hang in a stuck abort: drop what it holds and
                        # let the handle go.
                        producer.purge()
                    elif self.close_request is Close.ABANDON:
                        # close() aborts and flushes: with nothing left to send it cannot hang.
                        producer.purge()
                        producer.close()
                    else:
                        producer.close()
                except Exception:  # closing a failed producer may raise
                    log.debug("%s: producer close failed", self.name, exc_info=True)
                del producer
            self.txn.to(TxnState.CLOSED)
            self._events.stopped()

    def _create(self) -> Any:
        """A new producer (:attr:`_producer`); a configuration librdkafka refuses stops the writer."""
        try:
            self._producer = self._factory(self.config)
        except KafkaException as exc:
            self._fail(DeliveryError(f"{self.name}: cannot create the producer: {exc}"))
            raise _Stop from None
        return self._producer

    def _delays(self) -> Iterator[float]:
        return doubling(*self._backoff)

    def _init(self, producer: Any, timeout_s: float | None) -> None:
        """``init_transactions`` until it succeeds, ``timeout_s`` passes (None: never), the owner
        abandons the writer, or a terminal error (all but success stop the writer)."""
        self.txn.to(TxnState.INITIALISING)
        deadline = float("inf") if timeout_s is None else self._mono() + timeout_s
        failure = retry_call(
            self._checked(
                producer.init_transactions,
                lambda: max(MIN_CALL_TIMEOUT_S, min(self.call_timeout_s, deadline - self._mono())),
            ),
            lambda err: self._handle(err, "init_transactions"),
            self._delays(),
            sleep=self._sleep,
            give_up=lambda delay: self._mono() + delay >= deadline,
        )
        if failure is not None:
            if self.failure is None:
                self._fail(DeliveryError(f"{self.name}: init_transactions failed: {failure.error.str()}"))
            raise _Stop
        self.txn.to(TxnState.IDLE)

    def _loop(self) -> None:
        producer = self._producer
        batch: list[Item] = []
        records = 0
        deadline = 0.0
        queue = self.queue
        txn_max_records = self.txn_max_records
        while True:
            if self.close_request is Close.ABANDON:
                return
            if not batch:
                self.wake.clear()
                if not queue:
                    if self.close_request is not Close.RUN:
                        return
                    self.wake.wait(IDLE_WAIT_S)
                    continue
                self._begin(producer)
                deadline = self._mono() + self._txn_max_s
            while queue and records < txn_max_records:
                item = queue.popleft()
                batch.append(item)
                records += len(item.records)
                self._produce(producer, item)
            self._poll(producer, 0)
            urgent = self.close_request is not Close.RUN or self.flush_upto > self.acked_items
            now = self._mono()
            if records >= txn_max_records or now >= deadline or urgent:
                producer = self._commit(producer, batch)
                self.acked_items += len(batch)
                self.acked_records += records
                self._events.acknowledged()
                batch = []
                records = 0
            else:
                self.wake.clear()
                if len(queue) < txn_max_records - records:
                    # Hand what arrives to librdkafka every few ms, not only at the
                    # deadline: the records then travel while the window is open
                    # and the commit is little more than EndTxn.
                    self.wake.wait(min(deadline - now, PRODUCE_INTERVAL_S))

    def _produce(self, producer: Any, item: Item) -> None:
        for topic, key, value, headers in item.records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers)
                    break
                except BufferError:
                    PRODUCE_ERRORS.labels(reason="buffer_full").inc()
                    self._poll(producer, PRODUCE_RETRY_POLL_S)
                except KafkaException as exc:
                    err: KafkaError = exc.args[0]
                    if self._handle(err, "produce", producer) is not Action.RETRY:
                        # Abortable errors surface again at commit, which aborts and re-produces.
                        if self.failure is not None:
                            raise _Stop from None
                        return
                    self._poll(producer, PRODUCE_RETRY_POLL_S)

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
            if self.failure is not None:
                raise _Stop from None

    def _begin(self, producer: Any) -> None:
        """``begin_transaction``: only fails for a fenced or fatally failed producer."""
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            self._handle(exc.args[0], "begin_transaction", producer)
            if self.failure is None:
                self._fail(DeliveryError(f"{self.name}: begin_transaction failed: {exc.args[0].str()}"))
            raise _Stop from None
        self.txn.to(TxnState.OPEN)
        self.txn_began = self._mono()

    def _checked(
        self, call: Callable[[float], None], timeout: Callable[[], float] | None = None
    ) -> Callable[[], None]:
        """``call(timeout())`` (``call_timeout_s`` without one), unless the owner abandoned the writer."""

        def attempt() -> None:
            if self.close_request is Close.ABANDON:
                raise _Stop
            call(self.call_timeout_s if timeout is None else timeout())

        return attempt

    def _commit(self, producer: Any, batch: list[Item]) -> Any:
        """Commit ``batch``; retry, or abort and re-produce it, until it is committed or the writer
        stops; the producer in use afterwards (a new one when an abort was stuck)."""
        delays = self._delays()  # one backoff across the aborts of this batch
        while True:
            self.txn.to(TxnState.COMMITTING)
            failure = retry_call(
                self._checked(producer.commit_transaction),
                functools.partial(self._handle, op="commit_transaction", producer=producer),
                delays,
                sleep=self._sleep,
            )
            if failure is None:
                break
            if failure.action is not Action.ABORT:
                raise _Stop
            producer = self._abort(producer)
            self._begin(producer)
            for item in batch:
                self._produce(producer, item)
        self.txn.to(TxnState.IDLE)
        self.txn_began = None
        self.committing_ok = True
        self._events.committed(batch)
        return producer

    def _abort(self, producer: Any) -> Any:
        """Abort the open transaction; replace the producer when the abort is stuck."""
        self.txn.to(TxnState.ABORTING)
        stuck_s = ABORT_STUCK_CALLS * self.call_timeout_s
        deadline = self._mono() + stuck_s
        failure = retry_call(
            self._checked(producer.abort_transaction),
            lambda err: self._handle(err, "abort_transaction"),
            self._delays(),
            sleep=self._sleep,
            give_up=lambda delay: self._mono() + delay >= deadline,
        )
        if failure is None:
            self.txn.to(TxnState.IDLE)
            return producer
        if failure.action is not Action.RETRY or self.failure is not None:
            raise _Stop
        PRODUCE_ERRORS.labels(reason="stuck").inc()
        log.warning(
            "%s: abort_transaction has not finished in %.0f s (%s); replacing the producer: "
            "the new one (same transactional.id) aborts the open transaction, then the batch is "
            "written again",
            self.name,
            stuck_s,
            failure.error.str(),
        )
        # close() would hang in the same abort: purge and drop the handle instead.
        producer.purge()
        self._producer = None
        new = self._create()
        self._init(new, None)
        return new
