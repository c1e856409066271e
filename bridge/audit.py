"""``presence-bridge audit``: does Kafka agree with Genesys?

Reads the compacted agent-state topic (``read_committed``) and compares every
agent's presence and routing status with Genesys's current state from the
bulk REST APIs (a live org or the simulator). Active roster agents missing
from Kafka are mismatches too. A mismatch whose Genesys change is younger
than the grace period may simply not have arrived yet: it is re-checked
after the grace, not counted. Prints one line per mismatch and last
``audit: <N> agents, <M> mismatches``; exit 0 only when M is 0.

Agents Genesys will not let the bridge observe (their topic comes back
``Rejected`` from a subscription, e.g. for lack of division permissions) are
found by :func:`unobservable`: a probe channel subscribed with
``ignoreErrors=true``. Each is printed as ``unobservable <id>: …`` and is a
mismatch unless ``--allow-unobservable`` (then it is a note).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.genesys import protocol
from bridge.genesys.rest import GenesysRest, RejectedTopic
from bridge.model import AgentState, Change, Kind, PresenceValue, RoutingValue
from bridge.settings import Settings
from bridge.statestore import load_states

__all__ = ["DEFAULT_GRACE_S", "Mismatch", "audit", "compare", "unobservable", "unobservable_lines"]

DEFAULT_GRACE_S = 10.0
#: Re-check rounds for mismatches inside the grace period.
MAX_RECHECKS = 3
#: Topics per probe subscription (a channel's limit).
PROBE_TOPICS = 1000


@dataclass(frozen=True)
class Mismatch:
    """One field on which Kafka and Genesys disagree."""

    user_id: str
    field: str
    kafka: str | None
    genesys: str | None
    genesys_changed_at: datetime | None

    def line(self) -> str:
        return f"mismatch {self.user_id} {self.field}: kafka={self.kafka} genesys={self.genesys}"


def _kafka_value(state: AgentState | None, kind: Kind) -> str | None:
    if state is None:
        return None
    if kind is Kind.PRESENCE:
        return state.presence.value.system_presence if state.presence else None
    return state.routing.value.status if state.routing else None


def _truth_value(change: Change) -> str:
    value = change.value
    if isinstance(value, PresenceValue):
        return value.system_presence
    assert isinstance(value, RoutingValue)
    return value.status


def compare(states: dict[str, AgentState], truth: list[Change], users: list[str]) -> list[Mismatch]:
    """Every field where Kafka's last state differs from Genesys's current one."""
    by_user: dict[tuple[str, Kind], Change] = {(c.user_id, c.kind): c for c in truth}
    out: list[Mismatch] = []
    for user in users:
        for kind in (Kind.PRESENCE, Kind.ROUTING_STATUS):
            current = by_user.get((user, kind))
            kafka = _kafka_value(states.get(user), kind)
            genesys = _truth_value(current) if current else None
            if genesys is not None and kafka != genesys:
                out.append(
                    Mismatch(user, kind.value, kafka, genesys, current.changed_at if current else None)
                )
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


async def audit(
    settings: Settings,
    rest: GenesysRest,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    out: Callable[[str], None] = print,
    now: Callable[[], datetime] | None = None,
    allow_unobservable: bool = False,
) -> int:
    """Run the audit; returns the number of mismatches (unobservable agents count unless allowed)."""
    clock = now or (lambda: datetime.now(UTC))
    roster = [u.id for u in await rest.active_users()]
    pending: list[Mismatch] = []
    users = roster
    states: dict[str, AgentState] = {}
    for attempt in range(MAX_RECHECKS + 1):
        states = await asyncio.to_thread(load_states, settings, None)
        if attempt == 0:
            users = sorted(set(roster))
        truth = await rest.current_changes(users, observed_at=clock())
        mismatches = compare(states, truth, users)
        cutoff = clock() - timedelta(seconds=grace_s)
        young = [m for m in mismatches if m.genesys_changed_at is not None and m.genesys_changed_at > cutoff]
        settled = [m for m in mismatches if m not in young]
        if not young or attempt == MAX_RECHECKS:
            pending = settled + (young if attempt == MAX_RECHECKS else [])
            break
        users = sorted({m.user_id for m in mismatches})
        await asyncio.sleep(grace_s)
    for mismatch in pending:
        out(mismatch.line())
    extra = sorted(set(states) - set(roster))
    if extra:
        out(f"note: {len(extra)} agents in Kafka are not in the active roster (tombstoned by the fleet)")
    hidden, hidden_lines = await unobservable_lines(rest, sorted(set(roster)), allowed=allow_unobservable)
    for line in hidden_lines:
        out(line)
    out(f"audit: {len(roster)} agents, {len(pending) + hidden} mismatches")
    return len(pending) + hidden
