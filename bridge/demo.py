"""``presence-bridge demo``: a simulated org streaming into Kafka through a small fleet, audited.

What it does, in order:

1. checks that the Kafka broker (``--bootstrap``) answers;
2. starts the Genesys Cloud simulator (``python -m bridge sim``) with
   ``--agents`` agents, its generator paused;
3. starts ``--workers`` worker processes (``python -m bridge run``), each
   configured through ``BRIDGE_*`` variables (the simulator's URL and test
   credentials, the broker, a free metrics port, a shard capacity small
   enough that several shards exist); their logs go to files in the demo's
   folder (``--dir``, a fresh temporary folder by default), not the terminal;
4. once every shard is streaming, starts the generator and shows a live view
   read from the simulator's ``/sim/stats`` and ``/sim/truth`` and the
   workers' ``/metrics``: changes per second, records produced, agents per
   presence and routing status, shards per worker, reconnects, delivery p99;
   redrawn in place with plain ANSI escapes on a terminal, one status line
   every few seconds otherwise;
5. half-way (``--seconds``/2, or :data:`DEFAULT_FAULT_AT_S` when it runs until
   Ctrl-C) drops one shard's socket and announces maintenance on another;
6. on Ctrl-C or after ``--seconds``: pauses the generator, lets the workers
   settle (every channel connected, no more records arriving), runs
   ``presence-bridge audit`` and prints its verdict. The exit code is 0 only
   when the audit passes.

Every child is stopped whatever happens: SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT_S`. Children run in their own sessions, so a Ctrl-C at the
terminal reaches only the demo, which then stops them in order.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_FAULT_AT_S",
    "DEFAULT_WORKERS",
    "Demo",
    "DemoOptions",
    "Snapshot",
    "WorkerStats",
    "parse_metrics",
    "register",
]

DEFAULT_AGENTS = 500
DEFAULT_WORKERS = 2
#: The generator's overall change rate, as a share of the agents per second.
DEFAULT_RATE_PER_AGENT = 0.2
MIN_RATE = 20.0
#: Shards the demo aims for (capacity = ceil(agents / this)), so the fleet has work to split.
DEFAULT_TARGET_SHARDS = 4
#: When the demo runs until Ctrl-C, the faults come this long after streaming starts.
DEFAULT_FAULT_AT_S = 30.0
#: Maintenance follows the socket drop after this long (a different shard).
MAINTENANCE_AFTER_DROP_S = 3.0
#: The simulator's heartbeat, and the workers' matching watchdog interval.
DEMO_HEARTBEAT_S = 5.0
#: How long the simulator lets a socket live after announcing maintenance.
DEMO_MAINTENANCE_GRACE_S = 10.0
DEMO_REST_BUDGET_PER_MIN = 1200
DEMO_SIM_RATE_LIMIT_PER_MIN = 6000
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "BRIDGE_KAFKA_BOOTSTRAP_SERVERS"
SIM_CLIENT_ID = "sim-client"
SIM_CLIENT_SECRET = "sim-secret"  # noqa: S105 - the simulator's documented public test credential
SIM_READY_PREFIX = "simulator listening on "
SIM_START_TIMEOUT_S = 30.0
KAFKA_CHECK_TIMEOUT_S = 10.0
#: Workers must have every shard connected within this long.
READY_TIMEOUT_S = 90.0
#: After the generator pauses: at most this long to settle …
SETTLE_TIMEOUT_S = 45.0
#: … and settled means no new record for this long with every channel connected.
SETTLE_QUIET_S = 2.0
AUDIT_GRACE_S = 3.0
AUDIT_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 5.0
#: How often the live view samples the simulator and the workers.
SAMPLE_S = 1.0
#: How often a status line is printed when stdout is not a terminal.
PLAIN_EVERY_S = 5.0
#: Changes/s is averaged over this many samples.
RATE_WINDOW = 5
LOOPBACK = "127.0.0.1"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
BOLD = "\x1b[1m"
GREEN = "\x1b[32m"
RED = "\x1b[31m"
RESET = "\x1b[0m"
DELIVERY_METRIC = "bridge_event_delivery_seconds"


# ----------------------------------------------------------------------------- metrics parsing


@dataclass
class WorkerStats:
    """What one worker's ``/metrics`` says."""

    up: bool = False
    shards: int = 0
    shard_ids: tuple[str, ...] = ()
    records: float = 0.0
    reconnects: float = 0.0
    reconciles: float = 0.0
    fenced: float = 0.0
    delivery_buckets: dict[float, float] = field(default_factory=dict)


def parse_metrics(text: str) -> WorkerStats:
    """The few series the demo shows, from Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    stats = WorkerStats(up=True)
    shard_ids: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "bridge_shards_owned":
                stats.shards = int(value)
            elif name == "bridge_shard_users" and value > 0:
                shard_ids.append(labels.get("shard", "?"))
            elif name == "bridge_records_produced_total":
                stats.records += value
            elif name == "bridge_channel_connects_total" and labels.get("reason") != "start":
                stats.reconnects += value
            elif name == "bridge_reconcile_runs_total":
                stats.reconciles += value
            elif name == "bridge_fenced_total":
                stats.fenced += value
            elif name == f"{DELIVERY_METRIC}_bucket":
                stats.delivery_buckets[float(labels["le"])] = value
    stats.shard_ids = tuple(sorted(shard_ids, key=lambda s: (len(s), s)))
    return stats


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` (None without data)."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    for bound, count in ordered:
        if count >= q * total:
            return bound
    return ordered[-1][0]


@dataclass
class Snapshot:
    """One sample of the whole demo, for the live view."""

    elapsed: float
    phase: str
    changes: int = 0
    changes_per_s: float = 0.0
    records_per_s: float = 0.0
    channels: int = 0
    connected: int = 0
    presence: Counter[str] = field(default_factory=Counter)
    routing: Counter[str] = field(default_factory=Counter)
    workers: list[WorkerStats] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    @property
    def records(self) -> float:
        return sum(w.records for w in self.workers)

    @property
    def reconnects(self) -> float:
        return sum(w.reconnects for w in self.workers)

    def delivery_p99(self) -> float | None:
        merged: dict[float, float] = {}
        for w in self.workers:
            for bound, count in w.delivery_buckets.items():
                merged[bound] = merged.get(bound, 0.0) + count
        return bucket_quantile(merged, 0.99)


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _counts(counter: Counter[str]) -> str:
    return " · ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"


def _p99_text(snap: Snapshot) -> str:
    p99 = snap.delivery_p99()
    if p99 is None:
        return "-"
    return "> 60 s" if math.isinf(p99) else f"≤ {p99 * 1000:.0f} ms"


def render_screen(snap: Snapshot, opts: DemoOptions, header: dict[str, str]) -> list[str]:
    """The terminal view as lines."""
    limit = _clock(opts.seconds) if opts.seconds is not None else "Ctrl-C to stop"
    lines = [
        f"{BOLD}presence-bridge demo{RESET} — {opts.agents} agents, {_plural(opts.workers, 'worker')}, "
        f"{header.get('shards', '?')} shards — {_clock(snap.elapsed)} / {limit}   [{snap.phase}]",
        "",
        f"  genesys sim   {header.get('sim', '')}   channels {snap.connected}/{snap.channels} connected",
        f"  changes/s     {snap.changes_per_s:8.1f}      changes total  {snap.changes:,}",
        f"  records/s     {snap.records_per_s:8.1f}      records total  {int(snap.records):,}  "
        f"(kafka {opts.bootstrap})",
        f"  delivery p99  {_p99_text(snap):>8}      reconnects {int(snap.reconnects)}",
        "",
        f"  presence   {_counts(snap.presence)}",
        f"  routing    {_counts(snap.routing)}",
        "",
    ]
    for i, w in enumerate(snap.workers, start=1):
        if not w.up:
            lines.append(f"  worker {i}   (not answering)")
            continue
        ids = ",".join(w.shard_ids) or "-"
        lines.append(
            f"  worker {i}   shards {w.shards} [{ids}]   records {int(w.records):,}   "
            f"reconnects {int(w.reconnects)}   reconciliations {int(w.reconciles)}"
        )
    lines.append("")
    lines.append(f"  faults     {' · '.join(snap.faults) or 'scheduled half-way'}")
    lines.append(f"  logs       {header.get('dir', '')}")
    return lines


def render_line(snap: Snapshot) -> str:
    """One plain status line (stdout is not a terminal)."""
    shards = " ".join(
        f"w{i}={w.shards}" if w.up else f"w{i}=down" for i, w in enumerate(snap.workers, start=1)
    )
    return (
        f"demo {_clock(snap.elapsed)} {snap.phase}: {snap.changes_per_s:.0f} changes/s, "
        f"{int(snap.records):,} records, channels {snap.connected}/{snap.channels}, "
        f"shards {shards}, reconnects {int(snap.reconnects)}, delivery p99 {_p99_text(snap)} | "
        f"{_counts(snap.presence)}"
    )


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    """A free loopback TCP port (for a worker's metrics server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Child:
    """A child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@dataclass
class DemoOptions:
    """The demo's parsed options."""

    agents: int = DEFAULT_AGENTS
    workers: int = DEFAULT_WORKERS
    seconds: float | None = None
    bootstrap: str = DEFAULT_BOOTSTRAP
    rate: float | None = None
    shard_capacity: int | None = None
    directory: Path | None = None
    seed: int | None = None
    faults: bool = True

    @property
    def capacity(self) -> int:
        if self.shard_capacity is not None:
            return self.shard_capacity
        return max(1, math.ceil(self.agents / DEFAULT_TARGET_SHARDS))

    @property
    def shards(self) -> int:
        return math.ceil(self.agents / self.capacity)

    @property
    def events_per_sec(self) -> float:
        return self.rate if self.rate is not None else max(MIN_RATE, self.agents * DEFAULT_RATE_PER_AGENT)


class Demo:
    """One demo run; :meth:`run` returns the exit code."""

    def __init__(self, opts: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.tty = out.isatty()
        self.children: list[Child] = []
        self.metrics_ports: list[int] = []
        self.sim_url = ""
        self.run_id = uuid.uuid4().hex[:8]
        self.dir = opts.directory or Path(tempfile.mkdtemp(prefix="presence-bridge-demo-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._http: Any = None
        self._history: list[tuple[float, int, float]] = []
        self.faults: list[str] = []
        self._streaming_from: float | None = None

    # -- helpers -----------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def env(self) -> dict[str, str]:
        """The worker's and the audit's environment: the caller's BRIDGE_* plus the demo's own."""
        env = dict(os.environ)
        env.update(
            {
                "BRIDGE_GENESYS_API_URL": self.sim_url,
                "BRIDGE_GENESYS_LOGIN_URL": self.sim_url,
                "BRIDGE_GENESYS_CLIENT_ID": SIM_CLIENT_ID,
                "BRIDGE_GENESYS_CLIENT_SECRET": SIM_CLIENT_SECRET,
                BOOTSTRAP_ENV: self.opts.bootstrap,
                "BRIDGE_SHARD_CAPACITY": str(self.opts.capacity),
                "BRIDGE_HEARTBEAT_INTERVAL_S": str(DEMO_HEARTBEAT_S),
                "BRIDGE_PING_INTERVAL_S": str(DEMO_HEARTBEAT_S),
                "BRIDGE_PONG_TIMEOUT_S": str(DEMO_HEARTBEAT_S),
                "BRIDGE_BACKOFF_INITIAL_S": "0.2",
                "BRIDGE_BACKOFF_MAX_S": "2.0",
                "BRIDGE_REST_BUDGET_PER_MIN": str(DEMO_REST_BUDGET_PER_MIN),
                "BRIDGE_METRICS_HOST": LOOPBACK,
                "BRIDGE_LOG_FORMAT": "text",
            }
        )
        # One fleet per run: its own consumer group, transactional ids and partition map.
        env.setdefault("BRIDGE_ID", f"demo-{self.run_id}")
        env.setdefault("BRIDGE_TOPIC_SHARD_MAP", f"bridge.shard-map.demo-{self.run_id}")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log = (self.dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check_kafka(self) -> bool:
        from confluent_kafka import KafkaException  # noqa: PLC0415
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        admin = AdminClient({"bootstrap.servers": self.opts.bootstrap})
        try:
            admin.list_topics(timeout=KAFKA_CHECK_TIMEOUT_S)
        except KafkaException:
            self.say(
                f"demo: no Kafka broker answers on {self.opts.bootstrap} "
                "(start one with `make kafka-up`, or pass --bootstrap)"
            )
            return False
        return True

    def start_sim(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "bridge",
            "sim",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--agents",
            str(self.opts.agents),
            "--events-per-sec",
            str(self.opts.events_per_sec),
            "--paused",
            "--heartbeat-s",
            str(DEMO_HEARTBEAT_S),
            "--socket-closing-grace-s",
            str(DEMO_MAINTENANCE_GRACE_S),
            "--rate-limit-per-min",
            str(DEMO_SIM_RATE_LIMIT_PER_MIN),
        ]
        if self.opts.seed is not None:
            argv += ["--seed", str(self.opts.seed)]
        child = self._spawn("simulator", argv, {**os.environ, "PYTHONUNBUFFERED": "1"})
        path = self.dir / "simulator.log"
        deadline = time.monotonic() + SIM_START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(SIM_READY_PREFIX):
                    self.sim_url = line[len(SIM_READY_PREFIX) :].strip()
                    return
            if child.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the simulator did not start; see {path}")

    def start_workers(self) -> None:
        env = self.env()
        for i in range(1, self.opts.workers + 1):
            port = free_port()
            self.metrics_ports.append(port)
            self._spawn(
                f"worker-{i}",
                [sys.executable, "-m", "bridge", "run"],
                {**env, "BRIDGE_METRICS_PORT": str(port)},
            )

    def stop_children(self) -> None:
        """Workers first (they drain), then the simulator."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    # -- sampling ----------------------------------------------------------------

    def _get(self, url: str) -> Any:
        try:
            response = self._http.get(url)
            response.raise_for_status()
        except Exception:  # a child restarting or not up yet: show it as down
            return None
        return response

    def sample(self, started: float, phase: str) -> Snapshot:
        """One snapshot; ``elapsed`` counts from the moment the generator started."""
        origin = self._streaming_from if self._streaming_from is not None else started
        snap = Snapshot(elapsed=time.monotonic() - origin, phase=phase, faults=list(self.faults))
        stats = self._get(f"{self.sim_url}/sim/stats")
        if stats is not None:
            doc = stats.json()
            snap.changes = int(doc.get("changesEmitted", 0))
            channels = doc.get("channels", [])
            snap.channels = len(channels)
            snap.connected = sum(1 for c in channels if c.get("connected"))
        truth = self._get(f"{self.sim_url}/sim/truth")
        if truth is not None:
            for user in truth.json().get("users", {}).values():
                snap.presence[user["presence"]["systemPresence"]] += 1
                snap.routing[user["routingStatus"]["status"]] += 1
        for port in self.metrics_ports:
            response = self._get(f"http://{LOOPBACK}:{port}/metrics")
            snap.workers.append(parse_metrics(response.text) if response is not None else WorkerStats())
        now = time.monotonic()
        self._history.append((now, snap.changes, snap.records))
        self._history = self._history[-RATE_WINDOW:]
        t0, c0, r0 = self._history[0]
        if now > t0:
            snap.changes_per_s = (snap.changes - c0) / (now - t0)
            snap.records_per_s = (snap.records - r0) / (now - t0)
        return snap

    def show(self, snap: Snapshot, header: dict[str, str], last_plain: list[float]) -> None:
        if self.tty:
            self.out.write(CLEAR_SCREEN + "\n".join(render_screen(snap, self.opts, header)) + "\n")
            self.out.flush()
        elif snap.elapsed - last_plain[0] >= PLAIN_EVERY_S:
            last_plain[0] = snap.elapsed
            self.say(render_line(snap))

    def _admin(self, path: str, body: dict[str, object]) -> Any:
        response = self._http.post(f"{self.sim_url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    def _connected_channels(self) -> list[str]:
        response = self._get(f"{self.sim_url}/sim/stats")
        if response is None:
            return []
        return [c["id"] for c in response.json().get("channels", []) if c.get("connected")]

    def inject(self, kind: str, elapsed: float) -> None:
        """One fault on one connected channel (a different one for each fault when possible)."""
        channels = self._connected_channels()
        if not channels:
            self.faults.append(f"{kind} at {_clock(elapsed)} skipped (no connected channel)")
            return
        target = channels[0] if kind == "socket drop" else channels[-1]
        if kind == "socket drop":
            self._admin("/sim/faults/drop", {"channelId": target})
        else:
            self._admin("/sim/faults/maintenance", {"channelId": target})
        self.faults.append(f"{kind} at {_clock(elapsed)} ({target[:12]}…)")
        if not self.tty:
            self.say(f"demo {_clock(elapsed)}: injected {kind} on channel {target}")

    # -- the run -----------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def wait_ready(self, started: float, header: dict[str, str], last_plain: list[float]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            snap = self.sample(started, "starting")
            self.show(snap, header, last_plain)
            owned = sum(w.shards for w in snap.workers)
            if snap.connected >= self.opts.shards and owned >= self.opts.shards:
                return True
            for child in self.children:
                if child.proc.poll() is not None:
                    self.say(f"demo: {child.name} exited with {child.proc.returncode}; see {self.dir}")
                    return False
            self._stop.wait(SAMPLE_S)
        if not self._stop.is_set():
            self.say(f"demo: the workers did not connect every shard within {READY_TIMEOUT_S:.0f} s")
        return False

    def stream(self, started: float, header: dict[str, str], last_plain: list[float]) -> None:
        self._admin("/sim/generator", {"paused": False})
        streaming_from = self._streaming_from = time.monotonic()
        fault_at = self.opts.seconds / 2 if self.opts.seconds is not None else DEFAULT_FAULT_AT_S
        pending = (
            [(fault_at, "socket drop"), (fault_at + MAINTENANCE_AFTER_DROP_S, "maintenance")]
            if self.opts.faults
            else []
        )
        end = None if self.opts.seconds is None else streaming_from + self.opts.seconds
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            since = time.monotonic() - streaming_from
            while pending and since >= pending[0][0]:
                self.inject(pending.pop(0)[1], since)
            self.show(self.sample(started, "streaming"), header, last_plain)
            self._stop.wait(SAMPLE_S)

    def settle(self, started: float, header: dict[str, str], last_plain: list[float]) -> None:
        """Pause the generator; wait until every channel is connected and no record arrives."""
        with contextlib.suppress(Exception):
            self._admin("/sim/generator", {"paused": True})
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last_records = -1.0
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            snap = self.sample(started, "settling")
            self.show(snap, header, last_plain)
            if snap.records != last_records or snap.connected < self.opts.shards:
                last_records = snap.records
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                return
            time.sleep(SAMPLE_S / 2)

    def audit(self) -> tuple[int, list[str]]:
        """Run ``presence-bridge audit``; returns its exit code and its printed lines."""
        log = self.dir / "audit.log"
        with log.open("wb") as err:
            try:
                done = subprocess.run(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "bridge", "audit", "--grace-s", str(AUDIT_GRACE_S)],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=self.env(),
                    timeout=AUDIT_TIMEOUT_S,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return 1, [f"audit did not finish within {AUDIT_TIMEOUT_S:.0f} s"]
        return done.returncode, done.stdout.decode(errors="replace").splitlines()

    def run(self) -> int:
        import httpx  # noqa: PLC0415 - keeps --help fast

        if not self.check_kafka():
            return 2
        header = {"dir": str(self.dir), "shards": str(self.opts.shards)}
        last_plain = [-PLAIN_EVERY_S]
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_S)
        try:
            self.say(
                f"demo: {self.opts.agents} agents, {_plural(self.opts.workers, 'worker')}, "
                f"{self.opts.shards} shards "
                f"of ≤ {self.opts.capacity} agents, {self.opts.events_per_sec:.0f} changes/s, "
                f"kafka {self.opts.bootstrap}; logs in {self.dir}"
            )
            self.start_sim()
            header["sim"] = self.sim_url
            self.start_workers()
            started = time.monotonic()
            if not self.wait_ready(started, header, last_plain):
                if self._stop.is_set():
                    self.say("demo: interrupted before streaming started")
                return 1
            self.stream(started, header, last_plain)
            self.settle(started, header, last_plain)
            final = self.sample(started, "audit")
            if self.tty:
                self.show(final, header, last_plain)
            else:
                self.say(render_line(final))
            self.say(
                f"demo: generator paused after {final.changes:,} changes; auditing Kafka against Genesys…"
            )
            code, lines = self.audit()
            for line in lines:
                self.say(f"  {line}")
            summary = next(
                (line for line in reversed(lines) if line.startswith("audit: ")), "audit: no result"
            )
            if code == 0:
                verdict = f"demo: PASS — Kafka agrees with Genesys ({summary.removeprefix('audit: ')})"
                self.say(f"{GREEN}{verdict}{RESET}" if self.tty else verdict)
                return 0
            verdict = (
                f"demo: FAIL — {summary.removeprefix('audit: ')} (audit exit {code}; logs in {self.dir})"
            )
            self.say(f"{RED}{verdict}{RESET}" if self.tty else verdict)
            return 1
        finally:
            self.stop_children()
            self._http.close()


@contextlib.contextmanager
def _interrupts(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM ask the demo to wrap up (audit, then stop the children)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    """Add ``demo`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="simulator + a small worker fleet against Kafka, a fault half-way, audited at the end",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agents", type=int, default=DEFAULT_AGENTS, help=f"default {DEFAULT_AGENTS}")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"default {DEFAULT_WORKERS}")
    p.add_argument(
        "--seconds", type=float, default=None, help="stream this long, then audit (default: Ctrl-C)"
    )
    p.add_argument(
        "--bootstrap",
        default=os.environ.get(BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP),
        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"changes per second (default: {DEFAULT_RATE_PER_AGENT} per agent, at least {MIN_RATE:.0f})",
    )
    p.add_argument(
        "--shard-capacity",
        type=int,
        default=None,
        help=f"agents per shard (default: agents / {DEFAULT_TARGET_SHARDS}, so several shards exist)",
    )
    p.add_argument("--dir", type=Path, default=None, help="folder for the logs (default: a new temp folder)")
    p.add_argument("--seed", type=int, default=None, help="the simulator's seed (default: random)")
    p.add_argument("--no-faults", dest="faults", action="store_false", help="skip the injected faults")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.agents < 1 or args.workers < 1:
        print("demo: --agents and --workers must be at least 1", file=sys.stderr)
        return 2
    opts = DemoOptions(
        agents=args.agents,
        workers=args.workers,
        seconds=args.seconds,
        bootstrap=args.bootstrap,
        rate=args.rate,
        shard_capacity=args.shard_capacity,
        directory=args.dir,
        seed=args.seed,
        faults=args.faults,
    )
    demo = Demo(opts)
    with _interrupts(demo.request_stop):
        try:
            return demo.run()
        except RuntimeError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
