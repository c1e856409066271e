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
  it sent while no socket was open, and a backfill (:mod:`bridge.backfill`)
  that writes the transitions inside the gap from Genesys's analytics
  history (``origin: "backfill"``); meanwhile the changes of an agent whose
  backfill is pending are held (:meth:`Shard._accept` tests one attribute
  while none is).
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

Where each part lives: the decisions (what a frame or a clock tick means) in
the sans-I/O :class:`~bridge.genesys.session.Session`; the channel, its socket
and the serving tasks in :mod:`bridge.channel`; the member list and the
tombstones in :mod:`bridge.members`; the rejected topics in
:mod:`bridge.subscriptions`; the reconciliation in :mod:`bridge.reconcile`.
:class:`Shard` ties them together and owns the lifecycle. Its I/O seams are the
:class:`~bridge.channel.Sink`, :class:`~bridge.channel.Rest` and
:class:`~bridge.channel.Socket` protocols. ``Shard.connected`` (an
:class:`asyncio.Event`) is set on every connection, so a caller waits for it
instead of polling ``stats.last_connected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from bridge import log, metrics
from bridge.backfill import Backfiller
from bridge.channel import (
    ChannelLink,
    Rest,
    Serving,
    ShardContext,
    ShardStats,
    Sink,
    Socket,
    SocketFactory,
    cancel_all,
)
from bridge.errors import FencedError
from bridge.events import Dropped, ShardState
from bridge.genesys.gaps import Cause
from bridge.genesys.models import ChannelInfo, RejectedTopic
from bridge.genesys.session import Session, SessionConfig
from bridge.members import Members, OrphanFinder, OwnedElsewhere, StateLoader
from bridge.model import Change, Kind, Origin, utc_now_ms
from bridge.reconcile import Reconciler
from bridge.settings import Settings
from bridge.subscriptions import MAX_NAMED_AGENTS
from bridge.sweep import Sweep

__all__ = [
    "OrphanFinder",
    "OwnedElsewhere",
    "Rest",
    "Shard",
    "ShardStats",
    "Sink",
    "Socket",
    "SocketFactory",
    "StateLoader",
    "session_config",
    "write_change",
]

logger = logging.getLogger(__name__)

#: ``bridge_stale_events_total{kind}``: the changes of the stream that the event state dropped.
_DROPPED = {kind: metrics.STALE_EVENTS.labels(kind=kind.value) for kind in Kind}
#: Compared for every change while a ping is out: the stream's changes wait for its pong, not
#: those a REST read found (a stall cannot make a read lose anything).
_STREAM = Origin.STREAM


def session_config(settings: Settings) -> SessionConfig:
    """The session's timing from the worker's settings."""
    return SessionConfig(
        ping_after_s=settings.ping_interval_s,
        pong_timeout_s=settings.pong_timeout_s,
        silence_limit_s=settings.heartbeat_interval_s * settings.heartbeat_timeout_factor,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
        backoff_reset_s=settings.backoff_reset_s,
        extend_margin_s=settings.channel_extend_margin_s,
    )


def write_change(
    state: ShardState,
    sink: Sink,
    change: Change,
    channel_id: str | None,
    stale: Callable[[Change, str | None], None] | None = None,
) -> str | None:
    """Order and write one change; its eventId, or None when the event state dropped it.

    A stale stream change goes to ``stale`` (it may be one Genesys delivered out of order).
    """
    accepted = state.apply(change)
    if isinstance(accepted, Dropped):
        # A reconciliation repeats every unchanged state by design; counting
        # those would bury the stale and duplicate frames of the stream.
        if change.origin is Origin.STREAM:
            _DROPPED[change.kind].inc()
            if accepted is Dropped.STALE and stale is not None:
                stale(change, channel_id)
        return None
    sink.submit(accepted, channel_id)
    return accepted.change.event_id


class Shard:
    """One channel's worth of agents, streamed into Kafka through one sink.

    :attr:`connected` is set each time the shard is connected and subscribed (never
    cleared): ``await shard.connected.wait()`` instead of polling ``last_connected``.
    """

    def __init__(
        self,
        shard_id: int,
        users: Iterable[str],
        *,
        rest: Rest,
        sink: Sink,
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
        self._members = Members(
            users,
            state=state,
            sink=sink,
            load_states=load_states,
            find_orphans=find_orphans,
            owned_elsewhere=owned_elsewhere,
        )
        self._sink = sink
        self._state = state
        self._settings = settings
        self._resync = asyncio.Event()
        self._clock = clock
        rng = rng or random.Random()
        self._session = Session(session_config(settings), rng=rng, now=clock())
        self.stats = ShardStats()
        self.connected = asyncio.Event()
        self._connected = False
        self._stopping = asyncio.Event()
        self.fenced = False
        self._label = str(shard_id)
        ctx = ShardContext(shard_id, rest, self._session, self.stats, self._stopping, clock, wall, sleep)
        self._link = ChannelLink(
            ctx, socket_factory=socket_factory, users=lambda: self.users, members=lambda: self._members.set
        )
        self._backfill = Backfiller(
            ctx, settings=settings, state=state, sink=sink, write=self._write, channel=lambda: self.channel_id
        )
        self._decisions, self._stale = self._backfill.decisions, self._backfill.stale
        self._reconciler = Reconciler(
            ctx,
            users=lambda: self.users,
            accept=lambda change: self._accept(change, self.channel_id),
            read=self._backfill.reconciled,
        )
        self._serving = Serving(
            ctx,
            link=self._link,
            sink=sink,
            accept=self._accept,
            on_gap=self._flowing,
            resync=self._resync,
            on_replacing=self._backfill.replacing,
            on_ping=self._backfill.pinging,
        )
        self._members.farewell = self._backfill.farewell
        self.sweep: Sweep | None = None
        if settings.sweep_interval_s > 0:
            self.sweep = Sweep(
                users=lambda: self.users,
                state=state,
                fetch=lambda users, observed_at: rest.current_changes(users, observed_at=observed_at),
                budget=lambda: rest.budget,
                accept=lambda change: self._backfill.corrected(
                    change, lambda c: self._accept(c, self.channel_id)
                ),
                active=self._sweepable,
                interval_s=settings.sweep_interval_s,
                clock=clock,
                wall=wall,
                sleep=sleep,
                rng=rng,
            )

    # ------------------------------------------------------------------ public

    @property
    def ready(self) -> bool:
        """Connected, subscribed and the producer is healthy (for /readyz).

        A shard whose every agent was rejected has nothing to subscribe: it is
        ready, and its details name them as unobservable.
        """
        subscriptions = self._link.subscriptions
        subscribed = subscriptions.subscribed > 0 or len(subscriptions.rejected) >= len(self.users)
        return self._connected and subscribed and self._sink.healthy and not self.fenced

    @property
    def users(self) -> list[str]:
        """The members (do not mutate; :meth:`set_users` changes them)."""
        return self._members.users

    @property
    def unobservable(self) -> dict[str, RejectedTopic]:
        """Agents whose topic Genesys rejected, with why."""
        return dict(self._link.subscriptions.rejected)

    @property
    def channel(self) -> ChannelInfo | None:
        return self._link.channel

    @property
    def channel_id(self) -> str | None:
        return self._link.channel_id

    def describe(self) -> dict[str, object]:
        rejected = self._link.subscriptions.rejected
        return {
            "connected": self._connected,
            "subscribed": self._link.subscriptions.subscribed,
            "users": len(self.users),
            "channel": self.channel_id,
            "pending": self._sink.pending,
            "fenced": self.fenced,
            "rejected_topics": len(rejected),
            "unobservable": sorted(rejected)[:MAX_NAMED_AGENTS],
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
                await self._members.start()
                self._backfill.loaded(self.users)
                drained = True  # from here on _run_loop drains, or its sink is dead
                tasks = {"backfill": asyncio.create_task(self._backfill.run())}
                if self.sweep is not None:
                    tasks["sweep"] = asyncio.create_task(self.sweep.run())
                try:
                    await self._run_loop()
                finally:
                    await cancel_all(tasks)
            except FencedError:
                self._on_fenced()
            finally:
                self._set_disconnected()
                await self._link.close_socket()
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
        could commit after the new shard's state). A failed subscription change
        makes the shard resubscribe all; one overlapping a (re)connect's PUT is PUT again.
        """
        members = self._members
        added, removed = members.change(users)
        metrics.SHARD_USERS.labels(shard=self._label).set(len(members.users))
        added_ok = True
        if members.loaded and added:
            # Before subscribing: a stream change must never be replaced by an older state.
            try:
                await members.load(added)
            except Exception as exc:
                logger.warning("loading the added agents' states failed (%s); reconnecting", exc)
                self._resync.set()
                added_ok = False
        self._backfill.unobserved(added)  # until subscribed: backfilled from their own last change
        if self.channel is not None and self._connected and added_ok:
            try:
                await self._link.resubscribe(added, removed)
                if added:
                    self._backfill.added(added)
                    await self._reconciler.users(added)
            except Exception as exc:
                logger.warning("changing the subscriptions failed (%s); resubscribing everything", exc)
                self._resync.set()
        self._decisions.forget(removed)
        if members.loaded:
            # After unsubscribing: telling moves from removals reads Kafka.
            await members.tombstone_removed(removed)
        return added, removed

    def _sweepable(self) -> bool:
        """The sweep reads only while connected, subscribed and not reconciling."""
        return self.ready and not self._reconciler.running

    # --------------------------------------------------------------- lifecycle

    async def _run_loop(self) -> None:
        reason = "start"
        while not self._stopping.is_set():
            try:
                await self._connect(reason)
                await self._serving.serve()
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
                self._set_disconnected()
                await self._link.recover(exc)
                reason = "reconnect"
        await self._drain()

    async def _connect(self, reason: str) -> None:
        if self.stats.last_gap_started is None:
            self.stats.last_gap_started = self._clock()
        await self._link.open(reason)
        version = -1
        while version != self._members.version:  # set_users ran during the PUT: again
            version = self._members.version
            await self._link.subscribe_all()
        self._connected = True
        self._resync.clear()
        self.stats.last_connected = now = self._clock()
        self._session.connected(now)
        self.connected.set()
        logger.info("connected and subscribed to %d topics", self._link.subscriptions.subscribed)
        self._flowing()

    def _flowing(self) -> None:
        """Connected and subscribed, or a hand-over or rotation done: the gap ends, reconcile it."""
        self._backfill.flowing(self.users, self._link.subscriptions.rejected)
        self._reconciler.start()

    def _set_disconnected(self) -> None:
        if self._connected:
            self.stats.last_gap_started = self._clock()
            self._backfill.lost(Cause.RECONNECT)
        self._connected = False
        self._link.subscriptions.cleared()
        self._reconciler.cancel()

    # ------------------------------------------------------------------ frames

    def _accept(self, change: Change, channel_id: str | None) -> bool:
        if change.user_id not in self._members.set:
            return False
        if (suspect := self._backfill.suspect) is not None and change.origin is _STREAM:  # a ping is out
            suspect.append((change, channel_id))
            return True
        if self._decisions.active:  # with the test above, the only cost while no backfill is pending
            return self._decisions.offer(change, channel_id)
        return write_change(self._state, self._sink, change, channel_id, self._stale) is not None

    def _write(self, change: Change, channel_id: str | None) -> str | None:
        return write_change(self._state, self._sink, change, channel_id, self._stale)

    # ------------------------------------------------------------------- stop

    async def _drain(self) -> None:
        """Commit everything read so far within the drain budget."""
        self._set_disconnected()
        self._serving.stop_drainers()
        try:
            await asyncio.wait_for(self._sink.close(), timeout=self._settings.drain_timeout_s)
        except TimeoutError:
            logger.error("drain did not finish within %.1f s", self._settings.drain_timeout_s)

    def _forget_gauges(self) -> None:
        """A shard this worker no longer runs must not look disconnected to the alerts."""
        with contextlib.suppress(KeyError):
            metrics.SHARD_USERS.remove(self._label)
        self._link.forget_gauges()

    def _on_fenced(self) -> None:
        self.fenced = True
        logger.error("fenced: another worker owns this shard now; closing its channel")
