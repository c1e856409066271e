"""bridge.kafka.txn: the transaction state table and the one retry core (no broker)."""

from __future__ import annotations

import itertools

import pytest
from confluent_kafka import KafkaError, KafkaException

from bridge.kafka.errors import Action, classify
from bridge.kafka.txn import (
    TRANSITIONS,
    IllegalTransition,
    TxnState,
    TxnStateMachine,
    doubling,
    no_delay,
    retry_call,
)

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
ABORTABLE = KafkaError(KafkaError._MSG_TIMED_OUT, "message timed out", txn_requires_abort=True)
FENCED = KafkaError(KafkaError._FENCED, "fenced", fatal=True)


def machine_in(state: TxnState) -> TxnStateMachine:
    """A machine brought to ``state`` along allowed moves only."""
    paths = {
        TxnState.NEW: [],
        TxnState.INITIALISING: [TxnState.INITIALISING],
        TxnState.IDLE: [TxnState.INITIALISING, TxnState.IDLE],
        TxnState.OPEN: [TxnState.INITIALISING, TxnState.IDLE, TxnState.OPEN],
        TxnState.COMMITTING: [TxnState.INITIALISING, TxnState.IDLE, TxnState.OPEN, TxnState.COMMITTING],
        TxnState.ABORTING: [
            TxnState.INITIALISING,
            TxnState.IDLE,
            TxnState.OPEN,
            TxnState.COMMITTING,
            TxnState.ABORTING,
        ],
        TxnState.FAILED: [TxnState.FAILED],
        TxnState.CLOSED: [TxnState.CLOSED],
    }
    machine = TxnStateMachine()
    for step in paths[state]:
        machine.to(step)
    assert machine.state is state
    return machine


def test_the_table_covers_every_state() -> None:
    """Every state has a row, and closing is the one way out of every state but CLOSED."""
    assert set(TRANSITIONS) == set(TxnState)
    for state, targets in TRANSITIONS.items():
        assert (TxnState.CLOSED in targets) is (state is not TxnState.CLOSED)
    assert TRANSITIONS[TxnState.CLOSED] == frozenset()


def test_a_transaction_commits_aborts_and_writes_again() -> None:
    """The sink's life: init, open, commit; an abortable commit aborts, begins again and commits."""
    machine = TxnStateMachine()
    assert machine.state is TxnState.NEW
    for state in (
        TxnState.INITIALISING,
        TxnState.IDLE,
        TxnState.OPEN,
        TxnState.COMMITTING,
        TxnState.ABORTING,
        TxnState.IDLE,
        TxnState.OPEN,
        TxnState.COMMITTING,
        TxnState.IDLE,
        TxnState.CLOSED,
    ):
        machine.to(state)
        assert machine.state is state


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(TxnState, TxnState)))
def test_only_the_table_moves_the_state(current: TxnState, wanted: TxnState) -> None:
    """A move the table allows happens; any other raises IllegalTransition and changes nothing."""
    machine = machine_in(current)
    if wanted in TRANSITIONS[current]:
        machine.to(wanted)
        assert machine.state is wanted
    else:
        with pytest.raises(IllegalTransition) as raised:
            machine.to(wanted)
        assert (raised.value.current, raised.value.wanted) == (current, wanted)
        assert machine.state is current


def test_illegal_moves_a_caller_could_make() -> None:
    """Committing without a transaction, reopening a failed producer and reviving a closed one are bugs."""
    with pytest.raises(IllegalTransition):
        machine_in(TxnState.IDLE).to(TxnState.COMMITTING)
    with pytest.raises(IllegalTransition):
        machine_in(TxnState.FAILED).to(TxnState.OPEN)
    with pytest.raises(IllegalTransition):
        machine_in(TxnState.CLOSED).to(TxnState.FAILED)
    with pytest.raises(IllegalTransition):
        machine_in(TxnState.OPEN).to(TxnState.OPEN)


def test_doubling_caps_the_delay() -> None:
    """Delays double from the first one up to the cap."""
    assert list(itertools.islice(doubling(0.1, 0.5), 5)) == [0.1, 0.2, 0.4, 0.5, 0.5]


class Flaky:
    """A transactional call failing with ``errors`` first, then succeeding."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))


def test_retriable_errors_are_retried_after_the_backoff() -> None:
    """A retriable error sleeps the next delay and calls again, until the call succeeds."""
    call = Flaky(TIMED_OUT, TIMED_OUT)
    slept: list[float] = []
    assert retry_call(call, classify, doubling(0.1, 2.0), sleep=slept.append) is None
    assert call.calls == 3
    assert slept == [0.1, 0.2]


def test_a_non_retriable_error_ends_the_call_with_its_action() -> None:
    """Abortable and fenced errors are returned at once, with what the handler said."""
    for error, action in ((ABORTABLE, Action.ABORT), (FENCED, Action.FENCED)):
        call = Flaky(error)
        slept: list[float] = []
        failure = retry_call(call, classify, doubling(0.1, 2.0), sleep=slept.append)
        assert failure is not None
        assert (failure.error.code(), failure.action, call.calls, slept) == (error.code(), action, 1, [])


def test_retries_end_when_the_delays_run_out_or_the_caller_gives_up() -> None:
    """no_delay(n) allows n retries; give_up stops before sleeping a delay it refuses."""
    call = Flaky(TIMED_OUT, TIMED_OUT, TIMED_OUT)
    slept: list[float] = []
    failure = retry_call(call, classify, no_delay(2), sleep=slept.append)
    assert failure is not None
    assert (failure.action, call.calls, slept) == (Action.RETRY, 3, [0.0, 0.0])

    call = Flaky(TIMED_OUT, TIMED_OUT)
    failure = retry_call(call, classify, doubling(0.1, 2.0), sleep=slept.append, give_up=lambda d: d > 0.1)
    assert failure is not None
    assert (failure.action, call.calls) == (Action.RETRY, 2)


def test_one_backoff_spans_several_calls() -> None:
    """Passing the same delays to a second call continues the backoff where the first left it."""
    delays = doubling(0.1, 2.0)
    slept: list[float] = []
    retry_call(Flaky(TIMED_OUT), classify, delays, sleep=slept.append)
    retry_call(Flaky(TIMED_OUT), classify, delays, sleep=slept.append)
    assert slept == [0.1, 0.2]


def test_the_handler_decides_and_sees_every_error() -> None:
    """The handler's verdict, not the error's class, decides (a sink maps a missing ACL to fatal)."""
    seen: list[int] = []

    def handle(err: KafkaError) -> Action:
        seen.append(err.code())
        return Action.FATAL

    failure = retry_call(Flaky(TIMED_OUT), handle, doubling(0.1, 2.0), sleep=lambda _s: None)
    assert failure is not None
    assert failure.action is Action.FATAL
    assert seen == [KafkaError._TIMED_OUT]
