"""Fleet membership and the partition map, through Kafka itself (README "Architecture", control path).

::

    control topic  settings.topic_shard_map  (compacted, one partition per shard)
      key    shard-<p>
      value  {"schema": "bridge.shard-map.v1", "epoch": n, "shard": p,
              "clientIndex": i, "users": [...], "writtenAt": "<ISO-8601>",
              "bridgeId": "<settings.id>"}
      header bridge-id: <settings.id>

The control topic belongs to one fleet (its name derives from ``BRIDGE_ID``
by default). A record whose ``bridgeId`` is another fleet's is never
applied: the workers and the coordinator log an ERROR, count
``bridge_foreign_map_records_total`` and report not ready, and the
coordinator writes nothing while the topic holds another fleet's records
(first come, first served: the fleet that was there keeps working). Records
without ``bridgeId`` (written before it existed) count as this fleet's and
are rewritten with it at the next refresh.

Every worker joins the consumer group ``settings.id`` on the control topic.
Kafka's group protocol decides which worker owns which partitions, i.e.
which shards; workers beyond the shard count are hot standbys.

Membership (:class:`Membership`): one confluent-kafka consumer in its own
thread runs the poll loop and the rebalance callbacks; every event reaches
asyncio through ``loop.call_soon_threadsafe``. The rebalance protocol is
cooperative (classic ``cooperative-sticky`` by default, or KIP-848's
``group.protocol=consumer``): only the partitions that move are revoked.

- on assignment the partition is read from the beginning (no offsets are
  ever committed; the topic is compacted and tiny) up to its end
  (``_PARTITION_EOF``, read_committed); its latest record is the shard's
  member list and OAuth client, and the shard starts with them;
- later records change the member list in place
  (:meth:`~bridge.shard.Shard.set_users`: POST/PUT, no reconnect); a record
  with a lower epoch than one already seen for that partition is ignored;
- on revocation the shard is stopped gracefully (drain, commit) *before*
  the callback returns, so the next owner starts from committed state;
- on loss (``on_lost``: the session expired while this process was frozen
  or cut off, or ``max.poll.interval.ms`` passed) the shards are stopped
  without waiting: another worker owns them already and has fenced their
  sinks. librdkafka then rejoins the group as a new, normal member;
- closing the consumer on shutdown leaves the group at once, so a rolling
  restart never waits out a session timeout.

The coordinator (:class:`Coordinator`) is whoever owns partition 0. On
gaining it, at start and every ``roster_refresh_s`` it lists the roster,
computes the new map with :func:`bridge.assign.assign` from the current one
(read back from the control topic), adds partitions when more shards are
needed, and writes each changed shard's record with a new map epoch. Its
writes are fenced too: a transactional producer with ``transactional.id``
``<id>-coordinator`` whose ``init_transactions()`` on gaining partition 0
fences any previous (possibly frozen, "zombie") coordinator.

A coordinator fenced while this worker still owns partition 0 (or gets it
back after a lost session) coordinates again after
:func:`coordinator_fenced_retry_s`; /readyz fails meanwhile. A shard whose
slot has had no running, connected shard for :data:`SHARD_RESTART_DEADLINE_S`
fails :meth:`Fleet.liveness` (/healthz). A partition given back after a lost
session keeps its running shard, unless that shard was fenced meanwhile:
then a new one starts.

Failure detection bounds takeover: with the classic protocol the client's
``session.timeout.ms`` (``BRIDGE_KAFKA_SESSION_TIMEOUT_MS``) must lie within
the broker's ``group.min.session.timeout.ms`` (6 s default) and
``group.max.session.timeout.ms``; with KIP-848 the broker's
``group.consumer.session.timeout.ms`` rules (45 s minimum by default).

The package is split by role: :mod:`bridge.fleet.map` (the map records,
their codec and reader), :mod:`bridge.fleet.coordinator`,
:mod:`bridge.fleet.membership` (the group consumer thread),
:mod:`bridge.fleet.slot` (an owned partition and the driver of its shard)
and :mod:`bridge.fleet.fleet` (the fleet: slots, coordinator role, health).
"""

from bridge.fleet.coordinator import (
    COORDINATOR_FENCED_SESSIONS,
    COORDINATOR_SUFFIX,
    AdminFactory,
    Coordinator,
    ProducerFactory,
    coordinator_fenced_retry_s,
    coordinator_transactional_id,
)
from bridge.fleet.fleet import SHARD_RESTART_DEADLINE_S, Fleet
from bridge.fleet.map import MAP_SCHEMA, ConsumerFactory, MapRecord, read_map, shard_key
from bridge.fleet.membership import Membership, consumer_config
from bridge.fleet.slot import ShardFactory

__all__ = [
    "COORDINATOR_FENCED_SESSIONS",
    "COORDINATOR_SUFFIX",
    "MAP_SCHEMA",
    "SHARD_RESTART_DEADLINE_S",
    "AdminFactory",
    "ConsumerFactory",
    "Coordinator",
    "Fleet",
    "MapRecord",
    "Membership",
    "ProducerFactory",
    "ShardFactory",
    "consumer_config",
    "coordinator_fenced_retry_s",
    "coordinator_transactional_id",
    "read_map",
    "shard_key",
]
