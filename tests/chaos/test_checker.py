"""The chaos checker: its pure parts (coverage, recall, the verdict) and the state check against Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bridge.audit import EventCheck, EventRecord, Mismatch
from bridge.chaos.checker import (
    Coverage,
    Verdict,
    coverage,
    missed_changes,
    missed_lines,
    recall,
    state_mismatches,
)
from bridge.model import PendingBackfill
from bridge.records import encode_state
from bridge.topics import ensure_topics
from bridge.worker import genesys_rest
from tests.conftest import KafkaBroker
from tests.test_audit import _produce, _state_of
from tests.worker.conftest import bridge_settings, sim_process

T = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def channel(connected: bool, *topics: str) -> dict[str, object]:
    return {"id": "c", "connected": connected, "topicNames": list(topics)}


def combined(user: str) -> str:
    return f"v2.users.{user}?presence&routingStatus"


def test_every_agent_on_one_connected_channel_is_covered() -> None:
    """Combined or split topics, one connected channel each: nothing to report."""
    result = coverage(
        ["a", "b"],
        [channel(True, combined("a")), channel(True, "v2.users.b.presence", "v2.users.b.routingStatus")],
    )
    assert result.ok and result.agents == 2


def test_disconnected_or_half_subscribed_agents_are_uncovered() -> None:
    """A channel without a socket covers nobody; an agent missing one kind is uncovered."""
    result = coverage(
        ["a", "b", "c"], [channel(False, combined("a")), channel(True, "v2.users.b.presence", combined("x"))]
    )
    assert result.uncovered == ["a", "b", "c"]
    assert result.multiply_covered == []


def test_agent_on_two_connected_channels_is_multiply_covered() -> None:
    """Two connected channels with one agent's topics: two shards would write it."""
    result = coverage(["a"], [channel(True, combined("a")), channel(True, "v2.users.a.routingStatus")])
    assert result.multiply_covered == ["a"]
    assert not result.ok


def test_recall_matches_agent_kind_and_change_time() -> None:
    """A log entry counts as found when a record of its kind's topic has the agent and time."""
    log = [
        {"userId": "a", "kind": "presence", "changedAt": "2026-01-01T09:00:00.000Z"},
        {"userId": "a", "kind": "routingStatus", "changedAt": "2026-01-01T09:00:00.000Z"},
        {"userId": "b", "kind": "presence", "changedAt": "2026-01-01T09:00:00.000Z"},
    ]
    records = [
        EventRecord("pres", 0, 0, "a", "e", T, "stream"),
        EventRecord("pres", 0, 1, "b", "f", T, "reconcile"),
    ]
    assert recall(log, records, {"pres": "presence", "rout": "routingStatus"}) == (2, 3)


def test_missed_changes_lists_the_first_unfound_entries_in_log_order() -> None:
    """What recall did not find, oldest first, at most the limit; listed as agent, kind, time, value."""
    log = [
        {"seq": i, "userId": u, "kind": k, "value": v, "changedAt": f"2026-01-01T09:00:0{i}.000Z"}
        for i, (u, k, v) in enumerate(
            [("a", "presence", "ON_QUEUE"), ("a", "routingStatus", "IDLE"), ("b", "presence", "BREAK")]
            + [("c", "routingStatus", "INTERACTING")] * 5
        )
    ]
    topics = {"pres": "presence", "rout": "routingStatus"}
    found = [EventRecord("pres", 0, 0, "a", "e", T, "stream")]  # log entry 0 (09:00:00)
    missed = missed_changes(log, found, topics, limit=3)
    assert [m["seq"] for m in missed] == [1, 2, 3]
    assert missed_changes(log, [], topics)[0]["seq"] == 0 and len(missed_changes(log, [], topics)) == 8
    assert missed_lines(missed, *recall(log, found, topics)) == [
        "recall missed 7 of 8 changes; first 3 (agent kind changedAt value):",
        "  missed a routingStatus 2026-01-01T09:00:01.000Z IDLE",
        "  missed b presence 2026-01-01T09:00:02.000Z BREAK",
        "  missed c routingStatus 2026-01-01T09:00:03.000Z INTERACTING",
    ]
    assert missed_lines([], 8, 8) == []


def test_missed_listing_leaves_the_verdict_line_alone() -> None:
    """The verdict line's format is parsed by other tools: the listing is separate from it."""
    verdict = Verdict(7, 1, settled=True, recall_found=1, recall_total=2)
    verdict.recall_missed = [{"userId": "a", "kind": "presence", "changedAt": "x", "value": "AWAY"}]
    assert "missed" not in verdict.line() and verdict.line().endswith(
        "recall=50.00% (1/2) settle=0s skipped=0"
    )


def test_verdict_passes_only_when_every_invariant_holds() -> None:
    """Any mismatch, duplicate, disorder, coverage gap, crash, harness error, agent owed a backfill,
    unsettled fleet or change of the simulator's log missing from the event topics fails."""
    good = Verdict(7, 53, agents=3000, settled=True)
    assert good.passed
    assert good.line().startswith(
        "chaos verdict: PASS seed=7 faults=53 agents=3000 mismatches=0 duplicates=0 "
        "order_violations=0 uncovered=0 multiply_covered=0 owed=0 crashes=0"
    )
    rec = EventRecord("t", 0, 0, "a", "e", T, "stream")
    failing = [
        Verdict(7, 1, settled=False),
        Verdict(
            7, 1, settled=True, mismatches=[Mismatch("a", "not_tombstoned", "live state", "not active", None)]
        ),
        Verdict(7, 1, settled=True, events=EventCheck(1, duplicates=[rec])),
        Verdict(7, 1, settled=True, events=EventCheck(2, order_violations=[(rec, rec)])),
        Verdict(7, 1, settled=True, coverage=Coverage(1, uncovered=["a"])),
        Verdict(7, 1, settled=True, coverage=Coverage(1, multiply_covered=["a"])),
        Verdict(7, 1, settled=True, crashes=["worker 0 exited with 1"]),
        Verdict(7, 1, settled=True, harness_errors=["boom"]),
        Verdict(7, 1, settled=True, owed=["a"]),
        Verdict(7, 1, settled=True, recall_found=5400, recall_total=5401),
    ]
    for verdict in failing:
        assert not verdict.passed
        assert verdict.line().startswith("chaos verdict: FAIL")


@pytest.mark.kafka
async def test_state_mismatches_of_given_agents_compare_only_them(kafka: KafkaBroker) -> None:
    """With ``users`` only those agents are compared; without, the whole roster (missing ones too);
    an agent whose state still carries a backfill mark is listed as owed."""
    async with sim_process(agents=4, seed=5, paused=True) as sim:
        settings = bridge_settings(kafka, sim)
        await asyncio.to_thread(ensure_topics, settings)
        users = (await sim.admin("GET", "/sim/truth"))["users"]
        ids = sorted(users)
        right, wrong = _state_of(ids[0], users[ids[0]]), _state_of(ids[1], users[ids[1]])
        assert wrong.routing is not None
        wrong.routing.value.status = "NOT_A_STATUS"
        # Right, but its state record still marks a gap whose history is owed: not settled.
        right.pending = PendingBackfill(T, T, T, ())
        now = datetime.now(UTC)
        ours = [("bridge-id", settings.id.encode())]
        topic = settings.topic_agent_state
        await asyncio.to_thread(
            _produce,
            kafka,
            [(topic, s.user_id, encode_state(s, 0, now, s.pending), ours) for s in (right, wrong)],
        )
        rest = genesys_rest(settings, settings.clients()[0])
        try:
            given = await state_mismatches(settings, rest, [ids[1], ids[0]])
            everything = await state_mismatches(settings, rest)
            others = await state_mismatches(settings, rest, ids[1:])
        finally:
            await rest.aclose()
    assert (given.agents, [(m.user_id, m.field) for m in given.mismatches]) == (
        2,
        [(ids[1], "routingStatus")],
    )
    assert given.owed == [ids[0]], "a marked state is owed its backfill, though it matches Genesys"
    assert (others.owed, everything.owed) == ([], [ids[0]])
    assert everything.agents == 4
    assert {(m.user_id, m.field) for m in everything.mismatches} == {
        (ids[1], "routingStatus"),
        (ids[2], "missing"),
        (ids[3], "missing"),
    }
