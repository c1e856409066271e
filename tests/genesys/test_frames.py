"""bridge.genesys.frames: change frames decode into structs; every doubt goes to the general parser."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.errors import ProtocolError
from bridge.genesys import protocol
from bridge.genesys.frames import MAX_FAST_FRAME_CHARS, decode_change_frame
from tests.hotpath_corpus import FRAMES

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PRESENCE = (
    '{"topicName":"v2.users.u1.presence","version":"2","eventBody":{"source":"PURECLOUD",'
    '"presenceDefinition":{"id":"d1","systemPresence":"On Queue"},"primary":true,"message":"",'
    '"modifiedDate":"2026-03-01T09:00:01.000Z"},"metadata":{"CorrelationId":"c1"}}'
)


def test_a_change_frame_decodes_into_structs() -> None:
    """The simulator's presence frame decodes with every field typed."""
    frame = decode_change_frame(PRESENCE)
    assert frame is not None and frame.eventBody is not None
    assert frame.eventBody.presenceDefinition is not None
    assert frame.eventBody.presenceDefinition.systemPresence == "On Queue"
    assert frame.metadata is not None and frame.metadata.CorrelationId == "c1"


def test_anything_else_is_left_to_the_general_parser() -> None:
    """An unknown field, a number, invalid JSON or a frame over the length bound give None."""
    assert decode_change_frame(PRESENCE.replace('"version":"2"', '"version":2')) is None
    assert decode_change_frame(PRESENCE.replace('"primary":true', '"primary":true,"x":1e400')) is None
    assert decode_change_frame(PRESENCE[:-1]) is None
    long = PRESENCE.replace('"message":""', '"message":"' + "m" * MAX_FAST_FRAME_CHARS + '"')
    assert decode_change_frame(long) is None


def test_the_shortcut_gives_what_the_general_parser_gives_for_every_corpus_frame() -> None:
    """For each corpus frame the shortcut answers None or the very change the general path builds."""
    taken = 0
    for name, text in FRAMES:
        fast = protocol._fast_change(text, NOW, 5.0)
        if fast is None:
            continue
        taken += 1
        try:
            general = protocol._parse(text, NOW, 5.0)
        except ProtocolError as exc:
            raise AssertionError(
                f"{name}: the shortcut took a frame the parser refuses: {exc.reason}"
            ) from None
        assert general == fast, name
    assert taken >= 40
