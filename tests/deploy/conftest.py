"""Shared helpers for the deploy artefacts: paths and the external tools.

The tools are installed by ``make deploy-tools`` (a dependency of ``make
pytest``): helm is built once into ``.cache/bin/helm`` and promtool comes from
Debian's ``prometheus`` package. A missing tool fails the test with the
command that installs it, never skips: an untested chart must not look green.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "presence-bridge"
HELM = Path(os.environ.get("BRIDGE_HELM", REPO / ".cache" / "bin" / "helm"))
PROMTOOL = Path(os.environ.get("BRIDGE_PROMTOOL", "/usr/bin/promtool"))


def require_tool(path: Path, install_hint: str) -> Path:
    """Return *path* if it is an executable, otherwise fail with a clear message."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing; run `make deploy-tools` ({install_hint})", pytrace=False)
    return path


def run_tool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool and fail the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(str(a) for a in args)}` exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
    return proc


@pytest.fixture(scope="session")
def helm() -> Path:
    """The cached helm binary."""
    return require_tool(HELM, "it builds helm v3.22.0 into .cache/bin with `go install`")


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Debian's promtool."""
    return require_tool(PROMTOOL, "it runs `apt-get install -y prometheus`")
