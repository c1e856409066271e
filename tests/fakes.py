"""Test doubles shared by tests and benchmarks (never a stand-in for Kafka in an integration test)."""

from __future__ import annotations

from typing import Any


class NullProducer:
    """A transactional confluent-kafka producer that accepts everything at once and sends nothing.

    For the sink's unit tests and the in-process hot-path benchmark; subclass
    it to make one call fail.
    """

    def __init__(self, _config: dict[str, Any]) -> None:
        self.records = 0

    def init_transactions(self, *_args: Any) -> None:
        pass

    def begin_transaction(self) -> None:
        pass

    def produce(self, _topic: str, **_kwargs: Any) -> None:
        self.records += 1

    def poll(self, *_args: Any) -> int:
        return 0

    def commit_transaction(self, *_args: Any) -> None:
        pass

    def abort_transaction(self, *_args: Any) -> None:
        pass

    def purge(self) -> None:
        pass

    def close(self, *_args: Any) -> None:
        pass
