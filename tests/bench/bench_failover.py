"""Benchmark: a leader broker's SIGKILL → the next committed record, on a three-node cluster.

Starts its own three-node KRaft cluster (``localkafka.cluster_up``; PLAINTEXT,
the failover path does not depend on the listener's security) and reports
its cold start (format + start + every node seeing all three brokers). Each
run then starts a worker process (``python -m bridge run``) with fresh topics
and a bridge id chosen so that ONE broker leads the state topic's partition
and coordinates shard 0's transactions, waits until it streams, SIGKILLs
that broker and measures the time until a ``read_committed`` consumer sees
the next record on the event topics; then restarts the broker and waits for
its replicas to catch up. Run by hand::

    .venv/bin/python -m tests.bench.bench_failover [--runs 5]

The cluster's broker session timeout (``localkafka.CLUSTER_BROKER_SESSION_TIMEOUT_MS``,
4 s) bounds how soon the controller moves the dead broker's leaders.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from tests.cluster.conftest import EventTail, pick_bridge_id, prepare_topics, topics_of, txn_coordinator
from tests.conftest import CLUSTER_NODES, SecureCluster, localkafka
from tests.fleet.conftest import FLEET_OVERRIDES, SIM_OPTIONS, Fleet
from tests.worker.conftest import SimProcess, bridge_settings, start_sim_process

DEFAULT_RUNS = 5
AGENTS = 40
EVENTS_PER_SEC = 40
MAX_GAP_S = 60.0
STREAM_BEFORE_KILL_S = 2.0


async def _one_run(cluster: SecureCluster, sim: SimProcess, tmp: Path) -> tuple[float, int, bool]:
    settings = bridge_settings(
        cluster,  # type: ignore[arg-type]
        sim,
        **{**FLEET_OVERRIDES, "topic_partitions": 1, "shard_capacity": AGENTS},
    )
    victim = prepare_topics(cluster, settings)
    settings = pick_bridge_id(cluster, settings, victim)
    coordinator = txn_coordinator(cluster, f"{settings.id}-shard-0") == victim
    tmp.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(settings, tmp)
    tail = EventTail(cluster, [settings.topic_presence, settings.topic_routing_status])
    try:
        fleet.start()
        await fleet.wait_settled(1, timeout_s=90)
        await asyncio.sleep(STREAM_BEFORE_KILL_S)
        killed_at = time.monotonic()
        cluster.kill(victim)
        gap = await asyncio.to_thread(tail.first_after, killed_at, MAX_GAP_S)
        if gap is None:
            raise RuntimeError(f"nothing committed within {MAX_GAP_S} s of the kill")
        await asyncio.to_thread(cluster.start, victim)
        await asyncio.to_thread(cluster.wait_in_sync, topics_of(settings))
        return gap, victim, coordinator
    finally:
        tail.close()
        fleet.stop_all()


async def main(runs: int) -> int:
    localkafka.fetch(quiet=True)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp) / "cluster"
        t0 = time.monotonic()
        nodes = localkafka.cluster_up(root, CLUSTER_NODES, quiet=True)
        cold = time.monotonic() - t0
        print(f"cluster cold start ({CLUSTER_NODES} nodes): {cold:.2f} s")
        proc, base_url = start_sim_process(agents=AGENTS, events_per_sec=EVENTS_PER_SEC, **SIM_OPTIONS)
        admin = AdminClient({"bootstrap.servers": nodes.bootstrap()})
        cluster = SecureCluster(root, nodes, admin, tls=None, password="")
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
                sim = SimProcess(proc, base_url, http)
                gaps = []
                for run in range(runs):
                    gap, victim, coordinator = await _one_run(cluster, sim, Path(tmp) / f"run-{run}")
                    role = "leader + txn coordinator" if coordinator else "leader"
                    print(
                        f"run {run + 1}: SIGKILL node {victim} ({role}) → next committed record {gap:.2f} s"
                    )
                    gaps.append(gap)
            median, worst = statistics.median(gaps), max(gaps)
            print(f"SIGKILL → next committed record: median {median:.2f} s, worst {worst:.2f} s")
        finally:
            proc.terminate()
            proc.wait(10)
            localkafka.cluster_down(root, timeout_s=5)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    raise SystemExit(asyncio.run(main(parser.parse_args().runs)))
