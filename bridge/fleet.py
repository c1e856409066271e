"""Fleet membership and the partition map, through Kafka itself (README "Architecture", control path).

::

    control topic  settings.topic_shard_map  (compacted, one partition per shard)
      key    shard-<p>
      value  {"schema": "bridge.shard-map.v1", "epoch": n, "shard": p,
              "clientIndex": i, "users": [...], "writtenAt": "<ISO-8601>",
              "bridgeId": "<settings.id>"}
      header bridge-id: <settings.id>

The control topic belongs to one fleet (its name derives from ``BRIDGE_ID``
by default). A record whose ``bridgeId`` is another fleet's is never
applied: the workers and the coordinator log an ERROR, count
``bridge_foreign_map_records_total`` and report not ready, and the
coordinator writes nothing while the topic holds another fleet's records
(first come, first served: the fleet that was there keeps working). Records
without ``bridgeId`` (written before it existed) count as this fleet's and
are rewritten with it at the next refresh.

Every worker joins the consumer group ``settings.id`` on the control topic.
Kafka's group protocol decides which worker owns which partitions, i.e.
which shards; workers beyond the shard count are hot standbys.

Membership (:class:`Membership`): one confluent-kafka consumer in its own
thread runs the poll loop and the rebalance callbacks; every event reaches
asyncio through ``loop.call_soon_threadsafe``. The rebalance protocol is
cooperative (classic ``cooperative-sticky`` by default, or KIP-848's
``group.protocol=consumer``): only the partitions that move are revoked.

- on assignment the partition is read from the beginning (no offsets are
  ever committed; the topic is compacted and tiny) up to its end
  (``_PARTITION_EOF``, read_committed); its latest record is the shard's
  member list and OAuth client, and the shard starts with them;
- later records change the member list in place
  (:meth:`~bridge.shard.Shard.set_users`: POST/PUT, no reconnect); a record
  with a lower epoch than one already seen for that partition is ignored;
- on revocation the shard is stopped gracefully (drain, commit) *before*
  the callback returns, so the next owner starts from committed state;
- on loss (``on_lost``: the session expired while this process was frozen
  or cut off, or ``max.poll.interval.ms`` passed) the shards are stopped
  without waiting: another worker owns them already and has fenced their
  sinks. librdkafka then rejoins the group as a new, normal member;
- closing the consumer on shutdown leaves the group at once, so a rolling
  restart never waits out a session timeout.

The coordinator (:class:`Coordinator`) is whoever owns partition 0. On
gaining it, at start and every ``roster_refresh_s`` it lists the roster,
computes the new map with :func:`bridge.assign.assign` from the current one
(read back from the control topic), adds partitions when more shards are
needed, and writes each changed shard's record with a new map epoch. Its
writes are fenced too: a transactional producer with ``transactional.id``
``<id>-coordinator`` whose ``init_transactions()`` on gaining partition 0
fences any previous (possibly frozen, "zombie") coordinator.

A coordinator fenced while this worker still owns partition 0 (or gets it
back after a lost session) coordinates again after
:func:`coordinator_fenced_retry_s`; /readyz fails meanwhile. A shard whose
slot has had no running, connected shard for :data:`SHARD_RESTART_DEADLINE_S`
fails :meth:`Fleet.liveness` (/healthz). A partition given back after a lost
session keeps its running shard, unless that shard was fenced meanwhile:
then a new one starts.

Failure detection bounds takeover: with the classic protocol the client's
``session.timeout.ms`` (``BRIDGE_KAFKA_SESSION_TIMEOUT_MS``) must lie within
the broker's ``group.min.session.timeout.ms`` (6 s default) and
``group.max.session.timeout.ms``; with KIP-848 the broker's
``group.consumer.session.timeout.ms`` rules (45 s minimum by default).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from bridge import log, metrics
from bridge.acl import authorization_error, reader_authorization_error
from bridge.assign import assign, client_for_shard, shard_budget
from bridge.errors import AuthorizationError, ConfigError, DeliveryError, FencedError, SinkError
from bridge.rosterguard import RosterGuard
from bridge.settings import Settings
from bridge.shard import Shard
from bridge.sink import Action, classify

__all__ = [
    "COORDINATOR_FENCED_SESSIONS",
    "COORDINATOR_SUFFIX",
    "MAP_SCHEMA",
    "SHARD_RESTART_DEADLINE_S",
    "ActiveCheck",
    "AdminFactory",
    "ConsumerFactory",
    "Coordinator",
    "Fleet",
    "MapRecord",
    "Membership",
    "ProducerFactory",
    "ShardFactory",
    "consumer_config",
    "coordinator_fenced_retry_s",
    "coordinator_transactional_id",
    "read_map",
    "shard_key",
]

logger = logging.getLogger(__name__)

MAP_SCHEMA = "bridge.shard-map.v1"
KEY_PREFIX = "shard-"
COORDINATOR_SUFFIX = "coordinator"
LIBRDKAFKA_LOGGER = "bridge.fleet.librdkafka"
#: How long one poll of the membership consumer blocks (bounds shutdown latency).
POLL_S = 0.2
#: New partitions of the control topic are noticed within this (the coordinator's own
#: worker asks at once; the group leader re-reads metadata before every assignment anyway).
METADATA_REFRESH_MS = 5_000
#: Bounds a rebalance waiting for a frozen member (classic: the rebalance timeout).
#: A revocation callback blocks for at most a shard's drain, well below this.
MAX_POLL_INTERVAL_MS = 30_000
#: Added to the drain budget when a revocation waits for its shards to stop.
STOP_MARGIN_S = 2.0
#: After the coordinator adds partitions, readiness waits for the next assignment this long at most.
REBALANCE_PENDING_MAX_S = 30.0
#: Shards of partitions lost with the session keep running this long at most
#: while the group has not answered (a broker outage the sink rides out).
LOST_GRACE_S = 60.0
#: A shard that ended by itself (neither stopped nor fenced) is started again after this.
SHARD_RESTART_DELAY_S = 1.0
#: Session timeouts after which a fenced coordinator still owning partition 0 restarts.
COORDINATOR_FENCED_SESSIONS = 2
#: A mapped shard not running for this long (restarts failing) fails /healthz.
SHARD_RESTART_DEADLINE_S = 60.0
#: A failed roster refresh (Genesys or Kafka trouble) is retried after this.
COORDINATOR_RETRY_S = 5.0
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_ADMIN_TIMEOUT_S = 30.0
#: Timeout of one blocking transactional call of the coordinator's producer.
CALL_TIMEOUT_S = 10.0
COMMIT_RETRIES = 5
COORDINATOR_TXN_TIMEOUT_MS = 60_000
#: Waiting for the consumer thread to leave the group on shutdown.
CLOSE_TIMEOUT_S = 5.0
FETCH_WAIT_MAX_MS = 50

ConsumerFactory = Callable[[dict[str, Any]], Any]
ProducerFactory = Callable[[dict[str, Any]], Any]
AdminFactory = Callable[[dict[str, Any]], Any]
#: (shard id, users, OAuth client index) → a Shard not yet running.
ShardFactory = Callable[[int, Sequence[str], int], Shard]
RosterSource = Callable[[], Awaitable[list[str]]]
#: Which of these agents are active now (asked for the mapped agents a listing left out).
ActiveCheck = Callable[[Collection[str]], Awaitable[set[str]]]


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shard_key(shard: int) -> str:
    """The control record's key, ``shard-<p>``."""
    return f"{KEY_PREFIX}{shard}"


def coordinator_transactional_id(settings: Settings) -> str:
    """``<bridge-id>-coordinator``: one writer of the map at a time, zombies fenced."""
    return f"{settings.id}-{COORDINATOR_SUFFIX}"


@dataclass(frozen=True)
class MapRecord:
    """One shard's entry of the partition map (the latest record of partition ``shard``)."""

    shard: int
    epoch: int
    client_index: int
    users: tuple[str, ...]
    written_at: str = field(default_factory=_iso_now)
    #: The fleet that wrote it (``settings.id``); None on records older than the field.
    bridge_id: str | None = None

    @property
    def key(self) -> bytes:
        return shard_key(self.shard).encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "schema": MAP_SCHEMA,
                "epoch": self.epoch,
                "shard": self.shard,
                "clientIndex": self.client_index,
                "users": list(self.users),
                "writtenAt": self.written_at,
                "bridgeId": self.bridge_id,
            }
        )

    def foreign_to(self, bridge_id: str) -> bool:
        """Written by another fleet (records without a bridge id count as ours)."""
        return self.bridge_id is not None and self.bridge_id != bridge_id

    @classmethod
    def decode(cls, value: bytes) -> MapRecord:
        """Parse a control record; raises ``ValueError`` when it is not a v1 map record."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != MAP_SCHEMA:
            raise ValueError("not a bridge.shard-map.v1 record")
        users = data.get("users")
        try:
            if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
                raise ValueError("users must be a list of strings")
            return cls(
                shard=int(data["shard"]),
                epoch=int(data["epoch"]),
                client_index=int(data.get("clientIndex", 0)),
                users=tuple(users),
                written_at=str(data.get("writtenAt", "")),
                bridge_id=str(data["bridgeId"]) if data.get("bridgeId") is not None else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete map record: {exc}") from None


def consumer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the membership consumer (group ``settings.id``)."""
    conf: dict[str, Any] = {
        **settings.kafka_config(),
        "group.id": settings.id,
        "client.id": f"{settings.id}-fleet",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        **settings.kafka_passthrough(),  # last: may retune anything the bridge does not own
    }
    if settings.kafka_group_protocol == "consumer":
        # KIP-848: the broker assigns and its group.consumer.* settings rule the session.
        conf["group.protocol"] = "consumer"
    else:
        conf["partition.assignment.strategy"] = "cooperative-sticky"
        conf["session.timeout.ms"] = settings.kafka_session_timeout_ms
        conf["heartbeat.interval.ms"] = settings.kafka_heartbeat_interval_ms
    return conf


def read_map(
    settings: Settings,
    consumer_factory: ConsumerFactory = Consumer,
    *,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    foreign: list[MapRecord] | None = None,
) -> tuple[int, dict[int, MapRecord]]:
    """(partition count, partition → latest committed map record) of the control topic.

    Reads every partition from the beginning to its end (read_committed, no
    group joined). Per partition the record with the highest epoch wins (the
    latest on ties); records that do not parse are logged and skipped.
    Records another fleet wrote are never returned: each is logged as an
    ERROR, counted, and appended to ``foreign`` when given.
    Raises :class:`SinkError` when the topic is missing or Kafka fails.
    """
    topic = settings.topic_shard_map
    consumer = consumer_factory(
        {
            **settings.kafka_config(),
            "group.id": f"{settings.id}-map-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if md is None or md.error is not None:
            raise SinkError(f"control topic {topic} is not available")
        partitions = sorted(md.partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
        remaining = {p for p, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(remaining)])
        records: dict[int, MapRecord] = {}
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise SinkError(f"reading {topic} did not finish within {timeout_s:.0f} s")
            msg = consumer.poll(POLL_S)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                    continue
                raise KafkaException(err)
            p = msg.partition()
            if msg.value() is not None:
                try:
                    record = MapRecord.decode(msg.value())
                except ValueError as exc:
                    logger.warning("skipping control record at %s[%d]@%d: %s", topic, p, msg.offset(), exc)
                else:
                    if record.foreign_to(settings.id):
                        _log_foreign(record, settings, p)
                        if foreign is not None:
                            foreign.append(record)
                    elif p not in records or record.epoch >= records[p].epoch:
                        records[p] = record
            if msg.offset() + 1 >= ends[p]:
                remaining.discard(p)
        return len(partitions), records
    except KafkaException as exc:
        forbidden = reader_authorization_error(exc.args[0], topic, f"{settings.id}-map-reader")
        if forbidden is not None:
            raise forbidden from None
        raise SinkError(f"cannot read the partition map: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def coordinator_fenced_retry_s(settings: Settings) -> float:
    """After its coordinator was fenced, a worker still owning partition 0 this long coordinates again.

    Two session timeouts: a worker that was fenced because it was frozen
    learns of its lost partitions well within that.
    """
    return COORDINATOR_FENCED_SESSIONS * settings.kafka_session_timeout_ms / 1000


def _log_foreign(record: MapRecord, settings: Settings, partition: int) -> None:
    metrics.FOREIGN_MAP_RECORDS.inc()
    logger.error(
        "control topic %s partition %d holds a map record of fleet %r (epoch %d), not of %r: "
        "never applied; give every fleet its own BRIDGE_ID and control topic",
        settings.topic_shard_map,
        partition,
        record.bridge_id,
        record.epoch,
        settings.id,
    )


# --------------------------------------------------------------------------- coordinator


def _clear_roster_gauges() -> None:
    """A worker that stops coordinating reports no roster: its last figures would go stale.

    The alerts and the dashboard take ``max`` over the fleet, so a former
    coordinator still exporting its last ``bridge_roster_unassigned_users``
    would keep ``BridgeRosterUnassigned`` firing after the roster fits again.
    """
    metrics.ROSTER_USERS.set(0)
    metrics.ROSTER_UNASSIGNED.set(0)


class Coordinator:
    """Keeps the partition map in step with the roster while this worker owns partition 0.

    :meth:`run` fences any previous coordinator (``init_transactions()`` on
    ``<id>-coordinator``), then refreshes at once and every
    ``roster_refresh_s``. A refresh that fails on Genesys or Kafka is retried
    after :data:`COORDINATOR_RETRY_S`; a fenced producer ends :meth:`run` with
    :class:`FencedError` (another worker coordinates now).
    """

    def __init__(
        self,
        settings: Settings,
        roster: RosterSource,
        *,
        clients: int,
        on_partitions_added: Callable[[int], None] | None = None,
        still_active: ActiveCheck | None = None,
        producer_factory: ProducerFactory = Producer,
        admin_factory: AdminFactory = AdminClient,
        consumer_factory: ConsumerFactory = Consumer,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._roster = roster
        self._clients = clients
        self._on_partitions_added = on_partitions_added
        self._still_active = still_active
        self._producer_factory = producer_factory
        self._admin_factory = admin_factory
        self._consumer_factory = consumer_factory
        self._sleep = sleep
        self._producer: Any = None
        self.refreshes = 0
        self.last_epoch: int | None = None
        self.last_unassigned = 0
        #: Set while the control topic holds another fleet's records (nothing is written then).
        self.conflict: str | None = None
        self._guard = RosterGuard()

    async def run(self) -> None:
        """Fence the previous coordinator, then refresh until cancelled."""
        s = self._settings
        try:
            while True:
                try:
                    if self._producer is None:
                        self._producer = await asyncio.to_thread(self._start_producer)
                    await self.refresh()
                except (FencedError, AuthorizationError):
                    raise
                except (SinkError, KafkaException) as exc:
                    logger.warning("roster refresh failed on Kafka (%s); retrying", exc)
                    self._producer = None
                    await self._sleep(COORDINATOR_RETRY_S)
                    continue
                except ConfigError as exc:  # another fleet's records: never overwrite them
                    logger.error("%s; retrying", exc)
                    await self._sleep(COORDINATOR_RETRY_S)
                    continue
                except Exception as exc:  # Genesys trouble: the map stays as it is
                    logger.warning("roster refresh failed (%s); retrying", exc)
                    await self._sleep(COORDINATOR_RETRY_S)
                    continue
                await self._sleep(s.roster_refresh_s)
        finally:
            self._producer = None

    def _start_producer(self) -> Any:
        s = self._settings
        producer = self._producer_factory(
            {
                **s.kafka_config(),
                "client.id": f"{s.id}-{COORDINATOR_SUFFIX}",
                "transactional.id": coordinator_transactional_id(s),
                "enable.idempotence": True,
                "acks": "all",
                "transaction.timeout.ms": COORDINATOR_TXN_TIMEOUT_MS,
                "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
                **s.kafka_passthrough(),
            }
        )
        try:
            producer.init_transactions(CALL_TIMEOUT_S * 3)
        except KafkaException as exc:
            raise _map_error(exc.args[0], "init_transactions", coordinator_transactional_id(s)) from None
        logger.info("coordinator: fenced any previous coordinator (%s)", coordinator_transactional_id(s))
        return producer

    async def refresh(self) -> None:
        """List the roster, compute the new map, add partitions, write the changed records."""
        s = self._settings
        roster = await self._roster()
        foreign: list[MapRecord] = []
        partitions, current = await asyncio.to_thread(
            functools.partial(read_map, s, self._consumer_factory, foreign=foreign)
        )
        if foreign:
            fleets = sorted({r.bridge_id or "" for r in foreign})
            self.conflict = f"control topic {s.topic_shard_map} is shared with fleet(s) {fleets}"
            raise ConfigError(f"{self.conflict}; not writing the partition map")
        self.conflict = None
        previous = {p: (current[p].users if p in current else ()) for p in range(partitions)}
        mapped = {u for users in previous.values() for u in users}
        if not self._guard.accept(mapped, roster):
            self.refreshes += 1  # the map is as current as Genesys lets us know
            return
        missing = mapped.difference(roster)
        if missing and self._still_active is not None:
            # Paging shifted by a deletion skips a live agent: only the ones
            # Genesys no longer lists by id have left (and are tombstoned).
            kept = await self._still_active(missing)
            if kept:
                logger.info(
                    "%d of %d agents missing from the roster listing are still active "
                    "(its paging shifted); they keep their shards",
                    len(kept),
                    len(missing),
                )
                roster = [*roster, *sorted(kept)]
        budget = shard_budget(self._clients, s.genesys_max_channels_per_client)
        result = assign(previous, roster, capacity=s.shard_capacity, budget=budget)
        epoch = max((r.epoch for r in current.values()), default=0) + 1
        changed: list[MapRecord] = []
        for p, users in result.shards.items():
            client = client_for_shard(p, s.genesys_max_channels_per_client)
            old = current.get(p)
            if old is None and not users:
                continue
            if old is None or old.users != users or old.client_index != client or old.bridge_id is None:
                changed.append(
                    MapRecord(shard=p, epoch=epoch, client_index=client, users=users, bridge_id=s.id)
                )
        if result.shard_count > partitions:
            await asyncio.to_thread(self._add_partitions, result.shard_count)
            if self._on_partitions_added is not None:
                self._on_partitions_added(result.shard_count)
        if changed:
            await asyncio.to_thread(self._write, changed)
            self.last_epoch = epoch
        metrics.ROSTER_USERS.set(len(set(roster)))
        metrics.ROSTER_UNASSIGNED.set(len(result.unassigned))
        self.last_unassigned = len(result.unassigned)
        if result.unassigned:
            logger.error(
                "%d agents do not fit the channel budget (%d clients x %d shards x %d topics); "
                "add OAuth clients (BRIDGE_GENESYS_EXTRA_CLIENTS)",
                len(result.unassigned),
                self._clients,
                budget // self._clients,
                s.shard_capacity,
            )
        self.refreshes += 1
        logger.info(
            "roster refresh: %d agents on %d shards, %d shard records written (epoch %s)",
            len(set(roster)),
            result.shard_count,
            len(changed),
            epoch if changed else "unchanged",
        )

    def _add_partitions(self, total: int) -> None:
        s = self._settings
        admin = self._admin_factory(s.kafka_config())  # referenced until its futures resolve
        futures = admin.create_partitions(
            [NewPartitions(s.topic_shard_map, total)],
            operation_timeout=DEFAULT_ADMIN_TIMEOUT_S,
            request_timeout=DEFAULT_ADMIN_TIMEOUT_S,
        )
        for fut in futures.values():
            try:
                fut.result(timeout=DEFAULT_ADMIN_TIMEOUT_S)
            except KafkaException as exc:
                forbidden = authorization_error(exc.args[0], "ALTER", f"TOPIC {s.topic_shard_map}")
                if forbidden is not None:
                    raise forbidden from None
                if exc.args[0].code() != KafkaError.INVALID_PARTITIONS:  # already grown by someone
                    raise
        logger.info("control topic %s grown to %d partitions", s.topic_shard_map, total)
        # The producer must know the partitions before it can write to them.
        deadline = time.monotonic() + DEFAULT_ADMIN_TIMEOUT_S
        while time.monotonic() < deadline:
            md = self._producer.list_topics(s.topic_shard_map, timeout=DEFAULT_ADMIN_TIMEOUT_S)
            topic = md.topics.get(s.topic_shard_map)
            if topic is not None and len(topic.partitions) >= total:
                return
            time.sleep(POLL_S)
        raise SinkError(f"{s.topic_shard_map} did not show {total} partitions in time")

    def _write(self, records: list[MapRecord]) -> None:
        producer = self._producer
        topic = self._settings.topic_shard_map
        try:
            producer.begin_transaction()
            for record in records:
                producer.produce(
                    topic,
                    key=record.key,
                    value=record.encode(),
                    partition=record.shard,
                    headers=[("schema", MAP_SCHEMA.encode()), ("bridge-id", self._settings.id.encode())],
                )
            for attempt in range(COMMIT_RETRIES):
                try:
                    producer.commit_transaction(CALL_TIMEOUT_S)
                    return
                except KafkaException as exc:
                    if classify(exc.args[0]) is not Action.RETRY or attempt == COMMIT_RETRIES - 1:
                        raise
        except KafkaException as exc:
            err = exc.args[0]
            action = classify(err)
            if action is Action.ABORT:
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(CALL_TIMEOUT_S)
            raise _map_error(err, "map write", coordinator_transactional_id(self._settings), topic) from None


def _map_error(err: KafkaError, what: str, transactional_id: str, topic: str = "") -> SinkError:
    if err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        return AuthorizationError("WRITE", f"TRANSACTIONAL_ID {transactional_id}", err.name())
    if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and topic:
        return AuthorizationError("WRITE", f"TOPIC {topic}", err.name())
    action = classify(err)
    if action is Action.FENCED:
        metrics.FENCED.inc()
        return FencedError(f"coordinator fenced during {what}: {err.str()}")
    if action is Action.FATAL:
        return DeliveryError(f"coordinator {what} failed: {err.str()}")
    return SinkError(f"coordinator {what} failed: {err.str()}")


# --------------------------------------------------------------------------- membership


@dataclass(frozen=True)
class _Assigned:
    partitions: list[int]


@dataclass(frozen=True)
class _Revoked:
    partitions: list[int]
    lost: bool
    done: concurrent.futures.Future[None] | None


@dataclass(frozen=True)
class _Record:
    partition: int
    offset: int
    record: MapRecord


@dataclass(frozen=True)
class _CaughtUp:
    partition: int


@dataclass(frozen=True)
class _Failed:
    error: str
    forbidden: AuthorizationError | None = None


_Event = _Assigned | _Revoked | _Record | _CaughtUp | _Failed


class Membership:
    """The group consumer in its own thread; events reach asyncio through ``call_soon_threadsafe``.

    A revocation blocks the rebalance callback until the asyncio side
    resolves the event's ``done`` future (shards drained), at most
    ``revoke_wait_s``; a loss (``on_lost``) never waits.
    """

    def __init__(
        self,
        settings: Settings,
        post: Callable[[_Event], None],
        *,
        consumer_factory: ConsumerFactory = Consumer,
        revoke_wait_s: float,
    ) -> None:
        self._settings = settings
        self._topic = settings.topic_shard_map
        self._post_event = post
        self._factory = consumer_factory
        self._revoke_wait_s = revoke_wait_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._refresh = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="fleet-membership", daemon=True)
        self._thread.start()

    def request_metadata_refresh(self) -> None:
        """Ask for fresh metadata now (new partitions → rebalance without waiting for the interval)."""
        self._refresh.set()

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Leave the group (close the consumer) and wait for the thread."""
        self._closing.set()
        if self._ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended), timeout_s)

    # -- consumer thread -----------------------------------------------------------

    def _post(self, event: _Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._post_event, event)

    def _run(self) -> None:
        consumer = None
        try:
            consumer = self._factory(consumer_config(self._settings))
            consumer.subscribe(
                [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self._closing.is_set():
                if self._refresh.is_set():
                    self._refresh.clear()
                    with contextlib.suppress(KafkaException):
                        consumer.list_topics(self._topic, timeout=CALL_TIMEOUT_S)
                msg = consumer.poll(POLL_S)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._post(_CaughtUp(msg.partition()))
                    elif (forbidden := self._forbidden(err)) is not None:
                        self._post(_Failed(str(forbidden), forbidden))
                        return
                    elif err.fatal():
                        self._post(_Failed(err.str()))
                        return
                    else:
                        logger.warning("membership consumer: %s", err.str())
                    continue
                if msg.value() is None:
                    continue
                try:
                    record = MapRecord.decode(msg.value())
                except ValueError as exc:
                    logger.warning("skipping control record at partition %d: %s", msg.partition(), exc)
                    continue
                self._post(_Record(msg.partition(), msg.offset(), record))
        except Exception as exc:
            logger.exception("membership consumer failed")
            self._post(_Failed(str(exc)))
        finally:
            if consumer is not None:
                self._closing.set()
                with contextlib.suppress(Exception):
                    consumer.close()  # leaves the group: the others rebalance at once
            loop = self._loop
            if loop is not None and not loop.is_closed() and self._ended is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, self._ended)

    def _forbidden(self, err: KafkaError) -> AuthorizationError | None:
        """A missing ACL of the membership consumer, named (not worth a retry)."""
        return reader_authorization_error(err, self._topic, self._settings.id)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Always from the beginning: the latest record is the shard's member list.
        consumer.incremental_assign(
            [TopicPartition(self._topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
        )
        logger.info("assigned control partitions %s", sorted(tp.partition for tp in partitions))
        self._post(_Assigned([tp.partition for tp in partitions]))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        logger.info("revoking control partitions %s", sorted(tp.partition for tp in partitions))
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._post(_Revoked([tp.partition for tp in partitions], lost=False, done=done))
        if self._closing.is_set():
            return  # shutting down: the shards were stopped before the consumer closes
        try:
            done.result(timeout=self._revoke_wait_s)
        except concurrent.futures.TimeoutError:
            logger.error("shards of revoked partitions did not stop within %.1f s", self._revoke_wait_s)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        logger.warning(
            "lost control partitions %s (session expired); rejoining the group",
            sorted(tp.partition for tp in partitions),
        )
        self._post(_Revoked([tp.partition for tp in partitions], lost=True, done=None))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# --------------------------------------------------------------------------- the fleet


class _Slot:
    """An owned partition: its latest map record and the shard that runs it."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.record: MapRecord | None = None
        self.caught_up = False
        self.revoked = False
        self.fenced = False
        self.shard: Shard | None = None
        self.client_index = 0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.driver: asyncio.Task[None] | None = None
        self.not_before = 0.0
        #: Since when the slot has had members but no shard that connected (None: fine).
        self.down_since: float | None = None

    @property
    def users(self) -> tuple[str, ...]:
        return self.record.users if self.record is not None else ()

    @property
    def running(self) -> bool:
        return self.shard is not None and self.task is not None and not self.task.done()

    def down_for(self, now: float) -> float:
        """How long the slot's members have had no running shard that connected."""
        if not self.caught_up or self.fenced or self.revoked or not self.users:
            self.down_since = None
            return 0.0
        shard = self.shard
        if self.running and shard is not None and shard.stats.last_connected is not None:
            self.down_since = None
            return 0.0
        if self.down_since is None:
            self.down_since = now
        return 0.0 if self.running else now - self.down_since

    def ready(self) -> bool:
        if not self.caught_up or self.fenced:
            return False
        if not self.users:
            return True
        return self.running and self.shard is not None and self.shard.ready


class Fleet:
    """Runs exactly the shards whose control partitions this worker is assigned.

    ``shard_factory`` builds a :class:`Shard` for (shard id, users, client
    index); ``coordinator_factory`` builds the :class:`Coordinator` when this
    worker gains partition 0 (it gets a callback to announce new partitions).
    :meth:`run` returns after ``stop`` is set and everything is shut down:
    shards drained first, then the consumer closed (leaving the group).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        shard_factory: ShardFactory,
        coordinator_factory: Callable[[Callable[[int], None]], Coordinator],
        consumer_factory: ConsumerFactory = Consumer,
        clients: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._shard_factory = shard_factory
        self._coordinator_factory = coordinator_factory
        self._clients = clients
        self._clock = clock
        self._slots: dict[int, _Slot] = {}
        self._lost: dict[int, _Slot] = {}
        self._stopping: dict[int, asyncio.Task[None]] = {}
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._membership = Membership(
            settings,
            self._events.put_nowait,
            consumer_factory=consumer_factory,
            revoke_wait_s=settings.drain_timeout_s + STOP_MARGIN_S,
        )
        self.coordinator: Coordinator | None = None
        self._coord_task: asyncio.Task[None] | None = None
        self._coord_fenced = False
        self.joined = False
        self._rebalance_pending_until: float | None = None
        self._shutting_down = False
        self.failure: str | None = None
        #: A missing ACL met by any part of the fleet: it stops, and run() raises it.
        self.forbidden: AuthorizationError | None = None
        #: Control records of another fleet seen on this worker's partitions (never applied).
        self.foreign_records = 0
        self._background: set[asyncio.Task[None]] = set()

    # -- what the worker, /readyz and tests read ----------------------------------------

    @property
    def shards(self) -> list[Shard]:
        """The shards running now, by shard id."""
        return [
            slot.shard
            for _, slot in sorted({**self._slots, **self._lost}.items())
            if slot.shard is not None and slot.running and not slot.fenced
        ]

    @property
    def partitions(self) -> list[int]:
        return sorted(self._slots)

    @property
    def is_coordinator(self) -> bool:
        return self._coord_task is not None and not self._coord_task.done()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready: joined, no rebalance pending, every owned partition read and its shard ready.

        Never ready while the control topic shows another fleet's records, nor
        while this worker owns partition 0 and no coordinator runs (or it has
        not refreshed yet).
        """
        now = self._clock()
        pending = self._rebalance_pending_until is not None and now < self._rebalance_pending_until
        conflict = self.coordinator.conflict if self.coordinator is not None and self.is_coordinator else None
        refreshed = self.is_coordinator and self.coordinator is not None and self.coordinator.refreshes > 0
        if 0 in self._slots:
            coordinator_ok = conflict is None and refreshed
        else:
            coordinator_ok = conflict is None and (refreshed or not self.is_coordinator)
        slots = list(self._slots.values())
        ready = (
            self.joined
            and not pending
            and not self._lost
            and coordinator_ok
            and self.foreign_records == 0
            and all(s.ready() for s in slots)
        )
        wall = time.time()
        shards: dict[str, object] = {}
        for slot in sorted(slots, key=lambda s: s.partition):
            info: dict[str, object] = {"users": len(slot.users), "fenced": slot.fenced}
            if slot.record is not None:
                info["epoch"] = slot.record.epoch
                info["clientIndex"] = slot.record.client_index
            if slot.shard is not None and slot.running:
                info.update(slot.shard.describe())
                stats = slot.shard.stats
                if stats.last_reconciled is not None:
                    info["reconciledAt"] = wall - (self._clock() - stats.last_reconciled)
                info["connects"] = stats.connects
            shards[str(slot.partition)] = info
        details: dict[str, object] = {
            "partitions": self.partitions,
            "coordinator": self.is_coordinator,
            "joined": self.joined,
            "shards": shards,
        }
        if self.foreign_records or conflict is not None:
            details["foreignMapRecords"] = self.foreign_records
            details["conflict"] = conflict or "another fleet's map records on this worker's partitions"
        if self.coordinator is not None and self.is_coordinator:
            details["refreshes"] = self.coordinator.refreshes
            details["unassigned"] = self.coordinator.last_unassigned
        return ready, details

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Alive unless a mapped shard has not been running for :data:`SHARD_RESTART_DEADLINE_S`.

        A shard counts as down from the moment its slot has members and no
        shard of it has connected, and stays down while its restarts end
        before connecting; it is up again once a started shard connects. A
        running shard that is still reconnecting (Genesys down) is alive.
        Failing /healthz makes Kubernetes replace the pod.
        """
        now = self._clock()
        down = sorted(
            slot.partition for slot in self._slots.values() if slot.down_for(now) > SHARD_RESTART_DEADLINE_S
        )
        details: dict[str, object] = {"down": down}
        if self.failure is not None:
            details["failure"] = self.failure
        return not down and self.failure is None, details

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Join the group and follow it until ``stop``; then drain the shards and leave the group."""
        self._membership.start()
        events = asyncio.create_task(self._process_events())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({events, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._shutting_down = True
            stopper.cancel()
            await self._shutdown()
            events.cancel()
            await asyncio.gather(events, return_exceptions=True)
        if self.forbidden is not None:
            raise self.forbidden
        if self.failure is not None:
            raise SinkError(f"fleet membership failed: {self.failure}")

    async def _shutdown(self) -> None:
        logger.info("stopping: draining %d shards, then leaving the group", len(self.shards))
        await self._stop_coordinator()
        slots = [*self._slots.values(), *self._lost.values()]
        self._slots.clear()
        self._lost.clear()
        for slot in slots:
            slot.revoked = True
            slot.wake.set()
        drivers = [s.driver for s in slots if s.driver is not None]
        await asyncio.gather(*drivers, *self._stopping.values(), return_exceptions=True)
        metrics.SHARDS_OWNED.set(0)
        await self._membership.close()

    async def _process_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                self._handle(event)
            except Exception:
                logger.exception("fleet event %r failed", event)
            if isinstance(event, _Failed):
                return

    def _handle(self, event: _Event) -> None:
        if isinstance(event, _Assigned):
            self.joined = True
            self._rebalance_pending_until = None
            for p in event.partitions:
                self._gain(p)
            # Lost partitions the group did not give back belong to others now.
            self._expire_lost()
        elif isinstance(event, _Revoked) and event.lost:
            self._hold_lost(event.partitions)
        elif isinstance(event, _Revoked):
            self._lose(event.partitions, event.done)
        elif isinstance(event, _Record):
            self._on_record(event)
        elif isinstance(event, _CaughtUp):
            slot = self._slots.get(event.partition)
            if slot is not None and not slot.caught_up:
                slot.caught_up = True
                slot.wake.set()
        else:
            logger.error("fleet membership failed: %s", event.error)
            self.failure = event.error
            if event.forbidden is not None:
                self.forbidden = event.forbidden

    def _gain(self, p: int) -> None:
        if p in self._slots:
            return
        held = self._lost.pop(p, None)
        if held is not None and not (held.fenced or (held.shard is not None and held.shard.fenced)):
            # Given back after a lost session: the shard never stopped; the
            # partition is read again from the beginning (same or newer epoch).
            self._slots[p] = held
            logger.info("partition %d is ours again; its shard kept running", p)
            if p == 0 and not self.is_coordinator:  # fenced while the session was lost
                self._coord_fenced = False
                self._start_coordinator()
            return
        if held is not None:
            # Another worker owned it meanwhile and fenced this shard: retire the
            # old slot; the new one starts when it has stopped (its new sink
            # fences that interim owner, which no longer owns the partition).
            logger.info("partition %d is ours again; its shard was fenced meanwhile: restarting it", p)
            held.revoked = True
            held.wake.set()
            if held.driver is not None:
                self._stopping[p] = held.driver
                held.driver.add_done_callback(functools.partial(self._forget_stopping, p))
        slot = _Slot(p)
        self._slots[p] = slot
        if self._shutting_down:
            return
        slot.driver = asyncio.create_task(self._drive(slot), name=f"fleet-partition-{p}")
        if p == 0:
            self._coord_fenced = False
            self._start_coordinator()

    def _hold_lost(self, partitions: list[int]) -> None:
        """The session was lost: keep the shards running until the group answers.

        The usual cause is a broker or network outage, after which the group
        gives the same partitions back: the shards keep what they queued in
        memory and nothing is lost. If another worker got them meanwhile, its
        sink has fenced ours (nothing we write becomes visible) and the next
        assignment, or :data:`LOST_GRACE_S`, stops them.
        """
        for p in partitions:
            slot = self._slots.pop(p, None)
            if slot is not None:
                self._lost[p] = slot
        if self._lost:
            asyncio.get_running_loop().call_later(LOST_GRACE_S, self._expire_lost)

    def _expire_lost(self) -> None:
        if not self._lost:
            return
        partitions = sorted(self._lost)
        logger.warning("lost partitions %s now belong to other workers; stopping their shards", partitions)
        self._slots.update(self._lost)
        self._lost.clear()
        self._lose(partitions, None)

    def _lose(self, partitions: list[int], done: concurrent.futures.Future[None] | None) -> None:
        drivers: list[asyncio.Task[None]] = []
        for p in partitions:
            slot = self._slots.pop(p, None)
            if slot is None:
                continue
            slot.revoked = True
            slot.wake.set()
            if slot.driver is not None:
                drivers.append(slot.driver)
                self._stopping[p] = slot.driver
                slot.driver.add_done_callback(functools.partial(self._forget_stopping, p))
        if 0 in partitions:
            self._spawn(self._stop_coordinator())
        if done is not None:

            async def ack() -> None:
                await asyncio.gather(*drivers, return_exceptions=True)
                if not done.done():
                    done.set_result(None)

            self._spawn(ack())

    def _forget_stopping(self, p: int, task: asyncio.Task[None]) -> None:
        if self._stopping.get(p) is task:
            del self._stopping[p]

    def _on_record(self, event: _Record) -> None:
        slot = self._slots.get(event.partition)
        if slot is None or slot.revoked:
            return
        record = event.record
        if record.foreign_to(self._settings.id):
            _log_foreign(record, self._settings, event.partition)
            self.foreign_records += 1
            return
        if record.shard != event.partition:
            logger.warning("control record for shard %d found in partition %d", record.shard, event.partition)
            return
        if slot.record is not None and record.epoch < slot.record.epoch:
            logger.warning(
                "ignoring stale map record for shard %d (epoch %d < %d)",
                record.shard,
                record.epoch,
                slot.record.epoch,
            )
            return
        slot.record = record
        if slot.caught_up:
            slot.wake.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def runner() -> None:
            await coro

        task = asyncio.create_task(runner())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- coordinator ----------------------------------------------------------------------

    def _start_coordinator(self) -> None:
        if self.is_coordinator or self._shutting_down or self._coord_fenced:
            return
        self.coordinator = self._coordinator_factory(self._partitions_added)
        self._coord_task = asyncio.create_task(self._run_coordinator(self.coordinator), name="coordinator")
        logger.info("this worker owns partition 0: coordinating the partition map")

    async def _run_coordinator(self, coordinator: Coordinator) -> None:
        try:
            await coordinator.run()
        except FencedError as exc:
            # Another worker coordinates now; this one learns it lost partition 0
            # shortly. If it does not, the group says it is ours: coordinate again.
            retry_s = coordinator_fenced_retry_s(self._settings)
            logger.error("%s; no longer coordinating (again in %.0f s if partition 0 stays)", exc, retry_s)
            self._coord_fenced = True
            _clear_roster_gauges()
            asyncio.get_running_loop().call_later(retry_s, self._retry_fenced_coordinator)
        except AuthorizationError as exc:
            self._stop_for(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("coordinator failed; restarting it")
            await asyncio.sleep(COORDINATOR_RETRY_S)
            if 0 in self._slots and not self._shutting_down:
                self._coord_task = None
                self._start_coordinator()

    def _retry_fenced_coordinator(self) -> None:
        if 0 in self._slots and self._coord_fenced and not self.is_coordinator and not self._shutting_down:
            logger.warning("partition 0 is still ours after the coordinator was fenced; coordinating again")
            self._coord_fenced = False
            self._start_coordinator()

    async def _stop_coordinator(self) -> None:
        task, self._coord_task = self._coord_task, None
        if task is not None and not task.done():
            logger.info("no longer coordinating")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            _clear_roster_gauges()

    def _partitions_added(self, total: int) -> None:
        logger.info("partition map grew to %d shards; waiting for the rebalance", total)
        self._rebalance_pending_until = self._clock() + REBALANCE_PENDING_MAX_S
        self._membership.request_metadata_refresh()

    # -- one partition's shard ------------------------------------------------------------

    async def _drive(self, slot: _Slot) -> None:
        """Converge the partition's shard on its latest record until revoked; then stop it."""
        with log.bind(shard=slot.partition):
            previous = self._stopping.get(slot.partition)
            if previous is not None:  # the same shard, lost a moment ago, still stopping
                await asyncio.gather(previous, return_exceptions=True)
            try:
                while True:
                    await slot.wake.wait()
                    slot.wake.clear()
                    if slot.revoked:
                        break
                    if not slot.caught_up:
                        continue
                    try:
                        await self._converge(slot)
                    except Exception:
                        logger.exception("shard %d: applying the map failed; retrying", slot.partition)
                        self._wake_later(slot, SHARD_RESTART_DELAY_S)
            finally:
                await self._stop_shard(slot)

    async def _converge(self, slot: _Slot) -> None:
        users = slot.users
        record = slot.record
        client = record.client_index if record is not None else 0
        if not slot.running:
            self._reap(slot)
            if slot.fenced or not users or self._clock() < slot.not_before:
                return
            if client >= self._clients:
                logger.error(
                    "shard %d wants OAuth client %d but only %d are configured",
                    slot.partition,
                    client,
                    self._clients,
                )
                return
            new = self._shard_factory(slot.partition, users, client)
            slot.shard, slot.client_index = new, client
            slot.task = asyncio.create_task(new.run(), name=f"shard-{slot.partition}")
            slot.task.add_done_callback(lambda _t: slot.wake.set())
            logger.info("shard %d started with %d users (client %d)", slot.partition, len(users), client)
            self._owned_changed()
            return
        shard = slot.shard
        assert shard is not None
        if client != slot.client_index:
            logger.info("shard %d moves to OAuth client %d; restarting it", slot.partition, client)
            await self._stop_shard(slot)
            slot.wake.set()
            return
        if tuple(shard.users) == users:
            return
        # Apply membership changes once the shard has loaded its states and connected,
        # so removed users get their tombstone.
        while shard.stats.last_connected is None and slot.running and not slot.revoked:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)  # the shard exposes no event for its first connection
        if slot.revoked or not slot.running:
            slot.wake.set()
            return
        added, removed = await shard.set_users(users)
        logger.info(
            "shard %d: map epoch %s adds %d and removes %d users",
            slot.partition,
            record.epoch if record is not None else "-",
            len(added),
            len(removed),
        )
        if not users:
            await self._stop_shard(slot)

    def _reap(self, slot: _Slot) -> None:
        """Look at a shard that ended by itself: fenced → wait for revocation; else restart later."""
        shard, task = slot.shard, slot.task
        if shard is None or task is None:
            return
        slot.shard, slot.task = None, None
        self._owned_changed()
        slot.down_for(self._clock())
        if shard.fenced:
            slot.fenced = True
            logger.error("shard %d was fenced by a newer owner; its channel is closed", slot.partition)
            return
        exc = task.exception() if not task.cancelled() else None
        if isinstance(exc, AuthorizationError):
            self._stop_for(exc)
            return
        logger.error("shard %d ended unexpectedly (%r); restarting it", slot.partition, exc)
        self._wake_later(slot, SHARD_RESTART_DELAY_S)

    def _stop_for(self, exc: AuthorizationError) -> None:
        """A missing ACL: retrying cannot help; stop the whole worker (run() raises it)."""
        if self.forbidden is not None:
            return
        logger.error("%s; stopping", exc)
        self._events.put_nowait(_Failed(str(exc), exc))

    def _wake_later(self, slot: _Slot, delay: float) -> None:
        slot.not_before = self._clock() + delay
        asyncio.get_running_loop().call_later(delay, slot.wake.set)

    async def _stop_shard(self, slot: _Slot) -> None:
        shard, task = slot.shard, slot.task
        slot.shard, slot.task = None, None
        if shard is None or task is None:
            return
        if not task.done():
            await shard.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), self._settings.drain_timeout_s + STOP_MARGIN_S)
            except TimeoutError:
                logger.error("shard %d did not stop in time; cancelling it", slot.partition)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception as exc:
                logger.error("shard %d ended with %r", slot.partition, exc)
        if shard.fenced:
            slot.fenced = True
        logger.info("shard %d stopped", slot.partition)
        self._owned_changed()

    def _owned_changed(self) -> None:
        metrics.SHARDS_OWNED.set(len(self.shards))
