"""``presence-bridge sim``: run the Genesys Cloud simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bridge.sim import config as c

__all__ = [
    "READY_LINE",
    "add_arguments",
    "config_from_args",
    "main",
    "parse_clients",
    "parse_endpoint_limit",
    "register",
    "run",
]

READY_LINE = "simulator listening on {base_url}"


def parse_clients(text: str) -> dict[str, str]:
    """``id:secret,id2:secret2`` → {id: secret}."""
    clients = {}
    for item in text.split(","):
        client_id, sep, secret = item.strip().partition(":")
        if not sep or not client_id or not secret:
            raise argparse.ArgumentTypeError(f"expected id:secret, got {item!r}")
        clients[client_id] = secret
    return clients


def register(subparsers: Any) -> None:
    """Add the ``sim`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sim", help="run the Genesys Cloud simulator", description=__doc__
    )
    add_arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.sim [options]``: the same as ``presence-bridge sim``."""
    parser = argparse.ArgumentParser(prog="python -m bridge.sim", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options."""
    p.add_argument(
        "--host", default=c.DEFAULT_HOST, help="bind address (admin API only on loopback or with a token)"
    )
    p.add_argument("--port", type=int, default=c.DEFAULT_PORT, help="port; 0 picks a free one")
    p.add_argument("--agents", type=int, default=c.DEFAULT_AGENTS)
    p.add_argument(
        "--events-per-sec", type=float, default=c.DEFAULT_EVENTS_PER_SEC, help="overall change rate"
    )
    p.add_argument("--paused", action="store_true", help="start with the generator paused")
    p.add_argument("--heartbeat-s", type=float, default=c.DEFAULT_HEARTBEAT_S)
    p.add_argument("--channel-ttl-s", type=float, default=c.DEFAULT_CHANNEL_TTL_S)
    p.add_argument(
        "--no-extend-on-subscribe",
        dest="extend_on_subscribe",
        action="store_false",
        help="channels close at expiry even when re-subscribed",
    )
    p.add_argument("--token-ttl-s", type=int, default=c.DEFAULT_TOKEN_TTL_S)
    p.add_argument("--rate-limit-per-min", type=int, default=c.DEFAULT_RATE_LIMIT_PER_MIN)
    p.add_argument("--rate-limit-window-s", type=float, default=c.DEFAULT_RATE_LIMIT_WINDOW_S)
    p.add_argument("--socket-closing-grace-s", type=float, default=c.DEFAULT_SOCKET_CLOSING_GRACE_S)
    p.add_argument("--max-channels-per-client", type=int, default=c.DEFAULT_MAX_CHANNELS_PER_CLIENT)
    p.add_argument("--max-topics-per-channel", type=int, default=c.DEFAULT_MAX_TOPICS_PER_CHANNEL)
    p.add_argument(
        "--clients",
        type=parse_clients,
        default=dict(c.DEFAULT_CLIENTS),
        help=f"OAuth clients as id:secret,... (default {c.DEFAULT_CLIENT_ID}:{c.DEFAULT_CLIENT_SECRET})",
    )
    p.add_argument(
        "--endpoint-rate-limit",
        dest="endpoint_rate_limits",
        type=parse_endpoint_limit,
        action="append",
        default=None,
        metavar="'METHOD /route=N'",
        help="an endpoint's own allowance per window (repeatable; default "
        + ", ".join(f"'{k}={v}'" for k, v in c.DEFAULT_ENDPOINT_RATE_LIMITS.items())
        + "; N=0 removes it)",
    )
    p.add_argument(
        "--revoke-ends-channels",
        action="store_true",
        help="revoking a token also ends the channels created with it (after a token_revoked message)",
    )
    p.add_argument(
        "--analytics-delay-s",
        type=float,
        default=c.DEFAULT_ANALYTICS_DELAY_S,
        help="a change younger than this is not in the analytics history query yet "
        f"(default {c.DEFAULT_ANALYTICS_DELAY_S:g})",
    )
    p.add_argument("--seed", type=int, default=None, help="makes agents and their changes reproducible")
    p.add_argument(
        "--admin-token", default=None, help="serve /sim/ on any bind, guarded by X-Sim-Admin-Token"
    )
    p.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> c.SimConfig:
    """The SimConfig the parsed arguments describe."""
    return c.SimConfig(
        host=args.host,
        port=args.port,
        agents=args.agents,
        events_per_sec=args.events_per_sec,
        generator_paused=args.paused,
        heartbeat_s=args.heartbeat_s,
        channel_ttl_s=args.channel_ttl_s,
        extend_on_subscribe=args.extend_on_subscribe,
        token_ttl_s=args.token_ttl_s,
        rate_limit_per_min=args.rate_limit_per_min,
        rate_limit_window_s=args.rate_limit_window_s,
        socket_closing_grace_s=args.socket_closing_grace_s,
        max_channels_per_client=args.max_channels_per_client,
        max_topics_per_channel=args.max_topics_per_channel,
        clients=args.clients,
        seed=args.seed,
        admin_token=args.admin_token,
        endpoint_rate_limits=_endpoint_limits(args.endpoint_rate_limits),
        revoke_ends_channels=args.revoke_ends_channels,
        analytics_delay_s=args.analytics_delay_s,
    )


def parse_endpoint_limit(text: str) -> tuple[str, int]:
    """``GET /api/v2/users=180`` → ("GET /api/v2/users", 180)."""
    route, sep, limit = text.rpartition("=")
    if not sep or " " not in route.strip() or not limit.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected 'METHOD /route=N', got {text!r}")
    return route.strip(), int(limit)


def _endpoint_limits(items: list[tuple[str, int]] | None) -> dict[str, int]:
    limits = dict(c.DEFAULT_ENDPOINT_RATE_LIMITS)
    for route, limit in items or []:
        if limit:
            limits[route] = limit
        else:
            limits.pop(route, None)
    return limits


async def _main(config: c.SimConfig) -> None:
    # Imported here so `presence-bridge --help` does not load aiohttp.
    from bridge.sim.server import SimHandle, serve  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(handle: SimHandle) -> None:
        print(READY_LINE.format(base_url=handle.base_url), flush=True)

    await serve(config, stop, ready)


def run(args: argparse.Namespace) -> int:
    """Run the simulator; returns 0 after a clean stop."""
    try:
        asyncio.run(_main(config_from_args(args)))
    except OSError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 1
    return 0
