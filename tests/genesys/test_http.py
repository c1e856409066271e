"""bridge.genesys.http: one status → error table per kind of request, one Retry-After reader."""

from __future__ import annotations

import pytest

from bridge.errors import (
    AuthError,
    ChannelClosedError,
    GenesysError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from bridge.genesys.http import (
    DEFAULT_RETRY_AFTER_S,
    HANDSHAKE_ERRORS,
    REST_ERRORS,
    TOKEN_ERRORS,
    StatusErrors,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("table", "status", "kind"),
    [
        (REST_ERRORS, 401, AuthError),
        (REST_ERRORS, 403, RequestError),
        (REST_ERRORS, 404, NotFoundError),
        (REST_ERRORS, 408, TransientError),
        (REST_ERRORS, 429, RateLimitedError),
        (REST_ERRORS, 503, TransientError),
        (REST_ERRORS, 400, RequestError),
        (TOKEN_ERRORS, 403, AuthError),
        (TOKEN_ERRORS, 404, RequestError),
        (TOKEN_ERRORS, 502, TransientError),
        (HANDSHAKE_ERRORS, 404, NotFoundError),
        (HANDSHAKE_ERRORS, 403, AuthError),
        (HANDSHAKE_ERRORS, 429, ChannelClosedError),
        (HANDSHAKE_ERRORS, 500, ChannelClosedError),
    ],
)
def test_each_kind_of_request_maps_statuses_by_its_table(
    table: StatusErrors, status: int, kind: type[GenesysError]
) -> None:
    """The error class follows the table; the status and endpoint ride along."""
    error = table.error(status, "refused", endpoint="/x")
    assert type(error) is kind
    assert error.status == status and error.endpoint == "/x"


def test_a_429_carries_the_retry_after_it_was_given() -> None:
    """A 429 becomes a RateLimitedError waiting the header's seconds."""
    error = REST_ERRORS.error(429, "slow down", retry_after="7")
    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), (None, DEFAULT_RETRY_AFTER_S), ("", DEFAULT_RETRY_AFTER_S)],
)
def test_retry_after_reads_seconds(raw: str | None, expected: float) -> None:
    """Retry-After is seconds, never negative; missing means the default."""
    assert retry_after_s(raw) == expected


def test_retry_after_that_is_not_a_number_waits_the_default() -> None:
    """An HTTP-date or garbage Retry-After falls back to the default wait."""
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == DEFAULT_RETRY_AFTER_S
