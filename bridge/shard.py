"""One shard: one Genesys notification channel of up to 1,000 combined topics.

A shard is a unit that can be started and stopped on its own for any list of
users; the worker (and later the fleet) only decides which users. Lifecycle
(README "Architecture"):

- **start**: the sink's ``init_transactions()`` fences any previous owner of
  the shard; then a channel is created (or reused), the socket connected and
  the users' combined topics ``v2.users.{id}?presence&routingStatus``
  subscribed with one PUT.
- **gap**: any time the shard was not connected *and* subscribed. Every gap
  ends with a reconciliation from the bulk REST APIs that emits only what
  actually changed (``origin: "reconcile"``), since Genesys never replays what
  it sent while no socket was open.
- **watchdog** (:mod:`bridge.liveness`): after ``ping_interval_s`` of silence
  (no frame of any kind) the shard pings; no frame within ``pong_timeout_s``
  of that ping, or no frame for ``heartbeat_timeout_factor`` times the
  heartbeat interval whatever the pings → the socket is treated as dead,
  reconnected and the gap reconciled. Defaults: dead within 10 s of silence.
  Time the reader spends blocked on Kafka backpressure is not silence.
- **reconnect**: capped exponential backoff with full jitter, reset after a
  healthy period; the retry policy (:mod:`bridge.genesys.retry`) decides
  between retry, token refresh, a new channel (404/evicted/expired) and a
  logged fatal attempt.
- **extension**: before ``expires`` the subscriptions are PUT again, which
  extends the channel; if the listed ``expires`` did not move, the server will
  close it regardless, so the shard rotates to a new channel
  make-before-break (new channel subscribed and connected before the old one
  is let go).
- **sweep** (:mod:`bridge.sweep`): while the shard runs, every agent is read
  again from the bulk API once per ``sweep_interval_s`` (0 = off) and what
  the stream lost without a gap is corrected.
- **maintenance** (``v2.system.socket_closing``): a new socket is opened on the
  same ``connectUri`` first (Genesys then closes the old one: one socket per
  channel), the old one is drained until it closes, then the shard reconciles.
- **lost subscriptions** (system messages ``no_longer_subscribed``,
  ``subscription_changed``, ``token_revoked``; the SDK's
  ``SystemMessageSystemMessage``): the channel may keep heartbeating while it
  delivers nothing, so the watchdog would never notice. The shard does what
  Genesys's own streaming client does on ``no_longer_subscribed``: a new
  channel, make-before-break (after ``token_revoked`` with a fresh token),
  then a reconciliation; counted in
  ``bridge_channel_rotations_total{reason=<systemTopicType>}``. One that
  follows another within ``backoff_reset_s`` waits the backoff first.
- **rejected topics**: a subscription reply lists each topic as Permitted or
  Rejected (``ChannelTopic``; with ``ignoreErrors=true`` a refused topic does
  not fail the request). Rejected agents are never counted as subscribed;
  they are named in a WARNING with the missing permissions, counted in
  ``bridge_subscription_rejected_topics{shard,reason}`` and listed in the
  readiness details (``unobservable``). The subscribed count is the reply's
  permitted list: POST and PUT replies list the whole channel.
- **expiry check**: after the extending PUT the channel's new ``expires`` is
  read from ``GET /api/v2/notifications/channels?includechannels=oauthclient``.
  Genesys shows ids only for channels of the calling token, so after a token
  refresh the shard's own channel is listed without its id: then a ``HEAD``
  on the channel decides (it exists: the PUT extended it by its lifetime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge import log, memory, metrics
from bridge.errors import (
    ChannelClosedError,
    FencedError,
    GenesysError,
    NotFoundError,
    ProtocolError,
)
from bridge.events import Dropped, ShardState
from bridge.genesys import protocol
from bridge.genesys.models import ChannelInfo, RejectedTopic, SubscriptionResult
from bridge.genesys.rest import INCLUDE_OAUTH_CLIENT, GenesysRest
from bridge.genesys.retry import Action, Backoff, classify
from bridge.genesys.socket import NotificationSocket
from bridge.liveness import Liveness, Verdict
from bridge.model import AgentState, Change, Kind, Origin, utc_now_ms
from bridge.settings import Settings
from bridge.sink import ShardSink
from bridge.sweep import Sweep

__all__ = ["OrphanFinder", "OwnedElsewhere", "Shard", "ShardStats", "SocketFactory", "StateLoader"]

logger = logging.getLogger(__name__)

#: ``bridge_stale_events_total{kind}``: the changes of the stream that the event state dropped.
_DROPPED = {kind: metrics.STALE_EVENTS.labels(kind=kind.value) for kind in Kind}

SocketFactory = Callable[[], NotificationSocket]
#: Reads the users' last states from the compacted state topic.
StateLoader = Callable[[Sequence[str]], Awaitable[Mapping[str, AgentState]]]
#: Called once the states are loaded, with the member list: the agents whose
#: latest state record this fleet wrote for this shard, that are not members
#: and that no other shard of the fleet owns now (they are tombstoned).
OrphanFinder = Callable[[Sequence[str]], Awaitable[Sequence[str]]]
#: The given (removed) agents that must keep their state: another shard of this
#: fleet owns them now (a move), or another fleet wrote their latest state.
OwnedElsewhere = Callable[[Sequence[str]], Awaitable[Collection[str]]]
#: How often the watchdog looks at the socket's silence and the gauges.
WATCHDOG_TICK_S = 0.25
#: Never extend later than a third of the channel's lifetime before it ends
#: (matters only for short test lifetimes; 24 h channels use the margin).
EXTEND_LIFETIME_FRACTION = 1 / 3
#: Bound on waiting for a maintenance socket's replacement.
MAINTENANCE_CONNECT_TIMEOUT_S = 30.0
#: How long a cancelled serving task (reader, watchdog, …) may take to end.
TASK_STOP_TIMEOUT_S = 2.0
#: Users fetched per reconciliation batch before their changes are applied.
RECONCILE_BATCH = 500
#: Agents named in the rejected-topics WARNING and the readiness details.
MAX_NAMED_AGENTS = 20
#: Longest ``reason`` label of ``bridge_subscription_rejected_topics``.
MAX_REASON_LABEL = 48
_NON_SLUG = re.compile(r"[^a-z0-9]+")
#: Records read but not yet committed above which the shard stops reading its
#: socket until they are (about 10 MB of encoded records).
MAX_PENDING_RECORDS = 20_000


def _reason_label(reason: str | None) -> str:
    """A bounded metric label from a free-text ``rejectionReason``."""
    slug = _NON_SLUG.sub("_", (reason or "").lower()).strip("_")[:MAX_REASON_LABEL]
    return slug or "unknown"


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def _cancel_all(tasks: Mapping[str, asyncio.Task[Any]]) -> None:
    """Cancel the serving tasks and wait for them, but not forever.

    A task that ignores its cancellation for :data:`TASK_STOP_TIMEOUT_S` is
    named in an error and left behind: the shard must still close its socket
    (a fenced shard's channel must not stay connected) and end.
    """
    for task in tasks.values():
        task.cancel()
    _done, pending = await asyncio.wait(tasks.values(), timeout=TASK_STOP_TIMEOUT_S)
    if pending:
        stuck = sorted(name for name, task in tasks.items() if task in pending)
        logger.error("tasks did not stop within %.1f s of cancellation: %s", TASK_STOP_TIMEOUT_S, stuck)


@dataclass
class ShardStats:
    """What tests, the demo and benchmarks read about a shard."""

    connects: int = 0
    reconciles: int = 0
    corrections: int = 0
    frames: int = 0
    last_gap_started: float | None = None
    last_connected: float | None = None
    last_reconciled: float | None = None


class _SocketLost(Exception):
    """Internal: the current socket ended; carries the mapped cause."""


class Shard:
    """One channel's worth of agents, streamed into Kafka through one sink."""

    def __init__(
        self,
        shard_id: int,
        users: Iterable[str],
        *,
        rest: GenesysRest,
        sink: ShardSink,
        state: ShardState,
        settings: Settings,
        socket_factory: SocketFactory,
        load_states: StateLoader | None = None,
        find_orphans: OrphanFinder | None = None,
        owned_elsewhere: OwnedElsewhere | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.users: list[str] = list(dict.fromkeys(users))
        self._member_set = set(self.users)
        self._rest = rest
        self._sink = sink
        self._state = state
        self._settings = settings
        self._socket_factory = socket_factory
        self._load_states = load_states
        self._find_orphans = find_orphans
        self._owned_elsewhere = owned_elsewhere
        self._members_version = 0
        self._resync = asyncio.Event()
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        rng = rng or random.Random()
        self._backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_reset_s, rng=rng, clock=clock
        )
        self._reconcile_backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_reset_s, rng=rng, clock=clock
        )
        self._rotation_backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.backoff_reset_s, rng=rng, clock=clock
        )
        self._last_system_rotation: float | None = None
        self.stats = ShardStats()
        self.channel: ChannelInfo | None = None
        self._lifetime_s: float | None = None
        self._socket: NotificationSocket | None = None
        self._subscribed = 0
        self._connected = False
        self._liveness = Liveness(
            ping_after_s=settings.ping_interval_s,
            pong_timeout_s=settings.pong_timeout_s,
            silence_limit_s=settings.heartbeat_interval_s * settings.heartbeat_timeout_factor,
            now=clock(),
        )
        self._maintenance = asyncio.Event()
        self._resubscribe = asyncio.Event()
        self._resubscribe_reason = ""
        self._rejected: dict[str, RejectedTopic] = {}
        self._rejected_reasons: set[str] = set()
        self._stopping = asyncio.Event()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._drainers: set[asyncio.Task[None]] = set()
        self.fenced = False
        self._loaded = False
        self._removed_early: set[str] = set()
        self._label = str(shard_id)
        self.sweep: Sweep | None = None
        if settings.sweep_interval_s > 0:
            self.sweep = Sweep(
                users=lambda: self.users,
                state=state,
                fetch=lambda users, observed_at: rest.current_changes(users, observed_at=observed_at),
                budget=lambda: rest.budget,
                accept=lambda change: self._accept(change, self.channel_id),
                active=self._sweepable,
                interval_s=settings.sweep_interval_s,
                clock=clock,
                wall=wall,
                sleep=sleep,
                rng=rng,
            )
        self._frame_counters = {
            kind: metrics.GENESYS_EVENTS.labels(kind=kind) for kind in protocol.FRAME_KINDS
        }

    # ------------------------------------------------------------------ public

    @property
    def ready(self) -> bool:
        """Connected, subscribed and the producer is healthy (for /readyz).

        A shard whose every agent was rejected has nothing to subscribe: it is
        ready, and its details name them as unobservable.
        """
        subscribed = self._subscribed > 0 or len(self._rejected) >= len(self.users)
        return self._connected and subscribed and self._sink.healthy and not self.fenced

    @property
    def unobservable(self) -> dict[str, RejectedTopic]:
        """Agents whose topic Genesys rejected, with why."""
        return dict(self._rejected)

    @property
    def channel_id(self) -> str | None:
        return self.channel.id if self.channel else None

    def describe(self) -> dict[str, object]:
        return {
            "connected": self._connected,
            "subscribed": self._subscribed,
            "users": len(self.users),
            "channel": self.channel_id,
            "pending": self._sink.pending,
            "fenced": self.fenced,
            "rejected_topics": len(self._rejected),
            "unobservable": sorted(self._rejected)[:MAX_NAMED_AGENTS],
        }

    async def run(self) -> None:
        """Stream until :meth:`stop` is called or the shard is fenced.

        Raises the sink's error when its producer failed for good (not
        fenced): the shard cannot write again and must be started anew.
        """
        with log.bind(shard=self.shard_id):
            metrics.SHARD_USERS.labels(shard=self._label).set(len(self.users))
            drained = False
            try:
                # Fencing first: it also ends the previous owner's open
                # transaction, so the state read next is the final one.
                await self._sink.start()
                if self._load_states is not None:
                    self._state.load(await self._load_states(self.users))
                self._loaded = True
                await self._tombstone_removed(sorted(self._removed_early - self._member_set))
                self._removed_early.clear()
                await self._tombstone_orphans()
                drained = True  # from here on _run_loop drains, or its sink is dead
                sweeper = asyncio.create_task(self.sweep.run()) if self.sweep is not None else None
                try:
                    await self._run_loop()
                finally:
                    if sweeper is not None:
                        await _cancel_all({"sweep": sweeper})
            except FencedError:
                self._on_fenced()
            finally:
                self._set_disconnected()
                await self._close_socket()
                if not drained:  # failed before serving (e.g. the state load): no producer left behind
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._sink.close(), timeout=self._settings.drain_timeout_s)
                self._forget_gauges()

    async def stop(self) -> None:
        """Stop reading, commit what was read, close the socket (graceful drain)."""
        self._stopping.set()

    async def set_users(self, users: Iterable[str]) -> tuple[list[str], list[str]]:
        """Change the member list in place (no reconnect); returns (added, removed).

        Added users get their last states loaded, then are subscribed with
        POST and reconciled (an unchanged state is not written again); removed
        ones are unsubscribed with a PUT of the remaining list and tombstoned,
        unless another shard of the fleet owns them now (a move: its tombstone
        could commit after the new shard's state). A subscription change that
        fails makes the shard reconnect and subscribe its whole list again; one
        that overlaps a (re)connect's PUT is included by a second PUT.
        """
        new = list(dict.fromkeys(users))
        old = set(self.users)
        added = [u for u in new if u not in old]
        removed = [u for u in self.users if u not in set(new)]
        self.users = new
        self._member_set = set(new)
        self._members_version += 1
        metrics.SHARD_USERS.labels(shard=self._label).set(len(self.users))
        added_ok = True
        if not self._loaded:
            # The states are not loaded yet: tombstone once they are, or the
            # removed agents' last states would stay in the compacted topic.
            self._removed_early.update(removed)
        elif added and self._load_states is not None:
            # Before subscribing: a stream change must never be replaced by an older state.
            try:
                self._state.load(await self._load_states(added))
            except Exception as exc:
                logger.warning("loading the added agents' states failed (%s); reconnecting", exc)
                self._resync.set()
                added_ok = False
        if self.channel is not None and self._connected and added_ok:
            try:
                if removed:
                    await self._subscribe_all()
                elif added:
                    result = await self._rest.post_subscriptions(
                        self.channel.id, [protocol.user_topic(u) for u in added], ignore_errors=True
                    )
                    # The reply lists the whole channel, not only the added topics.
                    self._record_subscription(result, replaced=False)
                if added:
                    await self._reconcile_users(added)
            except Exception as exc:
                logger.warning("changing the subscriptions failed (%s); resubscribing everything", exc)
                self._resync.set()
        if self._loaded:
            # After unsubscribing: telling moves from removals reads Kafka.
            await self._tombstone_removed(removed)
        return added, removed

    async def _tombstone_removed(self, removed: Sequence[str]) -> None:
        """Tombstone agents that left the shard, except those another shard owns now."""
        if not removed:
            return
        if self._owned_elsewhere is not None:
            try:
                moved = set(await self._owned_elsewhere(removed))
            except Exception as exc:
                logger.warning("cannot tell moved from removed agents (%s); no tombstones now", exc)
                return
            removed = [u for u in removed if u not in moved]
        self._tombstone(removed)

    async def _tombstone_orphans(self) -> None:
        """Tombstone agents this fleet wrote for this shard that the map no longer gives it.

        Their removal may have been written while the previous owner was
        frozen: the map this shard started from no longer names them.
        """
        if self._find_orphans is None:
            return
        try:
            orphans = [u for u in await self._find_orphans(self.users) if u not in self._member_set]
        except Exception as exc:
            logger.warning("cannot look for removed agents left in the state topic (%s)", exc)
            return
        if orphans:
            logger.info("tombstoning %d agents removed from this shard while it had no owner", len(orphans))
            metrics.ORPHANS_TOMBSTONED.inc(len(orphans))
            self._tombstone(orphans)

    def _sweepable(self) -> bool:
        """The sweep reads only while connected, subscribed and not reconciling."""
        reconciling = self._reconcile_task is not None and not self._reconcile_task.done()
        return self.ready and not reconciling

    def _tombstone(self, users: Iterable[str]) -> None:
        """Forget agents that left the shard and delete their compacted state.

        A tombstone is written even for an agent with no known state: its old
        record may sit in the topic from an earlier owner.
        """
        for user in users:
            self._state.remove_user(user)
            self._sink.submit_tombstone(user)

    # --------------------------------------------------------------- lifecycle

    async def _run_loop(self) -> None:
        reason = "start"
        while not self._stopping.is_set():
            try:
                await self._connect(reason)
                await self._serve()
            except (FencedError, asyncio.CancelledError):
                raise
            except Exception as exc:  # every failure ends in the retry policy
                if self._sink.error is not None:
                    # Fenced, unauthorized, or a fatal producer error: this sink
                    # never writes again. End the shard (the fleet restarts it
                    # with a new one, or stops the worker on an authorization error).
                    raise self._sink.error from exc
                if self._stopping.is_set():
                    break
                await self._after_failure(exc)
                reason = "reconnect"
        await self._drain()

    async def _after_failure(self, exc: Exception) -> None:
        cause = exc.__cause__ if isinstance(exc, _SocketLost) and exc.__cause__ else exc
        self._set_disconnected()
        await self._close_socket()
        action = classify(cause)
        if action is Action.NEW_CHANNEL:
            logger.warning("channel gone (%s); a new channel will be created", cause)
            metrics.CHANNEL_ROTATIONS.labels(reason="not_found").inc()
            self.channel = None
        elif action is Action.REFRESH_TOKEN:
            logger.warning("authentication failed (%s); refreshing the token", cause)
            await self._rest.invalidate_token()
        elif action is Action.FATAL:
            logger.error("attempt failed and will not succeed as is: %s", cause)
        else:
            logger.warning("socket lost: %s", cause)
        delay = self._backoff.next_delay()
        logger.info("reconnecting in %.2f s", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _connect(self, reason: str) -> None:
        if self.stats.last_gap_started is None:
            self.stats.last_gap_started = self._clock()
        if self.channel is None:
            await self._new_channel()
        assert self.channel is not None
        socket = self._socket_factory()
        try:
            await socket.connect(self.channel.connect_uri)
        except NotFoundError:
            self.channel = None
            raise
        self._socket = socket
        self._liveness.frame(self._clock())
        metrics.CHANNEL_CONNECTS.labels(reason=reason).inc()
        self.stats.connects += 1
        version = -1
        while version != self._members_version:  # set_users ran during the PUT: again
            version = self._members_version
            await self._subscribe_all()
        self._connected = True
        self._resync.clear()
        self.stats.last_connected = self._clock()
        self._backoff.healthy()
        logger.info("connected and subscribed to %d topics", self._subscribed)
        self._start_reconcile()

    async def _new_channel(self) -> None:
        created_at = self._wall()
        self.channel = await self._rest.create_channel()
        self._lifetime_s = max(1.0, (self.channel.expires - created_at).total_seconds())
        log.set_channel(self.channel.id)
        logger.info("created channel expiring at %s", self.channel.expires.isoformat())

    async def _subscribe_all(self) -> None:
        assert self.channel is not None
        topics = [protocol.user_topic(u) for u in self.users]
        result = await self._rest.put_subscriptions(self.channel.id, topics, ignore_errors=True)
        self._record_subscription(result, replaced=True)

    def _record_subscription(self, result: SubscriptionResult, *, replaced: bool) -> None:
        """Count what Genesys permitted; remember, report and gauge what it rejected."""
        topic_users = {protocol.user_topic(u): u for u in self.users}
        permitted = {topic_users[t] for t in result.permitted if t in topic_users}
        rejected: dict[str, RejectedTopic] = {} if replaced else dict(self._rejected)
        for user in permitted:
            rejected.pop(user, None)
        fresh: dict[str, RejectedTopic] = {}
        for topic in result.rejected:
            owner = topic_users.get(topic.id)
            if owner is not None:
                fresh[owner] = topic
        rejected.update(fresh)
        previous = self._rejected
        self._rejected = {u: t for u, t in rejected.items() if u in self._member_set}
        # Named once, not on every reconnect or extension that meets the same refusal.
        fresh = {u: t for u, t in fresh.items() if u not in previous}
        self._subscribed = len(permitted)
        metrics.SUBSCRIBED_TOPICS.labels(shard=self._label).set(self._subscribed)
        counts: dict[str, int] = {}
        for topic in self._rejected.values():
            label = _reason_label(topic.reason)
            counts[label] = counts.get(label, 0) + 1
        for label in self._rejected_reasons | set(counts):
            metrics.SUBSCRIPTION_REJECTED_TOPICS.labels(shard=self._label, reason=label).set(
                counts.get(label, 0)
            )
        self._rejected_reasons |= set(counts)
        if fresh:
            names = sorted(fresh)
            missing = sorted({p for t in fresh.values() for p in t.missing_permissions})
            reasons = sorted({t.reason or "unknown" for t in fresh.values()})
            more = f" and {len(names) - MAX_NAMED_AGENTS} more" if len(names) > MAX_NAMED_AGENTS else ""
            logger.warning(
                "Genesys rejected the topics of %d agents, who will not be observed: %s%s "
                "(reasons: %s; missing permissions: %s)",
                len(names),
                ", ".join(names[:MAX_NAMED_AGENTS]),
                more,
                "; ".join(reasons),
                ", ".join(missing) or "none listed",
            )

    def _set_disconnected(self) -> None:
        if self._connected:
            self.stats.last_gap_started = self._clock()
        self._connected = False
        self._subscribed = 0
        metrics.SUBSCRIBED_TOPICS.labels(shard=self._label).set(0)
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            self._reconcile_task = None

    async def _close_socket(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close()

    async def _serve(self) -> None:
        """Read the socket until it is lost; handle maintenance and extension."""
        assert self._socket is not None
        reader = asyncio.create_task(self._read(self._socket))
        watchdog = asyncio.create_task(self._watchdog())
        extender = asyncio.create_task(self._extender())
        stop_waiter = asyncio.create_task(_wait(self._stopping))
        maint_waiter = asyncio.create_task(_wait(self._maintenance))
        resub_waiter = asyncio.create_task(_wait(self._resubscribe))
        resync_waiter = asyncio.create_task(_wait(self._resync))
        failed = self._sink.failed
        assert failed is not None, "the sink is started before the shard serves"
        try:
            while True:
                waitables: set[asyncio.Future[Any]] = {
                    reader,
                    watchdog,
                    extender,
                    stop_waiter,
                    maint_waiter,
                    resub_waiter,
                    resync_waiter,
                    failed,
                }
                done, _ = await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
                if failed in done:
                    raise failed.result()
                if stop_waiter in done:
                    return
                if resync_waiter in done:
                    raise ChannelClosedError("a subscription change failed; subscribing everything again")
                if resub_waiter in done:
                    # Before the reader: a channel ended right after its system message.
                    self._resubscribe.clear()
                    reason = self._resubscribe_reason
                    logger.warning("Genesys says %s; moving to a new channel", reason)
                    if not await self._pace_system_rotation():
                        return
                    if reason == "token_revoked":
                        await self._rest.invalidate_token()
                    reader = await self._rotate(reader, reason=reason)
                    extender.cancel()
                    extender = asyncio.create_task(self._extender())
                    resub_waiter = asyncio.create_task(_wait(self._resubscribe))
                    continue
                if maint_waiter in done:
                    self._maintenance.clear()
                    reader = await self._handover(reader, reason="maintenance")
                    maint_waiter = asyncio.create_task(_wait(self._maintenance))
                    continue
                if extender in done:
                    exc = extender.exception()
                    if exc is not None:
                        raise exc
                    # The extension did not take: rotate make-before-break.
                    reader = await self._rotate(reader)
                    extender = asyncio.create_task(self._extender())
                    continue
                for task in (reader, watchdog):
                    if task in done:
                        exc = task.exception()
                        raise exc if exc is not None else ChannelClosedError("socket ended")
        finally:
            await _cancel_all(
                {
                    "reader": reader,
                    "watchdog": watchdog,
                    "extender": extender,
                    "stop_waiter": stop_waiter,
                    "maint_waiter": maint_waiter,
                    "resub_waiter": resub_waiter,
                    "resync_waiter": resync_waiter,
                }
            )

    async def _read(self, socket: NotificationSocket) -> None:
        channel_id = self.channel_id
        sink = self._sink
        while True:
            text = await socket.recv()
            self._liveness.frame(self._clock())
            self._handle(text, channel_id)
            if sink.pending > MAX_PENDING_RECORDS:
                # Backpressure: stop reading until Kafka has caught up by half,
                # so a slow broker bounds memory instead of growing a queue.
                # Frames (pongs too) wait unread meanwhile: not silence.
                self._liveness.pause()
                try:
                    await sink.drain_to(MAX_PENDING_RECORDS // 4)
                finally:
                    self._liveness.resume(self._clock())

    async def _handover(self, old_reader: asyncio.Task[None], reason: str) -> asyncio.Task[None]:
        """Make-before-break on the same channel: connect anew, drain the old socket."""
        assert self.channel is not None
        logger.info("socket closing announced; opening its replacement first")
        old_socket = self._socket
        new_socket = self._socket_factory()
        await asyncio.wait_for(new_socket.connect(self.channel.connect_uri), MAINTENANCE_CONNECT_TIMEOUT_S)
        metrics.CHANNEL_CONNECTS.labels(reason=reason).inc()
        self.stats.connects += 1
        self._socket = new_socket
        self._liveness.frame(self._clock())
        self._retire(old_reader, old_socket)
        reader = asyncio.create_task(self._read(new_socket))
        self.stats.last_gap_started = self._clock()
        self._start_reconcile()
        return reader

    async def _pace_system_rotation(self) -> bool:
        """Back off before a system-message rotation that follows another within ``backoff_reset_s``.

        Two channels subscribing the same topics (an owner not yet fenced and
        its successor, say) can each get ``no_longer_subscribed`` in turn; the
        backoff keeps them from spinning. A lone message rotates at once.
        Returns False when the shard is stopping meanwhile.
        """
        now = self._clock()
        last, self._last_system_rotation = self._last_system_rotation, now
        if last is None or now - last >= self._settings.backoff_reset_s:
            self._rotation_backoff.reset()
            return True
        delay = self._rotation_backoff.next_delay()
        logger.warning(
            "another lost-subscription message within %.0f s; waiting %.2f s first", now - last, delay
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        return not self._stopping.is_set()

    async def _rotate(self, old_reader: asyncio.Task[None], reason: str = "expiring") -> asyncio.Task[None]:
        """Replace the channel make-before-break: new channel subscribed and connected first."""
        old_channel, old_socket = self.channel, self._socket
        if reason == "expiring":
            logger.warning("channel extension did not move its expiry; rotating to a new channel")
        await self._new_channel()
        assert self.channel is not None
        new_socket = self._socket_factory()
        await new_socket.connect(self.channel.connect_uri)
        self._socket = new_socket
        self._liveness.frame(self._clock())
        await self._subscribe_all()
        metrics.CHANNEL_CONNECTS.labels(reason="new_channel").inc()
        metrics.CHANNEL_ROTATIONS.labels(reason=reason).inc()
        self.stats.connects += 1
        reader = asyncio.create_task(self._read(new_socket))
        # Both channels deliver until the old one is released; duplicates are
        # dropped by the per-user ordering in ShardState.
        self._retire(old_reader, old_socket)
        if old_channel is not None:
            with contextlib.suppress(GenesysError):
                await self._rest.delete_subscriptions(old_channel.id)
        if old_socket is not None:
            with contextlib.suppress(Exception):
                await old_socket.close()
        self.stats.last_gap_started = self._clock()
        self._start_reconcile()
        return reader

    def _retire(self, reader: asyncio.Task[None], socket: NotificationSocket | None) -> None:
        """Let an old socket's reader run until it closes; its end is not a failure."""

        async def drain() -> None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await reader
            if socket is not None:
                with contextlib.suppress(Exception):
                    await socket.close()

        task = asyncio.create_task(drain())
        self._drainers.add(task)
        task.add_done_callback(self._drainers.discard)

    async def _watchdog(self) -> None:
        """Raise when the socket went silent; ping it when it is quiet (:mod:`bridge.liveness`)."""
        liveness = self._liveness
        gauge_age = metrics.HEARTBEAT_AGE.labels(shard=self._label)
        gauge_exp = metrics.CHANNEL_EXPIRY.labels(shard=self._label)
        while True:
            now = self._clock()
            gauge_age.set(liveness.age(now))
            if self.channel is not None:
                gauge_exp.set((self.channel.expires - self._wall()).total_seconds())
            verdict = liveness.poll(now)
            if verdict is Verdict.DEAD:
                raise ChannelClosedError(liveness.reason(now))
            if verdict is Verdict.PING and self._socket is not None:
                liveness.ping_sent(now)
                await self._socket.send(protocol.ping_frame())
            await self._sleep(WATCHDOG_TICK_S)

    async def _extender(self) -> None:
        """Return when the channel must be rotated; extends it in place otherwise."""
        while True:
            assert self.channel is not None
            lifetime = self._lifetime_s or self._settings.channel_extend_margin_s * 2
            margin = min(self._settings.channel_extend_margin_s, lifetime * EXTEND_LIFETIME_FRACTION)
            wait_s = (self.channel.expires - self._wall()).total_seconds() - margin
            if wait_s > 0:
                await self._sleep(wait_s)
            before = self.channel.expires
            await self._subscribe_all()
            expires = await self._listed_expiry(self.channel.id)
            if expires is None or expires <= before:
                return
            self.channel = ChannelInfo(
                id=self.channel.id, connect_uri=self.channel.connect_uri, expires=expires
            )
            logger.info("channel extended to %s", expires.isoformat())

    async def _listed_expiry(self, channel_id: str) -> datetime | None:
        """The channel's expiry as Genesys lists it; None when the channel is gone.

        A channel made with an earlier token is listed without its id; if
        ``HEAD`` finds it, the extending PUT that just succeeded moved its
        expiry by a lifetime.
        """
        for info in await self._rest.list_channels(INCLUDE_OAUTH_CLIENT):
            if info.id == channel_id:
                return info.expires
        if await self._rest.channel_exists(channel_id):
            lifetime = timedelta(seconds=self._lifetime_s or self._settings.channel_extend_margin_s * 2)
            logger.info(
                "channel made with an earlier token is not listed by id; it exists, so it was extended"
            )
            return self._wall() + lifetime
        return None

    # ------------------------------------------------------------------ frames

    def _handle(self, text: str, channel_id: str | None) -> None:
        self.stats.frames += 1
        try:
            message = protocol.parse_frame(text, observed_at=self._wall(), received_at=self._clock())
        except ProtocolError as exc:
            self._frame_counters["unknown"].inc()
            logger.warning("frame not understood (%s); sent to the dead-letter topic", exc.reason)
            self._sink.submit_dlq(reason=exc.reason, error=str(exc), frame=text, channel_id=channel_id)
            return
        self._frame_counters[message.kind].inc()
        if isinstance(message, protocol.EventMessage):
            self._accept(message.change, channel_id)
        elif isinstance(message, protocol.SocketClosing):
            self._maintenance.set()
        elif isinstance(message, protocol.SubscriptionReply) and message.result == "404":
            raise NotFoundError("the channel no longer exists", status=404)
        elif isinstance(message, protocol.SystemMessage) and message.system_topic_type is not None:
            # A retired socket's channel is already being replaced: only the current one counts.
            if channel_id == self.channel_id and message.channel_id in (None, channel_id):
                self._resubscribe_reason = message.system_topic_type
                self._resubscribe.set()
            else:
                logger.info("%s for a retired channel ignored", message.system_topic_type)

    def _accept(self, change: Change, channel_id: str | None) -> bool:
        if change.user_id not in self._member_set:
            return False
        accepted = self._state.apply(change)
        if isinstance(accepted, Dropped):
            # A reconciliation repeats every unchanged state by design; counting
            # those would bury the stale and duplicate frames of the stream.
            if change.origin is Origin.STREAM:
                _DROPPED[change.kind].inc()
            return False
        self._sink.submit(accepted, channel_id)
        return True

    # ---------------------------------------------------------- reconciliation

    def _start_reconcile(self) -> None:
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
        self._reconcile_task = asyncio.create_task(self._reconcile_all())

    async def _reconcile_all(self) -> None:
        with log.bind(shard=self.shard_id):
            while True:
                try:
                    await self._reconcile_users(self.users)
                    self._reconcile_backoff.reset()
                    break
                except GenesysError as exc:
                    delay = self._reconcile_backoff.next_delay()
                    logger.warning("reconciliation failed (%s); retrying in %.2f s", exc, delay)
                    await self._sleep(delay)
            self.stats.reconciles += 1
            self.stats.last_reconciled = self._clock()
            self.stats.last_gap_started = None
            metrics.RECONCILE_RUNS.inc()
            # The REST pages and records of a reconciliation are garbage now.
            memory.trim()

    async def _reconcile_users(self, users: list[str]) -> None:
        """Fetch current states and emit only what differs from the last recorded ones."""
        for start in range(0, len(users), RECONCILE_BATCH):
            batch = users[start : start + RECONCILE_BATCH]
            observed = self._wall()
            for change in await self._rest.current_changes(batch, observed_at=observed):
                if self._accept(change, self.channel_id):
                    self.stats.corrections += 1
                    metrics.RECONCILE_CORRECTIONS.inc()
        logger.info("reconciled %d users", len(users))

    # ------------------------------------------------------------------- stop

    async def _drain(self) -> None:
        """Commit everything read so far within the drain budget."""
        self._set_disconnected()
        for task in list(self._drainers):
            task.cancel()
        try:
            await asyncio.wait_for(self._sink.close(), timeout=self._settings.drain_timeout_s)
        except TimeoutError:
            logger.error("drain did not finish within %.1f s", self._settings.drain_timeout_s)

    def _forget_gauges(self) -> None:
        """A shard this worker no longer runs must not look disconnected to the alerts."""
        for gauge in (
            metrics.HEARTBEAT_AGE,
            metrics.CHANNEL_EXPIRY,
            metrics.SUBSCRIBED_TOPICS,
            metrics.SHARD_USERS,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(self._label)
        for reason in self._rejected_reasons:
            with contextlib.suppress(KeyError):
                metrics.SUBSCRIPTION_REJECTED_TOPICS.remove(self._label, reason)

    def _on_fenced(self) -> None:
        self.fenced = True
        logger.error("fenced: another worker owns this shard now; closing its channel")
