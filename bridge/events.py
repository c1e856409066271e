"""Per-shard event state: order, dedupe and enrich changes, keep the last state per agent.

Genesys sends no sequence number: a change is ordered per user by
its own time (``modifiedDate`` for presence, ``startTime`` for routing
status). :class:`ShardState` applies those rules to every change the shard
sees, from the stream or from a reconciliation, and answers whether it is
new. Accepted changes go to the sink (:mod:`bridge.sink`), which writes the
event record and the agent's new compacted state in one transaction.

Rules of :meth:`ShardState.apply`, per user and per kind (presence and
routing status are ordered independently; Genesys stamps them separately):

- ``changed_at`` newer than the last accepted change of that kind → accepted.
- Same ``changed_at`` and the same value (:meth:`PresenceValue.same_as`) →
  duplicate (Genesys and reconciliation repeat changes), dropped.
- Same ``changed_at`` but a different value → accepted: Genesys stamps at
  millisecond precision and can emit two changes in one millisecond; the later
  arrival wins. (Consequence: for two same-millisecond changes the final
  state follows arrival order, the only order there is.)
- Same ``changed_at`` and the value of an *earlier* change accepted in that
  same millisecond → duplicate: Genesys has no sequence number, so after A
  then B in one millisecond a second A can only be a replay (a duplicate
  frame, the other channel of a rotation, a reconciliation that read A
  before B), not a third change. The values accepted in the current
  millisecond of each user and kind are remembered until a newer change
  arrives. The rule cannot tell a genuine A → B → A inside one millisecond
  from a replay; that third change is dropped (reconciliation and the sweep
  read the final state again). Values from before a takeover are not known
  (the compacted topic holds only the last one).
- Older → stale (a late or replayed frame), dropped.
- ``timestamp_known=False`` (Genesys sent no timestamp, ``changed_at`` is the
  receive time; Genesys's own presence sample has no ``modifiedDate``): accepted
  when the value differs from the current one, re-stamped with
  ``max(changed_at, last changed_at + 1 ms)`` so per-user order holds on the
  topic; the same value → duplicate.

A dropped change comes back as the :class:`Dropped` reason (stale or
duplicate); this module counts nothing. The shard counts every dropped stream
change in ``bridge_stale_events_total{kind}`` (a reconciliation's unchanged
states are dropped silently: it repeats them by design). An accepted
presence is enriched with ``presence_label`` from the org's presence
definitions (``GET /api/v2/presence/definitions``).

This runs once per frame: :meth:`ShardState.apply` is O(1) and allocates only
the accepted change's new state (copy-on-write: stored :class:`AgentState`
objects are never mutated after they are handed out, so an
:class:`Accepted` snapshot stays valid while the sink encodes it later).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.model import (
    AgentState,
    Change,
    Kind,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)

__all__ = ["UNKNOWN_TIMESTAMP_STEP", "Accepted", "Dropped", "ShardState"]

#: Genesys times have millisecond precision: a change without a timestamp is
#: placed at least this far after the last one so that per-user order holds.
UNKNOWN_TIMESTAMP_STEP = timedelta(milliseconds=1)

_Value = PresenceValue | RoutingValue
_PRESENCE = Kind.PRESENCE
_ROUTING = Kind.ROUTING_STATUS


class Dropped(enum.Enum):
    """Why :meth:`ShardState.apply` dropped a change."""

    STALE = "stale"
    """Older than the last accepted change of its user and kind (a late or replayed frame)."""
    DUPLICATE = "duplicate"
    """The value already accepted at that time (a repeat, or a replay within one millisecond)."""


@dataclass(slots=True)
class Accepted:
    """A change that passed ordering and dedupe, with the agent's state after it.

    ``change`` is the (possibly enriched or re-stamped) change to write as an
    event record; ``state`` is an immutable snapshot of the agent's new state
    for the compacted state topic. The caller must not mutate ``state``.
    """

    change: Change
    state: AgentState


class ShardState:
    """The last accepted presence and routing status of every agent of one shard.

    Not thread-safe: owned by the shard's asyncio task.
    """

    __slots__ = ("_earlier", "_labels", "_states", "fleet_since")

    def __init__(
        self,
        states: Mapping[str, AgentState] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._states: dict[str, AgentState] = dict(states or {})
        self._labels: dict[str, str] = dict(labels or {})
        # Per kind, user → the values accepted earlier in the millisecond of
        # the user's last change of that kind (only users with such a pair).
        self._earlier: dict[Kind, dict[str, list[_Value]]] = {kind: {} for kind in Kind}
        self.fleet_since: datetime | None = None
        """The oldest ``updatedAt`` of this fleet's states of other agents when the shard's were
        loaded (None: none): the fleet has been writing since then at least, so a member without a
        state missed what it did since (:mod:`bridge.backfill`)."""

    # -- presence definitions -------------------------------------------------

    @property
    def labels(self) -> Mapping[str, str]:
        """Presence definition id → the org's label (e.g. "Lunch" under MEAL)."""
        return self._labels

    @labels.setter
    def labels(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    # -- state ----------------------------------------------------------------

    def load(self, states: Mapping[str, AgentState]) -> None:
        """Adopt states read from the compacted topic (takeover or start).

        Entries replace those of the same users; other users are kept. The
        given objects are owned by this instance afterwards (never mutated).
        """
        self._states.update(states)

    def get(self, user_id: str) -> AgentState | None:
        """The agent's current state (do not mutate it), or None."""
        return self._states.get(user_id)

    def users(self) -> Collection[str]:
        """The ids of agents with a known state (a live view)."""
        return self._states.keys()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._states

    def remove_user(self, user_id: str) -> bool:
        """Forget an agent that left the shard; True when it was known.

        The caller writes the tombstone (:meth:`bridge.sink.ShardSink.submit_tombstone`).
        """
        for earlier in self._earlier.values():
            earlier.pop(user_id, None)
        return self._states.pop(user_id, None) is not None

    # -- the hot path -----------------------------------------------------------

    def apply(self, change: Change) -> Accepted | Dropped:
        """Order, dedupe and enrich one change; why it was dropped otherwise (module rules)."""
        state = self._states.get(change.user_id)
        value = change.value
        if isinstance(value, PresenceValue):
            if change.kind is not Kind.PRESENCE:
                raise TypeError("a presence value in a routing-status change")
            last_p = state.presence if state is not None else None
            if (
                change.timestamp_known
                and change.event_id
                and (last_p is None or change.changed_at > last_p.changed_at)
            ):
                ordered = change  # newer than all before: the common case, no dedupe
                if last_p is not None:
                    self._forget_earlier(_PRESENCE, change.user_id)
            else:
                result = _order(
                    change,
                    last_p.changed_at if last_p is not None else None,
                    last_p is not None
                    and (last_p.value.same_as(value) or self._replayed(change, last_p.changed_at, value)),
                )
                if isinstance(result, Dropped):
                    return result
                ordered = result
                if last_p is not None:
                    self._remember(ordered, last_p.changed_at, last_p.value)
            enriched = self._enrich(value)
            if enriched is not value:
                ordered = ordered.evolve(value=enriched)
            presence = VersionedPresence(enriched, ordered.changed_at, ordered.event_id)
            new_state = AgentState(ordered.user_id, presence, state.routing if state is not None else None)
        else:
            if change.kind is not Kind.ROUTING_STATUS:
                raise TypeError("a routing-status value in a presence change")
            last_r = state.routing if state is not None else None
            if (
                change.timestamp_known
                and change.event_id
                and (last_r is None or change.changed_at > last_r.changed_at)
            ):
                ordered = change
                if last_r is not None:
                    self._forget_earlier(_ROUTING, change.user_id)
            else:
                result = _order(
                    change,
                    last_r.changed_at if last_r is not None else None,
                    last_r is not None
                    and (last_r.value.same_as(value) or self._replayed(change, last_r.changed_at, value)),
                )
                if isinstance(result, Dropped):
                    return result
                ordered = result
                if last_r is not None:
                    self._remember(ordered, last_r.changed_at, last_r.value)
            routing = VersionedRouting(value, ordered.changed_at, ordered.event_id)
            new_state = AgentState(ordered.user_id, state.presence if state is not None else None, routing)
        self._states[ordered.user_id] = new_state
        return Accepted(ordered, new_state)

    def _replayed(self, change: Change, last_at: datetime, value: _Value) -> bool:
        """True when ``value`` was already accepted earlier in the millisecond of the last change."""
        if change.changed_at != last_at or not change.timestamp_known:
            return False
        earlier = self._earlier[change.kind].get(change.user_id)
        return earlier is not None and any(_same(seen, value) for seen in earlier)

    def _remember(self, accepted: Change, last_at: datetime, last_value: _Value) -> None:
        """Keep the values of the current millisecond; forget them once a newer one is accepted."""
        earlier = self._earlier[accepted.kind]
        if accepted.changed_at == last_at:
            earlier.setdefault(accepted.user_id, []).append(last_value)
        elif earlier:
            earlier.pop(accepted.user_id, None)

    def _forget_earlier(self, kind: Kind, user_id: str) -> None:
        """A newer change was accepted: the values of the user's previous millisecond no longer matter."""
        earlier = self._earlier[kind]
        if earlier:
            earlier.pop(user_id, None)

    def _enrich(self, value: PresenceValue) -> PresenceValue:
        """``value`` with the org's label for its definition (the same object when nothing changes)."""
        def_id = value.presence_definition_id
        if def_id is None:
            return value
        label = self._labels.get(def_id)
        if label is None or label == value.presence_label:
            return value
        return PresenceValue(
            value.system_presence,
            value.presence_definition_id,
            value.message,
            value.source,
            value.primary,
            label,
        )


def _order(change: Change, last_at: datetime | None, same: bool) -> Change | Dropped:
    """The change to accept (with its final time and id), or why it is dropped.

    ``last_at`` is the time of the last accepted change of this user and kind,
    ``same`` whether ``change`` carries the same value as that one.
    """
    if last_at is None:
        return change if change.event_id else _with_id(change, change.changed_at)
    if not change.timestamp_known:
        if same:
            return Dropped.DUPLICATE
        floor = last_at + UNKNOWN_TIMESTAMP_STEP
        at = change.changed_at if change.changed_at >= floor else floor
        if at != change.changed_at or not change.event_id:
            return _with_id(change, at)
        return change
    if change.changed_at > last_at or (change.changed_at == last_at and not same):
        return change if change.event_id else _with_id(change, change.changed_at)
    return Dropped.DUPLICATE if change.changed_at == last_at else Dropped.STALE


def _same(a: _Value, b: _Value) -> bool:
    if isinstance(a, PresenceValue):
        return isinstance(b, PresenceValue) and a.same_as(b)
    return isinstance(b, RoutingValue) and a.same_as(b)


def _with_id(change: Change, at: datetime) -> Change:
    """``change`` at time ``at`` with the event id of that time and value."""
    return change.evolve(changed_at=at, event_id=event_id(change.user_id, change.kind, at, change.value))
