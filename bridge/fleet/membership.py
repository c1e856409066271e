"""Fleet membership: the control topic's group consumer in its own thread, and the events it posts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.acl import reader_authorization_error
from bridge.errors import AuthorizationError
from bridge.fleet.map import (
    CALL_TIMEOUT_S,
    POLL_S,
    ConsumerFactory,
    MapRecord,
)
from bridge.fleet.watch import AssignmentWatch, describe_group
from bridge.kafka.config import FETCH_WAIT_MAX_MS, LIBRDKAFKA_LOGGER, AdminFactory
from bridge.settings import Settings

__all__ = [
    "Membership",
    "MembershipEvent",
    "consumer_config",
]

logger = logging.getLogger(__name__)

#: New partitions of the control topic are noticed within this (the coordinator's own
#: worker asks at once; the group leader re-reads metadata before every assignment anyway).
METADATA_REFRESH_MS = 5_000
#: Bounds a rebalance waiting for a frozen member (classic: the rebalance timeout).
#: A revocation callback blocks for at most a shard's drain, well below this.
MAX_POLL_INTERVAL_MS = 30_000
#: Waiting for the consumer thread to leave the group on shutdown.
CLOSE_TIMEOUT_S = 5.0
#: The watch's DescribeGroups gives up after this: the poll loop waits meanwhile.
WATCH_CALL_TIMEOUT_S = 2.0


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


@dataclass(frozen=True)
class _Assigned:
    partitions: list[int]


@dataclass(frozen=True)
class _Revoked:
    partitions: list[int]
    lost: bool
    done: concurrent.futures.Future[None] | None


@dataclass(frozen=True)
class _Disowned:
    """The group coordinator does not give us these, though no callback revoked them (see watch)."""

    partitions: list[int]


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


MembershipEvent = _Assigned | _Revoked | _Disowned | _Record | _CaughtUp | _Failed


class Membership:
    """The group consumer in its own thread; events reach asyncio through ``call_soon_threadsafe``.

    A revocation blocks the rebalance callback until the asyncio side
    resolves the event's ``done`` future (shards drained), at most
    ``revoke_wait_s``; a loss (``on_lost``) never waits. Every session
    timeout the thread also checks the partitions its callbacks gave the
    application against the group coordinator's record
    (:class:`~bridge.fleet.watch.AssignmentWatch`): those the group gives to
    others are posted as disowned, and a consumer whose member the group does
    not know is replaced by a new one; :attr:`doubted` names the partitions
    with a first strike.
    """

    def __init__(
        self,
        settings: Settings,
        post: Callable[[MembershipEvent], None],
        *,
        consumer_factory: ConsumerFactory = Consumer,
        admin_factory: AdminFactory = AdminClient,
        revoke_wait_s: float,
    ) -> None:
        self._settings = settings
        self._topic = settings.topic_shard_map
        self._post_event = post
        self._factory = consumer_factory
        self._admin_factory = admin_factory
        self._revoke_wait_s = revoke_wait_s
        self._watch_every_s = settings.kafka_session_timeout_ms / 1000
        self._watch: AssignmentWatch | None = None
        # The consumer thread's own: the partitions the callbacks gave the application.
        self._held: set[int] = set()
        self._generation = 0
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

    @property
    def doubted(self) -> frozenset[int]:
        """Partitions the last check found held but not given by the group (one strike so far)."""
        return self._watch.doubted if self._watch is not None else frozenset()

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

    def _post(self, event: MembershipEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._post_event, event)

    def _run(self) -> None:
        consumer = None
        try:
            consumer = self._open()
            next_watch = time.monotonic() + self._watch_every_s
            while not self._closing.is_set():
                if time.monotonic() >= next_watch:
                    if self._check_assignment(consumer):
                        consumer = self._reopen(consumer)
                    next_watch = time.monotonic() + self._watch_every_s
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

    def _open(self) -> Any:
        """A new consumer, subscribed; its callbacks carry its generation (a replaced one's are ignored)."""
        self._generation += 1
        self._held.clear()
        consumer = self._factory(consumer_config(self._settings))
        generation = self._generation
        consumer.subscribe(
            [self._topic],
            on_assign=functools.partial(self._on_assign, generation),
            on_revoke=functools.partial(self._on_revoke, generation),
            on_lost=functools.partial(self._on_lost, generation),
        )
        return consumer

    def _reopen(self, old: Any) -> Any:
        """Replace a consumer the group does not know: the old one may never rejoin by itself."""
        logger.warning("rejoining the group with a new consumer (the old one is no member of it)")
        self._generation += 1  # the old consumer's callbacks, during its close, change nothing
        closing = threading.Thread(
            target=_close_quietly, args=(old,), name="fleet-membership-close", daemon=True
        )
        closing.start()
        closing.join(CLOSE_TIMEOUT_S)  # a stuck close is left behind, not waited for
        return self._open()

    def _check_assignment(self, consumer: Any) -> bool:
        """One round of the watch: disowned partitions are unassigned and posted. True when the
        group does not know this consumer's member at all (the caller replaces the consumer)."""
        if self._watch is None:
            # Referenced for the thread's life: its requests need it.
            admin = self._admin_factory(self._settings.kafka_config())
            self._watch = AssignmentWatch(
                lambda: describe_group(admin, self._settings.id, self._topic, WATCH_CALL_TIMEOUT_S)
            )
        try:
            member_id = consumer.memberid() or ""
        except (KafkaException, RuntimeError) as exc:
            logger.debug("reading the consumer's member id failed: %s", exc)
            return False
        gone = self._watch.check(member_id, frozenset(self._held))
        if not gone:
            return False
        self._held.difference_update(gone)
        with contextlib.suppress(KafkaException, RuntimeError):
            mine = {tp.partition for tp in consumer.assignment() if tp.topic == self._topic}
            if mine & gone:
                consumer.incremental_unassign([TopicPartition(self._topic, p) for p in sorted(mine & gone)])
        self._post(_Disowned(sorted(gone)))
        return not self._watch.member_known

    def _forbidden(self, err: KafkaError) -> AuthorizationError | None:
        """A missing ACL of the membership consumer, named (not worth a retry)."""
        return reader_authorization_error(err, self._topic, self._settings.id)

    def _on_assign(self, generation: int, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Always from the beginning: the latest record is the shard's member list.
        consumer.incremental_assign(
            [TopicPartition(self._topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
        )
        if generation != self._generation:
            return
        logger.info("assigned control partitions %s", sorted(tp.partition for tp in partitions))
        self._held.update(tp.partition for tp in partitions)
        self._post(_Assigned([tp.partition for tp in partitions]))

    def _on_revoke(self, generation: int, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if not partitions or generation != self._generation:
            return
        logger.info("revoking control partitions %s", sorted(tp.partition for tp in partitions))
        self._held.difference_update(tp.partition for tp in partitions)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._post(_Revoked([tp.partition for tp in partitions], lost=False, done=done))
        if self._closing.is_set():
            return  # shutting down: the shards were stopped before the consumer closes
        try:
            done.result(timeout=self._revoke_wait_s)
        except concurrent.futures.TimeoutError:
            logger.error("shards of revoked partitions did not stop within %.1f s", self._revoke_wait_s)

    def _on_lost(self, generation: int, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if generation != self._generation:
            return
        self._held.difference_update(tp.partition for tp in partitions)
        logger.warning(
            "lost control partitions %s (session expired); rejoining the group",
            sorted(tp.partition for tp in partitions),
        )
        self._post(_Revoked([tp.partition for tp in partitions], lost=True, done=None))


def _close_quietly(consumer: Any) -> None:
    with contextlib.suppress(Exception):
        consumer.close()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
