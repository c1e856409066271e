"""The audit's pure checks: state comparison and event-topic findings, with plain values."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from bridge.audit import EventRecord, audit, check_events, compare, read_events
from bridge.genesys.protocol import parse_timestamp
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)
from bridge.records import encode_event, encode_state
from bridge.statestore import written_by
from bridge.topics import ensure_topics
from bridge.worker import genesys_rest
from tests.conftest import KafkaBroker
from tests.worker.conftest import bridge_settings, sim_process

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
MEAL = "def-meal"
LUNCH = "def-lunch"


def state(
    user: str, presence: str = "AVAILABLE", definition: str = "def-a", status: str = "IDLE"
) -> AgentState:
    return AgentState(
        user,
        VersionedPresence(PresenceValue(presence, definition), T0, "p"),
        VersionedRouting(RoutingValue(status), T0, "r"),
    )


def truth(
    user: str, presence: str = "AVAILABLE", definition: str = "def-a", status: str = "IDLE"
) -> list[Change]:
    return [
        Change(user, Kind.PRESENCE, T0, PresenceValue(presence, definition), T0, Origin.RECONCILE),
        Change(user, Kind.ROUTING_STATUS, T0, RoutingValue(status), T0, Origin.RECONCILE),
    ]


def test_agreement_has_no_mismatch() -> None:
    """Equal presence, definition and routing status for every roster agent: nothing reported."""
    assert compare({"a": state("a"), "b": state("b")}, truth("a") + truth("b"), ["a", "b"]) == []


def test_each_disagreement_names_the_agent_and_field() -> None:
    """Missing, not tombstoned, presence, definition and routing status are each a named mismatch."""
    states = {
        "wrong-presence": state("wrong-presence", "AWAY"),
        "wrong-definition": state("wrong-definition", "MEAL", MEAL),
        "wrong-routing": state("wrong-routing", status="OFF_QUEUE"),
        "deleted": state("deleted"),
    }
    roster = ["missing", "wrong-presence", "wrong-definition", "wrong-routing"]
    genesys = (
        truth("missing")
        + truth("wrong-presence")
        + truth("wrong-definition", "MEAL", LUNCH)
        + truth("wrong-routing")
    )
    found = {(m.user_id, m.field, m.kafka, m.genesys) for m in compare(states, genesys, roster)}
    assert found == {
        ("missing", "missing", None, "active"),
        ("wrong-presence", "presence", "AWAY", "AVAILABLE"),
        ("wrong-definition", "presenceDefinitionId", MEAL, LUNCH),
        ("wrong-routing", "routingStatus", "OFF_QUEUE", "IDLE"),
        ("deleted", "not_tombstoned", "live state", "not active"),
    }


def test_state_without_a_kind_genesys_reports_is_a_mismatch() -> None:
    """A Kafka state lacking presence while Genesys has one is a presence mismatch with kafka=None."""
    found = compare({"a": AgentState("a")}, truth("a"), ["a"])
    assert [(m.field, m.kafka) for m in found] == [("presence", None), ("routingStatus", None)]


def test_kind_genesys_does_not_return_is_not_compared() -> None:
    """A kind absent from Genesys's answer (best-effort expand) is not a mismatch."""
    assert compare({"a": state("a", "AWAY")}, truth("a")[1:], ["a"]) == []


def test_bridge_id_header_scopes_records() -> None:
    """A record belongs to a fleet when its bridge-id header names it, or it carries none."""
    assert written_by([("schema", b"x"), ("bridge-id", b"fleet-a")], "fleet-a")
    assert not written_by([("bridge-id", b"fleet-b")], "fleet-a")
    assert written_by(None, "fleet-a")
    assert written_by([("schema", b"x")], "fleet-a")


def rec(
    offset: int,
    user: str,
    event: str,
    seconds: float,
    *,
    origin: str = "stream",
    topic: str = "p",
    late: bool = False,
) -> EventRecord:
    return EventRecord(topic, 0, offset, user, event, T0 + timedelta(seconds=seconds), origin, late)


def test_clean_event_log_passes() -> None:
    """Distinct ids in per-agent time order (ties allowed) give no finding."""
    result = check_events(
        [rec(0, "a", "e1", 1), rec(1, "b", "e2", 0), rec(2, "a", "e3", 1), rec(3, "a", "e4", 5)]
    )
    assert (result.records, result.duplicates, result.order_violations) == (4, [], [])


def test_duplicate_event_id_is_found() -> None:
    """The same eventId twice in one topic is a duplicate; in the other topic it is not."""
    result = check_events([rec(0, "a", "e1", 1), rec(1, "a", "e1", 1), rec(2, "a", "e1", 1, topic="r")])
    assert [r.offset for r in result.duplicates] == [1]


def test_older_change_after_newer_is_an_order_violation_also_for_reconcile() -> None:
    """A record older than the agent's previous one in the topic is reported, reconcile records included."""
    result = check_events(
        [
            rec(0, "a", "e1", 5),
            rec(1, "a", "e2", 3, origin="reconcile"),
            rec(2, "b", "e3", 1),
            rec(3, "a", "e4", 6),
        ]
    )
    assert [(p.event_id, r.event_id) for p, r in result.order_violations] == [("e1", "e2")]
    assert next(iter(result.lines())).startswith("order a p:")


def test_a_late_record_is_not_an_order_violation_but_can_be_a_duplicate() -> None:
    """late: true is out of order on purpose; its eventId still counts against duplicates."""
    late = rec(1, "a", "e0", 2, origin="backfill", late=True)
    result = check_events([rec(0, "a", "e1", 5), late, rec(2, "a", "e2", 6), rec(3, "a", "e0", 2, late=True)])
    assert result.order_violations == []
    assert [r.offset for r in result.duplicates] == [3]


def test_order_is_per_agent_and_per_topic() -> None:
    """Another agent's or another topic's older change is not a violation."""
    result = check_events([rec(0, "a", "e1", 5), rec(1, "b", "e2", 1), rec(2, "a", "e3", 1, topic="r")])
    assert result.order_violations == []


def test_late_backfill_is_exempt_from_order_but_not_from_duplicates() -> None:
    """A ``late`` record older than its predecessor is no violation, moves nothing, and still dedupes."""
    result = check_events(
        [
            rec(0, "a", "e1", 5),
            rec(1, "a", "e2", 3, origin="backfill", late=True),
            rec(2, "a", "e3", 4),
            rec(3, "a", "e2", 3, origin="backfill", late=True),
        ]
    )
    assert result.late == 1
    assert [(p.event_id, r.event_id) for p, r in result.order_violations] == [("e1", "e3")]
    assert [r.offset for r in result.duplicates] == [3]


# -- against the real broker and the simulator ------------------------------------------


def _produce(
    kafka: KafkaBroker, records: list[tuple[str, str, bytes | None, list[tuple[str, bytes]]]]
) -> None:
    producer = Producer(kafka.config())
    for topic, key, value, headers in records:
        producer.produce(topic, key=key.encode(), value=value, headers=headers)
    assert producer.flush(30) == 0


def _state_of(user: str, entry: dict[str, Any]) -> AgentState:
    presence = entry["presence"]
    routing = entry["routingStatus"]
    return AgentState(
        user,
        VersionedPresence(
            PresenceValue(presence["systemPresence"], presence["presenceDefinitionId"], presence["message"]),
            parse_timestamp(presence["modifiedDate"]),
            "p",
        ),
        VersionedRouting(RoutingValue(routing["status"]), parse_timestamp(routing["startTime"]), "r"),
    )


@pytest.mark.kafka
async def test_audit_finds_planted_mismatches_only_in_its_own_fleet(kafka: KafkaBroker) -> None:
    """Kafka vs simulator: a ghost, a wrong definition, a missing agent found; foreign records ignored."""
    async with sim_process(agents=12, seed=5, paused=True) as sim:
        settings = bridge_settings(kafka, sim)
        await asyncio.to_thread(ensure_topics, settings)
        users = (await sim.admin("GET", "/sim/truth"))["users"]
        ids = sorted(users)
        now = datetime.now(UTC)
        ours = [("bridge-id", settings.id.encode())]
        foreign = [("bridge-id", b"another-fleet")]
        topic = settings.topic_agent_state
        planted = []
        for uid in ids[1:]:  # ids[0] is missing from Kafka
            planted.append((topic, uid, encode_state(_state_of(uid, users[uid]), 0, now), ours))
        wrong = _state_of(ids[1], users[ids[1]])
        assert wrong.presence is not None
        wrong.presence.value.presence_definition_id = "not-the-org-definition"
        planted.append((topic, ids[1], encode_state(wrong, 0, now), []))  # no header: counted as ours
        planted.append((topic, "ghost", encode_state(_state_of("ghost", users[ids[2]]), 0, now), ours))
        # Another fleet's records: a ghost of its own and a wrong state of one of our agents.
        planted.append((topic, "their-agent", encode_state(_state_of("x", users[ids[2]]), 0, now), foreign))
        other = _state_of(ids[3], users[ids[3]])
        assert other.routing is not None
        other.routing.value.status = "NOT_A_STATUS"
        planted.append((topic, ids[3], encode_state(other, 0, now), foreign))
        await asyncio.to_thread(_produce, kafka, planted)
        lines: list[str] = []
        clients = settings.clients()
        rest = genesys_rest(settings, clients[0])
        try:
            report = await audit(settings, rest, grace_s=0.2, out=lines.append)
        finally:
            await rest.aclose()
        found = {(m.user_id, m.field) for m in report.mismatches}
        assert found == {
            (ids[0], "missing"),
            (ids[1], "presenceDefinitionId"),
            ("ghost", "not_tombstoned"),
        }, lines
        assert report.failures == 3
        assert lines[-1] == "audit: 12 agents, 3 mismatches"


@pytest.mark.kafka
async def test_event_check_reads_duplicates_and_disorder_from_kafka(kafka: KafkaBroker) -> None:
    """Own duplicates and an older reconcile record are found in Kafka; --since skips earlier ones."""
    async with sim_process(agents=2, seed=5, paused=True) as sim:
        settings = bridge_settings(kafka, sim)
    await asyncio.to_thread(ensure_topics, settings)
    ours = [("bridge-id", settings.id.encode())]
    foreign = [("bridge-id", b"another-fleet")]

    def event(seconds: float, status: str, origin: Origin = Origin.STREAM) -> bytes:
        when = T0 + timedelta(seconds=seconds)
        change = Change("u1", Kind.ROUTING_STATUS, when, RoutingValue(status), when, origin)
        change.event_id = event_id("u1", Kind.ROUTING_STATUS, when, change.value)
        return encode_event(change, 0, None)

    topic = settings.topic_routing_status
    first = [(topic, "u1", event(1, "IDLE"), ours), (topic, "u1", event(1, "IDLE"), foreign)]
    await asyncio.to_thread(_produce, kafka, first)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    later = [
        (topic, "u1", event(5, "INTERACTING"), ours),
        (topic, "u1", event(5, "INTERACTING"), ours),
        (topic, "u1", event(3, "IDLE", Origin.RECONCILE), []),
        (topic, "u1", event(2, "OFF_QUEUE"), foreign),
    ]
    await asyncio.to_thread(_produce, kafka, later)
    everything = check_events(await asyncio.to_thread(read_events, settings))
    assert everything.records == 4
    assert [r.offset for r in everything.duplicates] == [3]
    assert [(p.changed_at.second, r.changed_at.second, r.origin) for p, r in everything.order_violations] == [
        (5, 3, "reconcile")
    ]
    recent = check_events(await asyncio.to_thread(read_events, settings, since=since))
    assert recent.records == 3
