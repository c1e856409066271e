"""``presence-bridge tail``: agents' current state, live, read from Kafka.

The view starts from the compacted agent-state topic (every agent's last
committed presence and routing status, read to its end with
``isolation.level=read_committed``) and then follows the event topics
(``genesys.presence.v1``, ``genesys.routing-status.v1``), also
``read_committed``, so an aborted transaction never shows. To lose nothing
between the two reads, the event topics' end offsets are taken *before* the
state topic is read and followed from there; an event that the state already
holds is recognised by its ``changedAt`` (older or equal with the same
``eventId`` → ignored), as the bridge orders changes per agent by Genesys's
own time.

Output:

- stdout is a terminal: a table redrawn in place with plain ANSI escapes
  (agent, presence, since, routing status, since), the most recently changed
  agents first, under a header with the count of agents per presence and per
  routing status;
- otherwise (a pipe, a file, a test): one line per agent of the initial
  state (``state …``), a ``tail: … agents loaded`` line, then one line per
  change (``change …``) and a ``counts …`` line at the end.

No consumer group is joined and no offset is committed: partitions are
assigned directly, so any number of tails can run side by side.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from bridge.kafka.state import decode_state

__all__ = [
    "DEFAULT_REFRESH_S",
    "AgentRow",
    "TailView",
    "format_age",
    "register",
    "run_tail",
]

#: How often the terminal table is redrawn.
DEFAULT_REFRESH_S = 0.5
#: Poll timeout of the event consumer.
POLL_S = 0.2
#: Rows kept free for the header and footer of the terminal table.
TABLE_CHROME_ROWS = 6
#: Terminal size used when it cannot be read.
FALLBACK_TERMINAL = (120, 40)
#: Width of the agent column (ids are UUIDs: 36 characters).
AGENT_WIDTH = 36
#: Width of the presence and routing columns.
STATE_WIDTH = 22
PRESENCE_SCHEMA = "genesys.presence.v1"
ROUTING_SCHEMA = "genesys.routing-status.v1"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
#: The consumer group id librdkafka requires; tail never joins it (partitions are assigned).
TAIL_GROUP = "presence-bridge-tail"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_age(seconds: float) -> str:
    """A short human duration: ``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, int(seconds))
    if s < SECONDS_PER_MINUTE:
        return f"{s}s"
    if s < SECONDS_PER_HOUR:
        return f"{s // SECONDS_PER_MINUTE}m{s % SECONDS_PER_MINUTE:02d}s"
    return f"{s // SECONDS_PER_HOUR}h{(s % SECONDS_PER_HOUR) // SECONDS_PER_MINUTE:02d}m"


@dataclass
class AgentRow:
    """What the view knows of one agent."""

    user_id: str
    presence: str | None = None
    presence_label: str | None = None
    presence_since: datetime | None = None
    presence_event: str | None = None
    routing: str | None = None
    routing_since: datetime | None = None
    routing_event: str | None = None

    @property
    def last_change(self) -> datetime:
        """The newer of the two change times (for sorting)."""
        times = [t for t in (self.presence_since, self.routing_since) if t is not None]
        return max(times) if times else datetime.min.replace(tzinfo=UTC)

    def presence_text(self) -> str:
        if self.presence is None:
            return "-"
        if self.presence_label and self.presence_label.upper().replace(" ", "_") != self.presence:
            return f"{self.presence} ({self.presence_label})"
        return self.presence


@dataclass
class TailView:
    """The sans-I/O state of ``tail``: agents' rows, applied records, counts.

    ``users`` (when not empty) restricts the view to those agents.
    """

    users: frozenset[str] = frozenset()
    rows: dict[str, AgentRow] = field(default_factory=dict)
    changes: int = 0

    def wanted(self, user_id: str) -> bool:
        return not self.users or user_id in self.users

    def load_state(self, user_id: str, value: bytes | None) -> None:
        """Apply one agent-state record: ``None`` is a tombstone (the agent left), a bad value is ignored."""
        if not self.wanted(user_id):
            return
        if value is None:
            self.rows.pop(user_id, None)
            return
        try:
            state = decode_state(user_id, value)
        except (ValueError, KeyError, TypeError):
            return  # not an agent-state record: the row stays as it was
        row = AgentRow(user_id)
        if state.presence is not None:
            row.presence = state.presence.value.system_presence
            row.presence_label = state.presence.value.presence_label
            row.presence_since = state.presence.changed_at
            row.presence_event = state.presence.event_id
        if state.routing is not None:
            row.routing = state.routing.value.status
            row.routing_since = state.routing.changed_at
            row.routing_event = state.routing.event_id
        self.rows[user_id] = row

    def apply_event(self, value: bytes) -> str | None:
        """Apply one event record; returns its change line, or None when it changed nothing."""
        doc = orjson.loads(value)
        user_id = doc.get("userId")
        schema = doc.get("schema")
        if not isinstance(user_id, str) or not self.wanted(user_id):
            return None
        changed_at = _parse_time(doc.get("changedAt"))
        event = doc.get("eventId")
        row = self.rows.get(user_id)
        if row is None:
            row = self.rows[user_id] = AgentRow(user_id)
        if schema == PRESENCE_SCHEMA:
            if _not_newer(changed_at, event, row.presence_since, row.presence_event):
                return None
            row.presence = doc.get("systemPresence")
            row.presence_label = doc.get("presenceLabel")
            row.presence_since = changed_at
            row.presence_event = event
            what = f"presence {row.presence_text()}"
        elif schema == ROUTING_SCHEMA:
            if _not_newer(changed_at, event, row.routing_since, row.routing_event):
                return None
            row.routing = doc.get("status")
            row.routing_since = changed_at
            row.routing_event = event
            what = f"routing {row.routing}"
        else:
            return None
        self.changes += 1
        stamp = doc.get("changedAt", "?")
        return f"change {stamp} {user_id} {what} [{doc.get('origin', '?')}]"

    def presence_counts(self) -> Counter[str]:
        return Counter(r.presence or "-" for r in self.rows.values())

    def routing_counts(self) -> Counter[str]:
        return Counter(r.routing or "-" for r in self.rows.values())

    def counts_line(self) -> str:
        """``counts agents=N changes=M | AVAILABLE=… | IDLE=…``."""
        presence = " ".join(f"{k}={v}" for k, v in sorted(self.presence_counts().items()))
        routing = " ".join(f"{k}={v}" for k, v in sorted(self.routing_counts().items()))
        return f"counts agents={len(self.rows)} changes={self.changes} | {presence} | {routing}"

    def state_lines(self) -> list[str]:
        """One ``state`` line per agent, sorted by agent id."""
        return [
            f"state {r.user_id} presence={r.presence or '-'} routing={r.routing or '-'} "
            f"since={_iso(r.last_change) if r.presence_since or r.routing_since else '-'}"
            for r in sorted(self.rows.values(), key=lambda r: r.user_id)
        ]

    def table(self, now: datetime, width: int, height: int, title: str) -> list[str]:
        """The terminal table as lines (most recently changed agents first)."""
        lines = [title[:width]]
        presence = self.presence_counts()
        routing = self.routing_counts()
        lines.append(("presence: " + "  ".join(f"{k} {v}" for k, v in presence.most_common()))[:width])
        lines.append(("routing:  " + "  ".join(f"{k} {v}" for k, v in routing.most_common()))[:width])
        header = (
            f"{'AGENT':<{AGENT_WIDTH}} {'PRESENCE':<{STATE_WIDTH}} {'FOR':>7}  "
            f"{'ROUTING':<{STATE_WIDTH - 8}} {'FOR':>7}"
        )
        lines.append(header[:width])
        room = max(1, height - TABLE_CHROME_ROWS)
        ordered = sorted(self.rows.values(), key=lambda r: r.last_change, reverse=True)
        for row in ordered[:room]:
            p_age = format_age((now - row.presence_since).total_seconds()) if row.presence_since else "-"
            r_age = format_age((now - row.routing_since).total_seconds()) if row.routing_since else "-"
            line = (
                f"{row.user_id:<{AGENT_WIDTH}} {row.presence_text()[:STATE_WIDTH]:<{STATE_WIDTH}} "
                f"{p_age:>7}  {(row.routing or '-'):<{STATE_WIDTH - 8}} {r_age:>7}"
            )
            lines.append(line[:width])
        if len(ordered) > room:
            lines.append(f"… and {len(ordered) - room} more agents")
        return lines


def _not_newer(
    changed_at: datetime | None, event: object, since: datetime | None, known_event: str | None
) -> bool:
    """True when an event is already reflected (same id) or older than what the row holds."""
    if event is not None and event == known_event:
        return True
    return changed_at is not None and since is not None and changed_at < since


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# ----------------------------------------------------------------------------- Kafka side


def _consumer_config(bootstrap_config: dict[str, str]) -> dict[str, Any]:
    return {
        **bootstrap_config,
        "group.id": TAIL_GROUP,  # required by librdkafka; never joined (assign only)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }


def _event_starts(consumer: Any, topics: Sequence[str]) -> list[Any]:
    """Every partition of the event topics at its current high watermark (taken before the state)."""
    from confluent_kafka import TopicPartition  # noqa: PLC0415 - keeps --help fast

    starts = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise SystemExit(f"tail: topic {topic} is not available")
        for partition in metadata.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            starts.append(TopicPartition(topic, partition, high))
    return starts


def _load_state_topic(kafka_config: dict[str, str], topic: str, view: TailView) -> None:
    """Read the compacted state topic (read_committed) to its end into ``view``."""
    from confluent_kafka import Consumer  # noqa: PLC0415 - keeps --help fast

    from bridge.errors import SinkError  # noqa: PLC0415
    from bridge.kafka.compacted import read_to_end, reader_config  # noqa: PLC0415

    def load(msg: Any) -> None:
        key = msg.key()
        if key is not None:
            view.load_state(key.decode(), msg.value())

    try:
        read_to_end(Consumer, reader_config(kafka_config, TAIL_GROUP), topic, load)
    except SinkError as exc:
        raise SystemExit(f"tail: {exc}") from None


def run_tail(
    *,
    kafka_config: dict[str, str],
    state_topic: str,
    event_topics: Sequence[str],
    users: Iterable[str] = (),
    seconds: float | None = None,
    out: TextIO = sys.stdout,
    tty: bool | None = None,
    refresh_s: float = DEFAULT_REFRESH_S,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Load the state, then follow the events until Ctrl-C or ``seconds``; returns the exit code."""
    from confluent_kafka import Consumer, KafkaException  # noqa: PLC0415 - keeps --help fast

    interactive = out.isatty() if tty is None else tty
    view = TailView(users=frozenset(users))
    config = _consumer_config(kafka_config)
    events: Any = Consumer(config)
    try:
        starts = _event_starts(events, event_topics)
        _load_state_topic(kafka_config, state_topic, view)
        if not interactive:
            for line in view.state_lines():
                print(line, file=out)
            print(f"tail: {len(view.rows)} agents loaded from {state_topic}", file=out, flush=True)
        events.assign(starts)
        title = f"presence-bridge tail — {state_topic} + {', '.join(event_topics)} (Ctrl-C to stop)"
        deadline = None if seconds is None else clock() + seconds
        next_draw = 0.0
        if interactive:
            out.write(HIDE_CURSOR)
        try:
            while deadline is None or clock() < deadline:
                for msg in events.consume(num_messages=1000, timeout=POLL_S):
                    if msg.error() is not None:
                        if msg.error().fatal():
                            raise KafkaException(msg.error())
                        continue
                    value = msg.value()
                    if value is None:
                        continue
                    changed = view.apply_event(value)
                    if changed is not None and not interactive:
                        print(changed, file=out, flush=True)
                if interactive and clock() >= next_draw:
                    width, height = shutil.get_terminal_size(FALLBACK_TERMINAL)
                    frame = view.table(datetime.now(UTC), width, height, title)
                    out.write(CLEAR_SCREEN + "\n".join(frame) + "\n")
                    out.flush()
                    next_draw = clock() + refresh_s
        except KeyboardInterrupt:
            pass
        finally:
            if interactive:
                out.write(SHOW_CURSOR)
        print(view.counts_line(), file=out, flush=True)
        return 0
    finally:
        events.close()


# ----------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    """Add ``tail`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "tail",
        help="live table of agents' current state, read from Kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--topic",
        action="append",
        default=None,
        help="event topic to follow (repeatable; default: the presence and routing-status topics "
        "from BRIDGE_TOPIC_PRESENCE / BRIDGE_TOPIC_ROUTING_STATUS)",
    )
    p.add_argument(
        "--state-topic", default=None, help="compacted state topic (default: BRIDGE_TOPIC_AGENT_STATE)"
    )
    p.add_argument("--user", action="append", default=None, help="only this agent (repeatable)")
    p.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap servers (default: BRIDGE_KAFKA_BOOTSTRAP_SERVERS)"
    )
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--plain", action="store_true", help="one line per change even on a terminal")
    p.set_defaults(handler=_tail)


def _tail(args: argparse.Namespace) -> int:
    from bridge.errors import BridgeError  # noqa: PLC0415
    from bridge.settings import load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if args.bootstrap:
        overrides["kafka_bootstrap_servers"] = args.bootstrap
    try:
        settings = load_settings(**overrides)
    except BridgeError as exc:
        print(f"presence-bridge: {exc}", file=sys.stderr)
        return 2
    topics = args.topic or [settings.topic_presence, settings.topic_routing_status]
    try:
        return run_tail(
            kafka_config=settings.kafka_config(),
            state_topic=args.state_topic or settings.topic_agent_state,
            event_topics=topics,
            users=args.user or (),
            seconds=args.seconds,
            tty=False if args.plain else None,
        )
    except KeyboardInterrupt:
        return 0
