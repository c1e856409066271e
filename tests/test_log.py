"""Logging: shard/channel context and secret scrubbing."""

from __future__ import annotations

import io
import json
import logging

from bridge import log


def _capture(fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    log.configure_logging("DEBUG", fmt, stream=stream)
    return stream


def test_json_lines_carry_shard_and_channel() -> None:
    """A line logged inside bind() has the shard and channel fields."""
    stream = _capture()
    with log.bind(shard=3, channel="ch-1"):
        logging.getLogger("bridge.test").info("hello %s", "world")
    doc = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert doc["msg"] == "hello world"
    assert doc["shard"] == 3
    assert doc["channel"] == "ch-1"
    assert doc["level"] == "INFO"


def test_text_format_names_the_shard() -> None:
    """Text lines show the shard and channel in brackets."""
    stream = _capture("text")
    with log.bind(shard=7, channel="abc"):
        logging.getLogger("bridge.test").warning("careful")
    assert "[shard 7 channel abc]" in stream.getvalue()


def test_registered_secrets_and_tokens_are_scrubbed() -> None:
    """Secrets, bearer tokens and access_token values never reach the output."""
    stream = _capture()
    log.register_secret("s3cr3t-client-secret")
    logger = logging.getLogger("bridge.test")
    logger.debug("auth with %s", "s3cr3t-client-secret")
    logger.debug("header Authorization: Bearer abc.def.ghi")
    logger.debug('reply {"access_token": "tok-123456789", "expires_in": 86400}')
    try:
        raise RuntimeError("failed with s3cr3t-client-secret")
    except RuntimeError:
        logger.exception("boom")
    out = stream.getvalue()
    for secret in ("s3cr3t-client-secret", "abc.def.ghi", "tok-123456789"):
        assert secret not in out
    assert log.REDACTED in out
    assert "expires_in" in out


def test_short_values_are_not_registered() -> None:
    """Very short 'secrets' are not scrubbed by value (they would mangle ordinary words)."""
    log.register_secret("ab")
    assert log.redact("about") == "about"
