"""The working-day generator: realistic transitions, exact rate, determinism under a seed."""

from __future__ import annotations

import time
from collections import Counter

from bridge.sim.config import SimConfig
from bridge.sim.org import ROUTING_STATUSES, SYSTEM_PRESENCES
from bridge.sim.simulator import Simulator
from tests.sim.conftest import StartSim, eventually


def _run(seed: int, steps: int) -> list[tuple[str, str, str]]:
    sim = Simulator(SimConfig(agents=50, seed=seed, generator_paused=True))
    for _ in range(steps):
        sim.generator.step()
    return [(c.user_id, c.kind, c.value) for c in sim.org.events_since(0, 10**6)]


def test_same_seed_same_changes() -> None:
    """Two simulators with one seed produce the same users and the same change sequence."""
    assert _run(7, 500) == _run(7, 500)
    assert _run(7, 500) != _run(8, 500)


def test_budget_makes_exactly_the_configured_number_of_changes() -> None:
    """run_budget(0.4 s) at 300 changes/s makes 120 changes (+1 for a final two-change step)."""
    sim = Simulator(SimConfig(agents=100, seed=1, events_per_sec=300))
    made = sim.generator.run_budget(0.4)
    assert 120 <= made <= 121
    assert sim.org.last_seq == made


def test_paused_generator_makes_nothing() -> None:
    """A paused generator makes no change however much time passes."""
    sim = Simulator(SimConfig(agents=10, seed=1, generator_paused=True))
    assert sim.generator.run_budget(10.0) == 0


def test_day_visits_every_state_and_keeps_queue_consistent() -> None:
    """Every presence but IDLE and every routing status appear; off queue always means OFF_QUEUE."""
    sim = Simulator(SimConfig(agents=200, seed=3, generator_paused=True))
    for _ in range(20_000):
        sim.generator.step()
    changes = list(sim.org.events_since(0, 10**6))
    presences = Counter(c.value for c in changes if c.kind == "presence")
    statuses = Counter(c.value for c in changes if c.kind == "routingStatus")
    assert set(presences) == set(SYSTEM_PRESENCES) - {"IDLE"}
    assert set(statuses) == set(ROUTING_STATUSES)
    assert statuses["INTERACTING"] > statuses["NOT_RESPONDING"]
    for user in sim.org.users.values():
        on_queue = user.definition.system_presence == "ON_QUEUE"
        assert on_queue == (user.routing_status != "OFF_QUEUE")
    assert any(c.definition_id in {d.id for d in sim.org.definitions if not d.primary} for c in changes)


def test_deleted_users_stop_changing() -> None:
    """A removed agent is skipped by the generator."""
    sim = Simulator(SimConfig(agents=5, seed=2, generator_paused=True))
    gone = next(iter(sim.org.users))
    sim.org.remove_user(gone)
    for _ in range(200):
        sim.generator.step()
    assert all(c.user_id != gone for c in sim.org.events_since(0, 10**6))


async def test_same_seed_same_users_over_http(start_sim: StartSim) -> None:
    """The seed fixes user ids and initial states as served by the API."""
    a, b = await start_sim(seed=42), await start_sim(seed=42)
    ra = (await a.api("GET", "/api/v2/users", params={"expand": "presence,routingStatus"})).json()
    rb = (await b.api("GET", "/api/v2/users", params={"expand": "presence,routingStatus"})).json()
    assert [u["id"] for u in ra["entities"]] == [u["id"] for u in rb["entities"]]
    assert [u["presence"]["presenceDefinition"] for u in ra["entities"]] == [
        u["presence"]["presenceDefinition"] for u in rb["entities"]
    ]


async def test_running_generator_hits_its_rate(start_sim: StartSim) -> None:
    """At 400 changes/s the log grows by roughly that much per second."""
    sim = await start_sim(agents=100, events_per_sec=400, generator_paused=False)
    first = (await sim.stats())["lastSeq"]
    t0 = time.monotonic()

    async def enough() -> bool:
        return int((await sim.stats())["lastSeq"]) - first >= 200

    await eventually(enough, 3)
    assert time.monotonic() - t0 < 2.0
