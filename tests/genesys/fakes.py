"""Injected fakes shared by the genesys tests: a clock that sleeps instantly, a fake Genesys."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import orjson

LOGIN_URL = "https://login.test"
API_URL = "https://api.test"
CLIENT_ID = "client-id-1"
SECRET = "s3cr3t-VALUE-never-logged"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


@dataclass
class FakeTime:
    """A monotonic clock and a sleep that advances it instead of waiting."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
    )


@dataclass
class FakeLogin:
    """The OAuth token endpoint: issues tok-1, tok-2, … and records each request."""

    expires_in: int = 86_400
    status: int = 200
    error: str | None = None
    calls: int = 0
    basic: list[str] = field(default_factory=list)
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    delay_s: float = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.basic.append(base64.b64decode(request.headers["Authorization"].split()[1]).decode())
        self.forms.append(parse_qs(request.content.decode()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return json_response(self.status, {"error": self.error or "invalid_client", "description": "no"})
        return json_response(
            200, {"access_token": f"tok-{self.calls}", "token_type": "bearer", "expires_in": self.expires_in}
        )


def transport(login: FakeLogin, api: Handler) -> httpx.MockTransport:
    """One transport for both hosts, as the real worker shares one."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "login.test":
            return await login(request)
        result = api(request)
        return await result if isinstance(result, Awaitable) else result

    return httpx.MockTransport(handle)


def bearer(request: httpx.Request) -> str:
    header: str = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ")
