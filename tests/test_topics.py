"""bridge.topics against the real broker: missing topics created with the contract's config."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from bridge.errors import ConfigError
from bridge.settings import Settings
from bridge.topics import ensure_topics, replication
from tests.conftest import KafkaBroker

pytestmark = pytest.mark.kafka


def make_settings(kafka: KafkaBroker) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        topic_presence=f"presence-{suffix}",
        topic_routing_status=f"routing-{suffix}",
        topic_agent_state=f"state-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        topic_gaps=f"gaps-{suffix}",
        topic_shard_map=f"shard-map-{suffix}",
        topic_partitions=3,
        event_retention_ms=3_600_000,
    )


def describe(kafka: KafkaBroker, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = kafka.admin.describe_configs([resource])[resource].result(timeout=30)
    return {k: v.value for k, v in configs.items()}


def test_missing_topics_are_created_with_their_cleanup_policy(kafka: KafkaBroker) -> None:
    """Event topics are delete with the retention; the state topic is compact; the DLQ is delete."""
    settings = make_settings(kafka)
    created = ensure_topics(settings)
    assert sorted(created) == sorted(
        [
            settings.topic_presence,
            settings.topic_routing_status,
            settings.topic_agent_state,
            settings.topic_dlq,
            settings.topic_gaps,
        ]
    )
    for name in (settings.topic_presence, settings.topic_routing_status):
        conf = describe(kafka, name)
        assert (conf["cleanup.policy"], conf["retention.ms"]) == ("delete", "3600000")
    state = describe(kafka, settings.topic_agent_state)
    assert state["cleanup.policy"] == "compact"
    # Compaction must run (the active segment is never compacted): takeover load stays bounded.
    assert (state["segment.ms"], state["max.compaction.lag.ms"]) == ("3600000", "3600000")
    for name in (settings.topic_dlq, settings.topic_gaps):
        conf = describe(kafka, name)
        assert (conf["cleanup.policy"], conf["retention.ms"]) == ("delete", "3600000")
    md = kafka.admin.list_topics(timeout=10).topics
    assert len(md[settings.topic_presence].partitions) == 3
    assert len(md[settings.topic_gaps].partitions) == 1
    assert settings.topic_shard_map not in md, "the shard map is left to the fleet by default"


def test_second_run_and_shard_map(kafka: KafkaBroker) -> None:
    """A second run creates nothing; asking for the shard map creates it compacted with N partitions."""
    settings = make_settings(kafka)
    ensure_topics(settings)
    assert ensure_topics(settings) == []
    assert ensure_topics(settings, shard_map_partitions=2) == [settings.topic_shard_map]
    assert describe(kafka, settings.topic_shard_map)["cleanup.policy"] == "compact"
    assert len(kafka.admin.list_topics(timeout=10).topics[settings.topic_shard_map].partitions) == 2


def test_concurrent_creation_is_not_an_error(kafka: KafkaBroker) -> None:
    """A topic created by another worker between listing and creating counts as success."""
    settings = make_settings(kafka)

    class RacingAdmin(AdminClient):  # type: ignore[misc]
        def list_topics(self, *args: object, **kwargs: object) -> object:
            md = super().list_topics(*args, **kwargs)
            if not getattr(self, "raced", False):
                self.raced = True
                ensure_topics(settings)  # another worker wins the race after our listing
            return md

    assert ensure_topics(settings, admin_factory=RacingAdmin) == []


def test_wrong_policy_of_an_existing_topic_is_logged(
    kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing state topic that is not compacted is reported, not changed."""
    settings = make_settings(kafka)
    wrong = kafka.create_topic("state")
    settings = settings.model_copy(update={"topic_agent_state": wrong})
    with caplog.at_level(logging.WARNING, logger="bridge.topics"):
        ensure_topics(settings)
    assert f"topic {wrong} has cleanup.policy=delete, expected compact" in caplog.text


@pytest.mark.parametrize(
    ("brokers", "factor", "min_insync", "want"),
    [(1, None, None, (1, 1)), (3, None, None, (3, 2)), (5, None, None, (3, 2)), (3, 2, None, (2, 1))],
)
def test_replication_defaults_follow_the_cluster(
    brokers: int, factor: int | None, min_insync: int | None, want: tuple[int, int]
) -> None:
    """Unset: RF = min(3, brokers) and min.insync = RF - 1 (at least 1); explicit values win."""
    s = Settings(topic_replication_factor=factor, topic_min_insync_replicas=min_insync)
    got = replication(s, brokers)
    assert (got.factor, got.min_insync) == want


def test_created_topics_carry_min_insync_replicas(kafka: KafkaBroker) -> None:
    """On one broker every topic gets RF 1 and min.insync.replicas 1 without any setting."""
    settings = make_settings(kafka)
    ensure_topics(settings, shard_map_partitions=1)
    assert describe(kafka, settings.topic_agent_state)["min.insync.replicas"] == "1"


def test_topic_create_false_names_what_is_missing_or_wrong(kafka: KafkaBroker) -> None:
    """Without creation the bridge refuses, in one line, a missing topic and a wrong cleanup policy."""
    provisioned = make_settings(kafka)
    ensure_topics(provisioned, shard_map_partitions=1)
    wrong_state = kafka.create_topic("state", config={"cleanup.policy": "delete"})
    settings = provisioned.model_copy(
        update={"topic_create": False, "topic_agent_state": wrong_state, "topic_dlq": "dlq-never-created"}
    )
    with pytest.raises(ConfigError) as err:
        ensure_topics(settings, shard_map_partitions=1)
    message = str(err.value)
    assert "\n" not in message
    assert "dlq-never-created is missing" in message
    assert f"{wrong_state} has cleanup.policy=delete, needs compact" in message
    assert provisioned.topic_presence not in message


def test_topic_create_false_accepts_provisioned_topics(kafka: KafkaBroker) -> None:
    """Topics provisioned as the bridge would have made them pass the check; nothing is created."""
    provisioned = make_settings(kafka)
    ensure_topics(provisioned, shard_map_partitions=1)
    assert ensure_topics(provisioned.model_copy(update={"topic_create": False}), shard_map_partitions=1) == []
