"""Create the bridge's Kafka topics when they are missing (README "Topics and records").

| setting                | cleanup | retention                       |
|------------------------|---------|---------------------------------|
| ``topic_presence``       | delete  | ``event_retention_ms`` (7 d)      |
| ``topic_routing_status`` | delete  | ``event_retention_ms``            |
| ``topic_agent_state``    | compact | latest per agent; segments roll and compact hourly |
| ``topic_dlq``            | delete  | ``event_retention_ms``            |
| ``topic_gaps``           | delete  | ``event_retention_ms``            |
| ``topic_shard_map``      | compact | only when ``shard_map_partitions`` is given; hourly too |

Existing topics are left as they are (their configuration is the operator's;
a wrong ``cleanup.policy`` is logged, not changed). ``TOPIC_ALREADY_EXISTS`` is
success: several workers may start at once. Kafka errors are mapped to
:class:`~bridge.errors.SinkError`; a missing ACL to
:class:`~bridge.errors.AuthorizationError` naming it.

Replication: ``topic_replication_factor`` or, unset, ``min(3, brokers in the
metadata)``; every topic is created with ``min.insync.replicas`` =
``topic_min_insync_replicas`` or, unset, ``max(1, RF - 1)`` (2 of 3 on a
cluster: one broker may fail without stopping acks=all writes; 1 on a laptop).

``topic_create=False`` (topics provisioned by a platform team): nothing is
created; :func:`verify_topics` checks that every topic exists, has the
cleanup policy it needs, at least the wanted replication factor and a
``min.insync.replicas`` between the wanted one and its replication factor,
and raises :class:`~bridge.errors.ConfigError` with one line naming every
problem.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from bridge.errors import AuthorizationError, ConfigError, SinkError
from bridge.kafka.config import DEFAULT_ADMIN_TIMEOUT_S, AdminFactory
from bridge.settings import MAX_AUTO_REPLICATION, Settings

__all__ = [
    "COMPACTED_MAX_LAG_MS",
    "COMPACTED_SEGMENT_MS",
    "DEFAULT_ADMIN_TIMEOUT_S",
    "AdminFactory",
    "Replication",
    "TopicSpec",
    "ensure_topics",
    "replication",
    "topic_specs",
    "verify_topics",
]

log = logging.getLogger(__name__)

#: How often to look for a just-created topic in the metadata.
METADATA_POLL_S = 0.05
_AUTHORIZATION_CODES = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)
DELETE = "delete"
COMPACT = "compact"
#: Compaction never touches the active segment, which by default rolls only
#: after 7 days: a takeover would read a week of history. Roll it hourly ...
COMPACTED_SEGMENT_MS = 3_600_000
#: ... and make every record eligible for compaction within an hour, whatever
#: the dirty ratio, so the load at takeover stays near one record per agent.
COMPACTED_MAX_LAG_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the bridge needs: name, partition count, topic-level config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, shard_map_partitions: int | None = None) -> list[TopicSpec]:
    """The topics of README "Topics and records" with their configuration (the shard map if asked)."""
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
        TopicSpec(settings.topic_gaps, 1, dict(events)),
    ]
    if shard_map_partitions is not None:
        specs.append(TopicSpec(settings.topic_shard_map, shard_map_partitions, dict(compacted)))
    return specs


@dataclass(frozen=True, slots=True)
class Replication:
    """The replication factor and ``min.insync.replicas`` the bridge wants for its topics."""

    factor: int
    min_insync: int


def replication(settings: Settings, brokers: int) -> Replication:
    """The settings, or the defaults for a cluster of ``brokers`` (see the module docstring)."""
    factor = settings.topic_replication_factor or max(1, min(MAX_AUTO_REPLICATION, brokers))
    min_insync = settings.topic_min_insync_replicas or max(1, factor - 1)
    if min_insync > factor:
        raise ConfigError(
            f"BRIDGE_TOPIC_MIN_INSYNC_REPLICAS={min_insync} exceeds the replication factor {factor}"
        )
    return Replication(factor, min_insync)


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
        metadata = admin.list_topics(timeout=timeout_s)
        want = replication(settings, len(metadata.brokers))
        if not settings.topic_create:
            verify_topics(admin, specs, want, metadata, timeout_s)
            return []
        existing = set(metadata.topics)
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            new = [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=want.factor,
                    config={**s.config, "min.insync.replicas": str(want.min_insync)},
                )
                for s in missing
            ]
            futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
            for name, fut in futures.items():
                try:
                    fut.result(timeout=timeout_s)
                    created.append(name)
                    log.info(
                        "created topic %s (replication %d, min.insync.replicas %d)",
                        name,
                        want.factor,
                        want.min_insync,
                    )
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.code() in _AUTHORIZATION_CODES:
                        raise AuthorizationError("CREATE", f"TOPIC {name}", err.name()) from None
                    if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
            _wait_for(admin, [s.name for s in missing], timeout_s)
        _check_policies(admin, [s for s in specs if s.name in existing], timeout_s)
        return created
    except KafkaException as exc:
        raise SinkError(f"cannot create Kafka topics: {exc.args[0].str()}") from None


def verify_topics(
    admin: Any, specs: list[TopicSpec], want: Replication, metadata: Any, timeout_s: float
) -> None:
    """Raise :class:`ConfigError` (one line) unless every topic is provisioned as the bridge needs."""
    problems: list[str] = []
    present: list[TopicSpec] = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        if topic is None or topic.error is not None or not topic.partitions:
            problems.append(f"{spec.name} is missing (or not visible to the bridge's principal)")
            continue
        present.append(spec)
        factor = min(len(p.replicas) for p in topic.partitions.values())
        if factor < want.factor:
            problems.append(f"{spec.name} has replication factor {factor}, needs at least {want.factor}")
    for spec, configs in _describe(admin, present, timeout_s):
        policy = _value(configs, "cleanup.policy")
        needed = spec.config.get("cleanup.policy")
        if needed is not None and needed not in (policy or "").split(","):
            problems.append(f"{spec.name} has cleanup.policy={policy}, needs {needed}")
        min_isr = int(_value(configs, "min.insync.replicas") or "1")
        topic = metadata.topics[spec.name]
        factor = min(len(p.replicas) for p in topic.partitions.values())
        if min_isr < want.min_insync:
            problems.append(
                f"{spec.name} has min.insync.replicas={min_isr}, needs at least {want.min_insync}"
            )
        elif min_isr > factor:
            problems.append(
                f"{spec.name} has min.insync.replicas={min_isr} above its replication factor {factor}"
            )
    if problems:
        summary = "; ".join(problems)
        raise ConfigError(f"topics not provisioned as needed (BRIDGE_TOPIC_CREATE=false): {summary}")
    log.info("topics verified: %s", ", ".join(s.name for s in specs))


def _describe(admin: Any, specs: list[TopicSpec], timeout_s: float) -> list[tuple[TopicSpec, Any]]:
    """spec → its topic's configs; a missing DESCRIBE_CONFIGS ACL is an :class:`AuthorizationError`."""
    if not specs:
        return []
    resources = {ConfigResource(ResourceType.TOPIC, s.name): s for s in specs}
    out: list[tuple[TopicSpec, Any]] = []
    for resource, fut in admin.describe_configs(list(resources), request_timeout=timeout_s).items():
        spec = resources[resource]
        try:
            out.append((spec, fut.result(timeout=timeout_s)))
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _AUTHORIZATION_CODES:
                raise AuthorizationError("DESCRIBE_CONFIGS", f"TOPIC {spec.name}", err.name()) from None
            raise
    return out


def _value(configs: Any, name: str) -> str | None:
    entry = configs.get(name)
    return None if entry is None or entry.value is None else str(entry.value)


def _wait_for(admin: Any, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        md = admin.list_topics(timeout=timeout_s).topics
        pending = {n for n in pending if not _ready(md.get(n)) and not _invisible(admin, n, timeout_s)}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise SinkError(f"topics did not appear in time: {', '.join(sorted(pending))}")
        time.sleep(METADATA_POLL_S)


def _invisible(admin: Any, name: str, timeout_s: float) -> bool:
    """Created, but the principal may not DESCRIBE it: waiting cannot help (the ACL check names it)."""
    topic = admin.list_topics(name, timeout=timeout_s).topics.get(name)
    return topic is not None and topic.error is not None and topic.error.code() in _AUTHORIZATION_CODES


def _ready(topic: Any) -> bool:
    """In the metadata, and every partition has a leader (readers fail with NOT_LEADER before that)."""
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in topic.partitions.values())


def _check_policies(admin: Any, specs: list[TopicSpec], timeout_s: float) -> None:
    """Warn about existing topics whose cleanup.policy differs from the contract."""
    for spec, configs in _describe(admin, specs, timeout_s):
        want = spec.config.get("cleanup.policy")
        have = _value(configs, "cleanup.policy")
        if want is not None and have != want:
            log.warning("topic %s has cleanup.policy=%s, expected %s", spec.name, have, want)
