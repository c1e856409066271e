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
- ``down``: SIGTERM (Kafka's clean controlled shutdown), then SIGKILL after a
  timeout.
- ``status``: exit 0 when the broker answers.

The readiness probe speaks the Kafka wire protocol directly (a Metadata v4
request, which every 4.x broker serves) so that "ready" means what clients
need, not merely an open port.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
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


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by the broker")
        buf += chunk
    return buf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start(
    data_dir: Path,
    port: int | None = None,
    controller_port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    quiet: bool = False,
    *,
    extra_listeners: dict[str, tuple[int, int]] | None = None,
) -> Broker:
    """Start (formatting first if new) and wait for a Metadata answer.

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
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17+ is required to run the Kafka broker")
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
    text = (
        TEMPLATE.read_text()
        .replace("@PORT@", str(port))
        .replace("@CONTROLLER_PORT@", str(controller_port))
        .replace("@DATA_DIR@", str(data_dir))
    )
    text = _with_listeners(text, extra_listeners or {})
    props.write_text(text)
    classpath = f"{libs}/*"
    jvm = [
        java,
        DEFAULT_HEAP,
        "-Xms256m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        classpath,
    ]
    if not (data_dir / "log" / "meta.properties").exists():
        cluster_id = _kafka_uuid()
        with open(data_dir / LOG_FILE, "ab") as fmt_log:
            subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                ],
                check=True,
                stdout=fmt_log,
                stderr=subprocess.STDOUT,
            )
    ports_file.write_text(f"{port} {controller_port}\n")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["fetch", "up", "down", "status", "version", "bench-start"])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KAFKA_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", DEFAULT_PORT)))
    parser.add_argument("--runs", type=int, default=3, help="bench-start: how many cold starts")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            libs = fetch()
            size = sum(p.stat().st_size for p in libs.glob("*.jar"))
            jars = len(list(libs.glob("*.jar")))
            print(f"Kafka {kafka_version(libs)} jars in {libs} ({jars} jars, {size / 1e6:.1f} MB)")
        elif args.command == "version":
            print(kafka_version(fetch(quiet=True)))
        elif args.command == "up":
            if _read_running(args.data_dir.resolve()) is None and _answers(args.port):
                # Another checkout's (or a hand-started) broker already serves
                # this port: use it rather than fail to bind.
                print(f"Kafka already answers on 127.0.0.1:{args.port}; using it")
                return 0
            broker = start(args.data_dir, port=args.port)
            print(f"Kafka {kafka_version()} ready on {broker.bootstrap} (data in {args.data_dir})")
        elif args.command == "down":
            print("Kafka stopped" if stop(args.data_dir) else "Kafka was not running")
        elif args.command == "status":
            running = _read_running(args.data_dir.resolve())
            if running is None or not running.answers():
                print("Kafka is not running")
                return 1
            print(f"Kafka running on {running.bootstrap} (pid {running.pid})")
        elif args.command == "bench-start":
            return _bench_start(args.runs)
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


def _bench_start(runs: int) -> int:
    """Cold start = format + start + first metadata answer, in fresh folders."""
    import statistics
    import tempfile

    fetch(quiet=True)
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            start(Path(tmp), port=free_port(), quiet=True)
            times.append(time.monotonic() - t0)
            stop(Path(tmp))
    print("cold starts (s):", " ".join(f"{t:.2f}" for t in times), f"median {statistics.median(times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
