"""Sticky bin-packing of the roster onto shards (bridge.assign)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.assign import Assignment, assign, client_for_shard, shard_budget, shards_per_client
from bridge.errors import ConfigError

USERS = st.sampled_from([f"u{i:03d}" for i in range(120)])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[int, list[str]], list[str], int, int]:
    capacity = draw(st.integers(1, 12))
    budget = draw(st.integers(0, 10))
    shard_count = draw(st.integers(0, 8))
    previous = {p: draw(st.lists(USERS, max_size=capacity + 2)) for p in range(shard_count)}
    roster = draw(st.lists(USERS, max_size=100))
    return previous, roster, capacity, budget


def _check_invariants(result: Assignment, roster: list[str], capacity: int, budget: int) -> None:
    members = [u for users in result.shards.values() for u in users]
    assert len(members) == len(set(members)), "a user is on two shards"
    assert set(members) <= set(roster), "a departed user is still assigned"
    assert set(members) | set(result.unassigned) == set(roster), "a roster user was dropped"
    assert not set(members) & set(result.unassigned)
    assert all(len(users) <= capacity for users in result.shards.values())
    assert all(not users for p, users in result.shards.items() if p >= budget)
    assert sorted(result.shards) == list(range(len(result.shards))), "shard ids are not 0..n-1"


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_invariants(case: tuple[dict[int, list[str]], list[str], int, int]) -> None:
    """No duplicates, no shard over capacity, every roster user assigned or reported."""
    previous, roster, capacity, budget = case
    result = assign(previous, roster, capacity=capacity, budget=budget)
    _check_invariants(result, roster, capacity, budget)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_stickiness(case: tuple[dict[int, list[str]], list[str], int, int]) -> None:
    """A user that stays in the roster keeps its shard (within capacity and budget)."""
    previous, roster, capacity, budget = case
    result = assign(previous, roster, capacity=capacity, budget=budget)
    owner = result.owner()
    seen: set[str] = set()
    for p in sorted(previous):
        fill = 0
        for user in previous[p]:
            if user in seen or user not in roster:
                continue
            seen.add(user)
            if p < budget and fill < capacity:
                assert owner[user] == p
                fill += 1


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_unassigned_only_when_budget_is_full(case: tuple[dict[int, list[str]], list[str], int, int]) -> None:
    """Users are left out only when every shard of the budget is full."""
    previous, roster, capacity, budget = case
    result = assign(previous, roster, capacity=capacity, budget=budget)
    if result.unassigned:
        usable = [users for p, users in result.shards.items() if p < budget]
        assert len(usable) == budget
        assert all(len(users) == capacity for users in usable)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_new_shards_only_when_needed(case: tuple[dict[int, list[str]], list[str], int, int]) -> None:
    """The map grows only to the shards the roster needs, never beyond the budget."""
    previous, roster, capacity, budget = case
    result = assign(previous, roster, capacity=capacity, budget=budget)
    existing = max(previous, default=-1) + 1
    needed = math.ceil(len(set(roster)) / capacity)
    assert result.shard_count == max(existing, min(budget, needed))


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_idempotent(case: tuple[dict[int, list[str]], list[str], int, int]) -> None:
    """Assigning the same roster onto the result changes nothing."""
    previous, roster, capacity, budget = case
    first = assign(previous, roster, capacity=capacity, budget=budget)
    second = assign(first.shards, roster, capacity=capacity, budget=budget)
    assert second.shards == first.shards
    assert second.unassigned == first.unassigned


def test_new_users_go_to_the_least_full_shard() -> None:
    """New users fill the emptiest shards first, ties to the lowest id."""
    previous = {0: ["a", "b", "c"], 1: ["d"], 2: ["e", "f"]}
    result = assign(previous, ["a", "b", "c", "d", "e", "f", "n1", "n2", "n3"], capacity=10, budget=5)
    assert result.shards == {0: ("a", "b", "c"), 1: ("d", "n1", "n2"), 2: ("e", "f", "n3")}


def test_spread_over_the_needed_shards() -> None:
    """From an empty map, 5,000 users with capacity 1,000 make 5 full shards."""
    roster = [f"user-{i:05d}" for i in range(5000)]
    result = assign({}, roster, capacity=1000, budget=19)
    assert result.shard_count == 5
    assert [len(u) for u in result.shards.values()] == [1000] * 5
    assert result.unassigned == ()


def test_beyond_the_budget_users_are_reported() -> None:
    """Users beyond the budget are returned as unassigned."""
    roster = [f"user-{i:02d}" for i in range(25)]
    result = assign({}, roster, capacity=10, budget=2)
    assert result.shard_count == 2
    assert len(result.unassigned) == 5


def test_departed_users_leave_and_shards_stay() -> None:
    """A shard whose users all left stays in the map, empty."""
    result = assign({0: ["a"], 1: ["b"]}, ["a"], capacity=10, budget=5)
    assert result.shards == {0: ("a",), 1: ()}


def test_budget_per_client() -> None:
    """Each OAuth client carries its channel limit minus one spare."""
    assert shards_per_client(20) == 19
    assert shard_budget(2, 20) == 38
    assert client_for_shard(18, 20) == 0
    assert client_for_shard(19, 20) == 1
    with pytest.raises(ConfigError):
        shard_budget(0, 20)
