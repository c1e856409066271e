"""What Genesys permitted and rejected of one shard's topics.

A subscription reply lists each topic as permitted or rejected
(``ChannelTopic``; with ``ignoreErrors=true`` a refused topic does not fail
the request), and POST and PUT replies list the whole channel. Rejected agents
are never counted as subscribed; they are named once in a WARNING with the
missing permissions, gauged in
``bridge_subscription_rejected_topics{shard,reason}`` and listed in the
readiness details (``unobservable``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

from bridge import metrics
from bridge.genesys import protocol
from bridge.genesys.models import RejectedTopic, SubscriptionResult

__all__ = ["MAX_NAMED_AGENTS", "MAX_REASON_LABEL", "Subscriptions", "reason_label"]

logger = logging.getLogger(__name__)

#: Agents named in the rejected-topics WARNING and the readiness details.
MAX_NAMED_AGENTS: Final = 20
#: Longest ``reason`` label of ``bridge_subscription_rejected_topics``.
MAX_REASON_LABEL: Final = 48
_NON_SLUG: Final = re.compile(r"[^a-z0-9]+")


def reason_label(reason: str | None) -> str:
    """A bounded metric label from a free-text ``rejectionReason``."""
    slug = _NON_SLUG.sub("_", (reason or "").lower()).strip("_")[:MAX_REASON_LABEL]
    return slug or "unknown"


class Subscriptions:
    """The subscribed count and the rejected agents of one shard (see the module docstring)."""

    def __init__(
        self, label: str, *, users: Callable[[], Sequence[str]], members: Callable[[], Collection[str]]
    ) -> None:
        self._label = label
        self._users = users
        self._members = members
        self.subscribed = 0
        """Member topics Genesys permitted in its last reply (0 while disconnected)."""
        self.rejected: dict[str, RejectedTopic] = {}
        """Members whose topic Genesys rejected, with why."""
        self._rejected_reasons: set[str] = set()

    def record(self, result: SubscriptionResult, *, replaced: bool) -> None:
        """Count what Genesys permitted; remember, report and gauge what it rejected."""
        topic_users = {protocol.user_topic(u): u for u in self._users()}
        permitted = {topic_users[t] for t in result.permitted if t in topic_users}
        rejected: dict[str, RejectedTopic] = {} if replaced else dict(self.rejected)
        for user in permitted:
            rejected.pop(user, None)
        fresh: dict[str, RejectedTopic] = {}
        for topic in result.rejected:
            owner = topic_users.get(topic.id)
            if owner is not None:
                fresh[owner] = topic
        rejected.update(fresh)
        previous, members = self.rejected, self._members()
        self.rejected = {u: t for u, t in rejected.items() if u in members}
        # Named once, not on every reconnect or extension that meets the same refusal.
        fresh = {u: t for u, t in fresh.items() if u not in previous}
        self.subscribed = len(permitted)
        metrics.SUBSCRIBED_TOPICS.labels(shard=self._label).set(self.subscribed)
        counts: dict[str, int] = {}
        for topic in self.rejected.values():
            label = reason_label(topic.reason)
            counts[label] = counts.get(label, 0) + 1
        for label in self._rejected_reasons | set(counts):
            metrics.SUBSCRIPTION_REJECTED_TOPICS.labels(shard=self._label, reason=label).set(
                counts.get(label, 0)
            )
        self._rejected_reasons |= set(counts)
        if fresh:
            _warn_rejected(fresh)

    def cleared(self) -> None:
        """Disconnected: nothing counts as subscribed."""
        self.subscribed = 0
        metrics.SUBSCRIBED_TOPICS.labels(shard=self._label).set(0)

    def forget_gauges(self) -> None:
        """The rejected-topic series of a shard this worker no longer runs."""
        for reason in self._rejected_reasons:
            with contextlib.suppress(KeyError):
                metrics.SUBSCRIPTION_REJECTED_TOPICS.remove(self._label, reason)


def _warn_rejected(fresh: Mapping[str, RejectedTopic]) -> None:
    names = sorted(fresh)
    missing = sorted({p for t in fresh.values() for p in t.missing_permissions})
    reasons = sorted({t.reason or "unknown" for t in fresh.values()})
    more = f" and {len(names) - MAX_NAMED_AGENTS} more" if len(names) > MAX_NAMED_AGENTS else ""
    logger.warning(
        "Genesys rejected the topics of %d agents, who will not be observed: %s%s "
        "(reasons: %s; missing permissions: %s)",
        len(names),
        ", ".join(names[:MAX_NAMED_AGENTS]),
        more,
        "; ".join(reasons),
        ", ".join(missing) or "none listed",
    )
