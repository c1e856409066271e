"""Harness for the tests on the secured three-node cluster (the ``kafka_cluster`` fixture).

Workers are ``presence-bridge run`` processes (tests/fleet's harness) talking
SASL_SSL as ``User:bridge`` or mTLS as ``User:bridge-mtls``; each test has
its own bridge id and topics and grants the principal exactly the ACLs it
wants. The test's own reads go through the PLAINTEXT super-user listener.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest

from bridge.acl import Acl, required_acls
from bridge.settings import Settings
from tests.conftest import BRIDGE_USER, MTLS_CN, SecureCluster
from tests.fleet.conftest import FLEET_OVERRIDES, WorkerProcess
from tests.worker.conftest import SimProcess, bridge_settings

pytestmark = pytest.mark.kafka

PRINCIPALS = {"sasl": f"User:{BRIDGE_USER}", "mtls": f"User:{MTLS_CN}"}


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


async def wait_exit(worker: WorkerProcess, timeout_s: float) -> int | None:
    """The worker's exit code, or None if it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = worker.proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.1)
    return None


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line]


def topics_of(settings: Settings) -> list[str]:
    return [
        settings.topic_presence,
        settings.topic_routing_status,
        settings.topic_agent_state,
        settings.topic_dlq,
        settings.topic_shard_map,
    ]


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
