"""The Genesys Cloud REST client the bridge needs: channels, subscriptions, users, presence, history.

Genesys behaviour followed:

* About 300 requests per minute per token, and Genesys asks for one token per
  client: one :class:`GenesysRest` per OAuth client per process, and every
  caller of it shares one :class:`~bridge.genesys.budget.RequestBudget` of
  ``budget_per_min``; below that ceiling each endpoint follows the allowance
  Genesys's replies state (:mod:`bridge.genesys.budget`).
* A 429 carries ``Retry-After`` (seconds): the client waits that long (and
  holds back every other caller of the budget for as long), counts
  ``bridge_genesys_rate_limited_total`` and retries.
* 502/503/504 (and any other 5xx, and 408) and transport errors are retried
  with full-jitter backoff, up to ``max_retries``, then
  :class:`~bridge.errors.TransientError`. A retried POST can leave an
  orphaned channel behind; Genesys evicts unconnected channels first.
* 401 is retried once with a fresh token by the auth flow
  (:mod:`bridge.genesys.auth`); a second 401 is :class:`~bridge.errors.AuthError`.
  404 is :class:`~bridge.errors.NotFoundError`; any other 4xx is
  :class:`~bridge.errors.RequestError` with Genesys's error ``message`` and
  ``code`` (never headers).
* Array query parameters are sent comma-joined, as the official SDKs do; the
  bulk presence API takes at most 50 ids a call, ``/api/v2/users?id=`` 100.
* Paged lists (``entities``, ``pageNumber``, ``pageCount``) are followed to
  the last page.
* Subscription replies (POST/PUT ``…/subscriptions``) are the SDK's
  ``ChannelTopicEntityListing``: every topic *of the channel* (not only the
  request's) as a ``ChannelTopic {id, state: Permitted|Rejected,
  rejectionReason, missingPermissions}``. With ``ignoreErrors=true`` a topic
  Genesys refuses (division permissions, a deleted user) is listed Rejected
  and is not subscribed: :class:`SubscriptionResult` keeps the two apart. An
  entry without ``state`` counts as Permitted.
* ``GET /api/v2/notifications/channels`` takes ``includechannels=token``
  (the default: only the calling token's channels) or ``oauthclient`` (every
  channel of the OAuth client, but, per the SDK's ``NotificationsApi``,
  "Channel Ids for other access tokens will not be shown"). So a channel
  made with an earlier token cannot be found by id in any listing;
  :meth:`GenesysRest.list_channels` returns the entries that have an id.
* ``expand=presence,routingStatus`` on ``GET /api/v2/users`` is best effort
  ("not guaranteed to be returned", ``UsersApi.get_users``):
  :meth:`GenesysRest.current_changes` asks the single-user endpoints
  (``/users/{id}/presences/purecloud``, ``/users/{id}/routingstatus``) for
  every part an entity came back without.

``bridge_genesys_http_requests_total`` is labelled with the *templated*
endpoint (``/api/v2/notifications/channels/{id}/subscriptions``), never a raw
id. Responses are pydantic models that ignore unknown fields; a body that does
not match is a :class:`~bridge.errors.GenesysError` with the HTTP status.
Turning presence and routing payloads into :class:`~bridge.model.Change`
is done by :mod:`bridge.genesys.protocol`, the same code the stream uses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from bridge.errors import (
    GenesysError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from bridge.genesys.auth import ClientCredentialsAuth
from bridge.genesys.budget import EndpointAllowances, RequestBudget, Sleep
from bridge.genesys.config import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_REST_BUDGET_PER_MIN,
    DEFAULT_REST_MAX_RETRIES,
    DEFAULT_REST_TIMEOUT_S,
    ClientConfig,
)
from bridge.genesys.history import USER_DETAILS_QUERY, UserHistory, fetch_history
from bridge.genesys.http import NO_STATUS, REST_ERRORS, RETRY_AFTER, error_text
from bridge.genesys.models import (
    LISTED_CHANNELS,
    PRESENCE_LIST,
    REJECTED,
    TOPIC_LIST,
    ChannelInfo,
    ChannelTopic,
    ListedChannel,
    Page,
    PresenceDefinition,
    RawDefinition,
    RejectedTopic,
    RoutingStatus,
    SubscriptionResult,
    User,
    UserPresence,
    UserWithStatus,
)
from bridge.genesys.protocol import normalise_status
from bridge.genesys.retry import backoff_delays
from bridge.metrics import GENESYS_HTTP_REQUESTS, GENESYS_RATE_LIMITED
from bridge.model import Change, Origin

__all__ = [
    "BULK_PRESENCE",
    "BULK_PRESENCE_MAX_IDS",
    "CHANNEL",
    "CHANNELS",
    "PRESENCE_DEFINITIONS",
    "ROUTING_STATUS",
    "SUBSCRIPTIONS",
    "USERS",
    "USERS_MAX_IDS",
    "USER_DETAILS_QUERY",
    "USER_PRESENCE",
    "GenesysRest",
    "RestSession",
]

logger = logging.getLogger(__name__)

# Endpoint templates: the request paths and the metric's ``endpoint`` label.
CHANNELS: Final = "/api/v2/notifications/channels"
CHANNEL: Final = "/api/v2/notifications/channels/{id}"
SUBSCRIPTIONS: Final = "/api/v2/notifications/channels/{id}/subscriptions"
USERS: Final = "/api/v2/users"
BULK_PRESENCE: Final = "/api/v2/users/presences/purecloud/bulk"
ROUTING_STATUS: Final = "/api/v2/users/{id}/routingstatus"
USER_PRESENCE: Final = "/api/v2/users/{id}/presences/purecloud"
PRESENCE_DEFINITIONS: Final = "/api/v2/presence/definitions"

#: The bulk presence API takes at most 50 ids a call.
BULK_PRESENCE_MAX_IDS: Final = 50
#: ``GET /api/v2/users?id=…`` takes at most 100 ids (and pages of at most 100).
USERS_MAX_IDS: Final = 100
#: Page size of the roster listing (Genesys allows up to 500).
DEFAULT_ROSTER_PAGE_SIZE: Final = 500
#: Page size of the presence definitions listing.
DEFINITIONS_PAGE_SIZE: Final = 100
#: Guard against a server that never reports its last page.
MAX_PAGES: Final = 10_000
#: Cap of the per-request retry backoff (the shard's reconnect backoff is separate and longer).
DEFAULT_RETRY_MAX_S: Final = 10.0
#: The ``includechannels`` values of the channel listing.
INCLUDE_TOKEN: Final = "token"  # noqa: S105 - a parameter value, not a secret
INCLUDE_OAUTH_CLIENT: Final = "oauthclient"

T = TypeVar("T", bound=BaseModel)


# --------------------------------------------------------------------------- client


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RestSession:
    """One OAuth client's requests over ``httpx.AsyncClient``: budget, allowances, retries, parsing.

    The request loop of :class:`GenesysRest` (which adds the endpoints): every
    request waits for its endpoint's allowance and the shared budget, is
    retried as the module docstring says, and its reply is parsed into a
    model or mapped to the exception tree. Every I/O seam is injected:
    ``transport`` (e.g. ``httpx.MockTransport``), ``auth`` (normally
    :class:`ClientCredentialsAuth`), the monotonic ``clock``, ``sleep`` and
    the jitter ``rng``.
    """

    def __init__(
        self,
        api_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget_per_min: int = DEFAULT_REST_BUDGET_PER_MIN,
        timeout_s: float = DEFAULT_REST_TIMEOUT_S,
        max_retries: int = DEFAULT_REST_MAX_RETRIES,
        retry_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        retry_max_s: float = DEFAULT_RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self._client = httpx.AsyncClient(
            base_url=self.api_url,
            auth=auth,
            transport=transport,
            timeout=timeout_s,
            headers={"Accept": "application/json"},
        )
        self.budget = RequestBudget(budget_per_min, clock=clock, sleep=sleep)
        self.allowances = EndpointAllowances(clock=clock, sleep=sleep)
        self._max_retries = max_retries
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r}, auth={self.auth!r})"

    async def aclose(self) -> None:
        """Close the HTTP client (and the auth's token client)."""
        await self._client.aclose()
        if isinstance(self.auth, ClientCredentialsAuth):
            await self.auth.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def invalidate_token(self) -> None:
        """Drop the cached OAuth token (after an AuthError); the next request fetches a new one."""
        if isinstance(self.auth, ClientCredentialsAuth):
            await self.auth.invalidate()

    # ------------------------------------------------------------------ request loop

    async def _call(
        self,
        method: str,
        template: str,
        *,
        ids: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        json: object = None,
        allow_404: bool = False,
    ) -> httpx.Response:
        path = template.format(**{k: quote(v, safe="") for k, v in (ids or {}).items()}) if ids else template
        content = None if json is None else orjson.dumps(json)
        headers = None if content is None else {"Content-Type": "application/json"}
        delays = backoff_delays(self._retry_initial_s, self._retry_max_s, self._rng)
        attempt = 0
        endpoint = f"{method} {template}"
        while True:
            await self.allowances.acquire(endpoint)
            response: httpx.Response | None = None
            failure: GenesysError
            try:
                await self.budget.acquire()
                response = await self._client.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                GENESYS_HTTP_REQUESTS.labels(endpoint=template, status=NO_STATUS).inc()
                failure = TransientError(f"{method} {template}: {type(exc).__name__}", endpoint=template)
            except (TransientError, RateLimitedError) as exc:  # from the token request in the auth flow
                failure = exc
            except httpx.HTTPError as exc:
                GENESYS_HTTP_REQUESTS.labels(endpoint=template, status=NO_STATUS).inc()
                raise RequestError(f"{method} {template}: {type(exc).__name__}", endpoint=template) from None
            finally:
                self.allowances.release(endpoint, None if response is None else response.headers)
            if response is not None:
                status = response.status_code
                GENESYS_HTTP_REQUESTS.labels(endpoint=template, status=str(status)).inc()
                if status < httpx.codes.MULTIPLE_CHOICES or (allow_404 and status == httpx.codes.NOT_FOUND):
                    return response
                text = f"{method} {template}: HTTP {status}{error_text(response.content)}"
                failure = REST_ERRORS.error(
                    status, text, endpoint=template, retry_after=response.headers.get(RETRY_AFTER)
                )
                if isinstance(failure, RateLimitedError):
                    GENESYS_RATE_LIMITED.inc()
                elif not isinstance(failure, TransientError):
                    raise failure
            if attempt >= self._max_retries:
                raise failure
            attempt += 1
            if isinstance(failure, RateLimitedError):
                delay = failure.retry_after
                self.budget.pause_until(self._clock() + delay)
            else:
                delay = next(delays)
            logger.debug("%s; retry %d/%d in %.2f s", failure, attempt, self._max_retries, delay)
            await self._sleep(delay)

    @staticmethod
    def _json(response: httpx.Response, template: str) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise GenesysError(
                f"{template}: response is not JSON", status=response.status_code, endpoint=template
            ) from None

    @staticmethod
    def _parse(adapter: TypeAdapter[Any] | type[BaseModel], data: Any, status: int, template: str) -> Any:
        try:
            if isinstance(adapter, TypeAdapter):
                return adapter.validate_python(data)
            return adapter.model_validate(data)
        except ValidationError as exc:
            raise GenesysError(
                f"{template}: unexpected response ({exc.error_count()} validation errors)",
                status=status,
                endpoint=template,
            ) from None

    async def _get_model(self, model: type[T], template: str, **kwargs: Any) -> T:
        response = await self._call("GET", template, **kwargs)
        result: T = self._parse(model, self._json(response, template), response.status_code, template)
        return result

    async def _pages(
        self,
        model: type[T],
        template: str,
        params: Mapping[str, str | int],
        page_size: int,
        *,
        check_total: bool = False,
    ) -> list[T]:
        """Every page's entities; ``check_total``: raise when the distinct ids differ from ``total``."""
        adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
        out: list[T] = []
        ids: set[object] = set()
        total: int | None = None
        for page_number in range(1, MAX_PAGES + 1):
            response = await self._call(
                "GET", template, params={**params, "pageSize": page_size, "pageNumber": page_number}
            )
            page: Page = self._parse(Page, self._json(response, template), response.status_code, template)
            out.extend(self._parse(adapter, page.entities, response.status_code, template))
            ids.update(e.get("id") for e in page.entities)
            total = page.total if page.total is not None else total
            if not page.entities:
                break
            if page.page_count is not None:
                if page_number >= page.page_count:
                    break
            elif len(page.entities) < page_size:
                break
        if check_total and total is not None and len(ids) != total:
            # Paging shifted under concurrent changes, or pages went missing:
            # a short listing must not be taken for the whole (e.g. a roster).
            raise GenesysError(
                f"listing has {len(ids)} distinct entities but its total is {total}", endpoint=template
            )
        return out


class GenesysRest(RestSession):
    """The Genesys Cloud REST API the bridge uses: channels, subscriptions, users, presence."""

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: SecretStr | str,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> GenesysRest:
        """A client for one OAuth client, with its own :class:`ClientCredentialsAuth`, as ``config`` says."""
        auth = ClientCredentialsAuth(
            client_id,
            client_secret,
            login_url=config.login_url,
            transport=transport,
            clock=clock,
            timeout_s=config.timeout_s,
        )
        return cls(
            config.api_url,
            auth=auth,
            transport=transport,
            budget_per_min=config.budget_per_min,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            retry_initial_s=config.retry_initial_s,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    # ------------------------------------------------------------------ channels

    async def create_channel(self) -> ChannelInfo:
        """``POST /api/v2/notifications/channels`` (a 21st channel evicts the least recently used)."""
        response = await self._call("POST", CHANNELS)
        result: ChannelInfo = self._parse(
            ChannelInfo, self._json(response, CHANNELS), response.status_code, CHANNELS
        )
        return result

    async def channel_exists(self, channel_id: str) -> bool:
        """``HEAD`` on the channel: True on 200, False on 404."""
        response = await self._call("HEAD", CHANNEL, ids={"id": channel_id}, allow_404=True)
        return response.status_code != httpx.codes.NOT_FOUND

    async def list_channels(self, include: str = INCLUDE_TOKEN) -> list[ChannelInfo]:
        """``GET /api/v2/notifications/channels?includechannels=…``: the listed channels that have an id.

        ``include`` is ``token`` (the calling token's channels, Genesys's
        default) or ``oauthclient`` (the OAuth client's channels; those of
        other tokens come without an id and are left out here).
        """
        page = await self._get_model(Page, CHANNELS, params={"includechannels": include})
        listed: list[ListedChannel] = self._parse(LISTED_CHANNELS, page.entities, httpx.codes.OK, CHANNELS)
        return [
            ChannelInfo(id=c.id, connect_uri=c.connect_uri or "", expires=c.expires)
            for c in listed
            if c.id is not None and c.expires is not None
        ]

    # ------------------------------------------------------------------ subscriptions

    async def _subscriptions(
        self, method: str, channel_id: str, topics: Sequence[str] | None, ignore_errors: bool
    ) -> SubscriptionResult:
        params = {"ignoreErrors": "true"} if ignore_errors else None
        body = None if topics is None else [{"id": t} for t in topics]
        response = await self._call(method, SUBSCRIPTIONS, ids={"id": channel_id}, params=params, json=body)
        if not response.content:
            return SubscriptionResult()
        status = response.status_code
        page: Page = self._parse(Page, self._json(response, SUBSCRIPTIONS), status, SUBSCRIPTIONS)
        refs: list[ChannelTopic] = self._parse(TOPIC_LIST, page.entities, status, SUBSCRIPTIONS)
        return SubscriptionResult(
            permitted=tuple(r.id for r in refs if r.state != REJECTED),
            rejected=tuple(
                RejectedTopic(
                    id=r.id, reason=r.rejection_reason, missing_permissions=tuple(r.missing_permissions or ())
                )
                for r in refs
                if r.state == REJECTED
            ),
        )

    async def put_subscriptions(
        self, channel_id: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        """Replace the channel's whole topic list (also extends the channel).

        Without ``ignore_errors`` one forbidden topic fails the request (403);
        with it the reply lists the refused topics as rejected, and only the
        permitted ones are subscribed.
        """
        return await self._subscriptions("PUT", channel_id, topics, ignore_errors)

    async def post_subscriptions(
        self, channel_id: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        """Add topics to the channel; ``permitted`` is then every topic of the channel, not only these."""
        return await self._subscriptions("POST", channel_id, topics, ignore_errors)

    async def get_subscriptions(self, channel_id: str) -> list[str]:
        """The channel's subscribed topics."""
        return list((await self._subscriptions("GET", channel_id, None, False)).permitted)

    async def delete_subscriptions(self, channel_id: str) -> None:
        """Remove every subscription of the channel."""
        await self._call("DELETE", SUBSCRIPTIONS, ids={"id": channel_id})

    # ------------------------------------------------------------------ users and presence

    async def active_users(self, page_size: int = DEFAULT_ROSTER_PAGE_SIZE) -> list[User]:
        """The roster: ``GET /api/v2/users?state=active``, every page.

        Raises :class:`GenesysError` when the pages' distinct users disagree
        with the listing's ``total`` (the coordinator then keeps its map).
        """
        return await self._pages(User, USERS, {"state": "active"}, page_size, check_total=True)

    async def bulk_presences(self, user_ids: Sequence[str]) -> list[UserPresence]:
        """Current presences, in calls of at most 50 comma-joined ids."""
        out: list[UserPresence] = []
        for chunk in _chunks(user_ids, BULK_PRESENCE_MAX_IDS):
            response = await self._call("GET", BULK_PRESENCE, params={"id": ",".join(chunk)})
            data = self._json(response, BULK_PRESENCE)
            out.extend(self._parse(PRESENCE_LIST, data, response.status_code, BULK_PRESENCE))
        return out

    async def users_with_status(self, user_ids: Sequence[str]) -> list[UserWithStatus]:
        """Users with ``expand=presence,routingStatus``, in calls of at most 100 ids."""
        out: list[UserWithStatus] = []
        for chunk in _chunks(user_ids, USERS_MAX_IDS):
            params = {"id": ",".join(chunk), "expand": "presence,routingStatus"}
            out.extend(await self._pages(UserWithStatus, USERS, params, USERS_MAX_IDS))
        return out

    async def still_active(self, user_ids: Collection[str]) -> set[str]:
        """Which of these users are active now: ``GET /api/v2/users?id=…&state=active``, 100 ids a call.

        A paged roster listing is not a snapshot: an agent deleted from a page
        already read shifts the later pages, and one live agent falls between
        two of them. Asking for the missing ones by id tells skipped from gone.
        """
        out: set[str] = set()
        for chunk in _chunks(sorted(user_ids), USERS_MAX_IDS):
            params = {"id": ",".join(chunk), "state": "active"}
            out.update(u.id for u in await self._pages(User, USERS, params, USERS_MAX_IDS))
        return out

    async def routing_status(self, user_id: str) -> RoutingStatus:
        """``GET /api/v2/users/{id}/routingstatus`` (a user without one is ``OFF_QUEUE``, not a 404)."""
        status = await self._get_model(RoutingStatus, ROUTING_STATUS, ids={"id": user_id})
        return status if status.user_id else status.model_copy(update={"user_id": user_id})

    async def user_presence(self, user_id: str) -> UserPresence:
        """``GET /api/v2/users/{id}/presences/purecloud``: one user's Genesys Cloud presence."""
        presence = await self._get_model(UserPresence, USER_PRESENCE, ids={"id": user_id})
        return presence if presence.user_id else presence.model_copy(update={"user_id": user_id})

    async def presence_definitions(self) -> list[PresenceDefinition]:
        """The org's presence definitions, ``system_presence`` normalised, label from en_US."""
        raw = await self._pages(RawDefinition, PRESENCE_DEFINITIONS, {}, DEFINITIONS_PAGE_SIZE)
        return [
            PresenceDefinition(
                id=d.id,
                system_presence=normalise_status(d.system_presence),
                label=d.language_labels.get("en_US") or d.system_presence,
            )
            for d in raw
        ]

    async def current_changes(
        self, user_ids: Sequence[str], *, observed_at: datetime, origin: Origin = Origin.RECONCILE
    ) -> list[Change]:
        """Current presence and routing status of ``user_ids`` as :class:`Change`s, for reconciliation.

        Uses ``expand=presence,routingStatus`` (100 users a call). Genesys
        does not guarantee the expansion: a user returned without its presence
        is read again with the bulk presence API (50 a call), one without its
        routing status with ``GET /api/v2/users/{id}/routingstatus``; a user
        the listing does not return at all is left out (the roster decides
        about it). A user whose payload is malformed is logged and skipped,
        so one bad entry does not stop the others from being reconciled.
        """
        out: list[Change] = []
        no_presence: list[str] = []
        no_routing: list[str] = []
        for user in await self.users_with_status(user_ids):
            if user.presence is None:
                no_presence.append(user.id)
            if user.routing_status is None:
                no_routing.append(user.id)
            try:
                out.extend(user.to_changes(observed_at=observed_at, origin=origin))
            except ProtocolError as exc:
                logger.warning("skipping malformed current state of user %s: %s", user.id, exc)
        if no_presence:
            for presence in await self.bulk_presences(no_presence):
                self._add_change(out, presence, presence.user_id, observed_at, origin)
        for user_id in no_routing:
            try:
                status = await self.routing_status(user_id)
            except NotFoundError:
                continue  # the user went away meanwhile
            self._add_change(out, status, user_id, observed_at, origin)
        return out

    # ------------------------------------------------------------------ analytics history

    async def user_history(
        self, user_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UserHistory]:
        """Presence and routing records of ``user_ids`` over ``[start, end]`` (:mod:`bridge.genesys.history`).

        ``POST /api/v2/analytics/users/details/query``, 100 users a query, every
        page one request through the budget, allowances and retries: a 403 (no
        ``analytics:userDetail:view``) is a ``RequestError`` with ``status``
        403, 429 and 5xx are retried, a malformed page is a ``ProtocolError``.
        """
        return await fetch_history(self._query_history, user_ids, start, end)

    async def _query_history(self, body: dict[str, Any]) -> object:
        response = await self._call("POST", USER_DETAILS_QUERY, json=body)
        return self._json(response, USER_DETAILS_QUERY)

    @staticmethod
    def _add_change(
        out: list[Change],
        item: UserPresence | RoutingStatus,
        user_id: str | None,
        observed_at: datetime,
        origin: Origin,
    ) -> None:
        try:
            out.append(item.to_change(user_id, observed_at=observed_at, origin=origin))
        except ProtocolError as exc:
            logger.warning("skipping malformed current state of user %s: %s", user_id, exc)
