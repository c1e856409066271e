"""Typed decoding of the change frames, the hot path's shortcut past dicts.

Almost every frame a shard reads is a presence or routing-status change of
one shape. :func:`decode_change_frame` decodes such a frame with ``msgspec``
straight into the structs below, which checks every field's type while it
reads (no dict, no per-field type checks in Python). It answers None for
anything else, and for anything it is not sure of: a wrong type, a missing
body, invalid JSON, a frame longer than :data:`MAX_FAST_FRAME_CHARS`. The
caller (:func:`bridge.genesys.protocol.parse_frame`) then parses the frame
the general way, which also names the dead-letter reason. So this module
decides nothing a frame's outcome depends on: it is only allowed to be
faster (``tests/test_hotpath_corpus.py`` compares both over a corpus).

Field names are Genesys's (camelCase). Every field a change frame carries
is typed, with no number among them, and a frame with any other field takes
the general path: a field skipped unread could hold what orjson refuses
(``1e400``), which must keep its dead-letter outcome. A new field Genesys
adds costs the shortcut, never a change: add it here when it comes.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "MAX_FAST_FRAME_CHARS",
    "ChangeBody",
    "ChangeFrame",
    "Metadata",
    "PresenceDefinition",
    "RoutingStatus",
    "decode_change_frame",
]

#: Longer frames take the general path. A change frame is a few hundred
#: characters; the bound keeps the fast path away from what only the general
#: parser judges (e.g. orjson's nesting limit of 1,024, which needs 2,048).
MAX_FAST_FRAME_CHARS: Final = 2_000


class PresenceDefinition(msgspec.Struct, forbid_unknown_fields=True):
    """``eventBody.presenceDefinition``."""

    systemPresence: str | None = None
    id: str | None = None


class RoutingStatus(msgspec.Struct, forbid_unknown_fields=True):
    """``eventBody.routingStatus``."""

    status: str | None = None
    startTime: str | None = None


class ChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    """``eventBody`` of a presence frame (the first five fields) or a routing-status frame (the last)."""

    presenceDefinition: PresenceDefinition | None = None
    message: str | None = None
    modifiedDate: str | None = None
    source: str | None = None
    primary: bool | None = None
    routingStatus: RoutingStatus | None = None


class Metadata(msgspec.Struct, forbid_unknown_fields=True):
    """``metadata``."""

    CorrelationId: str | None = None


class ChangeFrame(msgspec.Struct, forbid_unknown_fields=True):
    """A notification frame with the fields a change can carry."""

    topicName: str
    version: str | None = None
    eventBody: ChangeBody | None = None
    metadata: Metadata | None = None


_decode: Final = msgspec.json.Decoder(ChangeFrame).decode
_DecodeError: Final = msgspec.DecodeError


def decode_change_frame(text: str | bytes) -> ChangeFrame | None:
    """The frame as a :class:`ChangeFrame`, or None: not of that shape (or too long); parse it generally."""
    if len(text) > MAX_FAST_FRAME_CHARS:
        return None
    try:
        return _decode(text)
    except _DecodeError:  # ValidationError too
        return None
