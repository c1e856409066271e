"""Normalisation of Genesys presence and routing-status payloads into :class:`~bridge.model.Change`.

The rules (README and :mod:`bridge.genesys.protocol`, which re-exports these
functions): ``systemPresence`` and routing statuses in any spelling become
upper snake case; timestamps are ISO-8601 with or without milliseconds,
``Z`` or an offset, and become aware UTC; a missing or empty timestamp is
not an error (the change takes ``observed_at`` with ``timestamp_known=False``),
an unparsable one is. Anything malformed raises
:class:`~bridge.errors.ProtocolError` with a stable ``reason`` slug. Used for
the stream's frames and by the REST models (reconciliation).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from bridge.errors import ProtocolError
from bridge.model import Change, Kind, Origin, PresenceValue, RoutingValue, event_id

__all__ = [
    "MIN_TIMESTAMP_LENGTH",
    "STATUS_CACHE_SIZE",
    "is_record_time",
    "normalise_status",
    "parse_timestamp",
    "presence_change",
    "routing_change",
]

#: Shortest text that can carry a date and a time ("2024-05-01T10:00").
MIN_TIMESTAMP_LENGTH: Final = 16
#: Distinct raw status spellings remembered by :func:`normalise_status` (bounds a hostile stream).
STATUS_CACHE_SIZE: Final = 1024
_ZERO: Final = timedelta(0)
#: Length of ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
_RECORD_TIME_LENGTH: Final = 24
#: A CamelCase word boundary ("OnQueue" → "On Queue").
_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _missing(what: str) -> ProtocolError:
    return ProtocolError(f"missing {what}", reason="missing_field")


def _bad_type(what: str, value: object) -> ProtocolError:
    return ProtocolError(f"{what} has type {type(value).__name__}", reason="bad_type")


def _opt_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or type(value) is str:
        return value
    raise _bad_type(key, value)


@functools.lru_cache(maxsize=STATUS_CACHE_SIZE)
def normalise_status(raw: str) -> str:
    """Upper snake case: ``"On Queue"``, ``"OnQueue"``, ``"on-queue"``, ``"ON_QUEUE"`` → ``"ON_QUEUE"``.

    A lower-case letter or digit followed by an upper-case one is a word
    boundary (CamelCase); an all-capitals word is left whole. Cached: an org
    has a handful of statuses and this runs for every frame.
    """
    spaced = _CAMEL_BOUNDARY.sub(" ", raw.replace("-", " ").replace("_", " "))
    return "_".join(spaced.split()).upper()


def is_record_time(text: str) -> bool:
    """True when ``text``, once parsed, is written back unchanged by :func:`~bridge.model.format_time`.

    That is ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in ASCII digits, what Genesys sends
    (the caller has parsed it: the digits are digits and the date is real).
    """
    return (
        len(text) == _RECORD_TIME_LENGTH
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[4] == "-"
        and text[7] == "-"
        and text[13] == ":"
        and text[16] == ":"
        and text[0] != "0"
        and text.isascii()
    )


def parse_timestamp(raw: object, what: str = "timestamp") -> datetime | None:
    """An ISO-8601 time (millis optional, ``Z`` or offset) as aware UTC; None when missing or empty.

    A naive time is taken as UTC. Anything else raises ``ProtocolError``
    (``bad_type`` or ``bad_timestamp``).
    """
    if raw is None or raw == "":
        return None
    if type(raw) is not str:
        raise _bad_type(what, raw)
    if len(raw) < MIN_TIMESTAMP_LENGTH:
        raise ProtocolError(f"{what} is not an ISO-8601 date-time", reason="bad_timestamp")
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is UTC:  # "…Z", what Genesys sends: already aware UTC
            return value
        offset = value.utcoffset()
        if offset is None or offset == _ZERO:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ProtocolError(f"{what} is not an ISO-8601 date-time", reason="bad_timestamp") from None


def _finish(
    user_id: str,
    kind: Kind,
    value: PresenceValue | RoutingValue,
    changed: datetime | None,
    *,
    observed_at: datetime,
    origin: Origin,
    received_at: float,
    genesys_topic: str | None,
    correlation_id: str | None,
) -> Change:
    changed_at = observed_at if changed is None else changed
    try:
        eid = event_id(user_id, kind, changed_at, value)
    except (UnicodeError, ValueError, OverflowError):
        # Lone surrogates (valid JSON escapes, invalid UTF-8) cannot be hashed or produced.
        raise ProtocolError("text fields are not valid Unicode", reason="bad_type") from None
    return Change(
        user_id=user_id,
        kind=kind,
        changed_at=changed_at,
        value=value,
        observed_at=observed_at,
        origin=origin,
        event_id=eid,
        timestamp_known=changed is not None,
        correlation_id=correlation_id,
        genesys_topic=genesys_topic,
        received_at=received_at,
    )


def presence_change(
    user_id: str,
    body: object,
    *,
    observed_at: datetime,
    origin: Origin = Origin.STREAM,
    received_at: float = 0.0,
    genesys_topic: str | None = None,
    correlation_id: str | None = None,
) -> Change:
    """A presence :class:`Change` from a Genesys presence payload.

    ``body`` has the shape shared by the notification ``eventBody``, the bulk
    presence items and ``expand=presence``: ``{presenceDefinition: {id,
    systemPresence}, message, modifiedDate, source, primary}``.
    """
    if not user_id:
        raise _missing("user id")
    if type(body) is not dict:
        raise _missing("presence body") if body is None else _bad_type("presence body", body)
    definition = body.get("presenceDefinition")
    if definition is None:
        raise _missing("presenceDefinition")
    if type(definition) is not dict:
        raise _bad_type("presenceDefinition", definition)
    system = definition.get("systemPresence")
    if system is None:
        raise _missing("systemPresence")
    if type(system) is not str:
        raise _bad_type("systemPresence", system)
    system = normalise_status(system)
    if not system:
        raise _missing("systemPresence")
    primary = body.get("primary")
    if primary is not None and type(primary) is not bool:
        raise _bad_type("primary", primary)
    value = PresenceValue(
        system_presence=system,
        presence_definition_id=_opt_str(definition, "id"),
        message=_opt_str(body, "message"),
        source=_opt_str(body, "source"),
        primary=primary,
    )
    changed = parse_timestamp(body.get("modifiedDate"), "modifiedDate")
    return _finish(
        user_id,
        Kind.PRESENCE,
        value,
        changed,
        observed_at=observed_at,
        origin=origin,
        received_at=received_at,
        genesys_topic=genesys_topic,
        correlation_id=correlation_id,
    )


def routing_change(
    user_id: str,
    status_body: object,
    *,
    observed_at: datetime,
    origin: Origin = Origin.STREAM,
    received_at: float = 0.0,
    genesys_topic: str | None = None,
    correlation_id: str | None = None,
) -> Change:
    """A routing-status :class:`Change` from ``{status, startTime}``.

    That is the notification's ``eventBody.routingStatus``, the
    ``expand=routingStatus`` object and the ``/users/{id}/routingstatus`` reply.
    """
    if not user_id:
        raise _missing("user id")
    if type(status_body) is not dict:
        if status_body is None:
            raise _missing("routingStatus")
        raise _bad_type("routingStatus", status_body)
    status = status_body.get("status")
    if status is None:
        raise _missing("routingStatus.status")
    if type(status) is not str:
        raise _bad_type("routingStatus.status", status)
    status = normalise_status(status)
    if not status:
        raise _missing("routingStatus.status")
    changed = parse_timestamp(status_body.get("startTime"), "startTime")
    return _finish(
        user_id,
        Kind.ROUTING_STATUS,
        RoutingValue(status=status),
        changed,
        observed_at=observed_at,
        origin=origin,
        received_at=received_at,
        genesys_topic=genesys_topic,
        correlation_id=correlation_id,
    )
