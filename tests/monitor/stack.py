"""A monitored fleet: broker, simulator, two worker processes and a real Prometheus server.

Everything the Prometheus server is told comes from the rendered Helm chart
(:class:`Chart`): the scrape job is the one the Prometheus Operator generates
for the chart's ServiceMonitor (:mod:`tests.monitor.operator`), the rules are
the chart's PrometheusRule on a faster clock (:mod:`tests.monitor.rules`), and
the dashboard is the one the chart ships. Labels or selectors the chart adds
later reach the tests unchanged.

The fleet writes to a broker of its own (not the session's ``kafka``
fixture), because the alert tests stop and freeze it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import yaml
from confluent_kafka.admin import AdminClient

from bridge.ports import free_port
from tests.conftest import KafkaBroker, localkafka
from tests.fleet.conftest import SIM_OPTIONS, Fleet, WorkerProcess, fleet_settings
from tests.monitor.operator import scrape_job, target_group
from tests.monitor.rules import TIME_SCALE, scale_rules
from tests.worker.conftest import start_sim_process

__all__ = [
    "EVAL_INTERVAL_S",
    "NAMESPACE",
    "PROMETHEUS",
    "RELEASE",
    "SCRAPE_INTERVAL_S",
    "Chart",
    "MonitoredFleet",
    "Prometheus",
    "monitored_fleet",
    "render_chart",
]

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "presence-bridge"
HELM = Path(os.environ.get("BRIDGE_HELM", REPO / ".cache" / "bin" / "helm"))
PROMETHEUS = Path(os.environ.get("BRIDGE_PROMETHEUS", "/usr/bin/prometheus"))
RELEASE = "pb"
NAMESPACE = "contact-centre"
KUBE_VERSION = "1.37.0"
#: What the chart renders for the tests: every monitoring object on.
CHART_SETS = ("serviceMonitor.enabled=true", "prometheusRule.enabled=true", "grafanaDashboard.enabled=true")
SCRAPE_INTERVAL_S = 1.0
EVAL_INTERVAL_S = 1.0
PROMETHEUS_START_TIMEOUT_S = 30.0
FLEET_SETTLE_TIMEOUT_S = 90.0
SCRAPED_TIMEOUT_S = 30.0
MAX_DRAINED_FAULTS = 10_000
#: The simulated org: 250 agents on 3 shards of at most 100, a budget of 3
#: channels (4 per client minus the rotation spare), so 300 agents fit.
AGENTS = 250
SHARD_CAPACITY = 100
SHARDS = 3
MAX_CHANNELS_PER_CLIENT = 4
EVENTS_PER_SEC = 40
#: Heartbeats 30x as often as Genesys's 30 s, matching rules.TIME_SCALE.
HEARTBEAT_S = 1.0
#: Worker w2's watchdog is lax (silence limit 20 heartbeats = 20 s, no ping), so a
#: stalled socket stays "subscribed" long enough for BridgeHeartbeatStale; w1 keeps
#: the production ratio (2.5 heartbeats).
LAX_WATCHDOG_ENV = {"BRIDGE_HEARTBEAT_TIMEOUT_FACTOR": "20", "BRIDGE_PING_INTERVAL_S": "3600"}


@dataclass(frozen=True)
class Chart:
    """The rendered chart's monitoring objects."""

    service_monitor: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]
    rules: dict[str, Any]
    dashboard: dict[str, Any]


def render_chart(helm: Path = HELM) -> Chart:
    """``helm template`` with the monitoring objects enabled."""
    if not (helm.is_file() and os.access(helm, os.X_OK)):
        raise FileNotFoundError(f"{helm} is missing; run `make deploy-tools`")
    args = [
        str(helm),
        "template",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for s in CHART_SETS:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]

    def one(kind: str, suffix: str = "") -> dict[str, Any]:
        found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"{len(found)} {kind} objects ending in {suffix!r}"
        return found[0]

    dashboard_cm = one("ConfigMap", "-dashboard")
    (dashboard_json,) = dashboard_cm["data"].values()
    service_monitor = one("ServiceMonitor")
    service_monitor["metadata"].setdefault("namespace", NAMESPACE)
    return Chart(
        service_monitor=service_monitor,
        service=one("Service", "-metrics"),
        deployment=one("Deployment"),
        rules={"groups": one("PrometheusRule")["spec"]["groups"]},
        dashboard=json.loads(dashboard_json),
    )


@dataclass
class Prometheus:
    """A Prometheus server process and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path
    http: httpx.Client = field(repr=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix); fails on a PromQL error."""
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": start, "end": end, "step": step}
        body = self.http.get("/api/v1/query_range", params=params).json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def label_values(self, label: str, match: str | None) -> list[str]:
        params = {"match[]": match} if match else {}
        body = self.http.get(f"/api/v1/label/{label}/values", params=params).json()
        return [str(v) for v in body["data"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.http.get("/api/v1/alerts").json()["data"]["alerts"])

    def alert_state(self, name: str) -> str:
        """``firing``, ``pending`` or ``inactive`` (the most advanced state among its instances)."""
        states = {a["state"] for a in self.alerts() if a["labels"].get("alertname") == name}
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"

    def targets(self) -> list[dict[str, Any]]:
        return list(self.http.get("/api/v1/targets").json()["data"]["activeTargets"])

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")


def start_prometheus(workdir: Path, config: dict[str, Any]) -> Prometheus:
    """Start the server with ``config`` (YAML) on a free loopback port; wait until it is ready."""
    if not (PROMETHEUS.is_file() and os.access(PROMETHEUS, os.X_OK)):
        raise FileNotFoundError(f"{PROMETHEUS} is missing; run `make deploy-tools` (apt package prometheus)")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    with open(workdir / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    server = Prometheus(proc, url, workdir, httpx.Client(base_url=url, timeout=10))
    deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {proc.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if server.http.get("/-/ready").status_code == 200:
                return server
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"prometheus not ready within {PROMETHEUS_START_TIMEOUT_S} s:\n{server.log()}")


@dataclass
class MonitoredFleet:
    """Everything the live monitoring tests act on."""

    chart: Chart
    kafka: KafkaBroker
    broker_dir: Path
    sim_proc: subprocess.Popen[str]
    sim: httpx.Client
    fleet: Fleet
    prometheus: Prometheus
    sd_file: Path
    ports: dict[str, int] = field(default_factory=dict)

    def sim_admin(self, method: str, path: str, **body: Any) -> Any:
        response = self.sim.request(method, path, json=body if body else None)
        response.raise_for_status()
        return response.json() if response.content else None

    def drain_http_faults(self, path: str, status: int) -> int:
        """End an HTTP fault storm: consume the armed faults for ``path`` (they precede auth)."""
        for drained in range(MAX_DRAINED_FAULTS):
            if self.sim.get(path).status_code != status:
                return drained
        raise AssertionError(f"more than {MAX_DRAINED_FAULTS} HTTP {status} faults armed on {path}")

    def pod_name(self, worker: str) -> str:
        return f"{self.chart.deployment['metadata']['name']}-6f7d9c8b5-{worker}"

    def write_targets(self) -> None:
        """The file_sd targets: every worker started so far, labelled as its pod."""
        groups = [
            target_group(
                f"127.0.0.1:{port}", self.pod_name(name), NAMESPACE, self.chart.service, self.chart.deployment
            )
            for name, port in sorted(self.ports.items())
        ]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.sd_file)

    def start_worker(self, name: str, port: int | None = None) -> WorkerProcess:
        """Start (or restart on its old port) worker ``name``."""
        port = port or self.ports.get(name) or free_port()
        env = {"BRIDGE_METRICS_PORT": str(port), **(LAX_WATCHDOG_ENV if name == "w2" else {})}
        worker = self.fleet.start(**env)
        worker.name = name
        worker.port = port
        self.ports[name] = port
        self.write_targets()
        return worker

    def worker(self, name: str) -> WorkerProcess:
        return [w for w in self.fleet.workers if w.name == name and w.alive()][-1]

    def wait_scraped(self, timeout_s: float = SCRAPED_TIMEOUT_S) -> None:
        """Every worker's target is up and its shards' gauges are in Prometheus."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            up = self.prometheus.query("up == 1")
            owned = self.prometheus.query("sum(bridge_shards_owned)")
            if len(up) == len(self.ports) and owned and float(owned[0]["value"][1]) == SHARDS:
                return
            time.sleep(0.2)
        raise AssertionError(f"targets not scraped: {json.dumps(self.prometheus.targets())[:3000]}")

    def settle(self) -> None:
        """Wait until the live workers own every shard, ready, and Prometheus sees it."""
        asyncio.run(self.fleet.wait_settled(SHARDS, timeout_s=FLEET_SETTLE_TIMEOUT_S))
        self.wait_scraped()

    def stop_broker(self) -> None:
        localkafka.stop(self.broker_dir)

    def start_broker(self) -> None:
        localkafka.start(self.broker_dir, quiet=True)

    def freeze_broker(self, frozen: bool) -> None:
        pid = int((self.broker_dir / localkafka.PID_FILE).read_text())
        os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def freeze_sim(self, frozen: bool) -> None:
        self.sim_proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)


@contextlib.contextmanager
def monitored_fleet(tmp: Path, workers: int = 2) -> Iterator[MonitoredFleet]:
    """Broker, simulator, ``workers`` worker processes (settled) and Prometheus scraping them."""
    chart = render_chart()
    broker_dir = tmp / "kafka"
    broker = localkafka.start(broker_dir, quiet=True)
    sim_proc: subprocess.Popen[str] | None = None
    fleet: Fleet | None = None
    prometheus: Prometheus | None = None
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        kafka = KafkaBroker(bootstrap=broker.bootstrap, version="dedicated", admin=admin, data_dir=broker_dir)
        options = {
            **SIM_OPTIONS,
            "heartbeat_s": HEARTBEAT_S,
            "agents": AGENTS,
            "events_per_sec": EVENTS_PER_SEC,
            "max_channels_per_client": MAX_CHANNELS_PER_CLIENT,
        }
        sim_proc, base_url = start_sim_process(**options)
        settings = fleet_settings(
            kafka,
            SimpleNamespace(base_url=base_url),  # type: ignore[arg-type]
            shard_capacity=SHARD_CAPACITY,
            topic_partitions=SHARDS,
            genesys_max_channels_per_client=MAX_CHANNELS_PER_CLIENT,
            heartbeat_interval_s=HEARTBEAT_S,
        )
        fleet = Fleet(settings, tmp)
        sd_file = tmp / "targets.json"
        sd_file.write_text("[]")
        rules_file = tmp / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(scale_rules(chart.rules, TIME_SCALE), sort_keys=False))
        interval = f"{SCRAPE_INTERVAL_S:g}s"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": f"{EVAL_INTERVAL_S:g}s",
            },
            "rule_files": [str(rules_file)],
            "scrape_configs": [scrape_job(chart.service_monitor, str(sd_file), interval, interval)],
        }
        prometheus = start_prometheus(tmp, config)
        sim = httpx.Client(base_url=base_url, timeout=10)
        stack = MonitoredFleet(chart, kafka, broker_dir, sim_proc, sim, fleet, prometheus, sd_file)
        for i in range(workers):
            stack.start_worker(f"w{i + 1}")
        stack.settle()
        yield stack
    finally:
        if prometheus is not None:
            prometheus.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                prometheus.proc.wait(10)
            if prometheus.proc.poll() is None:
                prometheus.proc.kill()
        if fleet is not None:
            fleet.stop_all()
        if sim_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                sim_proc.send_signal(signal.SIGCONT)
            sim_proc.terminate()
            try:
                sim_proc.wait(10)
            except subprocess.TimeoutExpired:
                sim_proc.kill()
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            os.kill(int((broker_dir / localkafka.PID_FILE).read_text()), signal.SIGCONT)
        localkafka.stop(broker_dir)
