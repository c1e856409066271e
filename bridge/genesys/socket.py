"""A thin asyncio shell around one Genesys notification WebSocket.

All protocol logic lives in :mod:`bridge.genesys.protocol` and the shard; this
class only opens the socket, moves text frames and maps failures to the
exception tree. Genesys behaviour followed (DESIGN §2):

* One socket per channel: a second socket on the same ``connectUri``
  disconnects the first, which then sees a close → :class:`ChannelClosedError`.
* RFC 6455 ping/pong control frames must be answered: websockets does that by
  itself while frames are being read.
* Liveness is application-level: Genesys sends a heartbeat about every 30 s
  and answers ``{"message": "ping"}`` with a pong. The shard runs the watchdog
  on those, so websockets' own keepalive is switched off
  (``ping_interval=None``): it would add a second, differently tuned timer
  that kills the socket without the shard knowing why.
* A handshake refused with 404 means the channel is gone
  (:class:`NotFoundError` → new channel); 401/403 → :class:`AuthError`;
  anything else, or any network failure → :class:`ChannelClosedError`.

The connect function is injected (``connect=``), so the shard's tests can
substitute an in-memory socket; the default is :func:`websockets_connect`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, cast

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.exceptions import ProtocolError as WebSocketProtocolError
from websockets.protocol import State

from bridge.errors import AuthError, ChannelClosedError, GenesysError, NotFoundError, RequestError

__all__ = [
    "CLOSE_TIMEOUT_S",
    "MAX_FRAME_BYTES",
    "MAX_QUEUED_FRAMES",
    "OPEN_TIMEOUT_S",
    "Connect",
    "NotificationSocket",
    "WebSocketConnection",
    "websockets_connect",
]

#: Bound on the opening handshake (the shard retries with backoff).
OPEN_TIMEOUT_S: Final = 10.0
#: Bound on the closing handshake; a dying socket must not hold up make-before-break.
CLOSE_TIMEOUT_S: Final = 5.0
#: Notification frames are small; this bounds a hostile one (websockets' default is 1 MiB).
MAX_FRAME_BYTES: Final = 1024 * 1024
#: Frames websockets buffers before it stops reading the TCP socket. Its
#: default of 16 paused and resumed the transport (two epoll_ctl calls) every
#: few frames under load: 1,024 (about 0.5 MB of notifications) cut the
#: client's CPU per frame by about a quarter in a side-by-side run.
MAX_QUEUED_FRAMES: Final = 1024
_HTTP_NOT_FOUND: Final = 404
_HTTP_AUTH: Final = frozenset({401, 403})
#: Failures of an open socket: the peer closed, the network dropped, or the peer broke RFC 6455.
_LOST: Final = (ConnectionClosed, OSError, WebSocketProtocolError)


class WebSocketConnection(Protocol):
    """What the shell needs from a connection (websockets' ``ClientConnection`` fits)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...


Connect = Callable[[str], Awaitable[WebSocketConnection]]


async def websockets_connect(uri: str) -> WebSocketConnection:
    """Open ``uri`` with websockets: no client keepalive pings (see module docstring)."""
    connection = await ws_connect(
        uri,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT_S,
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_FRAME_BYTES,
        max_queue=MAX_QUEUED_FRAMES,
    )
    return cast(WebSocketConnection, connection)


def _handshake_error(exc: BaseException, uri_kind: str) -> GenesysError:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        message = f"{uri_kind} handshake refused: HTTP {status}"
        if status == _HTTP_NOT_FOUND:
            return NotFoundError(message, status=status)
        if status in _HTTP_AUTH:
            return AuthError(message, status=status)
        return ChannelClosedError(message, status=status)
    if isinstance(exc, InvalidURI):
        return RequestError(f"{uri_kind} is not a WebSocket URI")
    return ChannelClosedError(f"{uri_kind} connect failed: {type(exc).__name__}")


class NotificationSocket:
    """One notification WebSocket: ``connect``, ``recv``, ``send``, ``close``.

    ``recv`` returns text (a binary frame is decoded as UTF-8 with
    replacement, so the parser rejects it like any malformed frame). Every
    failure is a :class:`~bridge.errors.GenesysError`; once one is raised,
    :attr:`closed` is True.
    """

    def __init__(self, *, connect: Connect = websockets_connect) -> None:
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
        state = getattr(self._ws, "state", None)
        return isinstance(state, State) and state in {State.CLOSING, State.CLOSED}

    async def connect(self, uri: str) -> None:
        """Open the socket to a channel's ``connectUri`` (query string and all)."""
        if self._ws is not None:
            raise RuntimeError("NotificationSocket.connect called twice; use a new socket")
        try:
            self._ws = await self._connect(uri)
        except (InvalidHandshake, InvalidURI, OSError, TimeoutError, ConnectionClosed) as exc:
            self.close_reason = type(exc).__name__
            raise _handshake_error(exc, "notification socket") from None
        self._closed = False
        self.close_reason = None

    def _lost(self, exc: BaseException) -> ChannelClosedError:
        self._closed = True
        if isinstance(exc, ConnectionClosed):
            frame = exc.rcvd or exc.sent
            self.close_reason = f"{frame.code} {frame.reason}".strip() if frame else "no close frame"
        else:
            self.close_reason = type(exc).__name__
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
            with contextlib.suppress(*_LOST):
                await ws.close()
