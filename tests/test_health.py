"""The metrics port: /metrics, /healthz, /readyz."""

from __future__ import annotations

import httpx

from bridge.health import HealthServer


async def test_endpoints_answer_with_readiness_from_the_callback() -> None:
    """healthz is 200 always; readyz follows the callback; metrics exports bridge_ names."""
    state = {"ready": False}
    server = HealthServer("127.0.0.1", 0, lambda: (state["ready"], {"shards": {}}))
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["ready"] is False
            state["ready"] = True
            assert (await client.get("/readyz")).status_code == 200
            text = (await client.get("/metrics")).text
            assert "bridge_build_info" in text
            assert "bridge_records_produced_total" in text or "# TYPE bridge_records_produced" in text
    finally:
        await server.stop()


async def test_a_taken_port_is_a_clear_config_error() -> None:
    """A metrics port in use gives a ConfigError naming the setting, not a traceback."""
    import pytest

    from bridge.errors import ConfigError

    first = HealthServer("127.0.0.1", 0, lambda: (True, {}))
    await first.start()
    try:
        second = HealthServer("127.0.0.1", first.port or 0, lambda: (True, {}))
        with pytest.raises(ConfigError, match="BRIDGE_METRICS_PORT"):
            await second.start()
    finally:
        await first.stop()


async def test_healthz_fails_when_the_liveness_callback_says_so() -> None:
    """A worker whose shard cannot restart answers 503 on /healthz, with the reason."""
    state = {"alive": True}
    server = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: (state["alive"], {"down": [3]}))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            state["alive"] = False
            dead = await client.get("/healthz")
            assert dead.status_code == 503
            assert dead.json() == {"alive": False, "down": [3]}
    finally:
        await server.stop()
