"""The demo's live view: what the simulator and the workers say, sampled into snapshots and drawn.

:class:`Sampler` reads the simulator's ``/sim/stats`` and ``/sim/truth`` and
each worker's ``/metrics`` into a :class:`Snapshot`; :class:`Screen` draws it
in place with plain ANSI escapes on a terminal, or prints one status line
every :data:`PLAIN_EVERY_S` otherwise. The processes themselves are
:mod:`bridge.demo`'s.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

__all__ = [
    "BOLD",
    "GREEN",
    "PLAIN_EVERY_S",
    "RED",
    "RESET",
    "Sampler",
    "Screen",
    "Snapshot",
    "ViewOptions",
    "WorkerStats",
    "bucket_quantile",
    "clock_text",
    "parse_metrics",
    "plural",
    "render_line",
    "render_screen",
]

#: How often a status line is printed when stdout is not a terminal.
PLAIN_EVERY_S = 5.0
#: Changes/s is averaged over this many samples.
RATE_WINDOW = 5
CLEAR_SCREEN = "\x1b[H\x1b[2J"
BOLD = "\x1b[1m"
GREEN = "\x1b[32m"
RED = "\x1b[31m"
RESET = "\x1b[0m"
DELIVERY_METRIC = "bridge_event_delivery_seconds"


class ViewOptions(Protocol):
    """The demo options the screen shows."""

    @property
    def agents(self) -> int: ...

    @property
    def workers(self) -> int: ...

    @property
    def seconds(self) -> float | None: ...

    @property
    def bootstrap(self) -> str: ...


# ----------------------------------------------------------------------------- metrics parsing


@dataclass
class WorkerStats:
    """What one worker's ``/metrics`` says."""

    up: bool = False
    shards: int = 0
    shard_ids: tuple[str, ...] = ()
    records: float = 0.0
    reconnects: float = 0.0
    reconciles: float = 0.0
    fenced: float = 0.0
    delivery_buckets: dict[float, float] = field(default_factory=dict)


def parse_metrics(text: str) -> WorkerStats:
    """The few series the demo shows, from Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    stats = WorkerStats(up=True)
    shard_ids: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "bridge_shards_owned":
                stats.shards = int(value)
            elif name == "bridge_shard_users" and value > 0:
                shard_ids.append(labels.get("shard", "?"))
            elif name == "bridge_records_produced_total":
                stats.records += value
            elif name == "bridge_channel_connects_total" and labels.get("reason") != "start":
                stats.reconnects += value
            elif name == "bridge_reconcile_runs_total":
                stats.reconciles += value
            elif name == "bridge_fenced_total":
                stats.fenced += value
            elif name == f"{DELIVERY_METRIC}_bucket":
                stats.delivery_buckets[float(labels["le"])] = value
    stats.shard_ids = tuple(sorted(shard_ids, key=lambda s: (len(s), s)))
    return stats


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` (None without data)."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    for bound, count in ordered:
        if count >= q * total:
            return bound
    return ordered[-1][0]


@dataclass
class Snapshot:
    """One sample of the whole demo, for the live view."""

    elapsed: float
    phase: str
    changes: int = 0
    changes_per_s: float = 0.0
    records_per_s: float = 0.0
    channels: int = 0
    connected: int = 0
    presence: Counter[str] = field(default_factory=Counter)
    routing: Counter[str] = field(default_factory=Counter)
    workers: list[WorkerStats] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    @property
    def records(self) -> float:
        return sum(w.records for w in self.workers)

    @property
    def reconnects(self) -> float:
        return sum(w.reconnects for w in self.workers)

    def delivery_p99(self) -> float | None:
        merged: dict[float, float] = {}
        for w in self.workers:
            for bound, count in w.delivery_buckets.items():
                merged[bound] = merged.get(bound, 0.0) + count
        return bucket_quantile(merged, 0.99)


def clock_text(seconds: float) -> str:
    """``mm:ss`` of a number of seconds."""
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def plural(n: int, word: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _counts(counter: Counter[str]) -> str:
    return " · ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"


def _p99_text(snap: Snapshot) -> str:
    p99 = snap.delivery_p99()
    if p99 is None:
        return "-"
    return "> 60 s" if math.isinf(p99) else f"≤ {p99 * 1000:.0f} ms"


def render_screen(snap: Snapshot, opts: ViewOptions, header: dict[str, str]) -> list[str]:
    """The terminal view as lines."""
    limit = clock_text(opts.seconds) if opts.seconds is not None else "Ctrl-C to stop"
    lines = [
        f"{BOLD}presence-bridge demo{RESET} — {opts.agents} agents, {plural(opts.workers, 'worker')}, "
        f"{header.get('shards', '?')} shards — {clock_text(snap.elapsed)} / {limit}   [{snap.phase}]",
        "",
        f"  genesys sim   {header.get('sim', '')}   channels {snap.connected}/{snap.channels} connected",
        f"  changes/s     {snap.changes_per_s:8.1f}      changes total  {snap.changes:,}",
        f"  records/s     {snap.records_per_s:8.1f}      records total  {int(snap.records):,}  "
        f"(kafka {opts.bootstrap})",
        f"  delivery p99  {_p99_text(snap):>8}      reconnects {int(snap.reconnects)}",
        "",
        f"  presence   {_counts(snap.presence)}",
        f"  routing    {_counts(snap.routing)}",
        "",
    ]
    for i, w in enumerate(snap.workers, start=1):
        if not w.up:
            lines.append(f"  worker {i}   (not answering)")
            continue
        ids = ",".join(w.shard_ids) or "-"
        lines.append(
            f"  worker {i}   shards {w.shards} [{ids}]   records {int(w.records):,}   "
            f"reconnects {int(w.reconnects)}   reconciliations {int(w.reconciles)}"
        )
    lines.append("")
    lines.append(f"  faults     {' · '.join(snap.faults) or 'scheduled half-way'}")
    lines.append(f"  logs       {header.get('dir', '')}")
    return lines


def render_line(snap: Snapshot) -> str:
    """One plain status line (stdout is not a terminal)."""
    shards = " ".join(
        f"w{i}={w.shards}" if w.up else f"w{i}=down" for i, w in enumerate(snap.workers, start=1)
    )
    return (
        f"demo {clock_text(snap.elapsed)} {snap.phase}: {snap.changes_per_s:.0f} changes/s, "
        f"{int(snap.records):,} records, channels {snap.connected}/{snap.channels}, "
        f"shards {shards}, reconnects {int(snap.reconnects)}, delivery p99 {_p99_text(snap)} | "
        f"{_counts(snap.presence)}"
    )


# ----------------------------------------------------------------------------- sampling and drawing


class Sampler:
    """Snapshots of the simulator and the workers over ``http`` (an ``httpx.Client``), with the rates."""

    def __init__(self, http: Any) -> None:
        self._http = http
        self._history: list[tuple[float, int, float]] = []

    def get(self, url: str) -> Any:
        """The response to ``GET url``, or None when it fails (a child restarting or not up yet)."""
        try:
            response = self._http.get(url)
            response.raise_for_status()
        except Exception:  # a child restarting or not up yet: show it as down
            return None
        return response

    def sample(
        self, sim_url: str, metrics_urls: Sequence[str], *, elapsed: float, phase: str, faults: list[str]
    ) -> Snapshot:
        """One snapshot of the simulator at ``sim_url`` and the workers' ``/metrics`` at ``metrics_urls``."""
        snap = Snapshot(elapsed=elapsed, phase=phase, faults=list(faults))
        stats = self.get(f"{sim_url}/sim/stats")
        if stats is not None:
            doc = stats.json()
            snap.changes = int(doc.get("changesEmitted", 0))
            channels = doc.get("channels", [])
            snap.channels = len(channels)
            snap.connected = sum(1 for c in channels if c.get("connected"))
        truth = self.get(f"{sim_url}/sim/truth")
        if truth is not None:
            for user in truth.json().get("users", {}).values():
                snap.presence[user["presence"]["systemPresence"]] += 1
                snap.routing[user["routingStatus"]["status"]] += 1
        for url in metrics_urls:
            response = self.get(url)
            snap.workers.append(parse_metrics(response.text) if response is not None else WorkerStats())
        now = time.monotonic()
        self._history.append((now, snap.changes, snap.records))
        self._history = self._history[-RATE_WINDOW:]
        t0, c0, r0 = self._history[0]
        if now > t0:
            snap.changes_per_s = (snap.changes - c0) / (now - t0)
            snap.records_per_s = (snap.records - r0) / (now - t0)
        return snap


class Screen:
    """Where the demo writes: the live view redrawn on a terminal, a status line now and then otherwise."""

    def __init__(self, opts: ViewOptions, out: TextIO = sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.tty = out.isatty()
        self.header: dict[str, str] = {}
        """Shown in the view: ``dir``, ``shards``, ``sim``."""
        self._last_plain = -PLAIN_EVERY_S

    def say(self, text: str) -> None:
        """One line of text."""
        print(text, file=self.out, flush=True)

    def show(self, snap: Snapshot) -> None:
        """Redraw the view (terminal) or print a status line when one is due."""
        if self.tty:
            self.out.write(CLEAR_SCREEN + "\n".join(render_screen(snap, self.opts, self.header)) + "\n")
            self.out.flush()
        elif snap.elapsed - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = snap.elapsed
            self.say(render_line(snap))
