"""``POST /api/v2/analytics/users/details/query``: agents' presence and routing-status history.

Served from :attr:`bridge.sim.org.Org.history` (per-agent intervals, kept for
``analytics_retention_s``, 24 h by default). Shapes as the official SDK's
models (PureCloudPlatformClientV2 269.0.0): the body is a ``UserDetailsQuery``
(``interval``, ``userFilters``, ``order``, ``paging``), the answer an
``AnalyticsUserDetailsQueryResponse``::

    {"userDetails": [{"userId": "...",
       "primaryPresence": [{"startTime", "endTime"?, "systemPresence", "organizationPresenceId"}],
       "routingStatus": [{"startTime", "endTime"?, "routingStatus"}]}],
     "totalHits": 6}

* Every record overlapping the interval (``start < interval end`` and
  ``end > interval start``) comes back unclipped: the first one usually
  started before the interval. The current (open) record has no ``endTime``;
  ``endTime`` equals the next record's ``startTime`` to the ms. Times are
  ISO-8601 UTC with ms and ``Z``; ``systemPresence`` is UPPER_SNAKE
  (``ON_QUEUE``); ``organizationPresenceId`` is the presence definition id.
  A user or kind without records is left out; no hits at all is
  ``{"totalHits": 0}`` with no ``userDetails`` key.
* **Analytics delay** (``analytics_delay_s``, ``--analytics-delay-s``,
  default 5 s): a change younger than the delay is not in the answer yet, so
  the record before it still looks open (a change exactly the delay old is
  there). A message-only presence change (same systemPresence and
  definition), or the same routing status again, starts no new record.
  A record's ``startTime`` is exactly the change's time the stream carried
  (``modifiedDate`` / routing ``startTime``): both come from one change, which
  real Genesys does not promise to the ms. History older than the retention
  is gone (an ended record is kept 24 h after the agent's latest change).
* **Paging** of the flattened record list (``pageSize`` default 25,
  ``pageNumber`` 1-based; a page past the end has no ``userDetails``), regrouped
  per user in the page: a user's records can span pages. ``order``: ``asc``
  (default) sorts by (userId, startTime, presence before routing status),
  ``desc`` is its exact reverse, ``unordered`` a stable order by a hash.
  As Genesys stores a record once per UTC day it touches: a record crossing
  midnight inside the interval counts once per day in ``totalHits`` (which is
  "approximate"), its copies sit next to each other in the list and are
  dropped after paging, so a page can be short; copies straddling a page
  boundary show on both pages (the documented "duplicates occasionally
  occur"). Page until a page has no records, and deduplicate.
* **Validation** (400, Genesys error body): a JSON object with known fields
  only; ``interval`` required, ``start/end`` with explicit offsets and
  start < end; ``order`` in asc/desc/unordered; filters ``type`` and/or with
  ``predicates`` and/or ``clauses``; predicates ``type: dimension``,
  ``dimension: userId``, ``operator`` matches (with a string ``value``),
  exists or notExists. Top-level filters are ANDed.
* **Limits, assumed and stricter than documented** (Genesys states no maximum
  for this query's page size or predicates; the 100 predicates come from the
  *aggregate* user query's documentation): at most
  :data:`MAX_USER_PREDICATES` userId predicates in all, ``pageSize`` 1..
  :data:`MAX_PAGE_SIZE`; documented: the interval at most
  :data:`MAX_FILTERED_INTERVAL_DAYS` days with userFilters,
  :data:`MAX_UNFILTERED_INTERVAL_DAYS` without.
* Not simulated (400 "not supported by the simulator"): ``presenceFilters``,
  ``routingStatusFilters`` and the aggregations.
* Counted against the token's rate limit like every ``/api/v2`` call (429 +
  ``Retry-After``, in the middleware), hit by the HTTP storm faults; 403
  ``missing.permissions`` while the ``analytics`` fault says the client lacks
  ``analytics:userDetail:view``. The history of a deleted agent is still
  served; unknown user ids match nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.api import error, json_response
from bridge.sim.history import PRESENCE, Interval
from bridge.sim.org import iso_ms
from bridge.sim.simulator import SIMULATOR_KEY

__all__ = [
    "ANALYTICS_PERMISSION",
    "DEFAULT_ANALYTICS_PAGE_SIZE",
    "MAX_FILTERED_INTERVAL_DAYS",
    "MAX_PAGE_SIZE",
    "MAX_UNFILTERED_INTERVAL_DAYS",
    "MAX_USER_PREDICATES",
    "ORDERS",
    "USER_DETAILS_QUERY_ROUTE",
    "QueryError",
    "UserDetailsQuery",
    "add_analytics_routes",
    "answer",
    "parse_query",
]

USER_DETAILS_QUERY_ROUTE = "/api/v2/analytics/users/details/query"
DEFAULT_ANALYTICS_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_USER_PREDICATES = 100
MAX_FILTERED_INTERVAL_DAYS = 31
MAX_UNFILTERED_INTERVAL_DAYS = 7
ORDERS = ("asc", "desc", "unordered")
DEFAULT_ORDER = "asc"
FILTER_TYPES = ("and", "or")
OPERATORS = ("matches", "exists", "notExists")
ANALYTICS_PERMISSION = "analytics:userDetail:view"
_KNOWN_FIELDS = frozenset(
    {
        "interval",
        "userFilters",
        "presenceFilters",
        "routingStatusFilters",
        "order",
        "presenceAggregations",
        "routingStatusAggregations",
        "paging",
    }
)
_UNSUPPORTED = (
    "presenceFilters",
    "routingStatusFilters",
    "presenceAggregations",
    "routingStatusAggregations",
)
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class QueryError(Exception):
    """A query Genesys would answer 400 to (the message is the reply's)."""


@dataclass(frozen=True, slots=True)
class UserDetailsQuery:
    """A validated query; ``user_ids`` None means every user."""

    start_ms: int
    end_ms: int
    user_ids: frozenset[str] | None
    order: str
    page_size: int
    page_number: int


def _instant(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"interval: {text!r} is not an ISO-8601 date-time") from None
    if when.tzinfo is None:
        raise QueryError(f"interval: {text!r} needs a UTC offset or Z")
    return (when - _EPOCH) // _MS


def _interval(value: object, filtered: bool) -> tuple[int, int]:
    if not isinstance(value, str) or value.count("/") != 1:
        raise QueryError("interval is required, as <start>/<end> in ISO-8601")
    start_text, end_text = value.split("/")
    start, end = _instant(start_text), _instant(end_text)
    if start >= end:
        raise QueryError("interval: the start must be before the end")
    days = MAX_FILTERED_INTERVAL_DAYS if filtered else MAX_UNFILTERED_INTERVAL_DAYS
    if end - start > days * _DAY_MS:
        with_ = "with" if filtered else "without"
        raise QueryError(f"interval: at most {days} days {with_} userFilters")
    return start, end


def _list(value: object, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise QueryError(f"{name} must be a list")
    return value


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise QueryError(f"{name} must be an object")
    return value


class _Filters:
    """Evaluates userFilters into a set of user ids, counting predicates."""

    def __init__(self) -> None:
        self.predicates = 0

    def predicate(self, raw: object, name: str) -> set[str] | None:
        """The ids a predicate matches; None for "every user" (``exists``)."""
        p = _object(raw, name)
        self.predicates += 1
        if p.get("type", "dimension") != "dimension":
            raise QueryError(f"{name}.type: userFilters take dimension predicates only")
        if p.get("dimension") != "userId":
            raise QueryError(f"{name}.dimension: userFilters are limited to the userId dimension")
        if p.get("range") is not None:
            raise QueryError(f"{name}.range: not valid for the userId dimension")
        operator = p.get("operator", "matches")
        if operator not in OPERATORS:
            raise QueryError(f"{name}.operator must be one of {', '.join(OPERATORS)}")
        if operator == "exists":
            return None
        if operator == "notExists":
            return set()
        value = p.get("value")
        if not isinstance(value, str) or not value:
            raise QueryError(f"{name}.value: a userId is required with operator matches")
        return {value}

    def group(self, raw: object, name: str, *, clauses: bool) -> set[str] | None:
        """A filter (predicates and clauses) or a clause (predicates only)."""
        f = _object(raw, name)
        kind = f.get("type")
        if kind not in FILTER_TYPES:
            raise QueryError(f"{name}.type must be and or or")
        parts = [
            self.predicate(p, f"{name}.predicates[{i}]")
            for i, p in enumerate(_list(f.get("predicates"), f"{name}.predicates"))
        ]
        if clauses:
            parts.extend(
                self.group(c, f"{name}.clauses[{i}]", clauses=False)
                for i, c in enumerate(_list(f.get("clauses"), f"{name}.clauses"))
            )
        elif f.get("clauses") is not None:
            raise QueryError(f"{name}: clauses nest one level only")
        if not parts:
            raise QueryError(f"{name}: needs predicates or clauses")
        return _combine(parts, kind)


def _combine(parts: Iterable[set[str] | None], kind: str) -> set[str] | None:
    """and/or of sets where None is "every user"."""
    result: set[str] | None = None if kind == "and" else set()
    for part in parts:
        if kind == "or":
            result = None if result is None or part is None else result | part
        elif part is not None:
            result = set(part) if result is None else result & part
    return result


def _paging(value: object) -> tuple[int, int]:
    if value is None:
        return DEFAULT_ANALYTICS_PAGE_SIZE, 1
    p = _object(value, "paging")
    size, number = p.get("pageSize", DEFAULT_ANALYTICS_PAGE_SIZE), p.get("pageNumber", 1)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise QueryError(f"paging.pageSize must be an integer between 1 and {MAX_PAGE_SIZE}")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise QueryError("paging.pageNumber must be an integer of at least 1")
    return size, number


def parse_query(body: object) -> UserDetailsQuery:
    """Validate a ``UserDetailsQuery`` body; :class:`QueryError` says what is wrong."""
    q = _object(body, "the body")
    unknown = sorted(set(q) - _KNOWN_FIELDS)
    if unknown:
        raise QueryError(f"unknown field(s): {', '.join(unknown)}")
    for name in _UNSUPPORTED:
        if q.get(name):
            raise QueryError(f"{name} are not supported by the simulator")
    filters = _list(q.get("userFilters"), "userFilters")
    start, end = _interval(q.get("interval"), bool(filters))
    order = q.get("order")
    order = DEFAULT_ORDER if order is None else order
    if order not in ORDERS:
        raise QueryError(f"order must be one of {', '.join(ORDERS)}")
    evaluator = _Filters()
    ids = _combine(
        (evaluator.group(f, f"userFilters[{i}]", clauses=True) for i, f in enumerate(filters)), "and"
    )
    if evaluator.predicates > MAX_USER_PREDICATES:
        raise QueryError(
            f"at most {MAX_USER_PREDICATES} userId predicates per query, got {evaluator.predicates}: "
            "break it up into several queries"
        )
    size, number = _paging(q.get("paging"))
    return UserDetailsQuery(start, end, None if ids is None else frozenset(ids), order, size, number)


def _hashed(record: Interval) -> bytes:
    key = f"{record.user_id}|{record.kind}|{record.start_ms}".encode()
    return hashlib.blake2b(key, digest_size=8).digest()


def _sort_key(order: str) -> Callable[[Interval], Any]:
    if order == "unordered":
        return _hashed
    return lambda r: (r.user_id, r.start_ms, r.kind != PRESENCE)


def _days(record: Interval, query: UserDetailsQuery, cutoff_ms: int) -> int:
    """UTC days the record touches inside the query interval (Genesys stores it once per day)."""
    lo = max(record.start_ms, query.start_ms)
    end = record.end_ms if record.end_ms is not None else max(cutoff_ms, record.start_ms) + 1
    hi = min(end, query.end_ms)
    return max(1, (hi - 1) // _DAY_MS - lo // _DAY_MS + 1)


def _record_json(record: Interval) -> dict[str, Any]:
    out: dict[str, Any] = {"startTime": iso_ms(record.start_ms)}
    if record.end_ms is not None:
        out["endTime"] = iso_ms(record.end_ms)
    if record.kind == PRESENCE:
        out["systemPresence"] = record.value
        out["organizationPresenceId"] = record.definition_id
    else:
        out["routingStatus"] = record.value
    return out


def answer(query: UserDetailsQuery, records: list[Interval], cutoff_ms: int) -> dict[str, Any]:
    """The ``AnalyticsUserDetailsQueryResponse`` page for ``records`` (the overlapping ones, any order)."""
    ordered = sorted(records, key=_sort_key(query.order), reverse=query.order == "desc")
    flat = [r for r in ordered for _ in range(_days(r, query, cutoff_ms))]
    first = (query.page_number - 1) * query.page_size
    page = list(dict.fromkeys(flat[first : first + query.page_size]))  # copies dropped after paging
    body: dict[str, Any] = {"totalHits": len(flat)}
    if not page:
        return body
    details: dict[str, dict[str, Any]] = {}
    for record in page:
        detail = details.setdefault(record.user_id, {"userId": record.user_id})
        key = "primaryPresence" if record.kind == PRESENCE else "routingStatus"
        detail.setdefault(key, []).append(_record_json(record))
    return {"userDetails": list(details.values()), **body}


def _forbidden() -> web.Response:
    response = error(
        403,
        "Unable to perform the requested action. You are missing the following permission(s): "
        f"{ANALYTICS_PERMISSION}",
        "missing.permissions",
    )
    return response


async def users_details_query(request: web.Request) -> web.StreamResponse:
    """``POST /api/v2/analytics/users/details/query`` (see the module docstring)."""
    sim = request.app[SIMULATOR_KEY]
    if sim.analytics_forbidden:
        return _forbidden()
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "the body must be a JSON UserDetailsQuery")
    try:
        query = parse_query(body)
    except QueryError as exc:
        return error(400, str(exc))
    history = sim.org.history
    ids = sorted(query.user_ids) if query.user_ids is not None else sorted(history.user_ids())
    cutoff = sim.clock_ms() - round(sim.config.analytics_delay_s * 1000)
    records = history.records(ids, query.start_ms, query.end_ms, cutoff)
    return json_response(answer(query, records, cutoff))


def add_analytics_routes(app: web.Application) -> None:
    """Register the analytics query route."""
    app.router.add_post(USER_DETAILS_QUERY_ROUTE, users_details_query)
