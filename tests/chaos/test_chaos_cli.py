"""``presence-bridge chaos`` end to end: two short seeded runs of the real CLI must pass.

Each run starts its own simulator, broker, Toxiproxy and 3 workers, injects
faults for 45 s and settles (under 2 minutes in all). The fault subset
leaves out what the current bridge is known to fail (see
:data:`EXCLUDED`); re-enable each once its fix has landed.
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

#: Faults the current bridge fails under, with the run that showed it
#: (``presence-bridge chaos --workers 3 --agents 600 --shard-capacity 200 --minutes 1``).
EXCLUDED = {
    # --seed 4 --faults stall: a 3-20 s silent socket goes unnoticed with the default
    # heartbeat/ping settings; 3 agents stayed wrong, never reconciled (issue 12, part 3).
    "stall": "silent stall not detected with default settings",
    # --seed 4 --faults freeze,roster_remove,roster_add: 27 deleted agents never tombstoned
    # (removed in a map epoch written while their owner was frozen), and "partition 1 is ours
    # again; its shard kept running" after the shard was fenced (issue 12, part 5).
    "freeze": "removals during a frozen owner never tombstoned; fenced slot kept",
    # --seed 1 (300 agents, 2 workers, all faults): after a Kafka blackhole past the session
    # the fenced shard was "kept running" when its partition came back; 100 agents uncovered.
    "kafka_blackhole": "fenced slot not restarted when its partition comes back",
    # Loses every session like the blackhole; seen only together with it (seed 1) and with
    # freeze (seed 3, 2 agents not tombstoned), not isolated.
    "broker_restart": "sessions lost across the restart: same fenced-slot path",
}
SEEDS = (2, 5)
RUN_TIMEOUT_S = 200


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_short_chaos_run_passes(seed: int) -> None:
    """A 45-second run of 3 workers under the passing fault subset ends with a PASS verdict, exit 0."""
    faults = ",".join(["all", *(f"-{name}" for name in sorted(EXCLUDED))])
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
