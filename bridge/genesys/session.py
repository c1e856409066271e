"""What a shard decides about its channel, sans-I/O: frames and clock readings in, actions out.

:mod:`bridge.genesys.protocol` turns a frame into a typed message; this module
decides what the shard does about it, and about the passing of time, without
a socket, a task or a clock of its own (every input carries ``now``, monotonic
seconds, or ``wall``, aware UTC). The shard (:mod:`bridge.shard`) keeps the
tasks, the sockets and the REST calls and executes the actions. The decisions:

- **frames** (:meth:`Session.frame`): every frame proves the socket alive. A
  presence or routing change → :class:`Accept`; a frame that does not parse →
  :class:`DeadLetter` (reason slug, error, the frame); ``v2.system.socket_closing``
  (maintenance) → :class:`HandOver` (a new socket on the same channel first,
  then the old one drained); a ``{"result": "404"}`` reply (the channel is
  gone) → :class:`Reconnect` with a ``NotFoundError``; a lost-subscription
  system message (``no_longer_subscribed``, ``subscription_changed``,
  ``token_revoked``) on the current channel → :class:`Rotate` to a new channel
  make-before-break, with a token refresh first after ``token_revoked``. The
  same message from a retired socket's channel, or naming another channel, is
  ignored: that channel is already being replaced. Heartbeats, pongs and
  other topics need nothing but the count (each call also returns the frame's
  ``bridge_genesys_events_total`` kind).
- **watchdog** (:meth:`Session.tick`, :mod:`bridge.liveness`): after
  ``ping_after_s`` of silence → :class:`Ping`; no frame within
  ``pong_timeout_s`` of it, or ``silence_limit_s`` of silence whatever the
  pings → :class:`Reconnect` with a ``ChannelClosedError``. Time the reader
  spends blocked on Kafka (:meth:`Session.reading_paused` /
  :meth:`Session.reading_resumed`) is not silence.
- **failures** (:meth:`Session.failed`): the retry policy
  (:func:`bridge.genesys.retry.classify`) picks retry, token refresh, a new
  channel (the current one is forgotten) or a logged fatal attempt; the delay
  is a full-jitter backoff reset after ``backoff_reset_s`` connected
  (:meth:`Session.connected`).
- **system-message pacing** (:meth:`Session.rotation_delay`): a lost-subscription
  rotation that follows another within ``backoff_reset_s`` waits a backoff
  first (two channels of the same topics can hand such messages back and
  forth); a lone one rotates at once.
- **extension** (:meth:`Session.extension_wait_s`, :meth:`Session.extension_result`):
  the subscriptions are PUT again ``extend_margin_s`` (at most a third of the
  channel's lifetime) before ``expires``; when the listed expiry did not move,
  → :class:`Rotate` (``reason="expiring"``).
- **reconciliation** (:meth:`Session.reconcile_failed`): a failed one is
  retried after its own backoff.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bridge.errors import ChannelClosedError, NotFoundError, ProtocolError
from bridge.genesys import protocol
from bridge.genesys.retry import Action, Backoff, classify
from bridge.liveness import Liveness, Verdict

__all__ = [
    "EXPIRING",
    "EXTEND_LIFETIME_FRACTION",
    "MAX_LINK_LAG",
    "MIN_LIFETIME_S",
    "TOKEN_REVOKED",
    "Accept",
    "DeadLetter",
    "FrameAction",
    "HandOver",
    "Ping",
    "Ponged",
    "Reconnect",
    "Recovery",
    "Rotate",
    "Session",
    "SessionConfig",
]

logger = logging.getLogger(__name__)

#: Never extend later than a third of the channel's lifetime before it ends
#: (matters only for short test lifetimes; 24 h channels use the margin).
EXTEND_LIFETIME_FRACTION: Final = 1 / 3
#: Shortest channel lifetime the extension timing assumes.
MIN_LIFETIME_S: Final = 1.0
#: The rotation reason of a channel whose extension did not move its expiry.
EXPIRING: Final = "expiring"
#: The system message after which the rotation starts with a fresh token.
TOKEN_REVOKED: Final = "token_revoked"  # noqa: S105 - a Genesys systemTopicType, not a credential
#: The ``bridge_genesys_events_total`` kind of a frame that does not parse.
UNKNOWN_KIND: Final = "unknown"
#: How far a lost socket's gap may reach back before its last frame, for a late stream
#: (:meth:`Session.gap_start`).
MAX_LINK_LAG: Final = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The session's timing, as plain values (the worker builds it from its settings)."""

    ping_after_s: float
    pong_timeout_s: float
    silence_limit_s: float
    backoff_initial_s: float
    backoff_max_s: float
    backoff_reset_s: float
    extend_margin_s: float


# --------------------------------------------------------------------------- actions


#: Order and write ``action.change`` (the shard drops it for a non-member or an
#: older state). A change frame's parsed message is its own action: one runs
#: per change, so nothing is allocated for it.
Accept = protocol.EventMessage


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The frame did not parse: send it to the dead-letter topic with its reason."""

    reason: str
    error: str
    frame: str


@dataclass(frozen=True, slots=True)
class HandOver:
    """Maintenance: open a new socket on the same channel, drain the old one, then reconcile."""


@dataclass(frozen=True, slots=True)
class Ponged:
    """Our ping was answered: what arrived while it was out can be written (nothing was lost)."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The socket is dead or its channel gone: end it and recover from ``cause`` (:meth:`Session.failed`)."""

    cause: Exception


@dataclass(frozen=True, slots=True)
class Rotate:
    """Move to a new channel make-before-break, then reconcile; refresh the token first if asked."""

    reason: str
    refresh_token: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    """Send ``frame`` on the socket now."""

    frame: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """After a failure: the retry policy's action (new channel, token refresh…) and the wait first."""

    action: Action
    delay_s: float


FrameAction = Accept | DeadLetter | HandOver | Ponged | Reconnect | Rotate

_HAND_OVER: Final = HandOver()
_PONGED: Final = Ponged()
_parse_frame: Final = protocol.parse_frame


class Session:
    """One shard's channel decisions (see the module docstring). Not thread-safe; one per shard."""

    def __init__(self, config: SessionConfig, *, rng: random.Random, now: float) -> None:
        self.config = config
        self._now = now
        self.liveness = Liveness(
            ping_after_s=config.ping_after_s,
            pong_timeout_s=config.pong_timeout_s,
            silence_limit_s=config.silence_limit_s,
            now=now,
        )
        self._reconnect = self._backoff(rng)
        self._reconcile = self._backoff(rng)
        self._rotation = self._backoff(rng)
        self._last_system_rotation: float | None = None
        self.channel_id: str | None = None
        """The current channel; system messages of any other are ignored."""
        self.expires: datetime | None = None
        self.lifetime_s: float | None = None
        """The current channel's lifetime as created (its first ``expires`` minus the creation time)."""
        self._newest_sent: datetime | None = None
        """The newest ``changed_at`` the stream delivered (Genesys's clock), for :meth:`gap_start`."""

    def _backoff(self, rng: random.Random) -> Backoff:
        cfg = self.config
        return Backoff(
            cfg.backoff_initial_s, cfg.backoff_max_s, cfg.backoff_reset_s, rng=rng, clock=self._clock
        )

    def _clock(self) -> float:
        """The backoffs read the time of the latest input: the session has no clock of its own."""
        return self._now

    def _at(self, now: float) -> None:
        self._now = now

    # ------------------------------------------------------------------ channel

    def channel_created(self, channel_id: str, expires: datetime, *, created_at: datetime) -> None:
        """A new channel is current; its lifetime times the extensions."""
        self.channel_id = channel_id
        self.expires = expires
        self.lifetime_s = max(MIN_LIFETIME_S, (expires - created_at).total_seconds())

    def channel_lost(self) -> None:
        """The current channel is gone: the next connection creates one."""
        self.channel_id = None
        self.expires = None

    def socket_opened(self, now: float) -> None:
        """A socket was connected: its silence counts from now."""
        self._at(now)
        self.liveness.started(now)

    def connected(self, now: float) -> None:
        """Connected and subscribed: a failure ``backoff_reset_s`` from now backs off from the start;
        one ping confirms the stream (:meth:`Liveness.confirm`)."""
        self._at(now)
        self._reconnect.healthy()
        self.liveness.confirm()

    # ------------------------------------------------------------------- frames

    def frame(
        self, text: str, channel_id: str | None, now: float, observed_at: datetime
    ) -> tuple[str, FrameAction | None]:
        """One frame read from the socket of ``channel_id``: its metric kind and what to do.

        ``now`` is the monotonic reading when it was received (also the
        change's ``received_at``), ``observed_at`` the wall clock.
        """
        self.liveness.frame(now)
        try:
            message = _parse_frame(text, observed_at=observed_at, received_at=now)
        except ProtocolError as exc:
            return UNKNOWN_KIND, DeadLetter(reason=exc.reason, error=str(exc), frame=text)
        if type(message) is Accept:  # the hot path: one per change
            change = message.change
            newest = self._newest_sent
            if newest is None or change.changed_at > newest:
                self._newest_sent = change.changed_at
            return change.kind, message  # a StrEnum: the kind's text, without .value
        if type(message) is protocol.Pong:
            self.liveness.pong(now)
            return message.kind, _PONGED
        if type(message) is protocol.SocketClosing:
            return message.kind, _HAND_OVER
        if type(message) is protocol.SubscriptionReply and message.result == "404":
            return message.kind, Reconnect(NotFoundError("the channel no longer exists", status=404))
        if type(message) is protocol.SystemMessage and message.system_topic_type is not None:
            # A retired socket's channel is already being replaced: only the current one counts.
            topic_type = message.system_topic_type
            if channel_id == self.channel_id and message.channel_id in (None, channel_id):
                return message.kind, Rotate(topic_type, refresh_token=topic_type == TOKEN_REVOKED)
            logger.info("%s for a retired channel ignored", topic_type)
        return message.kind, None

    # ----------------------------------------------------------------- watchdog

    def tick(self, now: float, *, can_ping: bool = True) -> Ping | Reconnect | None:
        """A watchdog tick: ping a quiet socket (when one is open), give up on a silent one."""
        self._at(now)
        liveness = self.liveness
        verdict = liveness.poll(now)
        if verdict is Verdict.DEAD:
            return Reconnect(ChannelClosedError(liveness.reason(now)))
        if verdict is Verdict.PING and can_ping:
            liveness.ping_sent(now)
            return Ping(protocol.ping_frame())
        return None

    def heartbeat_age(self, now: float) -> float:
        """Seconds since the last frame (the ``bridge_heartbeat_age_seconds`` gauge)."""
        return self.liveness.age(now)

    def gap_start(self, now: float, wall: datetime) -> datetime:
        """When a socket lost at ``now`` (``wall``) may have begun to lose changes, before any margin.

        The receive time of the last frame known to precede the loss
        (:meth:`Liveness.gap_age`), unless the newest change the stream delivered is
        older: under link latency a frame arrives seconds after Genesys sent
        it, and what Genesys sent after the last frame we read went down
        with the socket. A quiet socket's newest change is old rather than
        late, so it reaches back :data:`MAX_LINK_LAG` at most.
        """
        received = wall - timedelta(seconds=self.liveness.gap_age(now))
        newest = self._newest_sent
        if newest is None or newest >= received:
            return received
        return max(newest, received - MAX_LINK_LAG)

    def frozen_age(self, now: float) -> float:
        """Seconds since the last tick before a recent freeze, else 0 (:meth:`Liveness.frozen_age`)."""
        return self.liveness.frozen_age(now)

    def reading_paused(self) -> None:
        """The reader waits for Kafka (backpressure): frames sit unread, which is not silence."""
        self.liveness.pause()

    def reading_resumed(self, now: float) -> None:
        """The reader reads again: silence counts from now."""
        self._at(now)
        self.liveness.resume(now)

    # ---------------------------------------------------------------- failures

    def failed(self, exc: BaseException, now: float) -> Recovery:
        """The connection failed with ``exc``: what to do before reconnecting, and how long to wait."""
        self._at(now)
        action = classify(exc)
        if action is Action.NEW_CHANNEL:
            self.channel_lost()
        return Recovery(action, self._reconnect.next_delay())

    def rotation_delay(self, now: float) -> float:
        """Seconds to wait before a system-message rotation: 0 unless one came within ``backoff_reset_s``."""
        self._at(now)
        last, self._last_system_rotation = self._last_system_rotation, now
        if last is None or now - last >= self.config.backoff_reset_s:
            self._rotation.reset()
            return 0.0
        delay = self._rotation.next_delay()
        logger.warning(
            "another lost-subscription message within %.0f s; waiting %.2f s first", now - last, delay
        )
        return delay

    def reconcile_failed(self, now: float) -> float:
        """Seconds to wait before retrying a failed reconciliation."""
        self._at(now)
        return self._reconcile.next_delay()

    def reconciled(self) -> None:
        """A reconciliation finished: the next failure backs off from the start."""
        self._reconcile.reset()

    # --------------------------------------------------------------- extension

    def _lifetime(self) -> float:
        return self.lifetime_s or self.config.extend_margin_s * 2

    def expires_in(self, wall: datetime) -> float | None:
        """Seconds until the current channel expires (the ``bridge_channel_expiry_seconds`` gauge)."""
        return None if self.expires is None else (self.expires - wall).total_seconds()

    def extension_wait_s(self, wall: datetime) -> float:
        """Seconds from ``wall`` until the subscriptions must be PUT again to extend the channel."""
        assert self.expires is not None, "extending needs a channel"
        margin = min(self.config.extend_margin_s, self._lifetime() * EXTEND_LIFETIME_FRACTION)
        return (self.expires - wall).total_seconds() - margin

    def assumed_expiry(self, wall: datetime) -> datetime:
        """The expiry of a channel that exists but is not listed by id (made with an earlier token).

        The extending PUT that just succeeded moved it by a lifetime.
        """
        return wall + timedelta(seconds=self._lifetime())

    def extension_result(self, before: datetime, listed: datetime | None) -> Rotate | None:
        """After an extending PUT: ``listed`` is the expiry Genesys lists now (None: the channel is gone).

        An expiry that moved is taken; one that did not → rotate, since the
        server will close the channel regardless.
        """
        if listed is None or listed <= before:
            return Rotate(EXPIRING)
        self.expires = listed
        return None
