"""Genesys's own presence and routing history (the analytics user details query), sans-I/O.

The backfill asks ``POST /api/v2/analytics/users/details/query`` what each
agent of a gap did during it. This module builds the request bodies
(:func:`query_body`), reads the answers (:func:`parse_page`), combines the
pages (:func:`merge`), follows the paging (:func:`fetch_history`, over an
injected ``post`` coroutine: no HTTP here) and turns one agent's history into
the :class:`~bridge.model.Change` records the stream would have written
(:func:`changes`).

Genesys behaviour followed (official SDK models ``UserDetailsQuery`` and
``AnalyticsUserDetailsQueryResponse``):

* The request: ``{"interval": "<start>/<end>", "order": "asc", "paging":
  {"pageSize", "pageNumber"}, "userFilters": [{"type": "or", "predicates":
  [{"type": "dimension", "dimension": "userId", "operator": "matches",
  "value": <id>}, ...]}]}``; ``pageNumber`` is 1-based. At most
  :data:`MAX_USERS_PER_QUERY` user ids a query and :data:`PAGE_SIZE` records a
  page: assumed limits, stricter than Genesys documents (the aggregate query
  documents 100 userId predicates; the details query states none).
* The answer: ``{"userDetails": [{"userId", "primaryPresence": [{"startTime",
  "endTime"?, "systemPresence", "organizationPresenceId"}], "routingStatus":
  [{"startTime", "endTime"?, "routingStatus"}]}], "totalHits": N}``. No hits
  is ``{"totalHits": 0}`` without ``userDetails``. The current (open) record
  has no ``endTime``. Records overlapping the interval come back unclipped, so
  the first one usually started before it. Times are ISO-8601 UTC, with or
  without milliseconds.
* Pages can be short (a status spanning several days is stored once a day and
  the duplicate dropped after paging) and ``totalHits`` is approximate, so the
  paging stops at the first page with **no records**, never at a short page or
  at ``totalHits``: one extra request per batch buys never stopping early.
  Records are deduplicated on ``(start, value)`` and sorted locally anyway.
* No presence ``message`` (nor ``source``, ``primary``): a history presence
  is ``PresenceValue(systemPresence, organizationPresenceId)``, and a
  message-only change starts no new record. :func:`bridge.model.event_id`
  leaves the message out, so a change read here gets the id the stream gave
  it, provided Genesys's ``startTime`` is the notification's time to the ms
  (true of the project's simulator by construction; not documented by
  Genesys).

Malformed answers: a body that is not the documented shape, **or any single
malformed record in it** (missing or unparsable time, unknown routing status
or system presence, wrong types), raises :class:`~bridge.errors.ProtocolError`
for the whole page, with a stable ``reason`` and a message that names the
field (never a value that could be a secret). Skipping the record would lose a
transition silently; failing the page lets the caller fall back to
reconciliation and say so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bridge.errors import GenesysError, ProtocolError
from bridge.genesys.protocol import normalise_status, parse_timestamp
from bridge.model import (
    SYSTEM_PRESENCES,
    Change,
    Kind,
    Origin,
    PresenceValue,
    RoutingValue,
    event_id,
    format_time,
)

__all__ = [
    "MAX_HISTORY_PAGES",
    "MAX_USERS_PER_QUERY",
    "PAGE_SIZE",
    "ROUTING_STATUSES",
    "USER_DETAILS_QUERY",
    "Interval",
    "Post",
    "UserHistory",
    "changes",
    "fetch_history",
    "merge",
    "parse_page",
    "query_body",
]

#: The endpoint (also the ``endpoint`` label of ``bridge_genesys_http_requests_total``).
USER_DETAILS_QUERY: Final = "/api/v2/analytics/users/details/query"
#: User ids per query (assumed: the limit Genesys documents for the aggregate query).
MAX_USERS_PER_QUERY: Final = 100
#: Records per page asked for (assumed maximum; Genesys's default is 25).
PAGE_SIZE: Final = 100
#: Guard against a server that never answers an empty page (10,000 records a user at most).
MAX_HISTORY_PAGES: Final = 10_000
#: ``AnalyticsRoutingStatusRecord.routingStatus`` values (the SDK's enum).
ROUTING_STATUSES: Final = frozenset({"OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING"})
#: Reason of a page that is not the documented shape.
_BAD_SHAPE: Final = "bad_type"
_MISSING: Final = "missing_field"
_BAD_VALUE: Final = "unexpected"

#: Sends one query body and returns the decoded JSON answer (raising the REST client's errors).
Post = Callable[[dict[str, Any]], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Interval:
    """One analytics record: ``value`` held from ``start`` until ``end`` (None: still open, or not known yet).

    A presence value has ``message``, ``source`` and ``primary`` None: the
    history does not carry them.
    """

    start: datetime
    end: datetime | None
    value: PresenceValue | RoutingValue


@dataclass(slots=True)
class UserHistory:
    """One user's presence and routing records; each list sorted by start, deduplicated on (start, value)."""

    user_id: str
    presence: list[Interval]
    routing: list[Interval]


def query_body(
    user_ids: Sequence[str], start: datetime, end: datetime, page: int, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """The ``UserDetailsQuery`` for page ``page`` (1-based) of these users' records over ``[start, end]``.

    Raises ``ValueError`` for no users, more than :data:`MAX_USERS_PER_QUERY`,
    ``start >= end``, a page below 1 or a page size outside
    ``1..PAGE_SIZE``.
    """
    if not user_ids:
        raise ValueError("a history query needs at least one user (none would ask for every user)")
    if len(user_ids) > MAX_USERS_PER_QUERY:
        raise ValueError(f"{len(user_ids)} users in one history query; at most {MAX_USERS_PER_QUERY}")
    if start >= end:
        raise ValueError("a history query's start must be before its end")
    if page < 1:
        raise ValueError("history pages are numbered from 1")
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"history page size must be 1..{PAGE_SIZE}")
    return {
        "interval": f"{format_time(start)}/{format_time(end)}",
        "order": "asc",
        "paging": {"pageSize": page_size, "pageNumber": page},
        "userFilters": [
            {
                "type": "or",
                "predicates": [
                    {"type": "dimension", "dimension": "userId", "operator": "matches", "value": user_id}
                    for user_id in user_ids
                ],
            }
        ],
    }


# --------------------------------------------------------------------------- parsing


def _list(doc: Mapping[str, object], key: str, what: str) -> list[object]:
    value = doc.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise ProtocolError(f"history {what}.{key} is {type(value).__name__}, not a list", reason=_BAD_SHAPE)
    return value


def _record(raw: object, what: str) -> tuple[dict[str, object], datetime, datetime | None]:
    if type(raw) is not dict:
        raise ProtocolError(
            f"history {what} record is {type(raw).__name__}, not an object", reason=_BAD_SHAPE
        )
    start = parse_timestamp(raw.get("startTime"), f"history {what}.startTime")
    if start is None:
        raise ProtocolError(f"history {what} record has no startTime", reason=_MISSING)
    end = parse_timestamp(raw.get("endTime"), f"history {what}.endTime")
    return raw, start, end


def _status(raw: Mapping[str, object], key: str, known: frozenset[str], what: str) -> str:
    value = raw.get(key)
    if value is None:
        raise ProtocolError(f"history {what} record has no {key}", reason=_MISSING)
    if type(value) is not str:
        raise ProtocolError(f"history {what}.{key} is {type(value).__name__}", reason=_BAD_SHAPE)
    status = normalise_status(value)
    if status not in known:
        # The value is an enum member, never a secret; bounded in case it is not.
        raise ProtocolError(f"history {what}.{key} {status[:40]!r} is not a known value", reason=_BAD_VALUE)
    return status


def _presence(raw: object) -> Interval:
    doc, start, end = _record(raw, "primaryPresence")
    system = _status(doc, "systemPresence", SYSTEM_PRESENCES, "primaryPresence")
    definition = doc.get("organizationPresenceId")
    if definition is not None and type(definition) is not str:
        raise ProtocolError(
            "history primaryPresence.organizationPresenceId is not a string", reason=_BAD_SHAPE
        )
    return Interval(
        start, end, PresenceValue(system_presence=system, presence_definition_id=definition or None)
    )


def _routing(raw: object) -> Interval:
    doc, start, end = _record(raw, "routingStatus")
    return Interval(
        start, end, RoutingValue(_status(doc, "routingStatus", ROUTING_STATUSES, "routingStatus"))
    )


def parse_page(body: object) -> tuple[list[UserHistory], int]:
    """One decoded answer → (its users' histories, how many records the page held).

    The record count is taken before deduplication: 0 means the paging is
    over. A missing ``userDetails`` is an empty page. Raises
    :class:`~bridge.errors.ProtocolError` for a malformed body or record
    (see the module docstring: the whole page fails, nothing is skipped).
    """
    if type(body) is not dict:
        raise ProtocolError(f"history answer is {type(body).__name__}, not an object", reason="not_an_object")
    users: list[UserHistory] = []
    count = 0
    for raw in _list(body, "userDetails", "answer"):
        if type(raw) is not dict:
            raise ProtocolError("history userDetails entry is not an object", reason=_BAD_SHAPE)
        user_id = raw.get("userId")
        if type(user_id) is not str or not user_id:
            raise ProtocolError("history userDetails entry has no userId", reason=_MISSING)
        presence = [_presence(r) for r in _list(raw, "primaryPresence", "userDetails")]
        routing = [_routing(r) for r in _list(raw, "routingStatus", "userDetails")]
        count += len(presence) + len(routing)
        users.append(UserHistory(user_id, _tidy(presence), _tidy(routing)))
    return users, count


def _key(interval: Interval) -> tuple[datetime, str, str]:
    value = interval.value
    if isinstance(value, RoutingValue):
        return interval.start, value.status, ""
    return interval.start, value.system_presence, value.presence_definition_id or ""


def _tidy(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted by start, one per (start, value); of duplicates the one that knows its end is kept."""
    kept: dict[tuple[datetime, str, str], Interval] = {}
    for interval in intervals:
        key = _key(interval)
        seen = kept.get(key)
        if seen is None or (seen.end is None and interval.end is not None):
            kept[key] = interval
    return sorted(kept.values(), key=_key)


def merge(pages: Iterable[UserHistory]) -> dict[str, UserHistory]:
    """User id → one history from every page's part of it (a user's records can span pages)."""
    out: dict[str, UserHistory] = {}
    for part in pages:
        whole = out.get(part.user_id)
        if whole is None:
            out[part.user_id] = UserHistory(part.user_id, list(part.presence), list(part.routing))
        else:
            whole.presence.extend(part.presence)
            whole.routing.extend(part.routing)
    for history in out.values():
        history.presence = _tidy(history.presence)
        history.routing = _tidy(history.routing)
    return out


async def fetch_history(
    post: Post,
    user_ids: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_HISTORY_PAGES,
) -> dict[str, UserHistory]:
    """Every record of ``user_ids`` over ``[start, end]``: batches of :data:`MAX_USERS_PER_QUERY`, all pages.

    Each batch is paged from ``pageNumber`` 1 until a page holds no records
    (not until a short page or ``totalHits``: see the module docstring).
    Users without records are absent from the result. ``post``'s errors
    (the REST client's: 403 ``RequestError``, 429/5xx once its retries are
    spent) and :func:`parse_page`'s ``ProtocolError`` propagate; a batch that
    never reaches an empty page within ``max_pages`` raises
    :class:`~bridge.errors.GenesysError`.
    """
    parts: list[UserHistory] = []
    unique = list(dict.fromkeys(user_ids))
    for first in range(0, len(unique), MAX_USERS_PER_QUERY):
        batch = unique[first : first + MAX_USERS_PER_QUERY]
        for page in range(1, max_pages + 1):
            users, records = parse_page(await post(query_body(batch, start, end, page, page_size)))
            if records == 0:
                break
            parts.extend(users)
        else:
            raise GenesysError(
                f"history query never reached an empty page in {max_pages} pages",
                endpoint=USER_DETAILS_QUERY,
            )
    return merge(parts)


# --------------------------------------------------------------------------- changes


def _same(a: PresenceValue | RoutingValue, b: PresenceValue | RoutingValue) -> bool:
    if isinstance(a, RoutingValue) or isinstance(b, RoutingValue):
        return isinstance(a, RoutingValue) and isinstance(b, RoutingValue) and a.status == b.status
    return a.system_presence == b.system_presence and a.presence_definition_id == b.presence_definition_id


def _kind_changes(
    user_id: str, kind: Kind, intervals: Sequence[Interval], observed_at: datetime
) -> list[Change]:
    out: list[Change] = []
    previous: PresenceValue | RoutingValue | None = None
    for interval in sorted(intervals, key=_key):
        value = interval.value
        if previous is not None and _same(previous, value):
            continue  # the same value again (a record split at midnight): not a transition
        previous = value
        out.append(
            Change(
                user_id=user_id,
                kind=kind,
                changed_at=interval.start,
                value=value,
                observed_at=observed_at,
                origin=Origin.BACKFILL,
                event_id=event_id(user_id, kind, interval.start, value),
            )
        )
    return out


def changes(history: UserHistory, *, observed_at: datetime) -> list[Change]:
    """One :class:`~bridge.model.Change` per record start, presence and routing, sorted by ``changed_at``.

    ``origin`` is ``backfill``, ``observed_at`` when the history was read,
    ``event_id`` the stream's id for the same transition. A record whose
    value equals the one before it (of the same kind) is no transition and
    gives no change. Ties in time put presence before routing (Genesys
    moves an agent on queue a few ms before its routing status follows).
    The first record usually started before the queried interval: choosing
    which changes to write is the caller's.
    """
    presence = _kind_changes(history.user_id, Kind.PRESENCE, history.presence, observed_at)
    routing = _kind_changes(history.user_id, Kind.ROUTING_STATUS, history.routing, observed_at)
    order = {Kind.PRESENCE: 0, Kind.ROUTING_STATUS: 1}
    return sorted([*presence, *routing], key=lambda c: (c.changed_at, order[c.kind]))
