"""Read a topic to its end as of the call: written once for every whole-topic reader.

:func:`read_to_end` serves the partition map (:func:`bridge.fleet.read_map`),
the agent states (:func:`bridge.statestore.load_states`), ``tail``'s initial
view and the audit's read of the event topics:

- a ``read_uncommitted`` probe takes every partition's watermarks at the
  start. The end is the high watermark, not the last stable offset: a
  transaction whose commit has returned may still be writing its commit
  markers for a few milliseconds, and its records must be read. Transactions
  still open at the call delay the read until they commit or abort.
  With ``stable=True`` the end is the last stable offset instead (a
  ``read_committed`` probe): a transaction still open is not waited for.
  The partition map is read so: a coordinator frozen inside its transaction
  must not stall every shard's map read until the transaction times out;
- the non-empty partitions are ``assign``-ed, never subscribed (no consumer
  group is joined, no offset is committed), from their low watermark or,
  with ``since_ms``, from the first offset at or after that time;
- they are read ``read_committed``; a partition is done when the position
  reaches its end (a message at ``end - 1`` or an end-of-partition event at
  ``end`` or later; transaction markers occupy offsets no message carries).
  Messages past the end (written after the call) are not passed on;
- a missing topic, a Kafka error or a read that does not finish within
  ``timeout_s`` raise :class:`~bridge.errors.SinkError`; a missing READ ACL on
  the topic or on the consumer's group is an
  :class:`~bridge.errors.AuthorizationError` naming it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bridge.acl import reader_authorization_error
from bridge.errors import SinkError
from bridge.kafka.config import FETCH_WAIT_MAX_MS, ConsumerFactory

__all__ = [
    "DEFAULT_READ_TIMEOUT_S",
    "FETCH_WAIT_MAX_MS",
    "ConsumerFactory",
    "read_to_end",
    "reader_config",
]

#: Bounds a whole read (a stuck broker, a transaction that stays open).
DEFAULT_READ_TIMEOUT_S = 60.0
#: Messages per consume() call.
CONSUME_BATCH = 5_000
CONSUME_POLL_S = 0.5
WATERMARK_RETRY_S = 0.1
#: librdkafka does not flag these retriable on a watermark query, but they pass.
_NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def reader_config(kafka_config: Mapping[str, Any], group_id: str) -> dict[str, Any]:
    """Settings of an assign-only ``read_committed`` reader; ``group_id`` is never joined.

    librdkafka requires a group id; brokers with ACLs check READ on it.
    """
    return {
        **kafka_config,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
    }


def read_to_end(
    consumer_factory: ConsumerFactory,
    config: dict[str, Any],
    topic: str,
    on_message: Callable[[Any], None],
    *,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    kind: str = "",
    since_ms: int | None = None,
    stable: bool = False,
) -> int:
    """Pass every message of ``topic`` up to its end as of the call to ``on_message``; the partition count.

    ``config`` is the reader's (see :func:`reader_config`); ``kind`` names the
    topic in errors (``"state"`` → "state topic … is not available").
    Messages come per partition in offset order (partitions interleave); they
    are confluent-kafka's (``key()``, ``value()``, ``headers()``,
    ``partition()``, ``offset()``).
    """
    deadline = time.monotonic() + timeout_s
    group = str(config.get("group.id", ""))
    try:
        partitions, ends, assignment = _bounds(
            consumer_factory(
                {**config, "isolation.level": "read_committed" if stable else "read_uncommitted"}
            ),
            topic,
            timeout_s,
            kind,
            since_ms,
        )
    except KafkaException as exc:
        raise _read_error(exc.args[0], topic, group) from None
    if not assignment:
        return partitions
    consumer = consumer_factory({**config, "enable.partition.eof": True, "isolation.level": "read_committed"})
    try:
        consumer.assign(assignment)
        while ends:
            if time.monotonic() > deadline:
                raise SinkError(f"reading {topic} did not finish within {timeout_s:g} s")
            for msg in consumer.consume(num_messages=CONSUME_BATCH, timeout=CONSUME_POLL_S):
                err = msg.error()
                partition = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= ends.get(partition, 0):
                            ends.pop(partition, None)
                        continue
                    raise KafkaException(err)
                end = ends.get(partition)
                if end is None or msg.offset() >= end:  # already complete: newer than the call
                    continue
                if msg.offset() >= end - 1:
                    ends.pop(partition, None)
                on_message(msg)
        return partitions
    except KafkaException as exc:
        raise _read_error(exc.args[0], topic, group) from None
    finally:
        consumer.close()


def _bounds(
    consumer: Any, topic: str, timeout_s: float, kind: str, since_ms: int | None
) -> tuple[int, dict[int, int], list[TopicPartition]]:
    """The partition count, the high watermarks of the partitions to read, and where to start them."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise SinkError(f"{kind + ' ' if kind else ''}topic {topic} is not available")
        ends: dict[int, int] = {}
        assignment = []
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition)
            low, high = _watermarks(consumer, tp, timeout_s)
            start = low
            if since_ms is not None:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, partition, since_ms)], timeout=timeout_s
                )
                offset = int(found[0].offset)
                start = high if offset < 0 else max(low, offset)
            if high > start:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, start))
        return len(metadata.partitions), ends, assignment
    finally:
        consumer.close()


def _watermarks(consumer: Any, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """Low and high watermark; retried while the error is retriable.

    A just-created topic's partitions can answer NOT_LEADER_FOR_PARTITION for
    a moment after the metadata already names a leader.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _NOT_READY) or time.monotonic() > deadline:
                raise
            time.sleep(WATERMARK_RETRY_S)


def _read_error(err: KafkaError, topic: str, group: str) -> SinkError:
    """A missing READ ACL (topic or group) named as such; anything else a plain :class:`SinkError`."""
    forbidden = reader_authorization_error(err, topic, group)
    return forbidden if forbidden is not None else SinkError(f"cannot read {topic}: {err.str()}")
