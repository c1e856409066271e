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
  ``silence_limit_s`` of silence → dead;
- once a socket is connected and subscribed (:meth:`Liveness.confirm`) one
  ping goes out at once: frames read then may have been buffered before a
  stall that began while the subscriptions were being made, and only the
  pong proves the stream delivers after them.

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

Time the shard's *process* does not run (stopped, starved, frozen by the
host) is different: frames Genesys sent meanwhile may be read after it, as
if nothing happened, while a channel it ended in the meantime lost what came
next. The watchdog ticks every quarter second; a tick more than
:data:`FROZEN_S` late means the process was frozen since the previous one,
and for :data:`FROZEN_MEMORY_S` after that (or while the tick is overdue)
:meth:`Liveness.frozen_age` and :meth:`Liveness.gap_age` reach back to that
previous tick, so a gap noticed then starts before the freeze.

This module only keeps time; the shard's watchdog calls :meth:`Liveness.poll`
every tick and acts on the :class:`Verdict`. Times are monotonic seconds.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["FROZEN_MEMORY_S", "FROZEN_S", "Liveness", "Verdict"]

#: A watchdog tick this late (it runs every 0.25 s) means the process did not run meanwhile.
FROZEN_S: Final = 2.0
#: How long after a freeze is noticed a new gap still reaches back to before it.
FROZEN_MEMORY_S: Final = 10.0


class Verdict(enum.Enum):
    """What the watchdog must do now."""

    OK = "ok"
    PING = "ping"
    DEAD = "dead"


class Liveness:
    """The silence clock of one socket (see the module docstring)."""

    __slots__ = (
        "_confirm",
        "_counted_from",
        "_frozen",
        "_last_frame",
        "_last_tick",
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
        self._confirm = False
        self._last_tick: float | None = None
        self._frozen: tuple[float, float] | None = None
        """(the last tick before a freeze, when the freeze was noticed)."""

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
        """A new socket: its clock starts now, no ping outstanding (its watchdog has not ticked)."""
        self.pong(now)
        self._last_tick = None

    def confirm(self) -> None:
        """Connected and subscribed: the next :meth:`poll` asks for a ping (module docstring)."""
        self._confirm = True

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
            return max(now - self._quiet_since, self.frozen_age(now))
        return max(now - self._last_frame, self.frozen_age(now))

    def frozen_age(self, now: float) -> float:
        """Seconds since the last watchdog tick before a recent freeze (module docstring), else 0."""
        tick = self._last_tick
        if tick is not None and now - tick > FROZEN_S:
            return now - tick
        frozen = self._frozen
        if frozen is not None and now - frozen[1] <= FROZEN_MEMORY_S:
            return now - frozen[0]
        return 0.0

    def silence(self, now: float) -> float:
        """Seconds of silence that count: none while paused, none before the last resume."""
        return 0.0 if self._paused else now - max(self._last_frame, self._counted_from)

    def poll(self, now: float) -> Verdict:
        """OK, PING (send one now, then call :meth:`ping_sent`) or DEAD (see :meth:`reason`).

        Called by the watchdog every tick: also how a freeze is noticed.
        """
        if self._last_tick is not None and now - self._last_tick > FROZEN_S:
            self._frozen = (self._last_tick, now)
        self._last_tick = now
        if self._paused:
            return Verdict.OK
        if self._ping_at is not None:
            return Verdict.DEAD if now - self._ping_at > self.pong_timeout_s else Verdict.OK
        if self._confirm:
            return Verdict.PING
        silence = self.silence(now)
        if silence > self.silence_limit_s:
            return Verdict.DEAD
        return Verdict.PING if silence >= self.ping_after_s else Verdict.OK

    def ping_sent(self, now: float) -> None:
        """Our ping went out at ``now``; its pong must follow within ``pong_timeout_s``."""
        self._ping_at = now
        self._quiet_since = self._last_frame
        self._confirm = False

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
