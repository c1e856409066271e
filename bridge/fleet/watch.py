"""Does the group still give us what our consumer holds? A check against the group coordinator.

The membership consumer learns its partitions from librdkafka's rebalance
callbacks, and the fleet runs a shard for each. If a callback never comes,
the two views part: in CI a worker's session was dropped by the group
coordinator during a rolling restart (its heartbeats answered "unknown
member", librdkafka logged "revoking assignment and rejoining group"), yet
no revocation, loss or new assignment reached the application. The worker
kept running the shard of a partition that another worker owned; each of
the two sinks fenced the other in turn, every two session timeouts.

:class:`AssignmentWatch` compares, every session timeout, the consumer's
own assignment with what the group coordinator records for the consumer's
member id (``DescribeGroups``). Only a *stable* group counts (during a
rebalance the record is in flux), and only a difference seen on
:data:`STRIKES` checks in a row, with the same local assignment, is a
verdict: those partitions are *disowned*. The membership then unassigns
them and the fleet stops their shards; a partition the group gives back
later is assigned again by the next rebalance. A partition with one strike
is *doubted*: a fenced shard of it is not restarted meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupState

__all__ = ["STRIKES", "AssignmentWatch", "GroupView", "describe_group"]

logger = logging.getLogger(__name__)

#: Checks in a row that must see the same difference before partitions are disowned.
STRIKES = 2


@dataclass(frozen=True)
class GroupView:
    """The group coordinator's record: whether the group is stable, each member's partitions."""

    stable: bool
    members: dict[str, frozenset[int]]


def describe_group(admin: Any, group: str, topic: str, timeout_s: float) -> GroupView | None:
    """The group's view of ``topic``'s partitions per member; None when it cannot be read."""
    try:
        future = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
        description = future.result(timeout=timeout_s)
    except Exception as exc:  # a timeout, a missing DESCRIBE ACL: no verdict this round
        logger.debug("describing group %s failed: %s", group, exc)
        return None
    members = {
        m.member_id: frozenset(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
        for m in description.members
    }
    return GroupView(description.state == ConsumerGroupState.STABLE, members)


class AssignmentWatch:
    """Strikes against partitions that our consumer holds and the group does not give us.

    ``describe`` reads the group's view (None: unknown this round).
    """

    def __init__(self, describe: Callable[[], GroupView | None], strikes: int = STRIKES) -> None:
        self._describe = describe
        self._strikes_needed = strikes
        self._suspect: frozenset[int] = frozenset()
        self._local: frozenset[int] = frozenset()
        self._strikes = 0

    @property
    def doubted(self) -> frozenset[int]:
        """Partitions with a strike against them (not yet disowned)."""
        return self._suspect

    def check(self, member_id: str, local: frozenset[int]) -> frozenset[int]:
        """One check; returns the partitions disowned by it (empty on most rounds)."""
        view = self._describe() if local else None
        if view is None or not view.stable or not member_id:
            self._reset()
            return frozenset()
        suspect = local - view.members.get(member_id, frozenset())
        if not suspect or suspect != self._suspect or local != self._local:
            self._suspect, self._local = suspect, local
            self._strikes = 1 if suspect else 0
        else:
            self._strikes += 1
        if self._strikes < self._strikes_needed:
            return frozenset()
        known = "is not a member" if member_id not in view.members else "is not given them"
        logger.warning(
            "the group coordinator's record disagrees with this consumer: member %s %s, yet holds "
            "partitions %s (no rebalance callback said so); giving them up",
            member_id,
            known,
            sorted(suspect),
        )
        self._reset()
        return suspect

    def _reset(self) -> None:
        self._suspect, self._local, self._strikes = frozenset(), frozenset(), 0
