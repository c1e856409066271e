"""Time from a ``no_longer_subscribed`` system message to the shard receiving events again.

One shard of 200 agents runs against the in-process simulator over real HTTP
and WebSocket (no Kafka: a recording sink stands in, so the figure is the
Genesys side alone). For each run the simulator sends ``no_longer_subscribed``
to the shard's channel (whose subscriptions it then drops while heartbeats go
on) and one agent's routing status changes every 10 ms; the time measured is
from the fault to the first *stream* change the shard accepts after it (so
the resolution is about 10 ms). The shard moves to a new channel,
make-before-break, and reconciles. (A message that follows another within
``backoff_reset_s`` is paced by the reconnect backoff; the runs here are
spaced so that each is a lone message.)

Run: ``.venv/bin/python -m tests.bench.bench_resubscribe [--runs 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from typing import Any

import httpx

from bridge.events import Accepted, ShardState
from bridge.genesys.socket import NotificationSocket
from bridge.model import Origin
from bridge.settings import GenesysClient, Settings
from bridge.shard import Shard
from bridge.sim.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SimConfig
from bridge.sim.server import run_simulator
from bridge.worker import genesys_rest

AGENTS = 200
CHANGE_EVERY_S = 0.01
RUN_TIMEOUT_S = 30.0
PAUSE_S = 0.3
STATUSES = ("IDLE", "INTERACTING")


class RecordingSink:
    """What the shard hands to Kafka, with the monotonic time of each stream change."""

    def __init__(self) -> None:
        self.stream_times: list[float] = []
        self.failed: asyncio.Future[Any] | None = None
        self.healthy = True
        self.pending = 0
        self.error = None

    async def start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()

    def submit(self, accepted: Accepted, _channel_id: str | None) -> None:
        if accepted.change.origin is Origin.STREAM:
            self.stream_times.append(time.monotonic())

    def submit_dlq(self, **_kwargs: Any) -> None:
        pass

    def submit_tombstone(self, _user_id: str) -> None:
        pass

    async def drain_to(self, _items: int) -> None:
        pass

    async def close(self) -> None:
        pass


async def _measure(runs: int) -> list[float]:
    config = SimConfig(port=0, agents=AGENTS, seed=3, generator_paused=True, heartbeat_s=30.0)
    async with run_simulator(config) as handle:
        users = list(handle.simulator.org.users)
        settings = Settings.model_construct(
            **{
                **Settings().model_dump(),
                "genesys_api_url": handle.base_url,
                "genesys_login_url": handle.base_url,
                # Each run is a lone message: no pacing from the run before.
                "backoff_reset_s": PAUSE_S / 2,
            }
        )
        client = GenesysClient(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)
        rest = genesys_rest(settings, client)
        sink = RecordingSink()
        shard = Shard(
            0,
            users,
            rest=rest,
            sink=sink,
            state=ShardState(),
            settings=settings,
            socket_factory=NotificationSocket,
        )
        task = asyncio.create_task(shard.run())
        admin = httpx.AsyncClient(base_url=handle.base_url)
        flips = itertools.cycle(STATUSES)
        try:
            while not shard.ready:
                await asyncio.sleep(0.01)
            out: list[float] = []
            for _ in range(runs):
                await asyncio.sleep(PAUSE_S)  # the previous run's reconciliation settles
                channel = shard.channel_id
                sent = time.monotonic()
                await admin.post(
                    "/sim/faults/system", json={"type": "no_longer_subscribed", "channelId": channel}
                )
                deadline = sent + RUN_TIMEOUT_S
                while not any(t > sent for t in sink.stream_times) or shard.channel_id == channel:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no event arrived after no_longer_subscribed")
                    await admin.put(f"/sim/users/{users[0]}/routing-status", json={"status": next(flips)})
                    await asyncio.sleep(CHANGE_EVERY_S)
                out.append(next(t for t in sink.stream_times if t > sent) - sent)
            return out
        finally:
            await shard.stop()
            await task
            await admin.aclose()
            await rest.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times = asyncio.run(_measure(args.runs))
    print(
        f"no_longer_subscribed -> events again, {len(times)} runs: "
        f"median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
        f"({', '.join(f'{t * 1000:.0f}' for t in times)} ms)"
    )


if __name__ == "__main__":
    main()
