"""The admin API under ``/sim/``: ground truth, change log, stats, generator control, faults.

Served only when the simulator is bound to loopback, or when an admin token
is configured (then every admin request must carry ``X-Sim-Admin-Token``).
An omitted ``channelId`` in a fault means every channel. Admin changes go
through the same path as generated ones (log + fan-out).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.api import error, json_response
from bridge.sim.channels import CLOSE_EXPIRED, FRAME_FAULT_KINDS, Channel, FrameFault
from bridge.sim.org import ROUTING_STATUSES, normalise_system_presence
from bridge.sim.simulator import (
    DEFAULT_MISSING_PERMISSIONS,
    EXPAND_PARTS,
    SIMULATOR_KEY,
    SYSTEM_MESSAGE_REASONS,
    SYSTEM_TOPIC_TYPES,
    ExpandFault,
    HttpFault,
    Simulator,
)

__all__ = [
    "ADMIN_TOKEN_HEADER",
    "DEFAULT_EVENTS_LIMIT",
    "MAX_EVENTS_LIMIT",
    "add_admin_routes",
    "admin_middleware",
]

ADMIN_TOKEN_HEADER = "X-Sim-Admin-Token"  # noqa: S105 - a header name, not a secret
DEFAULT_EVENTS_LIMIT = 10_000
MAX_EVENTS_LIMIT = 100_000
HTTP_FAULT_STATUSES = frozenset({429, 500, 502, 503, 504})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Invalid(Exception):
    pass


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR_KEY]


@web.middleware
async def admin_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Admin token check and a uniform 400 for bad admin bodies."""
    if not request.path.startswith("/sim/"):
        return await handler(request)
    token = _sim(request).config.admin_token
    if token is not None and not secrets.compare_digest(request.headers.get(ADMIN_TOKEN_HEADER, ""), token):
        return error(401, f"admin API needs the {ADMIN_TOKEN_HEADER} header")
    try:
        return await handler(request)
    except _Invalid as exc:
        return error(400, str(exc))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise _Invalid("body must be JSON") from None
    if not isinstance(body, dict):
        raise _Invalid("body must be a JSON object")
    return body


def _number(body: dict[str, Any], name: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Invalid(f"{name} must be a non-negative number")
    return float(value)


def _channels(sim: Simulator, body: dict[str, Any]) -> list[Channel]:
    channel_id = body.get("channelId")
    if channel_id is not None and not isinstance(channel_id, str):
        raise _Invalid("channelId must be a string")
    return sim.registry.select(channel_id)


def _affected(channels: list[Channel]) -> web.Response:
    return json_response({"channelIds": [c.id for c in channels]})


# -- state -----------------------------------------------------------------------


async def truth(request: web.Request) -> web.StreamResponse:
    """``GET /sim/truth``."""
    return json_response(_sim(request).org.truth())


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /sim/events?since=<seq>&limit=<n>``: changes with seq > since, oldest first."""
    org = _sim(request).org
    try:
        since = int(request.query.get("since", "0"))
        limit = min(int(request.query.get("limit", str(DEFAULT_EVENTS_LIMIT))), MAX_EVENTS_LIMIT)
    except ValueError:
        raise _Invalid("since and limit must be integers") from None
    entries = [c.to_json() for c in org.events_since(since, limit)]
    return json_response({"events": entries, "firstSeq": org.first_seq, "lastSeq": org.last_seq})


async def stats(request: web.Request) -> web.StreamResponse:
    """``GET /sim/stats``."""
    return json_response(_sim(request).stats())


async def generator(request: web.Request) -> web.StreamResponse:
    """``POST /sim/generator`` ``{"paused"?, "eventsPerSec"?}``; GET returns the settings."""
    gen = _sim(request).generator
    if request.method == "POST":
        body = await _body(request)
        if "paused" in body:
            if not isinstance(body["paused"], bool):
                raise _Invalid("paused must be a boolean")
            gen.paused = body["paused"]
        if "eventsPerSec" in body:
            gen.events_per_sec = _number(body, "eventsPerSec")
    return json_response({"paused": gen.paused, "eventsPerSec": gen.events_per_sec})


async def set_presence(request: web.Request) -> web.StreamResponse:
    """``PUT /sim/users/{id}/presence`` ``{"systemPresence", "presenceDefinitionId"?, "message"?}``."""
    sim = _sim(request)
    user = sim.org.active(request.match_info["user_id"])
    if user is None:
        return error(404, "user not found")
    body = await _body(request)
    definition_id = body.get("presenceDefinitionId")
    if definition_id is not None:
        definition = sim.org.definitions_by_id.get(definition_id)
        if definition is None:
            raise _Invalid("unknown presenceDefinitionId")
    else:
        try:
            definition = sim.org.primary[normalise_system_presence(str(body.get("systemPresence", "")))]
        except KeyError:
            raise _Invalid("systemPresence must be a known system presence") from None
    message = body.get("message", "")
    if not isinstance(message, str):
        raise _Invalid("message must be a string")
    change = sim.org.set_presence(user, definition, message)
    return json_response(change.to_json())


async def set_routing_status(request: web.Request) -> web.StreamResponse:
    """``PUT /sim/users/{id}/routing-status`` ``{"status"}``."""
    sim = _sim(request)
    user = sim.org.active(request.match_info["user_id"])
    if user is None:
        return error(404, "user not found")
    status = (await _body(request)).get("status")
    if status not in ROUTING_STATUSES:
        raise _Invalid(f"status must be one of {', '.join(ROUTING_STATUSES)}")
    return json_response(sim.org.set_routing_status(user, status).to_json())


async def add_users(request: web.Request) -> web.StreamResponse:
    """``POST /sim/users`` ``{"count"}``: new agents (OFFLINE / OFF_QUEUE) → ``{"ids": [...]}``."""
    sim = _sim(request)
    count = int(_number(await _body(request), "count", 1))
    ids = sim.org.add_users(count)
    for uid in ids:
        sim.generator.schedule(uid)
    return json_response({"ids": ids})


async def remove_user(request: web.Request) -> web.StreamResponse:
    """``DELETE /sim/users/{id}``: the agent becomes ``state=deleted``."""
    if not _sim(request).org.remove_user(request.match_info["user_id"]):
        return error(404, "user not found")
    return web.Response(status=204)


# -- faults ----------------------------------------------------------------------


async def drop(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/drop`` ``{"channelId"?}``: abrupt TCP close, no close frame."""
    channels = _channels(_sim(request), await _body(request))
    hit = [c for c in channels if c.session is not None]
    for channel in hit:
        if channel.session is not None:
            channel.session.abort()
    return _affected(hit)


async def stall(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/stall`` ``{"channelId"?, "seconds"}``: the socket sends nothing meanwhile."""
    body = await _body(request)
    seconds = _number(body, "seconds")
    hit = [c for c in _channels(_sim(request), body) if c.session is not None]
    for channel in hit:
        if channel.session is not None:
            channel.session.stall(seconds)
    return _affected(hit)


async def maintenance(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/maintenance`` ``{"channelId"?, "graceSeconds"?}``: socket_closing, then close."""
    sim = _sim(request)
    body = await _body(request)
    grace = _number(body, "graceSeconds", sim.config.socket_closing_grace_s)
    hit = [c for c in _channels(sim, body) if c.session is not None]
    for channel in hit:
        if channel.session is not None:
            channel.session.announce_maintenance(grace)
    return _affected(hit)


async def expire(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/expire`` ``{"channelId"?}``: the channel ends now, as at its expiry."""
    sim = _sim(request)
    channels = _channels(sim, await _body(request))
    for channel in channels:
        sim.registry.remove(channel, CLOSE_EXPIRED)
    return _affected(channels)


def _end_channels(body: dict[str, Any]) -> bool | None:
    value = body.get("endChannels")
    if value is not None and not isinstance(value, bool):
        raise _Invalid("endChannels must be a boolean")
    return value


async def revoke_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/revoke-tokens`` ``{"clientId"?, "endChannels"?}``: every live token stops working.

    ``endChannels`` (default: the ``revoke_ends_channels`` switch) also ends
    the channels created with those tokens, after a ``token_revoked`` message.
    """
    body = await _body(request)
    client_id = body.get("clientId")
    return json_response({"revoked": _sim(request).revoke_tokens(client_id, _end_channels(body))})


async def system_fault(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/system`` ``{"type", "reason"?, "channelId"?, "endChannels"?}``: a system message.

    ``type`` is a ``SystemMessageSystemMessage.systemTopicType``:
    ``no_longer_subscribed`` / ``subscription_changed`` (the channel's
    subscriptions are dropped, heartbeats go on) or ``token_revoked`` (the
    channel's token is revoked; ``endChannels`` ends the channel too).
    """
    sim = _sim(request)
    body = await _body(request)
    topic_type = body.get("type")
    if topic_type not in SYSTEM_TOPIC_TYPES:
        raise _Invalid(f"type must be one of {', '.join(SYSTEM_TOPIC_TYPES)}")
    reason = body.get("reason")
    if reason is not None and reason not in SYSTEM_MESSAGE_REASONS:
        raise _Invalid(f"reason must be one of {', '.join(SYSTEM_MESSAGE_REASONS)}")
    end = _end_channels(body)
    channels = _channels(sim, body)
    switch = sim.revoke_ends_channels
    if end is not None:
        sim.revoke_ends_channels = end
    try:
        for channel in channels:
            sim.system_message(channel, topic_type, reason)
    finally:
        sim.revoke_ends_channels = switch
    return _affected(channels)


async def expand_fault(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/expand`` ``{"part", "count"?}``: the next user entities lack an expanded part."""
    body = await _body(request)
    part = body.get("part")
    if part not in EXPAND_PARTS:
        raise _Invalid(f"part must be one of {', '.join(EXPAND_PARTS)}")
    count = int(_number(body, "count", 1))
    _sim(request).expand_faults.append(ExpandFault(part, count))
    return json_response({"part": part, "count": count})


async def restrict_user(request: web.Request) -> web.StreamResponse:
    """``POST /sim/users/{id}/restrict`` ``{"restricted"?, "missingPermissions"?}``: reject its topics.

    From then on every subscription to the agent's topics is Rejected with
    ``missingPermissions`` (default ``["directory:user:view"]``), as for an
    agent in a division the client cannot read; existing subscriptions stay.
    ``{"restricted": false}`` lifts it.
    """
    sim = _sim(request)
    user_id = request.match_info["user_id"]
    if sim.org.active(user_id) is None:
        return error(404, "user not found")
    body = await _body(request)
    restricted = body.get("restricted", True)
    if not isinstance(restricted, bool):
        raise _Invalid("restricted must be a boolean")
    missing = body.get("missingPermissions", list(DEFAULT_MISSING_PERMISSIONS))
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise _Invalid("missingPermissions must be a list of strings")
    if restricted:
        sim.restricted[user_id] = missing
    else:
        sim.restricted.pop(user_id, None)
    return json_response({"userId": user_id, "restricted": restricted, "missingPermissions": missing})


async def http_fault(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/http`` ``{"status", "count", "pathPrefix"?}``: the next requests fail."""
    body = await _body(request)
    status = body.get("status")
    if status not in HTTP_FAULT_STATUSES:
        raise _Invalid(f"status must be one of {sorted(HTTP_FAULT_STATUSES)}")
    prefix = body.get("pathPrefix")
    if prefix is not None and not isinstance(prefix, str):
        raise _Invalid("pathPrefix must be a string")
    count = int(_number(body, "count", 1))
    _sim(request).http_faults.append(HttpFault(int(status), count, prefix))
    return json_response({"status": status, "count": count, "pathPrefix": prefix})


async def analytics_fault(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/analytics`` ``{"forbidden"}``: the analytics query answers 403 while true.

    As for a client without ``analytics:userDetail:view``: only ``POST
    /api/v2/analytics/users/details/query`` is refused (``missing.permissions``),
    every other call works; ``{"forbidden": false}`` lifts it.
    """
    sim = _sim(request)
    forbidden = (await _body(request)).get("forbidden")
    if not isinstance(forbidden, bool):
        raise _Invalid("forbidden must be a boolean")
    sim.analytics_forbidden = forbidden
    return json_response({"forbidden": forbidden})


async def frame_fault(request: web.Request) -> web.StreamResponse:
    """``POST /sim/faults/frames`` ``{"kind", "count", "channelId"?}``: corrupt the next change frames."""
    body = await _body(request)
    kind = body.get("kind")
    if kind not in FRAME_FAULT_KINDS:
        raise _Invalid(f"kind must be one of {', '.join(FRAME_FAULT_KINDS)}")
    count = int(_number(body, "count", 1))
    channel_id = body.get("channelId")
    _sim(request).registry.frame_faults.append(FrameFault(kind, count, channel_id))
    return json_response({"kind": kind, "count": count, "channelId": channel_id})


def add_admin_routes(app: web.Application) -> None:
    """Register ``/sim/...``."""
    r = app.router
    r.add_get("/sim/truth", truth)
    r.add_get("/sim/events", events)
    r.add_get("/sim/stats", stats)
    r.add_get("/sim/generator", generator)
    r.add_post("/sim/generator", generator)
    r.add_put("/sim/users/{user_id}/presence", set_presence)
    r.add_put("/sim/users/{user_id}/routing-status", set_routing_status)
    r.add_post("/sim/users", add_users)
    r.add_delete("/sim/users/{user_id}", remove_user)
    r.add_post("/sim/faults/drop", drop)
    r.add_post("/sim/faults/stall", stall)
    r.add_post("/sim/faults/maintenance", maintenance)
    r.add_post("/sim/faults/expire", expire)
    r.add_post("/sim/faults/revoke-tokens", revoke_tokens)
    r.add_post("/sim/faults/http", http_fault)
    r.add_post("/sim/faults/frames", frame_fault)
    r.add_post("/sim/faults/system", system_fault)
    r.add_post("/sim/faults/expand", expand_fault)
    r.add_post("/sim/faults/analytics", analytics_fault)
    r.add_post("/sim/users/{user_id}/restrict", restrict_user)
