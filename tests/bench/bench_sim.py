"""Benchmark of the simulator alone: change frames per second delivered to sockets.

20,000 agents, 20 channels x 1,000 combined topics (every agent followed
once), read by plain ``websockets`` clients in a separate process; the
generator runs inside the simulator process. Run by hand::

    .venv/bin/python -m tests.bench.bench_sim [--seconds 10] [--rate 40000]

It prints the frames/s the reader process received and the frames/s the
simulator reports as delivered. Target: ≥ 20,000 frames/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import httpx
from websockets.asyncio.client import connect

from bridge.sim.process import SimProcess

AGENTS = 20_000
CHANNELS = 20
TOPICS_PER_CHANNEL = 1_000
DEFAULT_SECONDS = 10.0
DEFAULT_RATE = 40_000.0
WARMUP_S = 2.0
CHANGE_PREFIX = b'{"topicName":"v2.users.'


async def _read(uris: list[str], seconds: float, report: Connection) -> None:
    counts = [0] * len(uris)
    connected = asyncio.Semaphore(0)

    async def reader(i: int, uri: str) -> None:
        async with connect(uri, max_queue=None, ping_interval=None, close_timeout=1) as ws:
            connected.release()
            while True:
                msg = await ws.recv(decode=False)
                if msg.startswith(CHANGE_PREFIX):
                    counts[i] += 1

    tasks = [asyncio.create_task(reader(i, u)) for i, u in enumerate(uris)]
    for _ in uris:
        await connected.acquire()
    report.send("connected")
    await asyncio.to_thread(report.recv)  # the generator has started
    await asyncio.sleep(WARMUP_S)
    start, t0 = sum(counts), time.monotonic()
    await asyncio.sleep(seconds)
    end, t1 = sum(counts), time.monotonic()
    report.send((end - start) / (t1 - t0))
    await asyncio.to_thread(report.recv)  # the simulator's counters have been read
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _reader_process(uris: list[str], seconds: float, report: Connection) -> None:
    asyncio.run(_read(uris, seconds, report))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="generator changes per second")
    args = parser.parse_args()
    sim_args = ["--agents", str(AGENTS), "--seed", "1", "--paused", "--rate-limit-per-min", "100000"]
    with SimProcess(sim_args) as sim, httpx.Client(base_url=sim.base_url, timeout=30) as http:
        token = http.post(
            "/oauth/token", auth=("sim-client", "sim-secret"), data={"grant_type": "client_credentials"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        users = []
        page = http.get("/api/v2/users", params={"pageSize": 500}, headers=auth).json()
        users += [u["id"] for u in page["entities"]]
        while "nextUri" in page:
            page = http.get(page["nextUri"], headers=auth).json()
            users += [u["id"] for u in page["entities"]]
        assert len(users) == AGENTS
        uris = []
        for c in range(CHANNELS):
            ch = http.post("/api/v2/notifications/channels", headers=auth).json()
            chunk = users[c * TOPICS_PER_CHANNEL : (c + 1) * TOPICS_PER_CHANNEL]
            topics = [{"id": f"v2.users.{u}?presence&routingStatus"} for u in chunk]
            r = http.put(
                f"/api/v2/notifications/channels/{ch['id']}/subscriptions", json=topics, headers=auth
            )
            r.raise_for_status()
            uris.append(ch["connectUri"])
        ours, theirs = mp.Pipe()
        reader = mp.Process(target=_reader_process, args=(uris, args.seconds, theirs))
        reader.start()
        assert ours.recv() == "connected"
        deadline = time.monotonic() + 10
        while sum(c["connected"] for c in http.get("/sim/stats").json()["channels"]) < CHANNELS:
            assert time.monotonic() < deadline, "readers did not connect"
            time.sleep(0.05)
        http.post("/sim/generator", json={"paused": False, "eventsPerSec": args.rate})
        ours.send("go")
        time.sleep(WARMUP_S)
        s0, t0 = http.get("/sim/stats").json(), time.monotonic()
        received = ours.recv()
        s1, t1 = http.get("/sim/stats").json(), time.monotonic()
        ours.send("stop")
        http.post("/sim/generator", json={"paused": True})
        reader.join(10)
        delivered = (s1["framesDelivered"] - s0["framesDelivered"]) / (t1 - t0)
        emitted = (s1["changesEmitted"] - s0["changesEmitted"]) / (t1 - t0)
        print(
            f"agents={AGENTS} channels={CHANNELS} topics/channel={TOPICS_PER_CHANNEL} rate={args.rate:.0f}/s"
        )
        print(f"simulator: {emitted:,.0f} changes/s emitted, {delivered:,.0f} frames/s delivered to sockets")
        print(f"readers:   {received:,.0f} change frames/s received")
        print(
            f"frames lost (no socket, stalled, slow reader cut): {s1['framesLost']:,}; "
            f"sockets at end: {len(s1['sockets'])}"
        )


if __name__ == "__main__":
    main()
