"""The streaming WebSocket at ``/channels/{id}``: the thin aiohttp shell around a channel.

Outgoing frames are framed once (:mod:`bridge.sim.frames`), queued per socket
and written to the transport in one call per event-loop turn, so a burst of
changes costs one system call per socket rather than one per frame.
RFC 6455 pings are answered by hand (``autoping=False``) so that a stall
fault can silence them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from aiohttp import WSMsgType, web

from bridge.sim.channels import CLOSE_MAINTENANCE, Channel, ChannelRegistry, SubscriptionError
from bridge.sim.frames import HEARTBEAT, PONG, channel_not_found, encode, socket_closing, ws_text_frame
from bridge.sim.simulator import SIMULATOR_KEY

__all__ = ["CLIENT_MAX_MESSAGE_BYTES", "CLOSE_TIMEOUT_S", "SOCKET_ROUTE", "WsSession", "channel_socket"]

CLOSE_TIMEOUT_S = 2.0
CLIENT_MAX_MESSAGE_BYTES = 1024 * 1024
CLOSE_NOT_FOUND = (1000, "channel not found")
SOCKET_ROUTE = "/channels/{channel_id}"


class WsSession:
    """One connected socket: its send queue, heartbeat clock and fault state."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        channel_id: str,
        *,
        heartbeat_s: float,
        slow_consumer_limit_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.channel_id = channel_id
        self._clock = clock
        self.connected_at = clock()
        self.heartbeat_s = heartbeat_s
        self.next_heartbeat = self.connected_at + heartbeat_s
        self.stalled_until = 0.0
        self.close_at: float | None = None
        self.held: bytes | None = None
        self.held_key: tuple[str, str] | None = None
        self.held_since = 0.0
        self.frames_sent = 0
        self.closed = False
        self._slow_limit = slow_consumer_limit_bytes
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- sending --------------------------------------------------------------

    def enqueue(self, wire: bytes) -> None:
        """Queue a framed message; it is written at the end of this loop turn."""
        if self.closed:
            return
        self._pending.append(wire)
        self.frames_sent += 1
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued in one transport call."""
        self._flush_handle = None
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if self.closed or self.transport.is_closing() or self.is_stalled():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self._slow_limit:
            self.abort()

    def is_stalled(self) -> bool:
        """True while a stall fault silences the socket."""
        return self.stalled_until > self._clock()

    # -- ending ---------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Flush, then close with a close frame (in the background)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        task = self._loop.create_task(self._close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, message=reason.encode())
        except (ConnectionError, RuntimeError):
            self.transport.abort()

    def abort(self) -> None:
        """Cut the TCP connection: no close frame, queued frames are lost."""
        self.closed = True
        self._pending.clear()
        self.transport.abort()

    # -- timers ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Heartbeats and a pending maintenance close (called by the housekeeper)."""
        if self.closed:
            return
        if self.close_at is not None and now >= self.close_at:
            self.close(*CLOSE_MAINTENANCE)
            return
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat_s
            if not self.is_stalled():
                self.enqueue(HEARTBEAT)

    def announce_maintenance(self, grace_s: float) -> None:
        """Send ``v2.system.socket_closing`` and close after ``grace_s``."""
        if self.closed:
            return
        self.enqueue(socket_closing(grace_s))
        self.close_at = self._clock() + grace_s

    def stall(self, seconds: float) -> None:
        """Send nothing at all for ``seconds``; what would have been sent is lost."""
        self.stalled_until = self._clock() + seconds
        self._pending.clear()

    def stats(self) -> dict[str, object]:
        """``/sim/stats`` entry."""
        return {
            "channelId": self.channel_id,
            "connectedSeconds": round(self._clock() - self.connected_at, 3),
            "stalled": self.is_stalled(),
            "closing": self.close_at is not None,
            "framesSent": self.frames_sent,
        }


def _reply(session: WsSession, body: dict[str, object]) -> None:
    if not session.is_stalled():
        session.enqueue(ws_text_frame(encode(body)))


def _topic_names(raw: object) -> list[object]:
    if not isinstance(raw, list):
        return []
    return [t.get("id") if isinstance(t, dict) else t for t in raw]


def _handle_text(session: WsSession, registry: ChannelRegistry, channel: Channel, text: str) -> bool:
    """Answer one client message; False when the channel is gone (socket must close)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        _reply(session, {"result": "400", "status": "error", "message": "message must be a JSON object"})
        return True
    message = data.get("message")
    correlation = data.get("correlationId")
    if message == "ping":
        if not session.is_stalled():
            session.enqueue(PONG)
        return True
    if message not in ("subscribe", "unsubscribe"):
        _reply(
            session,
            {
                "result": "400",
                "status": "error",
                "message": f"unknown message: {message!r}",
                "correlationId": correlation,
            },
        )
        return True
    if registry.get(channel.id) is None:
        return False
    names = _topic_names(data.get("topics"))
    try:
        if message == "subscribe":
            registry.subscribe(channel, names, replace=False, ignore_errors=bool(data.get("ignoreErrors")))
            status = "subscribed"
        else:
            registry.unsubscribe(channel, names)
            status = "unsubscribed"
    except SubscriptionError as exc:
        _reply(
            session,
            {
                "result": str(exc.status),
                "status": "error",
                "code": exc.code,
                "message": exc.message,
                "correlationId": correlation,
            },
        )
        return True
    _reply(session, {"result": "200", "status": status, "topics": names, "correlationId": correlation})
    return True


async def channel_socket(request: web.Request) -> web.StreamResponse:
    """``GET /channels/{channel_id}`` upgraded to a WebSocket."""
    sim = request.app[SIMULATOR_KEY]
    registry = sim.registry
    channel_id = request.match_info["channel_id"]
    ws = web.WebSocketResponse(
        autoping=False, compress=False, timeout=CLOSE_TIMEOUT_S, max_msg_size=CLIENT_MAX_MESSAGE_BYTES
    )
    await ws.prepare(request)
    sim.count_request(f"GET {SOCKET_ROUTE}", 101)
    channel = registry.get(channel_id)
    transport = request.transport
    if channel is None or transport is None:
        await ws.send_str(channel_not_found(channel_id).decode())
        await ws.close(code=CLOSE_NOT_FOUND[0], message=CLOSE_NOT_FOUND[1].encode())
        return ws
    session = WsSession(
        ws,
        transport,
        channel.id,
        heartbeat_s=sim.config.heartbeat_s,
        slow_consumer_limit_bytes=sim.config.slow_consumer_limit_bytes,
    )
    registry.attach(channel, session)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if not _handle_text(session, registry, channel, msg.data):
                    session.enqueue(ws_text_frame(channel_not_found(channel.id)))
                    session.close(*CLOSE_NOT_FOUND)
            elif msg.type == WSMsgType.PING:
                if not session.is_stalled() and not session.closed:
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.BINARY:
                _reply(
                    session,
                    {"result": "400", "status": "error", "message": "binary frames are not supported"},
                )
    finally:
        session.closed = True
        registry.detach(channel, session)
        registry.forget(session)
    return ws
