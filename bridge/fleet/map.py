"""The partition map's records, their codec and the reader of the control topic.

A map record is one shard's entry of the partition map: the latest record
of control partition ``p`` (key ``shard-<p>``) names the shard's members,
its OAuth client and the fleet that wrote it (see :mod:`bridge.fleet`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer

from bridge import metrics
from bridge.kafka.compacted import ConsumerFactory, read_to_end, reader_config
from bridge.settings import Settings

__all__ = [
    "CALL_TIMEOUT_S",
    "MAP_SCHEMA",
    "POLL_S",
    "ConsumerFactory",
    "MapRecord",
    "log_foreign",
    "read_map",
    "shard_key",
]

logger = logging.getLogger(__name__)

MAP_SCHEMA = "bridge.shard-map.v1"
KEY_PREFIX = "shard-"
#: How long one poll of the membership consumer blocks (bounds shutdown latency).
POLL_S = 0.2
DEFAULT_READ_TIMEOUT_S = 30.0
#: Timeout of one blocking transactional call of the coordinator's producer.
CALL_TIMEOUT_S = 10.0


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shard_key(shard: int) -> str:
    """The control record's key, ``shard-<p>``."""
    return f"{KEY_PREFIX}{shard}"


@dataclass(frozen=True)
class MapRecord:
    """One shard's entry of the partition map (the latest record of partition ``shard``)."""

    shard: int
    epoch: int
    client_index: int
    users: tuple[str, ...]
    written_at: str = field(default_factory=_iso_now)
    #: The fleet that wrote it (``settings.id``); None on records older than the field.
    bridge_id: str | None = None

    @property
    def key(self) -> bytes:
        return shard_key(self.shard).encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "schema": MAP_SCHEMA,
                "epoch": self.epoch,
                "shard": self.shard,
                "clientIndex": self.client_index,
                "users": list(self.users),
                "writtenAt": self.written_at,
                "bridgeId": self.bridge_id,
            }
        )

    def foreign_to(self, bridge_id: str) -> bool:
        """Written by another fleet (records without a bridge id count as ours)."""
        return self.bridge_id is not None and self.bridge_id != bridge_id

    @classmethod
    def decode(cls, value: bytes) -> MapRecord:
        """Parse a control record; raises ``ValueError`` when it is not a v1 map record."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != MAP_SCHEMA:
            raise ValueError("not a bridge.shard-map.v1 record")
        users = data.get("users")
        try:
            if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
                raise ValueError("users must be a list of strings")
            return cls(
                shard=int(data["shard"]),
                epoch=int(data["epoch"]),
                client_index=int(data.get("clientIndex", 0)),
                users=tuple(users),
                written_at=str(data.get("writtenAt", "")),
                bridge_id=str(data["bridgeId"]) if data.get("bridgeId") is not None else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete map record: {exc}") from None


def read_map(
    settings: Settings,
    consumer_factory: ConsumerFactory = Consumer,
    *,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    foreign: list[MapRecord] | None = None,
) -> tuple[int, dict[int, MapRecord]]:
    """(partition count, partition → latest committed map record) of the control topic.

    Reads every partition from the beginning to its end as of the call
    (:func:`bridge.kafka.compacted.read_to_end`: read_committed, no group
    joined). Per partition the record with the highest epoch wins (the
    latest on ties); records that do not parse are logged and skipped.
    Records another fleet wrote are never returned: each is logged as an
    ERROR, counted, and appended to ``foreign`` when given.
    Raises :class:`SinkError` when the topic is missing or Kafka fails
    (:class:`AuthorizationError` for a missing READ ACL).
    """
    topic = settings.topic_shard_map
    records: dict[int, MapRecord] = {}

    def apply(msg: Any) -> None:
        p = msg.partition()
        if msg.value() is None:
            return
        try:
            record = MapRecord.decode(msg.value())
        except ValueError as exc:
            logger.warning("skipping control record at %s[%d]@%d: %s", topic, p, msg.offset(), exc)
            return
        if record.foreign_to(settings.id):
            log_foreign(record, settings, p)
            if foreign is not None:
                foreign.append(record)
        elif p not in records or record.epoch >= records[p].epoch:
            records[p] = record

    config = reader_config(settings.kafka_config(), f"{settings.id}-map-reader")
    partitions = read_to_end(
        consumer_factory, config, topic, apply, timeout_s=timeout_s, kind="control", stable=True
    )
    return partitions, records


def log_foreign(record: MapRecord, settings: Settings, partition: int) -> None:
    metrics.FOREIGN_MAP_RECORDS.inc()
    logger.error(
        "control topic %s partition %d holds a map record of fleet %r (epoch %d), not of %r: "
        "never applied; give every fleet its own BRIDGE_ID and control topic",
        settings.topic_shard_map,
        partition,
        record.bridge_id,
        record.epoch,
        settings.id,
    )
