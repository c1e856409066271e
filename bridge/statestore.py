"""Read the compacted agent-state topic back into memory (takeover and start).

:func:`load_states` reads ``topic_agent_state`` with
``isolation.level=read_committed`` from the beginning of every partition to its
end as of the call. The end is the high watermark (``get_watermark_offsets``
of a read_uncommitted client), not the last stable offset: a transaction whose
commit has returned may still be writing its commit markers for a few
milliseconds, and its records must be loaded. A partition is done when the
read_committed position reaches that end (a message at ``end - 1`` or an
end-of-partition event at ``end`` or later; transaction markers occupy offsets
no message carries). Transactions still open at the call (other shards write
the same topic every ~100 ms) delay the load until they commit or abort.
Call it after the shard's :meth:`~bridge.sink.ShardSink.start`: fencing
completes or aborts the previous owner's open transaction.

Partitions are ``assign``-ed, never subscribed: no consumer group is joined
and no offset is committed.

The latest record of each key wins; a tombstone (null value) deletes the
agent. Values are the :class:`~bridge.records.AgentStateRecord` encoding
written by :func:`~bridge.records.encode_state`; a value that cannot be parsed
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
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bridge.acl import reader_authorization_error
from bridge.errors import SinkError
from bridge.kafka.config import FETCH_WAIT_MAX_MS, ConsumerFactory
from bridge.model import AgentState, PresenceValue, RoutingValue, VersionedPresence, VersionedRouting
from bridge.settings import Settings

__all__ = [
    "BRIDGE_ID_HEADER",
    "DEFAULT_LOAD_TIMEOUT_S",
    "ConsumerFactory",
    "ShardLoad",
    "load_shard_states",
    "load_states",
    "parse_state",
    "written_by",
    "written_by_other_fleets",
]

log = logging.getLogger(__name__)

#: Loading 20,000 agents takes about a second; this bounds a stuck broker.
DEFAULT_LOAD_TIMEOUT_S = 60.0
#: Messages per consume() call.
CONSUME_BATCH = 5_000
CONSUME_POLL_S = 0.5
WATERMARK_RETRY_S = 0.1
#: librdkafka does not flag these retriable on a watermark query, but they pass.
_NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)

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
    wanted = frozenset(user_ids)

    def owner(user_id: str, value: bytes | None, headers: Any) -> None:
        if user_id in wanted:
            return
        written_here = False
        if value is not None and _header(headers, BRIDGE_ID_HEADER) == own:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                written_here = orjson.loads(value).get("shard") == shard
        mine[user_id] = written_here

    states = load_states(settings, user_ids, consumer_factory, timeout_s=timeout_s, observe=owner)
    return ShardLoad(states, sorted(u for u, here in mine.items() if here))


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
    topic = settings.topic_agent_state
    wanted = None if user_ids is None else frozenset(user_ids)
    config = {
        **settings.kafka_config(),
        "group.id": f"{settings.id}-statestore",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
    }
    deadline = time.monotonic() + timeout_s
    try:
        ends, assignment = _bounds(
            consumer_factory({**config, "isolation.level": "read_uncommitted"}), topic, timeout_s
        )
    except KafkaException as exc:
        raise _read_error(exc.args[0], topic, str(config["group.id"])) from None
    states: dict[str, AgentState] = {}
    if not assignment:
        return states
    consumer = consumer_factory(config)
    try:
        consumer.assign(assignment)
        while ends:
            if time.monotonic() > deadline:
                raise SinkError(f"reading {topic} did not finish within {timeout_s} s")
            for msg in consumer.consume(num_messages=CONSUME_BATCH, timeout=CONSUME_POLL_S):
                err = msg.error()
                partition = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= ends.get(partition, 0):
                            ends.pop(partition, None)
                        continue
                    raise KafkaException(err)
                end = ends.get(partition)
                if end is None:  # already complete: a record newer than the call
                    continue
                if msg.offset() >= end - 1:
                    ends.pop(partition, None)
                if msg.offset() >= end:
                    continue
                key = msg.key()
                if key is None:
                    continue
                user_id = key.decode()
                if observe is not None:
                    observe(user_id, msg.value(), msg.headers())
                if wanted is not None and user_id not in wanted:
                    continue
                if bridge_id is not None and not written_by(msg.headers(), bridge_id):
                    continue
                value = msg.value()
                if value is None:
                    states.pop(user_id, None)
                    continue
                try:
                    states[user_id] = parse_state(user_id, value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "skipping unreadable state of %s at offset %d: %s", user_id, msg.offset(), exc
                    )
        return states
    except KafkaException as exc:
        raise _read_error(exc.args[0], topic, str(config["group.id"])) from None
    finally:
        consumer.close()


def _bounds(consumer: Any, topic: str, timeout_s: float) -> tuple[dict[int, int], list[TopicPartition]]:
    """High watermarks of the non-empty partitions, and where to start reading them."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise SinkError(f"state topic {topic} is not available")
        ends: dict[int, int] = {}
        assignment = []
        for partition in metadata.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, partition), timeout_s)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        return ends, assignment
    finally:
        consumer.close()


def _watermarks(consumer: Any, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """Low and high watermark; retried while the error is retriable.

    A just-created topic's partitions can answer NOT_LEADER_FOR_PARTITION for
    a moment after the metadata already names a leader.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _NOT_READY) or time.monotonic() > deadline:
                raise
            time.sleep(WATERMARK_RETRY_S)


def parse_state(user_id: str, value: bytes) -> AgentState:
    """An :class:`AgentState` from an agent-state record value (raises ValueError/KeyError/TypeError)."""
    doc = orjson.loads(value)
    presence = doc["presence"]
    routing = doc["routingStatus"]
    state = AgentState(user_id)
    if presence is not None:
        state.presence = VersionedPresence(
            PresenceValue(
                system_presence=presence["systemPresence"],
                presence_definition_id=presence["presenceDefinitionId"],
                message=presence["message"],
                presence_label=presence["presenceLabel"],
            ),
            _time(presence["changedAt"]),
            presence["eventId"],
        )
    if routing is not None:
        state.routing = VersionedRouting(
            RoutingValue(routing["status"]), _time(routing["changedAt"]), routing["eventId"]
        )
    return state


def _time(text: str) -> datetime:
    # Python 3.11's fromisoformat reads the trailing "Z" that format_time writes.
    return datetime.fromisoformat(text)


def _read_error(err: KafkaError, topic: str, group: str) -> SinkError:
    """A missing READ ACL (topic or group) named as such; anything else a plain :class:`SinkError`."""
    forbidden = reader_authorization_error(err, topic, group)
    return forbidden if forbidden is not None else SinkError(f"cannot read {topic}: {err.str()}")
