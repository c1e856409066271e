"""Agents moving through a working day, at a configured overall rate of changes.

Each agent has a next-change point on a virtual timeline (dwell times drawn
from an exponential distribution whose mean depends on the state: a meal lasts
longer than an idle spell). The generator pops the agent due next and moves it
one step, as many steps per tick as the configured changes-per-second allow,
so the overall rate is exact while relative dwell times stay realistic. The
sequence of changes (user, kind, value) depends only on the seed and on the
admin actions taken, not on timing.

The state machine works from the ground truth, so admin changes are simply
where an agent continues from:

- OFFLINE → ON_QUEUE (routing IDLE) or AVAILABLE
- ON_QUEUE: routing IDLE → INTERACTING (mostly), NOT_RESPONDING or
  COMMUNICATING; back to IDLE; now and then leaving the queue for BREAK,
  MEAL, MEETING, TRAINING, AWAY, BUSY, AVAILABLE or OFFLINE (routing
  OFF_QUEUE)
- AVAILABLE / BREAK / MEAL / … → back ON_QUEUE mostly, or AVAILABLE, or OFFLINE
- an agent off queue whose routing status is not OFF_QUEUE is set OFF_QUEUE
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import random
import time
from collections.abc import Callable

from bridge.sim.org import Org, PresenceDefinition, User

__all__ = [
    "DWELL_MEAN",
    "GENERATOR_TICK_S",
    "MAX_BURST_S",
    "PRIMARY_DEFINITION_PROBABILITY",
    "Generator",
    "initial_state",
]

GENERATOR_TICK_S = 0.01
# After a slow tick, catch up at most this much work at once.
MAX_BURST_S = 0.5
# How often an agent picks the system definition rather than an org-defined
# one of the same system presence ("Lunch" instead of "Meal").
PRIMARY_DEFINITION_PROBABILITY = 0.7
_LEAVE_QUEUE = "LEAVE_QUEUE"

# Mean dwell per state in relative units (only the proportions matter).
DWELL_MEAN: dict[str, float] = {
    "OFFLINE": 8.0,
    "AVAILABLE": 2.0,
    "AWAY": 1.5,
    "BREAK": 2.0,
    "BUSY": 2.0,
    "MEAL": 4.0,
    "MEETING": 4.0,
    "TRAINING": 5.0,
    "IDLE": 1.0,
    "OFF_QUEUE": 0.2,
    "INTERACTING": 2.0,
    "NOT_RESPONDING": 0.5,
    "COMMUNICATING": 1.0,
}
_AFTER_AUX = (("ON_QUEUE", 0.7), ("AVAILABLE", 0.2), ("OFFLINE", 0.1))
_PRESENCE_NEXT: dict[str, tuple[tuple[str, float], ...]] = {
    "OFFLINE": (("ON_QUEUE", 0.6), ("AVAILABLE", 0.4)),
    "AVAILABLE": (
        ("ON_QUEUE", 0.45),
        ("BUSY", 0.1),
        ("MEETING", 0.1),
        ("TRAINING", 0.05),
        ("BREAK", 0.1),
        ("MEAL", 0.08),
        ("AWAY", 0.07),
        ("OFFLINE", 0.05),
    ),
    _LEAVE_QUEUE: (
        ("BREAK", 0.3),
        ("MEAL", 0.15),
        ("MEETING", 0.1),
        ("TRAINING", 0.05),
        ("AWAY", 0.1),
        ("BUSY", 0.1),
        ("AVAILABLE", 0.1),
        ("OFFLINE", 0.1),
    ),
    **{sp: _AFTER_AUX for sp in ("AWAY", "BREAK", "BUSY", "MEAL", "MEETING", "TRAINING", "IDLE")},
}
_ROUTING_NEXT: dict[str, tuple[tuple[str, float], ...]] = {
    "OFF_QUEUE": (("IDLE", 1.0),),
    "IDLE": (("INTERACTING", 0.75), ("NOT_RESPONDING", 0.05), ("COMMUNICATING", 0.08), (_LEAVE_QUEUE, 0.12)),
    "INTERACTING": (("IDLE", 0.92), (_LEAVE_QUEUE, 0.08)),
    "NOT_RESPONDING": (("IDLE", 0.7), (_LEAVE_QUEUE, 0.3)),
    "COMMUNICATING": (("IDLE", 0.9), ("INTERACTING", 0.1)),
}
_INITIAL = (
    ("OFFLINE/OFF_QUEUE", 0.3),
    ("ON_QUEUE/IDLE", 0.15),
    ("ON_QUEUE/INTERACTING", 0.25),
    ("AVAILABLE/OFF_QUEUE", 0.1),
    ("BREAK/OFF_QUEUE", 0.05),
    ("MEAL/OFF_QUEUE", 0.05),
    ("MEETING/OFF_QUEUE", 0.04),
    ("TRAINING/OFF_QUEUE", 0.02),
    ("AWAY/OFF_QUEUE", 0.02),
    ("BUSY/OFF_QUEUE", 0.02),
)


class _Choice:
    """Weighted choice by one uniform draw (cheaper than random.choices)."""

    def __init__(self, options: tuple[tuple[str, float], ...]) -> None:
        self.values = [v for v, _ in options]
        total = sum(w for _, w in options)
        self.cum = list(itertools.accumulate(w / total for _, w in options))
        self.last = len(self.values) - 1

    def pick(self, rng: random.Random) -> str:
        return self.values[min(bisect.bisect_left(self.cum, rng.random()), self.last)]


_PRESENCE_CHOICE = {k: _Choice(v) for k, v in _PRESENCE_NEXT.items()}
_ROUTING_CHOICE = {k: _Choice(v) for k, v in _ROUTING_NEXT.items()}
_INITIAL_CHOICE = _Choice(_INITIAL)


def initial_state(rng: random.Random) -> tuple[str, str]:
    """A plausible (systemPresence, routingStatus) for an agent at start-up."""
    sp, rs = _INITIAL_CHOICE.pick(rng).split("/")
    return sp, rs


class Generator:
    """Moves agents through the day at ``events_per_sec`` changes per second overall."""

    def __init__(
        self,
        org: Org,
        *,
        seed: int,
        events_per_sec: float,
        paused: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.org = org
        self.events_per_sec = events_per_sec
        self.paused = paused
        self._rng = random.Random(f"{seed}:generator")
        self._clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._counter = itertools.count()
        self._now_v = 0.0
        self._budget = 0.0
        self.changes_emitted = 0
        for uid in org.users:
            self.schedule(uid)

    def schedule(self, user_id: str) -> None:
        """Give an agent its next change point (new agents join this way)."""
        user = self.org.users[user_id]
        self._push(user, self._now_v)

    def _push(self, user: User, at: float) -> None:
        key = (
            user.routing_status
            if user.definition.system_presence == "ON_QUEUE"
            else user.definition.system_presence
        )
        dwell = self._rng.expovariate(1.0 / DWELL_MEAN.get(key, 1.0))
        heapq.heappush(self._heap, (at + dwell, next(self._counter), user.id))

    def _definition(self, system_presence: str) -> PresenceDefinition:
        org = self.org
        options = org.by_system[system_presence]
        if len(options) == 1 or self._rng.random() < PRIMARY_DEFINITION_PROBABILITY:
            return org.primary[system_presence]
        return options[1 + self._rng.randrange(len(options) - 1)]

    def step(self) -> int:
        """Move the next due agent one step; returns the number of changes made (0 if none left)."""
        org = self.org
        heap = self._heap
        while heap:
            due, _, uid = heapq.heappop(heap)
            user = org.active(uid)
            if user is not None:
                break
        else:
            return 0
        self._now_v = due
        rng = self._rng
        sp = user.definition.system_presence
        rs = user.routing_status
        made = 0
        if sp == "ON_QUEUE":
            nxt = _ROUTING_CHOICE[rs].pick(rng)
            if nxt == _LEAVE_QUEUE:
                org.set_presence(user, self._definition(_PRESENCE_CHOICE[_LEAVE_QUEUE].pick(rng)))
                org.set_routing_status(user, "OFF_QUEUE")
                made = 2
            else:
                org.set_routing_status(user, nxt)
                made = 1
        elif rs != "OFF_QUEUE":
            org.set_routing_status(user, "OFF_QUEUE")
            made = 1
        else:
            new_sp = _PRESENCE_CHOICE[sp].pick(rng)
            org.set_presence(user, self._definition(new_sp))
            made = 1
            if new_sp == "ON_QUEUE":
                org.set_routing_status(user, "IDLE")
                made = 2
        self._push(user, due)
        self.changes_emitted += made
        return made

    def run_budget(self, elapsed_s: float) -> int:
        """Make the changes ``elapsed_s`` seconds at the configured rate allow."""
        if self.paused or self.events_per_sec <= 0:
            self._budget = 0.0
            return 0
        rate = self.events_per_sec
        self._budget = min(self._budget + rate * elapsed_s, rate * MAX_BURST_S + 1.0)
        made = 0
        step = self.step
        while self._budget >= 1.0:
            n = step()
            if n == 0:
                self._budget = 0.0
                break
            self._budget -= n
            made += n
        return made

    async def run(self, after_tick: Callable[[], None] | None = None) -> None:
        """Generate until cancelled."""
        last = self._clock()
        while True:
            await asyncio.sleep(GENERATOR_TICK_S)
            now = self._clock()
            self.run_budget(now - last)
            last = now
            if after_tick is not None:
                after_tick()
