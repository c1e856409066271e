"""Chaos faults against a recording stand-in for the simulator's admin API."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest

from bridge.chaos import faults
from bridge.chaos.env import Environment
from bridge.chaos.schedule import Fault


class AdminApi:
    """The simulator's admin calls a fault makes; agents in ``deleted`` answer 404, as the simulator does."""

    def __init__(self, users: list[str]) -> None:
        self.users = users
        self.deleted: set[str] = set()
        self.restricted: set[str] = set()
        self.calls: list[str] = []

    async def sim_admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.calls.append(f"{method} {path}")
        if path == "/sim/truth":
            return {"users": {u: {} for u in self.users}}
        if path == "/sim/faults/drop" and not self.deleted:  # a roster_remove during the fault
            self.deleted.add(sorted(self.restricted)[0])
        if path.endswith("/restrict"):
            uid = path.split("/")[3]
            if uid in self.deleted:
                request = httpx.Request(method, f"http://sim{path}")
                response = httpx.Response(404, request=request)
                raise httpx.HTTPStatusError("404", request=request, response=response)
            if body and body.get("restricted") is False:
                self.restricted.discard(uid)
            else:
                self.restricted.add(uid)
        return None


@pytest.mark.asyncio
async def test_restrict_lifts_every_restriction_when_an_agent_is_deleted_meanwhile() -> None:
    """Seed 914: a roster_remove deleted one of the restricted agents during the fault; lifting it
    answered 404, the lifts after it were never made, and four agents stayed unobservable (uncovered)."""
    api = AdminApi([f"u-{i}" for i in range(10)])
    fault = Fault(0.0, "restrict", duration_s=0.01, params={"count": 5}, pick=3)

    note = await faults.restrict(cast(Environment, api), fault)
    assert api.restricted - api.deleted == set(), "every live agent is observable again"
    assert note == "5 agents restricted, lifted"
    assert api.calls[-1] == "POST /sim/faults/drop"
