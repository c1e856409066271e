"""bridge.genesys.normalise: a Genesys time text is kept only when the records would write it unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ProtocolError
from bridge.genesys.normalise import is_record_time, parse_timestamp
from bridge.model import clear_time_cache, format_time


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_every_record_time_is_recognised(value: datetime) -> None:
    """format_time's own output passes is_record_time."""
    clear_time_cache()
    assert is_record_time(format_time(value))


@given(st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z"))
def test_a_recognised_text_is_what_format_time_writes_for_it(text: str) -> None:
    """Any parsable text that passes is_record_time formats back to itself (any digits, any date)."""
    try:
        parsed = parse_timestamp(text)
    except ProtocolError:
        return
    assert parsed is not None
    if is_record_time(text):
        clear_time_cache()
        assert format_time(parsed) == text


def test_other_spellings_are_not_record_times() -> None:
    """A space, an offset, no milliseconds, microseconds or an ISO week date are formatted anew."""
    for text in (
        "2026-03-01 09:00:01.000Z",
        "2026-03-01T09:00:01.000+00:00",
        "2026-03-01T09:00:01Z",
        "2026-03-01T09:00:01.000123Z",
        "2026-W09-7T09:00:01.000Z",
        "0999-03-01T09:00:01.000Z",
    ):
        assert not is_record_time(text), text
    assert is_record_time("2026-03-01T09:00:01.037Z")
