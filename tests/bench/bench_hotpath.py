"""CPU cost of one change inside a worker, without the socket or the broker.

The flood benchmark (``bench_bridge``) shows that one worker is bound by one
Python thread: everything a change costs between the socket and librdkafka
runs under one GIL. This benchmark isolates that part so a change to the hot
path can be judged in seconds, repeatably, on a noisy machine:

- the frames are the simulator's notification JSON (presence and routing
  status, with correlation ids), as text, for :data:`AGENTS` agents with
  strictly increasing timestamps, so every change is accepted;
- each frame goes through the real ``Serving.handle`` of a ``Shard`` (parse, order, enrich,
  ``ShardSink.submit`` with both encodings), and the real sink thread takes
  the records into transactions of a producer that does nothing (librdkafka's
  own cost is measured by ``bench_bridge``'s bare-producer baseline);
- the process's garbage collector is tuned as ``presence-bridge run`` tunes
  the worker's (:func:`bridge.memory.tune_gc`, after the inputs are built);
- the result is microseconds per change (best of :data:`ROUNDS` rounds, so a
  neighbour's burst does not count), measured end to end until the sink has
  acknowledged everything.

Run::

    .venv/bin/python -m tests.bench.bench_hotpath [--changes 200000] [--profile]

``--profile`` prints the top of a cProfile of one round instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bridge import memory
from bridge.events import ShardState
from bridge.settings import Settings
from bridge.shard import Shard
from bridge.sink import ShardSink
from tests.fakes import NullProducer
from tests.shard_fakes import FakeSocket, NullRest

AGENTS = 5_000
CHANGES = 200_000
ROUNDS = 3
#: Yield to the event loop every so many frames, as a socket read would.
FRAMES_PER_READ = 64
PRESENCES = ("AVAILABLE", "On Queue", "Busy", "Away", "Break", "Meal")
ROUTING = ("IDLE", "INTERACTING", "NOT_RESPONDING", "OFF_QUEUE", "COMMUNICATING")


def frames(users: list[str], count: int) -> list[str]:
    """``count`` notification frames as the simulator sends them, every one a real change."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    definitions = {p: str(uuid.uuid5(uuid.NAMESPACE_OID, p)) for p in PRESENCES}
    out = []
    for i in range(count):
        user = users[i % len(users)]
        at = (start + timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds")[:23] + "Z"
        correlation = f"{i:032x}"
        if i % 2:
            presence = PRESENCES[i % len(PRESENCES)]
            doc: dict[str, Any] = {
                "topicName": f"v2.users.{user}.presence",
                "version": "2",
                "eventBody": {
                    "source": "PURECLOUD",
                    "presenceDefinition": {"id": definitions[presence], "systemPresence": presence},
                    "primary": True,
                    "message": "",
                    "modifiedDate": at,
                },
                "metadata": {"CorrelationId": correlation},
            }
        else:
            doc = {
                "topicName": f"v2.users.{user}.routingStatus",
                "version": "2",
                "eventBody": {"routingStatus": {"status": ROUTING[i % len(ROUTING)], "startTime": at}},
                "metadata": {"CorrelationId": correlation},
            }
        out.append(orjson.dumps(doc).decode())
    return out


async def one_round(users: list[str], texts: list[str], labels: dict[str, str]) -> float:
    """CPU seconds (every thread of the process) for ``texts`` to go through a fresh shard and be committed.

    CPU time rather than wall time: a neighbour on the shared machine then
    delays the round without changing its figure much.
    """
    settings = Settings()
    sink = ShardSink(settings, 0, producer_factory=NullProducer)
    await sink.start()
    shard = Shard(
        0,
        users,
        rest=NullRest(),
        sink=sink,
        state=ShardState(labels=labels),
        settings=settings,
        socket_factory=FakeSocket,
    )
    handle = shard._serving.handle
    channel = "bench-channel"
    t0 = time.process_time()
    for start in range(0, len(texts), FRAMES_PER_READ):
        for text in texts[start : start + FRAMES_PER_READ]:
            handle(text, channel)
        await asyncio.sleep(0)
    await sink.flush()
    elapsed = time.process_time() - t0
    await sink.close()
    return elapsed


def _inputs(changes: int) -> tuple[list[str], list[str], dict[str, str]]:
    users = [str(uuid.uuid4()) for _ in range(AGENTS)]
    labels = {str(uuid.uuid5(uuid.NAMESPACE_OID, p)): p.title() for p in PRESENCES}
    return users, frames(users, changes), labels


def measure(changes: int = CHANGES, rounds: int = ROUNDS) -> float:
    """Microseconds of CPU per change, best of ``rounds`` rounds of ``changes`` changes."""
    users, texts, labels = _inputs(changes)
    memory.tune_gc()
    best = min(asyncio.run(one_round(users, texts, labels)) for _ in range(rounds))
    return best / changes * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=CHANGES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one round")
    args = parser.parse_args()
    if args.profile:
        users, texts, labels = _inputs(args.changes)
        memory.tune_gc()
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(one_round(users, texts, labels))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    us = measure(args.changes, args.rounds)
    print(
        f"hot path: {us:.1f} µs of CPU per change "
        f"(best of {args.rounds} rounds of {args.changes:,} changes; {1e6 / us:,.0f} changes/s on one core)"
    )


if __name__ == "__main__":
    main()
