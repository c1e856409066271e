"""Shared fixtures: a real Kafka broker for the whole test session.

The ``kafka`` fixture starts its own single-node KRaft broker (from the jars
that ``deploy/local/kafka/localkafka.py`` fetched) on free ports in a
temporary folder and stops it at the end of the session. When
``BRIDGE_TEST_KAFKA`` names a bootstrap address (``host:port``), that broker is
used instead and left running. Tests create their own uniquely named topics
through ``kafka.create_topic``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
LOCALKAFKA_PATH = REPO / "deploy" / "local" / "kafka" / "localkafka.py"
TEST_KAFKA_ENV = "BRIDGE_TEST_KAFKA"


def load_module(name: str, path: Path) -> ModuleType:
    """Import a script that is not part of a package (deploy/ tools and examples)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


localkafka = load_module("localkafka", LOCALKAFKA_PATH)


@dataclass
class KafkaBroker:
    """Handle on the test broker: its address and a topic factory."""

    bootstrap: str
    version: str
    admin: AdminClient = field(repr=False)
    data_dir: Path | None = None

    def config(self, **extra: Any) -> dict[str, Any]:
        """A client configuration for this broker."""
        return {"bootstrap.servers": self.bootstrap, **extra}

    def create_topic(
        self,
        prefix: str = "t",
        partitions: int = 1,
        config: dict[str, str] | None = None,
    ) -> str:
        """Create a uniquely named topic and wait until it exists."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.admin.list_topics(name, timeout=5)
            topic = md.topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return name
            time.sleep(0.05)
        raise TimeoutError(f"topic {name} did not appear")


def pytest_report_header(config: pytest.Config) -> list[str]:
    external = os.environ.get(TEST_KAFKA_ENV)
    if external:
        return [f"kafka broker: external at {external} ({TEST_KAFKA_ENV})"]
    try:
        version = localkafka.kafka_version()
    except localkafka.BrokerError as exc:
        return [f"kafka broker: not fetched ({exc})"]
    return [f"kafka broker: Apache Kafka {version} (KRaft, single node, started by the session fixture)"]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real Kafka broker for the whole session."""
    external = os.environ.get(TEST_KAFKA_ENV)
    if external:
        admin = AdminClient({"bootstrap.servers": external})
        admin.list_topics(timeout=10)
        yield KafkaBroker(bootstrap=external, version="external", admin=admin)
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    t0 = time.monotonic()
    broker = localkafka.start(data_dir, quiet=True)
    version = localkafka.kafka_version()
    sys.stderr.write(
        f"\nkafka fixture: Apache Kafka {version} ready on {broker.bootstrap} "
        f"in {time.monotonic() - t0:.1f} s\n"
    )
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        yield KafkaBroker(bootstrap=broker.bootstrap, version=version, admin=admin, data_dir=data_dir)
    finally:
        localkafka.stop(data_dir)
