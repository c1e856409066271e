"""`presence-bridge sim`: starts, prints the ready line, serves, stops on SIGTERM."""

from __future__ import annotations

import argparse
import subprocess
import sys

import httpx

from bridge.sim.cli import add_arguments, config_from_args
from bridge.sim.process import SimProcess


def test_cli_flags_map_to_config() -> None:
    """Every flag lands in SimConfig."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--agents",
            "5",
            "--events-per-sec",
            "3",
            "--heartbeat-s",
            "0.5",
            "--channel-ttl-s",
            "2",
            "--token-ttl-s",
            "300",
            "--rate-limit-per-min",
            "10",
            "--seed",
            "9",
            "--no-extend-on-subscribe",
            "--socket-closing-grace-s",
            "1",
            "--clients",
            "a:1,b:2",
            "--analytics-delay-s",
            "0.5",
        ]
    )
    config = config_from_args(args)
    assert (config.port, config.agents, config.events_per_sec, config.heartbeat_s) == (0, 5, 3.0, 0.5)
    assert (config.channel_ttl_s, config.token_ttl_s, config.rate_limit_per_min, config.seed) == (
        2.0,
        300,
        10,
        9,
    )
    assert config.extend_on_subscribe is False and config.socket_closing_grace_s == 1.0
    assert config.clients == {"a": "1", "b": "2"}
    assert config.analytics_delay_s == 0.5


def test_analytics_delay_defaults_to_five_seconds() -> None:
    """Without --analytics-delay-s the analytics history lags 5 s behind the truth."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).analytics_delay_s == 5.0


def test_subprocess_prints_ready_line_serves_and_stops_cleanly() -> None:
    """The subcommand prints `simulator listening on http://HOST:PORT`, answers, and exits 0 on SIGTERM."""
    sim = SimProcess(["--agents", "3", "--seed", "1"])
    base = sim.start()
    try:
        assert base.startswith("http://127.0.0.1:")
        r = httpx.post(
            f"{base}/oauth/token",
            auth=("sim-client", "sim-secret"),
            data={"grant_type": "client_credentials"},
        )
        assert r.status_code == 200
        assert len(httpx.get(f"{base}/sim/truth").json()["users"]) == 3
    finally:
        assert sim.stop() == 0


def test_registered_as_presence_bridge_subcommand() -> None:
    """`presence-bridge sim --help` lists the simulator's options."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "sim", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--events-per-sec" in out and "--channel-ttl-s" in out
