"""Create the bridge's Kafka topics when they are missing (DESIGN §4).

| setting                | cleanup | retention                       |
|------------------------|---------|---------------------------------|
| ``topic_presence``       | delete  | ``event_retention_ms`` (7 d)      |
| ``topic_routing_status`` | delete  | ``event_retention_ms``            |
| ``topic_agent_state``    | compact | latest per agent; segments roll and compact hourly |
| ``topic_dlq``            | delete  | ``event_retention_ms``            |
| ``topic_shard_map``      | compact | only when ``shard_map_partitions`` is given; hourly too |

Existing topics are left as they are (their configuration is the operator's;
a wrong ``cleanup.policy`` is logged, not changed). ``TOPIC_ALREADY_EXISTS`` is
success: several workers may start at once. Kafka errors are mapped to
:class:`~bridge.errors.SinkError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from bridge.errors import SinkError
from bridge.settings import Settings

__all__ = [
    "COMPACTED_MAX_LAG_MS",
    "COMPACTED_SEGMENT_MS",
    "DEFAULT_ADMIN_TIMEOUT_S",
    "AdminFactory",
    "TopicSpec",
    "ensure_topics",
    "topic_specs",
]

log = logging.getLogger(__name__)

DEFAULT_ADMIN_TIMEOUT_S = 30.0
#: How often to look for a just-created topic in the metadata.
METADATA_POLL_S = 0.05
DELETE = "delete"
COMPACT = "compact"
#: Compaction never touches the active segment, which by default rolls only
#: after 7 days: a takeover would read a week of history. Roll it hourly ...
COMPACTED_SEGMENT_MS = 3_600_000
#: ... and make every record eligible for compaction within an hour, whatever
#: the dirty ratio, so the load at takeover stays near one record per agent.
COMPACTED_MAX_LAG_MS = 3_600_000

AdminFactory = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the bridge needs: name, partition count, topic-level config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, shard_map_partitions: int | None = None) -> list[TopicSpec]:
    """The topics of DESIGN §4 with their configuration (the shard map only when asked for)."""
    retention = str(settings.event_retention_ms)
    events = {"cleanup.policy": DELETE, "retention.ms": retention}
    compacted = {
        "cleanup.policy": COMPACT,
        "segment.ms": str(COMPACTED_SEGMENT_MS),
        "max.compaction.lag.ms": str(COMPACTED_MAX_LAG_MS),
    }
    specs = [
        TopicSpec(settings.topic_presence, settings.topic_partitions, dict(events)),
        TopicSpec(settings.topic_routing_status, settings.topic_partitions, dict(events)),
        TopicSpec(settings.topic_agent_state, settings.topic_partitions, dict(compacted)),
        TopicSpec(settings.topic_dlq, 1, dict(events)),
    ]
    if shard_map_partitions is not None:
        specs.append(TopicSpec(settings.topic_shard_map, shard_map_partitions, dict(compacted)))
    return specs


def ensure_topics(
    settings: Settings,
    admin_factory: AdminFactory = AdminClient,
    *,
    shard_map_partitions: int | None = None,
    timeout_s: float = DEFAULT_ADMIN_TIMEOUT_S,
) -> list[str]:
    """Create the missing topics and wait until they are in the metadata; return the created names.

    ``shard_map_partitions``: None leaves ``topic_shard_map`` to the fleet
    (which decides its partition count); a number creates it with that many
    partitions when it is missing.
    """
    # The admin client must stay referenced until its futures resolve (else _DESTROY).
    admin = admin_factory(settings.kafka_config())
    specs = topic_specs(settings, shard_map_partitions)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            new = [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.topic_replication_factor,
                    config=s.config,
                )
                for s in missing
            ]
            futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
            for name, fut in futures.items():
                try:
                    fut.result(timeout=timeout_s)
                    created.append(name)
                    log.info("created topic %s", name)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
            _wait_for(admin, [s.name for s in missing], timeout_s)
        _check_policies(admin, [s for s in specs if s.name in existing], timeout_s)
        return created
    except KafkaException as exc:
        raise SinkError(f"cannot create Kafka topics: {exc.args[0].str()}") from None


def _wait_for(admin: Any, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        md = admin.list_topics(timeout=timeout_s).topics
        pending = {n for n in pending if not _ready(md.get(n))}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise SinkError(f"topics did not appear in time: {', '.join(sorted(pending))}")
        time.sleep(METADATA_POLL_S)


def _ready(topic: Any) -> bool:
    """In the metadata, and every partition has a leader (readers fail with NOT_LEADER before that)."""
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in topic.partitions.values())


def _check_policies(admin: Any, specs: list[TopicSpec], timeout_s: float) -> None:
    """Warn about existing topics whose cleanup.policy differs from the contract."""
    if not specs:
        return
    resources = {ConfigResource(ResourceType.TOPIC, s.name): s for s in specs}
    for resource, fut in admin.describe_configs(list(resources), request_timeout=timeout_s).items():
        spec = resources[resource]
        try:
            configs = fut.result(timeout=timeout_s)
        except KafkaException as exc:
            log.warning("cannot describe topic %s: %s", spec.name, exc.args[0].str())
            continue
        want = spec.config.get("cleanup.policy")
        entry = configs.get("cleanup.policy")
        have = entry.value if entry is not None else None
        if want is not None and have != want:
            log.warning("topic %s has cleanup.policy=%s, expected %s", spec.name, have, want)
