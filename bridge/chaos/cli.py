"""The ``chaos`` subcommand: parse options, run :func:`bridge.chaos.runner.run_chaos`."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bridge.chaos.schedule import FAULTS, parse_faults

__all__ = ["DEFAULT_TOXIPROXY", "register"]

DEFAULT_SEED = 1
#: The exit code of a run stopped by SIGTERM (128 + 15, as a shell reports it).
TERMINATED = 143
DEFAULT_MINUTES = 3.0
DEFAULT_WORKERS = 3
DEFAULT_AGENTS = 3000
#: Where ``make`` builds Toxiproxy; else ``toxiproxy-server`` on PATH.
DEFAULT_TOXIPROXY = Path(__file__).resolve().parents[2] / ".cache" / "bin" / "toxiproxy-server"


def register(subparsers: Any) -> None:
    """Add ``chaos`` to the CLI."""
    p = subparsers.add_parser(
        "chaos",
        help="composed-fault run: simulator + Kafka + N workers under a seeded random fault schedule",
        description="Start the Genesys simulator, a Kafka broker (or use --bootstrap), Toxiproxy and "
        "N workers; inject a seeded random schedule of faults for --minutes; stop injecting, let the "
        "fleet settle, then check every invariant. Prints the fault timeline and a verdict; exit 0 "
        "only when every invariant holds. Faults: " + ", ".join(sorted(FAULTS)) + ".",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"schedule seed (default {DEFAULT_SEED})")
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="length of the fault schedule")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--agents", type=int, default=DEFAULT_AGENTS)
    p.add_argument(
        "--faults",
        default="all",
        help="comma list of faults to draw from (default all); -name excludes one, e.g. all,-stall",
    )
    p.add_argument("--settle-s", type=float, default=None, help="bound on the settle phase (default 180)")
    p.add_argument(
        "--startup-s", type=float, default=None, help="bound on the first convergence (default 180)"
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help="use this Kafka cluster (e.g. staging) instead of starting a broker: no broker restarts, "
        "no Kafka link faults; topics and BRIDGE_ID are unique to the run",
    )
    p.add_argument(
        "--keep", type=Path, default=None, help="keep logs (workers, simulator, broker) in this folder"
    )
    p.add_argument(
        "--events-per-sec", type=float, default=None, help="simulator change rate (default agents/100)"
    )
    p.add_argument("--shard-capacity", type=int, default=None, help="BRIDGE_SHARD_CAPACITY of the workers")
    p.add_argument("--mean-gap-s", type=float, default=None, help="mean time between faults (default 3)")
    p.add_argument(
        "--analytics-delay-s",
        type=float,
        default=None,
        help="the simulator's analytics delay: changes younger than this are not in its history yet "
        "(default 5; the history query is what the bridge backfills gaps from)",
    )
    p.add_argument("--toxiproxy", type=Path, default=None, help="toxiproxy-server binary")
    p.set_defaults(handler=_chaos)


def _toxiproxy(given: Path | None) -> Path | None:
    if given is not None:
        return given if given.exists() else None
    if DEFAULT_TOXIPROXY.exists():
        return DEFAULT_TOXIPROXY
    found = shutil.which("toxiproxy-server")
    return Path(found) if found else None


def _chaos(args: argparse.Namespace) -> int:
    from bridge import log  # noqa: PLC0415 - keeps --help fast
    from bridge.chaos.runner import DEFAULT_SETTLE_S, DEFAULT_STARTUP_S, ChaosOptions, run_chaos  # noqa: PLC0415

    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        print(f"presence-bridge chaos: {exc}", file=sys.stderr)
        return 2
    toxiproxy = _toxiproxy(args.toxiproxy)
    if toxiproxy is None:
        print("presence-bridge chaos: toxiproxy-server not found (make chaos builds it)", file=sys.stderr)
        return 2
    if args.workers < 1 or args.agents < 1 or args.minutes < 0:
        print("presence-bridge chaos: --workers and --agents must be positive", file=sys.stderr)
        return 2
    log.configure_logging("WARNING", "text")
    opts = ChaosOptions(
        seed=args.seed,
        minutes=args.minutes,
        workers=args.workers,
        agents=args.agents,
        faults=faults,
        toxiproxy=toxiproxy.resolve(),
        settle_s=DEFAULT_SETTLE_S if args.settle_s is None else args.settle_s,
        startup_s=DEFAULT_STARTUP_S if args.startup_s is None else args.startup_s,
        bootstrap=args.bootstrap,
        keep=args.keep,
        events_per_sec=args.events_per_sec,
        shard_capacity=args.shard_capacity,
        mean_gap_s=args.mean_gap_s,
        analytics_delay_s=args.analytics_delay_s,
    )
    return asyncio.run(_until_terminated(run_chaos(opts, out=lambda line: print(line, flush=True))))


async def _until_terminated(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main``; SIGTERM cancels it, as Ctrl-C does, so that everything it started is stopped."""
    task = asyncio.current_task()
    assert task is not None  # asyncio.run runs this as a task
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main
    except asyncio.CancelledError:
        print("presence-bridge chaos: terminated; what it started is stopped", file=sys.stderr, flush=True)
        return TERMINATED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
