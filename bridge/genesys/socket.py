"""A thin asyncio shell around one Genesys notification WebSocket.

All protocol logic lives in :mod:`bridge.genesys.protocol` and the shard; this
class only opens the socket, moves text frames and maps failures to the
exception tree. Genesys behaviour followed:

* One socket per channel: a second socket on the same ``connectUri``
  disconnects the first, which then sees a close → :class:`ChannelClosedError`.
* RFC 6455 ping/pong control frames must be answered: aiohttp does that by
  itself while frames are being read (``autoping``).
* Liveness is application-level: Genesys sends a heartbeat about every 30 s
  and answers ``{"message": "ping"}`` with a pong. The shard runs the watchdog
  on those, so the client's own keepalive is switched off
  (``heartbeat=None``): it would add a second, differently tuned timer that
  kills the socket without the shard knowing why.
* A handshake refused with 404 means the channel is gone
  (:class:`NotFoundError` → new channel); 401/403 → :class:`AuthError`;
  anything else, or any network failure → :class:`ChannelClosedError`
  (the table is :data:`bridge.genesys.http.HANDSHAKE_ERRORS`).

The client is aiohttp's, whose frame reader is compiled: reading the
simulator's notifications at 12,000 frames/s through five sockets took
3.0 µs of CPU per frame against 9.4-10.4 µs with websockets 17 (measured
side by side; the reader runs on the same GIL as everything else a change
costs, so this is throughput).

The connect function is injected (``connect=``), so the shard's tests can
substitute an in-memory socket; the default is :func:`aiohttp_connect`. A
connection reports its end by raising :class:`ConnectionLost` (or
``OSError``) from ``recv``/``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import aiohttp
from yarl import URL

from bridge.errors import ChannelClosedError, GenesysError, RequestError
from bridge.genesys.http import HANDSHAKE_ERRORS

__all__ = [
    "CLOSE_TIMEOUT_S",
    "MAX_FRAME_BYTES",
    "OPEN_TIMEOUT_S",
    "Connect",
    "ConnectionLost",
    "NotificationSocket",
    "WebSocketConnection",
    "aiohttp_connect",
]

#: Bound on the opening handshake (the shard retries with backoff).
OPEN_TIMEOUT_S: Final = 10.0
#: Bound on the closing handshake; a dying socket must not hold up make-before-break.
CLOSE_TIMEOUT_S: Final = 5.0
#: Notification frames are small; this bounds a hostile one.
MAX_FRAME_BYTES: Final = 1024 * 1024
_SCHEMES: Final = frozenset({"ws", "wss"})
_ENDED: Final = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})


class ConnectionLost(Exception):
    """Raised by a :class:`WebSocketConnection` whose connection ended; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Failures of an open socket: the peer closed, the network dropped, the client broke.
_LOST: Final = (ConnectionLost, OSError, aiohttp.ClientError)


class WebSocketConnection(Protocol):
    """What the shell needs from a connection; ``recv``/``send`` raise :class:`ConnectionLost` at the end."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...


Connect = Callable[[str], Awaitable[WebSocketConnection]]


class _AiohttpConnection:
    """An aiohttp client WebSocket and its session, as a :class:`WebSocketConnection`."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def recv(self) -> str | bytes:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            text: str = msg.data
            return text
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type in _ENDED:
            code = self._ws.close_code
            if msg.type is aiohttp.WSMsgType.CLOSE:
                raise ConnectionLost(f"{msg.data} {msg.extra or ''}".strip())
            raise ConnectionLost("no close frame" if code is None else str(code))
        # ERROR: the transport broke or the peer broke RFC 6455 (bad UTF-8, oversized frame).
        raise ConnectionLost(type(msg.data).__name__ if msg.data is not None else "error")

    async def send(self, message: str) -> None:
        if self._ws.closed:
            raise ConnectionLost("closed")
        await self._ws.send_str(message)

    async def close(self) -> None:
        # aiohttp bounds each read of the closing handshake, not the whole
        # of it: a peer that keeps sending could hold close() open. Closing
        # the session afterwards drops the TCP connection in any case; the
        # TimeoutError reaches NotificationSocket.close, which ignores it.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close()
        finally:
            await self._session.close()


async def aiohttp_connect(uri: str) -> WebSocketConnection:
    """Open ``uri`` with aiohttp: no client keepalive (see module docstring), proxies from the env."""
    session = aiohttp.ClientSession(trust_env=True)
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            ws = await session.ws_connect(
                uri,
                autoping=True,
                heartbeat=None,
                max_msg_size=MAX_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
            )
    except BaseException:
        await session.close()
        raise
    return _AiohttpConnection(session, ws)


def _handshake_error(exc: BaseException, uri_kind: str) -> GenesysError:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return HANDSHAKE_ERRORS.error(exc.status, f"{uri_kind} handshake refused: HTTP {exc.status}")
    return ChannelClosedError(f"{uri_kind} connect failed: {type(exc).__name__}")


class NotificationSocket:
    """One notification WebSocket: ``connect``, ``recv``, ``send``, ``close``.

    ``recv`` returns text (a binary frame is decoded as UTF-8 with
    replacement, so the parser rejects it like any malformed frame). Every
    failure is a :class:`~bridge.errors.GenesysError`; once one is raised,
    :attr:`closed` is True.
    """

    def __init__(self, *, connect: Connect = aiohttp_connect) -> None:
        self._connect = connect
        self._ws: WebSocketConnection | None = None
        self._closed = True
        self.close_reason: str | None = None
        """Why the socket closed (close code and reason, or the error), for logs."""

    def __repr__(self) -> str:
        return f"NotificationSocket(closed={self.closed}, close_reason={self.close_reason!r})"

    @property
    def closed(self) -> bool:
        """True before :meth:`connect`, after :meth:`close` and after any failure."""
        if self._closed or self._ws is None:
            return True
        return getattr(self._ws, "closed", False) is True

    async def connect(self, uri: str) -> None:
        """Open the socket to a channel's ``connectUri`` (query string and all)."""
        if self._ws is not None:
            raise RuntimeError("NotificationSocket.connect called twice; use a new socket")
        try:
            scheme = URL(uri).scheme
        except ValueError:
            scheme = ""
        if scheme not in _SCHEMES:
            self.close_reason = "not a WebSocket URI"
            raise RequestError("notification socket URI is not a WebSocket URI")
        try:
            self._ws = await self._connect(uri)
        except (aiohttp.ClientError, OSError, TimeoutError, ConnectionLost) as exc:
            self.close_reason = type(exc).__name__
            raise _handshake_error(exc, "notification socket") from None
        self._closed = False
        self.close_reason = None

    def _lost(self, exc: BaseException) -> ChannelClosedError:
        self._closed = True
        self.close_reason = exc.reason if isinstance(exc, ConnectionLost) else type(exc).__name__
        return ChannelClosedError(f"notification socket closed ({self.close_reason})")

    async def recv(self) -> str:
        """The next frame's text; :class:`ChannelClosedError` when the socket is gone."""
        ws = self._ws
        if ws is None or self._closed:
            raise ChannelClosedError("notification socket is not open")
        try:
            data = await ws.recv()
        except _LOST as exc:
            raise self._lost(exc) from None
        return data if isinstance(data, str) else data.decode("utf-8", "replace")

    async def send(self, text: str) -> None:
        """Send one text frame; :class:`ChannelClosedError` when the socket is gone."""
        ws = self._ws
        if ws is None or self._closed:
            raise ChannelClosedError("notification socket is not open")
        try:
            await ws.send(text)
        except _LOST as exc:
            raise self._lost(exc) from None

    async def close(self) -> None:
        """Close the socket (idempotent, never raises)."""
        ws = self._ws
        self._closed = True
        if self.close_reason is None:
            self.close_reason = "closed by us"
        if ws is not None:
            with contextlib.suppress(*_LOST, TimeoutError):
                await ws.close()
