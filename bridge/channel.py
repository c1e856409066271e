"""One shard's channel and sockets: create, subscribe, read, watch, extend, rotate, hand over.

:class:`ChannelLink` executes what the shard's sans-I/O
:class:`~bridge.genesys.session.Session` decides: it owns the tasks (reader,
watchdog, extender) of the current socket, the REST calls on the channel and
the socket hand-overs; the :class:`~bridge.shard.Shard` owns the member list,
the agents' states and the lifecycle around it. The I/O seams are the
:class:`Sink`, :class:`Rest` and :class:`Socket` protocols (the real ones are
:class:`bridge.sink.ShardSink`, :class:`bridge.genesys.rest.GenesysRest` and
:class:`bridge.genesys.socket.NotificationSocket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from bridge import log, metrics
from bridge.errors import ChannelClosedError, GenesysError, NotFoundError, SinkError
from bridge.events import Accepted
from bridge.genesys import protocol
from bridge.genesys.budget import RequestBudget
from bridge.genesys.gaps import GapSink
from bridge.genesys.history import UserHistory
from bridge.genesys.models import ChannelInfo, SubscriptionResult
from bridge.genesys.rest import INCLUDE_OAUTH_CLIENT
from bridge.genesys.retry import Action
from bridge.genesys.session import EXPIRING, Accept, DeadLetter, HandOver, Ponged, Reconnect, Rotate, Session
from bridge.model import Change
from bridge.subscriptions import Subscriptions

__all__ = [
    "HANDOVER",
    "MAINTENANCE_CONNECT_TIMEOUT_S",
    "MAX_PENDING_RECORDS",
    "ROTATION",
    "TASK_STOP_TIMEOUT_S",
    "WATCHDOG_TICK_S",
    "ChannelLink",
    "Rest",
    "Serving",
    "ShardContext",
    "ShardStats",
    "Sink",
    "Socket",
    "SocketFactory",
    "cancel_all",
]

logger = logging.getLogger(__name__)

#: How often the watchdog looks at the socket's silence and the gauges.
WATCHDOG_TICK_S: Final = 0.25
#: Bound on waiting for a maintenance socket's replacement.
MAINTENANCE_CONNECT_TIMEOUT_S: Final = 30.0
#: How long a cancelled serving task (reader, watchdog, …) may take to end.
TASK_STOP_TIMEOUT_S: Final = 2.0
#: The gap causes of a socket hand-over and a channel rotation (``bridge.gaps.v1``).
HANDOVER: Final = "handover"
ROTATION: Final = "rotation"
#: Records read but not yet committed above which the shard stops reading its
#: socket until they are (about 10 MB of encoded records).
MAX_PENDING_RECORDS: Final = 20_000


class Sink(GapSink, Protocol):
    """Where a shard writes (:class:`bridge.sink.ShardSink`)."""

    @property
    def healthy(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    @property
    def error(self) -> SinkError | None: ...
    @property
    def failed(self) -> asyncio.Future[SinkError] | None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def drain_to(self, max_pending_items: int, /) -> None: ...
    def submit(self, accepted: Accepted, channel_id: str | None, /) -> None: ...
    def submit_tombstone(self, user_id: str, /) -> None: ...
    def submit_dlq(self, *, reason: str, error: str, frame: str, channel_id: str | None) -> None: ...


class Rest(Protocol):
    """The Genesys REST calls of a shard (:class:`bridge.genesys.rest.GenesysRest`)."""

    @property
    def budget(self) -> RequestBudget | None: ...
    async def create_channel(self) -> ChannelInfo: ...
    async def channel_exists(self, channel_id: str, /) -> bool: ...
    async def list_channels(self, include: str, /) -> list[ChannelInfo]: ...
    async def put_subscriptions(
        self, channel_id: str, topics: Sequence[str], /, ignore_errors: bool = False
    ) -> SubscriptionResult: ...
    async def post_subscriptions(
        self, channel_id: str, topics: Sequence[str], /, ignore_errors: bool = False
    ) -> SubscriptionResult: ...
    async def delete_subscriptions(self, channel_id: str, /) -> None: ...
    async def current_changes(self, user_ids: Sequence[str], /, *, observed_at: datetime) -> list[Change]: ...
    async def user_history(
        self, user_ids: Sequence[str], start: datetime, end: datetime, /
    ) -> dict[str, UserHistory]: ...
    async def invalidate_token(self) -> None: ...


class Socket(Protocol):
    """A notification socket (:class:`bridge.genesys.socket.NotificationSocket`)."""

    async def connect(self, uri: str, /) -> None: ...
    async def recv(self) -> str: ...
    async def send(self, text: str, /) -> None: ...
    async def close(self) -> None: ...


SocketFactory = Callable[[], Socket]


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


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def cancel_all(tasks: Mapping[str, asyncio.Task[Any]]) -> None:
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


@dataclass(frozen=True)
class ShardContext:
    """What the parts of one shard share: its id, REST client, session, stats, stop signal and time."""

    shard_id: int
    rest: Rest
    session: Session
    stats: ShardStats
    stopping: asyncio.Event
    clock: Callable[[], float]
    wall: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]

    @property
    def label(self) -> str:
        """The ``shard`` label of the shard's metrics."""
        return str(self.shard_id)


class ChannelLink:
    """The channel and current socket of one shard: create, connect, subscribe, extend, recover."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        socket_factory: SocketFactory,
        users: Callable[[], Sequence[str]],
        members: Callable[[], Collection[str]],
    ) -> None:
        self._ctx = ctx
        self._socket_factory = socket_factory
        self._users = users
        self.channel: ChannelInfo | None = None
        self.socket: Socket | None = None
        self.subscriptions = Subscriptions(ctx.label, users=users, members=members)

    @property
    def channel_id(self) -> str | None:
        return self.channel.id if self.channel else None

    # ------------------------------------------------------------ channel

    def forget_channel(self) -> None:
        """The channel is gone: the next :meth:`open` creates one."""
        self.channel = None
        self._ctx.session.channel_lost()

    async def open(self, reason: str) -> None:
        """Connect a socket to the channel, creating a channel first if there is none."""
        if self.channel is None:
            await self.new_channel()
        try:
            await self.connect_socket()
        except NotFoundError:
            self.forget_channel()
            raise
        metrics.CHANNEL_CONNECTS.labels(reason=reason).inc()
        self._ctx.stats.connects += 1

    async def connect_socket(self) -> Socket | None:
        """Connect a new socket to the channel and make it current; returns the socket it replaces."""
        assert self.channel is not None
        socket = self._socket_factory()
        await socket.connect(self.channel.connect_uri)
        old, self.socket = self.socket, socket
        self._ctx.session.socket_opened(self._ctx.clock())
        return old

    async def new_channel(self) -> None:
        """Create a channel and make it current (its subscriptions and socket follow)."""
        created_at = self._ctx.wall()
        self.channel = channel = await self._ctx.rest.create_channel()
        self._ctx.session.channel_created(channel.id, channel.expires, created_at=created_at)
        log.set_channel(channel.id)
        logger.info("created channel expiring at %s", channel.expires.isoformat())

    async def subscribe_all(self) -> None:
        """PUT every member's topic (replaces the channel's list and extends the channel)."""
        assert self.channel is not None
        topics = [protocol.user_topic(u) for u in self._users()]
        result = await self._ctx.rest.put_subscriptions(self.channel.id, topics, ignore_errors=True)
        self.subscriptions.record(result, replaced=True)

    async def subscribe(self, users: Sequence[str]) -> None:
        """POST the topics of added members."""
        assert self.channel is not None
        topics = [protocol.user_topic(u) for u in users]
        result = await self._ctx.rest.post_subscriptions(self.channel.id, topics, ignore_errors=True)
        # The reply lists the whole channel, not only the added topics.
        self.subscriptions.record(result, replaced=False)

    async def recover(self, cause: Exception) -> None:
        """After a failure: close the socket, do what the retry policy says, then wait its backoff."""
        await self.close_socket()
        recovery = self._ctx.session.failed(cause, self._ctx.clock())
        if recovery.action is Action.NEW_CHANNEL:
            logger.warning("channel gone (%s); a new channel will be created", cause)
            metrics.CHANNEL_ROTATIONS.labels(reason="not_found").inc()
            self.forget_channel()
        elif recovery.action is Action.REFRESH_TOKEN:
            logger.warning("authentication failed (%s); refreshing the token", cause)
            await self._ctx.rest.invalidate_token()
        elif recovery.action is Action.FATAL:
            logger.error("attempt failed and will not succeed as is: %s", cause)
        else:
            logger.warning("socket lost: %s", cause)
        logger.info("reconnecting in %.2f s", recovery.delay_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ctx.stopping.wait(), timeout=recovery.delay_s)

    def forget_gauges(self) -> None:
        """The series of a shard this worker no longer runs must not look disconnected to the alerts."""
        for gauge in (metrics.HEARTBEAT_AGE, metrics.CHANNEL_EXPIRY, metrics.SUBSCRIBED_TOPICS):
            with contextlib.suppress(KeyError):
                gauge.remove(self._ctx.label)
        self.subscriptions.forget_gauges()

    async def resubscribe(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """A member-list change: PUT the remaining list when some left, else POST the added ones."""
        if removed:
            await self.subscribe_all()
        elif added:
            await self.subscribe(added)

    async def close_socket(self) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close()

    async def extend(self) -> None:
        """Extend the channel in place before it expires; return when it must be rotated instead."""
        session = self._ctx.session
        while True:
            assert self.channel is not None
            wait_s = session.extension_wait_s(self._ctx.wall())
            if wait_s > 0:
                await self._ctx.sleep(wait_s)
            before = self.channel.expires
            await self.subscribe_all()
            expires = await self._listed_expiry(self.channel.id)
            if session.extension_result(before, expires) is not None:
                return
            assert expires is not None
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
        for info in await self._ctx.rest.list_channels(INCLUDE_OAUTH_CLIENT):
            if info.id == channel_id:
                return info.expires
        if await self._ctx.rest.channel_exists(channel_id):
            logger.info(
                "channel made with an earlier token is not listed by id; it exists, so it was extended"
            )
            return self._ctx.session.assumed_expiry(self._ctx.wall())
        return None


class Serving:
    """The tasks that serve one shard's channel: reader, watchdog, extender, hand-overs and rotations."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        link: ChannelLink,
        sink: Sink,
        accept: Callable[[Change, str | None], bool],
        on_gap: Callable[[], None],
        resync: asyncio.Event,
        on_replacing: Callable[[str], None] | None = None,
        on_ping: Callable[[bool], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._link = link
        self._sink = sink
        self._accept = accept
        self._on_gap = on_gap
        self._on_replacing = on_replacing
        self._on_ping = on_ping
        self._resync = resync
        self._maintenance = asyncio.Event()
        self._rotation_asked = asyncio.Event()
        self._rotation = Rotate("")
        self._drainers: set[asyncio.Task[None]] = set()
        self._frame_counters = {
            kind: metrics.GENESYS_EVENTS.labels(kind=kind) for kind in protocol.FRAME_KINDS
        }
        # Frames counted here, added to bridge_genesys_events_total by flush_counts
        # (every watchdog tick): a plain int per frame instead of a locked counter.
        self._frame_counts = dict.fromkeys(protocol.FRAME_KINDS, 0)

    # ------------------------------------------------------------ requests

    def hand_over(self) -> None:
        """Maintenance announced: the serving loop opens a new socket on the channel."""
        self._maintenance.set()

    def rotate(self, rotation: Rotate) -> None:
        """A lost-subscription message: the serving loop moves to a new channel."""
        self._rotation = rotation
        self._rotation_asked.set()

    def stop_drainers(self) -> None:
        """Stop draining retired sockets (the shard is stopping)."""
        for task in list(self._drainers):
            task.cancel()

    async def serve(self) -> None:
        """Read the socket until it is lost; handle maintenance, rotations and extension."""
        assert self._link.socket is not None
        reader = asyncio.create_task(self._read(self._link.socket))
        watchdog = asyncio.create_task(self._watchdog())
        extender = asyncio.create_task(self._link.extend())
        stop_waiter = asyncio.create_task(_wait(self._ctx.stopping))
        maint_waiter = asyncio.create_task(_wait(self._maintenance))
        resub_waiter = asyncio.create_task(_wait(self._rotation_asked))
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
                    self._rotation_asked.clear()
                    rotation = self._rotation
                    logger.warning("Genesys says %s; moving to a new channel", rotation.reason)
                    if not await self._pace_rotation():
                        return
                    if rotation.refresh_token:
                        await self._ctx.rest.invalidate_token()
                    reader = await self._rotate(reader, reason=rotation.reason)
                    extender.cancel()
                    extender = asyncio.create_task(self._link.extend())
                    resub_waiter = asyncio.create_task(_wait(self._rotation_asked))
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
                    extender = asyncio.create_task(self._link.extend())
                    continue
                for task in (reader, watchdog):
                    if task in done:
                        exc = task.exception()
                        raise exc if exc is not None else ChannelClosedError("socket ended")
        finally:
            await cancel_all(
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
            self.flush_counts()  # what the reader counted last

    def flush_counts(self) -> None:
        """Add the frames counted since the last flush to ``bridge_genesys_events_total``."""
        counts = self._frame_counts
        for kind, count in counts.items():
            if count:
                self._frame_counters[kind].inc(count)
                counts[kind] = 0

    def handle(self, text: str, channel_id: str | None) -> None:
        """Count one frame read from the socket of ``channel_id`` and execute the session's action.

        Runs once per frame (the hot path): parse, order, enrich, submit. The
        count reaches the metric at the next :meth:`flush_counts`.
        """
        ctx = self._ctx
        ctx.stats.frames += 1
        kind, action = ctx.session.frame(text, channel_id, ctx.clock(), ctx.wall())
        self._frame_counts[kind] += 1
        if action is None:
            return
        if type(action) is Accept:
            self._accept(action.change, channel_id)
        elif type(action) is DeadLetter:
            logger.warning("frame not understood (%s); sent to the dead-letter topic", action.reason)
            self._sink.submit_dlq(
                reason=action.reason, error=action.error, frame=action.frame, channel_id=channel_id
            )
        elif type(action) is HandOver:
            self._maintenance.set()
        elif type(action) is Reconnect:
            raise action.cause
        elif type(action) is Rotate:
            self.rotate(action)
        elif type(action) is Ponged and self._on_ping is not None:
            self._on_ping(False)

    async def _read(self, socket: Socket) -> None:
        channel_id = self._link.channel_id
        sink, session, handle = self._sink, self._ctx.session, self.handle
        while True:
            handle(await socket.recv(), channel_id)
            if sink.pending > MAX_PENDING_RECORDS:
                # Backpressure: stop reading until Kafka has caught up by half,
                # so a slow broker bounds memory instead of growing a queue.
                # Frames (pongs too) wait unread meanwhile: not silence.
                session.reading_paused()
                try:
                    await sink.drain_to(MAX_PENDING_RECORDS // 4)
                finally:
                    session.reading_resumed(self._ctx.clock())

    async def _handover(self, old_reader: asyncio.Task[None], reason: str) -> asyncio.Task[None]:
        """Make-before-break on the same channel: connect anew, drain the old socket."""
        logger.info("socket closing announced; opening its replacement first")
        self._replacing(HANDOVER)
        old_socket = await asyncio.wait_for(self._link.connect_socket(), MAINTENANCE_CONNECT_TIMEOUT_S)
        metrics.CHANNEL_CONNECTS.labels(reason=reason).inc()
        self._ctx.stats.connects += 1
        self._retire(old_reader, old_socket)
        assert self._link.socket is not None
        reader = asyncio.create_task(self._read(self._link.socket))
        self._gap()
        return reader

    async def _pace_rotation(self) -> bool:
        """Wait the session's delay before a system-message rotation; False when stopping meanwhile."""
        delay = self._ctx.session.rotation_delay(self._ctx.clock())
        if not delay:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ctx.stopping.wait(), timeout=delay)
        return not self._ctx.stopping.is_set()

    async def _rotate(self, old_reader: asyncio.Task[None], reason: str = EXPIRING) -> asyncio.Task[None]:
        """Replace the channel make-before-break: new channel subscribed and connected first."""
        link = self._link
        old_channel = link.channel
        if reason == EXPIRING:
            logger.warning("channel extension did not move its expiry; rotating to a new channel")
        self._replacing(ROTATION)
        await link.new_channel()
        old_socket = await link.connect_socket()
        new_socket = link.socket
        assert new_socket is not None
        await link.subscribe_all()
        metrics.CHANNEL_CONNECTS.labels(reason="new_channel").inc()
        metrics.CHANNEL_ROTATIONS.labels(reason=reason).inc()
        self._ctx.stats.connects += 1
        reader = asyncio.create_task(self._read(new_socket))
        # Both channels deliver until the old one is released; duplicates are
        # dropped by the per-user ordering in ShardState.
        self._retire(old_reader, old_socket)
        if old_channel is not None:
            with contextlib.suppress(GenesysError):
                await self._ctx.rest.delete_subscriptions(old_channel.id)
        if old_socket is not None:
            with contextlib.suppress(Exception):
                await old_socket.close()
        self._gap()
        return reader

    def _replacing(self, cause: str) -> None:
        """A replacement socket or channel is being opened: a gap may begin now."""
        if self._on_replacing is not None:
            self._on_replacing(cause)

    def _gap(self) -> None:
        """A socket was replaced: what it may have missed is reconciled."""
        self._ctx.stats.last_gap_started = self._ctx.clock()
        self._on_gap()

    def _retire(self, reader: asyncio.Task[None], socket: Socket | None) -> None:
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
        session, link = self._ctx.session, self._link
        gauge_age = metrics.HEARTBEAT_AGE.labels(shard=self._ctx.label)
        gauge_exp = metrics.CHANNEL_EXPIRY.labels(shard=self._ctx.label)
        while True:
            self.flush_counts()
            now = self._ctx.clock()
            gauge_age.set(session.heartbeat_age(now))
            expires_in = session.expires_in(self._ctx.wall())
            if expires_in is not None:
                gauge_exp.set(expires_in)
            action = session.tick(now, can_ping=link.socket is not None)
            if isinstance(action, Reconnect):
                raise action.cause
            if action is not None and link.socket is not None:
                if self._on_ping is not None:
                    self._on_ping(True)
                await link.socket.send(action.frame)
            await self._ctx.sleep(WATCHDOG_TICK_S)
