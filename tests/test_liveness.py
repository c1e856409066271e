"""bridge.liveness: a silent socket is pinged, then declared dead; time not spent reading is not silence."""

from __future__ import annotations

from bridge.channel import WATCHDOG_TICK_S
from bridge.liveness import FROZEN_MEMORY_S, Liveness, Verdict
from bridge.settings import Settings


def live(now: float = 0.0) -> Liveness:
    return Liveness(ping_after_s=4.0, pong_timeout_s=5.0, silence_limit_s=75.0, now=now)


def test_silence_leads_to_a_ping_and_its_pong_answers_it() -> None:
    """After ping_after_s of silence the verdict is PING; the pong answers it and restarts the clock."""
    lv = live()
    assert lv.poll(3.9) is Verdict.OK
    assert lv.poll(4.0) is Verdict.PING
    lv.ping_sent(4.0)
    assert lv.poll(8.9) is Verdict.OK
    lv.pong(5.0)
    assert lv.poll(8.9) is Verdict.OK
    assert lv.poll(9.0) is Verdict.PING


def test_frames_after_an_unanswered_ping_do_not_answer_it() -> None:
    """A socket that resumes after a stall but never answers the ping sent during it is dead at the
    pong timeout, and its gap reaches back to the last frame before the ping (what the stall lost)."""
    lv = live()
    lv.frame(1.0)
    lv.ping_sent(5.0)  # 4 s quiet since the frame at 1.0
    lv.frame(7.5)  # the stall ended: frames again, but the ping's pong was lost with it
    assert lv.poll(10.0) is Verdict.OK
    assert lv.gap_age(10.0) == 9.0
    assert lv.age(10.0) == 2.5
    assert lv.poll(10.01) is Verdict.DEAD
    assert "no pong" in lv.reason(10.01)


def test_without_a_ping_out_the_gap_starts_at_the_last_frame() -> None:
    """No ping outstanding (or answered): the gap age is the heartbeat age."""
    lv = live()
    lv.frame(2.0)
    assert lv.gap_age(3.0) == lv.age(3.0) == 1.0
    lv.ping_sent(6.0)
    lv.pong(6.1)
    assert lv.gap_age(7.0) == lv.age(7.0)


def test_an_unanswered_ping_is_dead_after_the_pong_timeout() -> None:
    """No frame within pong_timeout_s of our ping → DEAD, with a reason naming the ping."""
    lv = live()
    lv.ping_sent(4.0)
    assert lv.poll(9.0) is Verdict.OK
    assert lv.poll(9.01) is Verdict.DEAD
    assert "ping" in lv.reason(9.01)


def test_the_silence_limit_is_a_backstop_without_pings() -> None:
    """Silence beyond silence_limit_s is DEAD even when no ping was sent."""
    lv = Liveness(ping_after_s=100.0, pong_timeout_s=5.0, silence_limit_s=10.0, now=0.0)
    assert lv.poll(10.0) is Verdict.OK
    assert lv.poll(10.1) is Verdict.DEAD


def test_time_paused_for_backpressure_is_not_silence() -> None:
    """While paused nothing is dead, an outstanding ping is forgotten, silence restarts at resume."""
    lv = live()
    lv.ping_sent(4.0)
    lv.pause()
    assert lv.poll(60.0) is Verdict.OK
    assert lv.silence(60.0) == 0.0
    assert lv.age(60.0) == 60.0
    lv.resume(60.0)
    assert lv.poll(63.9) is Verdict.OK
    assert lv.poll(64.0) is Verdict.PING


def test_pauses_nest() -> None:
    """Two readers paused: silence counts again only when both resumed."""
    lv = live()
    lv.pause()
    lv.pause()
    lv.resume(10.0)
    assert lv.paused and lv.poll(100.0) is Verdict.OK
    lv.resume(100.0)
    assert not lv.paused and lv.poll(104.0) is Verdict.PING


def test_default_settings_declare_a_silent_socket_dead_within_ten_seconds() -> None:
    """With the default settings, polled every watchdog tick, silence is DEAD before 10 s."""
    s = Settings()
    lv = Liveness(
        ping_after_s=s.ping_interval_s,
        pong_timeout_s=s.pong_timeout_s,
        silence_limit_s=s.heartbeat_interval_s * s.heartbeat_timeout_factor,
        now=0.0,
    )
    now = 0.0
    while (verdict := lv.poll(now)) is not Verdict.DEAD:
        if verdict is Verdict.PING:
            lv.ping_sent(now)
        now += WATCHDOG_TICK_S
    assert 5.0 < now <= 10.0


def test_a_connected_socket_is_pinged_once_at_once_to_confirm_the_stream() -> None:
    """After confirm() the next poll asks for a ping though nothing was silent; its pong ends it, and an
    unanswered one is a dead socket whose gap reaches back to the frames read before it."""
    lv = live()
    lv.frame(0.5)  # read at once after the subscriptions: perhaps buffered before a stall
    lv.confirm()
    assert lv.poll(0.6) is Verdict.PING
    lv.ping_sent(0.6)
    assert lv.poll(0.7) is Verdict.OK
    lv.pong(0.8)
    assert lv.poll(1.0) is Verdict.OK, "one ping, not one per tick"
    lv.confirm()
    lv.ping_sent(2.0)
    lv.frame(3.0)  # the stall ended, the pong was lost in it
    assert lv.poll(7.1) is Verdict.DEAD
    assert lv.gap_age(7.1) == 7.1 - 0.8, "from the pong before the unanswered ping"


def test_a_freeze_of_the_process_makes_the_gap_reach_back_to_before_it() -> None:
    """A watchdog tick seconds late: the process did not run. A gap noticed while the tick is overdue,
    or within FROZEN_MEMORY_S after, starts at the last tick before the freeze."""
    lv = live()
    lv.poll(0.25)
    lv.poll(0.5)
    assert lv.frozen_age(0.6) == 0.0
    lv.frame(12.0)  # buffered frames read first, at once after the freeze
    assert lv.frozen_age(12.1) == 12.1 - 0.5, "overdue tick: frozen since it"
    assert lv.gap_age(12.1) == 12.1 - 0.5
    lv.poll(12.2)  # the watchdog's first tick after it notices the freeze
    assert lv.frozen_age(13.0) == 13.0 - 0.5
    later = 12.2 + FROZEN_MEMORY_S + 0.1
    for tick in range(int((later - 12.2) / WATCHDOG_TICK_S)):  # the watchdog ticks on
        lv.poll(12.2 + WATCHDOG_TICK_S * (tick + 1))
    assert lv.frozen_age(later) == 0.0, "forgotten after a while"
    lv.started(30.0)
    assert lv.frozen_age(40.0) == 0.0, "a new socket's watchdog has not ticked: no freeze"
