"""Run one chaos schedule against a live fleet and judge it.

Phases, each printed: start everything (:class:`~bridge.chaos.env.Environment`),
the simulator's generator paused; wait until the fleet covers every agent
and Kafka agrees with Genesys (a fleet that never gets there fails before
any fault); start the generator and run the schedule,
one timeline line per fault as it starts (and one as a fault with a
duration ends), restarting any worker that exits on its own (a crash, which
fails the verdict); then stop injecting, pause the simulator's generator (so
that Genesys's truth stands still) and let the fleet settle: poll the
checks until every invariant holds in :data:`STABLE_CHECKS` checks in a row
(no agent owed a backfill among them: a gap whose history was unavailable is
retried in the background and its transitions written late, and the verdict
waits for them) or ``settle_s`` passes; last, read the
event topics for duplicates and order, measure recall, print the verdict.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.audit import check_events, read_events
from bridge.chaos.checker import Verdict, coverage, missed_changes, missed_lines, recall, state_mismatches
from bridge.chaos.env import Environment
from bridge.chaos.faults import apply_fault
from bridge.chaos.schedule import BROKER_FAULTS, KAFKA_LINK_FAULTS, Fault, build_schedule
from bridge.genesys.rest import GenesysRest
from bridge.sim.config import DEFAULT_ANALYTICS_DELAY_S
from bridge.worker import genesys_rest

__all__ = ["DEFAULT_SETTLE_S", "DEFAULT_STARTUP_S", "ChaosOptions", "run_chaos"]

DEFAULT_SETTLE_S = 180.0
DEFAULT_STARTUP_S = 180.0
#: Between two checks while waiting (each reads the whole state topic and roster).
CHECK_INTERVAL_S = 5.0
#: Consecutive passing checks that count as settled: a fleet that is right for one
#: instant (a frozen zombie's channel not yet back, a removal not yet applied) is not.
STABLE_CHECKS = 2
#: Mismatches and findings printed before the rest are only counted.
MAX_PRINTED = 30


@dataclass(frozen=True)
class ChaosOptions:
    """What ``presence-bridge chaos`` was asked to do."""

    seed: int
    minutes: float
    workers: int
    agents: int
    faults: frozenset[str]
    toxiproxy: Path
    settle_s: float = DEFAULT_SETTLE_S
    startup_s: float = DEFAULT_STARTUP_S
    bootstrap: str | None = None
    keep: Path | None = None
    events_per_sec: float | None = None
    shard_capacity: int | None = None
    mean_gap_s: float | None = None
    #: The simulator's ``--analytics-delay-s`` (None: its default, 5 s).
    analytics_delay_s: float | None = None


class _Run:
    def __init__(self, opts: ChaosOptions, env: Environment, out: Callable[[str], None]) -> None:
        self.opts = opts
        self.env = env
        self.out = out
        self.t0 = time.monotonic()
        self.errors: list[str] = []
        self.crashes: list[str] = []
        self.applied = 0
        self.skipped = 0
        # A worker's process fault can outlast its schedule slot (a slow graceful stop):
        # the next fault aimed at that worker is then skipped, never run on top of it.
        self.busy: list[asyncio.Lock] = [asyncio.Lock() for _ in range(opts.workers)]

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.t0:7.1f}s] {text}")

    async def checks(self, rest: GenesysRest) -> tuple[bool, str, Verdict]:
        """Run the state and coverage checks once: (all hold, one-line summary, partial verdict)."""
        settings = self.env.checker_settings()
        verdict = Verdict(self.opts.seed, 0)
        state = await state_mismatches(settings, rest)
        verdict.agents, verdict.mismatches, verdict.owed = state.agents, state.mismatches, state.owed
        truth = (await self.env.sim_admin("GET", "/sim/truth"))["users"]
        stats = await self.env.sim_admin("GET", "/sim/stats")
        verdict.coverage = coverage(truth, stats["channels"])
        ok = not verdict.mismatches and not verdict.owed and verdict.coverage.ok
        kinds: dict[str, int] = {}
        for m in verdict.mismatches:
            kinds[m.field] = kinds.get(m.field, 0) + 1
        summary = (
            f"{verdict.agents} agents, {len(verdict.mismatches)} mismatches {kinds or ''}, "
            f"{len(verdict.coverage.uncovered)} uncovered, "
            f"{len(verdict.coverage.multiply_covered)} multiply covered, "
            f"{len(verdict.owed)} owed a backfill"
        )
        return ok, summary, verdict

    async def wait_until_good(
        self, rest: GenesysRest, limit_s: float, what: str
    ) -> tuple[bool, Verdict, float]:
        start = time.monotonic()
        last_summary = ""
        passes = 0
        while True:
            self.watch_workers()
            try:
                ok, summary, verdict = await self.checks(rest)
            except Exception as exc:
                ok, summary, verdict = False, f"check failed: {exc!r}", Verdict(self.opts.seed, 0)
            elapsed = time.monotonic() - start
            passes = passes + 1 if ok else 0
            if passes >= STABLE_CHECKS:
                self.say(f"{what}: every invariant holds after {elapsed:.0f}s ({summary})")
                return True, verdict, elapsed
            if summary != last_summary:
                self.say(f"{what}: {summary}")
                last_summary = summary
            if elapsed >= limit_s:
                self.say(f"{what}: gave up after {elapsed:.0f}s")
                return False, verdict, elapsed
            await asyncio.sleep(CHECK_INTERVAL_S)

    def watch_workers(self) -> None:
        for worker in self.env.worker_procs:
            if self.busy[worker.index].locked():
                continue  # a fault is stopping or restarting it
            code = worker.check_crash()
            if code is not None:
                self.crashes.append(f"worker {worker.index} exited with {code}")
                self.say(f"CRASH: worker {worker.index} exited on its own with {code}; starting it again")
                worker.start()

    async def one_fault(self, fault: Fault) -> None:
        if fault.worker is None:
            await self._apply(fault)
            return
        lock = self.busy[fault.worker]
        if lock.locked():
            self.skipped += 1
            self.say(f"  skipped {fault.name}: worker {fault.worker} still busy with its previous fault")
            return
        async with lock:
            await self._apply(fault)

    async def _apply(self, fault: Fault) -> None:
        self.applied += 1
        try:
            note = await apply_fault(self.env, fault)
        except Exception as exc:
            self.errors.append(f"{fault.describe()}: {exc!r}")
            self.say(f"HARNESS ERROR in {fault.describe()}: {exc!r}")
            return
        if fault.duration_s:
            self.say(
                f"  end of {fault.name}{'' if fault.worker is None else f' worker {fault.worker}'}: {note}"
            )
        else:
            self.say(f"  {note}")

    async def schedule(self, faults: list[Fault]) -> None:
        start = time.monotonic()
        tasks = []
        for fault in faults:
            delay = start + fault.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.watch_workers()
            self.say(f"fault {fault.describe()}")
            tasks.append(asyncio.create_task(self.one_fault(fault)))
        rest = start + self.opts.minutes * 60 - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        await asyncio.gather(*tasks)
        self.watch_workers()


def _available(opts: ChaosOptions) -> frozenset[str]:
    if opts.bootstrap is None:
        return opts.faults
    return opts.faults - KAFKA_LINK_FAULTS - BROKER_FAULTS


async def run_chaos(opts: ChaosOptions, out: Callable[[str], None] = print) -> int:
    """Run the whole chaos scenario; 0 only when every invariant holds."""
    run_dir = opts.keep or Path(tempfile.mkdtemp(prefix="presence-bridge-chaos-"))
    faults = _available(opts)
    if faults != opts.faults:
        out(
            "chaos: --bootstrap given: no broker restarts or Kafka link faults "
            f"({', '.join(sorted(opts.faults - faults))})"
        )
    schedule = build_schedule(
        opts.seed,
        opts.minutes * 60,
        opts.workers,
        faults,
        **({"mean_gap_s": opts.mean_gap_s} if opts.mean_gap_s else {}),
    )
    env = Environment(
        run_dir=run_dir,
        workers=opts.workers,
        agents=opts.agents,
        seed=opts.seed,
        events_per_sec=opts.events_per_sec
        if opts.events_per_sec is not None
        else max(1.0, opts.agents / 100),
        toxiproxy_bin=opts.toxiproxy,
        bootstrap=opts.bootstrap,
        shard_capacity=opts.shard_capacity,
        analytics_delay_s=DEFAULT_ANALYTICS_DELAY_S
        if opts.analytics_delay_s is None
        else opts.analytics_delay_s,
    )
    run = _Run(opts, env, out)
    verdict = Verdict(opts.seed, len(schedule))
    try:
        await env.start()
        run.say(
            f"chaos: seed={opts.seed} workers={opts.workers} agents={opts.agents} faults={len(schedule)} "
            f"over {opts.minutes:g} min; simulator {env.sim_url} (analytics delay "
            f"{env.analytics_delay_s:g}s), Kafka {env.broker_bootstrap}, "
            f"fleet {env.bridge_id}, logs in {run_dir}"
        )
        settings = env.checker_settings()
        rest = genesys_rest(settings, settings.clients()[0])
        try:
            ready, _, _ = await run.wait_until_good(rest, opts.startup_s, "startup")
            if not ready:
                run.errors.append("the fleet never converged before the first fault")
            else:
                first_seq = int((await env.sim_admin("GET", "/sim/stats"))["lastSeq"])
                await env.sim_admin("POST", "/sim/generator", {"paused": False})
                await run.schedule(schedule)
                run.say("schedule done: no more faults; generator paused, settling")
                await env.sim_admin("POST", "/sim/generator", {"paused": True})
                settled, final, settle_s = await run.wait_until_good(rest, opts.settle_s, "settle")
                verdict.agents, verdict.mismatches, verdict.owed, verdict.coverage = (
                    final.agents,
                    final.mismatches,
                    final.owed,
                    final.coverage,
                )
                verdict.settled, verdict.settle_s = settled, settle_s
                records = await asyncio.to_thread(read_events, settings)
                verdict.events = check_events(records)
                log = await _sim_log(env, first_seq)
                topics = {settings.topic_presence: "presence", settings.topic_routing_status: "routingStatus"}
                verdict.recall_found, verdict.recall_total = recall(log, records, topics)
                verdict.recall_missed = missed_changes(log, records, topics)
        finally:
            await rest.aclose()
    except Exception as exc:
        run.errors.append(repr(exc))
        run.say(f"HARNESS ERROR: {exc!r}")
    except asyncio.CancelledError:
        run.say(f"chaos: stopped before its verdict; logs kept in {run_dir}")
        raise
    finally:
        await env.close()
    verdict.crashes = run.crashes
    verdict.faults, verdict.skipped = run.applied, run.skipped
    verdict.harness_errors = run.errors
    for line in _findings(verdict)[:MAX_PRINTED]:
        out(line)
    out(verdict.line())
    for line in missed_lines(verdict.recall_missed, verdict.recall_found, verdict.recall_total):
        out(line)
    if opts.keep is None:
        if verdict.passed:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            out(f"chaos: logs kept in {run_dir}")
    return 0 if verdict.passed else 1


def _findings(verdict: Verdict) -> list[str]:
    lines = [m.line() for m in verdict.mismatches]
    lines.extend(verdict.events.lines())
    lines.extend(f"uncovered {u}" for u in verdict.coverage.uncovered)
    lines.extend(f"multiply covered {u}" for u in verdict.coverage.multiply_covered)
    lines.extend(f"owed a backfill {u}" for u in verdict.owed)
    lines.extend(f"crash: {c}" for c in verdict.crashes)
    lines.extend(f"harness error: {e}" for e in verdict.harness_errors)
    return lines


async def _sim_log(env: Environment, since: int) -> list[dict[str, object]]:
    """The simulator's change log after ``since`` (paged)."""
    out: list[dict[str, object]] = []
    while True:
        page = await env.sim_admin("GET", f"/sim/events?since={since}&limit=100000")
        out.extend(page["events"])
        if not page["events"] or page["events"][-1]["seq"] >= page["lastSeq"]:
            return out
        since = int(page["events"][-1]["seq"])
