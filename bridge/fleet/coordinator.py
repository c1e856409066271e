"""The coordinator: keeps the partition map in step with the roster while this worker owns partition 0."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from bridge import metrics
from bridge.acl import authorization_error
from bridge.assign import assign, client_for_shard, shard_budget
from bridge.errors import AuthorizationError, ConfigError, DeliveryError, FencedError, SinkError
from bridge.fleet.map import (
    CALL_TIMEOUT_S,
    MAP_SCHEMA,
    POLL_S,
    ConsumerFactory,
    MapRecord,
    read_map,
)
from bridge.kafka.config import (
    DEFAULT_ADMIN_TIMEOUT_S,
    AdminFactory,
    ProducerFactory,
    transactional_producer_config,
)
from bridge.kafka.errors import Action, classify, producer_authorization_error
from bridge.kafka.txn import Failure, no_delay, retry_call
from bridge.rosterguard import RosterGuard
from bridge.settings import Settings

__all__ = [
    "COORDINATOR_FENCED_SESSIONS",
    "COORDINATOR_RETRY_S",
    "COORDINATOR_SUFFIX",
    "ActiveCheck",
    "AdminFactory",
    "Coordinator",
    "ProducerFactory",
    "RosterSource",
    "clear_roster_gauges",
    "coordinator_fenced_retry_s",
    "coordinator_transactional_id",
]

logger = logging.getLogger(__name__)

COORDINATOR_SUFFIX = "coordinator"
#: Session timeouts after which a fenced coordinator still owning partition 0 restarts.
COORDINATOR_FENCED_SESSIONS = 2
#: A failed roster refresh (Genesys or Kafka trouble) is retried after this.
COORDINATOR_RETRY_S = 5.0
COMMIT_RETRIES = 5
COORDINATOR_TXN_TIMEOUT_MS = 60_000


RosterSource = Callable[[], Awaitable[list[str]]]
#: Which of these agents are active now (asked for the mapped agents a listing left out).
ActiveCheck = Callable[[Collection[str]], Awaitable[set[str]]]


def coordinator_transactional_id(settings: Settings) -> str:
    """``<bridge-id>-coordinator``: one writer of the map at a time, zombies fenced."""
    return f"{settings.id}-{COORDINATOR_SUFFIX}"


def coordinator_fenced_retry_s(settings: Settings) -> float:
    """After its coordinator was fenced, a worker still owning partition 0 this long coordinates again.

    Two session timeouts: a worker that was fenced because it was frozen
    learns of its lost partitions well within that.
    """
    return COORDINATOR_FENCED_SESSIONS * settings.kafka_session_timeout_ms / 1000


def clear_roster_gauges() -> None:
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
            transactional_producer_config(
                s,
                client_id=f"{s.id}-{COORDINATOR_SUFFIX}",
                transactional_id=coordinator_transactional_id(s),
                transaction_timeout_ms=COORDINATOR_TXN_TIMEOUT_MS,
            )
        )
        # One attempt: run() retries a failed start with a new producer.
        failure = retry_call(
            lambda: producer.init_transactions(CALL_TIMEOUT_S * 3), classify, no_delay(0), sleep=time.sleep
        )
        if failure is not None:
            raise _map_error(failure.error, "init_transactions", coordinator_transactional_id(s))
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
        failure: Failure | None
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
        except KafkaException as exc:
            failure = Failure(exc.args[0], classify(exc.args[0]))
        else:
            # A commit blocks up to its own timeout: a retriable one is made again at once.
            failure = retry_call(
                lambda: producer.commit_transaction(CALL_TIMEOUT_S),
                classify,
                no_delay(COMMIT_RETRIES - 1),
                sleep=time.sleep,
            )
        if failure is None:
            return
        if failure.action is Action.ABORT:
            # Best effort, one attempt: the next refresh writes the map again anyway.
            retry_call(
                lambda: producer.abort_transaction(CALL_TIMEOUT_S), classify, no_delay(0), sleep=time.sleep
            )
        raise _map_error(failure.error, "map write", coordinator_transactional_id(self._settings), topic)


def _map_error(err: KafkaError, what: str, transactional_id: str, topic: str = "") -> SinkError:
    forbidden = producer_authorization_error(
        err, transactional_id, f"TOPIC {topic}" if topic else "", idempotent_write=False
    )
    if forbidden is not None:
        return forbidden
    action = classify(err)
    if action is Action.FENCED:
        metrics.FENCED.inc()
        return FencedError(f"coordinator fenced during {what}: {err.str()}")
    if action is Action.FATAL:
        return DeliveryError(f"coordinator {what} failed: {err.str()}")
    return SinkError(f"coordinator {what} failed: {err.str()}")
