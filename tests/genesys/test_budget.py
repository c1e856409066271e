"""bridge.genesys.budget: the shared request budget on its own (through the client: test_rest)."""

from __future__ import annotations

import pytest

from bridge.genesys.budget import RequestBudget

from .fakes import FakeTime


async def test_request_budget_alone() -> None:
    """RequestBudget lets a full window through at once, then one per freed slot."""
    time = FakeTime()
    budget = RequestBudget(3, clock=time.clock, sleep=time.sleep)
    for _ in range(3):
        await budget.acquire()
    assert time.sleeps == []
    time.now += 10
    await budget.acquire()
    assert time.sleeps == [50.0]
    with pytest.raises(ValueError):
        RequestBudget(0)
