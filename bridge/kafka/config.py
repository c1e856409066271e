"""librdkafka client settings and the client factory types, written once.

Every client starts from ``settings.kafka_config()`` (bootstrap servers,
security); a client that the operator may retune ends with
``settings.kafka_passthrough()`` (``BRIDGE_KAFKA_CONFIG``, never an owned key).
Factories are injected everywhere a client is made, so tests choose the client
(the real broker in integration tests, :class:`tests.fakes.NullProducer` in
unit tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge.settings import Settings

__all__ = [
    "DEFAULT_ADMIN_TIMEOUT_S",
    "DEFAULT_COMPRESSION",
    "DEFAULT_LINGER_MS",
    "DEFAULT_RECONNECT_BACKOFF_MAX_MS",
    "FETCH_WAIT_MAX_MS",
    "LIBRDKAFKA_LOGGER",
    "AdminFactory",
    "ConsumerFactory",
    "ProducerFactory",
    "transactional_producer_config",
]

#: Config dict → a confluent-kafka ``Producer`` (or a test double of one).
ProducerFactory = Callable[[dict[str, Any]], Any]
#: Config dict → a confluent-kafka ``Consumer``.
ConsumerFactory = Callable[[dict[str, Any]], Any]
#: Config dict → a confluent-kafka ``AdminClient``.
AdminFactory = Callable[[dict[str, Any]], Any]

#: Bounds one admin request (create topics or partitions, describe configs).
DEFAULT_ADMIN_TIMEOUT_S = 30.0
#: Don't let the broker hold a fetch for its full default wait at a partition's end.
FETCH_WAIT_MAX_MS = 50
#: librdkafka's own log lines go to this Python logger (served by ``poll()``), not
#: stderr; each line names the client (its ``client.id``).
LIBRDKAFKA_LOGGER = "bridge.kafka.librdkafka"
#: A transaction closes every ~100 ms anyway; a short linger only groups one burst.
DEFAULT_LINGER_MS = 5
DEFAULT_COMPRESSION = "lz4"
#: Reconnect quickly once the broker is back (librdkafka's default caps at 10 s).
DEFAULT_RECONNECT_BACKOFF_MAX_MS = 1_000


def transactional_producer_config(
    settings: Settings,
    *,
    client_id: str,
    transactional_id: str,
    transaction_timeout_ms: int,
    tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings of an idempotent, transactional producer (``acks=all``).

    ``tuning`` (linger, compression, ...) comes before ``BRIDGE_KAFKA_CONFIG``,
    which may retune it.
    """
    return {
        **settings.kafka_config(),
        "client.id": client_id,
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "transaction.timeout.ms": transaction_timeout_ms,
        **(tuning or {}),
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        # BRIDGE_KAFKA_CONFIG last: it may retune linger, compression, ... (never an owned key).
        **settings.kafka_passthrough(),
    }
