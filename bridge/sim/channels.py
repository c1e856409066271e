"""Channels, subscriptions and the fan-out of change frames to sockets (no I/O here).

Limits and lifecycle follow Genesys's notification API: at most ``max_topics`` topics per
channel (400 beyond, nothing applied), at most ``max_channels`` channels per
OAuth client (creating one more evicts the least recently used, channels
without a socket first), expiry after ``ttl_s`` unless a subscription
request extends it, one socket per channel.

Per-topic results: with ``ignoreErrors=true`` a subscription request does not
fail on a bad topic; the reply lists every topic as the SDK's ``ChannelTopic``
(``{id, state: "Permitted"|"Rejected", rejectionReason, missingPermissions}``,
``NotificationsApi.post/put_notifications_channel_subscriptions`` return a
``ChannelTopicEntityListing``). A rejected topic is not subscribed. Reasons
here: an unknown or deleted user, an agent restricted by the admin API (as a
division the client cannot see would be), an invalid topic name. The
``rejectionReason`` texts are the simulator's own: the SDK types the field as
a free string.

A channel remembers the token that created it: ``GET /api/v2/notifications/channels``
lists by token by default and by OAuth client with ``includechannels=oauthclient``.

Sockets are represented by the :class:`Session` protocol; the aiohttp shell
lives in :mod:`bridge.sim.sockets`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from bridge.sim.frames import ws_text_frame
from bridge.sim.org import PRESENCE, ROUTING_STATUS, Change, wall_ms
from bridge.sim.topics import Topic, TopicError, parse_topic

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_EXPIRED",
    "CLOSE_MAINTENANCE",
    "CLOSE_REPLACED",
    "CLOSE_SHUTDOWN",
    "CLOSE_TOKEN_REVOKED",
    "FRAME_FAULT_KINDS",
    "OUT_OF_ORDER_MAX_HOLD_S",
    "PERMITTED",
    "REJECTED",
    "REJECTED_INVALID",
    "REJECTED_NOT_FOUND",
    "Channel",
    "ChannelRegistry",
    "FrameFault",
    "Session",
    "SubscriptionError",
]

# (close code, reason) the server uses when it ends a socket.
CLOSE_EXPIRED = (1000, "channel expired")
CLOSE_EVICTED = (1000, "channel evicted: channel limit per client reached")
CLOSE_REPLACED = (1000, "another socket connected to this channel")
CLOSE_MAINTENANCE = (1001, "socket closing for maintenance")
CLOSE_SHUTDOWN = (1001, "server shutting down")
CLOSE_TOKEN_REVOKED = (1000, "the token that created this channel was revoked")

# ChannelTopic.state values (the SDK's enum) and the simulator's rejection reasons.
PERMITTED = "Permitted"
REJECTED = "Rejected"
REJECTED_NOT_FOUND = "Entity not found"
REJECTED_INVALID = "Invalid topic"
#: (rejectionReason, missingPermissions) for a user's topics, or None when permitted.
Rejection = tuple[str, list[str]] | None

#: ``drop`` loses the change frame while the socket stays healthy (heartbeats
#: and pongs still flow): a loss no liveness check can see, as when Genesys
#: stops delivering a channel's events without closing it.
FRAME_FAULT_KINDS = ("malformed", "duplicate", "out-of-order", "drop")
# A frame held back by an out-of-order fault goes out right after the next
# change of the same user and kind on its socket -- so it arrives stale, the
# case that hurts a consumer -- or after this long if none comes.
OUT_OF_ORDER_MAX_HOLD_S = 1.0


class Session(Protocol):
    """One connected WebSocket, as the registry sees it."""

    channel_id: str
    held: bytes | None
    held_key: tuple[str, str] | None
    held_since: float

    def enqueue(self, wire: bytes) -> None:
        """Queue a framed message for the next flush."""

    def is_stalled(self) -> bool:
        """True while a stall fault silences the socket."""

    def close(self, code: int, reason: str) -> None:
        """Close with a close frame (scheduled)."""

    def abort(self) -> None:
        """Cut the TCP connection without a close frame."""

    def stall(self, seconds: float) -> None:
        """Send nothing at all for ``seconds``."""

    def announce_maintenance(self, grace_s: float) -> None:
        """Send ``v2.system.socket_closing``, close after ``grace_s``."""

    def tick(self, now: float) -> None:
        """Heartbeat and deferred-close timers."""

    def stats(self) -> dict[str, object]:
        """The ``/sim/stats`` view of the socket."""


def _rejected(name: str, reason: str, missing: list[str]) -> dict[str, object]:
    return {"id": name, "state": REJECTED, "rejectionReason": reason, "missingPermissions": list(missing)}


class SubscriptionError(Exception):
    """A rejected subscription request (HTTP status, Genesys code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(eq=False, slots=True)
class Channel:
    """A notification channel owned by one OAuth client."""

    id: str
    client_id: str
    expires_mono: float
    expires_ms: int
    last_used: int
    topics: dict[str, Topic] = field(default_factory=dict)
    session: Session | None = None
    token: str | None = None  # the bearer token that created it


@dataclass(slots=True)
class FrameFault:
    """Pending frame corruption for the next ``remaining`` changes."""

    kind: str
    remaining: int
    channel_id: str | None


_Index = dict[str, dict[Channel, int]]
_LEN16 = 126
_LEN64 = 127


def _payload(wire: bytes) -> bytes:
    """The payload of an unmasked frame built by :func:`ws_text_frame`."""
    n = wire[1] & 0x7F
    return wire[2:] if n < _LEN16 else wire[4:] if n == _LEN16 else wire[10:]


class ChannelRegistry:
    """Every channel, its subscriptions, its socket, and the user → channels index."""

    def __init__(
        self,
        *,
        ttl_s: float,
        extend_on_subscribe: bool,
        max_channels: int,
        max_topics: int,
        rejection: Callable[[str], Rejection],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], int] = wall_ms,
    ) -> None:
        self.ttl_s = ttl_s
        self.extend_on_subscribe = extend_on_subscribe
        self.max_channels = max_channels
        self.max_topics = max_topics
        self._rejection = rejection
        self._clock = clock
        self._wall = wall
        self.channels: dict[str, Channel] = {}
        self._index: dict[str, _Index] = {PRESENCE: {}, ROUTING_STATUS: {}}
        self._use = 0
        self.frame_faults: list[FrameFault] = []
        self.frames_delivered = 0
        self.frames_lost = 0
        self._holders: set[Session] = set()

    # -- lifecycle ------------------------------------------------------------

    def _touch(self, channel: Channel) -> None:
        self._use += 1
        channel.last_used = self._use

    def _extend(self, channel: Channel) -> None:
        channel.expires_mono = self._clock() + self.ttl_s
        channel.expires_ms = self._wall() + int(self.ttl_s * 1000)

    def create(self, client_id: str, token: str | None = None) -> tuple[Channel, Channel | None]:
        """A new channel for ``client_id`` (made with ``token``), and the channel evicted to make room."""
        evicted = None
        owned = [c for c in self.channels.values() if c.client_id == client_id]
        if len(owned) >= self.max_channels:
            evicted = min(owned, key=lambda c: (c.session is not None, c.last_used))
            self.remove(evicted, CLOSE_EVICTED)
        self._use += 1
        channel = Channel(
            id=str(uuid.uuid4()),
            client_id=client_id,
            expires_mono=0.0,
            expires_ms=0,
            last_used=self._use,
            token=token,
        )
        self._extend(channel)
        self.channels[channel.id] = channel
        return channel, evicted

    def get(self, channel_id: str) -> Channel | None:
        """The live channel with this id (an expired one is removed on sight)."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.expires_mono <= self._clock():
            self.remove(channel, CLOSE_EXPIRED)
            return None
        return channel

    def owned(self, client_id: str, channel_id: str) -> Channel | None:
        """The caller's live channel; another client's channel is as good as missing."""
        channel = self.get(channel_id)
        return channel if channel is not None and channel.client_id == client_id else None

    def of_client(self, client_id: str) -> list[Channel]:
        """The caller's live channels."""
        self.expire_due()
        return [c for c in self.channels.values() if c.client_id == client_id]

    def remove(self, channel: Channel, close: tuple[int, str]) -> None:
        """Delete a channel and its subscriptions; close its socket."""
        if self.channels.pop(channel.id, None) is None:
            return
        self._set_topics(channel, {})
        session, channel.session = channel.session, None
        if session is not None:
            session.close(*close)

    def expire_due(self) -> list[Channel]:
        """Remove every channel past its expiry; returns them."""
        now = self._clock()
        due = [c for c in self.channels.values() if c.expires_mono <= now]
        for channel in due:
            self.remove(channel, CLOSE_EXPIRED)
        return due

    # -- sockets --------------------------------------------------------------

    def attach(self, channel: Channel, session: Session) -> None:
        """Make ``session`` the channel's socket, closing the previous one."""
        previous, channel.session = channel.session, session
        self._touch(channel)
        if previous is not None and previous is not session:
            previous.close(*CLOSE_REPLACED)

    def detach(self, channel: Channel, session: Session) -> None:
        """Forget ``session`` if it is still the channel's socket."""
        if channel.session is session:
            channel.session = None

    def sessions(self) -> list[Session]:
        """Every connected socket."""
        return [c.session for c in self.channels.values() if c.session is not None]

    def select(self, channel_id: str | None) -> list[Channel]:
        """One live channel by id, or every live channel when ``channel_id`` is None."""
        if channel_id is None:
            self.expire_due()
            return list(self.channels.values())
        channel = self.get(channel_id)
        return [channel] if channel is not None else []

    # -- subscriptions ----------------------------------------------------------

    def _set_topics(self, channel: Channel, topics: dict[str, Topic]) -> None:
        for topic in channel.topics.values():
            for kind in topic.kinds:
                subs = self._index[kind][topic.user_id]
                subs[channel] -= 1
                if not subs[channel]:
                    del subs[channel]
                    if not subs:
                        del self._index[kind][topic.user_id]
        channel.topics = topics
        for topic in topics.values():
            for kind in topic.kinds:
                subs = self._index[kind].setdefault(topic.user_id, {})
                subs[channel] = subs.get(channel, 0) + 1

    def _validate(
        self, names: Iterable[object], ignore_errors: bool
    ) -> tuple[dict[str, Topic], list[dict[str, object]]]:
        valid: dict[str, Topic] = {}
        rejected: list[dict[str, object]] = []
        for name in names:
            try:
                topic = parse_topic(name)
            except TopicError as exc:
                if not ignore_errors:
                    raise SubscriptionError(400, "bad.request", str(exc)) from None
                rejected.append(_rejected(str(name), REJECTED_INVALID, []))
                continue
            rejection = self._rejection(topic.user_id)
            if rejection is not None:
                rejected.append(_rejected(topic.name, *rejection))
                continue
            valid[topic.name] = topic
        if rejected and not ignore_errors:
            names_text = ", ".join(str(r["id"]) for r in rejected[:10])
            raise SubscriptionError(403, "forbidden", f"Not authorized to subscribe to topics: {names_text}")
        return valid, rejected

    def _apply(self, channel: Channel, topics: dict[str, Topic]) -> list[str]:
        if len(topics) > self.max_topics:
            raise SubscriptionError(
                400,
                "bad.request",
                f"Channel topic limit exceeded: {len(topics)} topics requested, at most {self.max_topics}",
            )
        self._set_topics(channel, topics)
        self._touch(channel)
        if self.extend_on_subscribe:
            self._extend(channel)
        return list(topics)

    def subscribe(
        self, channel: Channel, names: Iterable[object], *, replace: bool, ignore_errors: bool
    ) -> list[dict[str, object]]:
        """POST (add) or PUT (replace) subscriptions.

        Returns the reply's ``ChannelTopic`` list: every topic of the channel
        (Permitted), then this request's rejected topics (only with
        ``ignore_errors``; without it a rejected topic fails the request).
        """
        valid, rejected = self._validate(names, ignore_errors)
        topics = valid if replace else {**channel.topics, **valid}
        permitted = self._apply(channel, topics)
        results: list[dict[str, object]] = [{"id": name, "state": PERMITTED} for name in permitted]
        return results + rejected

    def unsubscribe(self, channel: Channel, names: Iterable[object]) -> list[str]:
        """Remove the named topics (unknown names are ignored)."""
        drop = {n for n in names if isinstance(n, str)}
        return self._apply(channel, {k: v for k, v in channel.topics.items() if k not in drop})

    def clear(self, channel: Channel) -> None:
        """DELETE: remove every subscription (does not extend the channel)."""
        self._set_topics(channel, {})
        self._touch(channel)

    def unsubscribe_all(self, channel: Channel) -> None:
        """Drop every subscription without a client request (``no_longer_subscribed``)."""
        self._set_topics(channel, {})

    # -- fan-out ----------------------------------------------------------------

    def targets(self, change: Change) -> dict[Channel, int] | None:
        """The channels subscribed to this change's user and kind (None if none)."""
        return self._index[change.kind].get(change.user_id)

    def deliver(self, targets: Iterable[Channel], wire: bytes, key: tuple[str, str] | None = None) -> None:
        """Send one change's frame to every socket of ``targets``.

        Channels without a socket, or with a stalled one, lose the frame for
        good: Genesys never replays. ``key`` (user id, kind) names the change
        for the out-of-order fault.
        """
        if self.frame_faults or self._holders:
            self._deliver_faulty(targets, wire, key)
            return
        for channel in targets:
            session = channel.session
            if session is None or session.is_stalled():
                self.frames_lost += 1
                continue
            session.enqueue(wire)
            self.frames_delivered += 1

    def _deliver_faulty(self, targets: Iterable[Channel], wire: bytes, key: tuple[str, str] | None) -> None:
        fault = self.frame_faults[0] if self.frame_faults else None
        applied = False
        for channel in targets:
            session = channel.session
            if session is None or session.is_stalled():
                self.frames_lost += 1
                continue
            if fault is None or (fault.channel_id is not None and fault.channel_id != channel.id):
                self.frames_delivered += 1
                self._send_change(session, wire, key)
                continue
            applied = True
            if fault.kind == "drop":
                self.frames_lost += 1
                continue
            self.frames_delivered += 1
            if fault.kind == "malformed":
                # An extra, truncated copy first (still valid UTF-8 text, not
                # valid JSON); the real frame follows so no change is lost.
                payload = _payload(wire)
                session.enqueue(ws_text_frame(payload[: len(payload) // 2]))
                self._send_change(session, wire, key)
            elif fault.kind == "duplicate":
                self._send_change(session, wire, key)
                session.enqueue(wire)
                self.frames_delivered += 1
            else:  # out-of-order: hold it back until the user's next change
                self._flush_held(session)
                session.held = wire
                session.held_key = key
                session.held_since = self._clock()
                self._holders.add(session)
        if fault is not None and applied:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.frame_faults.pop(0)

    def _flush_held(self, session: Session) -> None:
        if session.held is not None:
            held, session.held = session.held, None
            session.enqueue(held)
        self._holders.discard(session)

    def _send_change(self, session: Session, wire: bytes, key: tuple[str, str] | None) -> None:
        session.enqueue(wire)
        if session.held_key is None or session.held_key == key:
            self._flush_held(session)

    def release_held(self) -> None:
        """Send frames an out-of-order fault held back for too long."""
        now = self._clock()
        for session in list(self._holders):
            if now - session.held_since >= OUT_OF_ORDER_MAX_HOLD_S:
                self._flush_held(session)

    def forget(self, session: Session) -> None:
        """Drop a closed socket's held frame."""
        session.held = None
        self._holders.discard(session)

    # -- stats ----------------------------------------------------------------

    def user_ids(self, channel: Channel) -> list[str]:
        """Distinct users the channel is subscribed to, sorted."""
        return sorted({t.user_id for t in channel.topics.values()})

    def topic_count(self) -> int:
        """Topics across all channels."""
        return sum(len(c.topics) for c in self.channels.values())
