"""The chaos environment's simulator command line: the analytics delay stays on."""

from __future__ import annotations

import argparse
from pathlib import Path

from bridge.chaos.cli import register
from bridge.chaos.env import Environment


def _env(**kw: float) -> Environment:
    return Environment(
        run_dir=Path("/nonexistent"),
        workers=1,
        agents=10,
        seed=3,
        events_per_sec=1.0,
        toxiproxy_bin=Path("x"),
        **kw,
    )


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_simulator_runs_with_the_default_analytics_delay() -> None:
    """Unless told otherwise the chaos simulator lags its history by the simulator's default, 5 s."""
    assert float(_flag(_env().sim_args(), "--analytics-delay-s")) == 5.0


def test_analytics_delay_is_passed_through() -> None:
    """`presence-bridge chaos --analytics-delay-s 2` parses, and the environment hands it to the simulator."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["chaos", "--analytics-delay-s", "2"])
    assert args.analytics_delay_s == 2.0
    assert parser.parse_args(["chaos"]).analytics_delay_s is None
    assert float(_flag(_env(analytics_delay_s=2.0).sim_args(), "--analytics-delay-s")) == 2.0
