"""Kafka transactions written once: the retry core and the transaction state machine.

Retry core: :func:`retry_call` makes one blocking transactional call
(``init_transactions``, ``commit_transaction``, ``abort_transaction``) until
it succeeds, asking a handler what each failure means (an :class:`Action`
of :mod:`bridge.kafka.errors`): a retriable error is retried after the next
delay (:func:`doubling`: capped exponential backoff), anything else ends the
call with a :class:`Failure` for the caller to act on (abort and write again,
stop as fenced, stop as broken).

State machine: a transactional producer is in exactly one :class:`TxnState`;
:data:`TRANSITIONS` lists where each state may go and
:meth:`TxnStateMachine.to` refuses anything else (:class:`IllegalTransition`,
a programming error, never a Kafka condition)::

    NEW ──> INITIALISING ──> IDLE ──> OPEN ──> COMMITTING ──> IDLE
                                       ^           │
                                       │           v
                                       └─ IDLE <─ ABORTING     (abortable: write again)
                  ^                                   │
                  └───────────────────────────────────┘        (abort stuck: a new producer)

    NEW … ABORTING ──> FAILED (fenced or fatal) ──> CLOSED
    NEW … ABORTING ──> CLOSED (the producer is closed; terminal)
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

from bridge.kafka.errors import Action

__all__ = [
    "TRANSITIONS",
    "TXN_BACKOFF_INITIAL_S",
    "TXN_BACKOFF_MAX_S",
    "Failure",
    "IllegalTransition",
    "TxnState",
    "TxnStateMachine",
    "doubling",
    "no_delay",
    "retry_call",
]

#: First pause before a retriable transactional call is made again (doubles per retry).
TXN_BACKOFF_INITIAL_S = 0.1
#: Longest pause between two attempts of a retriable transactional call.
TXN_BACKOFF_MAX_S = 2.0


class TxnState(enum.Enum):
    """Where a transactional producer is (see the module docstring for the diagram)."""

    NEW = "new"
    """Created; ``init_transactions()`` not called yet."""
    INITIALISING = "initialising"
    """``init_transactions()`` (fencing the previous owner) is running or being retried."""
    IDLE = "idle"
    """Ready; no transaction open."""
    OPEN = "open"
    """A transaction is open and records are being produced into it."""
    COMMITTING = "committing"
    """``commit_transaction()`` is running or being retried."""
    ABORTING = "aborting"
    """An abortable error: ``abort_transaction()`` is running or being retried."""
    FAILED = "failed"
    """Fenced or fatally broken: nothing more is written."""
    CLOSED = "closed"
    """The producer is closed (terminal)."""


_ENDS = (TxnState.FAILED, TxnState.CLOSED)
#: state → the states it may move to.
TRANSITIONS: dict[TxnState, frozenset[TxnState]] = {
    TxnState.NEW: frozenset({TxnState.INITIALISING, *_ENDS}),
    TxnState.INITIALISING: frozenset({TxnState.IDLE, *_ENDS}),
    TxnState.IDLE: frozenset({TxnState.OPEN, *_ENDS}),
    TxnState.OPEN: frozenset({TxnState.COMMITTING, *_ENDS}),
    TxnState.COMMITTING: frozenset({TxnState.IDLE, TxnState.ABORTING, *_ENDS}),
    # INITIALISING: the abort is stuck, and a new producer (same transactional.id) replaces it.
    TxnState.ABORTING: frozenset({TxnState.IDLE, TxnState.INITIALISING, *_ENDS}),
    TxnState.FAILED: frozenset({TxnState.CLOSED}),
    TxnState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move :data:`TRANSITIONS` does not allow: a bug in the caller, not a Kafka condition."""

    def __init__(self, current: TxnState, wanted: TxnState) -> None:
        super().__init__(f"illegal transaction state transition {current.name} -> {wanted.name}")
        self.current = current
        self.wanted = wanted


class TxnStateMachine:
    """The state of one transactional producer; only :data:`TRANSITIONS` may change it.

    Written by one thread (the producer's); any thread may read :attr:`state`.
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = TxnState.NEW

    def to(self, wanted: TxnState) -> None:
        """Move to ``wanted``; :class:`IllegalTransition` when the table does not allow it."""
        if wanted not in TRANSITIONS[self.state]:
            raise IllegalTransition(self.state, wanted)
        self.state = wanted


@dataclass(frozen=True, slots=True)
class Failure:
    """How a retried call ended without success: the last error and what it means.

    ``action`` is :attr:`Action.RETRY` when the error was retriable but the
    retries ran out (no delay left, or the caller gave up).
    """

    error: KafkaError
    action: Action


def doubling(initial_s: float, max_s: float) -> Iterator[float]:
    """Delays ``initial_s``, twice that, ... capped at ``max_s``, forever."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * 2, max_s)


def no_delay(retries: int) -> Iterator[float]:
    """``retries`` immediate retries (for a call that blocks up to its own timeout anyway)."""
    return itertools.repeat(0.0, retries)


def _never(_delay: float) -> bool:
    return False


def retry_call(
    call: Callable[[], object],
    handle: Callable[[KafkaError], Action],
    delays: Iterator[float],
    *,
    sleep: Callable[[float], None],
    give_up: Callable[[float], bool] = _never,
) -> Failure | None:
    """Make ``call`` until it returns (None) or fails for good (its :class:`Failure`).

    Each ``KafkaException`` goes to ``handle`` (count, log, record, classify);
    on :attr:`Action.RETRY` the next of ``delays`` is slept and the call made
    again, unless ``delays`` is exhausted or ``give_up(delay)`` says so. Any
    other exception (a stop request raised by ``call``) propagates. Pass the
    same ``delays`` to several calls to keep one backoff across them.
    """
    while True:
        try:
            call()
            return None
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            action = handle(err)
            if action is not Action.RETRY:
                return Failure(err, action)
        delay = next(delays, None)
        if delay is None or give_up(delay):
            return Failure(err, Action.RETRY)
        sleep(delay)
