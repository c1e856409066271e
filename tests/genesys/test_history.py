"""Sans-I/O analytics history: query bodies, lenient page parsing, merging, paging, changes."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.errors import GenesysError, ProtocolError
from bridge.genesys.history import (
    MAX_USERS_PER_QUERY,
    PAGE_SIZE,
    Interval,
    UserHistory,
    changes,
    fetch_history,
    merge,
    parse_page,
    query_body,
)
from bridge.genesys.protocol import REASONS, presence_change, routing_change
from bridge.model import Kind, Origin, PresenceValue, RoutingValue

USER = "40f5f050-65b7-49e6-8e93-a67aa11fd44d"
OTHER = "83c8a3a3-1287-4c45-a8fc-b347d52b7541"
ON_QUEUE_ID = "e08eaf1b-ee47-4fa9-a231-1200e284798f"
BREAK_ID = "a1b2c3d4-0000-4000-8000-00000000b4e4"
START = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)
OBSERVED = datetime(2026, 12, 1, 14, 11, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# The documented shape (research: official blueprint), one user, open last records.
ANSWER: dict[str, Any] = {
    "userDetails": [
        {
            "userId": USER,
            "primaryPresence": [
                {
                    "startTime": "2026-12-01T13:55:00.604Z",
                    "endTime": "2026-12-01T14:03:06.305Z",
                    "systemPresence": "ON_QUEUE",
                    "organizationPresenceId": ON_QUEUE_ID,
                },
                {
                    "startTime": "2026-12-01T14:03:06.305Z",
                    "endTime": "2026-12-01T14:03:46.120Z",
                    "systemPresence": "BREAK",
                    "organizationPresenceId": BREAK_ID,
                },
                {
                    "startTime": "2026-12-01T14:03:46.120Z",
                    "systemPresence": "ON_QUEUE",
                    "organizationPresenceId": ON_QUEUE_ID,
                },
            ],
            "routingStatus": [
                {
                    "startTime": "2026-12-01T13:55:01.528Z",
                    "endTime": "2026-12-01T14:03:06.311Z",
                    "routingStatus": "IDLE",
                },
                {
                    "startTime": "2026-12-01T14:03:06.311Z",
                    "endTime": "2026-12-01T14:03:46.130Z",
                    "routingStatus": "OFF_QUEUE",
                },
                {"startTime": "2026-12-01T14:03:46.130Z", "routingStatus": "IDLE"},
            ],
        }
    ],
    "totalHits": 6,
}


# --------------------------------------------------------------------------- query_body


def test_query_body_is_the_documented_user_details_query() -> None:
    """Interval start/end in ms Z, ascending, 1-based paging, an or of userId matches."""
    body = query_body([USER, OTHER], START, END, 2, 50)
    assert body == {
        "interval": "2026-12-01T14:00:00.000Z/2026-12-01T14:10:00.000Z",
        "order": "asc",
        "paging": {"pageSize": 50, "pageNumber": 2},
        "userFilters": [
            {
                "type": "or",
                "predicates": [
                    {"type": "dimension", "dimension": "userId", "operator": "matches", "value": USER},
                    {"type": "dimension", "dimension": "userId", "operator": "matches", "value": OTHER},
                ],
            }
        ],
    }
    assert query_body([USER], START, END, 1)["paging"]["pageSize"] == PAGE_SIZE


@pytest.mark.parametrize(
    ("users", "start", "end", "page", "size"),
    [
        ([f"u{i}" for i in range(MAX_USERS_PER_QUERY + 1)], START, END, 1, PAGE_SIZE),
        ([], START, END, 1, PAGE_SIZE),
        ([USER], END, START, 1, PAGE_SIZE),
        ([USER], START, START, 1, PAGE_SIZE),
        ([USER], START, END, 0, PAGE_SIZE),
        ([USER], START, END, 1, PAGE_SIZE + 1),
        ([USER], START, END, 1, 0),
    ],
)
def test_query_body_refuses_what_genesys_would(
    users: list[str], start: datetime, end: datetime, page: int, size: int
) -> None:
    """Too many or no users, an empty or inverted interval, page 0, a bad page size: ValueError."""
    with pytest.raises(ValueError):
        query_body(users, start, end, page, size)


def test_query_body_takes_exactly_the_maximum_users() -> None:
    """MAX_USERS_PER_QUERY users are one query's worth."""
    users = [f"u{i}" for i in range(MAX_USERS_PER_QUERY)]
    assert len(query_body(users, START, END, 1)["userFilters"][0]["predicates"]) == MAX_USERS_PER_QUERY


# --------------------------------------------------------------------------- parse_page


def test_parse_page_reads_presence_and_routing_intervals() -> None:
    """Each record becomes an Interval; the open one has no end; presence has no message."""
    users, records = parse_page(ANSWER)
    assert records == 6
    [history] = users
    assert history.user_id == USER
    assert history.presence[1] == Interval(
        at("2026-12-01T14:03:06.305Z"),
        at("2026-12-01T14:03:46.120Z"),
        PresenceValue("BREAK", BREAK_ID, None, None, None),
    )
    assert history.presence[2].end is None
    assert [i.value for i in history.routing] == [
        RoutingValue("IDLE"),
        RoutingValue("OFF_QUEUE"),
        RoutingValue("IDLE"),
    ]
    assert history.routing[2].end is None


def test_parse_page_without_user_details_is_empty() -> None:
    """Genesys answers no hits with {"totalHits": 0} and no userDetails key."""
    assert parse_page({"totalHits": 0}) == ([], 0)
    assert parse_page({"userDetails": [], "totalHits": 0}) == ([], 0)


def test_parse_page_is_lenient_about_times_and_spelling() -> None:
    """Seconds without ms, an offset, and a title-case presence all parse, normalised."""
    body = {
        "userDetails": [
            {
                "userId": USER,
                "primaryPresence": [{"startTime": "2026-12-01T14:00:01Z", "systemPresence": "On Queue"}],
                "routingStatus": [{"startTime": "2026-12-01T15:00:02.5+01:00", "routingStatus": "idle"}],
            }
        ]
    }
    [history], records = parse_page(body)
    assert records == 2
    assert history.presence[0].start == datetime(2026, 12, 1, 14, 0, 1, tzinfo=UTC)
    assert history.presence[0].value == PresenceValue("ON_QUEUE", None)
    assert history.routing[0].start == datetime(2026, 12, 1, 14, 0, 2, 500000, tzinfo=UTC)
    assert history.routing[0].value == RoutingValue("IDLE")


def test_parse_page_sorts_and_deduplicates() -> None:
    """Records come back sorted by start, one per (start, value), the one with an end kept."""
    body = copy.deepcopy(ANSWER)
    routing = body["userDetails"][0]["routingStatus"]
    routing.reverse()
    routing.append({"startTime": "2026-12-01T14:03:06.311Z", "routingStatus": "OFF_QUEUE"})  # open duplicate
    [history], records = parse_page(body)
    assert records == 7  # counted before deduplication: the paging's signal
    assert [i.start for i in history.routing] == sorted(i.start for i in history.routing)
    assert len(history.routing) == 3
    assert history.routing[1].end == at("2026-12-01T14:03:46.130Z")


def mutated(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    body = copy.deepcopy(ANSWER)
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "not_an_object"),
        ("nope", "not_an_object"),
        ({"userDetails": {"userId": USER}}, "bad_type"),
        ({"userDetails": ["x"]}, "bad_type"),
        (mutated(("userDetails", 0, "userId"), KeyError), "missing_field"),
        (mutated(("userDetails", 0, "userId"), 7), "missing_field"),
        (mutated(("userDetails", 0, "primaryPresence"), "ON_QUEUE"), "bad_type"),
        (mutated(("userDetails", 0, "primaryPresence", 0), "ON_QUEUE"), "bad_type"),
        (mutated(("userDetails", 0, "routingStatus", 1, "routingStatus"), "ON_BREAK"), "unexpected"),
        (mutated(("userDetails", 0, "routingStatus", 1, "routingStatus"), KeyError), "missing_field"),
        (mutated(("userDetails", 0, "routingStatus", 1, "routingStatus"), 3), "bad_type"),
        (mutated(("userDetails", 0, "primaryPresence", 1, "systemPresence"), "Vacation"), "unexpected"),
        (mutated(("userDetails", 0, "primaryPresence", 1, "organizationPresenceId"), 5), "bad_type"),
        (mutated(("userDetails", 0, "primaryPresence", 1, "startTime"), KeyError), "missing_field"),
        (
            mutated(("userDetails", 0, "primaryPresence", 1, "startTime"), "yesterday-ish time"),
            "bad_timestamp",
        ),
        (mutated(("userDetails", 0, "routingStatus", 0, "endTime"), "2026-13-45T99:00:00Z"), "bad_timestamp"),
        (mutated(("userDetails", 0, "routingStatus", 0, "endTime"), 12), "bad_type"),
    ],
)
def test_a_malformed_page_or_record_fails_the_whole_page(body: object, reason: str) -> None:
    """One bad record fails the page (ProtocolError with a reason): nothing is skipped silently."""
    with pytest.raises(ProtocolError) as caught:
        parse_page(body)
    assert caught.value.reason == reason
    assert reason in REASONS  # the slugs the shard already counts and dead-letters by
    assert "history" in str(caught.value)


def test_a_protocol_error_never_quotes_an_id() -> None:
    """Messages name the field, not the user id or presence id they carried."""
    with pytest.raises(ProtocolError) as caught:
        parse_page(mutated(("userDetails", 0, "primaryPresence", 1, "organizationPresenceId"), 5))
    assert USER not in str(caught.value)


# --------------------------------------------------------------------------- merge


def test_merge_joins_a_user_split_over_pages() -> None:
    """A user's records on two pages merge into one sorted, deduplicated history."""
    page1, _ = parse_page(ANSWER)
    late = copy.deepcopy(ANSWER)
    late["userDetails"][0]["primaryPresence"] = late["userDetails"][0]["primaryPresence"][1:]  # one repeat
    late["userDetails"][0]["routingStatus"] = []
    late["userDetails"].append(
        {"userId": OTHER, "routingStatus": [{"startTime": "2026-12-01T14:01:00Z", "routingStatus": "IDLE"}]}
    )
    page2, _ = parse_page(late)
    merged = merge([*page2, *page1])
    assert set(merged) == {USER, OTHER}
    assert merged[USER] == page1[0]
    assert merged[OTHER].presence == []
    assert len(merged[OTHER].routing) == 1


def test_merge_does_not_alter_its_inputs() -> None:
    """The pages given to merge keep their own lists."""
    [part], _ = parse_page(ANSWER)
    before = list(part.presence)
    merge([part, part])
    assert part.presence == before


# --------------------------------------------------------------------------- fetch_history


class Pages:
    """A fake analytics endpoint serving the given answers in order, recording the bodies."""

    def __init__(self, answers: Sequence[object]) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> object:
        self.bodies.append(body)
        return self.answers.pop(0) if self.answers else {"totalHits": 0}


def split(answer: dict[str, Any], kind: str, index: int) -> dict[str, Any]:
    """The answer with only one record of one kind: a page of one record."""
    one = copy.deepcopy(answer)
    detail = one["userDetails"][0]
    other = "routingStatus" if kind == "primaryPresence" else "primaryPresence"
    detail[kind] = [detail[kind][index]]
    detail[other] = []
    return one


async def test_fetch_history_pages_until_an_empty_page() -> None:
    """Short pages do not end the paging, nor does totalHits: only a page with no records."""
    pages = [split(ANSWER, "primaryPresence", i) for i in range(3)] + [
        split(ANSWER, "routingStatus", i) for i in range(3)
    ]
    for page in pages:
        page["totalHits"] = 2  # approximate, and wrong
    post = Pages(pages)
    result = await fetch_history(post, [USER], START, END)
    assert [b["paging"]["pageNumber"] for b in post.bodies] == [1, 2, 3, 4, 5, 6, 7]
    assert result == {USER: parse_page(ANSWER)[0][0]}


async def test_fetch_history_batches_users_and_restarts_paging() -> None:
    """Over MAX_USERS_PER_QUERY users: one query per batch, each paged from 1; duplicates asked once."""
    users = [f"user-{i:03d}" for i in range(MAX_USERS_PER_QUERY + 5)]
    post = Pages([ANSWER, {"totalHits": 0}, {"totalHits": 0}])
    result = await fetch_history(post, [*users, users[0]], START, END, page_size=10)
    batches = [[p["value"] for p in b["userFilters"][0]["predicates"]] for b in post.bodies]
    assert [len(b) for b in batches] == [MAX_USERS_PER_QUERY, MAX_USERS_PER_QUERY, 5]
    assert [b["paging"] for b in post.bodies] == [
        {"pageSize": 10, "pageNumber": 1},
        {"pageSize": 10, "pageNumber": 2},
        {"pageSize": 10, "pageNumber": 1},
    ]
    assert batches[0] + batches[2] == users
    assert list(result) == [USER]


async def test_fetch_history_lets_a_malformed_page_fail() -> None:
    """A malformed page raises ProtocolError instead of returning a partial history."""
    post = Pages([ANSWER, {"userDetails": "garbage"}])
    with pytest.raises(ProtocolError):
        await fetch_history(post, [USER], START, END)


async def test_fetch_history_gives_up_on_endless_paging() -> None:
    """A server that never answers an empty page raises GenesysError after the page guard."""

    class Endless(Pages):
        async def __call__(self, body: dict[str, Any]) -> object:
            self.bodies.append(body)
            return ANSWER

    post = Endless([])
    with pytest.raises(GenesysError):
        await fetch_history(post, [USER], START, END, max_pages=3)
    assert len(post.bodies) == 3


# --------------------------------------------------------------------------- changes


def test_changes_one_per_record_start_sorted_presence_first() -> None:
    """Every record start is a backfill change at that time, in time order."""
    [history], _ = parse_page(ANSWER)
    out = changes(history, observed_at=OBSERVED)
    assert [(c.kind, c.changed_at, c.origin) for c in out] == [
        (Kind.PRESENCE, at("2026-12-01T13:55:00.604Z"), Origin.BACKFILL),
        (Kind.ROUTING_STATUS, at("2026-12-01T13:55:01.528Z"), Origin.BACKFILL),
        (Kind.PRESENCE, at("2026-12-01T14:03:06.305Z"), Origin.BACKFILL),
        (Kind.ROUTING_STATUS, at("2026-12-01T14:03:06.311Z"), Origin.BACKFILL),
        (Kind.PRESENCE, at("2026-12-01T14:03:46.120Z"), Origin.BACKFILL),
        (Kind.ROUTING_STATUS, at("2026-12-01T14:03:46.130Z"), Origin.BACKFILL),
    ]
    assert {c.observed_at for c in out} == {OBSERVED}
    assert len({c.event_id for c in out}) == 6


def test_changes_breaks_time_ties_presence_first() -> None:
    """A presence and a routing change at the same ms: presence comes first."""
    t = at("2026-12-01T14:05:00.000Z")
    history = UserHistory(
        USER,
        [Interval(t, None, PresenceValue("ON_QUEUE", ON_QUEUE_ID))],
        [Interval(t, None, RoutingValue("IDLE"))],
    )
    assert [c.kind for c in changes(history, observed_at=OBSERVED)] == [Kind.PRESENCE, Kind.ROUTING_STATUS]


def test_changes_collapses_a_repeated_value() -> None:
    """Two consecutive records of the same value (a split at midnight) are one transition."""
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    history = UserHistory(
        USER,
        [
            Interval(midnight - timedelta(hours=1), midnight, PresenceValue("BREAK", BREAK_ID)),
            Interval(midnight, midnight + timedelta(minutes=5), PresenceValue("BREAK", BREAK_ID)),
            Interval(midnight + timedelta(minutes=5), None, PresenceValue("BREAK", ON_QUEUE_ID)),
        ],
        [
            Interval(midnight - timedelta(hours=1), midnight, RoutingValue("OFF_QUEUE")),
            Interval(midnight, None, RoutingValue("OFF_QUEUE")),
        ],
    )
    out = changes(history, observed_at=OBSERVED)
    assert [(c.kind, c.changed_at) for c in out] == [
        (Kind.PRESENCE, midnight - timedelta(hours=1)),
        (Kind.ROUTING_STATUS, midnight - timedelta(hours=1)),
        (Kind.PRESENCE, midnight + timedelta(minutes=5)),  # another definition: a transition
    ]


def test_changes_get_the_stream_event_id() -> None:
    """The backfilled change of a transition has the id the stream computed for it, message or not."""
    [history], _ = parse_page(ANSWER)
    by_time = {c.changed_at: c for c in changes(history, observed_at=OBSERVED)}
    stream_presence = presence_change(
        USER,
        {
            "presenceDefinition": {"id": BREAK_ID, "systemPresence": "Break"},
            "message": "back in 10",
            "source": "PURECLOUD",
            "primary": True,
            "modifiedDate": "2026-12-01T14:03:06.305Z",
        },
        observed_at=START,
    )
    stream_routing = routing_change(
        USER, {"status": "OFF_QUEUE", "startTime": "2026-12-01T14:03:06.311Z"}, observed_at=START
    )
    assert by_time[stream_presence.changed_at].event_id == stream_presence.event_id
    assert by_time[stream_routing.changed_at].event_id == stream_routing.event_id
    backfilled = by_time[stream_presence.changed_at].value
    assert isinstance(backfilled, PresenceValue)
    assert backfilled.message is None  # the history has none; the id does not depend on it


async def test_fetch_history_of_no_users_asks_nothing() -> None:
    """No users: no query (an empty filter would ask for every user) and an empty result."""
    post = Pages([])
    assert await fetch_history(post, [], START, END) == {}
    assert post.bodies == []
