"""Sticky bin-packing of the roster onto shards (pure: no I/O, no clock).

README "Architecture", control path: the coordinator assigns users to shards so that

- a user keeps its shard (stickiness: moving an agent costs an unsubscribe,
  a subscribe and a reconciliation on two channels);
- departed users are removed from their shard;
- new users go to the least-full shard (ties: the lowest shard id);
- no shard holds more than ``capacity`` users (Genesys: 1,000 topics per
  channel, one combined topic per agent);
- new shards are added only when the existing ones cannot hold the roster,
  and never beyond the shard budget: ``channels_per_client - 1`` per OAuth
  client (one channel per client is kept spare for make-before-break
  rotation), times the number of clients;
- users that still do not fit are returned in :attr:`Assignment.unassigned`,
  never dropped silently.

Shards are numbered ``0 .. n-1`` (they are the control topic's partitions,
which can be added but never removed), so a shard that loses every user
stays in the map with an empty member list. Shard ``p`` uses OAuth client
``p // (channels_per_client - 1)`` (:func:`client_for_shard`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.errors import ConfigError

__all__ = [
    "SPARE_CHANNELS_PER_CLIENT",
    "Assignment",
    "assign",
    "client_for_shard",
    "shard_budget",
    "shards_per_client",
]

#: One channel per OAuth client stays free for make-before-break rotation.
SPARE_CHANNELS_PER_CLIENT = 1


def shards_per_client(channels_per_client: int) -> int:
    """Shards one OAuth client carries: its channel limit minus the spare (at least 1)."""
    return max(1, channels_per_client - SPARE_CHANNELS_PER_CLIENT)


def shard_budget(clients: int, channels_per_client: int) -> int:
    """The most shards the fleet may run: ``clients x (channels_per_client - 1)``."""
    if clients < 1:
        raise ConfigError("no Genesys OAuth client configured (BRIDGE_GENESYS_CLIENT_ID / _SECRET)")
    return clients * shards_per_client(channels_per_client)


def client_for_shard(shard: int, channels_per_client: int) -> int:
    """Index (in ``Settings.clients()``) of the OAuth client whose channel budget shard ``shard`` uses."""
    return shard // shards_per_client(channels_per_client)


@dataclass(frozen=True)
class Assignment:
    """The new map: shard id → member list (``0 .. n-1``, possibly empty), plus who did not fit."""

    shards: dict[int, tuple[str, ...]]
    unassigned: tuple[str, ...]

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def owner(self) -> dict[str, int]:
        """user id → shard id, for every assigned user."""
        return {u: p for p, users in self.shards.items() for u in users}


def assign(
    previous: Mapping[int, Sequence[str]],
    roster: Iterable[str],
    *,
    capacity: int,
    budget: int,
) -> Assignment:
    """Compute the new map from the previous one and the current roster.

    ``previous`` may have gaps (a partition without a record is an empty
    shard) and may mention a user twice (a corrupt map): the lowest shard
    keeps it. Shards at or beyond ``budget`` are emptied (their users are
    placed again like new ones) but stay numbered, since partitions cannot be
    removed. Existing members above ``capacity`` (the capacity was lowered)
    are placed again too. The result is deterministic: new users are placed
    in sorted order.
    """
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    if budget < 0:
        raise ValueError("budget must not be negative")
    wanted = list(dict.fromkeys(roster))
    in_roster = set(wanted)
    existing = max(previous, default=-1) + 1
    shards: dict[int, list[str]] = {p: [] for p in range(existing)}
    placed: set[str] = set()
    for p in sorted(previous):
        if p >= budget:
            continue
        kept = shards[p]
        for user in previous[p]:
            if user in in_roster and user not in placed and len(kept) < capacity:
                kept.append(user)
                placed.add(user)
    new_users = sorted(u for u in wanted if u not in placed)
    # Only as many shards as the roster needs (at least the ones that exist).
    needed = min(budget, max(existing, math.ceil(len(wanted) / capacity)))
    for p in range(existing, needed):
        shards[p] = []
    # A heap of (fill, shard id): the least-full shard first, ties to the lowest id.
    room = [(len(users), p) for p, users in shards.items() if p < budget and len(users) < capacity]
    heapq.heapify(room)
    unassigned: list[str] = []
    for user in new_users:
        if not room:
            unassigned.append(user)
            continue
        fill, target = heapq.heappop(room)
        shards[target].append(user)
        if fill + 1 < capacity:
            heapq.heappush(room, (fill + 1, target))
    return Assignment({p: tuple(users) for p, users in shards.items()}, tuple(unassigned))
