"""``presence-bridge audit``: does Kafka agree with Genesys?

State check. Reads the compacted agent-state topic (``read_committed``),
only the records of this fleet (``bridge-id`` header equal to ``BRIDGE_ID``;
a record without the header counts as this fleet's), and compares it with
Genesys's current state from the REST APIs (a live org or the simulator).
Each of these is a :class:`Mismatch` naming the agent:

- ``missing``: an active roster agent with no state in Kafka;
- ``not_tombstoned``: an agent with a live state in Kafka that Genesys does
  not list as active (deleted, or never there): the fleet should have
  written a tombstone;
- ``presence``: a different ``systemPresence``;
- ``presenceDefinitionId``: the same system presence under another of the
  org's definitions (the org's "Lunch" shown as plain "Meal");
- ``routingStatus``: a different routing status.

A mismatch may simply not have arrived yet: one whose Genesys change is
younger than the grace period, and any roster difference (``missing``,
``not_tombstoned``: Genesys does not say when a user was added or deleted),
is re-checked after the grace (up to :data:`MAX_RECHECKS` rounds) and
counted only if it persists.

Event check (``--events``). Reads the presence and routing-status event
topics from ``--since`` (default: the whole retention) to their end as of
the call, this fleet's records only, and reports

- ``duplicate``: an ``eventId`` written twice in one topic (the same change
  delivered twice);
- ``order``: a record whose ``changedAt`` is older than the previous record
  of the same agent in the same topic (Kafka order per key = offset order,
  the agent's records all live in one partition).

Records with ``origin: "reconcile"`` are held to the same order: a
reconciliation writes the agent's current state with the Genesys time it
took effect, and the bridge drops a value older than the one it already
wrote, so a reconcile record older than its predecessor is a stale value
made current, exactly what downstream consumers must never see. Records
with the same ``changedAt`` are in order (a millisecond does not order
them); the same change twice is caught by its ``eventId``. Records with
``late: true`` (a gap's transition found in Genesys's history only after the
agent's newer records were written) are out of order by definition and
flagged so: the order check skips them, the duplicate check does not.

Agents Genesys will not let the bridge observe (their topic comes back
``Rejected`` from a subscription, e.g. for lack of division permissions) are
found by :func:`unobservable`: a probe channel subscribed with
``ignoreErrors=true``. Each is printed as ``unobservable <id>: …`` and is a
mismatch unless ``--allow-unobservable`` (then it is a note).

Prints one line per finding and last
``audit: <N> agents, <M> mismatches[, <D> duplicates, <O> order violations]``;
exit 0 only when every count is 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Consumer

from bridge.genesys import protocol
from bridge.genesys.models import RejectedTopic
from bridge.genesys.rest import GenesysRest
from bridge.kafka.compacted import ConsumerFactory, read_to_end, reader_config
from bridge.model import AgentState, Change, Kind, PresenceValue, RoutingValue
from bridge.settings import Settings
from bridge.statestore import load_states, written_by

__all__ = [
    "DEFAULT_GRACE_S",
    "MAX_RECHECKS",
    "ROSTER_FIELDS",
    "AuditReport",
    "EventCheck",
    "EventRecord",
    "Mismatch",
    "audit",
    "audit_state",
    "check_events",
    "compare",
    "read_events",
    "unobservable",
    "unobservable_lines",
]

DEFAULT_GRACE_S = 10.0
#: Re-check rounds for mismatches inside the grace period.
MAX_RECHECKS = 3
#: Topics per probe subscription (a channel's limit).
PROBE_TOPICS = 1000
#: Mismatch fields that are roster differences (no Genesys change time).
ROSTER_FIELDS = frozenset({"missing", "not_tombstoned"})
#: Bounds reading the event topics (a week of events of a large org is big).
DEFAULT_EVENTS_TIMEOUT_S = 600.0
#: Findings printed one per line before the rest are only counted.
MAX_PRINTED = 200


@dataclass(frozen=True)
class Mismatch:
    """One agent on which Kafka and Genesys disagree, and in what."""

    user_id: str
    field: str
    kafka: str | None
    genesys: str | None
    genesys_changed_at: datetime | None

    def line(self) -> str:
        return f"mismatch {self.user_id} {self.field}: kafka={self.kafka} genesys={self.genesys}"


def _presence(state: AgentState | None) -> PresenceValue | None:
    return state.presence.value if state is not None and state.presence is not None else None


def _routing(state: AgentState | None) -> str | None:
    return state.routing.value.status if state is not None and state.routing is not None else None


def compare(states: dict[str, AgentState], truth: list[Change], users: Iterable[str]) -> list[Mismatch]:
    """Every disagreement between Kafka's states and Genesys's current changes.

    ``users`` is Genesys's active roster (or the part of it being re-checked);
    ``truth`` holds its current presence and routing status (a kind Genesys
    did not return is not compared). Agents in ``states`` outside ``users``
    are ``not_tombstoned``.
    """
    by_user: dict[tuple[str, Kind], Change] = {(c.user_id, c.kind): c for c in truth}
    roster = set(users)
    out: list[Mismatch] = []
    for user in sorted(roster):
        state = states.get(user)
        if state is None:
            out.append(Mismatch(user, "missing", None, "active", None))
            continue
        presence = by_user.get((user, Kind.PRESENCE))
        if presence is not None:
            want = presence.value
            assert isinstance(want, PresenceValue)
            have = _presence(state)
            if have is None or have.system_presence != want.system_presence:
                out.append(
                    Mismatch(
                        user,
                        "presence",
                        have.system_presence if have else None,
                        want.system_presence,
                        presence.changed_at,
                    )
                )
            elif have.presence_definition_id != want.presence_definition_id:
                out.append(
                    Mismatch(
                        user,
                        "presenceDefinitionId",
                        have.presence_definition_id,
                        want.presence_definition_id,
                        presence.changed_at,
                    )
                )
        routing = by_user.get((user, Kind.ROUTING_STATUS))
        if routing is not None:
            assert isinstance(routing.value, RoutingValue)
            have_status = _routing(state)
            if have_status != routing.value.status:
                out.append(
                    Mismatch(user, "routingStatus", have_status, routing.value.status, routing.changed_at)
                )
    for user in sorted(set(states) - roster):
        out.append(Mismatch(user, "not_tombstoned", "live state", "not active", None))
    return out


async def unobservable(rest: GenesysRest, users: list[str]) -> dict[str, RejectedTopic]:
    """The agents whose topic Genesys rejects, probed on a channel of the audit's own.

    Each batch replaces the probe channel's subscriptions (PUT with
    ``ignoreErrors=true``); they are removed at the end. The probe channel is
    never connected, so Genesys evicts it first when the client needs room.
    """
    channel = await rest.create_channel()
    out: dict[str, RejectedTopic] = {}
    try:
        for start in range(0, len(users), PROBE_TOPICS):
            batch = users[start : start + PROBE_TOPICS]
            owners = {protocol.user_topic(u): u for u in batch}
            result = await rest.put_subscriptions(channel.id, list(owners), ignore_errors=True)
            out.update({owners[t.id]: t for t in result.rejected if t.id in owners})
    finally:
        await rest.delete_subscriptions(channel.id)
    return out


async def unobservable_lines(rest: GenesysRest, users: list[str], *, allowed: bool) -> tuple[int, list[str]]:
    """(mismatches, lines) for the unobservable agents: none counted when ``allowed``."""
    rejected = await unobservable(rest, users)
    prefix = "note: unobservable" if allowed else "unobservable"
    lines = [
        f"{prefix} {user}: {topic.reason or 'rejected'}"
        + (
            f" (missing permissions: {', '.join(topic.missing_permissions)})"
            if topic.missing_permissions
            else ""
        )
        for user, topic in sorted(rejected.items())
    ]
    return (0 if allowed else len(rejected)), lines


def _may_be_in_flight(mismatch: Mismatch, cutoff: datetime) -> bool:
    if mismatch.field in ROSTER_FIELDS:
        return True
    return mismatch.genesys_changed_at is not None and mismatch.genesys_changed_at > cutoff


async def audit_state(
    settings: Settings,
    rest: GenesysRest,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    now: Callable[[], datetime] | None = None,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> tuple[int, list[Mismatch]]:
    """(active agents, mismatches that persisted past the grace) for this fleet's state."""
    clock = now or (lambda: datetime.now(UTC))
    roster = sorted({u.id for u in await rest.active_users()})
    users = roster
    mismatches: list[Mismatch] = []
    for attempt in range(MAX_RECHECKS + 1):
        states = await asyncio.to_thread(load_states, settings, None, bridge_id=settings.id)
        if attempt > 0:
            # A re-check: the roster may have moved too; only re-examine the suspects.
            roster = sorted({u.id for u in await rest.active_users()})
            suspects = {m.user_id for m in mismatches}
            states = {u: s for u, s in states.items() if u in suspects}
            users = [u for u in roster if u in suspects]
        truth = await rest.current_changes(users, observed_at=clock())
        mismatches = compare(states, truth, users)
        cutoff = clock() - timedelta(seconds=grace_s)
        if attempt == MAX_RECHECKS or not any(_may_be_in_flight(m, cutoff) for m in mismatches):
            break
        await sleep(grace_s)
    return len(roster), mismatches


# -- event topics --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the event check needs of one event-topic record."""

    topic: str
    partition: int
    offset: int
    user_id: str
    event_id: str
    changed_at: datetime
    origin: str
    #: A backfilled transition written after the agent's later records (``late: true``).
    late: bool = False


@dataclass
class EventCheck:
    """Findings of :func:`check_events`."""

    records: int = 0
    #: Records flagged ``late: true`` (out of order by definition, so not order-checked).
    late: int = 0
    duplicates: list[EventRecord] = field(default_factory=list)
    order_violations: list[tuple[EventRecord, EventRecord]] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        for rec in self.duplicates:
            yield f"duplicate {rec.user_id} {rec.topic}: eventId {rec.event_id} again at offset {rec.offset}"
        for prev, rec in self.order_violations:
            yield (
                f"order {rec.user_id} {rec.topic}: changedAt {rec.changed_at.isoformat()} ({rec.origin}, "
                f"offset {rec.offset}) after {prev.changed_at.isoformat()} "
                f"({prev.origin}, offset {prev.offset})"
            )


def check_events(records: Iterable[EventRecord]) -> EventCheck:
    """Duplicated event ids and per-agent order violations, records taken in offset order per partition.

    A ``late`` record (a backfilled transition that arrived after the agent's
    later records had been released) is older than its predecessor by
    definition and says so: it counts in the duplicate check but not in the
    order check, and it does not move the agent's last seen time.
    """
    result = EventCheck()
    seen: set[tuple[str, str]] = set()
    last: dict[tuple[str, str], EventRecord] = {}
    for rec in records:
        result.records += 1
        key = (rec.topic, rec.event_id)
        if key in seen:
            result.duplicates.append(rec)
            continue
        seen.add(key)
        if rec.late:
            result.late += 1
            continue
        agent = (rec.topic, rec.user_id)
        prev = last.get(agent)
        if prev is not None and rec.changed_at < prev.changed_at:
            result.order_violations.append((prev, rec))
        if prev is None or rec.changed_at >= prev.changed_at:
            last[agent] = rec
    return result


def read_events(
    settings: Settings,
    *,
    since: datetime | None = None,
    consumer_factory: ConsumerFactory = Consumer,
    timeout_s: float = DEFAULT_EVENTS_TIMEOUT_S,
) -> list[EventRecord]:
    """This fleet's committed records of both event topics from ``since`` to their end as of the call.

    Per partition in offset order. Raises :class:`SinkError` when Kafka fails
    or the read does not finish within ``timeout_s``.
    """
    out: list[EventRecord] = []
    for topic in (settings.topic_presence, settings.topic_routing_status):
        out.extend(_read_topic(settings, topic, since, consumer_factory, timeout_s))
    return out


def _read_topic(
    settings: Settings,
    topic: str,
    since: datetime | None,
    consumer_factory: ConsumerFactory,
    timeout_s: float,
) -> list[EventRecord]:
    records: list[EventRecord] = []

    def collect(msg: Any) -> None:
        value = msg.value()
        if value is None or not written_by(msg.headers(), settings.id):
            return
        try:
            doc = orjson.loads(value)
            records.append(
                EventRecord(
                    topic,
                    msg.partition(),
                    msg.offset(),
                    str(doc["userId"]),
                    str(doc["eventId"]),
                    datetime.fromisoformat(doc["changedAt"]),
                    str(doc.get("origin")),
                    doc.get("late") is True,
                )
            )
        except (ValueError, KeyError, TypeError):
            return  # not an event record of ours; the schema tests guard the encoding

    read_to_end(
        consumer_factory,
        reader_config(settings.kafka_config(), f"{settings.id}-audit"),
        topic,
        collect,
        timeout_s=timeout_s,
        kind="event",
        since_ms=None if since is None else int(since.timestamp() * 1000),
    )
    return records


# -- the command -------------------------------------------------------------------------


@dataclass
class AuditReport:
    """What one audit found."""

    agents: int
    mismatches: list[Mismatch]
    events: EventCheck | None = None
    #: Agents Genesys will not let the bridge observe that count as mismatches
    #: (0 with ``--allow-unobservable``).
    unobservable: int = 0

    @property
    def failures(self) -> int:
        events = self.events
        extra = 0 if events is None else len(events.duplicates) + len(events.order_violations)
        return len(self.mismatches) + self.unobservable + extra

    def summary(self) -> str:
        text = f"audit: {self.agents} agents, {len(self.mismatches) + self.unobservable} mismatches"
        if self.events is not None:
            text += (
                f", {self.events.records} events, {len(self.events.duplicates)} duplicates, "
                f"{len(self.events.order_violations)} order violations"
            )
        return text


async def audit(
    settings: Settings,
    rest: GenesysRest,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    events: bool = False,
    since: datetime | None = None,
    out: Callable[[str], None] = print,
    now: Callable[[], datetime] | None = None,
    allow_unobservable: bool = False,
) -> AuditReport:
    """Run the audit, print its findings and summary line, and return the report.

    Unobservable agents count as mismatches unless ``allow_unobservable``.
    """
    agents, mismatches = await audit_state(settings, rest, grace_s=grace_s, now=now)
    report = AuditReport(agents, mismatches)
    if events:
        report.events = check_events(await asyncio.to_thread(read_events, settings, since=since))
    roster = sorted({u.id for u in await rest.active_users()})
    report.unobservable, hidden_lines = await unobservable_lines(rest, roster, allowed=allow_unobservable)
    lines: list[str] = [m.line() for m in mismatches]
    lines.extend(hidden_lines)
    if report.events is not None:
        lines.extend(report.events.lines())
    for line in lines[:MAX_PRINTED]:
        out(line)
    if len(lines) > MAX_PRINTED:
        out(f"... and {len(lines) - MAX_PRINTED} more")
    out(report.summary())
    return report
