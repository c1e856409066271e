"""One classification of librdkafka errors, for every transactional producer of the bridge.

librdkafka sorts a failed transactional call into classes; :func:`classify`
turns them into what to do (:class:`Action`, also the metric reason):

- fenced (``_FENCED``, ``PRODUCER_FENCED``, ``INVALID_PRODUCER_EPOCH``): a newer
  owner of the transactional id exists; stop writing. Checked first: librdkafka
  also flags fencing as fatal.
- fatal (``err.fatal()``, or neither abortable nor retriable, such as an
  illegal state): the producer is unusable; retrying cannot help.
- abortable (``txn_requires_abort()``, e.g. a message timed out): abort the
  transaction and write its records again in a new one.
- retriable (e.g. ``_TIMED_OUT`` while the broker is down): call the same
  operation again after a backoff.

:func:`fatal_cause` finds the error behind librdkafka's generic ``_FATAL``;
:func:`producer_authorization_error` names the ACL a producer is missing.
"""

from __future__ import annotations

import enum
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from bridge.acl import authorization_error
from bridge.errors import AuthorizationError

__all__ = ["FENCED_CODES", "Action", "classify", "fatal_cause", "producer_authorization_error"]

#: The codes that mean "a newer owner of this transactional id exists".
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


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
    if err.code() in FENCED_CODES:
        return Action.FENCED
    if err.fatal():
        return Action.FATAL
    if err.txn_requires_abort():
        return Action.ABORT
    if err.retriable():
        return Action.RETRY
    return Action.FATAL


def fatal_cause(producer: Any, err: KafkaError, timeout_s: float) -> KafkaError:
    """The error behind librdkafka's generic ``_FATAL``.

    Once a producer has hit a fatal error, ``produce()`` only says "Local:
    Fatal error"; the transactional API reports the original one (e.g.
    ``_FENCED`` when a newer owner took the transactional id), which decides
    between a fenced writer and a broken producer.
    """
    try:
        producer.abort_transaction(timeout_s)
    except KafkaException as exc:
        cause: KafkaError = exc.args[0]
        return cause
    return err


def producer_authorization_error(
    err: KafkaError, transactional_id: str, topics: str, *, idempotent_write: bool = True
) -> AuthorizationError | None:
    """A transactional producer's missing ACL, named; None for any other error.

    ``topics`` names the topic resource as the message should show it (``TOPIC
    x``, or ``TOPIC (one of a, b)``); an empty string leaves a topic error
    unnamed (None). ``idempotent_write`` also maps the cluster-level
    ``IDEMPOTENT_WRITE`` refusal.
    """
    code = err.code()
    if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        return authorization_error(err, "WRITE", f"TRANSACTIONAL_ID {transactional_id}")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED and topics:
        return authorization_error(err, "WRITE", topics)
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED and idempotent_write:
        return authorization_error(err, "IDEMPOTENT_WRITE", "CLUSTER kafka-cluster")
    return None
