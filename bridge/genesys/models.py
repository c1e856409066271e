r"""The Genesys Cloud REST replies the bridge reads, as pydantic models.

Field names are the API's camelCase (``connectUri``, ``presenceDefinition``);
unknown fields are ignored and every model is frozen. Presence and routing
payloads become :class:`~bridge.model.Change`\ s with the stream's own code
(:mod:`bridge.genesys.protocol`), so the REST and the stream normalise alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from bridge.genesys.protocol import presence_change, routing_change
from bridge.model import Change, Origin

__all__ = [
    "LISTED_CHANNELS",
    "PRESENCE_LIST",
    "REJECTED",
    "TOPIC_LIST",
    "ChannelInfo",
    "ChannelTopic",
    "ListedChannel",
    "Page",
    "PresenceDefinition",
    "PresenceDefinitionRef",
    "RawDefinition",
    "RejectedTopic",
    "RoutingStatus",
    "SubscriptionResult",
    "User",
    "UserPresence",
    "UserWithStatus",
]

#: ``ChannelTopic.state`` of a topic Genesys refused (the SDK's enum: Permitted, Rejected).
REJECTED: Final = "Rejected"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class ChannelInfo(_Model):
    """A notification channel: ``{id, connectUri, expires}``."""

    id: str
    connect_uri: str
    expires: datetime


class User(_Model):
    """A roster entry of ``GET /api/v2/users``."""

    id: str
    name: str | None = None
    state: str | None = None


class PresenceDefinitionRef(_Model):
    """``presenceDefinition`` inside a presence: ``{id, systemPresence}`` (raw, not normalised)."""

    id: str | None = None
    system_presence: str | None = None


class UserPresence(_Model):
    """A user's presence (bulk item or ``expand=presence``), as Genesys sent it.

    :meth:`to_change` normalises it with the stream's code
    (:func:`bridge.genesys.protocol.presence_change`).
    """

    user_id: str | None = None
    presence_definition: PresenceDefinitionRef | None = None
    message: str | None = None
    modified_date: str | None = None
    source: str | None = None
    primary: bool | None = None

    def to_change(
        self, user_id: str | None = None, *, observed_at: datetime, origin: Origin = Origin.RECONCILE
    ) -> Change:
        """A :class:`Change` (raises ``ProtocolError`` when systemPresence is missing or bad)."""
        return presence_change(
            user_id or self.user_id or "",
            self.model_dump(by_alias=True, exclude_none=True),
            observed_at=observed_at,
            origin=origin,
        )


class RoutingStatus(_Model):
    """A routing status: ``{userId, status, startTime}`` (raw, not normalised)."""

    user_id: str | None = None
    status: str | None = None
    start_time: str | None = None

    def to_change(
        self, user_id: str | None = None, *, observed_at: datetime, origin: Origin = Origin.RECONCILE
    ) -> Change:
        """A :class:`Change` (raises ``ProtocolError`` when the status is missing or bad)."""
        return routing_change(
            user_id or self.user_id or "",
            self.model_dump(by_alias=True, exclude_none=True),
            observed_at=observed_at,
            origin=origin,
        )


class UserWithStatus(_Model):
    """A user with ``expand=presence,routingStatus``; either part may be missing."""

    id: str
    name: str | None = None
    state: str | None = None
    presence: UserPresence | None = None
    routing_status: RoutingStatus | None = None

    def to_changes(self, *, observed_at: datetime, origin: Origin = Origin.RECONCILE) -> list[Change]:
        """The presence and routing-status changes present (``ProtocolError`` if one is malformed)."""
        out: list[Change] = []
        if self.presence is not None:
            out.append(self.presence.to_change(self.id, observed_at=observed_at, origin=origin))
        if self.routing_status is not None:
            out.append(self.routing_status.to_change(self.id, observed_at=observed_at, origin=origin))
        return out


class PresenceDefinition(_Model):
    """An org presence definition: ``system_presence`` normalised, ``label`` in en_US."""

    id: str
    system_presence: str
    label: str


class RawDefinition(_Model):
    """A presence definition as listed: ``{id, systemPresence, languageLabels}``."""

    id: str
    system_presence: str
    language_labels: dict[str, str] = Field(default_factory=dict)


class Page(_Model):
    """One page of a listing: ``{entities, pageCount, total}`` (entities parsed by the caller)."""

    entities: list[dict[str, Any]] = Field(default_factory=list)
    page_count: int | None = None
    total: int | None = None


class ChannelTopic(_Model):
    """The SDK's ``ChannelTopic`` of a reply: ``{id, state, rejectionReason, missingPermissions}``."""

    id: str
    state: str | None = None
    rejection_reason: str | None = None
    missing_permissions: list[str] | None = None


class ListedChannel(_Model):
    """A channel of the channel listing; those of other tokens come without an id."""

    id: str | None = None
    connect_uri: str | None = None
    expires: datetime | None = None


class RejectedTopic(_Model):
    """A topic Genesys refused to subscribe (``ChannelTopic.state == "Rejected"``)."""

    id: str
    reason: str | None = None
    missing_permissions: tuple[str, ...] = ()


class SubscriptionResult(_Model):
    """A subscription reply: the channel's permitted topics, and those rejected."""

    permitted: tuple[str, ...] = ()
    rejected: tuple[RejectedTopic, ...] = ()


#: Parsers of the list-shaped replies.
TOPIC_LIST: Final = TypeAdapter(list[ChannelTopic])
LISTED_CHANNELS: Final = TypeAdapter(list[ListedChannel])
PRESENCE_LIST: Final = TypeAdapter(list[UserPresence])
