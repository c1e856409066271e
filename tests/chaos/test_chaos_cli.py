"""``presence-bridge chaos`` end to end: two short seeded runs of the real CLI must pass.

Each run starts its own simulator, broker, Toxiproxy and 3 workers, injects
every kind of fault for 45 s and settles (under 2 minutes in all).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.chaos.cli import DEFAULT_TOXIPROXY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DEFAULT_TOXIPROXY.exists(), reason="toxiproxy not built (make pytest builds it)"),
]

#: Two seeds whose 45-second schedules mix the most fault kinds (15 and 16, among
#: them a broker restart, a Kafka blackhole, a stall, a kill, a system message
#: and rejected topics); every fault of the catalogue is enabled.
SEEDS = (11, 17)
RUN_TIMEOUT_S = 200


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_short_chaos_run_passes(seed: int) -> None:
    """A 45-second run of 3 workers under every fault kind ends with a PASS verdict, exit 0."""
    faults = "all"
    argv = [sys.executable, "-m", "bridge", "chaos", "--seed", str(seed), "--minutes", "0.75"]
    argv += ["--workers", "3", "--agents", "600", "--shard-capacity", "200", "--faults", faults]
    argv += ["--settle-s", "60", "--startup-s", "60"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    verdict = [line for line in done.stdout.splitlines() if line.startswith("chaos verdict:")]
    print(*verdict, sep="\n")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert len(verdict) == 1
    assert verdict[0].startswith(f"chaos verdict: PASS seed={seed} ")
    assert " mismatches=0 duplicates=0 order_violations=0 uncovered=0 multiply_covered=0 " in verdict[0]
