"""The Kafka features the bridge rests on, proven against the real broker.

Transactions, producer fencing, cooperative-sticky consumer groups and topic
configuration: if any of these behaved differently, exactly-once per shard,
zombie fencing or the partition map would be wrong.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import ConfigResource, ResourceType

from tests.conftest import KafkaBroker, localkafka

pytestmark = pytest.mark.kafka


def _txn_producer(kafka: KafkaBroker, txn_id: str) -> Producer:
    producer = Producer(kafka.config(**{"transactional.id": txn_id, "enable.idempotence": True}))
    producer.init_transactions(30)
    return producer


def _read_committed(
    kafka: KafkaBroker, topic: str, expect_at_least: int = 0, idle_s: float = 3.0
) -> list[str]:
    """Every committed value in the topic, read from the start."""
    consumer = Consumer(
        kafka.config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    values: list[str] = []
    last_seen = time.monotonic()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(values) >= expect_at_least and time.monotonic() - last_seen > idle_s:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            values.append(msg.value().decode())
            last_seen = time.monotonic()
    finally:
        consumer.close()
    return values


def test_read_committed_sees_only_committed_batches(kafka: KafkaBroker) -> None:
    """A committed batch is visible to read_committed readers; an aborted one never is."""
    topic = kafka.create_topic("txn")
    producer = _txn_producer(kafka, f"txn-{uuid.uuid4().hex}")
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed-after-abort")
    producer.commit_transaction(30)

    assert _read_committed(kafka, topic, expect_at_least=4) == [
        "committed-0",
        "committed-1",
        "committed-2",
        "committed-after-abort",
    ]


def test_second_producer_fences_the_first(kafka: KafkaBroker) -> None:
    """After B's init_transactions on the same transactional.id, A can no longer write."""
    topic = kafka.create_topic("fence")
    txn_id = f"shard-{uuid.uuid4().hex}"
    a = _txn_producer(kafka, txn_id)
    a.begin_transaction()
    a.produce(topic, value=b"a-before")
    a.commit_transaction(30)

    b = _txn_producer(kafka, txn_id)  # fences A

    with pytest.raises(KafkaException) as excinfo:
        a.begin_transaction()
        a.produce(topic, value=b"a-zombie")
        a.flush(10)
        a.commit_transaction(30)
    err: Any = excinfo.value.args[0]
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    assert err.fatal() or err.code() == KafkaError._FENCED

    b.begin_transaction()
    b.produce(topic, value=b"b-after")
    b.commit_transaction(30)

    assert _read_committed(kafka, topic, expect_at_least=2) == ["a-before", "b-after"]


def _assigned(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def test_cooperative_sticky_group_splits_and_fails_over(kafka: KafkaBroker) -> None:
    """Two members split six partitions; when one leaves, the other owns all six."""
    topic = kafka.create_topic("group", partitions=6)
    group = f"g-{uuid.uuid4().hex[:8]}"
    conf = kafka.config(
        **{
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "enable.auto.commit": False,
        }
    )
    c1, c2 = Consumer(conf), Consumer(conf)
    c1.subscribe([topic])
    c2.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            c1.poll(0.1)
            c2.poll(0.1)
            a1, a2 = _assigned(c1), _assigned(c2)
            if a1 and a2 and len(a1) + len(a2) == 6:
                break
        a1, a2 = _assigned(c1), _assigned(c2)
        assert a1 and a2, "both members own partitions"
        assert a1.isdisjoint(a2)
        assert a1 | a2 == set(range(6))
        assert abs(len(a1) - len(a2)) <= 1

        c2.close()  # leaves the group at once
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _assigned(c1) != set(range(6)):
            c1.poll(0.1)
        assert _assigned(c1) == set(range(6))
    finally:
        c1.close()


def test_compacted_topic_reports_its_cleanup_policy(kafka: KafkaBroker) -> None:
    """A topic created with cleanup.policy=compact says so through the admin client."""
    topic = kafka.create_topic("state", config={"cleanup.policy": "compact"})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = kafka.admin.describe_configs([resource])
    configs = futures[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"

    plain = kafka.create_topic("events")
    res2 = ConfigResource(ResourceType.TOPIC, plain)
    assert kafka.admin.describe_configs([res2])[res2].result(timeout=30)["cleanup.policy"].value == "delete"


def _props(text: str) -> dict[str, str]:
    """server.properties text as key → value (comments skipped)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_extra_listeners_are_added_and_advertised_at_their_own_port() -> None:
    """localkafka's extra listeners bind one port, advertise another, and map to PLAINTEXT."""
    template = localkafka.TEMPLATE.read_text()
    text = localkafka._with_listeners(template, {"W0": (1111, 2222), "W1": (3333, 4444)})
    props = _props(text)
    assert props["listeners"].endswith(",W0://127.0.0.1:1111,W1://127.0.0.1:3333")
    assert props["advertised.listeners"].endswith(",W0://127.0.0.1:2222,W1://127.0.0.1:4444")
    assert props["listener.security.protocol.map"].endswith(",W0:PLAINTEXT,W1:PLAINTEXT")
    assert localkafka._with_listeners(template, {}).splitlines() == template.splitlines()


#: How often Kafka aborts the transactions that outlived their timeout.
SWEEP = "transaction.abort.timed.out.transaction.cleanup.interval.ms"


def test_one_node_stops_without_controlled_shutdown_and_a_cluster_with_it(tmp_path: Any) -> None:
    """A single node must not do Kafka's controlled shutdown, nor sweep early; a cluster node must.

    With one replica, the controlled shutdown leaves every partition without a
    leader while the broker still answers, and Kafka's transaction coordinator
    then skips the commit markers of a transaction committed in that moment:
    an acknowledged commit whose records the producer's next abort takes away
    (tests/test_sink.py::test_broker_outage_loses_and_duplicates_nothing lost
    25 changes so in 1 of 12 runs). In a cluster the leaders move to other
    replicas first, which is what a rolling restart needs. The same skip waits
    on the way up, where a restarted single node's partitions lose their leader
    once more when its old registration expires: its first sweep of timed-out
    transactions must come after that (see the template).
    """
    single = _props(localkafka.render_properties(1111, 2222, tmp_path))
    assert single["controlled.shutdown.enable"] == "false"
    # Kafka's defaults: a 9 s broker session and a 2 s registration retry.
    assert int(single[SWEEP]) >= 2 * (9_000 + 2_000), "the sweep starts after a restart's new registration"
    nodes = [
        localkafka.Node(i, tmp_path / f"node-{i}", {"PLAINTEXT": 3000 + i, "CONTROLLER": 4000 + i})
        for i in (1, 2, 3)
    ]
    cluster = localkafka.Cluster(tmp_path, "cluster-id", nodes)
    clustered = _props(cluster.properties(nodes[0]))
    assert clustered["controlled.shutdown.enable"] == "true"
    assert SWEEP not in clustered, "Kafka's own sweep"


def test_the_running_broker_has_controlled_shutdown_off(kafka: KafkaBroker) -> None:
    """The broker the tests and the demo start runs the template's settings, not Kafka's defaults."""
    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = kafka.admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["controlled.shutdown.enable"].value == "false"
    assert configs[SWEEP].value == "30000"
