"""The shard worker process (``presence-bridge run``).

One process, many shards. This module wires the parts together: settings,
logging, the Genesys REST client (one per OAuth client, so one token and one
rate budget per client, as Genesys asks), the Kafka topics, the health and
metrics server, and one :class:`~bridge.shard.Shard` per channel's worth of
agents. Which users a shard gets is decided by :func:`plan_shards` here for a
single worker; the fleet's partition map replaces only that decision.

Shutdown (SIGTERM/SIGINT): every shard stops reading, commits what it read
and closes its socket; the process exits 0 within the drain budget.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from bridge import log, metrics
from bridge.errors import ConfigError
from bridge.events import ShardState
from bridge.genesys.rest import GenesysRest
from bridge.genesys.socket import NotificationSocket
from bridge.health import HealthServer
from bridge.model import AgentState
from bridge.settings import GenesysClient, Settings
from bridge.shard import Shard, SocketFactory
from bridge.sink import ProducerFactory, ShardSink
from bridge.statestore import load_states
from bridge.topics import ensure_topics

__all__ = ["ShardPlan", "Worker", "plan_shards"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardPlan:
    """Which users a shard holds and which OAuth client it uses."""

    shard_id: int
    users: tuple[str, ...]
    client_index: int


def plan_shards(
    users: Sequence[str], capacity: int, clients: int, channels_per_client: int
) -> list[ShardPlan]:
    """Split users into shards of at most ``capacity``, spread over the clients' channel budgets.

    Each OAuth client keeps one channel spare for make-before-break rotation,
    so it carries at most ``channels_per_client - 1`` shards.
    """
    if clients < 1:
        raise ConfigError("no Genesys OAuth client configured (BRIDGE_GENESYS_CLIENT_ID / _SECRET)")
    per_client = max(1, channels_per_client - 1)
    budget = clients * per_client
    ordered = sorted(dict.fromkeys(users))
    plans: list[ShardPlan] = []
    for shard_id, start in enumerate(range(0, len(ordered), capacity)):
        if shard_id >= budget:
            break
        plans.append(ShardPlan(shard_id, tuple(ordered[start : start + capacity]), shard_id // per_client))
    assigned = sum(len(p.users) for p in plans)
    unassigned = len(ordered) - assigned
    metrics.ROSTER_USERS.set(len(ordered))
    metrics.ROSTER_UNASSIGNED.set(unassigned)
    if unassigned:
        logger.error(
            "%d agents do not fit the channel budget (%d clients x %d channels x %d topics); "
            "add OAuth clients",
            unassigned,
            clients,
            per_client,
            capacity,
        )
    return plans


@dataclass
class Worker:
    """Runs shards for a set of users until asked to stop."""

    settings: Settings
    transport: httpx.AsyncBaseTransport | None = None
    socket_factory: SocketFactory = NotificationSocket
    producer_factory: ProducerFactory | None = None
    shards: list[Shard] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _rests: list[GenesysRest] = field(default_factory=list)
    health: HealthServer | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        shards = {str(s.shard_id): s.describe() for s in self.shards}
        ready = bool(self.shards) and all(s.ready for s in self.shards)
        return ready, {"shards": shards}

    def _rest_for(self, client: GenesysClient) -> GenesysRest:
        log.register_secret(client.client_secret.get_secret_value())
        return GenesysRest.from_settings(self.settings, client, transport=self.transport)

    async def run(self, users: Sequence[str] | None = None) -> int:
        """Start everything, stream until stopped, drain; returns the exit code."""
        s = self.settings
        if s.kafka_sasl_password is not None:
            log.register_secret(s.kafka_sasl_password.get_secret_value())
        clients = s.clients()
        if not clients:
            raise ConfigError("no Genesys OAuth client configured (BRIDGE_GENESYS_CLIENT_ID / _SECRET)")
        self._rests = [self._rest_for(c) for c in clients]
        self.health = HealthServer(s.metrics_host, s.metrics_port, self.readiness)
        await self.health.start()
        try:
            await asyncio.to_thread(ensure_topics, s)
            primary = self._rests[0]
            roster = list(users) if users is not None else [u.id for u in await primary.active_users()]
            labels = {d.id: d.label for d in await primary.presence_definitions()}
            plans = plan_shards(roster, s.shard_capacity, len(self._rests), s.genesys_max_channels_per_client)
            logger.info("%d agents on %d shards", len(roster), len(plans))
            self.shards = [await self._build_shard(plan, labels) for plan in plans]
            metrics.SHARDS_OWNED.set(len(self.shards))
            tasks = [
                asyncio.create_task(shard.run(), name=f"shard-{shard.shard_id}") for shard in self.shards
            ]
            await self._stop.wait()
            logger.info("stopping: draining %d shards", len(self.shards))
            await asyncio.gather(*(shard.stop() for shard in self.shards))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for shard, result in zip(self.shards, results, strict=True):
                if isinstance(result, BaseException):
                    logger.error("shard %d ended with %r", shard.shard_id, result)
            return 0
        finally:
            for rest in self._rests:
                await rest.aclose()
            await self.health.stop()

    async def _build_shard(self, plan: ShardPlan, labels: dict[str, str]) -> Shard:
        s = self.settings
        state = ShardState(labels=labels)
        sink = (
            ShardSink(s, plan.shard_id)
            if self.producer_factory is None
            else ShardSink(s, plan.shard_id, producer_factory=self.producer_factory)
        )
        return Shard(
            plan.shard_id,
            plan.users,
            rest=self._rests[plan.client_index],
            sink=sink,
            state=state,
            settings=s,
            socket_factory=self.socket_factory,
            load_states=self._load,
        )

    async def _load(self, users: Sequence[str]) -> Mapping[str, AgentState]:
        return await asyncio.to_thread(load_states, self.settings, users)


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT request a graceful stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
