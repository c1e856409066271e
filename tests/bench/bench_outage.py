"""Benchmark: every socket of a 20,000-agent fleet dropped at once; how long until Kafka is right again.

A fleet of worker processes (``python -m bridge run``, four by default) on
two OAuth clients streams a simulated org of 20,000 agents (changing at
200 changes/s throughout, the simulator's own rate limits and analytics
delay) into a real broker. When the fleet is settled and has streamed for a
minute, the simulator drops every socket at once (``POST /sim/faults/drop``)
and the benchmark measures, from the drop:

- **audit passes**: every agent's compacted state equals Genesys's truth
  (:func:`bridge.chaos.checker.state_mismatches`, polled). Each poll checks
  the agents that changed since the last poll (the simulator's change log)
  and those that mismatched in it; a mismatch on a change younger than
  :data:`IN_FLIGHT_S` before the poll is in flight, not counted, so the first
  poll starts that long after every agent is on a connected channel again
  (the simulator's ``/sim/stats``, :func:`bridge.chaos.checker.coverage`):
  every change made while the sockets were down is then old enough to
  count. The figure is the end of the first passing poll (its
  resolution: the poll length). After the pass one full audit of every
  agent confirms it (a stale write to an agent that did not change would
  show there). Target ≤ 120 s.
- **gaps backfilled**: every shard has a ``bridge.gaps.v1`` record (read
  ``read_committed``, this fleet's ``bridge-id`` only) whose ``to`` is after
  the drop and that says ``recovered: true``. A build without the gaps topic
  reports "no gap records".
- **streaming again**: every agent on a connected channel (the simulator's
  view); **reconnected / reconciled**: per shard, from the workers'
  ``/readyz`` (polled every :data:`READYZ_POLL_S`).
- the fleet's backfill metrics over the recovery (queries ``ok`` /
  ``delayed``, records ``written`` / ``late`` / ``already_written``,
  fallbacks), summed over the workers' ``/metrics``.
- **REST calls** of the recovery (drop → both of the above) per OAuth client
  and endpoint family, from the simulator's ``requestsByClient`` counters,
  and how many it refused with 429 (the budget must never be exceeded: 0).
  The benchmark's own audit uses an OAuth client of its own, not counted.
- **recall** over the outage window: the share of the simulator's change log
  from 60 s before the drop to the end found in the event topics
  (:func:`bridge.chaos.checker.recall`), and duplicate eventIds / per-agent
  order violations there (:func:`bridge.audit.check_events`).

Every setting that shapes recovery keeps the worker's default (heartbeats,
backoff, REST budget, shard capacity, backfill hold). Run by hand (heavy: at
full size it fills a 2-core machine)::

    .venv/bin/python -m tests.bench.bench_outage [--runs 1] [--agents 20000] [--workers 4] [--clients 2]

``--analytics-delay-s`` sets the simulator's analytics delay (default: its
own, 5 s) to see what the delay bounds. It uses the broker named by ``BRIDGE_TEST_KAFKA`` or starts its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, KafkaError
from pydantic import SecretStr

from bridge.audit import EventCheck, Mismatch, check_events, read_events
from bridge.chaos.checker import coverage, recall, state_mismatches
from bridge.genesys.rest import GenesysRest
from bridge.settings import GenesysClient, Settings
from bridge.sim.config import (
    DEFAULT_ANALYTICS_DELAY_S,
    DEFAULT_ENDPOINT_RATE_LIMITS,
    DEFAULT_RATE_LIMIT_PER_MIN,
)
from bridge.statestore import written_by
from bridge.worker import genesys_rest
from tests.bench.bench_takeover import bench_broker
from tests.conftest import KafkaBroker
from tests.fleet.conftest import Fleet, dump_logs
from tests.worker.conftest import SimProcess, bridge_settings, sim_process

DEFAULT_RUNS = 1
AGENTS = 20_000
WORKERS = 4
CLIENTS = 2
EVENTS_PER_SEC = 200.0
SEED = 15
TARGET_AUDIT_S = 120.0
#: The recall window starts this long before the drop (the fleet streams that long first).
RECALL_LOOKBACK_S = 60.0
#: A mismatch on a Genesys change this much younger than the poll is in flight, not counted.
IN_FLIGHT_S = 2.0
#: Changes this long before the drop may not have reached Kafka yet: their agents are suspects.
SUSPECT_LOOKBACK_S = 10.0
SETTLE_TIMEOUT_S = 1200.0
RECOVERY_TIMEOUT_S = 600.0
#: After recovery, changes this young may still be on their way: the log read waits that long.
DRAIN_S = 5.0
#: The audit's record read starts this much before the recall window (Kafka timestamps vs change times).
READ_MARGIN_S = 30.0
POLL_S = 0.5
READYZ_POLL_S = 0.5
#: OAuth clients of the fleet (``bench-client-<n>``) and the audit's own (not counted).
CLIENT_SECRET = "bench-secret"
AUDIT_CLIENT = GenesysClient(client_id="bench-audit", client_secret=SecretStr(CLIENT_SECRET))
#: The audit's tokens: each has its own rate-limit window, so polling never waits on one.
AUDIT_TOKENS = 3
#: What bridge_settings shortens for its tests that matters to recovery: back to the defaults.
DEFAULTED = (
    "heartbeat_interval_s",
    "ping_interval_s",
    "pong_timeout_s",
    "backoff_initial_s",
    "backoff_max_s",
    "rest_budget_per_min",
    "txn_max_ms",
    "topic_partitions",
)
#: Settings shown in the table when they exist in this build.
SHOWN_SETTINGS = (
    "shard_capacity",
    "rest_budget_per_min",
    "genesys_max_channels_per_client",
    "backfill_enabled",
    "backfill_hold_s",
)
SIM_KINDS = ("presence", "routingStatus")
#: The fleet's own account of the backfill, summed over the workers' /metrics.
BACKFILL_METRICS = (
    "bridge_backfill_queries_total",
    "bridge_backfill_records_total",
    "bridge_backfill_fallbacks_total",
)


def fleet_clients(count: int) -> list[GenesysClient]:
    """The fleet's OAuth clients: ``bench-client-1`` … ``bench-client-<count>``."""
    return [
        GenesysClient(client_id=f"bench-client-{i}", client_secret=SecretStr(CLIENT_SECRET))
        for i in range(1, count + 1)
    ]


def sim_clients(clients: Iterable[GenesysClient]) -> str:
    """The simulator's ``--clients`` value for these clients."""
    return ",".join(f"{c.client_id}:{c.client_secret.get_secret_value()}" for c in clients)


def family(route: str) -> str:
    """The endpoint family of a simulator route (``METHOD /path``)."""
    path = route.partition(" ")[2]
    for needle, name in (
        ("/analytics/", "analytics"),
        ("/notifications/", "notifications"),
        ("/presences", "presence"),
        ("/routingstatus", "routing status"),
        ("/presence/definitions", "presence definitions"),
        ("/api/v2/users", "users"),
    ):
        if needle in path:
            return name
    return route


def spent(before: dict[str, Any], after: dict[str, Any], ignore: str) -> dict[str, Counter[str]]:
    """client → Counter of ``<family>`` calls and ``429``, between two ``requestsByClient`` snapshots."""
    out: dict[str, Counter[str]] = {}
    for client, routes in after.items():
        if client == ignore:
            continue
        counts = out.setdefault(client, Counter())
        for route, statuses in routes.items():
            for status, n in statuses.items():
                delta = n - before.get(client, {}).get(route, {}).get(status, 0)
                counts[family(route)] += delta
                if status == "429":
                    counts["429"] += delta
    return out


def iso(at: float) -> str:
    """Unix time as the bridge's ISO form (ms, ``Z``)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Outage:
    """The figures of one run (seconds from the drop unless said)."""

    #: Every agent subscribed on a connected channel again, as the simulator sees it.
    streaming_s: float | None = None
    audit_pass_s: float | None = None
    audit_polls: int = 0
    poll_s: list[float] = field(default_factory=list)
    confirm: str = ""
    gaps_s: float | None = None
    gap_shards: int = 0
    gap_records: list[dict[str, Any]] = field(default_factory=list)
    reconnected_s: dict[int, float] = field(default_factory=dict)
    reconciled_s: dict[int, float] = field(default_factory=dict)
    rest: dict[str, Counter[str]] = field(default_factory=dict)
    rest_429_whole_run: int = 0
    backfill: Counter[str] = field(default_factory=Counter)
    recall_found: int = 0
    recall_total: int = 0
    events: EventCheck = field(default_factory=EventCheck)


class GapWatcher:
    """Reads ``bridge.gaps.v1`` (read_committed, this fleet's records) from its start."""

    def __init__(self, kafka: KafkaBroker, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._consumer = Consumer(
            kafka.config(
                **{
                    "group.id": f"bench-gaps-{uuid.uuid4().hex[:8]}",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "topic.metadata.refresh.interval.ms": 1000,
                }
            )
        )
        self._consumer.subscribe([topic])

    def wait(
        self, shards: int, after: str, since: float, timeout_s: float
    ) -> tuple[dict[int, float], list[Any]]:
        """shard → seconds from ``since`` to its recovered record of a gap ending after ``after``.

        Also returns every record of such gaps (recovered or not).
        """
        done: dict[int, float] = {}
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(done) < shards and time.monotonic() < deadline:
            msg = self._consumer.poll(POLL_S)
            if msg is None:
                continue
            if msg.error() is not None:
                # The topic appears with the first gap record; until then the consumer says so.
                if msg.error().code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    raise RuntimeError(f"gaps topic: {msg.error()}")
                continue
            if msg.value() is None:
                continue
            if not written_by(msg.headers(), self._settings.id):
                continue
            record = orjson.loads(msg.value())
            if str(record.get("to", "")) <= after:
                continue
            records.append(record)
            shard = int(record["shard"])
            if record.get("recovered") is True and shard not in done:
                done[shard] = time.time() - since
        return done, records

    def close(self) -> None:
        self._consumer.close()


async def backfill_counts(fleet: Fleet) -> Counter[str]:
    """``<metric>{<labels>}`` → its value summed over the live workers, for :data:`BACKFILL_METRICS`."""
    total: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=5) as client:
        for worker in fleet.live():
            text = (await client.get(f"{worker.url}/metrics")).text
            for line in text.splitlines():
                name, _, rest = line.partition("{")
                if name in BACKFILL_METRICS:
                    labels, _, value = rest.rpartition("} ")
                    total[f"{name.removesuffix('_total').removeprefix('bridge_')}{{{labels}}}"] += int(
                        float(value)
                    )
    return total


async def _connects(fleet: Fleet) -> dict[int, int]:
    """shard → how many times it has connected, from /readyz."""
    connects: dict[int, int] = {}
    for body in (await fleet.views()).values():
        for p, info in body.get("shards", {}).items():
            connects[int(p)] = int(info.get("connects", 0))
    return connects


async def _views_loop(
    fleet: Fleet, connects: dict[int, int], dropped_at: float, out: Outage, stop: asyncio.Event
) -> None:
    """Per shard: first connect (past ``connects``) and reconciliation after the drop, from /readyz."""
    while not stop.is_set():
        now = time.time()
        for body in (await fleet.views()).values():
            for p, info in body.get("shards", {}).items():
                shard = int(p)
                if shard not in out.reconnected_s and int(info.get("connects", 0)) > connects.get(shard, 0):
                    out.reconnected_s[shard] = now - dropped_at
                at = info.get("reconciledAt")
                if shard not in out.reconciled_s and at is not None and at > dropped_at:
                    out.reconciled_s[shard] = at - dropped_at
        await asyncio.sleep(READYZ_POLL_S)


def _counted(mismatches: list[Mismatch], cutoff: datetime) -> list[Mismatch]:
    return [m for m in mismatches if m.genesys_changed_at is None or m.genesys_changed_at <= cutoff]


async def _streaming_again(sim: SimProcess, roster: list[str], dropped_at: float, out: Outage) -> None:
    """Until every agent is on a connected channel again (:func:`coverage` of ``/sim/stats``)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        now = time.time()
        if coverage(roster, (await sim.stats())["channels"]).ok:
            out.streaming_s = now - dropped_at
            return
        await asyncio.sleep(READYZ_POLL_S)


async def _audit_until_pass(
    settings: Settings,
    sim: SimProcess,
    *,
    rests: list[GenesysRest],
    roster: list[str],
    suspects: set[str],
    cursor: int,
    dropped_at: float,
    out: Outage,
) -> None:
    """Poll the suspects' state until no counted mismatch is left."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    # A poll passes only once every change of the gap is older than its in-flight margin: before
    # that, the changes made while the sockets were down would be "in flight" and pass unchecked.
    await _streaming_again(sim, roster, dropped_at, out)
    if out.streaming_s is None:
        return
    await asyncio.sleep(max(0.0, dropped_at + out.streaming_s + IN_FLIGHT_S - time.time()))
    while time.monotonic() < deadline:
        started = time.time()
        log = await sim.events(since=cursor)
        if log:
            cursor = int(log[-1]["seq"])
            suspects.update(str(e["userId"]) for e in log)
        rest = rests[out.audit_polls % len(rests)]
        out.audit_polls += 1
        mismatches = (await state_mismatches(settings, rest, suspects)).mismatches
        out.poll_s.append(time.time() - started)
        counted = _counted(mismatches, datetime.fromtimestamp(started - IN_FLIGHT_S, UTC))
        suspects = {m.user_id for m in mismatches}
        if not counted:
            out.audit_pass_s = time.time() - dropped_at
            return
        await asyncio.sleep(POLL_S)


async def _confirm(settings: Settings, rest: GenesysRest, out: Outage) -> None:
    """One full audit of every agent, in-flight changes excused."""
    started = time.time()
    full = await state_mismatches(settings, rest)
    agents, mismatches = full.agents, full.mismatches
    counted = _counted(mismatches, datetime.fromtimestamp(started - IN_FLIGHT_S, UTC))
    out.confirm = (
        f"{agents} agents, {len(counted)} mismatches "
        f"({len(mismatches) - len(counted)} in flight) in {time.time() - started:.0f} s"
    )
    for m in counted[:10]:
        print(f"  confirm: {m.line()}", flush=True)


async def _wait_gaps(
    kafka: KafkaBroker, settings: Settings, shards: int, dropped_at: float, out: Outage
) -> None:
    topic = getattr(settings, "topic_gaps", None)
    if topic is None:
        return
    watcher = GapWatcher(kafka, settings, str(topic))
    try:
        done, records = await asyncio.to_thread(
            watcher.wait, shards, iso(dropped_at), dropped_at, RECOVERY_TIMEOUT_S
        )
    finally:
        watcher.close()
    out.gap_shards, out.gap_records = len(done), records
    if len(done) == shards:
        out.gaps_s = max(done.values())


async def one_run(
    kafka: KafkaBroker, sim: SimProcess, fleet: Fleet, settings: Settings, shards: int
) -> Outage:
    """Drop every socket of a settled, streaming fleet and measure its recovery."""
    out = Outage()
    rests = [genesys_rest(settings, AUDIT_CLIENT) for _ in range(AUDIT_TOKENS)]
    try:
        window_seq = int((await sim.stats())["lastSeq"])
        await asyncio.sleep(RECALL_LOOKBACK_S - SUSPECT_LOOKBACK_S)
        suspect_seq = int((await sim.stats())["lastSeq"])
        await asyncio.sleep(SUSPECT_LOOKBACK_S)
        window_start = time.time() - RECALL_LOOKBACK_S
        before = (await sim.stats())["requestsByClient"]
        suspects = {str(e["userId"]) for e in await sim.events(since=suspect_seq)}
        roster = sorted((await sim.admin("GET", "/sim/truth"))["users"])
        cursor = int((await sim.stats())["lastSeq"])
        stop = asyncio.Event()
        connects = await _connects(fleet)
        metrics_before = await backfill_counts(fleet)
        dropped_at = time.time()
        await sim.admin("POST", "/sim/faults/drop")
        views = asyncio.create_task(_views_loop(fleet, connects, dropped_at, out, stop))
        await asyncio.gather(
            _audit_until_pass(
                settings,
                sim,
                rests=rests,
                roster=roster,
                suspects=suspects,
                cursor=cursor,
                dropped_at=dropped_at,
                out=out,
            ),
            _wait_gaps(kafka, settings, shards, dropped_at, out),
        )
        stop.set()
        await views
        recovered_at = time.time()
        stats = await sim.stats()
        out.backfill = await backfill_counts(fleet)
        out.backfill.subtract(metrics_before)
        out.rest = spent(before, stats["requestsByClient"], AUDIT_CLIENT.client_id)
        out.rest_429_whole_run = sum(
            int(statuses.get("429", 0))
            for client, routes in stats["requestsByClient"].items()
            if client != AUDIT_CLIENT.client_id
            for statuses in routes.values()
        )
        if out.audit_pass_s is not None:
            await _confirm(settings, rests[0], out)
        log = [e for e in await sim.events(since=window_seq) if _at(e) <= recovered_at]
        await asyncio.sleep(DRAIN_S)
        since = datetime.fromtimestamp(window_start - READ_MARGIN_S, UTC)
        records = await asyncio.to_thread(read_events, settings, since=since)
        topics = dict(zip((settings.topic_presence, settings.topic_routing_status), SIM_KINDS, strict=True))
        in_window = [e for e in log if _at(e) >= window_start]
        out.recall_found, out.recall_total = recall(in_window, records, topics)
        out.events = check_events(records)
    finally:
        for rest in rests:
            await rest.aclose()
    return out


def _at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["changedAt"])).timestamp()


def _settings(kafka: KafkaBroker, sim: SimProcess, clients: list[GenesysClient]) -> Settings:
    defaults = {name: Settings.model_fields[name].default for name in DEFAULTED}
    first, extra = clients[0], clients[1:]
    return bridge_settings(
        kafka,
        sim,
        genesys_client_id=first.client_id,
        genesys_client_secret=first.client_secret,
        genesys_extra_clients=extra,
        log_level="INFO",
        **defaults,
    )


async def _measure(
    runs: int, agents: int, workers: int, clients: int, analytics_delay_s: float
) -> tuple[list[Outage], dict[str, Any]]:
    fleet_creds = fleet_clients(clients)
    outages: list[Outage] = []
    with bench_broker() as kafka, tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        async with sim_process(
            agents=agents,
            events_per_sec=EVENTS_PER_SEC,
            seed=SEED,
            clients=sim_clients([*fleet_creds, AUDIT_CLIENT]),
            analytics_delay_s=analytics_delay_s,
        ) as sim:
            settings = _settings(kafka, sim, fleet_creds)
            shards = -(-agents // settings.shard_capacity)
            fleet = Fleet(settings, Path(tmp))
            try:
                for _ in range(workers):
                    fleet.start()
                t0 = time.monotonic()
                await fleet.wait_settled(shards, timeout_s=SETTLE_TIMEOUT_S)
                print(f"fleet settled: {shards} shards on {workers} workers in {time.monotonic() - t0:.0f} s")
                for run in range(runs):
                    outage = await one_run(kafka, sim, fleet, settings, shards)
                    outages.append(outage)
                    print(f"run {run + 1}: {_run_line(outage, shards)}", flush=True)
                    await fleet.wait_settled(shards, timeout_s=SETTLE_TIMEOUT_S)
            except BaseException:
                print(dump_logs(fleet, tail=20))
                raise
            finally:
                fleet.stop_all()
    shown = {name: getattr(settings, name) for name in SHOWN_SETTINGS if hasattr(settings, name)}
    setup = {
        "agents": agents,
        "workers": workers,
        "clients": clients,
        "shards": shards,
        "events_per_sec": EVENTS_PER_SEC,
        "sim": f"default rate limits ({DEFAULT_RATE_LIMIT_PER_MIN} requests/min per token, "
        + ", ".join(f"{n} on {route}" for route, n in DEFAULT_ENDPOINT_RATE_LIMITS.items())
        + f"), analytics delay {analytics_delay_s:g} s",
        **shown,
    }
    return outages, setup


def _secs(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def _run_line(o: Outage, shards: int) -> str:
    return (
        f"streaming again {_secs(o.streaming_s)}; "
        f"audit passes {_secs(o.audit_pass_s)} ({o.audit_polls} polls; confirm: {o.confirm or 'not run'}); "
        f"gaps backfilled {_gaps(o, shards)}; reconnected ≤ {_worst(o.reconnected_s)}, "
        f"reconciled ≤ {_worst(o.reconciled_s)}; REST {_rest(o)}; recall {_recall(o)}; "
        f"{len(o.events.duplicates)} duplicates, {len(o.events.order_violations)} order violations"
    )


def _worst(values: dict[int, float]) -> str:
    return f"{max(values.values()):.1f} s ({len(values)} shards)" if values else "—"


def _gaps(o: Outage, shards: int) -> str:
    if not o.gap_records:
        return "no gap records"
    backfilled = sum(int(r.get("backfilled", 0)) for r in o.gap_records)
    late = sum(int(r.get("late", 0)) for r in o.gap_records)
    fallbacks = Counter(str(r["fallback"]) for r in o.gap_records if r.get("fallback"))
    return (
        f"{_secs(o.gaps_s)} ({o.gap_shards}/{shards} shards recovered, {len(o.gap_records)} records, "
        f"{backfilled} transitions backfilled, {late} late"
        + (f", fallbacks {dict(fallbacks)}" if fallbacks else "")
        + ")"
    )


def _backfill(o: Outage) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(o.backfill.items()) if v) or "none"


def _rest(o: Outage) -> str:
    parts = []
    for client, counts in sorted(o.rest.items()):
        families = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "429" and v)
        parts.append(
            f"{client}: {sum(v for k, v in counts.items() if k != '429')} ({families}), 429: {counts['429']}"
        )
    return "; ".join(parts) or "none"


def _recall(o: Outage) -> str:
    share = 100.0 * o.recall_found / o.recall_total if o.recall_total else 100.0
    return f"{share:.2f} % ({o.recall_found}/{o.recall_total})"


def _median(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "not reached"
    text = f"median {statistics.median(got):.1f} s, worst {max(got):.1f} s"
    return text + (f" ({len(values) - len(got)} runs not reached)" if len(got) < len(values) else "")


def table(outages: list[Outage], setup: dict[str, Any]) -> str:
    """The benchmark's table: one row per figure over every run, then the settings."""
    shards = int(setup["shards"])
    audit = [o.audit_pass_s for o in outages]
    met = all(v is not None and v <= TARGET_AUDIT_S for v in audit)
    rows = [
        ("drop → audit passes", _median(audit), f"≤ {TARGET_AUDIT_S:.0f} s", "yes" if met else "no"),
        ("drop → every agent streaming again (simulator)", _median([o.streaming_s for o in outages]), "", ""),
        (
            "full audit after the pass",
            " / ".join(o.confirm or "not run" for o in outages),
            "0 mismatches",
            "",
        ),
        ("drop → every gap backfilled", " / ".join(_gaps(o, shards) for o in outages), "", ""),
        ("backfill (workers' metrics)", " / ".join(_backfill(o) for o in outages), "", ""),
        ("drop → shards reconnected (worst)", " / ".join(_worst(o.reconnected_s) for o in outages), "", ""),
        ("drop → shards reconciled (worst)", " / ".join(_worst(o.reconciled_s) for o in outages), "", ""),
        (
            "audit poll length",
            _median([statistics.median(o.poll_s) if o.poll_s else None for o in outages]),
            "",
            "",
        ),
        ("REST calls during recovery, per OAuth client", " / ".join(_rest(o) for o in outages), "", ""),
        (
            "rate-limited (429) calls, recovery / whole run",
            " / ".join(f"{sum(c['429'] for c in o.rest.values())} / {o.rest_429_whole_run}" for o in outages),
            "0",
            "yes" if all(o.rest_429_whole_run == 0 for o in outages) else "no",
        ),
        ("recall, drop - 60 s → recovered", " / ".join(_recall(o) for o in outages), "100 %", ""),
        (
            "duplicate eventIds / order violations",
            " / ".join(f"{len(o.events.duplicates)} / {len(o.events.order_violations)}" for o in outages),
            "0 / 0",
            "yes"
            if all(not o.events.duplicates and not o.events.order_violations for o in outages)
            else "no",
        ),
    ]
    settings = ", ".join(f"{k} {v}" for k, v in setup.items())
    lines = [
        f"presence-bridge outage benchmark — {len(outages)} run(s); {settings}",
        "",
        "| measurement | result | target | met |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    return "\n".join(lines)


def measure_outage(
    runs: int = DEFAULT_RUNS,
    agents: int = AGENTS,
    workers: int = WORKERS,
    clients: int = CLIENTS,
    analytics_delay_s: float = DEFAULT_ANALYTICS_DELAY_S,
) -> tuple[list[Outage], dict[str, Any]]:
    """Run the benchmark; returns the runs' figures and the setup they were measured with."""
    return asyncio.run(_measure(runs, agents, workers, clients, analytics_delay_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--agents", type=int, default=AGENTS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument(
        "--analytics-delay-s",
        type=float,
        default=DEFAULT_ANALYTICS_DELAY_S,
        help="the simulator's analytics delay (default: its own); other values show what it bounds",
    )
    args = parser.parse_args()
    outages, setup = measure_outage(
        args.runs, args.agents, args.workers, args.clients, args.analytics_delay_s
    )
    print(table(outages, setup))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
