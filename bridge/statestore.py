"""Read the compacted agent-state topic back into memory (takeover and start).

:func:`load_states` reads ``topic_agent_state`` from the beginning of every
partition to its end as of the call, ``read_committed``, with
:func:`bridge.kafka.compacted.read_to_end` (the end is the high watermark:
records of a transaction whose commit has returned are loaded; transactions
still open at the call, other shards write the same topic every ~100 ms,
delay the load until they commit or abort). Call it after the shard's
:meth:`~bridge.sink.ShardSink.start`: fencing completes or aborts the
previous owner's open transaction. No consumer group is joined and no
offset is committed.

The latest record of each key wins; a tombstone (null value) deletes the
agent. Values are the :class:`~bridge.records.AgentStateRecord` encoding
written by :func:`~bridge.records.encode_state`, read by
:func:`bridge.kafka.state.decode_state`; a value that cannot be parsed
is logged and skipped (the next reconciliation repairs that agent).

With ``bridge_id``, only the records of that fleet are applied (the
``bridge-id`` header; a record without the header is taken as the fleet's
own, as records written before the header existed carry none): several
fleets may share the state topic, each auditing only its own agents.

:func:`load_shard_states` reads the same way and also names the shard's
*orphans*: agents whose latest record is a state this fleet wrote for this
shard (``bridge-id`` header equal to ``settings.id`` and ``shard`` field equal
to the shard) but that are not among the given members. A record without the
``bridge-id`` header, or another fleet's, never makes an orphan.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer

from bridge.kafka.compacted import ConsumerFactory, read_to_end, reader_config
from bridge.kafka.state import decode_state
from bridge.model import AgentState
from bridge.settings import Settings

__all__ = [
    "BRIDGE_ID_HEADER",
    "DEFAULT_LOAD_TIMEOUT_S",
    "ConsumerFactory",
    "ShardLoad",
    "load_shard_states",
    "load_states",
    "written_by",
    "written_by_other_fleets",
]

log = logging.getLogger(__name__)

#: Loading 20,000 agents takes about a second; this bounds a stuck broker.
DEFAULT_LOAD_TIMEOUT_S = 60.0

#: The header naming the fleet (``settings.id``) that wrote a record.
BRIDGE_ID_HEADER = "bridge-id"


def written_by(headers: list[tuple[str, bytes | None]] | None, bridge_id: str) -> bool:
    """True when a record with ``headers`` belongs to fleet ``bridge_id`` (no header: yes)."""
    for name, value in headers or ():
        if name == BRIDGE_ID_HEADER:
            return value is not None and value.decode(errors="replace") == bridge_id
    return True


@dataclass(frozen=True)
class ShardLoad:
    """What :func:`load_shard_states` found: the members' states and the shard's orphans."""

    states: dict[str, AgentState]
    orphans: list[str]
    fleet_since: datetime | None = None
    """The oldest ``updatedAt`` of this fleet's latest states of agents other than the members."""


def load_shard_states(
    settings: Settings,
    user_ids: Collection[str],
    shard: int,
    consumer_factory: ConsumerFactory = Consumer,
    *,
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
) -> ShardLoad:
    """The members' last committed states and the shard's orphans (see the module docstring)."""
    own = settings.id.encode()
    mine: dict[str, bool] = {}
    written_at: dict[str, datetime | None] = {}
    wanted = frozenset(user_ids)

    def owner(user_id: str, value: bytes | None, headers: Any) -> None:
        if user_id in wanted:
            return
        written_here, at = False, None
        if value is not None and _header(headers, BRIDGE_ID_HEADER) == own:
            with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                doc = orjson.loads(value)
                written_here = doc.get("shard") == shard
                at = datetime.fromisoformat(doc["updatedAt"])
        mine[user_id] = written_here
        written_at[user_id] = at

    states = load_states(settings, user_ids, consumer_factory, timeout_s=timeout_s, observe=owner)
    since = min((at for at in written_at.values() if at is not None), default=None)
    return ShardLoad(states, sorted(u for u, here in mine.items() if here), since)


def written_by_other_fleets(
    settings: Settings,
    user_ids: Collection[str],
    consumer_factory: ConsumerFactory = Consumer,
    *,
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
) -> set[str]:
    """The given agents whose latest record carries another fleet's ``bridge-id`` (never tombstoned).

    A record without the header (written before it existed) counts as this fleet's.
    """
    own = settings.id.encode()
    wanted = frozenset(user_ids)
    foreign: dict[str, bool] = {}

    def writer(user_id: str, _value: bytes | None, headers: Any) -> None:
        if user_id in wanted:
            header = _header(headers, BRIDGE_ID_HEADER)
            foreign[user_id] = header is not None and header != own

    load_states(settings, [], consumer_factory, timeout_s=timeout_s, observe=writer)
    return {u for u, other in foreign.items() if other}


def _header(headers: Any, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def load_states(
    settings: Settings,
    user_ids: Collection[str] | None = None,
    consumer_factory: ConsumerFactory = Consumer,
    *,
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    bridge_id: str | None = None,
    observe: Callable[[str, bytes | None, Any], None] | None = None,
) -> dict[str, AgentState]:
    """user id → last committed state, for every agent (or only ``user_ids``) in the state topic.

    ``observe`` is called with (user id, value, headers) for every record
    read, in topic order, whatever ``user_ids`` is. Raises
    :class:`SinkError` when the topic is missing or Kafka fails, or the read
    does not finish within ``timeout_s``.
    """
    wanted = None if user_ids is None else frozenset(user_ids)
    states: dict[str, AgentState] = {}

    def apply(msg: Any) -> None:
        key = msg.key()
        if key is None:
            return
        user_id = key.decode()
        if observe is not None:
            observe(user_id, msg.value(), msg.headers())
        if wanted is not None and user_id not in wanted:
            return
        if bridge_id is not None and not written_by(msg.headers(), bridge_id):
            return
        value = msg.value()
        if value is None:
            states.pop(user_id, None)
            return
        try:
            states[user_id] = decode_state(user_id, value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable state of %s at offset %d: %s", user_id, msg.offset(), exc)

    read_to_end(
        consumer_factory,
        reader_config(settings.kafka_config(), f"{settings.id}-statestore"),
        settings.topic_agent_state,
        apply,
        timeout_s=timeout_s,
        kind="state",
    )
    return states
