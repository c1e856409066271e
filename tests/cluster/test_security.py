"""Least-privilege ACLs and mTLS on the secured three-node cluster."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.acl import Acl, required_acls
from bridge.settings import Settings
from tests.conftest import SecureCluster
from tests.fleet.conftest import Fleet
from tests.worker.conftest import Delivery, SimProcess, event_records, eventually_async, expected_event_id

from .conftest import cluster_settings, error_lines, grant

pytestmark = pytest.mark.kafka

#: Workers missing an ACL must all stop within this (started together on a 2-core machine).
EXIT_TIMEOUT_S = 60.0
#: The module's simulator (the sim_base_url fixture of tests/cluster/conftest.py).
SIM_AGENTS = 30
SIM_EVENTS_PER_SEC = 20
#: How long a healthy worker streams before the check.
STREAM_S = 1.5
#: The ACL list for default-shaped settings: the parametrization (the test rebuilds it for its own ids).
TEMPLATE_ACLS = required_acls(
    Settings(
        id="t",
        topic_presence="presence",
        topic_routing_status="routing",
        topic_agent_state="state",
        topic_dlq="dlq",
        topic_gaps="gaps",
        topic_shard_map="map",
    )
)


@dataclass
class Removal:
    """One worker started without one ACL: what it was missing and how it ended."""

    removed: Acl
    code: int | None
    log: str


@pytest.fixture(scope="module")
def removals(
    kafka_cluster: SecureCluster, sim_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Removal]:
    """A worker per README ACL, each missing that one, all started at once (one start-up cost)."""
    sim = SimProcess(None, sim_base_url, None)  # type: ignore[arg-type]
    started = []
    for index in range(len(TEMPLATE_ACLS)):
        settings = cluster_settings(kafka_cluster, sim)
        removed = required_acls(settings)[index]
        grant(kafka_cluster, settings, without=removed)
        fleet = Fleet(settings, tmp_path_factory.mktemp(f"acl-{index}"))
        started.append((index, removed, fleet, fleet.start()))
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < deadline and any(w.proc.poll() is None for *_, w in started):
        time.sleep(0.1)
    out = {}
    for index, removed, fleet, worker in started:
        out[index] = Removal(removed, worker.proc.poll(), worker.log())
        fleet.stop_all()
    return out


@pytest.mark.parametrize(
    "index",
    range(len(TEMPLATE_ACLS)),
    ids=[f"{a.operation}-{a.resource_type}-{a.name}" for a in TEMPLATE_ACLS],
)
def test_each_missing_acl_stops_the_worker_with_an_error_naming_it(
    removals: dict[int, Removal], index: int
) -> None:
    """Without any one README ACL the worker exits 1 with an ERROR naming the operation and resource."""
    case = removals[index]
    removed, log = case.removed, case.log
    assert case.code is not None, f"worker still running without {removed.describe()}:\n{log[-3000:]}"
    assert case.code == 1, log[-3000:]
    named = f"{removed.operation} on {removed.resource_type} {removed.name}"
    assert any(named in line for line in error_lines(log)), f"no ERROR naming {named}:\n{log[-3000:]}"
    assert "Traceback" not in log


@pytest.mark.parametrize("via", ["sasl", "mtls"])
async def test_a_worker_with_exactly_the_readme_acls_streams(
    kafka_cluster: SecureCluster, sim: SimProcess, tmp_path: Path, via: str
) -> None:
    """Over SASL_SSL and over mTLS, the README's ACLs alone are enough: changes arrive once each."""
    settings = cluster_settings(kafka_cluster, sim, via=via)
    grant(kafka_cluster, settings, via=via)
    fleet = Fleet(settings, tmp_path)
    worker = fleet.start()
    try:
        await fleet.wait_settled(1, timeout_s=60)
        await assert_streams_every_change(kafka_cluster, sim, settings)
        assert await worker.terminate() == 0
        assert not error_lines(worker.log()), worker.log()[-3000:]
    finally:
        fleet.stop_all()


async def assert_streams_every_change(
    cluster: SecureCluster, sim: SimProcess, settings: Settings, stream_s: float = STREAM_S
) -> None:
    """Every change the simulator makes from now on arrives exactly once (checked while paused)."""
    events = await sim.events()
    since = events[-1]["seq"] if events else 0
    await asyncio.sleep(stream_s)
    await sim.pause()
    try:
        delivery: Delivery | None = None

        async def all_arrived() -> bool:
            nonlocal delivery
            log = [e for e in await sim.events() if e["seq"] > since]
            delivery = Delivery.compare(log, event_records(cluster, settings))  # type: ignore[arg-type]
            return bool(log) and not delivery.missing

        try:
            await eventually_async(all_arrived, 30, "every change on the event topics")
        except AssertionError:  # name what is missing: the change, its time, and the run's origins
            assert delivery is not None
            missing = set(delivery.missing)
            lost = [e for e in await sim.events() if e["seq"] > since and expected_event_id(e) in missing]
            origins = Counter(r["origin"] for r in event_records(cluster, settings))
            raise AssertionError(
                f"{len(lost)} changes never arrived, e.g. {lost[:3]}; origins {origins}"
            ) from None
        assert delivery is not None
        assert not delivery.duplicated, delivery.duplicated[:5]
    finally:
        await sim.admin("POST", "/sim/generator", paused=False)
