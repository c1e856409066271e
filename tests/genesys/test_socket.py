"""The thin websockets shell: text in and out, failures mapped to the exception tree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bridge.errors import AuthError, ChannelClosedError, NotFoundError, RequestError
from bridge.genesys import protocol
from bridge.genesys.socket import MAX_FRAME_BYTES, NotificationSocket, WebSocketConnection


async def genesys_like(ws: ServerConnection) -> None:
    """Answers app pings with pongs, echoes 'binary' as a binary frame, closes on 'bye'."""
    async for message in ws:
        if message == protocol.PING_FRAME:
            await ws.send('{"topicName": "channel.metadata", "eventBody": {"message": "pong"}}')
        elif message == "binary":
            await ws.send(b"\xff\xfe")
        elif message == "bye":
            await ws.close(1001, "going away")
        elif message == "drop":
            ws.transport.abort()  # the network drops: no close frame
        elif message == "huge":
            await ws.send("x" * (MAX_FRAME_BYTES + 1))


def refuse(status: int):  # type: ignore[no-untyped-def]
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/channels/gone"):
            return connection.respond(status, "nope")
        return None

    return process_request


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, str]]:
    status = getattr(request, "param", 404)
    async with serve(
        genesys_like, "127.0.0.1", 0, process_request=refuse(status), ping_interval=0.05, ping_timeout=0.1
    ) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield srv, f"ws://127.0.0.1:{port}/channels"


async def test_ping_pong_round_trip(server: tuple[Server, str]) -> None:
    """A ping frame goes out, the pong text comes back and parses as a Pong."""
    sock = NotificationSocket()
    assert sock.closed
    await sock.connect(server[1] + "/c1")
    assert not sock.closed
    await sock.send(protocol.ping_frame())
    text = await sock.recv()
    assert isinstance(
        protocol.parse_frame(text, observed_at=datetime.now(UTC), received_at=0.0), protocol.Pong
    )
    await sock.close()
    assert sock.closed


async def test_rfc6455_pings_are_answered(server: tuple[Server, str]) -> None:
    """Server control-frame pings (50 ms, 100 ms timeout) are answered: the socket outlives many."""
    sock = NotificationSocket()
    await sock.connect(server[1] + "/c1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sock.recv(), 0.4)
    await sock.send(protocol.ping_frame())
    assert "pong" in await sock.recv()
    await sock.close()


async def test_server_close_is_channel_closed(server: tuple[Server, str]) -> None:
    """A server-side close surfaces as ChannelClosedError with the close code and reason."""
    sock = NotificationSocket()
    await sock.connect(server[1] + "/c1")
    await sock.send("bye")
    with pytest.raises(ChannelClosedError):
        await sock.recv()
    assert sock.closed
    assert sock.close_reason == "1001 going away"
    with pytest.raises(ChannelClosedError):
        await sock.send("x")


@pytest.mark.parametrize("command", ["drop", "huge"])
async def test_dropped_connection_or_oversized_frame_is_channel_closed(
    server: tuple[Server, str], command: str
) -> None:
    """A connection that ends without a close frame, or a frame above MAX_FRAME_BYTES, ends the
    socket as ChannelClosedError with a reason (the shard reconnects) instead of hanging or buffering."""
    sock = NotificationSocket()
    await sock.connect(server[1] + "/c1")
    await sock.send(command)
    with pytest.raises(ChannelClosedError):
        await asyncio.wait_for(sock.recv(), 5)
    assert sock.closed
    assert sock.close_reason


async def test_binary_frame_becomes_text(server: tuple[Server, str]) -> None:
    """A binary frame is decoded with replacement, for the parser to reject."""
    sock = NotificationSocket()
    await sock.connect(server[1] + "/c1")
    await sock.send("binary")
    assert await sock.recv() == "\ufffd\ufffd"
    await sock.close()


@pytest.mark.parametrize(
    ("server", "error"),
    [(404, NotFoundError), (401, AuthError), (403, AuthError), (500, ChannelClosedError)],
    indirect=["server"],
)
async def test_refused_handshake_maps_to_tree(server: tuple[Server, str], error: type[Exception]) -> None:
    """A refused handshake: 404 → NotFoundError (new channel), 401/403 → AuthError, else ChannelClosed."""
    sock = NotificationSocket()
    with pytest.raises(error):
        await sock.connect(server[1] + "/gone")
    assert sock.closed


async def test_unreachable_and_bad_uri() -> None:
    """Nothing listening → ChannelClosedError; not a ws URI → RequestError."""
    with pytest.raises(ChannelClosedError):
        await NotificationSocket().connect("ws://127.0.0.1:1/channels/x")
    with pytest.raises(RequestError):
        await NotificationSocket().connect("http://example.invalid/x")


async def test_connect_is_injectable() -> None:
    """A fake connect function replaces websockets entirely (for the shard's tests)."""

    class FakeConnection:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.inbox: asyncio.Queue[str] = asyncio.Queue()

        async def recv(self) -> str:
            return await self.inbox.get()

        async def send(self, message: str) -> None:
            self.sent.append(message)

        async def close(self) -> None:
            return None

    fake = FakeConnection()
    uris: list[str] = []

    async def connect(uri: str) -> WebSocketConnection:
        uris.append(uri)
        return fake

    sock = NotificationSocket(connect=connect)
    await sock.connect("wss://streaming.test/channels/c1")
    await sock.send("hello")
    fake.inbox.put_nowait("frame")
    assert await sock.recv() == "frame"
    assert uris == ["wss://streaming.test/channels/c1"] and fake.sent == ["hello"]
    with pytest.raises(RuntimeError):
        await sock.connect("wss://again")
    await sock.close()
    await sock.close()
    with pytest.raises(ChannelClosedError):
        await sock.recv()


async def test_not_connected_recv_fails() -> None:
    """recv/send before connect raise ChannelClosedError."""
    sock = NotificationSocket()
    with pytest.raises(ChannelClosedError):
        await sock.recv()
    with pytest.raises(ChannelClosedError):
        await sock.send("x")
