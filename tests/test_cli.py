"""The console script's surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge import __version__
from bridge.cli import main


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the program name and version and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"presence-bridge {__version__}"


def test_installed_console_script_has_help() -> None:
    """The installed `presence-bridge` script answers --help."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "presence-bridge" in out


def test_no_command_is_a_usage_error() -> None:
    """Without a subcommand the CLI prints help and exits 2."""
    assert main([]) == 2


def test_audit_since_takes_a_duration_or_an_iso_time() -> None:
    """audit --since reads '30m' as 30 minutes ago and a naive ISO time as UTC; junk is a usage error."""
    from datetime import UTC, datetime, timedelta

    from bridge.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["audit", "--events", "--since", "30m"])
    assert args.events
    assert abs((datetime.now(UTC) - args.since) - timedelta(minutes=30)) < timedelta(seconds=5)
    iso = parser.parse_args(["audit", "--since", "2026-01-01T09:00:00"]).since
    assert iso == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "--since", "yesterday"])
