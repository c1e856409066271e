"""The Kafka ACLs the bridge needs, a start-up check of them, and authorization errors.

:func:`required_acls` is the least-privilege list README "Production Kafka"
documents (the tests grant exactly it, and remove one entry at a time):

| resource (pattern)                        | operations                       |
|-------------------------------------------|----------------------------------|
| TOPIC presence, routing-status, dlq, gaps | WRITE, DESCRIBE_CONFIGS          |
| TOPIC agent-state                         | WRITE, READ, DESCRIBE_CONFIGS    |
| TOPIC control (``<bridge-id>.shard-map.v1``) | WRITE, READ, ALTER, DESCRIBE_CONFIGS |
| TOPIC each of the above, when ``topic_create`` | CREATE                       |
| GROUP ``<bridge-id>`` (prefixed)          | READ                             |
| TRANSACTIONAL_ID ``<bridge-id>-`` (prefixed) | WRITE                         |

READ and WRITE imply DESCRIBE; WRITE on a topic makes IdempotentWrite on the
cluster unnecessary (Kafka 3.0+). ALTER on the control topic lets the
coordinator add partitions; DESCRIBE_CONFIGS lets the bridge check each
topic's ``cleanup.policy``. The group prefix covers the fleet's group
``<bridge-id>`` and the readers' ``<bridge-id>-map-reader`` and
``<bridge-id>-statestore`` (they never join or commit, but librdkafka looks
their coordinator up, which needs DESCRIBE, granted with READ).

:func:`preflight` asks the brokers which operations the principal has on
each topic (Metadata with ``include_authorized_operations``) and raises one
:class:`~bridge.errors.AuthorizationError` naming the first missing
operation and resource, before anything else is attempted.
:func:`authorization_error` maps librdkafka's ``*_AUTHORIZATION_FAILED``
codes met later (e.g. an ACL revoked while running) the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from bridge.errors import AuthorizationError, SinkError
from bridge.settings import Settings
from bridge.topics import AdminFactory

__all__ = [
    "AUTHORIZATION_CODES",
    "Acl",
    "authorization_error",
    "preflight",
    "reader_authorization_error",
    "required_acls",
]

logger = logging.getLogger(__name__)

#: librdkafka codes meaning "an ACL is missing": never worth a retry.
AUTHORIZATION_CODES = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "TOPIC",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "GROUP",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "TRANSACTIONAL_ID",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "CLUSTER",
}
DEFAULT_PREFLIGHT_TIMEOUT_S = 30.0
#: Kafka grants DESCRIBE with any of these.
DESCRIBE_IMPLIED_BY = ("READ", "WRITE", "ALTER")
#: Pause before asking again about a topic a broker does not know yet.
METADATA_RETRY_S = 0.1


@dataclass(frozen=True, slots=True)
class Acl:
    """One ALLOW entry for the bridge's principal (names as ``kafka-acls`` spells them)."""

    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    name: str
    pattern: str  # LITERAL or PREFIXED
    operation: str  # READ, WRITE, CREATE, ALTER, DESCRIBE_CONFIGS, ...

    def describe(self) -> str:
        prefix = " (prefix)" if self.pattern == "PREFIXED" else ""
        return f"{self.operation} on {self.resource_type} {self.name}{prefix}"

    def binding(self, principal: str) -> Any:
        """A confluent-kafka ``AclBinding`` granting this entry to ``principal`` from any host."""
        return AclBinding(
            ResourceType[self.resource_type],
            self.name,
            ResourcePatternType[self.pattern],
            principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )


def transactional_prefix(settings: Settings) -> str:
    """Every transactional id the bridge uses starts with this (shards and the coordinator)."""
    return f"{settings.id}-"


def topic_operations(settings: Settings) -> dict[str, list[str]]:
    """topic → the operations the bridge needs on it (CREATE excluded)."""
    ops: dict[str, list[str]] = {}
    for topic in (
        settings.topic_presence,
        settings.topic_routing_status,
        settings.topic_dlq,
        settings.topic_gaps,
    ):
        ops.setdefault(topic, []).extend(["WRITE", "DESCRIBE_CONFIGS"])
    ops.setdefault(settings.topic_agent_state, []).extend(["WRITE", "READ", "DESCRIBE_CONFIGS"])
    ops.setdefault(settings.topic_shard_map, []).extend(["WRITE", "READ", "ALTER", "DESCRIBE_CONFIGS"])
    return {t: list(dict.fromkeys(o)) for t, o in ops.items()}


def required_acls(settings: Settings) -> list[Acl]:
    """Exactly the ACLs the bridge needs with these settings (see the module table)."""
    acls = [
        Acl("TOPIC", topic, "LITERAL", op)
        for topic, ops in topic_operations(settings).items()
        for op in ([*ops, "CREATE"] if settings.topic_create else ops)
    ]
    acls.append(Acl("GROUP", settings.id, "PREFIXED", "READ"))
    acls.append(Acl("TRANSACTIONAL_ID", transactional_prefix(settings), "PREFIXED", "WRITE"))
    return acls


def _describe_topic(admin: Any, collection: Any, topic: str, deadline: float) -> Any:
    """One topic's description; a just-created topic some broker does not know yet is asked again."""
    while True:
        fut = admin.describe_topics(
            collection, include_authorized_operations=True, request_timeout=DEFAULT_PREFLIGHT_TIMEOUT_S
        )[topic]
        try:
            return fut.result(timeout=DEFAULT_PREFLIGHT_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
        time.sleep(METADATA_RETRY_S)


def reader_authorization_error(err: KafkaError, topic: str, group: str) -> AuthorizationError | None:
    """A consumer's missing ACL: READ on the topic, or READ on its group."""
    if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return AuthorizationError("READ", f"GROUP {group}", err.name())
    return authorization_error(err, "READ", f"TOPIC {topic}")


def authorization_error(err: KafkaError, operation: str, resource: str) -> AuthorizationError | None:
    """An :class:`AuthorizationError` when ``err`` is an ``*_AUTHORIZATION_FAILED`` code, else None."""
    if err.code() not in AUTHORIZATION_CODES:
        return None
    return AuthorizationError(operation, resource, err.name())


def preflight(
    settings: Settings,
    admin_factory: AdminFactory = AdminClient,
    *,
    timeout_s: float = DEFAULT_PREFLIGHT_TIMEOUT_S,
) -> None:
    """Raise :class:`AuthorizationError` for the first ACL the principal lacks on its topics.

    The group and the transactional ids are not asked about (a new group has
    no coordinator answer yet, transactional ids have no such API): joining
    the group and ``init_transactions`` report those, mapped the same way.
    """
    from confluent_kafka import TopicCollection  # noqa: PLC0415

    admin = admin_factory(settings.kafka_config())  # referenced until its futures resolve
    needed = topic_operations(settings)
    deadline = time.monotonic() + timeout_s
    for topic in needed:
        try:
            description = _describe_topic(admin, TopicCollection([topic]), topic, deadline)
        except KafkaException as exc:
            # Not visible: DESCRIBE comes with READ, WRITE or ALTER, so those are missing.
            visible_by = "/".join(op for op in needed[topic] if op in DESCRIBE_IMPLIED_BY)
            mapped = authorization_error(exc.args[0], visible_by, f"TOPIC {topic}")
            if mapped is not None:
                raise mapped from None
            raise SinkError(f"cannot describe topic {topic}: {exc.args[0].str()}") from None
        if description.authorized_operations is None:
            continue  # the broker does not say (no authorizer): nothing to check
        have = {op.name for op in description.authorized_operations}
        for op in needed[topic]:
            if op not in have:
                raise AuthorizationError(op, f"TOPIC {topic}", "checked at start")
    logger.info("Kafka ACLs checked: the principal may use every topic it needs")
