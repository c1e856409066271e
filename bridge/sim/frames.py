"""Notification frames as Genesys sends them, and their RFC 6455 wire form.

A change is serialised once (orjson) and framed once; the same bytes go to
every socket subscribed to that user.
"""

from __future__ import annotations

import random
import struct
import uuid

import orjson

from bridge.sim.org import PRESENCE, Change, iso_ms, title_case

__all__ = [
    "HEARTBEAT",
    "PONG",
    "ChangeEncoder",
    "channel_not_found",
    "encode",
    "socket_closing",
    "ws_text_frame",
]

_OPCODE_TEXT_FIN = 0x81
_LEN1_MAX = 126
_LEN2_MAX = 65536


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked (server → client) single-frame text message."""
    n = len(payload)
    if n < _LEN1_MAX:
        header = struct.pack("!BB", _OPCODE_TEXT_FIN, n)
    elif n < _LEN2_MAX:
        header = struct.pack("!BBH", _OPCODE_TEXT_FIN, 126, n)
    else:
        header = struct.pack("!BBQ", _OPCODE_TEXT_FIN, 127, n)
    return header + payload


def encode(message: object) -> bytes:
    """JSON bytes of a message."""
    return orjson.dumps(message)


HEARTBEAT = ws_text_frame(
    encode({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}})
)
PONG = ws_text_frame(encode({"topicName": "channel.metadata", "eventBody": {"message": "pong"}}))


def socket_closing(grace_s: float) -> bytes:
    """The maintenance notice that precedes a server-side close."""
    return ws_text_frame(
        encode(
            {
                "topicName": "v2.system.socket_closing",
                "eventBody": {
                    "message": "Socket closing for maintenance; reconnect to the same connectUri",
                    "closingInSeconds": grace_s,
                },
            }
        )
    )


def channel_not_found(channel_id: str) -> bytes:
    """The JSON text sent to a socket whose channel does not exist (then closed)."""
    return encode({"result": "404", "status": "error", "message": f"Channel {channel_id} not found"})


class ChangeEncoder:
    """Turns a :class:`Change` into its JSON payload (deterministic under a seed)."""

    def __init__(self, seed: int) -> None:
        # UUID-shaped correlation ids: a seeded prefix plus the change's seq.
        base = str(uuid.UUID(int=random.Random(f"{seed}:correlation").getrandbits(128), version=4))
        self._prefix = base[:24]

    def payload(self, change: Change) -> bytes:
        """The notification JSON for one change."""
        correlation = f"{self._prefix}{change.seq:012x}"
        if change.kind == PRESENCE:
            sp = title_case(change.value) if change.title_case else change.value
            return orjson.dumps(
                {
                    "topicName": f"v2.users.{change.user_id}.presence",
                    "version": "2",
                    "eventBody": {
                        "source": "PURECLOUD",
                        "presenceDefinition": {"id": change.definition_id, "systemPresence": sp},
                        "primary": True,
                        "message": change.message,
                        "modifiedDate": iso_ms(change.changed_ms),
                    },
                    "metadata": {"CorrelationId": correlation},
                }
            )
        return orjson.dumps(
            {
                "topicName": f"v2.users.{change.user_id}.routingStatus",
                "version": "2",
                "eventBody": {
                    "routingStatus": {"status": change.value, "startTime": iso_ms(change.changed_ms)}
                },
                "metadata": {"CorrelationId": correlation},
            }
        )
