"""Per-token rate limiting with Genesys's 429 and inin-ratelimit-* headers."""

from __future__ import annotations

import asyncio

from bridge.sim.ratelimit import RateLimiter
from tests.sim.conftest import StartSim


async def test_normal_replies_carry_ratelimit_headers(start_sim: StartSim) -> None:
    """Every /api/v2 reply has inin-ratelimit-allowed/count/reset."""
    sim = await start_sim()
    r = await sim.api("GET", "/api/v2/presence/definitions")
    assert r.headers["inin-ratelimit-allowed"] == "300"
    assert r.headers["inin-ratelimit-count"] == "1"
    assert 1 <= int(r.headers["inin-ratelimit-reset"]) <= 60
    r = await sim.api("GET", "/api/v2/presence/definitions")
    assert r.headers["inin-ratelimit-count"] == "2"


async def test_budget_exhausted_is_429_with_retry_after(start_sim: StartSim) -> None:
    """Past the per-token budget: 429, Retry-After, code too.many.requests.retry.after."""
    sim = await start_sim(rate_limit_per_min=3)
    token = await sim.token()
    for _ in range(3):
        assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200
    r = await sim.api("GET", "/api/v2/users", token)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    body = r.json()
    assert body["code"] == "too.many.requests.retry.after" and body["status"] == 429


async def test_budget_is_per_token(start_sim: StartSim) -> None:
    """Another token has its own budget."""
    sim = await start_sim(rate_limit_per_min=1)
    first = await sim.token()
    assert (await sim.api("GET", "/api/v2/users", first)).status_code == 200
    assert (await sim.api("GET", "/api/v2/users", first)).status_code == 429
    assert (await sim.api("GET", "/api/v2/users", await sim.token())).status_code == 200


async def test_budget_resets_after_the_window(start_sim: StartSim) -> None:
    """A new window restores the budget."""
    sim = await start_sim(rate_limit_per_min=1, rate_limit_window_s=0.3)
    token = await sim.token()
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 429
    await asyncio.sleep(0.35)
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200


def test_the_reset_header_never_exceeds_the_window() -> None:
    """A window opened at a time whose float sum rounds up still says 60 s at most, not 61."""
    now = 1000.0008000002816  # (now + 60.0) - now > 60.0 in binary floating point
    limiter = RateLimiter(300, 60.0, clock=lambda: now)
    assert limiter.check("token").reset_s == 60
