"""Logging: JSON or text lines that carry the shard and channel ids, never a secret.

The shard and channel a log line belongs to come from context variables set
by the shard task (:func:`bind`), so every module's ``logging.getLogger``
calls get them without passing them around. A filter on the root handler
scrubs bearer tokens, ``access_token`` values and every secret registered
with :func:`register_secret` (the client secrets and the SASL password are
registered at start-up) from the message, its arguments and exception text.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import orjson

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "bind",
    "configure_logging",
    "redact",
    "register_secret",
]

REDACTED = "[redacted]"
SHARD: contextvars.ContextVar[int | None] = contextvars.ContextVar("shard", default=None)
CHANNEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("channel", default=None)
_SECRETS: set[str] = set()
#: Secrets shorter than this are not scrubbed by value (they would mangle ordinary words).
MIN_SECRET_LEN = 6
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]+"),
    re.compile(
        r"""(?i)(["']?(?:access_token|client_secret|password|authorization)["']?\s*[:=]\s*["']?)[^"'\s,&}]+"""
    ),
)


def register_secret(value: str | None) -> None:
    """Scrub this exact value from every later log line."""
    if value and len(value) >= MIN_SECRET_LEN:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """The text with tokens, credentials and registered secrets replaced."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Renders the message once, scrubbed, so no handler sees the raw text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


@contextmanager
def bind(*, shard: int | None = None, channel: str | None = None) -> Iterator[None]:
    """Attach shard and/or channel ids to every log line in this context."""
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    if shard is not None:
        tokens.append((SHARD, SHARD.set(shard)))
    if channel is not None:
        tokens.append((CHANNEL, CHANNEL.set(channel)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_channel(channel: str | None) -> None:
    """Record the current channel id for this task's log lines."""
    CHANNEL.set(channel)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, shard, channel, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        shard, channel = SHARD.get(), CHANNEL.get()
        if shard is not None:
            doc["shard"] = shard
        if channel is not None:
            doc["channel"] = channel
        if record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the shard and channel in brackets."""

    def format(self, record: logging.LogRecord) -> str:
        shard, channel = SHARD.get(), CHANNEL.get()
        where = ""
        if shard is not None:
            where = f" [shard {shard}" + (f" channel {channel}]" if channel else "]")
        line = (
            time.strftime("%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d} {record.levelname:<7} {record.name}{where}: {record.getMessage()}"
        )
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Install one redacting handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bridge", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._bridge = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries log request URLs and frames at DEBUG; keep them quiet.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "aiohttp.client", "aiohttp.websocket"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
