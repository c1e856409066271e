"""The chaos schedule: a seeded, pure list of faults over a run (no I/O).

:func:`build_schedule` draws faults from the catalogue :data:`FAULTS` at
random gaps (exponential, mean :data:`DEFAULT_MEAN_GAP_S`) until the run's
length, from ``random.Random(seed)`` only: the same arguments always give the
same schedule, so a failing seed can be replayed. Every fault carries its
parameters (durations, counts, a status) and a ``pick``, a random number the
runner uses to choose a target among what exists at that moment (a channel,
users to remove), so targets are reproducible given the same fleet state.

Rules that keep a schedule meaningful:

- a fault aimed at one worker (process signals, link faults) only takes a
  worker whose previous such fault has ended (plus :data:`RECOVERY_GAP_S`);
  when none is free another fault kind is drawn;
- ``broker_restart`` happens at most once per :data:`BROKER_RESTART_EVERY_S`
  and never while another broker restart is under way;
- every fault ends by the end of the schedule (its duration is cut to fit),
  so the settle phase starts from a fault-free fleet.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "BROKER_FAULTS",
    "DEFAULT_MEAN_GAP_S",
    "FAULTS",
    "KAFKA_LINK_FAULTS",
    "WORKER_FAULTS",
    "Fault",
    "build_schedule",
    "parse_faults",
]

#: Mean time between two faults (the issue's operator run: ~50 faults in 150 s).
DEFAULT_MEAN_GAP_S = 3.0
#: No fault in the first seconds: the fleet is seen healthy before anything breaks.
LEAD_IN_S = 2.0
#: A worker gets no new targeted fault this soon after the last one ended.
RECOVERY_GAP_S = 5.0
BROKER_RESTART_EVERY_S = 300.0
#: The group session the workers run with (the bridge's default); a freeze outlasts it.
KAFKA_SESSION_S = 6.0

#: Faults aimed at one worker process or at one worker's network link.
WORKER_FAULTS = frozenset(
    {
        "kill",
        "freeze",
        "restart",
        "kafka_blackhole",
        "kafka_latency",
        "kafka_reset",
        "genesys_blackhole",
        "genesys_latency",
        "genesys_reset",
    }
)
#: Link faults between a worker and Kafka (need a broker started by the run).
KAFKA_LINK_FAULTS = frozenset({"kafka_blackhole", "kafka_latency", "kafka_reset"})
#: Faults that restart the broker (need a broker started by the run).
BROKER_FAULTS = frozenset({"broker_restart"})

#: Every fault, with what it does (the runner implements each name).
FAULTS: dict[str, str] = {
    "drop": "simulator: abrupt TCP close of one channel's socket",
    "stall": "simulator: one socket sends nothing for a while (TCP intact)",
    "maintenance": "simulator: socket_closing on one channel, then the close",
    "expire": "simulator: one channel ends as at its expiry",
    "storm_429": "simulator: the next REST requests answer 429 with Retry-After",
    "storm_5xx": "simulator: the next REST requests answer 500/502/503/504",
    "malformed": "simulator: the next change frames are malformed",
    "duplicate": "simulator: the next change frames are sent twice",
    "out_of_order": "simulator: the next change frames arrive after a newer one",
    "revoke_tokens": "simulator: every live token stops working",
    "roster_add": "simulator: new agents join the roster",
    "roster_remove": "simulator: agents are deleted from the roster",
    "no_longer_subscribed": "simulator: one channel says no_longer_subscribed, then delivers no events",
    "subscription_changed": "simulator: one channel says subscription_changed, then delivers no events",
    "token_revoked": "simulator: one channel's token is revoked (token_revoked), sometimes ending it",
    "expand_drop": "simulator: the next user listings lack an expanded part (presence or routing status)",
    "restrict": "simulator: some agents' topics are rejected for a while (resubscribed before and after)",
    "kill": "worker: SIGKILL, started again after a pause",
    "freeze": "worker: SIGSTOP past the Kafka session, then SIGCONT",
    "restart": "worker: SIGTERM (graceful stop), then started again",
    "broker_restart": "Kafka: the broker stops and starts again",
    "kafka_blackhole": "toxiproxy: one worker's Kafka link passes no data for a while",
    "kafka_latency": "toxiproxy: one worker's Kafka link gets added latency",
    "kafka_reset": "toxiproxy: one worker's Kafka connections are reset (RST)",
    "genesys_blackhole": "toxiproxy: one worker's Genesys link passes no data for a while",
    "genesys_latency": "toxiproxy: one worker's Genesys link gets added latency",
    "genesys_reset": "toxiproxy: one worker's Genesys connections are reset (RST)",
}


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: when, what, on which worker, with which parameters."""

    at_s: float
    name: str
    worker: int | None = None
    duration_s: float = 0.0
    params: dict[str, float] = field(default_factory=dict)
    pick: int = 0

    def describe(self) -> str:
        """A one-line human description (no time)."""
        parts = [self.name]
        if self.worker is not None:
            parts.append(f"worker {self.worker}")
        parts.extend(f"{k}={_number(v)}" for k, v in sorted(self.params.items()))
        if self.duration_s:
            parts.append(f"for {self.duration_s:.1f}s")
        return " ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def parse_faults(text: str | None) -> frozenset[str]:
    """``--faults``: a comma list of fault names; ``all`` (or none) is every fault, ``-name`` removes one.

    ValueError names any unknown fault.
    """
    if not text or text.strip() == "all":
        return frozenset(FAULTS)
    names = {n.strip() for n in text.split(",") if n.strip()}
    excluded = {n[1:] for n in names if n.startswith("-")}
    included = {n for n in names if not n.startswith("-")}
    if not included or "all" in included:
        included = (included - {"all"}) | set(FAULTS)
    unknown = sorted((included | excluded) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults: {', '.join(unknown)} (known: {', '.join(sorted(FAULTS))})")
    return frozenset(included - excluded)


def _params(name: str, rng: random.Random) -> tuple[float, dict[str, float]]:
    """(duration, parameters) of one fault of kind ``name``."""
    match name:
        case "stall":
            return 0.0, {"seconds": round(rng.uniform(3.0, 20.0), 1)}
        case "maintenance":
            return 0.0, {"graceSeconds": round(rng.uniform(2.0, 30.0), 1)}
        case "storm_429":
            return 0.0, {"count": rng.randint(5, 60)}
        case "storm_5xx":
            return 0.0, {"count": rng.randint(5, 40), "status": rng.choice((500, 502, 503, 504))}
        case "malformed" | "duplicate" | "out_of_order":
            return 0.0, {"count": rng.randint(1, 20)}
        case "roster_add" | "roster_remove":
            return 0.0, {"count": rng.randint(1, 15)}
        case "token_revoked":
            return 0.0, {"endChannels": float(rng.random() < 0.5)}
        case "expand_drop":
            return 0.0, {"count": rng.randint(1, 200), "routingStatus": float(rng.random() < 0.5)}
        case "restrict":
            return round(rng.uniform(3.0, 15.0), 1), {"count": rng.randint(1, 5)}
        case "kill":
            return round(rng.uniform(0.5, 8.0), 1), {}
        case "freeze":
            return round(rng.uniform(KAFKA_SESSION_S + 2.0, KAFKA_SESSION_S + 12.0), 1), {}
        case "restart":
            return round(rng.uniform(0.0, 3.0), 1), {}
        case "broker_restart":
            return round(rng.uniform(1.0, 5.0), 1), {}
        case "kafka_blackhole" | "genesys_blackhole":
            return round(rng.uniform(3.0, 15.0), 1), {}
        case "kafka_latency" | "genesys_latency":
            return round(rng.uniform(5.0, 20.0), 1), {"latencyMs": rng.choice((100, 300, 1000, 3000))}
        case "kafka_reset" | "genesys_reset":
            return round(rng.uniform(0.5, 3.0), 1), {}
    return 0.0, {}


def build_schedule(
    seed: int,
    duration_s: float,
    workers: int,
    faults: Iterable[str],
    *,
    mean_gap_s: float = DEFAULT_MEAN_GAP_S,
) -> list[Fault]:
    """The faults of a run of ``duration_s`` seconds, in time order (see the module docstring)."""
    kinds = sorted(set(faults))
    if not kinds or duration_s <= LEAD_IN_S:
        return []
    rng = random.Random(seed)
    busy_until = [0.0] * workers
    broker_free_at = 0.0
    out: list[Fault] = []
    at = LEAD_IN_S
    while True:
        at += rng.expovariate(1.0 / mean_gap_s)
        if at >= duration_s:
            return out
        name = rng.choice(kinds)
        worker: int | None = None
        if name in WORKER_FAULTS:
            free = [w for w in range(workers) if busy_until[w] <= at]
            if not free:
                others = [k for k in kinds if k not in WORKER_FAULTS and k not in BROKER_FAULTS]
                if not others:
                    continue
                name = rng.choice(others)
            else:
                worker = rng.choice(free)
        if name in BROKER_FAULTS:
            if at < broker_free_at:
                continue
            broker_free_at = at + BROKER_RESTART_EVERY_S
        duration, params = _params(name, rng)
        duration = min(duration, max(0.0, duration_s - at))
        if worker is not None:
            busy_until[worker] = at + duration + RECOVERY_GAP_S
        out.append(Fault(round(at, 2), name, worker, duration, params, rng.randrange(1 << 30)))
