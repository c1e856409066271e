"""The fleet: runs exactly the shards whose control partitions this worker is assigned."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable

from confluent_kafka import Consumer

from bridge import metrics
from bridge.errors import AuthorizationError, FencedError, SinkError
from bridge.fleet.coordinator import (
    COORDINATOR_RETRY_S,
    Coordinator,
    clear_roster_gauges,
    coordinator_fenced_retry_s,
)
from bridge.fleet.map import ConsumerFactory, log_foreign
from bridge.fleet.membership import (
    Membership,
    MembershipEvent,
    _Assigned,
    _CaughtUp,
    _Disowned,
    _Failed,
    _Record,
    _Revoked,
)
from bridge.fleet.slot import STOP_MARGIN_S, ShardDriver, ShardFactory, Slot
from bridge.settings import Settings
from bridge.shard import Shard

__all__ = [
    "LOST_GRACE_S",
    "SHARD_RESTART_DEADLINE_S",
    "Fleet",
]

logger = logging.getLogger(__name__)

#: After the coordinator adds partitions, readiness waits for the next assignment this long at most.
REBALANCE_PENDING_MAX_S = 30.0
#: Shards of partitions lost with the session keep running this long at most
#: while the group has not answered (a broker outage the sink rides out).
LOST_GRACE_S = 60.0
#: A mapped shard not running for this long (restarts failing) fails /healthz.
SHARD_RESTART_DEADLINE_S = 60.0

CoordinatorFactory = Callable[[Callable[[int], None]], Coordinator]


class _CoordinatorRole:
    """Runs the :class:`Coordinator` while this worker owns partition 0.

    A fenced coordinator runs again after :func:`coordinator_fenced_retry_s`
    if partition 0 is still here then; one that failed otherwise after
    :data:`COORDINATOR_RETRY_S`; a missing ACL goes to ``forbidden``.
    ``owns_partition_0`` and ``shutting_down`` ask the fleet.
    """

    def __init__(
        self,
        settings: Settings,
        factory: CoordinatorFactory,
        *,
        partitions_added: Callable[[int], None],
        owns_partition_0: Callable[[], bool],
        shutting_down: Callable[[], bool],
        forbidden: Callable[[AuthorizationError], None],
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._partitions_added = partitions_added
        self._owns_partition_0 = owns_partition_0
        self._shutting_down = shutting_down
        self._forbidden = forbidden
        self.coordinator: Coordinator | None = None
        self._task: asyncio.Task[None] | None = None
        self._fenced = False

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def claim(self) -> None:
        """Partition 0 is (again) ours: coordinate, even if a coordinator of ours was fenced before."""
        self._fenced = False
        self.start()

    def start(self) -> None:
        if self.active or self._shutting_down() or self._fenced:
            return
        self.coordinator = self._factory(self._partitions_added)
        self._task = asyncio.create_task(self._run(self.coordinator), name="coordinator")
        logger.info("this worker owns partition 0: coordinating the partition map")

    async def _run(self, coordinator: Coordinator) -> None:
        try:
            await coordinator.run()
        except FencedError as exc:
            # Another worker coordinates now; this one learns it lost partition 0
            # shortly. If it does not, the group says it is ours: coordinate again.
            retry_s = coordinator_fenced_retry_s(self._settings)
            logger.error("%s; no longer coordinating (again in %.0f s if partition 0 stays)", exc, retry_s)
            self._fenced = True
            clear_roster_gauges()
            asyncio.get_running_loop().call_later(retry_s, self._retry_fenced)
        except AuthorizationError as exc:
            self._forbidden(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("coordinator failed; restarting it")
            await asyncio.sleep(COORDINATOR_RETRY_S)
            if self._here():
                self._task = None
                self.start()

    def _retry_fenced(self) -> None:
        if self._here() and self._fenced and not self.active:
            logger.warning("partition 0 is still ours after the coordinator was fenced; coordinating again")
            self.claim()

    def _here(self) -> bool:
        return self._owns_partition_0() and not self._shutting_down()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            logger.info("no longer coordinating")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            clear_roster_gauges()

    def readiness(self, owns_partition_0: bool) -> tuple[bool, str | None, dict[str, object]]:
        """(coordination fine, the control topic's conflict if any, the coordinator's figures).

        Owning partition 0 needs a running coordinator that has refreshed.
        """
        coordinator = self.coordinator if self.active else None
        if coordinator is None:
            return not owns_partition_0, None, {}
        conflict = coordinator.conflict
        figures: dict[str, object] = {
            "refreshes": coordinator.refreshes,
            "unassigned": coordinator.last_unassigned,
        }
        return conflict is None and coordinator.refreshes > 0, conflict, figures


class Fleet:
    """Runs exactly the shards whose control partitions this worker is assigned.

    ``shard_factory`` builds a :class:`Shard` for (shard id, users, client index);
    ``coordinator_factory`` the :class:`Coordinator` when this worker gains partition 0
    (with a callback to announce new partitions). :meth:`run` returns after ``stop`` is
    set and everything is shut down: shards drained, then the consumer closed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        shard_factory: ShardFactory,
        coordinator_factory: CoordinatorFactory,
        consumer_factory: ConsumerFactory = Consumer,
        clients: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._slots: dict[int, Slot] = {}
        self._lost: dict[int, Slot] = {}
        self._driver = ShardDriver(
            settings,
            shard_factory=shard_factory,
            clients=clients,
            clock=clock,
            owned_changed=lambda: metrics.SHARDS_OWNED.set(len(self.shards)),
            forbidden=self._stop_for,
            doubted=lambda: self._membership.doubted,
        )
        self._events: asyncio.Queue[MembershipEvent] = asyncio.Queue()
        self._membership = Membership(
            settings,
            self._events.put_nowait,
            consumer_factory=consumer_factory,
            revoke_wait_s=settings.drain_timeout_s + STOP_MARGIN_S,
        )
        self._coordination = _CoordinatorRole(
            settings,
            coordinator_factory,
            partitions_added=self._partitions_added,
            owns_partition_0=lambda: 0 in self._slots,
            shutting_down=lambda: self._shutting_down,
            forbidden=self._stop_for,
        )
        self.joined = False
        self._rebalance_pending_until: float | None = None
        self._shutting_down = False
        self.failure: str | None = None
        #: A missing ACL met by any part of the fleet: it stops, and run() raises it.
        self.forbidden: AuthorizationError | None = None
        #: Control records of another fleet seen on this worker's partitions (never applied).
        self.foreign_records = 0
        self._background: set[asyncio.Task[None]] = set()

    # -- what the worker, /readyz and tests read ----------------------------------------

    @property
    def shards(self) -> list[Shard]:
        """The shards running now, by shard id."""
        return [
            slot.shard
            for _, slot in sorted({**self._slots, **self._lost}.items())
            if slot.shard is not None and slot.running and not slot.fenced
        ]

    @property
    def partitions(self) -> list[int]:
        return sorted(self._slots)

    @property
    def coordinator(self) -> Coordinator | None:
        """The coordinator this worker runs or ran last (None: never coordinated)."""
        return self._coordination.coordinator

    @property
    def is_coordinator(self) -> bool:
        return self._coordination.active

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready: joined, no rebalance pending, every owned partition read and its shard ready.

        Never ready while the control topic shows another fleet's records, nor
        while this worker owns partition 0 and no coordinator runs (or it has
        not refreshed yet).
        """
        now = self._clock()
        pending = self._rebalance_pending_until is not None and now < self._rebalance_pending_until
        coordinator_ok, conflict, figures = self._coordination.readiness(0 in self._slots)
        slots = sorted(self._slots.values(), key=lambda s: s.partition)
        ready = (
            self.joined
            and not pending
            and not self._lost
            and coordinator_ok
            and self.foreign_records == 0
            and all(s.ready() for s in slots)
        )
        wall = time.time()
        details: dict[str, object] = {
            "partitions": self.partitions,
            "coordinator": self.is_coordinator,
            "joined": self.joined,
            "shards": {str(slot.partition): slot.describe(now, wall) for slot in slots},
        }
        if self.foreign_records or conflict is not None:
            details["foreignMapRecords"] = self.foreign_records
            details["conflict"] = conflict or "another fleet's map records on this worker's partitions"
        details.update(figures)
        return ready, details

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Alive unless a mapped shard has not been running for :data:`SHARD_RESTART_DEADLINE_S`.

        A shard is down from when its slot has members and no shard of it has connected,
        through restarts that end before connecting, until a started shard connects (a
        running one still reconnecting, Genesys down, is alive). Failing /healthz makes
        Kubernetes replace the pod.
        """
        now = self._clock()
        down = sorted(
            slot.partition for slot in self._slots.values() if slot.down_for(now) > SHARD_RESTART_DEADLINE_S
        )
        details: dict[str, object] = {"down": down}
        if self.failure is not None:
            details["failure"] = self.failure
        return not down and self.failure is None, details

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Join the group and follow it until ``stop``; then drain the shards and leave the group."""
        self._membership.start()
        events = asyncio.create_task(self._process_events())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({events, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._shutting_down = True
            stopper.cancel()
            await self._shutdown()
            events.cancel()
            await asyncio.gather(events, return_exceptions=True)
        if self.forbidden is not None:
            raise self.forbidden
        if self.failure is not None:
            raise SinkError(f"fleet membership failed: {self.failure}")

    async def _shutdown(self) -> None:
        logger.info("stopping: draining %d shards, then leaving the group", len(self.shards))
        await self._coordination.stop()
        slots = [*self._slots.values(), *self._lost.values()]
        self._slots.clear()
        self._lost.clear()
        for slot in slots:
            slot.revoked = True
            slot.wake.set()
        drivers = [s.driver for s in slots if s.driver is not None]
        await asyncio.gather(*drivers, *self._driver.stopping(), return_exceptions=True)
        metrics.SHARDS_OWNED.set(0)
        await self._membership.close()

    async def _process_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                self._handle(event)
            except Exception:
                logger.exception("fleet event %r failed", event)
            if isinstance(event, _Failed):
                return

    def _handle(self, event: MembershipEvent) -> None:
        if isinstance(event, _Assigned):
            self.joined = True
            self._rebalance_pending_until = None
            for p in event.partitions:
                self._gain(p)
            # Lost partitions the group did not give back belong to others now.
            self._expire_lost()
        elif isinstance(event, _Revoked) and event.lost:
            self._hold_lost(event.partitions)
        elif isinstance(event, _Revoked):
            self._lose(event.partitions, event.done)
        elif isinstance(event, _Disowned):
            self._disown(event.partitions)
        elif isinstance(event, _Record):
            self._on_record(event)
        elif isinstance(event, _CaughtUp):
            slot = self._slots.get(event.partition)
            if slot is not None:
                slot.catch_up()
        else:
            logger.error("fleet membership failed: %s", event.error)
            self.failure = event.error
            if event.forbidden is not None:
                self.forbidden = event.forbidden

    def _gain(self, p: int) -> None:
        if p in self._slots:
            return
        held = self._lost.pop(p, None)
        if held is not None and not (held.fenced or (held.shard is not None and held.shard.fenced)):
            # Given back after a lost session: the shard never stopped; the
            # partition is read again from the beginning (same or newer epoch).
            self._slots[p] = held
            logger.info("partition %d is ours again; its shard kept running", p)
            if p == 0 and not self.is_coordinator:  # fenced while the session was lost
                self._coordination.claim()
            return
        if held is not None:
            # Another worker owned it meanwhile and fenced this shard: retire the
            # old slot; the new one starts when it has stopped (its new sink
            # fences that interim owner, which no longer owns the partition).
            logger.info("partition %d is ours again; its shard was fenced meanwhile: restarting it", p)
            self._driver.retire(held)
        slot = Slot(p)
        self._slots[p] = slot
        if self._shutting_down:
            return
        self._driver.start(slot)
        if p == 0:
            self._coordination.claim()

    def _hold_lost(self, partitions: list[int]) -> None:
        """The session was lost: keep the shards running until the group answers.

        The usual cause is a broker or network outage, after which the group
        gives the same partitions back: the shards keep what they queued in
        memory and nothing is lost. If another worker got them meanwhile, its
        sink has fenced ours (nothing we write becomes visible) and the next
        assignment, or :data:`LOST_GRACE_S`, stops them.
        """
        for p in partitions:
            slot = self._slots.pop(p, None)
            if slot is not None:
                self._lost[p] = slot
        if self._lost:
            asyncio.get_running_loop().call_later(LOST_GRACE_S, self._expire_lost)

    def _disown(self, partitions: list[int]) -> None:
        """The group's record gives these to others (bridge.fleet.watch): stop their shards."""
        for p in partitions:
            if (held := self._lost.pop(p, None)) is not None:
                self._driver.retire(held)
        logger.warning("partitions %s are not ours by the group's record; stopping their shards", partitions)
        self._lose(partitions, None)

    def _expire_lost(self) -> None:
        if not self._lost:
            return
        partitions = sorted(self._lost)
        logger.warning("lost partitions %s now belong to other workers; stopping their shards", partitions)
        self._slots.update(self._lost)
        self._lost.clear()
        self._lose(partitions, None)

    def _lose(self, partitions: list[int], done: concurrent.futures.Future[None] | None) -> None:
        drivers: list[asyncio.Task[None]] = []
        for p in partitions:
            slot = self._slots.pop(p, None)
            if slot is None:
                continue
            driver = self._driver.retire(slot)
            if driver is not None:
                drivers.append(driver)
        if 0 in partitions:
            _spawn(self._background, self._coordination.stop())
        if done is not None:

            async def ack() -> None:
                await asyncio.gather(*drivers, return_exceptions=True)
                if not done.done():
                    done.set_result(None)

            _spawn(self._background, ack())

    def _on_record(self, event: _Record) -> None:
        slot = self._slots.get(event.partition)
        if slot is None or slot.revoked:
            return
        if event.record.foreign_to(self._settings.id):
            log_foreign(event.record, self._settings, event.partition)
            self.foreign_records += 1
            return
        slot.offer(event.record)

    def _partitions_added(self, total: int) -> None:
        logger.info("partition map grew to %d shards; waiting for the rebalance", total)
        self._rebalance_pending_until = self._clock() + REBALANCE_PENDING_MAX_S
        self._membership.request_metadata_refresh()

    def _stop_for(self, exc: AuthorizationError) -> None:
        """A missing ACL: retrying cannot help; stop the whole worker (run() raises it)."""
        if self.forbidden is not None:
            return
        logger.error("%s; stopping", exc)
        self._events.put_nowait(_Failed(str(exc), exc))


def _spawn(background: set[asyncio.Task[None]], coro: Awaitable[None]) -> None:
    """Run ``coro`` in a task that ``background`` holds until it ends."""

    async def runner() -> None:
        await coro

    task = asyncio.create_task(runner())
    background.add(task)
    task.add_done_callback(background.discard)
