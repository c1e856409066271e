"""bridge.acl: the least-privilege ACL list and the mapping of authorization errors."""

from __future__ import annotations

from confluent_kafka import KafkaError

from bridge.acl import authorization_error, reader_authorization_error, required_acls
from bridge.fleet import coordinator_transactional_id
from bridge.settings import Settings
from bridge.sink import transactional_id


def test_create_is_needed_only_when_the_bridge_creates_topics() -> None:
    """CREATE appears once per topic with BRIDGE_TOPIC_CREATE=true and never without."""
    settings = Settings()
    creating = [a for a in required_acls(settings) if a.operation == "CREATE"]
    assert len(creating) == 6
    assert settings.topic_gaps in {a.name for a in creating}
    assert not [a for a in required_acls(Settings(topic_create=False)) if a.operation == "CREATE"]


def test_the_gaps_topic_is_granted_like_the_dlq() -> None:
    """The gaps topic needs exactly what the dead-letter topic needs: WRITE and DESCRIBE_CONFIGS."""
    settings = Settings(topic_create=False)
    ops: dict[str, set[str]] = {a.name: set() for a in required_acls(settings)}
    for acl in required_acls(settings):
        ops[acl.name].add(acl.operation)
    assert ops[settings.topic_gaps] == ops[settings.topic_dlq] == {"WRITE", "DESCRIBE_CONFIGS"}


def test_the_transactional_prefix_covers_every_transactional_id() -> None:
    """Shard producers and the coordinator both fall under the one prefixed ACL."""
    settings = Settings(id="fleet-a")
    (txn,) = [a for a in required_acls(settings) if a.resource_type == "TRANSACTIONAL_ID"]
    assert txn.pattern == "PREFIXED"
    for tid in (transactional_id(settings, 7), coordinator_transactional_id(settings)):
        assert tid.startswith(txn.name)


def test_authorization_codes_become_errors_naming_operation_and_resource() -> None:
    """TOPIC/GROUP/TRANSACTIONAL_ID authorization failures map to one message; others do not map."""
    err = authorization_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "WRITE", "TOPIC t")
    assert err is not None
    assert "WRITE on TOPIC t" in str(err)
    group = reader_authorization_error(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "t", "g")
    assert group is not None
    assert "READ on GROUP g" in str(group)
    assert authorization_error(KafkaError(KafkaError._TIMED_OUT), "WRITE", "TOPIC t") is None
