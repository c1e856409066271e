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


# ----------------------------------------------------------------------------- the secured cluster

CLUSTER_NODES = 3
SCRAM_MECHANISM = "SCRAM-SHA-512"
#: The bridge's principals: a SCRAM user on the SASL_SSL listener, a certificate on the mTLS one.
BRIDGE_USER = "bridge"
MTLS_CN = "bridge-mtls"
#: The data is thrown away: do not wait long for a clean shutdown.
CLUSTER_STOP_TIMEOUT_S = 5.0
ACL_PROPAGATION_TIMEOUT_S = 30.0
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass
class SecureCluster:
    """Three KRaft nodes with SASL_SSL (SCRAM-SHA-512) and mTLS listeners and ACLs enforced.

    The PLAINTEXT listener carries replication and the test's own admin
    client; its principal (``User:ANONYMOUS``) and ``User:admin`` are the
    super users. The bridge's principals (``User:bridge`` over SASL_SSL,
    ``User:bridge-mtls`` over mTLS) get nothing but the ACLs a test grants.
    """

    root: Path
    cluster: Any
    admin: AdminClient = field(repr=False)
    tls: Any
    password: str = field(repr=False)
    cold_start_s: float = 0.0

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT (super user) listener of every node."""
        return str(self.cluster.bootstrap())

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **extra}

    def sasl_settings(self) -> dict[str, Any]:
        """Settings fields for a worker over SASL_SSL as ``User:bridge``."""
        return {
            "kafka_bootstrap_servers": self.cluster.bootstrap("SASL_SSL"),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": SCRAM_MECHANISM,
            "kafka_sasl_username": BRIDGE_USER,
            "kafka_sasl_password": self.password,
            "kafka_ssl_ca_location": str(self.tls.ca),
        }

    def mtls_settings(self) -> dict[str, Any]:
        """Settings fields for a worker over mTLS as ``User:bridge-mtls``."""
        return {
            "kafka_bootstrap_servers": self.cluster.bootstrap("MTLS"),
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_location": str(self.tls.ca),
            "kafka_ssl_certificate_location": str(self.tls.client_cert),
            "kafka_ssl_key_location": str(self.tls.client_key),
            "kafka_ssl_key_password": self.tls.client_key_password,
        }

    def grant(self, principal: str, bindings: list[Any]) -> None:
        """Create ALLOW bindings and wait until every node enforces them.

        ACLs travel to each broker through the metadata log: a worker started
        at once could otherwise be refused by a node that has not applied them.
        """
        wanted = {
            (
                b.restype.value,
                b.name,
                b.resource_pattern_type.value,
                b.operation.value,
                b.permission_type.value,
            )
            for b in bindings
        }
        for fut in self.admin.create_acls(bindings, request_timeout=30).values():
            fut.result(timeout=30)
        deadline = time.monotonic() + ACL_PROPAGATION_TIMEOUT_S
        pending = list(self.cluster.nodes)
        while pending:
            pending = [n for n in pending if not wanted <= self.acls_on(n, principal)]
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"nodes {[n.node_id for n in pending]} do not enforce the new ACLs")
            if pending:
                time.sleep(0.05)

    @staticmethod
    def acls_on(node: Any, principal: str) -> set[tuple[int, str, int, int, int]]:
        """The ACLs this one node holds for ``principal``."""
        found: set[tuple[int, str, int, int, int]] = localkafka.acl_probe("127.0.0.1", node.port, principal)
        return found

    def kill(self, node_id: int) -> None:
        localkafka.node_kill(self.root, node_id)

    def start(self, node_id: int) -> None:
        localkafka.node_start(self.root, node_id)

    def stop(self, node_id: int) -> None:
        localkafka.node_stop(self.root, node_id)

    def nodes(self) -> list[int]:
        return [n.node_id for n in self.cluster.nodes]

    def leaders(self, topic: str) -> dict[int, int]:
        """partition → leader node id (-1 while there is none)."""
        md = self.admin.list_topics(topic, timeout=10).topics[topic]
        return {p: part.leader for p, part in md.partitions.items()}

    def wait_in_sync(self, topics: list[str], timeout_s: float = 60.0) -> None:
        """Until every partition of these topics has all its replicas in sync again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            md = self.admin.list_topics(timeout=10).topics
            if all(
                t in md and all(len(p.isrs) == len(p.replicas) for p in md[t].partitions.values())
                for t in topics
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"replicas of {topics} did not catch up in {timeout_s} s")


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """A real three-node cluster, secured; started once, only when a test asks for it."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from tests.tlscerts import make_tls

    root = tmp_path_factory.mktemp("kafka-cluster")
    tls = make_tls(root / "tls", MTLS_CN, client_key_password=uuid.uuid4().hex)
    password = uuid.uuid4().hex
    extra = {
        "authorizer.class.name": STANDARD_AUTHORIZER,
        "super.users": "User:ANONYMOUS;User:admin",
        "allow.everyone.if.no.acl.found": "false",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "listener.name.mtls.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
    }
    t0 = time.monotonic()
    cluster = localkafka.cluster_up(
        root, CLUSTER_NODES, listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"}, extra=extra, quiet=True
    )
    cold = time.monotonic() - t0
    sys.stderr.write(f"\nkafka_cluster fixture: {CLUSTER_NODES} nodes ready in {cold:.1f} s\n")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    try:
        upsert = UserScramCredentialUpsertion(
            BRIDGE_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
        )
        for fut in admin.alter_user_scram_credentials([upsert], request_timeout=30).values():
            fut.result(timeout=30)
        yield SecureCluster(root, cluster, admin, tls, password, cold)
    finally:
        localkafka.cluster_down(root, timeout_s=CLUSTER_STOP_TIMEOUT_S)
