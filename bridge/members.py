"""A shard's member list: who joins and leaves, and the tombstones of those who leave.

An agent that leaves a shard has its compacted state deleted (a tombstone),
unless another shard of the fleet owns it now (a move: the tombstone could
commit after the new shard's state) or another fleet wrote its latest state.
Nothing is tombstoned before the members' last states are loaded (the sink
has fenced the previous owner by then, so the state read is the final one):
agents removed earlier are remembered and tombstoned right after the load,
together with the orphans, agents this fleet wrote for this shard that the
map no longer gives it (their removal may have been written while the
previous owner was frozen).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from bridge import metrics
from bridge.events import ShardState
from bridge.model import AgentState

__all__ = ["Members", "OrphanFinder", "OwnedElsewhere", "StateLoader", "Tombstones"]

logger = logging.getLogger(__name__)

#: Reads the users' last states from the compacted state topic.
StateLoader = Callable[[Sequence[str]], Awaitable[Mapping[str, AgentState]]]
#: Called once the states are loaded, with the member list: the agents whose
#: latest state record this fleet wrote for this shard, that are not members
#: and that no other shard of the fleet owns now (they are tombstoned).
OrphanFinder = Callable[[Sequence[str]], Awaitable[Sequence[str]]]
#: Writes what Kafka lacks of leaving agents' history (their last states given) before their tombstones.
Farewell = Callable[[Mapping[str, AgentState]], Awaitable[None]]
#: The given (removed) agents that must keep their state: another shard of this
#: fleet owns them now (a move), or another fleet wrote their latest state.
OwnedElsewhere = Callable[[Sequence[str]], Awaitable[Collection[str]]]


class Tombstones(Protocol):
    """Where tombstones go (the shard's sink)."""

    def submit_tombstone(self, user_id: str, /) -> None: ...


class Members:
    """The member list of one shard and the tombstones of its leavers (see the module docstring)."""

    def __init__(
        self,
        users: Iterable[str],
        *,
        state: ShardState,
        sink: Tombstones,
        load_states: StateLoader | None = None,
        find_orphans: OrphanFinder | None = None,
        owned_elsewhere: OwnedElsewhere | None = None,
    ) -> None:
        self.users: list[str] = list(dict.fromkeys(users))
        self.set = set(self.users)
        self.version = 0
        """Changes with every :meth:`change` (a PUT that overlapped one is repeated)."""
        self.loaded = False
        """The members' states are loaded; from now on leavers are tombstoned at once."""
        self._state = state
        self._sink = sink
        self._load_states = load_states
        self._find_orphans = find_orphans
        self._owned_elsewhere = owned_elsewhere
        self._removed_early: set[str] = set()
        self.farewell: Farewell | None = None
        """Called with the leavers' last states before their tombstones (the shard's backfill)."""

    def change(self, users: Iterable[str]) -> tuple[list[str], list[str]]:
        """Take a new member list; returns (added, removed)."""
        new = list(dict.fromkeys(users))
        old = set(self.users)
        added = [u for u in new if u not in old]
        removed = [u for u in self.users if u not in set(new)]
        self.users = new
        self.set = set(new)
        self.version += 1
        if not self.loaded:
            # The states are not loaded yet: tombstone once they are, or the
            # removed agents' last states would stay in the compacted topic.
            self._removed_early.update(removed)
        return added, removed

    async def load(self, users: Sequence[str]) -> None:
        """Load these members' last states (before they are subscribed: never replace a newer one)."""
        if self._load_states is not None:
            self._state.load(await self._load_states(users))

    async def start(self) -> None:
        """Load every member's last state, then tombstone who left meanwhile and the orphans."""
        await self.load(self.users)
        self.loaded = True
        await self.tombstone_removed(sorted(self._removed_early - self.set))
        self._removed_early.clear()
        await self._tombstone_orphans()

    async def tombstone_removed(self, removed: Sequence[str]) -> None:
        """Tombstone agents that left the shard, except those another shard owns now."""
        if not removed:
            return
        if self._owned_elsewhere is not None:
            try:
                moved = set(await self._owned_elsewhere(removed))
            except Exception as exc:
                logger.warning("cannot tell moved from removed agents (%s); no tombstones now", exc)
                return
            removed = [u for u in removed if u not in moved]
        await self._say_farewell(removed)
        self._tombstone(removed)

    async def _tombstone_orphans(self) -> None:
        """Tombstone agents this fleet wrote for this shard that the map no longer gives it."""
        if self._find_orphans is None:
            return
        try:
            orphans = [u for u in await self._find_orphans(self.users) if u not in self.set]
        except Exception as exc:
            logger.warning("cannot look for removed agents left in the state topic (%s)", exc)
            return
        if orphans:
            logger.info("tombstoning %d agents removed from this shard while it had no owner", len(orphans))
            metrics.ORPHANS_TOMBSTONED.inc(len(orphans))
            await self._say_farewell(orphans, load=True)
            self._tombstone(orphans)

    async def _say_farewell(self, users: Sequence[str], *, load: bool = False) -> None:
        """Before their tombstones: :attr:`farewell` with the leavers' last states (``load``: read
        from the compacted topic those the shard does not hold, as for orphans)."""
        if self.farewell is None or not users:
            return
        states = {u: s for u in users if (s := self._state.get(u)) is not None}
        unknown = [u for u in users if u not in states]
        if load and unknown and self._load_states is not None:
            try:
                states.update(await self._load_states(unknown))
            except Exception as exc:
                logger.warning("cannot load the last states of %d leaving agents (%s)", len(unknown), exc)
        await self.farewell(states)

    def _tombstone(self, users: Iterable[str]) -> None:
        """Forget agents that left the shard and delete their compacted state.

        A tombstone is written even for an agent with no known state: its old
        record may sit in the topic from an earlier owner.
        """
        for user in users:
            self._state.remove_user(user)
            self._sink.submit_tombstone(user)
