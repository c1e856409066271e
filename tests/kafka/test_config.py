"""bridge.kafka.config: the transactional producer settings written once."""

from __future__ import annotations

import logging

from bridge.kafka.config import LIBRDKAFKA_LOGGER, transactional_producer_config
from bridge.settings import Settings


def test_a_transactional_producer_owns_its_keys_and_the_pass_through_retunes_the_rest() -> None:
    """Idempotence, acks and the ids are the bridge's; BRIDGE_KAFKA_CONFIG comes after the tuning."""
    settings = Settings(kafka_bootstrap_servers="b:9092", kafka_extra_config='{"linger.ms": 50}')
    conf = transactional_producer_config(
        settings,
        client_id="c",
        transactional_id="t",
        transaction_timeout_ms=1234,
        tuning={"linger.ms": 5, "compression.type": "lz4"},
    )
    assert conf["bootstrap.servers"] == "b:9092"
    assert (conf["client.id"], conf["transactional.id"], conf["transaction.timeout.ms"]) == ("c", "t", 1234)
    assert (conf["enable.idempotence"], conf["acks"]) == (True, "all")
    assert (conf["linger.ms"], conf["compression.type"]) == ("50", "lz4")
    assert conf["logger"] is logging.getLogger(LIBRDKAFKA_LOGGER)
