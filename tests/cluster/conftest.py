"""Harness for the tests on the secured three-node cluster (the ``kafka_cluster`` fixture).

Workers are ``presence-bridge run`` processes (tests/fleet's harness) talking
SASL_SSL as ``User:bridge`` or mTLS as ``User:bridge-mtls``; each test has
its own bridge id and topics and grants the principal exactly the ACLs it
wants. The test's own reads go through the PLAINTEXT super-user listener.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from bridge.acl import Acl, required_acls
from bridge.settings import Settings
from bridge.topics import ensure_topics
from tests.conftest import BRIDGE_USER, MTLS_CN, SecureCluster
from tests.fleet.conftest import FLEET_OVERRIDES, SIM_OPTIONS
from tests.worker.conftest import SimProcess, bridge_settings, start_sim_process

pytestmark = pytest.mark.kafka

TXN_STATE_TOPIC = "__transaction_state"
PRINCIPALS = {"sasl": f"User:{BRIDGE_USER}", "mtls": f"User:{MTLS_CN}"}
#: The simulator of a test module that does not set ``SIM_AGENTS`` / ``SIM_EVENTS_PER_SEC``.
DEFAULT_SIM_AGENTS = 30
DEFAULT_SIM_EVENTS_PER_SEC = 20
#: Timeout of the tests' HTTP client to the simulator.
SIM_HTTP_TIMEOUT_S = 30
#: The fleet tests' simulator with Genesys's 5 s analytics delay (the simulator's default): the
#: cluster's tests are bound by broker restarts and TLS, and gained nothing from a shorter one.
CLUSTER_SIM_OPTIONS = {**SIM_OPTIONS, "analytics_delay_s": 5.0}


@pytest.fixture(scope="module")
def sim_base_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One simulator process per test module (every test has its own bridge id and topics).

    The module sizes it with ``SIM_AGENTS`` and ``SIM_EVENTS_PER_SEC``.
    """
    agents = getattr(request.module, "SIM_AGENTS", DEFAULT_SIM_AGENTS)
    rate = getattr(request.module, "SIM_EVENTS_PER_SEC", DEFAULT_SIM_EVENTS_PER_SEC)
    proc, base_url = start_sim_process(agents=agents, events_per_sec=rate, **CLUSTER_SIM_OPTIONS)
    try:
        yield base_url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def sim(sim_base_url: str) -> AsyncIterator[SimProcess]:
    """The module's simulator, with an HTTP client for its admin API."""
    async with httpx.AsyncClient(base_url=sim_base_url, timeout=SIM_HTTP_TIMEOUT_S) as http:
        yield SimProcess(None, sim_base_url, http)  # type: ignore[arg-type]


def cluster_settings(
    cluster: SecureCluster, sim: SimProcess, via: str = "sasl", **overrides: Any
) -> Settings:
    """Worker settings on the cluster over SASL_SSL (``via="sasl"``) or mTLS (``"mtls"``)."""
    security = cluster.sasl_settings() if via == "sasl" else cluster.mtls_settings()
    return bridge_settings(cluster, sim, **{**FLEET_OVERRIDES, **security, **overrides})  # type: ignore[arg-type]


def grant(
    cluster: SecureCluster, settings: Settings, via: str = "sasl", without: Acl | None = None
) -> list[Acl]:
    """Grant the principal the README's ACLs for ``settings``, all but ``without``."""
    acls = [a for a in required_acls(settings) if a != without]
    cluster.grant(PRINCIPALS[via], [a.binding(PRINCIPALS[via]) for a in acls])
    return acls


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line]


def topics_of(settings: Settings) -> list[str]:
    return [
        settings.topic_presence,
        settings.topic_routing_status,
        settings.topic_agent_state,
        settings.topic_dlq,
        settings.topic_gaps,
        settings.topic_shard_map,
    ]


def super_settings(cluster: SecureCluster, settings: Settings) -> Settings:
    """The same settings over the PLAINTEXT super-user listener (the test's own admin work)."""
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": cluster.bootstrap,
            "kafka_security_protocol": "PLAINTEXT",
            "kafka_sasl_mechanism": None,
            "kafka_sasl_username": None,
            "kafka_sasl_password": None,
        }
    )


def prepare_topics(cluster: SecureCluster, settings: Settings) -> int:
    """Create the bridge's topics up front; return the node leading the state topic's partition 0."""
    ensure_topics(super_settings(cluster, settings), shard_map_partitions=1)
    if TXN_STATE_TOPIC not in cluster.admin.list_topics(timeout=10).topics:
        warmup = Producer(cluster.config(**{"transactional.id": f"warmup-{uuid.uuid4().hex[:6]}"}))
        warmup.init_transactions(30)
    return cluster.leaders(settings.topic_agent_state)[0]


def java_string_hash(text: str) -> int:
    """``String.hashCode()`` of the JVM (the broker maps transactional ids to partitions with it)."""
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def txn_coordinator(cluster: SecureCluster, transactional_id: str) -> int:
    """The node coordinating ``transactional_id``: the leader of its ``__transaction_state`` partition."""
    leaders = cluster.leaders(TXN_STATE_TOPIC)
    h = java_string_hash(transactional_id)
    partition = (0 if h == -(1 << 31) else abs(h)) % len(leaders)
    return leaders[partition]


def pick_bridge_id(cluster: SecureCluster, settings: Settings, node: int) -> Settings:
    """The settings with a bridge id whose shard 0 has its transactions coordinated by ``node``."""
    for _ in range(200):
        candidate = f"test-{uuid.uuid4().hex[:8]}"
        if txn_coordinator(cluster, f"{candidate}-shard-0") == node:
            return settings.model_copy(update={"id": candidate})
    raise AssertionError(f"no bridge id maps to node {node}")


class EventTail:
    """Follows topics from their end (read_committed) and notes when each record arrives."""

    def __init__(self, cluster: SecureCluster, topics: list[str]) -> None:
        self._consumer = Consumer(
            cluster.config(
                **{
                    "group.id": f"tail-{uuid.uuid4().hex[:8]}",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 20,
                }
            )
        )
        parts = []
        for topic in topics:
            md = self._consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, OFFSET_END) for p in md.partitions]
        self._consumer.assign(parts)
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                self.arrivals.append(time.monotonic())

    def first_after(self, t0: float, timeout_s: float) -> float | None:
        """Seconds from ``t0`` to the first record that arrived after it (None: none in time)."""
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            later = [t for t in list(self.arrivals) if t > t0]
            if later:
                return later[0] - t0
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
