"""Fixtures for the simulator tests: a simulator on a free port and small HTTP/WebSocket helpers.

Everything goes over real HTTP (httpx) and real WebSockets (websockets),
never through the bridge. Waiting is polling against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.sim.config import SimConfig
from bridge.sim.org import wall_ms
from bridge.sim.server import SimHandle, run_simulator

DEADLINE_S = 5.0
TEST_DEFAULTS: dict[str, Any] = {
    "port": 0,
    "agents": 20,
    "seed": 1,
    "generator_paused": True,
    "heartbeat_s": 30.0,
}


def combined(user_id: str) -> str:
    """The combined presence + routing-status topic of a user."""
    return f"v2.users.{user_id}?presence&routingStatus"


async def eventually(check: Callable[[], Awaitable[bool]], deadline_s: float = DEADLINE_S) -> None:
    """Poll ``check`` until it is true or the deadline passes (then fail)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


async def recv_json(ws: ClientConnection, timeout: float = DEADLINE_S) -> dict[str, Any]:
    """The next message as JSON."""
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = DEADLINE_S
) -> dict[str, Any]:
    """Skip messages until one satisfies ``predicate``."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching message before the deadline")
        msg = await recv_json(ws, left)
        if predicate(msg):
            return msg


def is_change(msg: dict[str, Any]) -> bool:
    """A presence or routing-status notification."""
    topic = str(msg.get("topicName", ""))
    return topic.startswith("v2.users.")


@dataclass
class Sim:
    """A running simulator plus an HTTP client on it."""

    handle: SimHandle
    http: httpx.AsyncClient
    stack: contextlib.AsyncExitStack
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def user_ids(self) -> list[str]:
        return list(self.handle.simulator.org.users)

    async def token(self, client_id: str = "sim-client", secret: str = "sim-secret") -> str:
        r = await self.http.post(
            "/oauth/token", auth=(client_id, secret), data={"grant_type": "client_credentials"}
        )
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        if token is None:
            token = self.tokens.get("default") or await self.token()
            self.tokens["default"] = token
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kw)

    async def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, path, json=body)

    async def channel(self, token: str | None = None, topics: list[str] | None = None) -> dict[str, Any]:
        r = await self.api("POST", "/api/v2/notifications/channels", token)
        assert r.status_code == 200, r.text
        ch: dict[str, Any] = r.json()
        if topics is not None:
            r = await self.api(
                "PUT",
                f"/api/v2/notifications/channels/{ch['id']}/subscriptions",
                token,
                json=[{"id": t} for t in topics],
            )
            assert r.status_code == 200, r.text
        return ch

    async def connect(self, channel: dict[str, Any]) -> ClientConnection:
        ws = await connect(channel["connectUri"], ping_interval=None, max_queue=None, close_timeout=1)
        await self.stack.enter_async_context(ws)
        await eventually(lambda: self._connected(channel["id"]))
        return ws

    async def _connected(self, channel_id: str) -> bool:
        ch = self.handle.simulator.registry.channels.get(channel_id)
        return ch is not None and ch.session is not None

    async def stats(self) -> dict[str, Any]:
        r = await self.admin("GET", "/sim/stats")
        data: dict[str, Any] = r.json()
        return data


StartSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Factory: ``await start_sim(agents=..., heartbeat_s=...)`` starts a simulator for this test.

    ``clock_ms`` replaces the simulator's wall clock (changes' times, the analytics delay).
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(clock_ms: Callable[[], int] = wall_ms, **overrides: Any) -> Sim:
            config = SimConfig(**{**TEST_DEFAULTS, **overrides})
            handle = await stack.enter_async_context(run_simulator(config, clock_ms))
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=handle.base_url, timeout=10))
            return Sim(handle, http, stack)

        yield start


@pytest.fixture
async def sim(start_sim: StartSim) -> Sim:
    """A paused simulator with 20 agents and the test defaults."""
    return await start_sim()
