"""Sans-I/O notification protocol: Genesys's documented frames in, typed messages out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ProtocolError
from bridge.genesys import protocol
from bridge.genesys.protocol import (
    FRAME_KINDS,
    REASONS,
    EventMessage,
    Heartbeat,
    Pong,
    SocketClosing,
    SubscriptionReply,
    SystemMessage,
    UnknownTopic,
    parse_frame,
)
from bridge.model import Kind, Origin, PresenceValue, RoutingValue, event_id

OBSERVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
USER = "6f0e1a2b-1111-2222-3333-444455556666"
DEF_ID = "e08eaf1b-ee47-4fa9-a231-1200e284798f"
CORR = "c1a2b3c4-0000-4000-8000-000000000001"

PRESENCE: dict[str, Any] = {
    "topicName": f"v2.users.{USER}.presence",
    "version": "2",
    "eventBody": {
        "source": "PURECLOUD",
        "presenceDefinition": {"id": DEF_ID, "systemPresence": "AVAILABLE"},
        "primary": True,
        "message": "",
        "modifiedDate": "2024-05-01T11:59:58.123Z",
    },
    "metadata": {"CorrelationId": CORR},
}
ROUTING = {
    "topicName": f"v2.users.{USER}.routingStatus",
    "version": "2",
    "eventBody": {"routingStatus": {"status": "IDLE", "startTime": "2024-05-01T11:59:57.000Z"}},
    "metadata": {"CorrelationId": CORR},
}
HEARTBEAT = {"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}
PONG = {"topicName": "channel.metadata", "eventBody": {"message": "pong"}}
CLOSING = {"topicName": "v2.system.socket_closing", "eventBody": {"message": "maintenance"}}


def parse(doc: Any) -> Any:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return parse_frame(text, observed_at=OBSERVED, received_at=42.0)


def with_body(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(base))
    doc["eventBody"].update(changes)
    return doc


def reason_of(doc: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        parse(doc)
    return info.value.reason


def test_presence_event_from_design_payload() -> None:
    """Genesys's documented presence frame becomes a fully populated presence Change."""
    msg = parse(PRESENCE)
    assert isinstance(msg, EventMessage)
    assert msg.kind == "presence"
    change = msg.change
    assert change.user_id == USER
    assert change.kind is Kind.PRESENCE
    assert change.changed_at == datetime(2024, 5, 1, 11, 59, 58, 123000, tzinfo=UTC)
    assert change.timestamp_known
    assert change.observed_at == OBSERVED
    assert change.origin is Origin.STREAM
    assert change.value == PresenceValue("AVAILABLE", DEF_ID, "", "PURECLOUD", True)
    assert change.correlation_id == CORR
    assert change.genesys_topic == PRESENCE["topicName"]
    assert change.received_at == 42.0
    assert change.event_id == event_id(USER, Kind.PRESENCE, change.changed_at, change.value)


def test_routing_event_from_design_payload() -> None:
    """Genesys's documented routing-status frame becomes a routing Change keyed by startTime."""
    msg = parse(ROUTING)
    assert isinstance(msg, EventMessage)
    assert msg.kind == "routing_status"
    assert msg.change.kind is Kind.ROUTING_STATUS
    assert msg.change.value == RoutingValue("IDLE")
    assert msg.change.changed_at == datetime(2024, 5, 1, 11, 59, 57, tzinfo=UTC)
    assert msg.change.correlation_id == CORR


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("On Queue", "ON_QUEUE"),
        ("ON_QUEUE", "ON_QUEUE"),
        ("on queue", "ON_QUEUE"),
        ("Available", "AVAILABLE"),
        ("Meal", "MEAL"),
        ("  on-queue ", "ON_QUEUE"),
        ("OnQueue", "ON_QUEUE"),
        ("NotResponding", "NOT_RESPONDING"),
        ("NOT_RESPONDING", "NOT_RESPONDING"),
    ],
)
def test_system_presence_is_normalised(raw: str, expected: str) -> None:
    """systemPresence in title, upper, lower or CamelCase (the SDK enum) normalises to upper snake case."""
    doc = with_body(PRESENCE, presenceDefinition={"id": DEF_ID, "systemPresence": raw})
    assert parse(doc).change.value.system_presence == expected


def test_title_and_upper_case_give_the_same_event_id() -> None:
    """The same change in title case and upper case gets the same eventId."""
    title = with_body(PRESENCE, presenceDefinition={"id": DEF_ID, "systemPresence": "Available"})
    assert parse(title).change.event_id == parse(PRESENCE).change.event_id


def test_missing_modified_date_falls_back_to_observed_time() -> None:
    """Genesys's own sample has no modifiedDate: the change takes observed_at, timestamp_known=False."""
    doc = json.loads(json.dumps(PRESENCE))
    del doc["eventBody"]["modifiedDate"]
    change = parse(doc).change
    assert change.changed_at == OBSERVED
    assert not change.timestamp_known


def test_missing_start_time_falls_back_to_observed_time() -> None:
    """A routing status without startTime takes observed_at, timestamp_known=False."""
    doc = with_body(ROUTING, routingStatus={"status": "INTERACTING"})
    change = parse(doc).change
    assert change.changed_at == OBSERVED and not change.timestamp_known


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123+02:00", datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123456-05:30", datetime(2024, 5, 1, 15, 30, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(raw: str, expected: datetime) -> None:
    """ISO-8601 with or without millis, Z or an offset, becomes an aware UTC datetime."""
    value = protocol.parse_timestamp(raw)
    assert value == expected
    assert value is not None and value.tzinfo is UTC


@pytest.mark.parametrize(
    "raw", ["yesterday", "2024-13-01T10:00:00Z", "2024-05-01", "0001-01-01T00:00:00+05:00"]
)
def test_unparsable_timestamp_is_bad_timestamp(raw: str) -> None:
    """An unparsable modifiedDate is an error (bad_timestamp), unlike a missing one."""
    assert reason_of(with_body(PRESENCE, modifiedDate=raw)) == "bad_timestamp"


def test_unknown_fields_are_ignored() -> None:
    """Fields Genesys adds later do not change the result."""
    doc = with_body(PRESENCE, newThing={"x": 1})
    doc["extra"] = [1, 2]
    doc["eventBody"]["presenceDefinition"]["deactivated"] = False
    assert parse(doc).change == parse(PRESENCE).change


def test_heartbeat_pong_and_socket_closing() -> None:
    """Heartbeat, pong and socket_closing frames are recognised."""
    assert isinstance(parse(HEARTBEAT), Heartbeat)
    assert isinstance(parse(PONG), Pong)
    assert isinstance(parse(CLOSING), SocketClosing)
    assert parse(HEARTBEAT).kind == "heartbeat" and parse(PONG).kind == "pong"
    assert parse(CLOSING).kind == "system"


def test_other_system_and_metadata_frames() -> None:
    """Other v2.system.* and channel.metadata frames are SystemMessages."""
    assert parse({"topicName": "v2.system.something_new", "eventBody": {}}) == SystemMessage(
        "v2.system.something_new"
    )
    assert parse({"topicName": "channel.metadata", "eventBody": {"message": "hi"}}) == SystemMessage(
        "channel.metadata"
    )


@pytest.mark.parametrize(
    "topic",
    [
        "v2.users.abc.conversations",
        "v2.routing.queues.q1.users",
        "v2.users.a.b.presence",
        "v2.users.presence",
        "something",
    ],
)
def test_unknown_topic_is_skipped_not_fatal(topic: str) -> None:
    """Topics we did not ask for come back as UnknownTopic (counted as 'unknown')."""
    msg = parse({"topicName": topic, "eventBody": {}})
    assert msg == UnknownTopic(topic)
    assert msg.kind == "unknown"


def test_subscription_replies() -> None:
    """Socket subscribe answers (200, 400, and 404 for a gone channel) become SubscriptionReply."""
    ok = parse(
        {
            "result": "200",
            "status": "subscribed",
            "correlationId": "x1",
            "topics": ["v2.users.a?presence&routingStatus", {"id": "v2.users.b.presence"}],
        }
    )
    assert ok == SubscriptionReply(
        "200", "subscribed", None, "x1", ("v2.users.a?presence&routingStatus", "v2.users.b.presence")
    )
    assert ok.ok
    bad = parse({"result": "400", "status": "error", "message": "too many topics"})
    assert bad.result == "400" and not bad.ok and bad.message == "too many topics"
    gone = parse({"result": "404", "status": "error", "message": "Channel c not found"})
    assert gone.result == "404" and gone.kind == "system"
    assert parse({"result": 200}).result == "200"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "invalid_json"),
        ("", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('"text"', "not_an_object"),
        ("null", "not_an_object"),
        ("{}", "missing_field"),
        ('{"topicName": 5}', "bad_type"),
        ('{"result": []}', "bad_type"),
    ],
)
def test_malformed_frames(frame: str, reason: str) -> None:
    """Malformed frames raise ProtocolError with a stable reason slug."""
    assert reason_of(frame) == reason


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("eventBody"), "missing_field"),
        (lambda d: d.update(eventBody=[]), "bad_type"),
        (lambda d: d["eventBody"].pop("presenceDefinition"), "missing_field"),
        (lambda d: d["eventBody"]["presenceDefinition"].pop("systemPresence"), "missing_field"),
        (lambda d: d["eventBody"]["presenceDefinition"].update(systemPresence="  "), "missing_field"),
        (lambda d: d["eventBody"]["presenceDefinition"].update(systemPresence=3), "bad_type"),
        (lambda d: d["eventBody"]["presenceDefinition"].update(id=3), "bad_type"),
        (lambda d: d["eventBody"].update(primary="yes"), "bad_type"),
        (lambda d: d["eventBody"].update(message=1), "bad_type"),
        (lambda d: d["eventBody"].update(modifiedDate=17), "bad_type"),
        (lambda d: d.update(metadata="x"), "bad_type"),
        (lambda d: d.update(topicName="v2.users..presence"), "missing_field"),
    ],
)
def test_malformed_presence(mutate: Any, reason: str) -> None:
    """A presence without systemPresence, user id or with wrong types is a ProtocolError."""
    doc = json.loads(json.dumps(PRESENCE))
    mutate(doc)
    assert reason_of(doc) == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "missing_field"),
        ({"routingStatus": {}}, "missing_field"),
        ({"routingStatus": {"status": None}}, "missing_field"),
        ({"routingStatus": {"status": 1}}, "bad_type"),
        ({"routingStatus": "IDLE"}, "bad_type"),
        ({"routingStatus": {"status": "IDLE", "startTime": "soon"}}, "bad_timestamp"),
    ],
)
def test_malformed_routing_status(body: dict[str, Any], reason: str) -> None:
    """A routing status without status or with a bad startTime is a ProtocolError."""
    assert reason_of({**ROUTING, "eventBody": body}) == reason


def test_bytes_frames_are_accepted() -> None:
    """A frame delivered as bytes parses like its text."""
    assert parse_frame(orjson.dumps(PRESENCE), observed_at=OBSERVED, received_at=42.0) == parse(PRESENCE)


def test_lone_surrogate_is_a_protocol_error() -> None:
    """A JSON escape of a lone surrogate (valid JSON, not UTF-8) never escapes as UnicodeError."""
    frame = json.dumps(PRESENCE).replace('"message": ""', '"message": "\\ud800"')
    try:
        msg = parse(frame)
    except ProtocolError as exc:
        assert exc.reason in REASONS - {"unexpected"}
    else:
        assert isinstance(msg, EventMessage)


def test_builders() -> None:
    """Topic and outgoing frame builders produce what Genesys expects."""
    assert protocol.user_topic("u1") == "v2.users.u1?presence&routingStatus"
    assert protocol.ping_frame() == '{"message":"ping"}'
    assert json.loads(protocol.subscribe_frame(["a", "b"], "c")) == {
        "message": "subscribe",
        "topics": ["a", "b"],
        "correlationId": "c",
    }
    assert json.loads(protocol.unsubscribe_frame(["a"])) == {"message": "unsubscribe", "topics": ["a"]}


def test_rest_shapes_share_the_normalisation() -> None:
    """presence_change/routing_change accept the REST shapes and agree with the stream parser."""
    stream = parse(PRESENCE).change
    rest = protocol.presence_change(
        USER, {**PRESENCE["eventBody"], "userId": USER}, observed_at=OBSERVED, origin=Origin.RECONCILE
    )
    assert rest.event_id == stream.event_id and rest.origin is Origin.RECONCILE
    routing = protocol.routing_change(
        USER, {"userId": USER, "status": "IDLE", "startTime": "2024-05-01T11:59:57Z"}, observed_at=OBSERVED
    )
    assert routing.event_id == parse(ROUTING).change.event_id


# ----------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
presence_like = st.fixed_dictionaries(
    {
        "topicName": st.sampled_from(
            [f"v2.users.{USER}.presence", f"v2.users.{USER}.routingStatus", "channel.metadata"]
        )
        | st.text(max_size=30),
        "eventBody": st.fixed_dictionaries(
            {},
            optional={
                "presenceDefinition": st.fixed_dictionaries(
                    {}, optional={"id": json_values, "systemPresence": json_values | st.text()}
                )
                | json_values,
                "routingStatus": st.fixed_dictionaries(
                    {}, optional={"status": json_values, "startTime": json_values | st.text()}
                )
                | json_values,
                "modifiedDate": json_values | st.datetimes().map(lambda d: d.isoformat()),
                "message": json_values,
                "primary": json_values,
                "source": json_values,
            },
        )
        | json_values,
    },
    optional={"metadata": json_values, "result": json_values, "topics": json_values},
)


def _check(text: str | bytes) -> None:
    try:
        msg = parse_frame(text, observed_at=OBSERVED, received_at=0.0)
    except ProtocolError as exc:
        assert exc.reason in REASONS - {"unexpected"}, exc
    else:
        assert msg.kind in FRAME_KINDS


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_protocol_error(text: str) -> None:
    """Any text at all parses or raises ProtocolError with a known reason."""
    _check(text)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    """Any JSON value at all parses or raises ProtocolError with a known reason."""
    _check(json.dumps(value))


@settings(max_examples=400, deadline=None)
@given(presence_like)
def test_near_miss_frames_raise_only_protocol_error(doc: dict[str, Any]) -> None:
    """Frames shaped like real ones with arbitrary field values parse or raise ProtocolError."""
    _check(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    """Arbitrary bytes (a binary frame) parse or raise ProtocolError."""
    _check(data)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    )
)
def test_timestamp_round_trip(value: datetime) -> None:
    """Any aware ISO-8601 time parses back to the same instant in UTC."""
    parsed = protocol.parse_timestamp(value.isoformat())
    assert parsed == value and parsed is not None and parsed.tzinfo is UTC


def test_parser_throughput() -> None:
    """parse_frame keeps well above 10,000 frames/s (the per-worker target) on this machine."""
    frames = [json.dumps(PRESENCE), json.dumps(ROUTING), json.dumps(HEARTBEAT)] * 3000
    start = time.perf_counter()
    for frame in frames:
        parse_frame(frame, observed_at=OBSERVED, received_at=0.0)
    rate = len(frames) / (time.perf_counter() - start)
    assert rate > 10_000, f"{rate:.0f} frames/s"


@pytest.mark.parametrize("topic_type", ["no_longer_subscribed", "subscription_changed", "token_revoked"])
def test_system_messages_that_end_delivery_are_recognised(topic_type: str) -> None:
    """A SystemMessageSystemMessage body names its systemTopicType, reason and channel."""
    body = {"channelId": "ch-1", "systemTopicType": topic_type, "reason": "user_tokens_revoked", "data": {}}
    msg = parse({"topicName": f"v2.system.{topic_type}", "eventBody": body})
    assert msg == SystemMessage(
        f"v2.system.{topic_type}",
        system_topic_type=topic_type,
        reason="user_tokens_revoked",
        channel_id="ch-1",
    )
    assert msg.kind == "system"


def test_system_topic_type_from_the_body_or_the_topic() -> None:
    """The body's systemTopicType wins, else the topic's last segment; an unknown type is a plain message."""
    from_body = parse(
        {"topicName": "v2.system.notice", "eventBody": {"systemTopicType": "no_longer_subscribed"}}
    )
    assert from_body.system_topic_type == "no_longer_subscribed"
    from_topic = parse({"topicName": "v2.system.token_revoked"})
    assert from_topic.system_topic_type == "token_revoked"
    other = parse({"topicName": "v2.system.notice", "eventBody": {"systemTopicType": "outdated_sdk_version"}})
    assert other == SystemMessage("v2.system.notice")


def test_system_message_with_a_bad_body_is_a_protocol_error() -> None:
    """A system message whose eventBody is not an object goes to the DLQ like any malformed frame."""
    with pytest.raises(ProtocolError) as info:
        parse({"topicName": "v2.system.no_longer_subscribed", "eventBody": "gone"})
    assert info.value.reason == "bad_type"


#: What the sans-I/O protocol must not pull in: the HTTP and socket clients, the app's records and settings.
IO_MODULES = ("httpx", "aiohttp", "bridge.records", "bridge.settings")


def test_protocol_imports_without_the_io_libraries() -> None:
    """bridge.genesys.protocol loads in a fresh interpreter without httpx, aiohttp or the app's modules."""
    probe = f"import sys, bridge.genesys.protocol; print(sorted(set({IO_MODULES!r}) & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
