"""Notification topic names the simulator understands.

Accepted: ``v2.users.{id}.presence``, ``v2.users.{id}.routingStatus`` and the
combined form ``v2.users.{id}?presence&routingStatus`` (either order, or a
single attribute), at most 200 characters. A combined topic is one topic for
the 1,000-topic limit and expands into one notification per attribute, under
the plain topic names. Anything else is an invalid topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.sim.org import PRESENCE, ROUTING_STATUS

__all__ = ["KINDS", "MAX_TOPIC_LENGTH", "USER_TOPIC_PREFIX", "Topic", "TopicError", "parse_topic"]

USER_TOPIC_PREFIX = "v2.users."
MAX_TOPIC_LENGTH = 200
KINDS = frozenset({PRESENCE, ROUTING_STATUS})
_SUFFIXES = {f".{kind}": kind for kind in KINDS}


class TopicError(ValueError):
    """A topic name the service does not accept."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed user topic: whose changes, and which kinds."""

    name: str
    user_id: str
    kinds: frozenset[str]


def _valid_id(user_id: str) -> bool:
    return bool(user_id) and not any(c in user_id for c in ".?&/ ")


def parse_topic(name: object) -> Topic:
    """Parse one topic name; :class:`TopicError` says why it is invalid."""
    if not isinstance(name, str) or not name:
        raise TopicError("topic must be a non-empty string")
    if len(name) > MAX_TOPIC_LENGTH:
        raise TopicError(f"topic longer than {MAX_TOPIC_LENGTH} characters: {name[:40]}…")
    if not name.startswith(USER_TOPIC_PREFIX):
        raise TopicError(f"unsupported topic: {name}")
    rest = name[len(USER_TOPIC_PREFIX) :]
    if "?" in rest:
        user_id, query = rest.split("?", 1)
        attrs = query.split("&")
        if not attrs or any(a not in KINDS for a in attrs) or len(set(attrs)) != len(attrs):
            raise TopicError(f"unsupported topic attributes: {name}")
        kinds = frozenset(attrs)
    else:
        for suffix, kind in _SUFFIXES.items():
            if rest.endswith(suffix):
                user_id, kinds = rest[: -len(suffix)], frozenset({kind})
                break
        else:
            raise TopicError(f"unsupported topic: {name}")
    if not _valid_id(user_id):
        raise TopicError(f"invalid user id in topic: {name}")
    return Topic(name, user_id, kinds)
