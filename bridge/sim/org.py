"""The simulated organisation: presence definitions, agents, ground truth, change log.

Every change, whether the generator or the admin API makes it, goes through
:meth:`Org.set_presence` / :meth:`Org.set_routing_status`: it gets a strictly
increasing per-user timestamp (a change in the same millisecond as the user's
previous one is bumped by 1 ms), a sequence number in the change log, and is
handed to the fan-out sink.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bridge.sim.history import DEFAULT_RETENTION_MS, PRESENCE, ROUTING_STATUS, History

__all__ = [
    "DEFAULT_TITLE_CASE_PROBABILITY",
    "ORG_DEFINED_PRESENCES",
    "PRESENCE",
    "ROUTING_STATUS",
    "ROUTING_STATUSES",
    "SDK_ENUM",
    "SYSTEM_PRESENCES",
    "Change",
    "ChangeSink",
    "Org",
    "PresenceDefinition",
    "User",
    "UserState",
    "iso_ms",
    "normalise_system_presence",
    "title_case",
    "wall_ms",
]

SYSTEM_PRESENCES = (
    "AVAILABLE",
    "AWAY",
    "BREAK",
    "BUSY",
    "IDLE",
    "MEAL",
    "MEETING",
    "OFFLINE",
    "ON_QUEUE",
    "TRAINING",
)
ROUTING_STATUSES = ("OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING")
# (label, system presence) of the org's own definitions next to the system ones.
ORG_DEFINED_PRESENCES = (("Lunch", "MEAL"), ("Coaching", "MEETING"), ("Team Huddle", "MEETING"))
# Share of stream payloads whose systemPresence is title case ("On Queue")
# rather than upper snake case ("ON_QUEUE").
DEFAULT_TITLE_CASE_PROBABILITY = 0.5
# Fixed namespace so presence definition ids are the same in every run.
_DEFINITION_NAMESPACE = uuid.UUID("0b6f2c1e-6d1a-4f53-9a53-5e2f0c1f7d01")
_TITLE = {sp: sp.replace("_", " ").title() for sp in SYSTEM_PRESENCES}
#: How ``/api/v2/presence/definitions`` spells ``systemPresence``: the SDK's
#: ``OrganizationPresenceDefinition.systemPresence`` enum (PureCloudPlatformClientV2
#: 269.0.0) is ``Available, Away, Busy, Offline, Idle, OnQueue, Meal, Training,
#: Meeting, Break``: CamelCase, no space.
SDK_ENUM = {sp: sp.replace("_", " ").title().replace(" ", "") for sp in SYSTEM_PRESENCES}
_SPELLINGS = {k: sp for sp in SYSTEM_PRESENCES for k in (sp, SDK_ENUM[sp].upper())}


def title_case(system_presence: str) -> str:
    """``ON_QUEUE`` → ``On Queue``, as some Genesys payloads spell it."""
    return _TITLE[system_presence]


def normalise_system_presence(value: str) -> str:
    """Any accepted spelling (``On Queue``, ``on_queue``, ``OnQueue``) → ``ON_QUEUE``; KeyError if unknown."""
    return _SPELLINGS[value.strip().upper().replace(" ", "_")]


def wall_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


_iso_cache: list[object] = [-1, ""]


def iso_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z`` (hot path: cached per second)."""
    sec, milli = divmod(ms, 1000)
    if _iso_cache[0] != sec:
        _iso_cache[0] = sec
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_iso_cache[1]}.{milli:03d}Z"


@dataclass(frozen=True, slots=True)
class PresenceDefinition:
    """One entry of ``/api/v2/presence/definitions``."""

    id: str
    system_presence: str
    label: str
    primary: bool

    def to_json(self) -> dict[str, object]:
        """The Genesys-shaped entity (``OrganizationPresenceDefinition``; systemPresence as the SDK enum)."""
        return {
            "id": self.id,
            "name": self.label,
            "languageLabels": {"en_US": self.label},
            "systemPresence": SDK_ENUM[self.system_presence],
            "primary": self.primary,
            "deactivated": False,
            "type": "System" if self.primary else "User",
            "selfUri": f"/api/v2/presence/definitions/{self.id}",
        }


def _default_definitions() -> tuple[PresenceDefinition, ...]:
    system = [
        PresenceDefinition(str(uuid.uuid5(_DEFINITION_NAMESPACE, f"system:{sp}")), sp, _TITLE[sp], True)
        for sp in SYSTEM_PRESENCES
    ]
    org = [
        PresenceDefinition(str(uuid.uuid5(_DEFINITION_NAMESPACE, f"org:{label}")), sp, label, False)
        for label, sp in ORG_DEFINED_PRESENCES
    ]
    return (*system, *org)


class UserState:
    """Genesys user states (the ``state`` filter of ``GET /api/v2/users``)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    DELETED = "deleted"
    ANY = "any"
    ALL = (ACTIVE, INACTIVE, DELETED, ANY)


@dataclass(slots=True)
class User:
    """One agent and its current (true) state."""

    id: str
    name: str
    email: str
    state: str
    definition: PresenceDefinition
    presence_ms: int
    message: str
    routing_status: str
    routing_ms: int
    last_ms: int

    def presence_json(self) -> dict[str, object]:
        """The REST presence body (bulk / single presence / users?expand=presence)."""
        return {
            "userId": self.id,
            "source": "PURECLOUD",
            "presenceDefinition": {
                "id": self.definition.id,
                "systemPresence": _TITLE[self.definition.system_presence],
            },
            "primary": True,
            "message": self.message,
            "modifiedDate": iso_ms(self.presence_ms),
        }

    def routing_json(self) -> dict[str, object]:
        """The REST routing status body."""
        return {"userId": self.id, "status": self.routing_status, "startTime": iso_ms(self.routing_ms)}


@dataclass(frozen=True, slots=True)
class Change:
    """One numbered entry of the change log."""

    seq: int
    user_id: str
    kind: str  # "presence" | "routingStatus"
    value: str  # systemPresence (upper snake case) or routing status
    definition_id: str | None
    message: str
    changed_ms: int
    title_case: bool

    def to_json(self) -> dict[str, object]:
        """The ``/sim/events`` entry."""
        out: dict[str, object] = {
            "seq": self.seq,
            "userId": self.user_id,
            "kind": self.kind,
            "value": self.value,
            "changedAt": iso_ms(self.changed_ms),
        }
        if self.definition_id is not None:
            out["presenceDefinitionId"] = self.definition_id
            out["message"] = self.message
        return out


ChangeSink = Callable[[Change], None]


def _uuid_from(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Org:
    """Agents, their ground truth and the numbered change log."""

    def __init__(
        self,
        *,
        seed: int,
        event_log_max: int,
        clock_ms: Callable[[], int] = wall_ms,
        title_case_probability: float = DEFAULT_TITLE_CASE_PROBABILITY,
        history_retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.definitions = _default_definitions()
        self.definitions_by_id = {d.id: d for d in self.definitions}
        self.primary = {d.system_presence: d for d in self.definitions if d.primary}
        self.by_system: dict[str, tuple[PresenceDefinition, ...]] = {
            sp: tuple(d for d in self.definitions if d.system_presence == sp) for sp in SYSTEM_PRESENCES
        }
        self.users: dict[str, User] = {}
        self._rng = random.Random(f"{seed}:users")
        self._case_rng = random.Random(f"{seed}:case")
        self._title_p = title_case_probability
        self._clock_ms = clock_ms
        self._log: list[Change] = []
        self._log_first = 1  # seq of self._log[0]
        self._log_max = event_log_max
        self.last_seq = 0
        self.sink: ChangeSink | None = None
        self._next_number = 1
        #: Per-agent intervals for the analytics query, bounded by time, not by the log's cap.
        self.history = History(history_retention_ms)

    # -- roster ---------------------------------------------------------------

    def add_users(
        self, count: int, initial: Callable[[random.Random], tuple[str, str]] | None = None
    ) -> list[str]:
        """Create ``count`` agents; ``initial`` picks (systemPresence, routingStatus) for each."""
        now = self._clock_ms()
        ids = []
        for _ in range(count):
            uid = _uuid_from(self._rng)
            n = self._next_number
            self._next_number += 1
            sp, rs = initial(self._rng) if initial else ("OFFLINE", "OFF_QUEUE")
            since = now - self._rng.randrange(0, 3_600_000) if initial else now
            self.users[uid] = User(
                id=uid,
                name=f"Agent {n:05d}",
                email=f"agent{n:05d}@sim.example.com",
                state=UserState.ACTIVE,
                definition=self.primary[sp],
                presence_ms=since,
                message="",
                routing_status=rs,
                routing_ms=since,
                last_ms=since,
            )
            self.history.record(uid, PRESENCE, since, sp, self.primary[sp].id)
            self.history.record(uid, ROUTING_STATUS, since, rs, None)
            ids.append(uid)
        return ids

    def remove_user(self, user_id: str) -> bool:
        """Mark an agent deleted (it leaves the active roster and stops changing)."""
        user = self.users.get(user_id)
        if user is None or user.state == UserState.DELETED:
            return False
        user.state = UserState.DELETED
        return True

    def active(self, user_id: str) -> User | None:
        """The agent if it exists and is not deleted."""
        user = self.users.get(user_id)
        return user if user is not None and user.state != UserState.DELETED else None

    # -- changes --------------------------------------------------------------

    def _stamp(self, user: User) -> int:
        now = self._clock_ms()
        ts = now if now > user.last_ms else user.last_ms + 1
        user.last_ms = ts
        return ts

    def _append(self, change: Change) -> Change:
        log = self._log
        log.append(change)
        if len(log) > self._log_max:
            drop = len(log) - self._log_max // 2
            del log[:drop]
            self._log_first += drop
        if self.sink is not None:
            self.sink(change)
        return change

    def set_presence(self, user: User, definition: PresenceDefinition, message: str = "") -> Change:
        """Apply a presence change: truth, log, fan-out."""
        ts = self._stamp(user)
        user.definition = definition
        user.presence_ms = ts
        user.message = message
        self.history.record(user.id, PRESENCE, ts, definition.system_presence, definition.id)
        self.last_seq += 1
        return self._append(
            Change(
                self.last_seq,
                user.id,
                PRESENCE,
                definition.system_presence,
                definition.id,
                message,
                ts,
                self._case_rng.random() < self._title_p,
            )
        )

    def set_routing_status(self, user: User, status: str) -> Change:
        """Apply a routing-status change: truth, log, fan-out."""
        ts = self._stamp(user)
        user.routing_status = status
        user.routing_ms = ts
        self.history.record(user.id, ROUTING_STATUS, ts, status, None)
        self.last_seq += 1
        return self._append(Change(self.last_seq, user.id, ROUTING_STATUS, status, None, "", ts, False))

    def events_since(self, since: int, limit: int) -> Iterator[Change]:
        """Changes with ``seq > since``, oldest first, at most ``limit``."""
        start = max(0, since + 1 - self._log_first)
        return iter(self._log[start : start + limit])

    @property
    def first_seq(self) -> int:
        """The oldest sequence number still held (older ones were trimmed)."""
        return self._log_first

    def truth(self) -> dict[str, object]:
        """``GET /sim/truth``: every non-deleted agent's current state."""
        users = {
            u.id: {
                "presence": {
                    "systemPresence": u.definition.system_presence,
                    "presenceDefinitionId": u.definition.id,
                    "message": u.message,
                    "modifiedDate": iso_ms(u.presence_ms),
                },
                "routingStatus": {"status": u.routing_status, "startTime": iso_ms(u.routing_ms)},
            }
            for u in self.users.values()
            if u.state != UserState.DELETED
        }
        return {"users": users, "lastSeq": self.last_seq}
