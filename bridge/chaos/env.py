"""The chaos run's environment: simulator, Kafka broker, Toxiproxy and worker processes.

Everything binds loopback on free ports and logs into the run folder. Each
worker reaches Genesys (the simulator) and Kafka through its own pair of
Toxiproxy proxies, so a link fault hits exactly one worker:

- Genesys: ``BRIDGE_GENESYS_API_URL`` / ``LOGIN_URL`` name the worker's proxy;
  the simulator builds each channel's ``connectUri`` from the request's
  ``Host``, so the WebSocket goes through the proxy too.
- Kafka: librdkafka connects to the addresses the broker advertises, not to
  the bootstrap, so a proxy in front of the bootstrap alone would be
  bypassed. The broker started here has one extra listener per worker
  (``W0``, ``W1``…), each advertised at that worker's proxy port; the
  proxy forwards to the listener's real port, and the worker bootstraps
  through its proxy. With ``--bootstrap`` (an existing cluster) workers
  connect directly: no Kafka link faults, no broker restarts.

Workers run ``presence-bridge run`` with production defaults except
:data:`WORKER_OVERRIDES` (documented there).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx

from bridge.chaos.toxiproxy import ToxiproxyServer
from bridge.ports import free_port
from bridge.settings import Settings
from bridge.sim.config import DEFAULT_ANALYTICS_DELAY_S

__all__ = ["LOCALKAFKA", "WORKER_OVERRIDES", "Environment", "WorkerProcess"]

LOCALKAFKA = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka" / "localkafka.py"
SIM_CLIENT_ID = "sim-client"
SIM_CLIENT_SECRET = "sim-secret"  # noqa: S105 - the simulator's documented public test credential
SIM_READY_PREFIX = "simulator listening on "
SIM_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 30.0
#: With --bootstrap, the caller's settings under this prefix (security protocol, SASL, CA) reach the workers.
KAFKA_ACCESS_PREFIX = "BRIDGE_KAFKA_"
#: Settings that differ from production defaults in a chaos run, and why.
WORKER_OVERRIDES: dict[str, str] = {
    # Roster changes must reach the fleet within the run, not after the default 5 minutes.
    "BRIDGE_ROSTER_REFRESH_S": "10",
    "BRIDGE_LOG_FORMAT": "text",
    "BRIDGE_METRICS_HOST": "127.0.0.1",
}


def _load_localkafka() -> ModuleType:
    if not LOCALKAFKA.exists():
        raise RuntimeError(f"{LOCALKAFKA} not found: the chaos run needs a source checkout, or --bootstrap")
    spec = importlib.util.spec_from_file_location("localkafka", LOCALKAFKA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("localkafka", module)
    spec.loader.exec_module(module)
    return module


@dataclass
class WorkerProcess:
    """One ``presence-bridge run`` process (restartable) and its log."""

    index: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    #: True once we stop or kill it: an exit we did not cause is a crash.
    stopping: bool = False
    crashes: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Start the process (never a second one: RuntimeError while one still runs).

        Each start takes a fresh metrics port: a port freed by the previous
        process may meanwhile be the local end of some outbound connection.
        """
        if self.alive():
            raise RuntimeError(f"worker {self.index} is still running")
        self.env["BRIDGE_METRICS_PORT"] = str(free_port())
        with self.log_path.open("ab") as log:
            log.write(f"--- chaos: worker {self.index} starting at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.frozen = False
        self.stopping = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            if sig == signal.SIGSTOP:
                self.frozen = True
            elif sig == signal.SIGCONT:
                self.frozen = False

    def kill(self) -> None:
        """SIGKILL and reap (a frozen process dies too)."""
        self.stopping = True
        if self.proc is not None and self.alive():
            self.proc.kill()
            self.proc.wait()
        self.frozen = False

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (SIGCONT first if frozen), wait, SIGKILL after the timeout; the exit code."""
        if self.proc is None:
            return None
        self.stopping = True
        if self.alive():
            if self.frozen:
                os.kill(self.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.frozen = False
        return self.proc.returncode

    def check_crash(self) -> int | None:
        """The exit code if the process ended without us causing it (recorded once)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        if self.stopping:
            return None
        code = self.proc.returncode
        self.crashes.append(code)
        self.stopping = True  # recorded once; the runner starts it again
        return code


@dataclass
class Environment:
    """Everything one chaos run starts; :meth:`close` stops it all."""

    run_dir: Path
    workers: int
    agents: int
    seed: int
    events_per_sec: float
    toxiproxy_bin: Path
    bootstrap: str | None = None
    shard_capacity: int | None = None
    #: The simulator's analytics delay: on by default, as in Genesys (history lags the stream).
    analytics_delay_s: float = DEFAULT_ANALYTICS_DELAY_S
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    sim_url: str = ""
    broker_bootstrap: str = ""
    worker_procs: list[WorkerProcess] = field(default_factory=list)
    toxiproxy: ToxiproxyServer | None = None
    _sim: subprocess.Popen[str] | None = None
    _localkafka: ModuleType | None = None
    _broker_args: dict[str, Any] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def own_broker(self) -> bool:
        return self.bootstrap is None

    @property
    def bridge_id(self) -> str:
        return f"chaos-{self.run_id}"

    def topics(self) -> dict[str, str]:
        """Topic settings unique to this run (a shared cluster may hold other runs)."""
        tag = self.bridge_id
        return {
            "BRIDGE_TOPIC_PRESENCE": f"{tag}.presence",
            "BRIDGE_TOPIC_ROUTING_STATUS": f"{tag}.routing-status",
            "BRIDGE_TOPIC_AGENT_STATE": f"{tag}.agent-state",
            "BRIDGE_TOPIC_DLQ": f"{tag}.dlq",
            "BRIDGE_TOPIC_GAPS": f"{tag}.gaps",
            "BRIDGE_TOPIC_SHARD_MAP": f"{tag}.shard-map",
        }

    def checker_settings(self) -> Settings:
        """Settings for the checker: this fleet's id and topics, Kafka and Genesys reached directly."""
        values: dict[str, Any] = {k.removeprefix("BRIDGE_").lower(): v for k, v in self.topics().items()}
        return Settings(
            id=self.bridge_id,
            genesys_api_url=self.sim_url,
            genesys_login_url=self.sim_url,
            genesys_client_id=SIM_CLIENT_ID,
            genesys_client_secret=SIM_CLIENT_SECRET,
            kafka_bootstrap_servers=self.broker_bootstrap,
            **values,
        )

    def _log(self, name: str) -> IO[bytes]:
        log = (self.run_dir / name).open("ab")
        self._logs.append(log)
        return log

    # -- start -----------------------------------------------------------------------

    def sim_args(self) -> list[str]:
        """The simulator's command line (generator paused, analytics delay always explicit)."""
        return [
            sys.executable,
            "-m",
            "bridge",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--agents",
            str(self.agents),
            "--seed",
            str(self.seed),
            "--events-per-sec",
            str(self.events_per_sec),
            "--analytics-delay-s",
            str(self.analytics_delay_s),
            "--paused",  # the runner starts the generator once the fleet has converged
        ]

    def start_sim(self) -> None:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.sim_args(),
            stdout=subprocess.PIPE,
            stderr=self._log("sim.log"),
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self._sim = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + SIM_START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(SIM_READY_PREFIX):
                self.sim_url = line[len(SIM_READY_PREFIX) :].strip()
                return
        raise RuntimeError("the simulator did not start; see sim.log")

    def start_broker(self, proxy_ports: list[int]) -> None:
        """Our own broker, with one extra listener per worker advertised at its proxy port."""
        lk = self._localkafka = _load_localkafka()
        listeners = {f"W{i}": (free_port(), proxy_ports[i]) for i in range(self.workers)}
        self._broker_args = {
            "data_dir": self.run_dir / "kafka",
            "port": free_port(),
            "quiet": True,
            "extra_listeners": listeners,
        }
        broker = lk.start(**self._broker_args)
        self.broker_bootstrap = broker.bootstrap

    def restart_broker(self, down_s: float) -> None:
        """Stop the broker (clean shutdown), wait ``down_s``, start it on the same ports and data."""
        assert self._localkafka is not None
        self._localkafka.stop(self._broker_args["data_dir"])
        time.sleep(down_s)
        self._localkafka.start(**self._broker_args)

    def listener_port(self, worker: int) -> int:
        port: int = self._broker_args["extra_listeners"][f"W{worker}"][0]
        return port

    async def start_toxiproxy(self) -> tuple[list[int], list[int]]:
        """The server and, per worker, a Genesys proxy; returns (genesys ports, kafka ports)."""
        self.toxiproxy = ToxiproxyServer(self.toxiproxy_bin, free_port(), self._log("toxiproxy.log"))
        self.toxiproxy.start()
        sim_hostport = self.sim_url.removeprefix("http://")
        genesys = [free_port() for _ in range(self.workers)]
        for i, port in enumerate(genesys):
            await self.toxiproxy.proxy(f"w{i}-genesys", port, sim_hostport)
        kafka = [free_port() for _ in range(self.workers)] if self.own_broker else []
        return genesys, kafka

    async def kafka_proxies(self, kafka_ports: list[int]) -> None:
        assert self.toxiproxy is not None
        for i, port in enumerate(kafka_ports):
            await self.toxiproxy.proxy(f"w{i}-kafka", port, f"127.0.0.1:{self.listener_port(i)}")

    def make_workers(self, genesys_ports: list[int], kafka_ports: list[int]) -> None:
        # The caller's BRIDGE_* settings stay out, except how to reach a given cluster
        # (SASL / TLS of a staging Kafka) when --bootstrap names one.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BRIDGE_") or (not self.own_broker and k.startswith(KAFKA_ACCESS_PREFIX))
        }
        for i in range(self.workers):
            genesys = f"http://127.0.0.1:{genesys_ports[i]}"
            env = {
                **base,
                **WORKER_OVERRIDES,
                **self.topics(),
                "BRIDGE_ID": self.bridge_id,
                "BRIDGE_GENESYS_API_URL": genesys,
                "BRIDGE_GENESYS_LOGIN_URL": genesys,
                "BRIDGE_GENESYS_CLIENT_ID": SIM_CLIENT_ID,
                "BRIDGE_GENESYS_CLIENT_SECRET": SIM_CLIENT_SECRET,
                "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": (
                    f"127.0.0.1:{kafka_ports[i]}" if kafka_ports else self.broker_bootstrap
                ),
            }
            if self.shard_capacity is not None:
                env["BRIDGE_SHARD_CAPACITY"] = str(self.shard_capacity)
            self.worker_procs.append(WorkerProcess(i, env, self.run_dir / f"worker-{i}.log"))

    async def start(self) -> None:
        """Simulator, Toxiproxy, broker (or the given cluster), then every worker."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_sim()
        genesys_ports, kafka_ports = await self.start_toxiproxy()
        if self.own_broker:
            self.start_broker(kafka_ports)
            await self.kafka_proxies(kafka_ports)
        else:
            assert self.bootstrap is not None
            self.broker_bootstrap = self.bootstrap
        self.make_workers(genesys_ports, kafka_ports)
        for worker in self.worker_procs:
            worker.start()

    async def sim_admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=30.0) as http:
            response = await http.request(method, path, json=body)
            response.raise_for_status()
            return response.json() if response.content else None

    # -- stop ------------------------------------------------------------------------

    async def close(self) -> None:
        for worker in self.worker_procs:
            worker.stop()
        if self.toxiproxy is not None:
            await self.toxiproxy.aclose()
        if self._localkafka is not None and self._broker_args:
            self._localkafka.stop(self._broker_args["data_dir"])
        if self._sim is not None and self._sim.poll() is None:
            self._sim.terminate()
            try:
                self._sim.wait(10)
            except subprocess.TimeoutExpired:
                self._sim.kill()
                self._sim.wait()
        for log in self._logs:
            log.close()
