"""bridge.kafka.compacted against the real broker: a topic read to its end as of the call."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from bridge.errors import SinkError
from bridge.kafka.compacted import read_to_end, reader_config
from tests.conftest import KafkaBroker

pytestmark = pytest.mark.kafka


def _produce(
    producer: Producer, topic: str, partition: int, *values: bytes, at_ms: int | None = None
) -> None:
    for value in values:
        producer.produce(topic, value=value, partition=partition, timestamp=at_ms or 0)
    producer.flush(30)


def test_every_partition_is_read_to_its_end_as_of_the_call(kafka: KafkaBroker) -> None:
    """Each partition in offset order, the partition count returned; records written meanwhile are not."""
    topic = kafka.create_topic("compacted", partitions=3)
    producer = Producer(kafka.config())
    _produce(producer, topic, 0, b"a0", b"a1")
    _produce(producer, topic, 2, b"c0")
    seen: list[tuple[int, bytes]] = []

    def on_message(msg: Any) -> None:
        seen.append((msg.partition(), msg.value()))
        _produce(producer, topic, msg.partition(), b"later")

    count = read_to_end(Consumer, reader_config(kafka.config(), "compacted-test"), topic, on_message)
    assert count == 3
    assert sorted(seen) == [(0, b"a0"), (0, b"a1"), (2, b"c0")]
    assert [v for p, v in seen if p == 0] == [b"a0", b"a1"]


def test_since_starts_each_partition_at_that_time(kafka: KafkaBroker) -> None:
    """With since_ms only records from that time on are read; a missing topic is a SinkError naming it."""
    topic = kafka.create_topic("compacted")
    producer = Producer(kafka.config())
    now_ms = int(time.time() * 1000)
    _produce(producer, topic, 0, b"old", at_ms=now_ms - 60_000)
    _produce(producer, topic, 0, b"new", at_ms=now_ms)
    seen: list[bytes] = []
    config = reader_config(kafka.config(), "compacted-test")
    read_to_end(Consumer, config, topic, lambda m: seen.append(m.value()), since_ms=now_ms - 1_000)
    assert seen == [b"new"]
    with pytest.raises(SinkError, match="state topic no-such-topic is not available"):
        read_to_end(Consumer, config, "no-such-topic", seen.append, timeout_s=5, kind="state")
