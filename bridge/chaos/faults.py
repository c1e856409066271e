"""One small function per chaos fault, against the simulator's admin API, process signals or Toxiproxy.

Each function applies one :class:`~bridge.chaos.schedule.Fault` to the
:class:`~bridge.chaos.env.Environment` and returns a short note for the
timeline (what it hit). Faults with a duration undo themselves at its end
(SIGCONT, restart, toxic removed) before returning, so the runner runs each
as its own task. A target among several (a connected channel with topics,
agents to delete) is
chosen with the fault's ``pick`` among what exists at that moment, sorted.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httpx

from bridge.chaos.env import Environment
from bridge.chaos.schedule import Fault
from bridge.chaos.toxiproxy import STREAMS

__all__ = ["APPLY", "apply_fault"]

#: Toxiproxy ``reset_peer`` resets a connection this long after it opens.
RESET_AFTER_MS = 100
#: The permission a ``restrict`` fault says the agents' topics lack.
RESTRICTED_BY = "chaos:agent:view"
#: Latency and resets act on the replies; a blackhole stops both directions.
STREAMS_BY_FAULT = {
    name: ("downstream",) for name in ("kafka_latency", "genesys_latency", "kafka_reset", "genesys_reset")
}


async def _connected_channel(env: Environment, fault: Fault) -> dict[str, Any] | None:
    stats = await env.sim_admin("GET", "/sim/stats")
    live = (c for c in stats["channels"] if c["connected"] and c["topics"])
    channels = sorted(live, key=lambda c: str(c["id"]))
    if not channels:
        return None
    channel: dict[str, Any] = channels[fault.pick % len(channels)]
    return channel


async def _channel_fault(env: Environment, fault: Fault, path: str, **body: Any) -> str:
    channel = await _connected_channel(env, fault)
    if channel is None:
        return "no connected channel"
    await env.sim_admin("POST", path, {"channelId": channel["id"], **body})
    return f"channel {str(channel['id'])[:8]} ({channel['topics']} topics)"


async def drop(env: Environment, fault: Fault) -> str:
    return await _channel_fault(env, fault, "/sim/faults/drop")


async def stall(env: Environment, fault: Fault) -> str:
    return await _channel_fault(env, fault, "/sim/faults/stall", seconds=fault.params["seconds"])


async def maintenance(env: Environment, fault: Fault) -> str:
    grace = fault.params["graceSeconds"]
    return await _channel_fault(env, fault, "/sim/faults/maintenance", graceSeconds=grace)


async def expire(env: Environment, fault: Fault) -> str:
    return await _channel_fault(env, fault, "/sim/faults/expire")


async def _http_storm(env: Environment, fault: Fault, status: int) -> str:
    await env.sim_admin("POST", "/sim/faults/http", {"status": status, "count": int(fault.params["count"])})
    return f"next {int(fault.params['count'])} requests → {status}"


async def storm_429(env: Environment, fault: Fault) -> str:
    return await _http_storm(env, fault, 429)


async def storm_5xx(env: Environment, fault: Fault) -> str:
    return await _http_storm(env, fault, int(fault.params["status"]))


async def _frames(env: Environment, fault: Fault, kind: str) -> str:
    await env.sim_admin("POST", "/sim/faults/frames", {"kind": kind, "count": int(fault.params["count"])})
    return f"next {int(fault.params['count'])} change frames {kind}"


async def malformed(env: Environment, fault: Fault) -> str:
    return await _frames(env, fault, "malformed")


async def duplicate(env: Environment, fault: Fault) -> str:
    return await _frames(env, fault, "duplicate")


async def out_of_order(env: Environment, fault: Fault) -> str:
    return await _frames(env, fault, "out-of-order")


async def revoke_tokens(env: Environment, _fault: Fault) -> str:
    revoked = (await env.sim_admin("POST", "/sim/faults/revoke-tokens", {}))["revoked"]
    return f"{revoked} tokens revoked"


async def roster_add(env: Environment, fault: Fault) -> str:
    ids = (await env.sim_admin("POST", "/sim/users", {"count": int(fault.params["count"])}))["ids"]
    return f"added {len(ids)} agents"


async def roster_remove(env: Environment, fault: Fault) -> str:
    users = sorted((await env.sim_admin("GET", "/sim/truth"))["users"])
    count = min(int(fault.params["count"]), max(0, len(users) - 1))
    chosen = random.Random(fault.pick).sample(users, count)
    for uid in chosen:
        await env.sim_admin("DELETE", f"/sim/users/{uid}")
    return f"deleted {len(chosen)} agents"


async def no_longer_subscribed(env: Environment, fault: Fault) -> str:
    return await _channel_fault(env, fault, "/sim/faults/system", type="no_longer_subscribed")


async def subscription_changed(env: Environment, fault: Fault) -> str:
    return await _channel_fault(env, fault, "/sim/faults/system", type="subscription_changed")


async def token_revoked(env: Environment, fault: Fault) -> str:
    end = bool(fault.params["endChannels"])
    note = await _channel_fault(env, fault, "/sim/faults/system", type="token_revoked", endChannels=end)
    return f"{note}{' ended' if end else ''}"


async def expand_drop(env: Environment, fault: Fault) -> str:
    part = "routingStatus" if fault.params["routingStatus"] else "presence"
    await env.sim_admin("POST", "/sim/faults/expand", {"part": part, "count": int(fault.params["count"])})
    return f"next {int(fault.params['count'])} users without {part}"


async def restrict(env: Environment, fault: Fault) -> str:
    """Agents Genesys will not let the bridge observe, for the fault's duration.

    A restriction acts on later subscriptions only, so every socket is dropped
    (the shards subscribe again and see the topics rejected); after the
    duration it is lifted and every socket dropped again, so the agents are
    observable, and reconciled, before the checks.
    """
    users = sorted((await env.sim_admin("GET", "/sim/truth"))["users"])
    chosen = random.Random(fault.pick).sample(users, min(int(fault.params["count"]), len(users)))
    restricted: list[str] = []
    try:
        for uid in chosen:
            if await _restriction(env, uid, {"missingPermissions": ["chaos:agent:view"]}):
                restricted.append(uid)
        await env.sim_admin("POST", "/sim/faults/drop", {})
        await asyncio.sleep(fault.duration_s)
    finally:  # every restriction is lifted, even when an agent was deleted meanwhile (seed 914)
        for uid in restricted:
            await _restriction(env, uid, {"restricted": False})
        await env.sim_admin("POST", "/sim/faults/drop", {})
    return f"{len(restricted)} agents restricted, lifted"


async def _restriction(env: Environment, uid: str, body: dict[str, Any]) -> bool:
    """Set or lift an agent's restriction; False when the agent is gone (a roster_remove meanwhile)."""
    try:
        await env.sim_admin("POST", f"/sim/users/{uid}/restrict", body)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != HTTPStatus.NOT_FOUND:
            raise
        return False
    return True


def _worker(env: Environment, fault: Fault) -> Any:
    assert fault.worker is not None
    return env.worker_procs[fault.worker]


async def kill(env: Environment, fault: Fault) -> str:
    worker = _worker(env, fault)
    await asyncio.to_thread(worker.kill)
    await asyncio.sleep(fault.duration_s)
    worker.start()
    return f"restarted after {fault.duration_s:.1f}s"


async def freeze(env: Environment, fault: Fault) -> str:
    worker = _worker(env, fault)
    worker.signal(signal.SIGSTOP)
    await asyncio.sleep(fault.duration_s)
    worker.signal(signal.SIGCONT)
    return "SIGCONT"


async def restart(env: Environment, fault: Fault) -> str:
    worker = _worker(env, fault)
    code = await asyncio.to_thread(worker.stop)
    await asyncio.sleep(fault.duration_s)
    worker.start()
    return f"stopped with exit {code}, started again"


async def broker_restart(env: Environment, fault: Fault) -> str:
    await asyncio.to_thread(env.restart_broker, fault.duration_s)
    return "broker up again"


async def _link(env: Environment, fault: Fault, kind: str, attributes: dict[str, Any]) -> str:
    assert env.toxiproxy is not None and fault.worker is not None
    link = fault.name.split("_", 1)[0]
    proxy = f"w{fault.worker}-{link}"
    names = []
    try:
        for stream in STREAMS_BY_FAULT.get(fault.name, STREAMS):
            name = f"{fault.name}-{stream}"
            await env.toxiproxy.add_toxic(proxy, name, kind, stream, attributes)
            names.append(name)
        await asyncio.sleep(fault.duration_s)
    finally:
        for name in names:
            await env.toxiproxy.remove_toxic(proxy, name)
    return "link healed"


async def kafka_blackhole(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "timeout", {"timeout": 0})


async def genesys_blackhole(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "timeout", {"timeout": 0})


async def kafka_latency(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "latency", {"latency": int(fault.params["latencyMs"]), "jitter": 0})


async def genesys_latency(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "latency", {"latency": int(fault.params["latencyMs"]), "jitter": 0})


async def kafka_reset(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "reset_peer", {"timeout": RESET_AFTER_MS})


async def genesys_reset(env: Environment, fault: Fault) -> str:
    return await _link(env, fault, "reset_peer", {"timeout": RESET_AFTER_MS})


APPLY: dict[str, Callable[[Environment, Fault], Awaitable[str]]] = {
    "drop": drop,
    "stall": stall,
    "maintenance": maintenance,
    "expire": expire,
    "storm_429": storm_429,
    "storm_5xx": storm_5xx,
    "malformed": malformed,
    "duplicate": duplicate,
    "out_of_order": out_of_order,
    "revoke_tokens": revoke_tokens,
    "roster_add": roster_add,
    "roster_remove": roster_remove,
    "no_longer_subscribed": no_longer_subscribed,
    "subscription_changed": subscription_changed,
    "token_revoked": token_revoked,
    "expand_drop": expand_drop,
    "restrict": restrict,
    "kill": kill,
    "freeze": freeze,
    "restart": restart,
    "broker_restart": broker_restart,
    "kafka_blackhole": kafka_blackhole,
    "kafka_latency": kafka_latency,
    "kafka_reset": kafka_reset,
    "genesys_blackhole": genesys_blackhole,
    "genesys_latency": genesys_latency,
    "genesys_reset": genesys_reset,
}


async def apply_fault(env: Environment, fault: Fault) -> str:
    """Apply ``fault`` (and undo it after its duration); the note for the timeline."""
    return await APPLY[fault.name](env, fault)
