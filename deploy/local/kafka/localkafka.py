#!/usr/bin/env python3
"""A real, single-node Apache Kafka broker (KRaft) for development and tests.

Standard library only, so it runs before any virtualenv exists. It is used by
``make kafka-up`` / ``make kafka-down``, by ``make demo`` and by the pytest
fixture in ``tests/conftest.py``.

- ``fetch``: copies the broker's jars from Maven Central once, with
  ``mvn dependency:copy-dependencies`` on ``pom.xml``, into a git-ignored
  cache keyed by the pom's hash (a changed pom fetches again, nothing else
  does).
- ``up``: formats the storage (``kafka.tools.StorageTool format --standalone``)
  when the data folder is new, starts ``java -cp 'libs/*' kafka.Kafka`` in the
  background and waits until the broker answers a Metadata request on its
  listener. A no-op when a broker from the same data folder already answers.
- ``down``: SIGTERM (a clean shutdown; a single node has controlled shutdown
  off, see the template), then SIGKILL after a timeout.
- ``status``: exit 0 when the broker answers.
- ``up --nodes 3``: a cluster of three combined broker+controller nodes (a
  static three-voter KRaft quorum, ``controller.quorum.voters``), each node
  with its own data folder ``<data-dir>/node-<id>`` and its own ports, every
  node formatted with the same cluster id. Internal topics get three replicas
  (``min.insync.replicas`` 2), so one broker may be down. ``down``, ``status``
  and ``kill NODE`` (SIGKILL) / ``start NODE`` act on the cluster when
  ``<data-dir>/cluster.json`` exists. One node stays the default (``make demo``).

Both shapes accept extra broker properties (``extra``) and the cluster extra
listeners (name → security protocol, each node gets a free port for each),
which is how the tests add SASL_SSL and mTLS listeners and the authorizer.

The readiness probe speaks the Kafka wire protocol directly (a Metadata v4
request, which every 4.x broker serves) so that "ready" means what clients
need, not merely an open port.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
POM = HERE / "pom.xml"
TEMPLATE = HERE / "server.properties.template"
LOG4J = HERE / "log4j2.properties"
DEFAULT_CACHE = REPO / ".cache" / "kafka"
DEFAULT_DATA = REPO / ".cache" / "kafka-data"
DEFAULT_PORT = 9092
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
DEFAULT_HEAP = "-Xmx768m"
#: Three JVMs share a laptop: a smaller heap each.
DEFAULT_CLUSTER_HEAP = "-Xmx512m"
DEFAULT_NODES = 1
CLUSTER_FILE = "cluster.json"
#: The cluster's own listener for clients, brokers (replication) and tools.
BROKER_LISTENER = "PLAINTEXT"
CONTROLLER_LISTENER = "CONTROLLER"
#: Failure detection of a dead broker: the controller fences it (moves its
#: leaders, shrinks ISRs) after this session timeout. Kafka's defaults (9 s,
#: 2 s) would make every failover test wait 9 s; production keeps them.
CLUSTER_BROKER_SESSION_TIMEOUT_MS = 4000
CLUSTER_BROKER_HEARTBEAT_MS = 1000
PID_FILE = "broker.pid"
PORTS_FILE = "ports"
LOG_FILE = "broker.log"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


def cache_dir() -> Path:
    return Path(os.environ.get("KAFKA_CACHE_DIR", DEFAULT_CACHE))


def libs_dir() -> Path:
    """The jar folder for the current pom (its hash names it)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_dir() / f"libs-{digest}"


def kafka_version(libs: Path | None = None) -> str:
    """The broker version, read from the kafka_2.13 jar's name."""
    for jar in sorted((libs or libs_dir()).glob("kafka_2.13-*.jar")):
        m = re.fullmatch(r"kafka_2\.13-(\d[\w.\-]*)\.jar", jar.name)
        if m:
            return m.group(1)
    raise BrokerError("kafka_2.13 jar not found; run `localkafka.py fetch`")


def fetch(quiet: bool = False) -> Path:
    """Copy the jars once; later calls return the cached folder at once."""
    libs = libs_dir()
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is required to fetch the Kafka jars")
    tmp = libs.with_name(libs.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    if not quiet:
        print("fetching Kafka jars:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _encode_str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def metadata_probe(host: str, port: int, timeout: float = 2.0) -> int:
    """Send a Metadata v4 request; return the number of brokers reported.

    Raises OSError when nothing answers or the answer is malformed.
    """
    correlation_id = 7
    header = struct.pack(">hhi", 3, 4, correlation_id) + _encode_str("localkafka")
    body = struct.pack(">i?", -1, False)  # all topics (null array), no auto-create
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    got_id, _throttle, brokers = struct.unpack(">iii", payload[:12])
    if got_id != correlation_id or brokers < 1:
        raise OSError(f"unexpected metadata answer (correlation {got_id}, brokers {brokers})")
    return int(brokers)


def acl_probe(
    host: str, port: int, principal: str, timeout: float = 2.0
) -> set[tuple[int, str, int, int, int]]:
    """Send a DescribeAcls v1 request to this one node; return the ACLs it holds for ``principal``.

    Each ACL is (resource type, resource name, pattern type, operation,
    permission type), in the protocol's codes.

    ACLs reach each broker through the metadata log, a little apart: asking
    every node on its own socket tells when all of them enforce a grant.
    Raises OSError when nothing answers or the broker reports an error.
    """
    correlation_id = 29
    any_filter = 1  # ANY for resource type, pattern type, operation and permission
    header = struct.pack(">hhi", 29, 1, correlation_id) + _encode_str("localkafka")
    body = (
        struct.pack(">bhb", any_filter, -1, any_filter)  # any resource, null name, any pattern
        + _encode_str(principal)
        + struct.pack(">hbb", -1, any_filter, any_filter)  # null host, any operation / permission
    )
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    got_id, _throttle, error_code, message_len = struct.unpack(">iihh", payload[:12])
    if got_id != correlation_id or error_code != 0:
        raise OSError(f"DescribeAcls failed (correlation {got_id}, error {error_code})")
    pos = 12 + max(message_len, 0)
    (resources,) = struct.unpack(">i", payload[pos : pos + 4])
    pos += 4
    found: set[tuple[int, str, int, int, int]] = set()
    for _ in range(resources):
        resource_type, name_len = struct.unpack(">bh", payload[pos : pos + 3])
        name = payload[pos + 3 : pos + 3 + name_len].decode()
        pos += 3 + name_len
        pattern_type, acls = struct.unpack(">bi", payload[pos : pos + 5])
        pos += 5
        for _ in range(acls):
            for _ in range(2):  # principal, host
                (n,) = struct.unpack(">h", payload[pos : pos + 2])
                pos += 2 + n
            operation, permission = struct.unpack(">bb", payload[pos : pos + 2])
            pos += 2
            found.add((resource_type, name, pattern_type, operation, permission))
    return found


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by the broker")
        buf += chunk
    return buf


#: Ports :func:`_own_free_port` has handed out in this process.
_given_ports: set[int] = set()


def _own_free_port() -> int:
    """A loopback port that binds now, drawn below the kernel's ephemeral range (which port 0
    and outgoing connections take from) and not handed out before by this process."""
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        high = 32767
    for _ in range(1000):
        port = random.randint(10000, high)
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise OSError("no new free loopback port after 1000 attempts")


try:  # in a checkout with the bridge installed, share its ports (one process, one set)
    from bridge.ports import free_port
except ImportError:  # run on its own
    free_port = _own_free_port


@dataclass
class Broker:
    """A broker process owned by one data folder."""

    data_dir: Path
    port: int
    controller_port: int
    pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            metadata_probe("127.0.0.1", self.port, timeout=1.0)
            return True
        except OSError:
            return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_running(data_dir: Path) -> Broker | None:
    pid_file = data_dir / PID_FILE
    ports_file = data_dir / PORTS_FILE
    if not (pid_file.exists() and ports_file.exists()):
        return None
    pid = int(pid_file.read_text().strip())
    port, controller = (int(x) for x in ports_file.read_text().split())
    if not _pid_alive(pid):
        return None
    return Broker(data_dir, port, controller, pid)


def render_properties(
    port: int,
    controller_port: int,
    data_dir: Path,
    extra: Mapping[str, str | None] | None = None,
) -> str:
    """The template filled in, then ``extra`` applied: a key replaces the template's, None drops it."""
    text = (
        TEMPLATE.read_text()
        .replace("@PORT@", str(port))
        .replace("@CONTROLLER_PORT@", str(controller_port))
        .replace("@DATA_DIR@", str(data_dir))
    )
    if not extra:
        return text
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key is not None and key in extra:
            continue
        lines.append(line)
    lines += [f"{k}={v}" for k, v in extra.items() if v is not None]
    return "\n".join(lines) + "\n"


def _jvm(libs: Path, data_dir: Path, heap: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17+ is required to run the Kafka broker")
    return [
        java,
        heap,
        "-Xms256m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        f"{libs}/*",
    ]


def _format(jvm: list[str], data_dir: Path, props: Path, cluster_id: str, standalone: bool) -> None:
    """Format the storage once (a folder with meta.properties is left as it is)."""
    if (data_dir / "log" / "meta.properties").exists():
        return
    args = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
    if standalone:
        args.insert(len(jvm) + 2, "--standalone")
    with open(data_dir / LOG_FILE, "ab") as fmt_log:
        subprocess.run(args, check=True, stdout=fmt_log, stderr=subprocess.STDOUT)


def _spawn(jvm: list[str], data_dir: Path, props: Path) -> subprocess.Popen[bytes]:
    log = open(data_dir / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [*jvm, "kafka.Kafka", str(props)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    (data_dir / PID_FILE).write_text(f"{proc.pid}\n")
    return proc


def start(  # noqa: PLR0917 - positional callers predate `extra`
    data_dir: Path,
    port: int | None = None,
    controller_port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    quiet: bool = False,
    extra: Mapping[str, str | None] | None = None,
    *,
    extra_listeners: dict[str, tuple[int, int]] | None = None,
) -> Broker:
    """Start one node (formatting first if new) and wait for a Metadata answer.

    ``extra``: broker properties on top of the template (None removes one).
    ``extra_listeners`` maps a listener name (e.g. ``W0``) to ``(port,
    advertised_port)``: one more PLAINTEXT listener on 127.0.0.1:port that
    advertises 127.0.0.1:advertised_port, so that a client bootstrapping
    through a TCP proxy on the advertised port keeps going through it.
    """
    data_dir = data_dir.resolve()
    running = _read_running(data_dir)
    if running is not None:
        if running.answers():
            if not quiet:
                print(f"Kafka already running on {running.bootstrap}", file=sys.stderr)
            return running
        stop(data_dir)
    libs = fetch(quiet=quiet)
    data_dir.mkdir(parents=True, exist_ok=True)
    ports_file = data_dir / PORTS_FILE
    if port is None and ports_file.exists():
        port = int(ports_file.read_text().split()[0])
    port = port or free_port()
    if controller_port is None and ports_file.exists():
        saved = ports_file.read_text().split()
        if int(saved[0]) == port:
            controller_port = int(saved[1])
    controller_port = controller_port or free_port()
    props = data_dir / "server.properties"
    text = render_properties(port, controller_port, data_dir, extra)
    props.write_text(_with_listeners(text, extra_listeners or {}))
    jvm = _jvm(libs, data_dir, DEFAULT_HEAP)
    _format(jvm, data_dir, props, _kafka_uuid(), standalone=True)
    ports_file.write_text(f"{port} {controller_port}\n")
    proc = _spawn(jvm, data_dir, props)
    broker = Broker(data_dir, port, controller_port, proc.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with {proc.returncode}; see {data_dir / LOG_FILE}")
        if broker.answers():
            return broker
        time.sleep(0.1)
    stop(data_dir)
    raise BrokerError(f"broker did not answer within {timeout_s} s; see {data_dir / LOG_FILE}")


def _with_listeners(text: str, extra: dict[str, tuple[int, int]]) -> str:
    """``text`` with the extra PLAINTEXT listeners appended to the three listener properties."""
    add = {
        "listeners=": [f"{name}://127.0.0.1:{port}" for name, (port, _) in extra.items()],
        "advertised.listeners=": [f"{name}://127.0.0.1:{adv}" for name, (_, adv) in extra.items()],
        "listener.security.protocol.map=": [f"{name}:PLAINTEXT" for name in extra],
    }
    lines = []
    for line in text.splitlines():
        items = next((v for prefix, v in add.items() if line.startswith(prefix)), [])
        lines.append(",".join([line, *items]))
    return "\n".join(lines) + "\n"


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    One starting with ``-`` would be read by StorageTool as an option, so
    those are drawn again.
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def stop(data_dir: Path, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop the broker of this data folder; True when one was running."""
    data_dir = data_dir.resolve()
    pid_file = data_dir / PID_FILE
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    was_running = _pid_alive(pid)
    if was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return was_running


def _reap(pid: int) -> None:
    """Collect our own child so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --------------------------------------------------------------------------- cluster


@dataclass
class Node:
    """One combined broker+controller of a cluster: its id, folder and ports (listener → port)."""

    node_id: int
    data_dir: Path
    ports: dict[str, int]

    @property
    def port(self) -> int:
        return self.ports[BROKER_LISTENER]

    @property
    def controller_port(self) -> int:
        return self.ports[CONTROLLER_LISTENER]

    def pid(self) -> int | None:
        """The node's process id while it runs."""
        pid_file = self.data_dir / PID_FILE
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().strip())
        return pid if _pid_alive(pid) else None

    def answers(self, brokers: int = 1) -> bool:
        """The node serves Metadata and sees at least ``brokers`` live brokers."""
        try:
            return metadata_probe("127.0.0.1", self.port, timeout=1.0) >= brokers
        except OSError:
            return False


@dataclass
class Cluster:
    """A KRaft cluster on loopback, described by ``<root>/cluster.json``."""

    root: Path
    cluster_id: str
    nodes: list[Node]
    listeners: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str | None] = field(default_factory=dict)

    def bootstrap(self, listener: str = BROKER_LISTENER) -> str:
        """Every node's address on one listener, comma-separated."""
        return ",".join(f"127.0.0.1:{n.ports[listener]}" for n in self.nodes)

    def node(self, node_id: int) -> Node:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise BrokerError(f"no node {node_id} in the cluster at {self.root}")

    def save(self) -> None:
        data = {
            "clusterId": self.cluster_id,
            "listeners": self.listeners,
            "extra": self.extra,
            "nodes": [{"id": n.node_id, "ports": n.ports} for n in self.nodes],
        }
        (self.root / CLUSTER_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Cluster | None:
        root = root.resolve()
        path = root / CLUSTER_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        nodes = [Node(n["id"], root / f"node-{n['id']}", dict(n["ports"])) for n in data["nodes"]]
        return cls(root, data["clusterId"], nodes, dict(data["listeners"]), dict(data["extra"]))

    def properties(self, node: Node) -> str:
        """The node's server.properties: the template with the cluster's settings on top."""
        names = [BROKER_LISTENER, CONTROLLER_LISTENER, *self.listeners]
        protocols = {BROKER_LISTENER: "PLAINTEXT", CONTROLLER_LISTENER: "PLAINTEXT", **self.listeners}
        replicas = min(3, len(self.nodes))
        min_isr = max(1, replicas - 1)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_props: dict[str, str | None] = {
            "node.id": str(node.node_id),
            "controller.quorum.bootstrap.servers": None,
            "controller.quorum.voters": voters,
            "listeners": ",".join(f"{name}://127.0.0.1:{node.ports[name]}" for name in names),
            "advertised.listeners": ",".join(
                f"{name}://127.0.0.1:{node.ports[name]}" for name in names if name != CONTROLLER_LISTENER
            ),
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
            "broker.session.timeout.ms": str(CLUSTER_BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(CLUSTER_BROKER_HEARTBEAT_MS),
            # Off, and a slower sweep, in the single-node template: here the leaders have
            # somewhere to go.
            "controlled.shutdown.enable": "true",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": None,
        }
        return render_properties(
            node.port, node.controller_port, node.data_dir, {**cluster_props, **self.extra}
        )


def cluster_up(
    root: Path,
    nodes: int = 3,
    *,
    listeners: Mapping[str, str] | None = None,
    extra: Mapping[str, str | None] | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    quiet: bool = False,
) -> Cluster:
    """Start (formatting new folders) every node and wait until each sees all brokers.

    An existing ``cluster.json`` in ``root`` is reused as it is (same ids and
    ports); ``listeners`` and ``extra`` apply to a new cluster only.
    """
    root = root.resolve()
    cluster = Cluster.load(root)
    if cluster is None:
        root.mkdir(parents=True, exist_ok=True)
        names = [BROKER_LISTENER, CONTROLLER_LISTENER, *(listeners or {})]
        cluster = Cluster(
            root,
            _kafka_uuid(),
            [Node(i, root / f"node-{i}", {name: free_port() for name in names}) for i in range(1, nodes + 1)],
            dict(listeners or {}),
            dict(extra or {}),
        )
        cluster.save()
    procs = {n.node_id: _launch_node(cluster, n, quiet=quiet) for n in cluster.nodes if n.pid() is None}
    _wait_nodes(cluster, cluster.nodes, procs, timeout_s)
    return cluster


def _launch_node(cluster: Cluster, node: Node, quiet: bool = True) -> subprocess.Popen[bytes]:
    libs = fetch(quiet=quiet)
    node.data_dir.mkdir(parents=True, exist_ok=True)
    props = node.data_dir / "server.properties"
    props.write_text(cluster.properties(node))
    jvm = _jvm(libs, node.data_dir, DEFAULT_CLUSTER_HEAP)
    _format(jvm, node.data_dir, props, cluster.cluster_id, standalone=False)
    return _spawn(jvm, node.data_dir, props)


def _wait_nodes(
    cluster: Cluster, nodes: list[Node], procs: Mapping[int, subprocess.Popen[bytes]], timeout_s: float
) -> None:
    """Until every given node answers and reports every node of the cluster as a broker."""
    want = len(cluster.nodes)
    pending = list(nodes)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for node_id, proc in procs.items():
            if proc.poll() is not None:
                log = cluster.node(node_id).data_dir / LOG_FILE
                raise BrokerError(f"node {node_id} exited with {proc.returncode}; see {log}")
        pending = [n for n in pending if not n.answers(want)]
        if pending:
            time.sleep(0.1)
    if pending:
        ids = ", ".join(str(n.node_id) for n in pending)
        raise BrokerError(
            f"nodes {ids} did not see {want} brokers within {timeout_s} s (logs in {cluster.root})"
        )


def cluster_down(root: Path, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop every node (SIGTERM first); True when one was running."""
    cluster = Cluster.load(root)
    if cluster is None:
        return False
    # All at once: stopped one by one, the last nodes wait out the timeout
    # for a quorum that the first ones took away.
    pids = [pid for pid in (n.pid() for n in cluster.nodes) if pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        for pid in pids:
            _reap(pid)
        time.sleep(0.1)
    for pid in pids:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    for n in cluster.nodes:
        (n.data_dir / PID_FILE).unlink(missing_ok=True)
    return bool(pids)


def node_kill(root: Path, node_id: int) -> bool:
    """SIGKILL one node (a crash: no controlled shutdown); True when it was running."""
    cluster = Cluster.load(root)
    if cluster is None:
        raise BrokerError(f"no cluster at {root}")
    node = cluster.node(node_id)
    pid = node.pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid):
        _reap(pid)
        time.sleep(0.02)
    (node.data_dir / PID_FILE).unlink(missing_ok=True)
    return True


def node_stop(root: Path, node_id: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """SIGTERM one node (Kafka's controlled shutdown: leaders move first)."""
    cluster = Cluster.load(root)
    if cluster is None:
        raise BrokerError(f"no cluster at {root}")
    return stop(cluster.node(node_id).data_dir, timeout_s)


def node_start(root: Path, node_id: int, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> Node:
    """Start one stopped node again on its own ports and folder; wait until it sees every broker."""
    cluster = Cluster.load(root)
    if cluster is None:
        raise BrokerError(f"no cluster at {root}")
    node = cluster.node(node_id)
    if node.pid() is None:
        proc = _launch_node(cluster, node)
        _wait_nodes(cluster, [node], {node_id: proc}, timeout_s)
    return node


def cluster_status(root: Path) -> dict[int, bool]:
    """node id → whether it runs and sees every broker."""
    cluster = Cluster.load(root)
    if cluster is None:
        return {}
    return {n.node_id: n.pid() is not None and n.answers(len(cluster.nodes)) for n in cluster.nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["fetch", "up", "down", "status", "kill", "start", "version", "bench-start"]
    )
    parser.add_argument("node", nargs="?", type=int, help="kill/start: the cluster node id (1..N)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KAFKA_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--nodes", type=int, default=DEFAULT_NODES, help="up/bench-start: 1 broker, or a cluster of N"
    )
    parser.add_argument("--runs", type=int, default=3, help="bench-start: how many cold starts")
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    try:
        if args.command == "fetch":
            libs = fetch()
            size = sum(p.stat().st_size for p in libs.glob("*.jar"))
            jars = len(list(libs.glob("*.jar")))
            print(f"Kafka {kafka_version(libs)} jars in {libs} ({jars} jars, {size / 1e6:.1f} MB)")
        elif args.command == "version":
            print(kafka_version(fetch(quiet=True)))
        elif args.command == "up" and (args.nodes > 1 or Cluster.load(data_dir) is not None):
            cluster = cluster_up(data_dir, args.nodes)
            print(f"Kafka {kafka_version()} cluster of {len(cluster.nodes)} ready on {cluster.bootstrap()}")
        elif args.command == "up":
            if _read_running(data_dir) is None and _answers(args.port):
                # Another checkout's (or a hand-started) broker already serves
                # this port: use it rather than fail to bind.
                print(f"Kafka already answers on 127.0.0.1:{args.port}; using it")
                return 0
            broker = start(args.data_dir, port=args.port)
            print(f"Kafka {kafka_version()} ready on {broker.bootstrap} (data in {args.data_dir})")
        elif args.command == "down" and Cluster.load(data_dir) is not None:
            print("Kafka cluster stopped" if cluster_down(data_dir) else "Kafka cluster was not running")
        elif args.command == "down":
            print("Kafka stopped" if stop(args.data_dir) else "Kafka was not running")
        elif args.command == "status" and Cluster.load(data_dir) is not None:
            status = cluster_status(data_dir)
            for node_id, up in status.items():
                print(f"node {node_id}: {'up' if up else 'down'}")
            return 0 if all(status.values()) else 1
        elif args.command == "status":
            running = _read_running(data_dir)
            if running is None or not running.answers():
                print("Kafka is not running")
                return 1
            print(f"Kafka running on {running.bootstrap} (pid {running.pid})")
        elif args.command in ("kill", "start"):
            if args.node is None:
                parser.error(f"{args.command} needs a NODE id")
            if args.command == "kill":
                print(
                    f"node {args.node} killed" if node_kill(data_dir, args.node) else "node was not running"
                )
            else:
                node_start(data_dir, args.node)
                print(f"node {args.node} up")
        elif args.command == "bench-start":
            return _bench_start(args.runs, args.nodes)
    except (BrokerError, subprocess.CalledProcessError) as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    return 0


def _answers(port: int) -> bool:
    try:
        metadata_probe("127.0.0.1", port, timeout=1.0)
        return True
    except OSError:
        return False


def _bench_start(runs: int, nodes: int = DEFAULT_NODES) -> int:
    """Cold start = format + start + first metadata answer (every node seeing all), in fresh folders."""
    import statistics
    import tempfile

    fetch(quiet=True)
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            if nodes > 1:
                cluster_up(Path(tmp), nodes, quiet=True)
            else:
                start(Path(tmp), port=free_port(), quiet=True)
            times.append(time.monotonic() - t0)
            if nodes > 1:
                cluster_down(Path(tmp))
            else:
                stop(Path(tmp))
    print(
        f"cold starts of {nodes} node(s) (s):",
        " ".join(f"{t:.2f}" for t in times),
        f"median {statistics.median(times):.2f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
