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
   (:mod:`bridge.demo_view`) read from the simulator's ``/sim/stats`` and ``/sim/truth`` and the
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
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

from bridge.demo_view import GREEN, RED, RESET, Sampler, Screen, Snapshot, clock_text, plural, render_line
from bridge.ports import LOOPBACK, free_port

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_FAULT_AT_S",
    "DEFAULT_WORKERS",
    "Demo",
    "DemoOptions",
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


# ----------------------------------------------------------------------------- processes


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
        self.screen = Screen(opts, out)
        self.tty = self.screen.tty
        self.children: list[Child] = []
        self.metrics_ports: list[int] = []
        self.sim_url = ""
        self.run_id = uuid.uuid4().hex[:8]
        self.dir = opts.directory or Path(tempfile.mkdtemp(prefix="presence-bridge-demo-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._http: Any = None
        self._sampler = Sampler(None)
        self.faults: list[str] = []
        self._streaming_from: float | None = None

    # -- helpers -----------------------------------------------------------------

    def say(self, text: str) -> None:
        self.screen.say(text)

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

    def sample(self, started: float, phase: str) -> Snapshot:
        """One snapshot; ``elapsed`` counts from the moment the generator started."""
        origin = self._streaming_from if self._streaming_from is not None else started
        metrics = [f"http://{LOOPBACK}:{port}/metrics" for port in self.metrics_ports]
        return self._sampler.sample(
            self.sim_url, metrics, elapsed=time.monotonic() - origin, phase=phase, faults=self.faults
        )

    def _admin(self, path: str, body: dict[str, object]) -> Any:
        response = self._http.post(f"{self.sim_url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    def _connected_channels(self) -> list[str]:
        response = self._sampler.get(f"{self.sim_url}/sim/stats")
        if response is None:
            return []
        return [c["id"] for c in response.json().get("channels", []) if c.get("connected")]

    def inject(self, kind: str, elapsed: float) -> None:
        """One fault on one connected channel (a different one for each fault when possible)."""
        channels = self._connected_channels()
        if not channels:
            self.faults.append(f"{kind} at {clock_text(elapsed)} skipped (no connected channel)")
            return
        target = channels[0] if kind == "socket drop" else channels[-1]
        if kind == "socket drop":
            self._admin("/sim/faults/drop", {"channelId": target})
        else:
            self._admin("/sim/faults/maintenance", {"channelId": target})
        self.faults.append(f"{kind} at {clock_text(elapsed)} ({target[:12]}…)")
        if not self.tty:
            self.say(f"demo {clock_text(elapsed)}: injected {kind} on channel {target}")

    # -- the run -----------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def wait_ready(self, started: float) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            snap = self.sample(started, "starting")
            self.screen.show(snap)
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

    def stream(self, started: float) -> None:
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
            self.screen.show(self.sample(started, "streaming"))
            self._stop.wait(SAMPLE_S)

    def settle(self, started: float) -> None:
        """Pause the generator; wait until every channel is connected and no record arrives."""
        with contextlib.suppress(Exception):
            self._admin("/sim/generator", {"paused": True})
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last_records = -1.0
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            snap = self.sample(started, "settling")
            self.screen.show(snap)
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
        header = self.screen.header
        header.update({"dir": str(self.dir), "shards": str(self.opts.shards)})
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._sampler = Sampler(self._http)
        try:
            self.say(
                f"demo: {self.opts.agents} agents, {plural(self.opts.workers, 'worker')}, "
                f"{self.opts.shards} shards "
                f"of ≤ {self.opts.capacity} agents, {self.opts.events_per_sec:.0f} changes/s, "
                f"kafka {self.opts.bootstrap}; logs in {self.dir}"
            )
            self.start_sim()
            header["sim"] = self.sim_url
            self.start_workers()
            started = time.monotonic()
            if not self.wait_ready(started):
                if self._stop.is_set():
                    self.say("demo: interrupted before streaming started")
                return 1
            self.stream(started)
            self.settle(started)
            final = self.sample(started, "audit")
            if self.tty:
                self.screen.show(final)
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
