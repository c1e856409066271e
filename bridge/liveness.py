"""Is a notification socket still delivering? Sans-I/O liveness of one socket.

A socket can stay open while nothing reaches us (TCP intact, frames lost on
the way): Genesys never replays what it sent meanwhile, so the shard must
notice the silence quickly, reconnect and reconcile. The rule, per socket:

- every frame received (heartbeat, pong, change, anything) proves the
  socket alive and restarts the silence clock;
- after ``ping_after_s`` of silence the shard sends our own
  ``{"message": "ping"}`` (Genesys answers with a ``channel.metadata`` pong);
- no pong within ``pong_timeout_s`` of that ping → dead, even when other
  frames came meanwhile: a socket that resumes after a stall without
  answering the ping sent during it lost what it would have sent then
  (Genesys never replays it), so the shard reconnects and the gap reaches
  back to the last frame before that ping (:meth:`Liveness.gap_age`);
- and, as a backstop whatever the ping settings, more than
  ``silence_limit_s`` of silence → dead.

So a silent socket is declared dead at most ``ping_after_s + pong_timeout_s``
(plus one watchdog tick) after its last frame. A busy socket is never pinged;
an idle one at most once per ``ping_after_s``.

Time the shard spends *not reading* is not silence: while the reader waits
for Kafka (backpressure) the frames, pongs included, sit unread in the
socket's buffers. :meth:`Liveness.pause` / :meth:`Liveness.resume` bracket
that wait; while paused nothing is ever dead, and the silence clock restarts
at resume (a ping outstanding at the pause is forgotten: its pong is in the
unread buffer). A socket that really died during a pause is noticed at most
``ping_after_s + pong_timeout_s`` after the pause ends.

This module only keeps time; the shard's watchdog calls :meth:`Liveness.poll`
every tick and acts on the :class:`Verdict`. Times are monotonic seconds.
"""

from __future__ import annotations

import enum

__all__ = ["Liveness", "Verdict"]


class Verdict(enum.Enum):
    """What the watchdog must do now."""

    OK = "ok"
    PING = "ping"
    DEAD = "dead"


class Liveness:
    """The silence clock of one socket (see the module docstring)."""

    __slots__ = (
        "_counted_from",
        "_last_frame",
        "_paused",
        "_ping_at",
        "_quiet_since",
        "ping_after_s",
        "pong_timeout_s",
        "silence_limit_s",
    )

    def __init__(
        self, *, ping_after_s: float, pong_timeout_s: float, silence_limit_s: float, now: float
    ) -> None:
        self.ping_after_s = ping_after_s
        self.pong_timeout_s = pong_timeout_s
        self.silence_limit_s = silence_limit_s
        self._last_frame = now
        self._counted_from = now
        self._ping_at: float | None = None
        self._quiet_since: float | None = None
        self._paused = 0

    def frame(self, now: float) -> None:
        """A frame arrived; also a new socket's start. An outstanding ping still waits for its pong."""
        self._last_frame = now
        self._counted_from = now

    def pong(self, now: float) -> None:
        """Our ping's answer arrived: nothing was lost while it was out."""
        self._last_frame = now
        self._counted_from = now
        self._ping_at = None
        self._quiet_since = None

    def started(self, now: float) -> None:
        """A new socket: its clock starts now, no ping outstanding."""
        self.pong(now)

    def pause(self) -> None:
        """The reader stopped reading (backpressure); calls nest."""
        self._paused += 1

    def resume(self, now: float) -> None:
        """The reader reads again: silence counts from ``now``."""
        self._paused = max(0, self._paused - 1)
        if not self._paused:
            self._counted_from = now
            self._ping_at = None
            self._quiet_since = None

    @property
    def paused(self) -> bool:
        return self._paused > 0

    def age(self, now: float) -> float:
        """Seconds since the last frame (the heartbeat-age gauge), paused or not."""
        return now - self._last_frame

    def gap_age(self, now: float) -> float:
        """Seconds since the last frame known to precede anything lost.

        While a ping waits for its pong, that is the last frame before the
        ping: frames that came after it do not prove the silence lost nothing.
        """
        if self._ping_at is not None and self._quiet_since is not None:
            return now - self._quiet_since
        return now - self._last_frame

    def silence(self, now: float) -> float:
        """Seconds of silence that count: none while paused, none before the last resume."""
        return 0.0 if self._paused else now - max(self._last_frame, self._counted_from)

    def poll(self, now: float) -> Verdict:
        """OK, PING (send one now, then call :meth:`ping_sent`) or DEAD (see :meth:`reason`)."""
        if self._paused:
            return Verdict.OK
        if self._ping_at is not None:
            return Verdict.DEAD if now - self._ping_at > self.pong_timeout_s else Verdict.OK
        silence = self.silence(now)
        if silence > self.silence_limit_s:
            return Verdict.DEAD
        return Verdict.PING if silence >= self.ping_after_s else Verdict.OK

    def ping_sent(self, now: float) -> None:
        """Our ping went out at ``now``; its pong must follow within ``pong_timeout_s``."""
        self._ping_at = now
        self._quiet_since = self._last_frame

    def reason(self, now: float) -> str:
        """Why :meth:`poll` said DEAD, for the log."""
        if self._ping_at is not None:
            waited = now - self._ping_at
            if self._last_frame > self._ping_at:
                return (
                    f"no pong within {self.pong_timeout_s:.1f} s of our ping (waited {waited:.1f} s); "
                    "frames came after the silence, so what it would have sent may be lost"
                )
            return f"no frame within {self.pong_timeout_s:.1f} s of our ping (waited {waited:.1f} s)"
        return f"no frame for {self.silence(now):.1f} s (limit {self.silence_limit_s:.1f} s)"
