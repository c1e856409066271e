"""Does the group still give us what our application holds? A check against the group coordinator.

The membership consumer learns its partitions from librdkafka's rebalance
callbacks, and the fleet runs a shard for each. If a callback never comes,
the two views part: in CI a worker's session was dropped by the group
coordinator during a rolling restart (its heartbeats answered "unknown
member", librdkafka logged "revoking assignment and rejoining group"), and
then nothing: no revocation, loss or new assignment reached the application,
and the consumer never joined again. The worker kept running the shard of a
partition that another worker owned; each of the two sinks fenced the other
in turn, every two session timeouts.

:class:`AssignmentWatch` compares, every session timeout, the partitions the
callbacks gave the application with what the group coordinator records for
the consumer's member id (``DescribeGroups``; see :func:`describe_group`).
Only a *stable* group counts (during a rebalance the record is in flux), and
only a difference seen on :data:`STRIKES` checks in a row, with the same
partitions held, is a verdict: those partitions are *disowned*. The
membership then stops their shards, and when the group does not know the
member at all it replaces the consumer, which joins afresh. A partition with
one strike is *doubted*: a fenced shard of it is not restarted meanwhile.
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["STRIKES", "AssignmentWatch", "GroupView", "assigned", "describe_group"]

logger = logging.getLogger(__name__)

# Deprecated for the admin API's describe_consumer_groups, which is the one that crashes.
warnings.filterwarnings("ignore", message=r"list_groups\(\) is deprecated", category=DeprecationWarning)

#: Checks in a row that must see the same difference before partitions are disowned.
STRIKES = 2


@dataclass(frozen=True)
class GroupView:
    """The group coordinator's record: whether the group is stable, each member's partitions."""

    stable: bool
    members: dict[str, frozenset[int]]


def describe_group(admin: Any, group: str, topic: str, timeout_s: float) -> GroupView | None:
    """The group's view of ``topic``'s partitions per member; None when it cannot be read.

    Through librdkafka's legacy ``list_groups`` (DescribeGroups sent to every broker),
    not the admin API's ``describe_consumer_groups``: that one aborts the process when
    the connection drops during its coordinator request (librdkafka issue #4605,
    "rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0 failed"; it did
    so in a chaos run with Kafka connection resets).
    """
    try:
        groups = admin.list_groups(group=group, timeout=timeout_s)
    except Exception as exc:  # a timeout, a missing DESCRIBE ACL: no verdict this round
        logger.debug("describing group %s failed: %s", group, exc)
        return None
    found = [g for g in groups if g.id == group and g.error is None]
    if len(found) != 1:  # only the coordinator answers; the other brokers say NOT_COORDINATOR
        return None
    try:
        members = {m.id: assigned(m.assignment or b"", topic) for m in found[0].members}
    except ValueError as exc:
        logger.debug("group %s: undecodable member assignment: %s", group, exc)
        return None
    return GroupView(found[0].state == STABLE, members)


#: The state DescribeGroups names a group in when no rebalance is under way.
STABLE = "Stable"


def assigned(assignment: bytes, topic: str) -> frozenset[int]:
    """The partitions of ``topic`` in a consumer protocol assignment (versions 0-3, not flexible)."""
    if not assignment:
        return frozenset()
    reader = _Reader(assignment)
    reader.take(">h")  # version
    found: set[int] = set()
    for _ in range(reader.take(">i")):
        name = reader.string()
        partitions = [reader.take(">i") for _ in range(reader.take(">i"))]
        if name == topic:
            found.update(partitions)
    return frozenset(found)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self._at + size > len(self._data):
            raise ValueError(f"assignment ends at byte {len(self._data)}, expected {size} more")
        (value,) = struct.unpack_from(fmt, self._data, self._at)
        self._at += size
        return int(value)

    def string(self) -> str:
        size = self.take(">h")
        if size < 0 or self._at + size > len(self._data):
            raise ValueError(f"bad string length {size}")
        text = self._data[self._at : self._at + size].decode()
        self._at += size
        return text


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
        #: Whether the group knew the member at the last verdict (False: it must join again).
        self.member_known = True

    @property
    def doubted(self) -> frozenset[int]:
        """Partitions with a strike against them (not yet disowned)."""
        return self._suspect

    def check(self, member_id: str, local: frozenset[int]) -> frozenset[int]:
        """One check; returns the partitions disowned by it (empty on most rounds)."""
        view = self._describe() if local else None
        if view is None or not view.stable:
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
        self.member_known = member_id in view.members
        known = "is not given them" if self.member_known else "is not a member"
        logger.warning(
            "the group coordinator's record disagrees with this consumer: member %r %s, yet the "
            "application holds partitions %s (no rebalance callback said so); giving them up",
            member_id,
            known,
            sorted(suspect),
        )
        self._reset()
        return suspect

    def _reset(self) -> None:
        self._suspect, self._local, self._strikes = frozenset(), frozenset(), 0
