"""The chaos schedule: seeded, pure, and within its rules."""

from __future__ import annotations

import itertools

import pytest

from bridge.chaos.schedule import (
    BROKER_RESTART_EVERY_S,
    FAULTS,
    KAFKA_SESSION_S,
    LEAD_IN_S,
    RECOVERY_GAP_S,
    WORKER_FAULTS,
    build_schedule,
    parse_faults,
)

EVERY = frozenset(FAULTS)


def test_same_seed_same_schedule_other_seed_other() -> None:
    """The schedule is a function of its arguments: a seed replays, another seed differs."""
    assert build_schedule(7, 180, 3, EVERY) == build_schedule(7, 180, 3, EVERY)
    assert build_schedule(7, 180, 3, EVERY) != build_schedule(8, 180, 3, EVERY)


def test_faults_are_in_time_inside_the_run_and_end_by_its_end() -> None:
    """Times ascend after the lead-in; every duration ends within the run."""
    for seed in range(20):
        faults = build_schedule(seed, 120, 3, EVERY)
        times = [f.at_s for f in faults]
        assert times == sorted(times)
        assert all(LEAD_IN_S < f.at_s < 120 for f in faults)
        assert all(f.at_s + f.duration_s <= 120 + 0.01 for f in faults)


def test_only_chosen_faults_appear_and_a_long_run_draws_every_one() -> None:
    """--faults restricts the draw; a 30-minute run uses every fault of the catalogue."""
    chosen = {"drop", "kill"}
    assert {f.name for f in build_schedule(3, 300, 3, chosen)} == chosen
    assert {f.name for f in build_schedule(3, 1800, 3, EVERY)} == EVERY


def test_mean_gap_sets_the_density() -> None:
    """About duration / mean gap faults (the issue's run: ~50 in 150 s)."""
    counts = [len(build_schedule(seed, 150, 3, EVERY)) for seed in range(20)]
    assert 35 <= sum(counts) / len(counts) <= 60


def test_worker_faults_never_overlap_on_one_worker() -> None:
    """A worker's next targeted fault starts after the previous one ended plus the recovery gap."""
    for seed in range(20):
        ends: dict[int, float] = {}
        for fault in build_schedule(seed, 600, 3, EVERY):
            if fault.name in WORKER_FAULTS:
                assert fault.worker is not None and 0 <= fault.worker < 3
                assert fault.at_s >= ends.get(fault.worker, 0.0)
                ends[fault.worker] = fault.at_s + fault.duration_s + RECOVERY_GAP_S
            else:
                assert fault.worker is None


def test_freeze_outlasts_the_kafka_session_and_broker_restarts_are_rare() -> None:
    """A freeze is longer than the group session; at most one broker restart per interval."""
    for seed in range(20):
        faults = build_schedule(seed, 900, 3, EVERY)
        assert all(f.duration_s > KAFKA_SESSION_S for f in faults if f.name == "freeze" and f.at_s < 880)
        restarts = [f.at_s for f in faults if f.name == "broker_restart"]
        assert all(b - a >= BROKER_RESTART_EVERY_S for a, b in itertools.pairwise(restarts))


def test_parse_faults_accepts_lists_exclusions_and_rejects_unknown_names() -> None:
    """'all' or empty is everything, '-x' removes x, an unknown name is an error naming it."""
    assert parse_faults("all") == EVERY == parse_faults(None)
    assert parse_faults("drop, kill") == {"drop", "kill"}
    assert parse_faults("-stall,-broker_restart") == EVERY - {"stall", "broker_restart"}
    assert parse_faults("all,-stall") == EVERY - {"stall"}
    with pytest.raises(ValueError, match="nap"):
        parse_faults("drop,nap")


def test_describe_names_fault_worker_parameters_and_duration() -> None:
    """The timeline line says what, where and for how long."""
    fault = next(f for f in build_schedule(1, 600, 3, {"kafka_latency"}))
    text = fault.describe()
    assert text.startswith(f"kafka_latency worker {fault.worker} latencyMs=")
    assert text.endswith("s") and " for " in text
