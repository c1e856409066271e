"""bridge.topics against the real broker: missing topics created with the contract's config."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from bridge.settings import Settings
from bridge.topics import ensure_topics
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
        ]
    )
    for name in (settings.topic_presence, settings.topic_routing_status):
        conf = describe(kafka, name)
        assert (conf["cleanup.policy"], conf["retention.ms"]) == ("delete", "3600000")
    state = describe(kafka, settings.topic_agent_state)
    assert state["cleanup.policy"] == "compact"
    # Compaction must run (the active segment is never compacted): takeover load stays bounded.
    assert (state["segment.ms"], state["max.compaction.lag.ms"]) == ("3600000", "3600000")
    assert describe(kafka, settings.topic_dlq)["cleanup.policy"] == "delete"
    md = kafka.admin.list_topics(timeout=10).topics
    assert len(md[settings.topic_presence].partitions) == 3
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
