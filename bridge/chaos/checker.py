"""The chaos run's invariants and its verdict.

The state and event checks are the audit's own (:mod:`bridge.audit`); the
simulator adds what only it can see:

- coverage: every active agent's presence and routing status each
  subscribed on exactly one connected channel (``GET /sim/stats`` lists the
  channels with their topics and a ``connected`` flag; ``GET /sim/truth``
  the active agents). ``uncovered``: on none; ``multiply_covered``: on
  more than one (two shards would write the same agent);
- owed backfills: an agent whose last state record still carries a
  ``backfill`` mark is owed the transitions of a gap whose history could not
  be read yet (the bridge retries it in the background and writes them
  late); the fleet has not settled while any is owed;
- recall: the share of the simulator's change log during the run found in
  the event topics (same agent, kind and change time). Genesys never
  replays what it sent while a socket was down, but the backfill reads it
  from the analytics history, so every change must be there: a run that
  misses one fails. :func:`missed_changes` lists the first changes recall
  did not find (agent, kind, changedAt, value), printed after the verdict
  so a run that lost some can be debugged.

The pure parts (:func:`coverage`, :func:`recall`, :func:`missed_changes`, :class:`Verdict`) take
plain values and are unit-tested.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.audit import EventCheck, EventRecord, Mismatch, compare
from bridge.genesys.rest import GenesysRest
from bridge.settings import Settings
from bridge.sim.topics import TopicError, parse_topic
from bridge.statestore import load_states

__all__ = [
    "MAX_MISSED_LISTED",
    "Coverage",
    "StateCheck",
    "Verdict",
    "coverage",
    "missed_changes",
    "missed_lines",
    "recall",
    "state_mismatches",
]

#: The simulator's kind names for the two subscriptions of an agent.
KINDS = ("presence", "routingStatus")
#: How many of the changes recall missed are listed after the verdict.
MAX_MISSED_LISTED = 10


@dataclass
class Coverage:
    """Active agents subscribed on no connected channel, or on several."""

    agents: int = 0
    uncovered: list[str] = field(default_factory=list)
    multiply_covered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.uncovered and not self.multiply_covered


def coverage(active: Iterable[str], channels: Iterable[dict[str, Any]]) -> Coverage:
    """Coverage of ``active`` agents by the ``channels`` of ``/sim/stats``."""
    counts: dict[tuple[str, str], int] = {}
    for channel in channels:
        if not channel.get("connected"):
            continue
        for name in channel.get("topicNames", ()):
            try:
                topic = parse_topic(name)
            except TopicError:
                continue
            for kind in topic.kinds:
                key = (topic.user_id, kind)
                counts[key] = counts.get(key, 0) + 1
    result = Coverage()
    for user in sorted(set(active)):
        result.agents += 1
        seen = [counts.get((user, kind), 0) for kind in KINDS]
        if min(seen) == 0:
            result.uncovered.append(user)
        elif max(seen) > 1:
            result.multiply_covered.append(user)
    return result


def recall(
    log: Iterable[dict[str, Any]], records: Iterable[EventRecord], topics: dict[str, str]
) -> tuple[int, int]:
    """(changes found in Kafka, changes in the simulator's ``log``); ``topics`` maps topic → sim kind."""
    seen = _seen(records, topics)
    total = found = 0
    for entry in log:
        total += 1
        if _key(entry) in seen:
            found += 1
    return found, total


def missed_changes(
    log: Iterable[dict[str, Any]],
    records: Iterable[EventRecord],
    topics: dict[str, str],
    limit: int = MAX_MISSED_LISTED,
) -> list[dict[str, Any]]:
    """The first ``limit`` entries of ``log`` (in log order) that :func:`recall` does not find."""
    seen = _seen(records, topics)
    out: list[dict[str, Any]] = []
    for entry in log:
        if len(out) >= limit:
            break
        if _key(entry) not in seen:
            out.append(entry)
    return out


def missed_lines(missed: Iterable[dict[str, Any]], found: int, total: int) -> list[str]:
    """What the runner prints after the verdict: a header and one line per missed change."""
    listed = list(missed)
    if not listed:
        return []
    head = (
        f"recall missed {total - found} of {total} changes; first {len(listed)} (agent kind changedAt value):"
    )
    return [head, *(f"  missed {e['userId']} {e['kind']} {e['changedAt']} {e.get('value')}" for e in listed)]


def _seen(records: Iterable[EventRecord], topics: dict[str, str]) -> set[tuple[str, str | None, datetime]]:
    return {(r.user_id, topics.get(r.topic), r.changed_at) for r in records}


def _key(entry: dict[str, Any]) -> tuple[str, str | None, datetime]:
    return (str(entry["userId"]), str(entry["kind"]), datetime.fromisoformat(str(entry["changedAt"])))


@dataclass(frozen=True)
class StateCheck:
    """The fleet's state against Genesys at one moment."""

    agents: int
    """Active agents compared."""
    mismatches: list[Mismatch]
    owed: list[str]
    """Active agents whose last state still carries a ``backfill`` mark (history owed), sorted."""


async def state_mismatches(
    settings: Settings, rest: GenesysRest, users: Collection[str] | None = None
) -> StateCheck:
    """This fleet's state against Genesys, now, without grace.

    With ``users``, only those agents (taken as the active roster, which is
    then not read): a poll that re-checks suspects costs REST calls for them
    alone.
    """
    given = None if users is None else sorted(set(users))
    roster = sorted({u.id for u in await rest.active_users()}) if given is None else given
    states = await asyncio.to_thread(load_states, settings, given, bridge_id=settings.id)
    truth = await rest.current_changes(roster, observed_at=datetime.now(UTC))
    owed = [u for u in roster if (state := states.get(u)) is not None and state.pending is not None]
    return StateCheck(len(roster), compare(states, truth, roster), owed)


@dataclass
class Verdict:
    """Everything the run checked; :attr:`passed` only when every invariant holds."""

    seed: int
    faults: int
    agents: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    #: Agents still owed a backfill (their last state carries a ``backfill`` mark).
    owed: list[str] = field(default_factory=list)
    events: EventCheck = field(default_factory=EventCheck)
    coverage: Coverage = field(default_factory=Coverage)
    crashes: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    recall_found: int = 0
    recall_total: int = 0
    settle_s: float = 0.0
    settled: bool = False
    #: Scheduled faults not applied because their worker was still busy with the previous one.
    skipped: int = 0
    #: The first changes recall did not find (simulator change-log entries), listed after the verdict.
    recall_missed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.settled
            and not self.mismatches
            and not self.owed
            and not self.events.duplicates
            and not self.events.order_violations
            and self.coverage.ok
            and not self.crashes
            and not self.harness_errors
            and self.recall_found == self.recall_total
        )

    def line(self) -> str:
        # Rounded down: 5400 of 5401 is 99.98 %, never "100.0%".
        share = (
            math.floor(10000 * self.recall_found / self.recall_total) / 100 if self.recall_total else 100.0
        )
        return (
            f"chaos verdict: {'PASS' if self.passed else 'FAIL'} seed={self.seed} faults={self.faults} "
            f"agents={self.agents} mismatches={len(self.mismatches)} "
            f"duplicates={len(self.events.duplicates)} order_violations={len(self.events.order_violations)} "
            f"uncovered={len(self.coverage.uncovered)} "
            f"multiply_covered={len(self.coverage.multiply_covered)} owed={len(self.owed)} "
            f"crashes={len(self.crashes)} harness_errors={len(self.harness_errors)} "
            f"recall={share:.2f}% ({self.recall_found}/{self.recall_total}) settle={self.settle_s:.0f}s "
            f"skipped={self.skipped}"
        )
