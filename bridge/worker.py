"""The shard worker process (``presence-bridge run``).

One process, many shards. This module wires the parts together: settings,
logging, the Genesys REST client (one per OAuth client, so one token and one
rate budget per client, as Genesys asks), the Kafka topics, the health and
metrics server, and the fleet membership (:mod:`bridge.fleet`), which runs
one :class:`~bridge.shard.Shard` per control-topic partition this worker is
assigned. A worker alone in its group owns every shard; when it owns
partition 0 it also coordinates the partition map.

Readiness (``/readyz``): joined the group, every owned partition read, and
every owned shard connected, subscribed and its producer healthy; when it
owns partition 0, its coordinator runs and has refreshed the map. Liveness
(``/healthz``): no owned shard has been unable to (re)start for
:data:`~bridge.fleet.SHARD_RESTART_DEADLINE_S` (Kubernetes then replaces the pod).

Shutdown (SIGTERM/SIGINT): every owned shard stops reading, commits what it
read and closes its socket; then the consumer closes, leaving the group so
the others take the shards over at once; the process exits 0 within the
drain budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge import log, memory
from bridge.acl import preflight
from bridge.assign import shard_budget, shards_per_client
from bridge.errors import AuthorizationError, ConfigError, RateLimitedError, TransientError
from bridge.events import ShardState
from bridge.fleet import ConsumerFactory, Coordinator, Fleet, read_map
from bridge.genesys.config import ClientConfig
from bridge.genesys.regions import base_urls
from bridge.genesys.rest import GenesysRest
from bridge.genesys.retry import backoff_delays
from bridge.genesys.socket import NotificationSocket
from bridge.health import HealthServer
from bridge.model import AgentState
from bridge.settings import GenesysClient, Settings
from bridge.shard import Shard, SocketFactory
from bridge.sink import ProducerFactory, ShardSink
from bridge.statestore import load_shard_states, load_states, written_by_other_fleets
from bridge.topics import ensure_topics

__all__ = ["Worker", "genesys_config", "genesys_rest", "install_signal_handlers", "presence_labels"]

logger = logging.getLogger(__name__)


def genesys_config(settings: Settings) -> ClientConfig:
    """The Genesys layer's plain configuration from ``settings`` (region checked, overrides honoured)."""
    urls = base_urls(
        settings.genesys_region, login_url=settings.genesys_login_url, api_url=settings.genesys_api_url
    )
    return ClientConfig(
        login_url=urls.login_url,
        api_url=urls.api_url,
        budget_per_min=settings.rest_budget_per_min,
        timeout_s=settings.rest_timeout_s,
        max_retries=settings.rest_max_retries,
        retry_initial_s=settings.backoff_initial_s,
    )


def genesys_rest(
    settings: Settings, client: GenesysClient, *, transport: httpx.AsyncBaseTransport | None = None
) -> GenesysRest:
    """A REST client (with its own OAuth flow) for one OAuth client of ``settings``."""
    return GenesysRest.for_client(
        client.client_id, client.client_secret, genesys_config(settings), transport=transport
    )


@dataclass
class Worker:
    """A member of the fleet: runs the shards the group assigns it until asked to stop.

    ``Worker(settings).run()`` alone in its group owns every shard. The I/O
    seams (HTTP transport, socket, producer and consumer factories) are
    injectable; ``users`` given to :meth:`run` replaces the Genesys roster
    (the coordinator assigns exactly those users).
    """

    settings: Settings
    transport: httpx.AsyncBaseTransport | None = None
    socket_factory: SocketFactory = NotificationSocket
    producer_factory: ProducerFactory | None = None
    consumer_factory: ConsumerFactory | None = None
    fleet: Fleet | None = None
    health: HealthServer | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _rests: list[GenesysRest] = field(default_factory=list)
    _labels: dict[str, str] = field(default_factory=dict)

    @property
    def shards(self) -> list[Shard]:
        """The shards this worker runs now."""
        return self.fleet.shards if self.fleet is not None else []

    def request_stop(self) -> None:
        self._stop.set()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        if self.fleet is None:
            return False, {"shards": {}}
        return self.fleet.readiness()

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """For /healthz: alive unless an owned shard could not restart within the deadline."""
        if self.fleet is None:
            return True, {}
        return self.fleet.liveness()

    def _rest_for(self, client: GenesysClient) -> GenesysRest:
        log.register_secret(client.client_secret.get_secret_value())
        return genesys_rest(self.settings, client, transport=self.transport)

    async def run(self, users: Sequence[str] | None = None) -> int:
        """Join the fleet, stream until stopped, drain and leave; returns the exit code."""
        s = self.settings
        for secret in s.kafka_secrets():
            log.register_secret(secret)
        clients = s.clients()
        if not clients:
            raise ConfigError("no Genesys OAuth client configured (BRIDGE_GENESYS_CLIENT_ID / _SECRET)")
        self._rests = [self._rest_for(c) for c in clients]
        self.health = HealthServer(s.metrics_host, s.metrics_port, self.readiness, self.liveness)
        await self.health.start()
        trimmer = asyncio.create_task(memory.trim_periodically())
        try:
            try:
                # A new control topic starts with one partition; the coordinator grows it.
                await asyncio.to_thread(ensure_topics, s, shard_map_partitions=1)
                await asyncio.to_thread(preflight, s)
            except (AuthorizationError, ConfigError) as exc:
                logger.error("%s", exc)
                raise
            primary = self._rests[0]
            delays = backoff_delays(s.backoff_initial_s, s.backoff_max_s, random.Random())
            labels = await presence_labels(primary, self._stop, delays)
            if labels is None:
                return 0
            self._labels.update(labels)
            budget = shard_budget(len(clients), s.genesys_max_channels_per_client)
            logger.info(
                "joining fleet %s: %d OAuth clients, up to %d shards of %d agents (%d per client)",
                s.id,
                len(clients),
                budget,
                s.shard_capacity,
                shards_per_client(s.genesys_max_channels_per_client),
            )
            fixed = list(users) if users is not None else None

            async def roster() -> list[str]:
                if fixed is not None:
                    return fixed
                return [u.id for u in await primary.active_users()]

            def coordinator(on_partitions_added: Callable[[int], None]) -> Coordinator:
                kwargs: dict[str, Any] = {}
                if self.consumer_factory is not None:
                    kwargs["consumer_factory"] = self.consumer_factory
                return Coordinator(
                    s,
                    roster,
                    clients=len(clients),
                    on_partitions_added=on_partitions_added,
                    still_active=None if fixed is not None else primary.still_active,
                    **kwargs,
                )

            fleet_kwargs: dict[str, Any] = {}
            if self.consumer_factory is not None:
                fleet_kwargs["consumer_factory"] = self.consumer_factory
            self.fleet = Fleet(
                s,
                shard_factory=self._build_shard,
                coordinator_factory=coordinator,
                clients=len(clients),
                **fleet_kwargs,
            )
            await self.fleet.run(self._stop)  # a missing ACL is logged there, then raised
            return 0
        finally:
            trimmer.cancel()
            for rest in self._rests:
                await rest.aclose()
            await self.health.stop()

    def _build_shard(self, shard_id: int, users: Sequence[str], client_index: int) -> Shard:
        s = self.settings
        state = ShardState(labels=self._labels)
        sink = (
            ShardSink(s, shard_id)
            if self.producer_factory is None
            else ShardSink(s, shard_id, producer_factory=self.producer_factory)
        )
        # The first load (takeover) also names the shard's orphans; later ones
        # (agents added in place) only read states.
        orphans: list[str] | None = None

        async def load(members: Sequence[str]) -> Mapping[str, AgentState]:
            nonlocal orphans
            if orphans is not None:
                return await asyncio.to_thread(load_states, s, members)
            loaded = await asyncio.to_thread(load_shard_states, s, members, shard_id)
            orphans = loaded.orphans
            state.fleet_since = loaded.fleet_since
            return loaded.states

        async def moved(candidates: Sequence[str]) -> set[str]:
            # Read after the states: the map is at least as new as any state the load saw.
            _count, records = await asyncio.to_thread(read_map, s, **self._map_kwargs())
            others = {u for p, r in records.items() if p != shard_id for u in r.users}
            return {u for u in candidates if u in others}

        async def owned_elsewhere(removed: Sequence[str]) -> set[str]:
            """Removed agents that must keep their state: moved, or last written by another fleet."""
            keep = await moved(removed)
            rest = [u for u in removed if u not in keep]
            if rest:
                keep |= await asyncio.to_thread(written_by_other_fleets, s, rest)
            return keep

        async def find_orphans(members: Sequence[str]) -> list[str]:
            candidates = [u for u in orphans or () if u not in set(members)]
            if not candidates:
                return []
            kept = await moved(candidates)
            return [u for u in candidates if u not in kept]

        return Shard(
            shard_id,
            users,
            rest=self._rests[client_index],
            sink=sink,
            state=state,
            settings=s,
            socket_factory=self.socket_factory,
            load_states=load,
            find_orphans=find_orphans,
            owned_elsewhere=owned_elsewhere,
        )

    def _map_kwargs(self) -> dict[str, Any]:
        return {} if self.consumer_factory is None else {"consumer_factory": self.consumer_factory}


async def presence_labels(
    rest: GenesysRest, stop: asyncio.Event, delays: Iterator[float]
) -> dict[str, str] | None:
    """The org's presence labels (definition id → label); None if ``stop`` is set first.

    A start-up that meets a 429 or 5xx storm (or a token request refused
    with one) waits and asks again, as every other call does: a worker that
    exited instead would crash-loop for as long as Genesys is busy.
    """
    while True:
        try:
            return {d.id: d.label for d in await rest.presence_definitions()}
        except (RateLimitedError, TransientError) as exc:
            delay = next(delays)
            if isinstance(exc, RateLimitedError):
                delay = max(delay, exc.retry_after)
            logger.warning("presence definitions not available yet (%s); retrying in %.1f s", exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return None


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT request a graceful stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
