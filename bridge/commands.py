"""The worker's subcommands: ``run`` (the production process) and ``audit``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
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
        "--allow-unobservable",
        action="store_true",
        help="agents whose topics Genesys rejects are a note, not a mismatch",
    )
    audit.set_defaults(handler=_audit)


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
    from bridge.worker import Worker, install_signal_handlers  # noqa: PLC0415 - keeps --help fast

    async def main(settings: Settings) -> int:
        worker = Worker(settings)
        install_signal_handlers(worker.request_stop)
        return await worker.run()

    return _serve(main)


def _audit(args: argparse.Namespace) -> int:
    from bridge.audit import DEFAULT_GRACE_S, audit  # noqa: PLC0415 - keeps --help fast
    from bridge.genesys.rest import GenesysRest  # noqa: PLC0415

    grace = DEFAULT_GRACE_S if args.grace_s is None else args.grace_s

    async def main(settings: Settings) -> int:
        clients = settings.clients()
        if not clients:
            print("presence-bridge: no Genesys OAuth client configured", file=sys.stderr)
            return 2
        log.register_secret(clients[0].client_secret.get_secret_value())
        rest = GenesysRest.from_settings(settings, clients[0])
        try:
            mismatches = await audit(
                settings, rest, grace_s=grace, allow_unobservable=args.allow_unobservable
            )
        finally:
            await rest.aclose()
        return 0 if mismatches == 0 else 1

    return _serve(main)
