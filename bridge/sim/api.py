"""The Genesys-shaped REST surface: ``/oauth/token`` and ``/api/v2/...``.

Every ``/api/v2`` call needs a valid bearer token (401 ``bad.credentials``)
and is counted against the token's rate limit (429
``too.many.requests.retry.after`` with ``Retry-After``); normal replies carry
``inin-ratelimit-allowed/count/reset`` (of the endpoint's own allowance
where it has one, see :mod:`bridge.sim.ratelimit`). Error bodies are
Genesys-shaped: ``{"message", "code", "status", "contextId", "details", "errors"}``.

Shapes checked against the official SDK (PureCloudPlatformClientV2 269.0.0):

* subscription replies are a ``ChannelTopicEntityListing``: ``{"entities":
  [ChannelTopic]}``, each ``{id, state, rejectionReason?, missingPermissions?}``;
* ``GET /api/v2/notifications/channels`` is a ``ChannelEntityListing``
  (``{"entities": [Channel {id, connectUri, expires}]}``) and takes
  ``includechannels``: ``token`` (the default) lists the calling token's
  channels, ``oauthclient`` every channel of the token's OAuth client, where
  "Channel Ids for other access tokens will not be shown, but will be
  presented to show their existence" (``NotificationsApi``): those entries
  carry only ``expires``;
* ``GET /api/v2/users?expand=`` is best effort ("expand parameters are
  resolved with a best effort approach and not guaranteed to be returned",
  ``UsersApi.get_users``): the ``expand`` fault leaves a part out;
* ``GET /api/v2/users/{id}/routingstatus`` is a ``RoutingStatus``
  ``{userId, status, startTime}``;
* presence definitions are ``OrganizationPresenceDefinition``s whose
  ``systemPresence`` is the SDK enum (``OnQueue``, ``Available``…).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.auth import parse_basic
from bridge.sim.channels import PERMITTED, Channel, SubscriptionError
from bridge.sim.org import User, UserState, iso_ms
from bridge.sim.simulator import SIMULATOR_KEY, Simulator

__all__ = [
    "API_PREFIX",
    "BULK_PRESENCE_MAX_IDS",
    "DEFAULT_PAGE_SIZE",
    "INCLUDE_OAUTH_CLIENT",
    "INCLUDE_TOKEN",
    "MAX_PAGE_SIZE",
    "USERS_ID_FILTER_MAX",
    "add_routes",
    "error",
    "genesys_middleware",
    "json_response",
]

API_PREFIX = "/api/v2/"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 500
USERS_ID_FILTER_MAX = 100
BULK_PRESENCE_MAX_IDS = 50
FAULT_RETRY_AFTER_S = 1
_ERROR_CODES = {
    400: "bad.request",
    401: "bad.credentials",
    403: "forbidden",
    404: "not.found",
    405: "method.not.allowed",
    429: "too.many.requests.retry.after",
    500: "internal.server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "gateway.timeout",
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_ID_KEY = web.RequestKey("client_id", str)
TOKEN_KEY = web.RequestKey("token", str)
#: ``includechannels`` values of the channel listing (``token`` is the default).
INCLUDE_TOKEN = "token"  # noqa: S105 - a parameter value, not a secret
INCLUDE_OAUTH_CLIENT = "oauthclient"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply serialised with orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """A Genesys-shaped error reply."""
    body = {
        "message": message,
        "code": code or _ERROR_CODES.get(status, "error"),
        "status": status,
        "contextId": str(uuid.uuid4()),
        "details": [],
        "errors": [],
    }
    return json_response(body, status, headers)


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR_KEY]


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


@web.middleware
async def genesys_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Faults, auth and rate limit in front of every non-admin route; counts requests."""
    if request.path.startswith("/sim/"):
        return await handler(request)
    sim = _sim(request)
    response = await _guarded(request, handler, sim)
    if response.status != 101:  # a WebSocket upgrade counts itself when it is accepted
        sim.count_request(_route(request), response.status, request.get(CLIENT_ID_KEY))
    return response


async def _guarded(request: web.Request, handler: _Handler, sim: Simulator) -> web.StreamResponse:
    status = sim.take_http_fault(request.path)
    if status is not None:
        headers = {"Retry-After": str(FAULT_RETRY_AFTER_S)} if status == 429 else None
        return error(status, f"Injected fault: HTTP {status}", headers=headers)
    if not request.path.startswith(API_PREFIX):
        return await _call(request, handler)
    auth = request.headers.get("Authorization", "")
    token = sim.tokens.validate(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
    if token is None:
        return error(401, "Authentication failed: missing, invalid, expired or revoked bearer token")
    request[CLIENT_ID_KEY] = token.client_id  # known before the limiter: a 429 counts for its client
    decision = sim.limiter.check(token.value, _route(request))
    if not decision.allowed:
        return error(
            429,
            f"Rate limit exceeded the maximum. Retry the request in [{decision.reset_s}] seconds",
            headers={"Retry-After": str(decision.reset_s), **decision.headers()},
        )
    request[TOKEN_KEY] = token.value
    response = await _call(request, handler)
    response.headers.update(decision.headers())
    return response


async def _call(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith(API_PREFIX) or request.path.startswith("/oauth/"):
            return error(exc.status, exc.reason)
        raise


# -- OAuth ------------------------------------------------------------------------


async def oauth_token(request: web.Request) -> web.StreamResponse:
    """``POST /oauth/token`` (client credentials, HTTP Basic)."""
    sim = _sim(request)
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        return json_response(
            {"error": "unsupported_grant_type", "description": "grant_type must be client_credentials"}, 400
        )
    creds = parse_basic(request.headers.get("Authorization"))
    token = sim.tokens.issue(*creds) if creds else None
    if token is None:
        return json_response(
            {"error": "invalid_client", "description": "client not found or bad secret"}, 401
        )
    return json_response(
        {"access_token": token.value, "token_type": "bearer", "expires_in": sim.tokens.ttl_s}
    )


# -- helpers ----------------------------------------------------------------------


class _BadRequest(Exception):
    pass


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _BadRequest(f"{name} must be {bound}")
    return value


def _list_param(request: web.Request, name: str) -> list[str]:
    """Array query parameter, repeated (``id=a&id=b``) or comma-joined (``id=a,b``)."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(p.strip() for p in raw.split(",") if p.strip())
    return list(dict.fromkeys(out))


def _paged(request: web.Request, items: Sequence[Any], to_json: Callable[[Any], Any]) -> dict[str, Any]:
    size = _int_param(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    number = _int_param(request, "pageNumber", 1, 1)
    total = len(items)
    page_count = math.ceil(total / size) if total else 0
    chunk = items[(number - 1) * size : number * size]
    url = request.rel_url

    def uri(n: int) -> str:
        return str(url.update_query(pageSize=size, pageNumber=n))

    body: dict[str, Any] = {
        "entities": [to_json(x) for x in chunk],
        "pageSize": size,
        "pageNumber": number,
        "total": total,
        "pageCount": page_count,
        "selfUri": uri(number),
        "firstUri": uri(1),
        "lastUri": uri(max(page_count, 1)),
    }
    if number < page_count:
        body["nextUri"] = uri(number + 1)
    if number > 1:
        body["previousUri"] = uri(number - 1)
    return body


def _user_entity(user: User, expand: Iterable[str], drop: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "username": user.email,
        "state": user.state,
        "selfUri": f"/api/v2/users/{user.id}",
    }
    if "presence" in expand and drop != "presence":
        presence = user.presence_json()
        del presence["userId"]
        out["presence"] = presence
    if "routingStatus" in expand and drop != "routingStatus":
        out["routingStatus"] = user.routing_json()
    return out


def _active_user(request: web.Request) -> User:
    user = _sim(request).org.active(request.match_info["user_id"])
    if user is None:
        raise web.HTTPNotFound(reason=f"User {request.match_info['user_id']} not found")
    return user


def _bad_request(func: _Handler) -> _Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await func(request)
        except _BadRequest as exc:
            return error(400, str(exc))

    wrapper.__doc__ = func.__doc__
    return wrapper


# -- users and presence -------------------------------------------------------------


@_bad_request
async def list_users(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/users``: paged, ``state`` and ``id`` filters, ``expand=presence,routingStatus``."""
    org = _sim(request).org
    state = request.query.get("state", UserState.ACTIVE)
    if state not in UserState.ALL:
        raise _BadRequest(f"state must be one of {', '.join(UserState.ALL)}")
    ids = _list_param(request, "id")
    if len(ids) > USERS_ID_FILTER_MAX:
        raise _BadRequest(f"at most {USERS_ID_FILTER_MAX} ids per request")
    expand = set(_list_param(request, "expand"))
    if ids:
        candidates = [u for u in (org.users.get(i) for i in ids) if u is not None]
    else:
        candidates = list(org.users.values())
    users = [u for u in candidates if state in (UserState.ANY, u.state)]
    sim = _sim(request)

    def entity(user: User) -> dict[str, Any]:
        return _user_entity(user, expand, sim.take_expand_drop() if expand else None)

    return json_response(_paged(request, users, entity))


async def get_user(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/users/{id}``."""
    return json_response(_user_entity(_active_user(request), set(_list_param(request, "expand"))))


@_bad_request
async def bulk_presence(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/users/presences/purecloud/bulk?id=…``: at most 50 ids; unknown ids are left out."""
    ids = _list_param(request, "id")
    if not ids:
        raise _BadRequest("at least one id is required")
    if len(ids) > BULK_PRESENCE_MAX_IDS:
        raise _BadRequest(f"at most {BULK_PRESENCE_MAX_IDS} ids per request, got {len(ids)}")
    org = _sim(request).org
    return json_response([u.presence_json() for u in (org.active(i) for i in ids) if u is not None])


async def user_presence(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/users/{id}/presences/purecloud``."""
    return json_response(_active_user(request).presence_json())


async def user_routing_status(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/users/{id}/routingstatus``."""
    return json_response(_active_user(request).routing_json())


@_bad_request
async def presence_definitions(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/presence/definitions``: system presences plus org-defined ones."""
    return json_response(_paged(request, _sim(request).org.definitions, lambda d: d.to_json()))


# -- channels ------------------------------------------------------------------------


def _channel_json(request: web.Request, channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "connectUri": f"ws://{request.host}/channels/{channel.id}",
        "expires": iso_ms(channel.expires_ms),
    }


def _owned(request: web.Request) -> Channel:
    channel = _sim(request).registry.owned(request[CLIENT_ID_KEY], request.match_info["channel_id"])
    if channel is None:
        raise web.HTTPNotFound(reason=f"Channel {request.match_info['channel_id']} not found")
    return channel


async def create_channel(request: web.Request) -> web.StreamResponse:
    """``POST /api/v2/notifications/channels`` (evicts the client's least recently used beyond the limit)."""
    channel, _evicted = _sim(request).registry.create(request[CLIENT_ID_KEY], request[TOKEN_KEY])
    return json_response(_channel_json(request, channel))


async def list_channels(request: web.Request) -> web.StreamResponse:
    """``GET /api/v2/notifications/channels?includechannels=token|oauthclient`` (token by default).

    With ``oauthclient`` the channels of the client's other tokens are listed
    without their id and connectUri.
    """
    include = request.query.get("includechannels", INCLUDE_TOKEN)
    if include not in (INCLUDE_TOKEN, INCLUDE_OAUTH_CLIENT):
        return error(400, f"includechannels must be {INCLUDE_TOKEN} or {INCLUDE_OAUTH_CLIENT}")
    token = request[TOKEN_KEY]
    entities: list[dict[str, Any]] = []
    for channel in _sim(request).registry.of_client(request[CLIENT_ID_KEY]):
        if channel.token == token:
            entities.append(_channel_json(request, channel))
        elif include == INCLUDE_OAUTH_CLIENT:
            entities.append({"expires": iso_ms(channel.expires_ms)})
    return json_response({"entities": entities})


async def head_channel(request: web.Request) -> web.StreamResponse:
    """``HEAD /api/v2/notifications/channels/{id}``: 200 if it exists, else 404."""
    _owned(request)
    return web.Response(status=200)


def _topics_body(channel: Channel) -> dict[str, Any]:
    return {"entities": [{"id": name, "state": PERMITTED} for name in channel.topics]}


async def get_subscriptions(request: web.Request) -> web.StreamResponse:
    """``GET .../channels/{id}/subscriptions``."""
    return json_response(_topics_body(_owned(request)))


async def _change_subscriptions(request: web.Request, *, replace: bool) -> web.StreamResponse:
    channel = _owned(request)
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        return error(400, "request body must be a JSON list of {id: topic}")
    if not isinstance(body, list):
        return error(400, "request body must be a JSON list of {id: topic}")
    names = [t.get("id") if isinstance(t, dict) else None for t in body]
    ignore = request.query.get("ignoreErrors", "false").lower() == "true"
    try:
        results = _sim(request).registry.subscribe(channel, names, replace=replace, ignore_errors=ignore)
    except SubscriptionError as exc:
        return error(exc.status, exc.message, exc.code)
    return json_response({"entities": results})


async def add_subscriptions(request: web.Request) -> web.StreamResponse:
    """``POST .../subscriptions``: add topics (extends the channel)."""
    return await _change_subscriptions(request, replace=False)


async def replace_subscriptions(request: web.Request) -> web.StreamResponse:
    """``PUT .../subscriptions``: replace the whole list (extends the channel)."""
    return await _change_subscriptions(request, replace=True)


async def delete_subscriptions(request: web.Request) -> web.StreamResponse:
    """``DELETE .../subscriptions``: remove every topic."""
    _sim(request).registry.clear(_owned(request))
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    """Register the OAuth and /api/v2 routes."""
    channel = "/api/v2/notifications/channels/{channel_id}"
    app.router.add_post("/oauth/token", oauth_token)
    app.router.add_get("/api/v2/users", list_users)
    app.router.add_get("/api/v2/users/presences/purecloud/bulk", bulk_presence)
    app.router.add_get("/api/v2/users/{user_id}", get_user)
    app.router.add_get("/api/v2/users/{user_id}/presences/purecloud", user_presence)
    app.router.add_get("/api/v2/users/{user_id}/routingstatus", user_routing_status)
    app.router.add_get("/api/v2/presence/definitions", presence_definitions)
    app.router.add_post("/api/v2/notifications/channels", create_channel)
    app.router.add_get("/api/v2/notifications/channels", list_channels)
    app.router.add_route("HEAD", channel, head_channel)
    app.router.add_get(f"{channel}/subscriptions", get_subscriptions)
    app.router.add_post(f"{channel}/subscriptions", add_subscriptions)
    app.router.add_put(f"{channel}/subscriptions", replace_subscriptions)
    app.router.add_delete(f"{channel}/subscriptions", delete_subscriptions)
