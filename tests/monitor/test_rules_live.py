"""Every alert rule of the chart fires on the real failure it describes, then resolves.

The Prometheus server loads the chart's rendered PrometheusRule on a clock
:data:`~tests.monitor.rules.TIME_SCALE` (30) times faster than production
(:func:`~tests.monitor.rules.scale_rules`: ``for:``, range windows and the
heartbeat-age threshold divided by 30, nothing else changed; the test
simulator heartbeats every second where Genesys heartbeats every 30 s). So
``for: 2m`` is 4 s here and ``[5m]`` is ``[10s]``.

Each alert has a :class:`Scenario`: the failure is caused for real against
the fleet of :mod:`tests.monitor.stack`, the test waits for the alert to be
``firing`` no later than its (scaled) ``for:`` plus two evaluation intervals
after it became active (``activeAt``, when its expression first held), then
ends the failure and waits for the alert to resolve. The scenarios run as one
campaign (:func:`campaign`), several at once where they do not disturb each
other, so the whole campaign fits the test budget; each alert is then
reported by its own test. An alert of the chart with no scenario fails
:func:`test_every_alert_has_a_scenario`.

Worker w2 has a lax watchdog (see :data:`~tests.monitor.stack.LAX_WATCHDOG_ENV`):
``BridgeHeartbeatStale`` fires only when a silent socket is not reconnected,
which the production watchdog (2.5 heartbeats < the 3-heartbeat threshold)
never allows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.fleet.conftest import WorkerProcess
from tests.monitor.rules import TIME_SCALE, parse_duration, scale_rules
from tests.monitor.stack import EVAL_INTERVAL_S, MonitoredFleet

pytestmark = pytest.mark.kafka

#: How often the watcher reads /api/v1/alerts; also the slack on every measured time.
POLL_S = 0.25
#: A failure must make its alert active (expression true) within this.
ACTIVE_TIMEOUT_S = 45.0
#: After the failure ends, the alert must resolve within its longest window plus this.
RESOLVE_SLACK_S = 20.0
#: Zombie rounds: a SIGSTOPped worker is taken over after the group session (6 s).
#: Long enough for the new owner to finish its takeover (init_transactions) while the zombie
#: sleeps, so the zombie's first write after SIGCONT is fenced rather than revoked cleanly.
ZOMBIE_PAUSE_S = 10.0
#: BridgeFenced needs more than 3 fences in its window.
FENCES_NEEDED = 4
MAX_ZOMBIE_ROUNDS = 4
#: A resumed zombie tries to commit at once; Prometheus sees its fence within a few scrapes.
FENCE_TIMEOUT_S = 15.0
FENCED_DONE_TIMEOUT_S = 120.0
#: How long a zombie round waits for every worker to own a shard again (then it goes anyway).
BALANCE_TIMEOUT_S = 30.0
#: Broker "slow" cycle: frozen, then running. Frozen less than the session timeout.
SLOW_BROKER_FROZEN_S = 4.0
SLOW_BROKER_RUNNING_S = 1.0
#: The broker stays down this long at least (the sink's commit times out after 5 s).
BROKER_DOWN_MIN_S = 6.0
#: Shorter than w2's lax silence limit (20 s), longer than the scaled threshold (3 s) + for: (2 s).
STALL_S = 8.0
#: pytest-timeout counts the campaign (about 2.5 minutes here) against the first alert test.
CAMPAIGN_TIMEOUT_S = 600
CHANNELS_API = "/api/v2/notifications/channels"


def _parse_time(text: str) -> float:
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


class AlertWatcher:
    """Polls Prometheus's alerts in a thread; answers when an alert fired or resolved."""

    def __init__(self, m: MonitoredFleet) -> None:
        self._m = m
        self._lock = threading.Lock()
        self._states: dict[str, tuple[str, float | None]] = {}
        self._first_firing: dict[tuple[str, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                now = time.time()
                alerts = self._m.prometheus.alerts()
                seen: dict[str, tuple[str, float | None]] = {}
                for alert in alerts:
                    name = alert["labels"]["alertname"]
                    active = _parse_time(alert["activeAt"]) if alert.get("activeAt") else None
                    state = alert["state"]
                    if name not in seen or (state == "firing" and seen[name][0] != "firing"):
                        seen[name] = (state, active)
                with self._lock:
                    self._states = seen
                    for name, (state, active) in seen.items():
                        if state == "firing" and active is not None:
                            self._first_firing.setdefault((name, active), now)
            self._stop.wait(POLL_S)

    def state(self, name: str) -> tuple[str, float | None]:
        with self._lock:
            entry = self._states.get(name)
        return ("inactive", None) if entry is None else entry

    def wait_firing(self, name: str, since: float, timeout_s: float, for_s: float) -> tuple[float, float]:
        """(first time seen firing, activeAt) of the first firing episode seen after ``since``.

        The alert must become active within ``timeout_s``. On this clock (30 times faster) a rate
        window is seconds long, so a harsh failure can reset a pending alert once or twice before
        its ``for:`` holds: while it is pending the wait lasts until ``for:`` plus two evaluations
        after its latest activeAt (bounded by twice ``timeout_s``); how long it then took to fire
        is still asserted from that activeAt.
        """
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                episodes = sorted(
                    (first, active)
                    for (n, active), first in self._first_firing.items()
                    if n == name and first >= since
                )
            if episodes:
                return episodes[0]
            state, active = self.state(name)
            if state == "pending" and active is not None:
                settled = time.monotonic() + (active - time.time()) + for_s + 2 * EVAL_INTERVAL_S + 1.0
                deadline = min(max(deadline, settled), start + 2 * timeout_s)
            time.sleep(POLL_S / 2)
        raise AssertionError(
            f"{name} not firing within {time.monotonic() - start:.0f} s (state {self.state(name)[0]})"
        )

    def wait_resolved(self, name: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state(name)[0] == "inactive":
                return time.time()
            time.sleep(POLL_S / 2)
        raise AssertionError(f"{name} still {self.state(name)[0]} {timeout_s:.0f} s after the failure ended")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Outcome:
    """What one scenario measured (wall-clock seconds)."""

    alert: str
    failure: str
    for_s: float
    started: float = 0.0
    active_at: float = 0.0
    firing_at: float = 0.0
    ended: float = 0.0
    resolved_at: float = 0.0
    error: str | None = None

    @property
    def to_firing_s(self) -> float:
        return self.firing_at - self.started

    @property
    def to_resolved_s(self) -> float:
        return self.resolved_at - self.ended


@dataclass
class Context:
    m: MonitoredFleet
    watcher: AlertWatcher
    rules: dict[str, dict[str, Any]]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    deferred: list[Outcome] = field(default_factory=list)
    fenced_done: threading.Event = field(default_factory=threading.Event)

    def for_s(self, alert: str) -> float:
        return parse_duration(str(self.rules[alert].get("for", "0s")))

    def window_s(self, alert: str) -> float:
        windows = re.findall(r"\[(\w+)\]", str(self.rules[alert]["expr"]))
        return max((parse_duration(w) for w in windows), default=0.0)

    @contextlib.contextmanager
    def failure(self, alert: str, description: str) -> Iterator[Outcome]:
        """Time one alert: the body causes the failure and returns once it is firing."""
        outcome = Outcome(alert, description, self.for_s(alert), started=time.time())
        self.outcomes[alert] = outcome
        yield outcome

    def fire(self, outcome: Outcome) -> None:
        outcome.firing_at, outcome.active_at = self.watcher.wait_firing(
            outcome.alert, outcome.started, ACTIVE_TIMEOUT_S + outcome.for_s, outcome.for_s
        )

    def defer_resolve(self, outcome: Outcome) -> None:
        """The failure has ended; check the resolution after the other scenarios (long windows)."""
        outcome.ended = time.time()
        self.deferred.append(outcome)

    def resolve(self, outcome: Outcome, ended: bool = False) -> None:
        if not ended:
            outcome.ended = time.time()
        outcome.resolved_at = self.watcher.wait_resolved(
            outcome.alert, self.window_s(outcome.alert) + outcome.for_s + RESOLVE_SLACK_S
        )


def _repeat(action: Callable[[], None], every_s: float, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                action()
            stop.wait(every_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def repeating(action: Callable[[], None], every_s: float) -> Iterator[None]:
    """Keep injecting a fault until the block ends."""
    stop = threading.Event()
    thread = _repeat(action, every_s, stop)
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


# ----------------------------------------------------------------------------- scenarios


def roster_beyond_budget(ctx: Context) -> None:
    """100 agents join a 250-agent org whose channel budget holds 300; then they leave."""
    m = ctx.m
    # A coordinator paused by the zombie rounds would take its gauge with it and reset for:.
    ctx.fenced_done.wait(FENCED_DONE_TIMEOUT_S)
    with ctx.failure("BridgeRosterUnassigned", "roster 350 > budget 300 (POST /sim/users)") as out:
        ids = m.sim_admin("POST", "/sim/users", count=100)["ids"]
        ctx.fire(out)
        for uid in ids:
            m.sim_admin("DELETE", f"/sim/users/{uid}")
        ctx.resolve(out)


def malformed_frames(ctx: Context) -> None:
    """The simulator corrupts two change frames a second until the DLQ alert fires."""
    m = ctx.m
    with ctx.failure("BridgeDLQGrowing", "2 malformed frames/s (/sim/faults/frames)") as out:
        corrupt = functools.partial(m.sim_admin, "POST", "/sim/faults/frames", kind="malformed", count=2)
        with repeating(corrupt, 1.0):
            ctx.fire(out)
        ctx.resolve(out)


def rate_limit_storm(ctx: Context) -> None:
    """Two 429s a second on the users API (roster and reconciliation requests)."""
    m = ctx.m
    with ctx.failure("BridgeRateLimited", "429 storm on /api/v2/users (/sim/faults/http)") as out:
        storm = functools.partial(
            m.sim_admin, "POST", "/sim/faults/http", status=429, count=2, pathPrefix="/api/v2/users"
        )
        with repeating(storm, 1.0):
            ctx.fire(out)
        m.drain_http_faults("/api/v2/users", 429)
        ctx.resolve(out)


def stalled_socket(ctx: Context) -> None:
    """Every socket goes silent for 8 s; w2's lax watchdog keeps its shards 'subscribed'."""
    m = ctx.m
    with ctx.failure(
        "BridgeHeartbeatStale", "sockets stalled 8 s (/sim/faults/stall), lax watchdog on w2"
    ) as out:
        m.sim_admin("POST", "/sim/faults/stall", seconds=STALL_S)
        ctx.fire(out)
        time.sleep(max(0.0, out.started + STALL_S - time.time()))
        ctx.resolve(out)


def channel_cannot_be_recreated(ctx: Context) -> None:
    """Every channel expires and every channel request gets 503 until the alert fires."""
    m = ctx.m
    with ctx.failure("BridgeShardDisconnected", "channels expired + 503 storm on the channel API") as out:
        storm = functools.partial(
            m.sim_admin, "POST", "/sim/faults/http", status=503, count=10, pathPrefix=CHANNELS_API
        )
        with repeating(storm, 0.5):
            time.sleep(0.5)
            m.sim_admin("POST", "/sim/faults/expire")
            ctx.fire(out)
        m.drain_http_faults(CHANNELS_API, 503)
        ctx.resolve(out)


def zombie_rounds(ctx: Context) -> None:
    """The busiest worker is SIGSTOPped past its session, taken over and SIGCONTed: it is fenced.

    Before each round every worker owns a shard again (:func:`wait_balanced`): a worker
    just fenced restarts its shards after a pause, and a round started before it is back
    has nobody to take the victim's shards over, so nothing is fenced (two of four rounds
    fenced nothing that way: BridgeFenced fired after 82 s, 47 s with the wait). So two
    rounds usually fence 2 + 2 shard writers, more than the rule's 3.
    """
    m = ctx.m
    try:
        with ctx.failure(
            "BridgeFenced", "busiest worker SIGSTOP 10 s / SIGCONT, twice or more (zombies fenced)"
        ) as out:
            for _round in range(MAX_ZOMBIE_ROUNDS):
                if ctx.watcher.state("BridgeFenced")[0] == "firing":
                    break
                victim = busiest_worker(m, wait_balanced(m))
                before = victim_fences(m, victim.name)
                victim.signal(signal.SIGSTOP)
                time.sleep(ZOMBIE_PAUSE_S)
                victim.signal(signal.SIGCONT)
                deadline = time.monotonic() + FENCE_TIMEOUT_S
                while victim_fences(m, victim.name) <= before and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                time.sleep(2 * EVAL_INTERVAL_S)  # the rule sees the new fences
            ctx.fire(out)
            ctx.defer_resolve(out)
    finally:
        ctx.fenced_done.set()
    m.settle()


def wait_balanced(m: MonitoredFleet) -> dict[str, dict[str, Any]]:
    """Until the fleet is settled and every live worker owns at least one shard (or a timeout);
    the workers' views then."""
    deadline = time.monotonic() + BALANCE_TIMEOUT_S
    while True:
        m.settle()
        views = asyncio.run(m.fleet.views([m.worker(name) for name in sorted(m.ports)]))
        balanced = len(views) == len(m.ports) and all(v.get("partitions") for v in views.values())
        if balanced or time.monotonic() > deadline:
            return views
        time.sleep(POLL_S)


def busiest_worker(m: MonitoredFleet, views: dict[str, dict[str, Any]]) -> WorkerProcess:
    """The live worker owning the most shards in ``views`` (its writers are the ones fenced)."""
    live = [m.worker(name) for name in sorted(m.ports)]
    return max(live, key=lambda w: len(views.get(w.name, {}).get("partitions", [])))


def victim_fences(m: MonitoredFleet, worker: str) -> float:
    """The worker's bridge_fenced_total as Prometheus last scraped it (0 when unknown)."""
    result = m.prometheus.query(f'sum(bridge_fenced_total{{pod="{m.pod_name(worker)}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def slow_broker(ctx: Context) -> None:
    """The broker is frozen 4 s of every 5 s: every change waits seconds for its commit."""
    m = ctx.m
    with ctx.failure("BridgeDeliveryLatencyHigh", "broker SIGSTOP 4 s / SIGCONT 1 s cycles") as out:
        stop = threading.Event()

        def cycle() -> None:
            while not stop.is_set():
                m.freeze_broker(True)
                time.sleep(SLOW_BROKER_FROZEN_S)
                m.freeze_broker(False)
                stop.wait(SLOW_BROKER_RUNNING_S)

        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        try:
            ctx.fire(out)
        finally:
            stop.set()
            thread.join(10)
            m.freeze_broker(False)
        ctx.resolve(out)


def broker_down(ctx: Context) -> None:
    """The broker is stopped until the delivery alert fires, then started again."""
    m = ctx.m
    with ctx.failure("BridgeKafkaDeliveryFailing", "broker stopped (then restarted)") as out:
        m.stop_broker()
        try:
            time.sleep(BROKER_DOWN_MIN_S)
            ctx.fire(out)
        finally:
            m.start_broker()
        ctx.resolve(out)


def all_workers_killed(ctx: Context) -> None:
    """Both workers are SIGKILLed; then started again on their ports."""
    m = ctx.m
    with ctx.failure("BridgeDown", "both workers SIGKILLed (then restarted)") as out:
        for name in sorted(m.ports):
            m.worker(name).kill()
        ctx.fire(out)
        for name in sorted(m.ports):
            m.start_worker(name)
        ctx.resolve(out)


#: Alert → scenario. The campaign runs them in :data:`PHASES`.
SCENARIOS: dict[str, Callable[[Context], None]] = {
    "BridgeRosterUnassigned": roster_beyond_budget,
    "BridgeDLQGrowing": malformed_frames,
    "BridgeRateLimited": rate_limit_storm,
    "BridgeHeartbeatStale": stalled_socket,
    "BridgeShardDisconnected": channel_cannot_be_recreated,
    "BridgeFenced": zombie_rounds,
    "BridgeDeliveryLatencyHigh": slow_broker,
    "BridgeKafkaDeliveryFailing": broker_down,
    "BridgeDown": all_workers_killed,
}
#: Phases run one after the other; within a phase each track runs in its own thread, its
#: scenarios in order. BridgeFenced's window is the longest (1 h, 2 min here): it goes first
#: and its resolution is awaited after the last phase.
PHASES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (
        ("BridgeFenced", "BridgeHeartbeatStale", "BridgeShardDisconnected"),
        ("BridgeRosterUnassigned",),
        ("BridgeDLQGrowing",),
        ("BridgeRateLimited",),
        ("BridgeDeliveryLatencyHigh",),
    ),
    (("BridgeKafkaDeliveryFailing",),),
    (("BridgeDown",),),
)


def _run_track(ctx: Context, track: tuple[str, ...]) -> None:
    for alert in track:
        try:
            SCENARIOS[alert](ctx)
        except Exception as exc:  # reported by the alert's own test
            if alert in ctx.outcomes:
                ctx.outcomes[alert].error = f"{type(exc).__name__}: {exc}"
            else:
                ctx.outcomes[alert] = Outcome(alert, "", 0.0, error=f"{type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def campaign(monitored: MonitoredFleet) -> dict[str, Outcome]:
    """Every scenario, once; alert → outcome. Prints the table of measured times."""
    rules = {
        r["alert"]: r for g in scale_rules(monitored.chart.rules, TIME_SCALE)["groups"] for r in g["rules"]
    }
    monitored.settle()
    watcher = AlertWatcher(monitored)
    ctx = Context(monitored, watcher, rules)
    try:
        for phase in PHASES:
            with concurrent.futures.ThreadPoolExecutor(len(phase)) as pool:
                list(pool.map(lambda track: _run_track(ctx, track), phase))
        for outcome in ctx.deferred:
            try:
                ctx.resolve(outcome, ended=True)
            except AssertionError as exc:
                outcome.error = str(exc)
    finally:
        watcher.close()
    lines = [f"\n{'alert':28} {'for':>5} {'to firing':>9} {'to resolved':>11}  failure"]
    for o in ctx.outcomes.values():
        lines.append(
            f"{o.alert:28} {o.for_s:4.0f}s {o.to_firing_s:8.1f}s {o.to_resolved_s:10.1f}s  {o.failure}"
            + (f"  ERROR {o.error}" if o.error else "")
        )
    sys.stderr.write("\n".join(lines) + "\n")
    return ctx.outcomes


def _alerts(m: MonitoredFleet) -> list[str]:
    return [r["alert"] for g in m.chart.rules["groups"] for r in g["rules"]]


def test_every_alert_has_a_scenario(monitored: MonitoredFleet) -> None:
    """Each alert the chart renders is provoked by exactly one scenario of the campaign."""
    planned = [a for phase in PHASES for track in phase for a in track]
    assert sorted(planned) == sorted(SCENARIOS) == sorted(_alerts(monitored))


@pytest.mark.timeout(CAMPAIGN_TIMEOUT_S)
@pytest.mark.parametrize("alert", sorted(SCENARIOS))
def test_alert_fires_on_its_failure_and_resolves(campaign: dict[str, Outcome], alert: str) -> None:
    """The alert fires within for: + 2 evaluations of becoming active, and resolves once the failure ends."""
    outcome = campaign[alert]
    assert outcome.error is None, outcome.error
    # activeAt may precede the scenario (the dashboard tests' faults), never the firing.
    assert outcome.active_at <= outcome.firing_at and outcome.firing_at >= outcome.started
    assert outcome.firing_at - outcome.active_at <= outcome.for_s + 2 * EVAL_INTERVAL_S + POLL_S * 2
    assert outcome.resolved_at > outcome.ended
