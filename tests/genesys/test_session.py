"""Sans-I/O shard session: frames and clock readings in, the shard's actions out."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import AuthError, ChannelClosedError, NotFoundError, RequestError, TransientError
from bridge.genesys.retry import Action
from bridge.genesys.session import (
    EXPIRING,
    MAX_LINK_LAG,
    Accept,
    DeadLetter,
    HandOver,
    Ping,
    Ponged,
    Reconnect,
    Rotate,
    Session,
    SessionConfig,
)
from bridge.model import Kind

WALL = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CHANNEL = "ch-1"
CONFIG = SessionConfig(
    ping_after_s=4.0,
    pong_timeout_s=5.0,
    silence_limit_s=75.0,
    backoff_initial_s=0.5,
    backoff_max_s=60.0,
    backoff_reset_s=30.0,
    extend_margin_s=3600.0,
)
PRESENCE = json.dumps(
    {
        "topicName": "v2.users.u1.presence",
        "eventBody": {
            "presenceDefinition": {"id": "d1", "systemPresence": "AVAILABLE"},
            "modifiedDate": "2026-12-01T08:59:00Z",
        },
    }
)
ROUTING = json.dumps(
    {
        "topicName": "v2.users.u1.routingStatus",
        "eventBody": {"routingStatus": {"status": "IDLE", "startTime": "2026-12-01T08:59:00Z"}},
    }
)
HEARTBEAT = '{"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}'
PONG = '{"topicName": "channel.metadata", "eventBody": {"message": "pong"}}'
CLOSING = '{"topicName": "v2.system.socket_closing", "eventBody": {"message": "maintenance"}}'


def session(now: float = 0.0, *, lifetime: timedelta = timedelta(hours=24)) -> Session:
    s = Session(CONFIG, rng=random.Random(7), now=now)
    s.channel_created(CHANNEL, WALL + lifetime, created_at=WALL)
    return s


def frame(s: Session, text: str, now: float = 1.0, channel_id: str | None = CHANNEL) -> tuple[str, object]:
    return s.frame(text, channel_id, now, WALL)


def system(topic_type: str, body: dict[str, str] | None = None) -> str:
    return json.dumps({"topicName": f"v2.system.{topic_type}", "eventBody": body or {}})


# --------------------------------------------------------------------------- frames


def test_a_change_is_accepted_with_its_kind() -> None:
    """Presence and routing frames become Accept actions carrying the parsed change."""
    s = session()
    kind, action = frame(s, PRESENCE, now=2.5)
    assert kind == "presence" and isinstance(action, Accept)
    assert action.change.user_id == "u1" and action.change.kind is Kind.PRESENCE
    assert action.change.received_at == 2.5
    kind, action = frame(s, ROUTING)
    assert kind == "routing_status" and isinstance(action, Accept)


def test_a_frame_that_does_not_parse_is_dead_lettered() -> None:
    """A malformed frame goes to the DLQ with its reason slug and the frame itself; kind unknown."""
    kind, action = frame(session(), "{not json")
    assert kind == "unknown"
    assert action == DeadLetter(reason="invalid_json", error="frame is not JSON", frame="{not json")


@pytest.mark.parametrize(
    ("text", "kind"), [(HEARTBEAT, "heartbeat"), ('{"topicName": "v2.other.thing"}', "unknown")]
)
def test_heartbeats_and_other_topics_need_no_action(text: str, kind: str) -> None:
    """Heartbeats and topics nobody asked for are only counted."""
    assert frame(session(), text) == (kind, None)


def test_a_pong_answers_our_ping_and_says_so() -> None:
    """The pong clears the outstanding ping (Ponged: what waited on it can be written); other
    frames do not, so a ping the socket never answers still ends in a reconnect."""
    s = session()
    assert isinstance(s.tick(10.0), Ping)
    assert frame(s, HEARTBEAT, now=11.0) == ("heartbeat", None)
    assert frame(s, PONG, now=11.5) == ("pong", Ponged())
    assert not isinstance(s.tick(10.0 + s.liveness.pong_timeout_s + 0.1), Reconnect)
    s2 = session()
    assert isinstance(s2.tick(10.0), Ping)
    frame(s2, HEARTBEAT, now=11.0)
    assert isinstance(s2.tick(10.0 + s2.liveness.pong_timeout_s + 0.1), Reconnect)


def _presence_at(changed: datetime) -> str:
    definition = {"id": "d1", "systemPresence": "AVAILABLE"}
    body = {"presenceDefinition": definition, "modifiedDate": changed.isoformat()}
    return json.dumps({"topicName": "v2.users.u1.presence", "eventBody": body})


def test_a_lost_sockets_gap_starts_at_its_last_frame_or_its_newest_change_when_that_is_older() -> None:
    """Under link latency the last frame read was sent seconds before it arrived: what Genesys sent
    after it went down with the socket, so the gap reaches back to the newest change delivered
    (seed 705: 3 s of latency, a change sent just before the drop fell before a gap starting at the
    last frame's receive time). A prompt stream, or a quiet one, starts at the last frame."""
    s = session()
    assert s.gap_start(10.0, WALL) == WALL - timedelta(seconds=10), "nothing delivered: the socket's start"
    frame(s, _presence_at(WALL - timedelta(seconds=3.5)), now=9.5)  # received 0.5 s before the loss
    assert s.gap_start(10.0, WALL) == WALL - timedelta(seconds=3.5), "sent 3 s before it was read"
    prompt = session()
    frame(prompt, _presence_at(WALL - timedelta(seconds=0.4)), now=9.5)
    assert prompt.gap_start(10.0, WALL) == WALL - timedelta(seconds=0.5), "read when it was sent"
    quiet = session()
    frame(quiet, _presence_at(WALL - timedelta(hours=1)), now=1.0)
    frame(quiet, HEARTBEAT, now=9.0)
    assert quiet.gap_start(10.0, WALL) == WALL - timedelta(seconds=1) - MAX_LINK_LAG, "bounded when quiet"


def test_socket_closing_hands_over() -> None:
    """Maintenance (v2.system.socket_closing) asks for a new socket on the same channel."""
    assert frame(session(), CLOSING) == ("system", HandOver())


def test_a_404_reply_reconnects_to_a_new_channel() -> None:
    """A {"result": "404"} reply means the channel is gone: reconnect, and the policy makes a new channel."""
    s = session()
    kind, action = frame(s, '{"result": "404", "message": "channel not found"}')
    assert kind == "system" and isinstance(action, Reconnect)
    assert isinstance(action.cause, NotFoundError) and action.cause.status == 404
    assert s.failed(action.cause, now=2.0).action is Action.NEW_CHANNEL
    assert frame(s, '{"result": "200", "status": "subscribed"}') == ("system", None)


@pytest.mark.parametrize(
    ("topic_type", "refresh"),
    [("no_longer_subscribed", False), ("subscription_changed", False), ("token_revoked", True)],
)
def test_a_lost_subscription_message_rotates(topic_type: str, refresh: bool) -> None:
    """Each lost-subscription system message rotates to a new channel; token_revoked refreshes first."""
    body = {"channelId": CHANNEL, "systemTopicType": topic_type, "reason": "another_channel_subscribed"}
    assert frame(session(), system(topic_type, body)) == ("system", Rotate(topic_type, refresh_token=refresh))


def test_the_topic_names_the_system_message_when_the_body_does_not() -> None:
    """Without systemTopicType in the body the topic's last segment decides."""
    assert frame(session(), system("no_longer_subscribed")) == ("system", Rotate("no_longer_subscribed"))


def test_a_system_message_for_another_or_a_retired_channel_is_ignored() -> None:
    """Only the current channel's message counts: another channel's, or a retired socket's, is ignored."""
    s = session()
    other = system("no_longer_subscribed", {"channelId": "ch-0", "systemTopicType": "no_longer_subscribed"})
    assert frame(s, other) == ("system", None)
    assert frame(s, system("token_revoked"), channel_id="ch-0") == ("system", None)
    s.channel_created("ch-2", WALL + timedelta(hours=24), created_at=WALL)
    assert frame(s, system("subscription_changed"), channel_id=CHANNEL) == ("system", None)
    assert frame(s, system("subscription_changed"), channel_id="ch-2")[1] == Rotate("subscription_changed")


def test_other_system_messages_need_no_action() -> None:
    """A v2.system message that is not a lost subscription is only counted."""
    assert frame(session(), system("something_new", {"message": "hi"})) == ("system", None)


# --------------------------------------------------------------------------- watchdog


def test_a_quiet_socket_is_pinged_and_any_frame_answers() -> None:
    """After ping_after_s of silence the tick pings once; a frame restarts the silence clock."""
    s = session()
    assert s.tick(3.9) is None
    assert s.tick(4.0) == Ping('{"message":"ping"}')
    assert s.tick(4.25) is None, "one ping at a time"
    frame(s, PONG, now=4.5)
    assert s.tick(8.4) is None
    assert isinstance(s.tick(8.5), Ping)


def test_an_unanswered_ping_reconnects() -> None:
    """No frame within pong_timeout_s of the ping → Reconnect with a ChannelClosedError naming the ping."""
    s = session()
    assert isinstance(s.tick(4.0), Ping)
    assert s.tick(9.0) is None
    action = s.tick(9.1)
    assert isinstance(action, Reconnect) and isinstance(action.cause, ChannelClosedError)
    assert "of our ping" in str(action.cause)
    assert s.failed(action.cause, now=9.1).action is Action.RETRY


def test_without_a_socket_nothing_is_pinged_and_silence_still_counts() -> None:
    """No open socket: no ping; past the silence limit the session still gives up."""
    s = session()
    assert s.tick(10.0, can_ping=False) is None
    assert isinstance(s.tick(75.1, can_ping=False), Reconnect)


def test_a_new_socket_starts_its_silence_clock() -> None:
    """A socket opened (connect, hand-over, rotation) counts silence from then."""
    s = session()
    s.socket_opened(100.0)
    assert s.tick(103.9) is None and s.heartbeat_age(103.0) == 3.0


def test_time_blocked_on_kafka_is_not_silence() -> None:
    """While the reader is paused nothing is pinged or dead; after it resumes silence counts from then."""
    s = session()
    s.reading_paused()
    assert s.tick(200.0) is None
    s.reading_resumed(200.0)
    assert s.tick(203.9) is None
    assert isinstance(s.tick(204.0), Ping)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (NotFoundError("gone", status=404), Action.NEW_CHANNEL),
        (AuthError("expired", status=401), Action.REFRESH_TOKEN),
        (TransientError("unavailable", status=503), Action.RETRY),
        (ChannelClosedError("socket ended"), Action.RETRY),
        (RequestError("bad request", status=400), Action.FATAL),
    ],
)
def test_a_failure_is_classified_and_backed_off(error: Exception, action: Action) -> None:
    """The retry policy picks the recovery; the first delay is within the initial backoff."""
    recovery = session().failed(error, now=1.0)
    assert recovery.action is action
    assert 0.0 <= recovery.delay_s <= CONFIG.backoff_initial_s


def test_a_gone_channel_is_forgotten() -> None:
    """After NEW_CHANNEL the session has no current channel, so its system messages no longer count."""
    s = session()
    s.failed(NotFoundError("gone", status=404), now=1.0)
    assert s.channel_id is None and s.expires_in(WALL) is None
    assert frame(s, system("no_longer_subscribed"))[1] is None


def test_reconnect_delays_grow_and_start_over_after_a_healthy_period() -> None:
    """Failures back off further each time; a connection healthy for backoff_reset_s starts them over."""
    s = session()
    bounds = [CONFIG.backoff_initial_s * 2**n for n in range(6)]
    delays = [s.failed(ChannelClosedError("lost"), now=1.0 + n).delay_s for n in range(6)]
    assert all(d <= b for d, b in zip(delays, bounds, strict=True))
    assert max(delays) > CONFIG.backoff_initial_s, "the bound grows"
    s.connected(10.0)
    assert s.failed(ChannelClosedError("lost"), now=39.0).delay_s <= bounds[-1] * 2
    s.connected(40.0)
    assert s.failed(ChannelClosedError("lost"), now=70.0).delay_s <= CONFIG.backoff_initial_s


def test_a_lone_lost_subscription_rotates_at_once_a_repeated_one_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first rotation has no delay; one within backoff_reset_s waits a backoff; a later one none."""
    s = session()
    assert s.rotation_delay(100.0) == 0.0
    delay = s.rotation_delay(110.0)
    assert 0.0 <= delay <= CONFIG.backoff_initial_s
    assert "another lost-subscription message within 10 s" in caplog.text
    assert s.rotation_delay(200.0) == 0.0


def test_a_failed_reconciliation_backs_off_until_one_succeeds() -> None:
    """Reconciliation retries have their own backoff, reset by a success."""
    s = session()
    first = s.reconcile_failed(1.0)
    assert 0.0 <= first <= CONFIG.backoff_initial_s
    assert s.reconcile_failed(2.0) <= CONFIG.backoff_initial_s * 2
    s.reconciled()
    assert s.reconcile_failed(3.0) <= CONFIG.backoff_initial_s


# --------------------------------------------------------------------------- extension


def test_a_day_long_channel_is_extended_the_margin_before_it_expires() -> None:
    """A 24 h channel is PUT again extend_margin_s before expires; the gauge counts down to expires."""
    s = session()
    assert s.extension_wait_s(WALL) == 24 * 3600 - CONFIG.extend_margin_s
    assert s.expires_in(WALL + timedelta(hours=1)) == 23 * 3600


def test_a_short_channel_is_extended_a_third_of_its_lifetime_early() -> None:
    """A channel shorter than three margins is extended a third of its lifetime before it ends."""
    s = session(lifetime=timedelta(minutes=30))
    assert s.extension_wait_s(WALL) == pytest.approx(20 * 60)


def test_an_extension_that_moved_the_expiry_is_taken() -> None:
    """A later listed expiry becomes the channel's; the next extension is timed from it."""
    s = session()
    later = WALL + timedelta(hours=48)
    assert s.extension_result(WALL + timedelta(hours=24), later) is None
    assert s.expires == later
    assert s.extension_wait_s(WALL) == 48 * 3600 - CONFIG.extend_margin_s


@pytest.mark.parametrize("listed", [None, WALL + timedelta(hours=24), WALL + timedelta(hours=23)])
def test_an_extension_that_did_not_move_the_expiry_rotates(listed: datetime | None) -> None:
    """A channel gone, or one whose expiry did not move, is replaced: Rotate("expiring")."""
    s = session()
    assert s.extension_result(WALL + timedelta(hours=24), listed) == Rotate(EXPIRING)
    assert s.expires == WALL + timedelta(hours=24)


def test_a_channel_listed_without_its_id_is_assumed_extended_by_its_lifetime() -> None:
    """A channel of an earlier token that still exists was extended by one lifetime from now."""
    s = session(lifetime=timedelta(hours=2))
    assert s.assumed_expiry(WALL + timedelta(hours=1)) == WALL + timedelta(hours=3)
