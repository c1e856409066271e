"""One monitored fleet for the live monitoring tests (see :mod:`tests.monitor.stack`).

test_dashboard_live.py runs first (files run in name order) on the healthy
fleet; test_rules_live.py then breaks it on purpose, ending with every worker
killed and restarted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.monitor.stack import MonitoredFleet, monitored_fleet


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredFleet]:
    """Broker, simulator, two workers and Prometheus, shared by the panel and alert tests."""
    with monitored_fleet(tmp_path_factory.mktemp("monitor")) as stack:
        yield stack
