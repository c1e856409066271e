"""Fakes of a shard's sink, Genesys REST API and notification socket, shared by the shard tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.channel import ShardContext, ShardStats
from bridge.errors import SinkError
from bridge.events import Accepted
from bridge.genesys.budget import RequestBudget
from bridge.genesys.history import Interval, UserHistory, merge
from bridge.genesys.models import ChannelInfo, RejectedTopic, SubscriptionResult
from bridge.genesys.session import Session
from bridge.model import AgentState, Change
from bridge.records import GapRecord, Pending
from bridge.settings import Settings
from bridge.shard import session_config


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shard_context(
    rest: Any, clock: Clock, wall: Callable[[], datetime], settings: Settings | None = None
) -> ShardContext:
    """Shard 3's context on a test's clocks (its sleeps only yield)."""
    session = Session(session_config(settings or Settings()), rng=random.Random(1), now=clock())

    async def sleep(_s: float) -> None:
        await asyncio.sleep(0)

    return ShardContext(3, rest, session, ShardStats(), asyncio.Event(), clock, wall, sleep)


class FakeSink:
    """Records what the shard hands to Kafka."""

    def __init__(self) -> None:
        self.tombstones: list[str] = []
        self.submitted: list[str] = []
        self.dead_letters: list[str] = []
        self.late: list[Change] = []
        self.gaps: list[GapRecord] = []
        self.states: list[AgentState] = []
        self.pending_backfills: Mapping[str, Pending] = {}
        self.started = False
        self.closed = False
        self.failed: asyncio.Future[SinkError] | None = None
        self.healthy = True
        self.pending = 0
        self.error: SinkError | None = None

    async def start(self) -> None:
        self.started = True
        self.failed = asyncio.get_running_loop().create_future()

    def submit(self, accepted: Accepted, _channel_id: str | None) -> None:
        self.submitted.append(accepted.change.user_id)

    def submit_tombstone(self, user_id: str) -> None:
        assert self.started, "nothing is written before the sink fenced the previous owner"
        self.tombstones.append(user_id)

    def submit_dlq(self, *, reason: str, error: str, frame: str, channel_id: str | None) -> None:
        self.dead_letters.append(reason)

    def submit_late(self, change: Change, _channel_id: str | None) -> None:
        self.late.append(change)

    def submit_gap(self, gap: GapRecord) -> None:
        self.gaps.append(gap)

    def submit_state(self, state: AgentState) -> None:
        self.states.append(state)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        yield

    async def drain_to(self, _max_pending_items: int) -> None:
        self.pending = 0

    async def close(self) -> None:
        self.closed = True


class NullRest:
    """A Genesys REST API the test does not expect to be called; fakes override what they serve."""

    budget: RequestBudget | None = None

    async def create_channel(self) -> ChannelInfo:
        raise AssertionError("create_channel not expected")

    async def channel_exists(self, _channel_id: str) -> bool:
        raise AssertionError("channel_exists not expected")

    async def list_channels(self, _include: str) -> list[ChannelInfo]:
        raise AssertionError("list_channels not expected")

    async def put_subscriptions(
        self, _cid: str, _topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        raise AssertionError("put_subscriptions not expected")

    async def post_subscriptions(
        self, _cid: str, _topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        raise AssertionError("post_subscriptions not expected")

    async def delete_subscriptions(self, _cid: str) -> None:
        raise AssertionError("delete_subscriptions not expected")

    async def current_changes(self, _users: Sequence[str], *, observed_at: datetime) -> list[Change]:
        raise AssertionError("current_changes not expected")

    async def user_history(
        self, _users: Sequence[str], _start: datetime, _end: datetime
    ) -> dict[str, UserHistory]:
        raise AssertionError("user_history not expected")

    async def invalidate_token(self) -> None:
        raise AssertionError("invalidate_token not expected")


class FakeSocket:
    """An in-memory notification socket: the test pushes frames, the shard reads them."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.uri: str | None = None
        self.closed = False

    async def connect(self, uri: str) -> None:
        self.uri = uri

    async def recv(self) -> str:
        return await self.frames.get()

    async def send(self, text: str) -> None:
        if '"ping"' in text:
            self.frames.put_nowait('{"topicName":"channel.metadata","eventBody":{"message":"pong"}}')

    async def close(self) -> None:
        self.closed = True


class FakeRest(NullRest):
    """Channels and subscription replies as Genesys gives them: POST/PUT list the whole channel."""

    def __init__(self, rejected: dict[str, str] | None = None) -> None:
        self.rejected = rejected or {}
        self.channels: list[str] = []
        self.topics: dict[str, list[str]] = {}
        self.invalidated = 0
        self.deleted: list[str] = []
        self.history: list[UserHistory] = []
        """What :meth:`user_history` serves (parts of one user may be several entries, as pages are)."""
        self.history_error: Exception | None = None
        """Raised by :meth:`user_history` instead, when set (e.g. a 403 ``RequestError``)."""
        self.history_queries: list[tuple[tuple[str, ...], datetime, datetime]] = []

    async def create_channel(self) -> ChannelInfo:
        cid = f"ch-{len(self.channels) + 1}"
        self.channels.append(cid)
        expires = datetime.now(UTC) + timedelta(hours=24)
        return ChannelInfo(id=cid, connect_uri=f"wss://streaming.test/channels/{cid}", expires=expires)

    def _reply(self, cid: str, topics: Sequence[str], *, replace: bool) -> SubscriptionResult:
        ok = [t for t in topics if t not in self.rejected]
        self.topics[cid] = ok if replace else [*self.topics.get(cid, []), *ok]
        bad = [
            RejectedTopic(id=t, reason=self.rejected[t], missing_permissions=("x:y:view",))
            for t in topics
            if t in self.rejected
        ]
        return SubscriptionResult(permitted=tuple(self.topics[cid]), rejected=tuple(bad))

    async def put_subscriptions(self, cid: str, topics: Sequence[str], ignore_errors: bool = False) -> Any:
        return self._reply(cid, topics, replace=True)

    async def post_subscriptions(self, cid: str, topics: Sequence[str], ignore_errors: bool = False) -> Any:
        return self._reply(cid, topics, replace=False)

    async def delete_subscriptions(self, cid: str) -> None:
        self.deleted.append(cid)

    async def current_changes(self, users: Sequence[str], *, observed_at: datetime) -> list[Any]:
        return []

    async def user_history(
        self, users: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, UserHistory]:
        """The histories of :attr:`history` of these users, merged: as Genesys, only the records that
        overlap ``start``..``end`` (served unclipped)."""
        self.history_queries.append((tuple(users), start, end))
        if self.history_error is not None:
            raise self.history_error
        wanted = set(users)

        def overlapping(intervals: list[Interval]) -> list[Interval]:
            return [i for i in intervals if i.start < end and (i.end is None or i.end > start)]

        return merge(
            UserHistory(h.user_id, overlapping(h.presence), overlapping(h.routing))
            for h in self.history
            if h.user_id in wanted
        )

    async def invalidate_token(self) -> None:
        self.invalidated += 1


class StreamSink(FakeSink):
    """A sink the serving loop can run against."""

    def submit(self, *_args: Any) -> None:
        pass

    def submit_dlq(self, **_kwargs: Any) -> None:
        pass
