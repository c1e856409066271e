"""The bridge's benchmarks, printed as ONE table (``make bench``).

Everything is measured in the same run on the same machine, side by side, so
the ratios hold even when the absolute figures are noisy (other processes
share the CPUs):

- throughput, simulator → one worker → Kafka: a ``presence-bridge run``
  process holding :data:`AGENTS` agents on :data:`SHARDS` shards (one
  channel of 1,000 combined topics each), the simulator's generator pushed
  far above what the worker can take; changes/s = committed event records/s
  from the worker's ``bridge_records_produced_total`` over
  :data:`MEASURE_S` seconds after :data:`WARMUP_S` seconds of warm-up;
- baseline 1: a bare ``websockets`` client (separate process) reading the
  same simulator through the same number of channels and topics;
- baseline 2: a bare confluent-kafka producer (idempotent, acks=all, lz4, no
  transactions) writing records of the bridge's sizes — an event record and a
  state record per change — as fast as librdkafka takes them;
- delivery latency p50/p99, frame received → Kafka transaction committed,
  from the worker's ``bridge_event_delivery_seconds`` histogram (interpolated
  within buckets) at a steady :data:`LATENCY_RATE` changes/s;
- resident memory (VmRSS) of that worker, holding :data:`AGENTS` agents, at
  the end of the steady 1,000 changes/s phase (measured before the
  throughput flood, whose backlog would inflate it);
- the fleet's takeover time, from ``tests/bench/bench_takeover.py``'s
  ``measure_takeover(runs)`` when that file exists;
- the CPU one change costs inside the worker between the socket and
  librdkafka (``tests/bench/bench_hotpath.py``), which bounds the throughput
  row: the worker's Python runs on one core;
- where the CPUs went during the throughput run: the CPU time of the
  simulator, the broker and the worker processes (``/proc/<pid>/stat``) and
  of everything else on the machine (``/proc/stat``), as shares of all CPUs.

Every row prints, beside its figure, the same-run baselines it should be
read against (the bare websockets reader and the bare producer are this
machine's calibration), so two machines compare by ratio.

Run::

    .venv/bin/python -m tests.bench.bench_bridge [--measure-s 10] [--bootstrap host:port]

Without ``--bootstrap`` it starts its own Kafka broker (the same jars as the
tests) in a temporary folder and stops it at the end.
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bridge.demo_view import parse_metrics
from bridge.model import AgentState, Change, Kind, Origin, PresenceValue, VersionedPresence, event_id
from bridge.ports import free_port
from bridge.records import encode_event, encode_state
from bridge.sim.process import SimProcess
from tests.bench import bench_hotpath
from tests.bench.bench_sim import _reader_process
from tests.conftest import localkafka

AGENTS = 5_000
TOPICS_PER_CHANNEL = 1_000
SHARDS = AGENTS // TOPICS_PER_CHANNEL
#: Generator rate for the throughput runs: well above what one process can take.
FLOOD_RATE = 40_000.0
LATENCY_RATE = 1_000.0
WARMUP_S = 3.0
MEASURE_S = 10.0
PRODUCER_MEASURE_S = 5.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 60.0
TAKEOVER_RUNS = 3
BENCH_CLIENT = ("bench-client", "bench-secret")
SIM_CLIENT = ("sim-client", "sim-secret")
EVENT_TOPICS = ("presence", "routing")
TARGET_CHANGES_PER_S = 10_000
TARGET_RATIO = 0.40
TARGET_P99_S = 0.100
TARGET_RSS_MB = 100


# ----------------------------------------------------------------------------- broker


@contextmanager
def kafka_broker(bootstrap: str | None) -> Iterator[tuple[str, int | None]]:
    """The given broker (its pid unknown), or a fresh one from the local jars in a temp folder."""
    if bootstrap:
        yield bootstrap, None
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = localkafka.start(Path(tmp), quiet=True)
        try:
            yield str(broker.bootstrap), broker.pid
        finally:
            localkafka.stop(Path(tmp))


# ----------------------------------------------------------------------------- CPU shares

#: Fields 14 and 15 of /proc/<pid>/stat (1-based): user and system time, in clock ticks.
_STAT_UTIME = 13
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (all its threads); nan when unknown."""
    if pid is None:
        return float("nan")
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime = fields[_STAT_UTIME - 2], fields[_STAT_UTIME - 1]
    return (int(utime) + int(stime)) / _TICKS_PER_S


def machine_cpu_seconds() -> float:
    """CPU seconds all CPUs spent busy so far (``/proc/stat``: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICKS_PER_S


def cpu_snapshot(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process, and of the whole machine under ``"machine"``."""
    return {**{name: cpu_seconds(pid) for name, pid in pids.items()}, "machine": machine_cpu_seconds()}


def cpu_shares(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Each process's CPU time between two snapshots as a share of all CPUs, plus ``"others"``."""
    capacity = wall_s * (os.cpu_count() or 1)
    shares = {name: (after[name] - before[name]) / capacity for name in before if name != "machine"}
    machine = (after["machine"] - before["machine"]) / capacity
    shares["others"] = max(0.0, machine - sum(v for v in shares.values() if not math.isnan(v)))
    return shares


# ----------------------------------------------------------------------------- simulator helpers


def _token(http: httpx.Client, client: tuple[str, str]) -> dict[str, str]:
    token = http.post("/oauth/token", auth=client, data={"grant_type": "client_credentials"}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _users(http: httpx.Client, auth: dict[str, str]) -> list[str]:
    users: list[str] = []
    page = http.get("/api/v2/users", params={"pageSize": 500}, headers=auth).json()
    users += [u["id"] for u in page["entities"]]
    while "nextUri" in page:
        page = http.get(page["nextUri"], headers=auth).json()
        users += [u["id"] for u in page["entities"]]
    return users


def _generator(http: httpx.Client, *, paused: bool, rate: float | None = None) -> None:
    body: dict[str, object] = {"paused": paused}
    if rate is not None:
        body["eventsPerSec"] = rate
    http.post("/sim/generator", json=body).raise_for_status()


# ----------------------------------------------------------------------------- baseline 1: websockets


def bare_websockets(http: httpx.Client, seconds: float) -> float:
    """Change frames/s a bare websockets client reads through SHARDS channels of 1,000 topics."""
    auth = _token(http, BENCH_CLIENT)
    users = _users(http, auth)
    uris, channel_ids = [], []
    for c in range(SHARDS):
        channel = http.post("/api/v2/notifications/channels", headers=auth).json()
        chunk = users[c * TOPICS_PER_CHANNEL : (c + 1) * TOPICS_PER_CHANNEL]
        topics = [{"id": f"v2.users.{u}?presence&routingStatus"} for u in chunk]
        http.put(
            f"/api/v2/notifications/channels/{channel['id']}/subscriptions", json=topics, headers=auth
        ).raise_for_status()
        uris.append(channel["connectUri"])
        channel_ids.append(channel["id"])
    ours, theirs = mp.Pipe()
    # The same reader as the simulator's own benchmark, in its own process.
    reader = mp.Process(target=_reader_process, args=(uris, seconds, theirs))
    reader.start()
    assert ours.recv() == "connected"
    _generator(http, paused=False, rate=FLOOD_RATE)
    ours.send("go")
    rate = float(ours.recv())
    _generator(http, paused=True)
    ours.send("done")
    reader.join(10)
    if reader.is_alive():
        reader.kill()
    for channel_id in channel_ids:  # give the channel budget back
        http.delete(f"/api/v2/notifications/channels/{channel_id}/subscriptions", headers=auth)
    return rate


# ----------------------------------------------------------------------------- baseline 2: producer


def record_sizes() -> tuple[bytes, bytes]:
    """An event and a state value the size the bridge writes (a presence change with a label)."""
    now = datetime.now(UTC)
    value = PresenceValue(
        system_presence="ON_QUEUE",
        presence_definition_id=str(uuid.uuid4()),
        message="",
        source="PURECLOUD",
        primary=True,
        presence_label="On Queue",
    )
    user = str(uuid.uuid4())
    eid = event_id(user, Kind.PRESENCE, now, value)
    change = Change(user, Kind.PRESENCE, now, value, now, Origin.STREAM, event_id=eid)
    state = AgentState(user, presence=VersionedPresence(value, now, eid))
    return encode_event(change, 3, str(uuid.uuid4())), encode_state(state, 3, now)


def bare_producer(bootstrap: str, seconds: float) -> float:
    """Records/s a plain (non-transactional) producer writes with the bridge's sizes and settings."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    event, state = record_sizes()
    keys = [str(uuid.uuid4()).encode() for _ in range(AGENTS)]
    delivered = 0

    def ack(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    headers = [("schema", b"genesys.presence.v1"), ("event-type", b"presence")]
    end = time.monotonic() + WARMUP_S / 3 + seconds
    measure_from = time.monotonic() + WARMUP_S / 3
    start_count = None
    i = 0
    t0 = 0.0
    while time.monotonic() < end:
        key = keys[i % AGENTS]
        i += 1
        for value in (event, state):
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=ack)
                    break
                except BufferError:
                    producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
            if start_count is None and time.monotonic() >= measure_from:
                start_count, t0 = delivered, time.monotonic()
    producer.flush(30)
    t1 = time.monotonic()
    assert start_count is not None
    return (delivered - start_count) / (t1 - t0)


# ----------------------------------------------------------------------------- the worker


class WorkerProcess:
    """``python -m bridge run`` against the simulator and the broker, its metrics on a free port."""

    def __init__(
        self,
        sim_url: str,
        bootstrap: str,
        log_path: Path,
        argv: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.port = free_port()
        self.topics = {name: f"bench-{name}-{tag}" for name in (*EVENT_TOPICS, "state", "dlq", "map")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_ID": f"bench-{tag}",
                "BRIDGE_GENESYS_API_URL": sim_url,
                "BRIDGE_GENESYS_LOGIN_URL": sim_url,
                "BRIDGE_GENESYS_CLIENT_ID": SIM_CLIENT[0],
                "BRIDGE_GENESYS_CLIENT_SECRET": SIM_CLIENT[1],
                "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "BRIDGE_METRICS_HOST": "127.0.0.1",
                "BRIDGE_METRICS_PORT": str(self.port),
                "BRIDGE_SHARD_CAPACITY": str(TOPICS_PER_CHANNEL),
                "BRIDGE_REST_BUDGET_PER_MIN": "6000",
                "BRIDGE_LOG_FORMAT": "text",
                "BRIDGE_LOG_LEVEL": "WARNING",
                "BRIDGE_TOPIC_PRESENCE": self.topics["presence"],
                "BRIDGE_TOPIC_ROUTING_STATUS": self.topics["routing"],
                "BRIDGE_TOPIC_AGENT_STATE": self.topics["state"],
                "BRIDGE_TOPIC_DLQ": self.topics["dlq"],
                "BRIDGE_TOPIC_SHARD_MAP": self.topics["map"],
            }
        )
        env.update(extra_env or {})
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "bridge", "run"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def metrics_text(self) -> str:
        return self.http.get("/metrics").text

    def changes_committed(self) -> float:
        """Event records committed (one per change)."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith("bridge_records_produced_total{") and any(
                f'topic="{self.topics[t]}"' in line for t in EVENT_TOPICS
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def delivery_buckets(self) -> dict[float, float]:
        return parse_metrics(self.metrics_text()).delivery_buckets

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready within {READY_TIMEOUT_S} s; see {self.log.name}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()
        self.log.close()


def wait_drained(worker: WorkerProcess, sim: httpx.Client) -> None:
    """Until the worker has committed what the simulator emitted and stays quiet for a second."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last = -1.0
    while time.monotonic() < deadline:
        now = worker.changes_committed()
        if now == last:
            return
        last = now
        time.sleep(1.0)


def quantile(delta: dict[float, float], q: float) -> float:
    """Quantile from cumulative histogram buckets, linearly interpolated inside the bucket."""
    ordered = sorted(delta.items())
    total = ordered[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            span = count - lower_count
            share = (rank - lower_count) / span if span else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


# ----------------------------------------------------------------------------- takeover


def takeover() -> str:
    path = Path(__file__).with_name("bench_takeover.py")
    if not path.exists():
        return "n/a (fleet not landed)"
    module = importlib.import_module("tests.bench.bench_takeover")
    result = module.measure_takeover(TAKEOVER_RUNS)
    if isinstance(result, int | float):
        return f"{result:.1f} s"
    if isinstance(result, dict) and "first_record_s" in result:
        first, reconciled = result["first_record_s"], result.get("reconciled_s", {})
        return (
            f"first record after a kill: median {first['median']:.1f} s, worst {first['worst']:.1f} s; "
            f"reconciled: median {reconciled.get('median', float('nan')):.1f} s "
            f"({result.get('runs')} runs, {result.get('protocol')} group protocol, "
            f"session {result.get('session_timeout_ms', 0) / 1000:.0f} s)"
        )
    if isinstance(result, list | tuple) and result and all(isinstance(x, int | float) for x in result):
        return f"median {statistics.median(result):.1f} s, max {max(result):.1f} s ({len(result)} runs)"
    return str(result)


# ----------------------------------------------------------------------------- main


def _ok(passed: bool) -> str:
    return "yes" if passed else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--measure-s", type=float, default=MEASURE_S)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--no-takeover", action="store_true", help="skip the fleet takeover measurement")
    args = parser.parse_args()
    seconds = args.measure_s
    logs = Path(tempfile.mkdtemp(prefix="presence-bridge-bench-"))
    clients = f"{SIM_CLIENT[0]}:{SIM_CLIENT[1]},{BENCH_CLIENT[0]}:{BENCH_CLIENT[1]}"
    sim_args = [
        "--agents", str(AGENTS), "--seed", "1", "--paused",
        "--rate-limit-per-min", "100000", "--clients", clients,
    ]  # fmt: skip
    print(f"benchmarks: {os.cpu_count()} CPUs, {AGENTS:,} agents on {SHARDS} channels; logs in {logs}")
    with kafka_broker(args.bootstrap) as (bootstrap, broker_pid):
        print(f"  kafka {bootstrap}: bare producer …", flush=True)
        producer_rate = bare_producer(bootstrap, PRODUCER_MEASURE_S)
        with SimProcess(sim_args) as sim, httpx.Client(base_url=sim.base_url, timeout=30) as http:
            print("  bare websockets client …", flush=True)
            ws_rate = bare_websockets(http, seconds)
            print("  one worker: starting …", flush=True)
            worker = WorkerProcess(sim.base_url, bootstrap, logs / "worker.log")
            try:
                worker.wait_ready()
                print(f"  one worker: latency at {LATENCY_RATE:,.0f} changes/s …", flush=True)
                _generator(http, paused=False, rate=LATENCY_RATE)
                time.sleep(WARMUP_S)
                b0 = worker.delivery_buckets()
                time.sleep(max(seconds, 10.0))
                b1 = worker.delivery_buckets()
                rss = worker.rss_mb()
                _generator(http, paused=True)
                delta = {b: b1[b] - b0.get(b, 0.0) for b in b1}
                p50, p99 = quantile(delta, 0.50), quantile(delta, 0.99)
                samples = int(max(delta.values()) if delta else 0)
                wait_drained(worker, http)
                print("  one worker: throughput …", flush=True)
                _generator(http, paused=False, rate=FLOOD_RATE)
                time.sleep(WARMUP_S)
                pids = {"simulator": sim.proc.pid, "broker": broker_pid, "worker": worker.proc.pid}
                c0, t0 = worker.changes_committed(), time.monotonic()
                s0 = http.get("/sim/stats").json()
                cpu0 = cpu_snapshot(pids)
                time.sleep(seconds)
                cpu1 = cpu_snapshot(pids)
                c1, t1 = worker.changes_committed(), time.monotonic()
                s1 = http.get("/sim/stats").json()
                shares = cpu_shares(cpu0, cpu1, t1 - t0)
                _generator(http, paused=True)
                worker_rate = (c1 - c0) / (t1 - t0)
                offered = (s1["framesDelivered"] - s0["framesDelivered"]) / (t1 - t0)
            finally:
                worker.stop()
    take = "skipped" if args.no_takeover else takeover()
    print("  hot path …", flush=True)
    hot_us = bench_hotpath.measure()
    ratio = worker_rate / ws_rate if ws_rate else float("nan")
    producer_changes = producer_rate / 2
    hot_rate = 1e6 / hot_us
    ws_text = f"bare websockets {ws_rate:,.0f}/s"
    share_text = ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if not math.isnan(share))
    rows = [
        (
            "throughput: simulator → one worker → Kafka (txn on)",
            f"{worker_rate:,.0f} changes/s",
            f"{ratio:.0%} of {ws_text}; {worker_rate / producer_changes:.0%} of the bare producer",
            f"≥ {TARGET_CHANGES_PER_S:,}",
            _ok(worker_rate >= TARGET_CHANGES_PER_S),
        ),
        (
            "worker / bare websockets",
            f"{ratio:.0%}",
            f"{worker_rate:,.0f} / {ws_rate:,.0f} changes/s",
            f"≥ {TARGET_RATIO:.0%}",
            _ok(ratio >= TARGET_RATIO),
        ),
        (
            "CPU during the throughput run (share of all CPUs)",
            share_text,
            f"{os.cpu_count()} CPUs; simulator offered {offered:,.0f} frames/s",
            "",
            "",
        ),
        (
            "calibration: bare websockets client, same simulator",
            f"{ws_rate:,.0f} changes/s",
            f"{SHARDS} sockets of {TOPICS_PER_CHANNEL:,} topics",
            "",
            "",
        ),
        (
            "calibration: bare confluent-kafka producer, same record sizes",
            f"{producer_rate:,.0f} records/s = {producer_changes:,.0f} changes/s",
            f"{producer_changes / ws_rate:.1f} times the {ws_text}" if ws_rate else "",
            "",
            "",
        ),
        (
            f"delivery latency p50 / p99 at {LATENCY_RATE:,.0f} changes/s",
            f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms ({samples:,} changes)",
            f"{LATENCY_RATE / ws_rate:.1%} of {ws_text}" if ws_rate else "",
            f"p99 ≤ {TARGET_P99_S * 1000:.0f} ms",
            _ok(p99 <= TARGET_P99_S),
        ),
        (
            f"resident memory, one worker holding {AGENTS:,} agents",
            f"{rss:.0f} MB",
            f"after {LATENCY_RATE:,.0f} changes/s",
            f"≤ {TARGET_RSS_MB} MB",
            _ok(rss <= TARGET_RSS_MB),
        ),
        ("fleet takeover time", take, "", "", ""),
        (
            "CPU per change inside the worker (parse → records, null producer)",
            f"{hot_us:.1f} µs = {hot_rate:,.0f} changes/s per core",
            f"{hot_rate / ws_rate:.0%} of {ws_text}; {hot_rate / producer_changes:.0%} of the bare producer"
            if ws_rate
            else "",
            "",
            "",
        ),
    ]
    print()
    print(f"presence-bridge benchmarks — {os.cpu_count()} CPUs, one run, side by side "
          f"(simulator offered {offered:,.0f} frames/s during the throughput run)")  # fmt: skip
    print()
    print("| measurement | result | same run: baselines, calibration | target | met |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
