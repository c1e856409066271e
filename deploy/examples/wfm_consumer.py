#!/usr/bin/env python3
"""Example downstream consumer: per-agent time in state, for a WFM adherence feed.

Reads presence-bridge's event topics (``genesys.presence.v1`` and
``genesys.routing-status.v1``) with ``isolation.level=read_committed`` — the
bridge writes every change and the agent's new state in one Kafka
transaction, so only committed changes count — rebuilds each agent's current
presence and routing status, and accumulates how long each agent spent in
each state. That is what real-time adherence and WFM reporting need: "agent
X was ON_QUEUE for 3 h 12 min, MEAL for 31 min…".

It depends on confluent-kafka and the standard library only; copy it and
adapt it. The rules it follows come from the bridge's record contract
(README "Topics and records", "Delivery promise"):

- **Key = userId; per-user order.** Records of one agent are in one
  partition, in Genesys's own order (``changedAt``). Presence and routing
  status are separate dimensions with separate clocks.
- **Dedupe by ``eventId``.** After a shard changes owner, the new owner may
  write a change the old one already wrote (exactly once *per ownership*).
  The same change always carries the same ``eventId``: a repeat is ignored.
  A record older than the agent's current state of that kind is stale and
  ignored too.
- **Backfill records** (``origin: "backfill"``) are transitions that
  happened while the bridge's socket was down, read back from Genesys's
  analytics history with their real ``changedAt`` and the same ``eventId``
  the stream would have given them. Normally they arrive in order, before
  the agent's post-gap records, and need nothing special.
- **Late records** (``late: true``): a backfilled transition that arrived
  after the agent's later records (Genesys's history lagged more than the
  bridge's hold, or was unavailable for a while). It is older than the
  agent's current state by design: the tracker inserts it into the agent's
  recent history, which splits the interval it falls in and moves the time
  to the right state, instead of ignoring it as stale. A late record older
  than the remembered history (``HISTORY_MAX`` transitions per agent) is
  counted in ``too_late`` and ignored.
- **Reconcile records** (``origin: "reconcile"``) are the fallback when the
  history is unavailable: the bridge reads the current state back from the
  REST API. The record's ``changedAt`` is still Genesys's own time of the
  change, so the previous interval closes at the right moment; only
  intermediate states *inside* the gap can be missing until late backfill
  records fill them. The tracker counts reconcile and backfill records per
  agent so an adherence report can flag those intervals.
- **Gap records** (``bridge.gaps.v1``, pass ``--gaps-topic``): one per gap
  of a shard (``from``, ``to``, ``recovered``). A gap with ``recovered:
  false`` is a period the bridge could not fill: the tracker lists it for
  the agents of that shard (taken from their records' ``shard``) so the
  period can be marked unobservable rather than guessed. A later record
  with the same ``gapId`` (``recovered: true``) clears it.
- Time in the current state is counted up to "now" (the ``now`` you pass to
  :meth:`TimeInState.report`), or up to the last change you saw.

Run it against the local demo::

    python deploy/examples/wfm_consumer.py --bootstrap 127.0.0.1:9092 --every 10

It prints a time-in-state table every ``--every`` seconds. ``--from-beginning``
(the default) replays the retained history (7 days by default) under a fresh
consumer group; ``--group NAME`` keeps a stable group instead.
"""

from __future__ import annotations

import argparse
import bisect
import signal
import sys
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "GAPS_SCHEMA",
    "PRESENCE_SCHEMA",
    "ROUTING_SCHEMA",
    "AgentClock",
    "TimeInState",
    "build_consumer",
    "consume",
    "main",
]

PRESENCE_SCHEMA = "genesys.presence.v1"
ROUTING_SCHEMA = "genesys.routing-status.v1"
GAPS_SCHEMA = "bridge.gaps.v1"
DEFAULT_TOPICS = ("genesys.presence.v1", "genesys.routing-status.v1")
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REPORT_EVERY_S = 10.0
#: How many eventIds to remember for dedupe (repeats come within seconds of a takeover).
DEDUPE_WINDOW = 200_000
#: Transitions remembered per agent and dimension, so a late record can still be placed.
HISTORY_MAX = 256
POLL_BATCH = 1_000
POLL_TIMEOUT_S = 0.5
PRESENCE = "presence"
ROUTING = "routing"


def parse_time(text: str) -> datetime:
    """Bridge times are ISO-8601 UTC with a ``Z``."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class AgentClock:
    """One agent, one dimension (presence or routing status): its recent transitions and time per state.

    ``history`` holds the last :data:`HISTORY_MAX` transitions in time order;
    older intervals are folded into ``totals``. A late transition is inserted
    into ``history`` where it belongs, which splits the interval it falls in.
    """

    history: list[tuple[datetime, str]] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def state(self) -> str | None:
        return self.history[-1][1] if self.history else None

    @property
    def since(self) -> datetime | None:
        return self.history[-1][0] if self.history else None

    def move(self, state: str, at: datetime) -> None:
        """Close the current interval at ``at`` and start ``state``."""
        self.history.append((at, state))
        self._fold()

    def insert(self, state: str, at: datetime) -> bool:
        """Place an older (late) transition; False when it is older than the remembered history."""
        if not self.history or at < self.history[0][0]:
            return False
        bisect.insort(self.history, (at, state))
        self._fold()
        return True

    def _fold(self) -> None:
        while len(self.history) > HISTORY_MAX:
            (start, state), (end, _) = self.history[0], self.history[1]
            self.totals[state] += max(0.0, (end - start).total_seconds())
            del self.history[0]

    def totals_until(self, now: datetime) -> dict[str, float]:
        """Accumulated seconds per state, the open interval counted up to ``now``."""
        out = dict(self.totals)
        for (start, state), (end, _) in zip(self.history, self.history[1:], strict=False):
            out[state] = out.get(state, 0.0) + max(0.0, (end - start).total_seconds())
        if self.history:
            start, state = self.history[-1]
            out[state] = out.get(state, 0.0) + max(0.0, (now - start).total_seconds())
        return out


class TimeInState:
    """Rebuilds per-agent state from bridge event records and accumulates time in state.

    Feed it record values (bytes or dicts) with :meth:`apply`; read
    :meth:`report`. Not thread-safe.
    """

    def __init__(self, dedupe_window: int = DEDUPE_WINDOW) -> None:
        self.clocks: dict[tuple[str, str], AgentClock] = defaultdict(AgentClock)
        self.reconciled: dict[str, int] = defaultdict(int)
        self.backfilled: dict[str, int] = defaultdict(int)
        self.duplicates = 0
        self.stale = 0
        self.applied = 0
        self.late = 0
        self.too_late = 0
        #: gapId → the last gap record of it; shard of each agent, from its records.
        self.gaps: dict[str, dict[str, Any]] = {}
        self.shard_of: dict[str, int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._window = dedupe_window

    def apply(self, value: bytes | dict[str, Any]) -> bool:
        """Apply one event record; True when it changed an agent's state."""
        doc = orjson.loads(value) if isinstance(value, bytes) else value
        schema = doc.get("schema")
        if schema == PRESENCE_SCHEMA:
            dimension, state = PRESENCE, doc["systemPresence"]
        elif schema == ROUTING_SCHEMA:
            dimension, state = ROUTING, doc["status"]
        elif schema == GAPS_SCHEMA:
            self.gaps[doc["gapId"]] = doc
            return False
        else:
            return False  # another record type (e.g. a future schema): not ours
        event_id = doc["eventId"]
        if event_id in self._seen:
            self.duplicates += 1
            return False
        self._remember(event_id)
        at = parse_time(doc["changedAt"])
        user = doc["userId"]
        if isinstance(doc.get("shard"), int):
            self.shard_of[user] = doc["shard"]
        clock = self.clocks[(user, dimension)]
        if doc.get("late") is True and clock.since is not None and at < clock.since:
            if not clock.insert(state, at):
                self.too_late += 1
                return False
            self.late += 1
        elif clock.since is not None and at < clock.since:
            self.stale += 1
            return False
        else:
            clock.move(state, at)
        origin = doc.get("origin")
        if origin == "reconcile":
            self.reconciled[user] += 1
        elif origin == "backfill":
            self.backfilled[user] += 1
        self.applied += 1
        return True

    def unobservable(self, user_id: str) -> list[tuple[datetime, datetime]]:
        """(from, to) of the gaps not recovered on the agent's shard: periods to mark unobservable."""
        shard = self.shard_of.get(user_id)
        return sorted(
            (parse_time(g["from"]), parse_time(g["to"]))
            for g in self.gaps.values()
            if g.get("shard") == shard and g.get("recovered") is False
        )

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)

    def current(self, user_id: str) -> tuple[str | None, str | None]:
        """(presence, routing status) of an agent now."""
        p = self.clocks.get((user_id, PRESENCE))
        r = self.clocks.get((user_id, ROUTING))
        return (p.state if p else None, r.state if r else None)

    def report(self, now: datetime) -> dict[str, dict[str, dict[str, float]]]:
        """userId → {"presence": {state: seconds}, "routing": {status: seconds}}, up to ``now``."""
        out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        for (user, dimension), clock in self.clocks.items():
            out[user][dimension] = clock.totals_until(now)
        return dict(out)

    def table(self, now: datetime) -> str:
        """The report as text, one line per agent."""
        lines = []
        for user, dims in sorted(self.report(now).items()):
            parts = []
            for dimension in (PRESENCE, ROUTING):
                totals = dims.get(dimension, {})
                parts.append(" ".join(f"{s}={secs:.0f}s" for s, secs in sorted(totals.items())) or "-")
            flag = f"  (reconciled x{self.reconciled[user]})" if self.reconciled.get(user) else ""
            if self.backfilled.get(user):
                flag += f"  (backfilled x{self.backfilled[user]})"
            for start, end in self.unobservable(user):
                flag += f"  (unobservable {start:%H:%M:%S}-{end:%H:%M:%S})"
            lines.append(f"{user}  presence[{parts[0]}]  routing[{parts[1]}]{flag}")
        lines.append(
            f"-- {len(self.report(now))} agents, {self.applied} changes applied ({self.late} late), "
            f"{self.duplicates} duplicates, {self.stale} stale and {self.too_late} too-late records ignored"
        )
        return "\n".join(lines)


def build_consumer(bootstrap: str, group: str, topics: Iterable[str], **extra: Any) -> Any:
    """A read_committed consumer subscribed to the bridge's event topics."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            # Only committed bridge transactions: never an aborted or half-written change.
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            **extra,
        }
    )
    consumer.subscribe(list(topics))
    return consumer


def consume(
    consumer: Any,
    tracker: TimeInState,
    *,
    should_stop: Callable[[], bool],
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Poll records into ``tracker`` until ``should_stop()``; ``on_tick`` runs after every poll."""
    from confluent_kafka import KafkaException

    while not should_stop():
        for msg in consumer.consume(num_messages=POLL_BATCH, timeout=POLL_TIMEOUT_S):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue
            if msg.value() is not None:
                tracker.apply(msg.value())
        if on_tick is not None:
            on_tick()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--topic", action="append", default=None, help="event topic (repeatable)")
    parser.add_argument("--gaps-topic", default=None, help="the bridge's gaps topic (e.g. bridge.gaps.v1)")
    parser.add_argument("--group", default=None, help="consumer group (default: a fresh one per run)")
    parser.add_argument("--every", type=float, default=DEFAULT_REPORT_EVERY_S, help="report interval, s")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    group = args.group or f"wfm-example-{uuid.uuid4().hex[:8]}"
    topics = list(args.topic or DEFAULT_TOPICS)
    if args.gaps_topic:
        topics.append(args.gaps_topic)
    consumer = build_consumer(args.bootstrap, group, topics)
    tracker = TimeInState()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    end = None if args.seconds is None else time.monotonic() + args.seconds
    next_report = time.monotonic() + args.every

    def tick() -> None:
        nonlocal next_report
        if time.monotonic() >= next_report:
            print(tracker.table(datetime.now(UTC)), flush=True)
            next_report = time.monotonic() + args.every

    try:
        consume(
            consumer,
            tracker,
            should_stop=lambda: stopping or (end is not None and time.monotonic() >= end),
            on_tick=tick,
        )
    finally:
        consumer.close()
    print(tracker.table(datetime.now(UTC)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
