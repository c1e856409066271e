"""bridge.chaos.toxiproxy: toxics come and go on the real server; a removal Toxiproxy holds is waited out."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bridge.chaos.cli import DEFAULT_TOXIPROXY
from bridge.chaos.toxiproxy import ToxiproxyServer
from bridge.ports import free_port

needs_toxiproxy = pytest.mark.skipif(
    not DEFAULT_TOXIPROXY.exists(), reason="toxiproxy not built (make pytest builds it)"
)


@pytest.fixture
async def toxiproxy(tmp_path: Path) -> AsyncIterator[ToxiproxyServer]:
    with (tmp_path / "toxiproxy.log").open("wb") as log:
        server = ToxiproxyServer(DEFAULT_TOXIPROXY, free_port(), log)
        await asyncio.to_thread(server.start)
        try:
            yield server
        finally:
            await server.aclose()


@needs_toxiproxy
async def test_a_toxic_is_added_and_removed(toxiproxy: ToxiproxyServer) -> None:
    """The toxic is listed once added and gone once removed; removing it again is fine."""
    await toxiproxy.proxy("p", free_port(), f"127.0.0.1:{free_port()}")
    await toxiproxy.add_toxic("p", "slow", "latency", "downstream", {"latency": 100})
    assert await toxiproxy._has_toxic("p", "slow")
    await toxiproxy.remove_toxic("p", "slow")
    assert not await toxiproxy._has_toxic("p", "slow")
    await toxiproxy.remove_toxic("p", "slow")


def _held_removal(releases_after: int | None) -> tuple[httpx.MockTransport, list[str]]:
    """Toxiproxy's answers while a link holds the removal: DELETE times out, the toxic stays listed."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        deletes = calls.count("DELETE")
        released = releases_after is not None and deletes > releases_after
        if request.method == "DELETE":
            if released:
                return httpx.Response(204)
            raise httpx.ReadTimeout("held by a link", request=request)
        return httpx.Response(200, json=[] if released else [{"name": "slow", "type": "latency"}])

    return httpx.MockTransport(handler), calls


async def test_a_removal_held_by_a_link_is_asked_again_until_it_goes() -> None:
    """Two DELETEs time out (the toxic still listed), the third succeeds: remove_toxic returns."""
    transport, calls = _held_removal(releases_after=2)
    server = ToxiproxyServer(DEFAULT_TOXIPROXY, 1, io.BytesIO(), transport=transport)
    await server.remove_toxic("p", "slow")
    assert calls.count("DELETE") == 3
    await server.http.aclose()


async def test_a_removal_that_never_goes_is_a_harness_error() -> None:
    """A toxic still there at the deadline raises (the run reports a harness error, not a pass)."""
    transport, _calls = _held_removal(releases_after=None)
    server = ToxiproxyServer(DEFAULT_TOXIPROXY, 1, io.BytesIO(), transport=transport)
    with pytest.raises(RuntimeError, match=r"still there after 0\.5 s"):
        await server.remove_toxic("p", "slow", deadline_s=0.5)
    await server.http.aclose()
