"""One owned control partition: its slot (latest map record, shard) and the driver that runs its shard."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence

from bridge import log
from bridge.errors import AuthorizationError
from bridge.fleet.coordinator import coordinator_fenced_retry_s
from bridge.fleet.map import MapRecord
from bridge.settings import Settings
from bridge.shard import Shard

__all__ = [
    "SHARD_RESTART_DELAY_S",
    "STOP_MARGIN_S",
    "ShardDriver",
    "ShardFactory",
    "Slot",
]

logger = logging.getLogger(__name__)

#: Added to the drain budget when a revocation waits for its shards to stop.
STOP_MARGIN_S = 2.0
#: A shard that ended by itself (neither stopped nor fenced) is started again after this.
SHARD_RESTART_DELAY_S = 1.0

#: (shard id, users, OAuth client index) → a Shard not yet running.
ShardFactory = Callable[[int, Sequence[str], int], Shard]


class Slot:
    """An owned partition: its latest map record and the shard that runs it."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.record: MapRecord | None = None
        self.caught_up = False
        self.revoked = False
        self.fenced = False
        self.shard: Shard | None = None
        self.client_index = 0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.driver: asyncio.Task[None] | None = None
        self.not_before = 0.0
        #: Since when the slot has had members but no shard that connected (None: fine).
        self.down_since: float | None = None

    @property
    def users(self) -> tuple[str, ...]:
        return self.record.users if self.record is not None else ()

    @property
    def running(self) -> bool:
        return self.shard is not None and self.task is not None and not self.task.done()

    def down_for(self, now: float) -> float:
        """How long the slot's members have had no running shard that connected."""
        if not self.caught_up or self.fenced or self.revoked or not self.users:
            self.down_since = None
            return 0.0
        shard = self.shard
        if self.running and shard is not None and shard.connected.is_set():
            self.down_since = None
            return 0.0
        if self.down_since is None:
            self.down_since = now
        return 0.0 if self.running else now - self.down_since

    def ready(self) -> bool:
        if not self.caught_up or self.fenced:
            return False
        if not self.users:
            return True
        return self.running and self.shard is not None and self.shard.ready

    def catch_up(self) -> None:
        """The partition is read to its end: its latest record is the shard's member list."""
        if not self.caught_up:
            self.caught_up = True
            self.wake.set()

    def offer(self, record: MapRecord) -> None:
        """Take a map record of this partition; one for another shard or of an older epoch is ignored."""
        if record.shard != self.partition:
            logger.warning("control record for shard %d found in partition %d", record.shard, self.partition)
            return
        if self.record is not None and record.epoch < self.record.epoch:
            logger.warning(
                "ignoring stale map record for shard %d (epoch %d < %d)",
                record.shard,
                record.epoch,
                self.record.epoch,
            )
            return
        self.record = record
        if self.caught_up:
            self.wake.set()

    def describe(self, now: float, wall: float) -> dict[str, object]:
        """The slot in /readyz: members, epoch, client, and its running shard's own description.

        ``now`` is the fleet's clock, ``wall`` the same instant as Unix time.
        """
        info: dict[str, object] = {"users": len(self.users), "fenced": self.fenced}
        if self.record is not None:
            info["epoch"] = self.record.epoch
            info["clientIndex"] = self.record.client_index
        if self.shard is not None and self.running:
            info.update(self.shard.describe())
            stats = self.shard.stats
            if stats.last_reconciled is not None:
                info["reconciledAt"] = wall - (now - stats.last_reconciled)
            info["connects"] = stats.connects
        return info


class ShardDriver:
    """Converges each slot's shard on the slot's latest map record until the slot is revoked.

    A retired slot's driver keeps stopping its shard; a new slot of the
    same partition waits for that first. ``owned_changed`` is called whenever a shard starts or stops,
    ``forbidden`` when a shard ended on a missing ACL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        shard_factory: ShardFactory,
        clients: int,
        clock: Callable[[], float],
        owned_changed: Callable[[], None],
        forbidden: Callable[[AuthorizationError], None],
        doubted: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self._settings = settings
        self._shard_factory = shard_factory
        self._clients = clients
        self._clock = clock
        #: partition → the driver of a retired slot, until it has stopped its shard.
        self._stopping: dict[int, asyncio.Task[None]] = {}
        self._owned_changed = owned_changed
        self._forbidden = forbidden
        self._doubted = doubted

    def start(self, slot: Slot) -> None:
        """Drive ``slot`` in a task of its own (``slot.driver``)."""
        slot.driver = asyncio.create_task(self.drive(slot), name=f"fleet-partition-{slot.partition}")

    def retire(self, slot: Slot) -> asyncio.Task[None] | None:
        """Revoke ``slot``: its driver stops the shard and ends; returns that driver (None: never driven)."""
        slot.revoked = True
        slot.wake.set()
        driver = slot.driver
        if driver is not None:
            self._stopping[slot.partition] = driver
            driver.add_done_callback(functools.partial(self._forget_stopping, slot.partition))
        return driver

    def stopping(self) -> list[asyncio.Task[None]]:
        """The drivers of retired slots still stopping their shards."""
        return list(self._stopping.values())

    def _forget_stopping(self, p: int, task: asyncio.Task[None]) -> None:
        if self._stopping.get(p) is task:
            del self._stopping[p]

    async def drive(self, slot: Slot) -> None:
        """Converge the partition's shard on its latest record until revoked; then stop it."""
        with log.bind(shard=slot.partition):
            previous = self._stopping.get(slot.partition)
            if previous is not None:  # the same shard, lost a moment ago, still stopping
                await asyncio.gather(previous, return_exceptions=True)
            try:
                while True:
                    await slot.wake.wait()
                    slot.wake.clear()
                    if slot.revoked:
                        break
                    if not slot.caught_up:
                        continue
                    try:
                        await self._converge(slot)
                    except Exception:
                        logger.exception("shard %d: applying the map failed; retrying", slot.partition)
                        self._wake_later(slot, SHARD_RESTART_DELAY_S)
            finally:
                await self._stop_shard(slot)

    async def _converge(self, slot: Slot) -> None:
        users = slot.users
        record = slot.record
        client = record.client_index if record is not None else 0
        if not slot.running:
            self._reap(slot)
            if slot.fenced or not users or self._clock() < slot.not_before:
                return
            if client >= self._clients:
                logger.error(
                    "shard %d wants OAuth client %d but only %d are configured",
                    slot.partition,
                    client,
                    self._clients,
                )
                return
            new = self._shard_factory(slot.partition, users, client)
            slot.shard, slot.client_index = new, client
            slot.task = asyncio.create_task(new.run(), name=f"shard-{slot.partition}")
            slot.task.add_done_callback(lambda _t: slot.wake.set())
            logger.info("shard %d started with %d users (client %d)", slot.partition, len(users), client)
            self._owned_changed()
            return
        shard = slot.shard
        assert shard is not None
        if client != slot.client_index:
            logger.info("shard %d moves to OAuth client %d; restarting it", slot.partition, client)
            await self._stop_shard(slot)
            slot.wake.set()
            return
        if tuple(shard.users) == users:
            return
        # Apply membership changes once the shard has loaded its states and connected,
        # so removed users get their tombstone.
        if not await _until_connected(shard, slot):
            return  # woken first (revoked, a newer record, the shard ended): the driver looks again
        if slot.revoked or not slot.running:
            slot.wake.set()
            return
        added, removed = await shard.set_users(users)
        logger.info(
            "shard %d: map epoch %s adds %d and removes %d users",
            slot.partition,
            record.epoch if record is not None else "-",
            len(added),
            len(removed),
        )
        if not users:
            await self._stop_shard(slot)

    def _reap(self, slot: Slot) -> None:
        """Look at a shard that ended by itself: fenced → wait for revocation (or restart if the
        partition stays ours, :meth:`_unfence`); else restart later."""
        shard, task = slot.shard, slot.task
        if shard is None or task is None:
            return
        slot.shard, slot.task = None, None
        self._owned_changed()
        slot.down_for(self._clock())
        if shard.fenced:
            slot.fenced = True
            retry_s = coordinator_fenced_retry_s(self._settings)
            logger.error(
                "shard %d was fenced by a newer owner; its channel is closed (started again in %.0f s "
                "if the partition is still ours)",
                slot.partition,
                retry_s,
            )
            asyncio.get_running_loop().call_later(retry_s, self._unfence, slot)
            return
        exc = task.exception() if not task.cancelled() else None
        if isinstance(exc, AuthorizationError):
            self._forbidden(exc)
            return
        logger.error("shard %d ended unexpectedly (%r); restarting it", slot.partition, exc)
        self._wake_later(slot, SHARD_RESTART_DELAY_S)

    def _unfence(self, slot: Slot) -> None:
        """Still ours after two session timeouts: whoever fenced the shard owned the partition only
        for a while (it came back to us with the shard still running, then that owner's sink
        fenced it); a new sink fences that owner in turn."""
        if slot.fenced and not slot.revoked and not slot.running:
            if slot.partition in self._doubted():
                # The group coordinator's record did not give us this partition at the last
                # check: a new sink would fence its real owner. Ask again next time.
                logger.warning(
                    "shard %d: the group's record does not give this worker the partition; "
                    "not starting it again yet",
                    slot.partition,
                )
                asyncio.get_running_loop().call_later(
                    coordinator_fenced_retry_s(self._settings), self._unfence, slot
                )
                return
            logger.warning(
                "shard %d: the partition is still ours after the fence; starting it again", slot.partition
            )
            slot.fenced = False
            slot.wake.set()

    def _wake_later(self, slot: Slot, delay: float) -> None:
        slot.not_before = self._clock() + delay
        asyncio.get_running_loop().call_later(delay, slot.wake.set)

    async def _stop_shard(self, slot: Slot) -> None:
        shard, task = slot.shard, slot.task
        slot.shard, slot.task = None, None
        if shard is None or task is None:
            return
        if not task.done():
            await shard.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), self._settings.drain_timeout_s + STOP_MARGIN_S)
            except TimeoutError:
                logger.error("shard %d did not stop in time; cancelling it", slot.partition)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception as exc:
                logger.error("shard %d ended with %r", slot.partition, exc)
        if shard.fenced:
            slot.fenced = True
        logger.info("shard %d stopped", slot.partition)
        self._owned_changed()


async def _until_connected(shard: Shard, slot: Slot) -> bool:
    """Wait for the shard's first connection or the slot's wake; True when connected."""
    if shard.connected.is_set():
        return True
    connected = asyncio.ensure_future(shard.connected.wait())
    woken = asyncio.ensure_future(slot.wake.wait())
    try:
        await asyncio.wait({connected, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()
        woken.cancel()
    return shard.connected.is_set()
