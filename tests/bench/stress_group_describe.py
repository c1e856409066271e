"""Stress: which way of reading a consumer group survives requests cut short and a broker restart?

The fleet's assignment watch (:mod:`bridge.fleet.watch`) reads the group
coordinator's record of its members every session timeout, in the worker's
own process. librdkafka 2.16's admin ``describe_consumer_groups`` aborts the
process when a coordinator request fails under it (issue #4605:
``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0'
failed``); the legacy ``list_groups`` is what the watch uses. This runs each
in a child process of its own against a fresh single-node broker with a
member in the group, calling it in a loop with timeouts of 1 ms to 1 s
(most calls give up before their answer comes) while the broker is stopped
and started again once, and reports how each child ended::

    .venv/bin/python -m tests.bench.stress_group_describe [--seconds 40]

Measured (2 CPUs, librdkafka 2.16.0, Kafka 4.4.0, the test suite running
beside it): ``list_groups`` alive after 36,960 calls (5,043 answered);
``describe_consumer_groups`` killed by SIGABRT on that assertion, as in a
first version of the loop (189,336 ``list_groups`` calls alive, the other
exit 134).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import localkafka

WAYS = ("list_groups", "describe_consumer_groups")
TIMEOUTS_S = (0.001, 0.01, 0.05, 1.0)


def child(way: str, seconds: float, data_dir: Path) -> None:
    """Call ``way`` in a loop for ``seconds``, restarting the broker once; print the count."""
    bootstrap = localkafka.start(data_dir, quiet=True).bootstrap
    group = f"stress-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("control", 3, 1)])["control"].result(30)
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    member.subscribe(["control"])
    stop = threading.Event()
    threading.Thread(target=lambda: [member.poll(0.1) for _ in iter(stop.is_set, True)], daemon=True).start()
    calls = answered = 0
    end = time.monotonic() + seconds
    restarted = False
    try:
        while time.monotonic() < end:
            if not restarted and time.monotonic() > end - seconds * 0.6:
                localkafka.stop(data_dir)
                localkafka.start(data_dir, quiet=True)
                restarted = True
            for timeout_s in TIMEOUTS_S:
                calls += 1
                try:
                    if way == "list_groups":
                        admin.list_groups(group=group, timeout=timeout_s)
                    else:
                        futures = admin.describe_consumer_groups([group], request_timeout=timeout_s)
                        futures[group].result(timeout=timeout_s + 1)
                    answered += 1
                except Exception:  # timeouts are the point
                    pass
        print(f"{calls} calls, {answered} answered", flush=True)
    finally:
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, args.data_dir)
        return
    for way in WAYS:
        data_dir = Path(tempfile.mkdtemp()) / "kafka"
        argv = [sys.executable, "-m", "tests.bench.stress_group_describe", "--child", way]
        argv += ["--seconds", str(args.seconds), "--data-dir", str(data_dir)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        finally:  # an aborted child leaves its broker behind
            localkafka.stop(data_dir)
        aborted = [line for line in done.stderr.splitlines() if "Assertion" in line]
        outcome = done.stdout.strip() or "no count"
        print(f"{way}: exit {done.returncode}, {outcome}" + (f"; {aborted[0]}" if aborted else ""))


if __name__ == "__main__":
    main()
