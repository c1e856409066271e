"""bridge.kafka.errors: the one classification of librdkafka errors."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from bridge.kafka.errors import Action, classify, fatal_cause, producer_authorization_error


def test_a_generic_fatal_error_is_traced_to_fencing() -> None:
    """produce() after fencing says only "_FATAL"; the sink asks the transactional API for the cause."""

    class FencedProducer:
        def abort_transaction(self, _timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))

    generic = KafkaError(KafkaError._FATAL, "Local: Fatal error", fatal=True)
    assert classify(generic) is Action.FATAL
    assert classify(fatal_cause(FencedProducer(), generic, 1.0)) is Action.FENCED


def test_fencing_wins_over_fatal_and_abortable_over_retriable() -> None:
    """Fenced codes classify as fenced even when fatal; an abortable error is not retried as is."""
    for code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
        assert classify(KafkaError(code, "fenced", fatal=True)) is Action.FENCED
    both = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True, txn_requires_abort=True)
    assert classify(both) is Action.ABORT
    assert classify(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)) is Action.RETRY


def test_an_error_neither_retriable_nor_abortable_is_fatal() -> None:
    """An illegal state cannot be helped by retrying."""
    assert classify(KafkaError(KafkaError._STATE, "Local: Erroneous state")) is Action.FATAL


def test_a_missing_producer_acl_is_named() -> None:
    """Transactional id, topic and idempotent-write refusals name the ACL; other errors are None."""
    tid = producer_authorization_error(
        KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), "fleet-shard-3", "TOPIC t"
    )
    assert tid is not None
    assert (tid.operation, tid.resource) == ("WRITE", "TRANSACTIONAL_ID fleet-shard-3")
    topic = producer_authorization_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "x", "TOPIC t")
    assert topic is not None
    assert (topic.operation, topic.resource) == ("WRITE", "TOPIC t")
    cluster = KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED)
    named = producer_authorization_error(cluster, "x", "TOPIC t")
    assert named is not None
    assert (named.operation, named.resource) == ("IDEMPOTENT_WRITE", "CLUSTER kafka-cluster")
    assert producer_authorization_error(cluster, "x", "TOPIC t", idempotent_write=False) is None
    assert producer_authorization_error(KafkaError(KafkaError._TIMED_OUT), "x", "TOPIC t") is None
