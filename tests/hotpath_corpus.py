"""A corpus of notification frames and what the hot path makes of each, for the golden test.

:data:`FRAMES` holds frames in every shape :mod:`bridge.genesys.protocol`
accepts (upper snake, title case and CamelCase presences, missing or odd
timestamps, messages, correlation ids) and the odd ones the dead-letter topic
sees (malformed JSON, wrong types, unknown topics, heartbeats, system
messages, subscription replies). :func:`outcomes` feeds them, in order,
through a real ``Shard``'s frame handler and a real ``ShardSink`` whose
producer records what it is given, with every clock fixed, and returns per
frame: the records (topic, key, value, headers), the frame-kind and
stale-event metric labels that moved, the DLQ reason counted and the
exception raised, if any.

``tests/data/hotpath_golden.json`` is that output frozen from the code
before the hot path was optimised (commit cee6ae4); ``tests/test_hotpath_corpus.py``
asserts the current code still gives it byte for byte, with the backfill off
(cee6ae4 had none; the one behaviour it adds to this path, a stale stream
change written ``late`` instead of dropped, is tested on its own). To regenerate it from
another checkout's code (its own ``bridge`` package and venv)::

    cd <checkout> && .venv/bin/python <this file> --write <path of the golden file>
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from bridge.events import ShardState
from bridge.metrics import REGISTRY
from bridge.settings import Settings
from bridge.shard import Shard
from bridge.sink import ShardSink
from tests.fakes import NullProducer
from tests.shard_fakes import FakeSocket, NullRest

__all__ = ["FRAMES", "GOLDEN", "frame_digests", "outcomes"]

GOLDEN = Path(__file__).resolve().parent / "data" / "hotpath_golden.json"
USERS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 5)]
STRANGER = "99999999-0000-4000-8000-000000000000"
CHANNEL = "corpus-channel"
ON_QUEUE_ID = "11111111-1111-4111-8111-111111111111"
MEAL_ID = "22222222-2222-4222-8222-222222222222"
UNLABELLED_ID = "33333333-3333-4333-8333-333333333333"
LABELS = {ON_QUEUE_ID: "On Queue", MEAL_ID: "Lunch"}
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
FRAME_KINDS = ("presence", "routing_status", "heartbeat", "pong", "system", "unknown")
DLQ_REASONS = ("invalid_json", "not_an_object", "missing_field", "bad_type", "bad_timestamp", "unexpected")


def _dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _presence(
    user: str,
    system: object,
    at: object = "2026-03-01T09:00:01.000Z",
    *,
    definition_id: object = ON_QUEUE_ID,
    message: object = "",
    correlation: object = "c0ffee00000000000000000000000001",
    **extra: object,
) -> str:
    body: dict[str, Any] = {
        "source": "PURECLOUD",
        "presenceDefinition": {"id": definition_id, "systemPresence": system},
        "primary": True,
        "message": message,
    }
    if at is not None:
        body["modifiedDate"] = at
    body.update(extra)
    doc: dict[str, Any] = {"topicName": f"v2.users.{user}.presence", "version": "2", "eventBody": body}
    if correlation is not None:
        doc["metadata"] = {"CorrelationId": correlation}
    return _dumps(doc)


def _routing(user: str, status: object, at: object = "2026-03-01T09:00:01.000Z", **extra: object) -> str:
    routing: dict[str, Any] = {"status": status}
    if at is not None:
        routing["startTime"] = at
    doc: dict[str, Any] = {
        "topicName": f"v2.users.{user}.routingStatus",
        "version": "2",
        "eventBody": {"routingStatus": routing, **extra},
        "metadata": {"CorrelationId": "c0ffee00000000000000000000000002"},
    }
    return _dumps(doc)


_A, _B, _C, _D = USERS

#: (name, frame text), fed in this order (later frames see the state earlier ones left).
FRAMES: list[tuple[str, str]] = [
    # -- presences in every spelling
    ("presence upper snake", _presence(_A, "ON_QUEUE")),
    ("presence title case", _presence(_A, "On Queue", "2026-03-01T09:00:02.000Z")),
    ("presence camel case", _presence(_A, "OnQueue", "2026-03-01T09:00:03.123Z", definition_id=MEAL_ID)),
    ("presence lower hyphen", _presence(_A, "on-queue", "2026-03-01T09:00:04.500Z")),
    ("presence meal label", _presence(_B, "Meal", "2026-03-01T09:00:01.000Z", definition_id=MEAL_ID)),
    ("presence unlabelled definition",
     _presence(_B, "AWAY", "2026-03-01T09:00:02Z", definition_id=UNLABELLED_ID)),
    ("presence without definition id", _presence(_B, "Busy", "2026-03-01T09:00:03Z", definition_id=None)),
    ("presence message", _presence(_B, "BUSY", "2026-03-01T09:00:04.001Z", message="Déjeuner ☕ \"quoted\"")),
    ("presence null message and source",
     _presence(_B, "Busy", "2026-03-01T09:00:05Z", message=None, source=None)),
    ("presence primary false", _presence(_C, "Available", primary=False)),
    ("presence no primary", _dumps({"topicName": f"v2.users.{_C}.presence", "eventBody": {
        "presenceDefinition": {"systemPresence": "Training"}, "modifiedDate": "2026-03-01T09:00:02Z"}})),
    ("presence offset time", _presence(_C, "MEETING", "2026-03-01T11:00:03.250+02:00")),
    ("presence naive time", _presence(_C, "Break", "2026-03-01T09:00:04.999")),
    ("presence microsecond time", _presence(_C, "Idle", "2026-03-01T09:00:05.123456Z")),
    ("presence no correlation", _presence(_C, "Offline", "2026-03-01T09:00:06Z", correlation=None)),
    ("presence unknown fields",
     _presence(_C, "Available", "2026-03-01T09:00:07Z", extra_field={"x": [1, 2]})),
    # -- ordering and dedupe
    ("presence duplicate", _presence(_C, "Available", "2026-03-01T09:00:07Z", extra_field={"x": [1, 2]})),
    ("presence stale", _presence(_C, "AWAY", "2026-03-01T09:00:01Z")),
    ("presence same ms other value", _presence(_C, "BUSY", "2026-03-01T09:00:07Z")),
    ("presence same ms replay", _presence(_C, "Available", "2026-03-01T09:00:07Z")),
    ("presence missing modifiedDate", _presence(_D, "Available", None)),
    ("presence missing modifiedDate same value", _presence(_D, "Available", None)),
    ("presence empty modifiedDate other value", _presence(_D, "Away", "")),
    ("presence after restamp", _presence(_D, "Busy", "2026-03-01T09:00:00Z")),
    ("presence not a member", _presence(STRANGER, "Available")),
    # -- routing status
    ("routing idle", _routing(_A, "IDLE")),
    ("routing camel", _routing(_A, "Interacting", "2026-03-01T09:00:02.000Z")),
    ("routing not responding", _routing(_A, "NOT_RESPONDING", "2026-03-01T09:00:03.000Z")),
    ("routing off queue no time", _routing(_B, "OFF_QUEUE", None)),
    ("routing communicating", _routing(_B, "communicating", "2026-03-01T09:00:09.000+00:00")),
    ("routing duplicate", _routing(_A, "NOT_RESPONDING", "2026-03-01T09:00:03.000Z")),
    ("routing stale", _routing(_A, "IDLE", "2026-03-01T08:59:00.000Z")),
    ("routing unknown fields", _routing(_C, "IDLE", "2026-03-01T09:00:01Z", presence={"ignored": True})),
    # -- malformed: the dead-letter topic
    ("invalid json", '{"topicName": "v2.users.x.presence", '),
    ("not json at all", "hello"),
    ("empty frame", ""),
    ("json nan", '{"topicName":"v2.users.x.presence","eventBody":NaN}'),
    ("json array", '[{"topicName": "v2.users.x.presence"}]'),
    ("json string", '"v2.users.x.presence"'),
    ("json number", "42"),
    ("json null", "null"),
    ("missing topicName", '{"eventBody": {}}'),
    ("topicName not a string", '{"topicName": 7, "eventBody": {}}'),
    ("presence eventBody missing", _dumps({"topicName": f"v2.users.{_A}.presence"})),
    ("presence eventBody a string",
     _dumps({"topicName": f"v2.users.{_A}.presence", "eventBody": "AVAILABLE"})),
    ("presence definition missing",
     _dumps({"topicName": f"v2.users.{_A}.presence", "eventBody": {"message": ""}})),
    ("presence definition a list", _dumps({"topicName": f"v2.users.{_A}.presence",
                                           "eventBody": {"presenceDefinition": ["ON_QUEUE"]}})),
    ("presence systemPresence missing", _presence(_A, None)),
    ("presence systemPresence int", _presence(_A, 3)),
    ("presence systemPresence empty", _presence(_A, "")),
    ("presence systemPresence only separators", _presence(_A, " _-")),
    ("presence definition id int", _presence(_A, "AVAILABLE", definition_id=12)),
    ("presence message a dict", _presence(_A, "AVAILABLE", message={"text": "hi"})),
    ("presence primary a string", _presence(_A, "AVAILABLE", primary="yes")),
    ("presence primary an int", _presence(_A, "AVAILABLE", primary=1)),
    ("presence source a list", _presence(_A, "AVAILABLE", source=["PURECLOUD"])),
    ("presence modifiedDate garbage", _presence(_A, "AVAILABLE", "yesterday at noon, roughly")),
    ("presence modifiedDate short", _presence(_A, "AVAILABLE", "2026")),
    ("presence modifiedDate a number", _presence(_A, "AVAILABLE", 1772355600000)),
    ("presence modifiedDate out of range", _presence(_A, "AVAILABLE", "9999-12-31T23:59:59.999-05:00")),
    ("presence lone surrogate escaped", _presence(_A, "AVAILABLE", message="@@").replace("@@", "\\ud800")),
    ("presence metadata a list", _dumps({"topicName": f"v2.users.{_A}.presence", "metadata": [],
        "eventBody": {"presenceDefinition": {"systemPresence": "AVAILABLE"}}})),
    ("presence correlation id int", _presence(_A, "AVAILABLE", correlation=5)),
    ("routing eventBody missing", _dumps({"topicName": f"v2.users.{_A}.routingStatus"})),
    ("routing eventBody a list", _dumps({"topicName": f"v2.users.{_A}.routingStatus", "eventBody": []})),
    ("routing status body missing", _dumps({"topicName": f"v2.users.{_A}.routingStatus", "eventBody": {}})),
    ("routing status body a string", _dumps({"topicName": f"v2.users.{_A}.routingStatus",
                                             "eventBody": {"routingStatus": "IDLE"}})),
    ("routing status missing", _routing(_A, None)),
    ("routing status a bool", _routing(_A, True)),
    ("routing startTime bad", _routing(_A, "IDLE", "2026-13-45T99:00:00Z")),
    ("duplicate keys", '{"topicName":"v2.users.' + _A + '.presence","eventBody":{"presenceDefinition":'
        '{"systemPresence":"AWAY"},"modifiedDate":"2026-03-01T09:10:00Z"},"eventBody":{"presenceDefinition":'
        '{"systemPresence":"BUSY"},"modifiedDate":"2026-03-01T09:11:00Z"}}'),
    ("deeply nested", '{"topicName":"v2.users.x.presence","eventBody":' + "[" * 1100 + "]" * 1100 + "}"),
    ("huge invalid frame", '{"topicName": "' + "x" * 66_000),
    # -- not events: counted, no record
    ("heartbeat", '{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}'),
    ("heartbeat lower case",
     '{"topicName":"channel.metadata","eventBody":{"message":"websocket heartbeat"}}'),
    ("pong", '{"topicName":"channel.metadata","eventBody":{"message":"pong"}}'),
    ("metadata other", '{"topicName":"channel.metadata","eventBody":{"message":"something else"}}'),
    ("metadata no body", '{"topicName":"channel.metadata"}'),
    ("socket closing", '{"topicName":"v2.system.socket_closing","eventBody":{"message":"closing"}}'),
    ("system no longer subscribed other channel", _dumps({"topicName": "v2.system.no_longer_subscribed",
        "eventBody": {"systemTopicType": "no_longer_subscribed", "channelId": "elsewhere",
                      "reason": "another_channel_subscribed"}})),
    ("system message unknown type", '{"topicName":"v2.system.something","eventBody":{"reason":"x"}}'),
    ("system message body a list", '{"topicName":"v2.system.something","eventBody":[1]}'),
    ("system message reason int", '{"topicName":"v2.system.something","eventBody":{"reason":1}}'),
    ("subscription reply ok", '{"result":"200","status":"subscribed","topics":["v2.users.x?presence"]}'),
    ("subscription reply int result", '{"result":200,"topics":[{"id":"v2.users.x?presence"}]}'),
    ("subscription reply bad topics", '{"result":"200","topics":[1]}'),
    ("subscription reply bad result", '{"result":[200]}'),
    ("subscription reply gone", '{"result":"404","message":"channel not found"}'),
    ("unknown topic", '{"topicName":"v2.users.' + _A + '.conversations","eventBody":{}}'),
    ("unknown users topic with dots", _presence(f"{_A}.extra", "AVAILABLE")),
    ("unknown routing topic with dots", _routing(f"{_A}.extra", "IDLE")),
    ("unknown other topic", '{"topicName":"v2.routing.queues.q1.users","eventBody":{}}'),
    ("users prefix only", '{"topicName":"v2.users.presence","eventBody":{}}'),
    ("empty user id presence", '{"topicName":"v2.users..presence","eventBody":{}}'),
    # -- JSON corners where two parsers could disagree (the typed shortcut must not)
    ("bom before presence", "\ufeff" + _presence(_A, "AWAY", "2026-03-01T09:20:00Z")),
    ("presence nan in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:01Z", x="@@").replace('"@@"', "NaN")),
    ("presence infinity in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:02Z", x="@@").replace('"@@"', "Infinity")),
    ("presence big int in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:03Z", x="@@").replace('"@@"', "1" * 40)),
    ("presence huge float in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:04Z", x="@@").replace('"@@"', "1e400")),
    ("presence leading zero in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:05Z", x="@@").replace('"@@"', "0123")),
    ("presence lone surrogate in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:06Z", x="@@").replace("@@", "\\udc00")),
    ("presence lone surrogate in source",
     _presence(_A, "AWAY", "2026-03-01T09:20:07Z", source="@@").replace("@@", "\\ud83d")),
    ("presence surrogate pair in message",
     _presence(_A, "AWAY", "2026-03-01T09:20:08Z", message="@@").replace("@@", "\\ud83d\\ude00")),
    ("presence invalid escape in unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:09Z", x="@@").replace("@@", "\\q")),
    ("presence raw tab in message",
     _presence(_A, "AWAY", "2026-03-01T09:20:10Z", message="a@@b").replace("@@", "\t")),
    ("presence escaped nul in message",
     _presence(_A, "BUSY", "2026-03-01T09:20:11Z", message="@@").replace("@@", "\\u0000")),
    ("presence escaped topic",
     _presence(_A, "AWAY", "2026-03-01T09:20:12Z").replace(".presence", "\\u002epresence")),
    ("presence trailing garbage", _presence(_A, "AWAY", "2026-03-01T09:20:13Z") + "x"),
    ("presence trailing whitespace", _presence(_A, "BUSY", "2026-03-01T09:20:14Z") + "\n\t "),
    ("presence two documents", _presence(_A, "AWAY", "2026-03-01T09:20:15Z") * 2),
    ("presence nested unknown field",
     _presence(_A, "AWAY", "2026-03-01T09:20:16Z", x="@@").replace('"@@"', "[" * 400 + "]" * 400)),
    ("presence duplicate keys in body", _presence(_A, "AWAY", "2026-03-01T09:20:17Z").replace(
        '"modifiedDate":"2026-03-01T09:20:17Z"',
        '"modifiedDate":"2026-03-01T09:20:18Z","modifiedDate":"2026-03-01T09:20:19Z"')),
    ("presence primary null", _presence(_A, "BUSY", "2026-03-01T09:20:20Z", primary=None)),
    ("presence eventBody null", _dumps({"topicName": f"v2.users.{_A}.presence", "eventBody": None})),
    ("presence metadata null", _dumps({"topicName": f"v2.users.{_A}.presence", "metadata": None,
        "eventBody": {
        "presenceDefinition": {"systemPresence": "AWAY"}, "modifiedDate": "2026-03-01T09:20:21Z"}})),
    ("presence correlation null",
     _presence(_A, "BUSY", "2026-03-01T09:20:22Z", correlation="@@").replace('"@@"', "null")),
    ("presence spaced status", _presence(_A, "  on   queue ", "2026-03-01T09:20:23Z")),
    ("presence routingStatus a string", _presence(_A, "AWAY", "2026-03-01T09:20:24Z", routingStatus="IDLE")),
    ("presence space separated time", _presence(_A, "BUSY", "2026-03-01 09:20:25.000+00:00")),
    ("presence time with 7 digits", _presence(_A, "AWAY", "2026-03-01T09:20:26.1234567Z")),
    ("presence date only", _presence(_A, "BUSY", "2026-03-01")),
    ("presence long message", _presence(_A, "AWAY", "2026-03-01T09:20:27Z", message="m" * 1500)),
    ("presence longer message", _presence(_A, "BUSY", "2026-03-01T09:20:28Z", message="n" * 2100)),
    ("routing presence fields of wrong type",
     _routing(_B, "IDLE", "2026-03-01T09:20:00Z", message=5, primary="x")),
    ("routing status spaced", _routing(_B, " Off Queue ", "2026-03-01T09:20:01Z")),
    ("routing empty startTime", _routing(_B, "INTERACTING", "")),
    ("routing with presence topic body", _dumps({"topicName": f"v2.users.{_B}.routingStatus", "eventBody": {
        "presenceDefinition": {"systemPresence": "AWAY"}}})),
    # -- a last normal change after all that
    ("presence after the odd ones", _presence(_A, "AVAILABLE", "2026-03-01T09:30:00.000Z")),
    ("routing after the odd ones", _routing(_A, "IDLE", "2026-03-01T09:30:00.000Z")),
]  # fmt: skip


class RecordingProducer(NullProducer):
    """Remembers every record it is given, in order (class-level: the sink builds its own)."""

    produced: ClassVar[list[list[Any]]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        value = kwargs["value"]
        RecordingProducer.produced.append(
            [
                topic,
                _text(kwargs["key"]),
                None if value is None else _text(value),
                [[name, _text(data)] for name, data in kwargs["headers"]],
            ]
        )


def _text(data: bytes) -> str:
    """Bytes as text, reversibly (``surrogateescape`` for any byte that is not UTF-8)."""
    return data.decode("utf-8", "surrogateescape")


class _Clock:
    """One settable time for every clock of the shard and the sink."""

    def __init__(self) -> None:
        self.wall = START
        self.mono = 1000.0

    def set(self, i: int) -> None:
        self.wall = START + timedelta(minutes=1, milliseconds=7 * i)
        self.mono = 1000.0 + i


def _samples() -> dict[str, float]:
    out = {}
    for kind in FRAME_KINDS:
        out[f"kind:{kind}"] = REGISTRY.get_sample_value("bridge_genesys_events_total", {"kind": kind}) or 0.0
    for kind in ("presence", "routing_status"):
        out[f"stale:{kind}"] = REGISTRY.get_sample_value("bridge_stale_events_total", {"kind": kind}) or 0.0
    for reason in DLQ_REASONS:
        out[f"dlq:{reason}"] = (
            REGISTRY.get_sample_value("bridge_dlq_records_total", {"reason": reason}) or 0.0
        )
    return out


async def _run() -> list[dict[str, Any]]:
    clock = _Clock()
    settings = Settings(
        id="corpus-bridge",
        topic_presence="t.presence",
        topic_routing_status="t.routing",
        topic_agent_state="t.state",
        topic_dlq="t.dlq",
        # cee6ae4 had no backfill: with it off a stale frame is dropped as it was then.
        # With it on, a stale stream change is written late instead (tests/test_backfill.py).
        backfill_enabled=False,
    )
    RecordingProducer.produced = []
    sink = ShardSink(settings, 3, producer_factory=RecordingProducer, clock=lambda: clock.wall)
    await sink.start()
    shard = Shard(
        3,
        USERS,
        rest=NullRest(),
        sink=sink,
        state=ShardState(labels=LABELS),
        settings=settings,
        socket_factory=FakeSocket,
        clock=lambda: clock.mono,
        wall=lambda: clock.wall,
    )
    handle = shard._serving.handle
    out = []
    for i, (name, text) in enumerate(FRAMES):
        clock.set(i)
        before = _samples()
        raised = None
        try:
            handle(text, CHANNEL)
        except Exception as exc:  # the outcome of a frame, recorded as such
            raised = f"{type(exc).__name__}: {exc}"
        # The frame counts reach the metric at the serving loop's next tick (older code: at once).
        flush = getattr(shard._serving, "flush_counts", None)
        if flush is not None:
            flush()
        await sink.flush()
        after = _samples()
        moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        out.append({"name": name, "metrics": moved, "raised": raised, "records": RecordingProducer.produced})
        RecordingProducer.produced = []
    await sink.close()
    return out


def outcomes() -> list[dict[str, Any]]:
    """What the hot path makes of each frame of :data:`FRAMES` (module docstring)."""
    return asyncio.run(_run())


def frame_digests() -> list[str]:
    """A digest per frame: the golden file is only valid for the corpus it was made from."""
    return [hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16] for _n, text in FRAMES]


def _frozen(doc: object) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", type=Path, required=True, help="where to write the golden file")
    args = parser.parse_args()
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(_frozen({"frames": frame_digests(), "outcomes": outcomes()}))
    print(f"{len(FRAMES)} frames → {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
