"""The worker's subcommands: ``run`` (the production process) and ``audit`` (see :mod:`bridge.audit`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import log
from bridge.errors import BridgeError
from bridge.settings import Settings, load_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``run`` and ``audit`` to the CLI."""
    run = subparsers.add_parser(
        "run",
        help="run a shard worker (the production process)",
        description="Stream Genesys Cloud presence and routing status into Kafka. "
        "Configured through BRIDGE_* environment variables (see README).",
    )
    run.set_defaults(handler=_run)

    audit = subparsers.add_parser(
        "audit",
        help="compare Kafka's compacted agent state with Genesys's current state",
        description="Exit 0 only when every agent's presence and routing status in Kafka "
        "matches Genesys (live org or simulator).",
    )
    audit.add_argument(
        "--grace-s",
        type=float,
        default=None,
        help="changes younger than this are re-checked, not counted (default 10)",
    )
    audit.add_argument(
        "--events",
        action="store_true",
        help="also read the event topics: fail on a duplicated eventId or an agent's change "
        "older than its previous record in the same topic",
    )
    audit.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="WHEN",
        help="with --events: start at this ISO-8601 time or this long ago (e.g. 30m, 6h, 2d); "
        "default the whole retention",
    )
    audit.add_argument(
        "--allow-unobservable",
        action="store_true",
        help="agents whose topics Genesys rejects are a note, not a mismatch",
    )
    audit.set_defaults(handler=_audit)


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> datetime:
    """``--since``: an ISO-8601 time (UTC when naive) or a duration back from now (``90s``, ``30m``)."""
    unit = _SINCE_UNITS.get(text[-1:])
    if unit is not None and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * unit)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or a duration like 30m: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _serve(main: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """Load settings, set up logging, run ``main``; bridge errors become a message and an exit code."""
    try:
        settings = load_settings()
    except BridgeError as exc:
        print(f"presence-bridge: {exc}", file=sys.stderr)
        return 2
    log.configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(main(settings))
    except BridgeError as exc:
        print(f"presence-bridge: {exc}", file=sys.stderr)
        return 1


def _run(_args: argparse.Namespace) -> int:
    from bridge import memory  # noqa: PLC0415 - keeps --help fast
    from bridge.worker import Worker, install_signal_handlers  # noqa: PLC0415

    async def main(settings: Settings) -> int:
        worker = Worker(settings)
        install_signal_handlers(worker.request_stop)
        memory.tune_gc()  # the process is this worker's from here: see bridge.memory
        return await worker.run()

    return _serve(main)


def _audit(args: argparse.Namespace) -> int:
    from bridge.audit import DEFAULT_GRACE_S, audit  # noqa: PLC0415 - keeps --help fast
    from bridge.worker import genesys_rest  # noqa: PLC0415

    grace = DEFAULT_GRACE_S if args.grace_s is None else args.grace_s

    async def main(settings: Settings) -> int:
        clients = settings.clients()
        if not clients:
            print("presence-bridge: no Genesys OAuth client configured", file=sys.stderr)
            return 2
        log.register_secret(clients[0].client_secret.get_secret_value())
        rest = genesys_rest(settings, clients[0])
        try:
            report = await audit(
                settings,
                rest,
                grace_s=grace,
                events=args.events,
                since=args.since,
                allow_unobservable=args.allow_unobservable,
            )
        finally:
            await rest.aclose()
        return 0 if report.failures == 0 else 1

    return _serve(main)
