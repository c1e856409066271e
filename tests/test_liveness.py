"""bridge.liveness: a silent socket is pinged, then declared dead; time not spent reading is not silence."""

from __future__ import annotations

from bridge.channel import WATCHDOG_TICK_S
from bridge.liveness import Liveness, Verdict
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
