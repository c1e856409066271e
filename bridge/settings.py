"""Settings: environment variables with the ``BRIDGE_`` prefix (and an optional ``.env``).

Any setting can also come from a file named after its variable (e.g.
``BRIDGE_KAFKA_SASL_PASSWORD``) in the secrets directory,
``/var/run/secrets/presence-bridge`` unless ``BRIDGE_SECRETS_DIR`` names
another: how Kubernetes mounts a Secret as a volume. The environment wins
over a file; the default directory is skipped when it does not exist, an
explicitly named one that does not exist is a :class:`ConfigError`.

The environment names are a contract with the Helm chart (README "Configuration"). Secrets are
``SecretStr``: their ``repr`` and ``str`` are masked, so a logged settings
object never shows them. Every default is a named constant below, written
once; README "Configuration" lists them all (a test keeps it in step).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from bridge.errors import ConfigError
from bridge.genesys.config import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_REST_BUDGET_PER_MIN,
    DEFAULT_REST_MAX_RETRIES,
    DEFAULT_REST_TIMEOUT_S,
)
from bridge.genesys.regions import host_urls

__all__ = [
    "BRIDGE_ID_PLACEHOLDER",
    "DEFAULT_BACKFILL_ENABLED",
    "DEFAULT_BACKFILL_HOLD_S",
    "DEFAULT_BACKFILL_MAX_LOOKBACK_S",
    "DEFAULT_BRIDGE_ID",
    "DEFAULT_KAFKA_TRANSACTION_TIMEOUT_MS",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_SECRETS_DIR",
    "DEFAULT_SHARD_CAPACITY",
    "DEFAULT_TOPIC_GAPS",
    "DEFAULT_TOPIC_SHARD_MAP",
    "ENV_PREFIX",
    "KAFKA_CONFIG_ENV",
    "MAX_AUTO_REPLICATION",
    "OWNED_KAFKA_KEYS",
    "GenesysClient",
    "Settings",
    "load_settings",
]

ENV_PREFIX = "BRIDGE_"
DEFAULT_REGION = "mypurecloud.com"
DEFAULT_BRIDGE_ID = "presence-bridge"
#: Replaced by ``BRIDGE_ID`` in topic names, so that every fleet has its own control topic.
BRIDGE_ID_PLACEHOLDER = "<bridge-id>"
#: One control topic per fleet: ``presence-bridge.shard-map.v1`` for the default id.
DEFAULT_TOPIC_SHARD_MAP = f"{BRIDGE_ID_PLACEHOLDER}.shard-map.v1"
#: Genesys allows 1,000 topics per channel; one combined topic per agent.
DEFAULT_SHARD_CAPACITY = 1000
MAX_SHARD_CAPACITY = 1000
DEFAULT_METRICS_PORT = 9464
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_ROSTER_REFRESH_S = 300.0
#: Genesys sends a heartbeat about every 30 s.
DEFAULT_HEARTBEAT_INTERVAL_S = 30.0
#: Reconnect after 2.5 heartbeat intervals of silence whatever the pings (a backstop).
DEFAULT_HEARTBEAT_TIMEOUT_FACTOR = 2.5
#: Our own ``{"message": "ping"}`` after this much silence (no frame of any
#: kind) on a socket; no frame within ``DEFAULT_PONG_TIMEOUT_S`` after it →
#: reconnect and reconcile. So a socket that stays open while nothing reaches
#: us (TCP intact, frames lost) is given up at most 3 + 5 s (+ up to two
#: 0.25 s watchdog ticks) after its last frame, and connected again (reconnect
#: backoff of at most 0.5 s first) within 10 s. Genesys documents the
#: ping (answered with a ``channel.metadata`` pong) and tells clients to
#: reconnect when neither heartbeat nor pong arrives; it publishes no rate
#: limit for client messages on the notification socket that we could find.
#: This rate is small whatever that limit is: a busy socket is never pinged,
#: an idle one at most once per 3 s (0.33 pings/s, about 10 per 30 s
#: heartbeat interval).
DEFAULT_PING_INTERVAL_S = 3.0
DEFAULT_PONG_TIMEOUT_S = 5.0
#: Every owned agent is read again from Genesys once per this interval
#: (bridge/sweep.py): anything the stream lost is corrected within it.
DEFAULT_SWEEP_INTERVAL_S = 900.0
#: Reconnect delays are capped between 60 and 90 s (the shard lifecycle).
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_BACKOFF_RESET_S = 60.0
#: Re-subscribe this long before a channel's ``expires`` (channels live 24 h).
DEFAULT_CHANNEL_EXTEND_MARGIN_S = 3600.0
#: The batching window of a transaction, the bulk of the delivery latency:
#: at 1,000 changes/s p99 was 226 ms with 100 ms and 99 ms with 50 ms, for
#: the same throughput under a flood (tests/bench/bench_bridge.py).
DEFAULT_TXN_MAX_MS = 50
#: Large enough that a busy shard is not bound by commit round trips (measured:
#: 500 records per transaction capped one worker near 5,000 changes/s).
DEFAULT_TXN_MAX_RECORDS = 5000
DEFAULT_DRAIN_TIMEOUT_S = 8.0
DEFAULT_TOPIC_PARTITIONS = 6
#: None: ``min(MAX_AUTO_REPLICATION, brokers in the cluster's metadata)``, so one
#: broker on a laptop and three replicas on a cluster, without a setting.
DEFAULT_TOPIC_REPLICATION: int | None = None
MAX_AUTO_REPLICATION = 3
#: None: ``max(1, replication factor - 1)`` (2 of 3: one broker may be down
#: while acks=all writes go on; 1 on a single broker).
DEFAULT_TOPIC_MIN_INSYNC: int | None = None
#: Create missing topics; False checks that a platform team provisioned them.
DEFAULT_TOPIC_CREATE = True
#: How long the transaction coordinator keeps a silent producer's open
#: transaction: the broker outage a transaction survives without an abort.
#: Well above the 20 s outages the sink is tested against, well below the
#: broker's default ``transaction.max.timeout.ms`` of 15 min.
DEFAULT_KAFKA_TRANSACTION_TIMEOUT_MS = 60_000
#: librdkafka settings the bridge sets itself (its delivery promise rests on
#: them) or that have a setting of their own: refused in BRIDGE_KAFKA_CONFIG.
OWNED_KAFKA_KEYS: dict[str, str] = {
    "bootstrap.servers": "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    "metadata.broker.list": "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    "security.protocol": "BRIDGE_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "BRIDGE_KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "BRIDGE_KAFKA_SASL_MECHANISM",
    "sasl.username": "BRIDGE_KAFKA_SASL_USERNAME",
    "sasl.password": "BRIDGE_KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "BRIDGE_KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "BRIDGE_KAFKA_SSL_KEY_LOCATION",
    "ssl.key.password": "BRIDGE_KAFKA_SSL_KEY_PASSWORD",
    "transactional.id": "the bridge (<bridge-id>-shard-<p>, <bridge-id>-coordinator)",
    "transaction.timeout.ms": "BRIDGE_KAFKA_TRANSACTION_TIMEOUT_MS",
    "enable.idempotence": "the bridge (always true)",
    "acks": "the bridge (always all)",
    "isolation.level": "the bridge (always read_committed)",
    "group.id": "the bridge (BRIDGE_ID)",
    "group.instance.id": "the bridge (dynamic membership)",
    "group.protocol": "BRIDGE_KAFKA_GROUP_PROTOCOL",
    "partition.assignment.strategy": "the bridge (cooperative-sticky)",
    "session.timeout.ms": "BRIDGE_KAFKA_SESSION_TIMEOUT_MS",
    "heartbeat.interval.ms": "BRIDGE_KAFKA_HEARTBEAT_INTERVAL_MS",
    "enable.auto.commit": "the bridge (never commits offsets)",
    "enable.auto.offset.store": "the bridge (never commits offsets)",
    "auto.offset.reset": "the bridge (reads from the beginning)",
    "enable.partition.eof": "the bridge (detects the end of its reads)",
    "client.id": "the bridge (one per producer and consumer)",
    "logger": "the bridge (Python logging)",
}
KAFKA_CONFIG_ENV = "BRIDGE_KAFKA_CONFIG"
#: Pass-through keys whose values are secrets (kept out of logs like the password).
SECRET_KEY_MARKERS = ("password", "secret", "key.pem", "sasl.oauthbearer.config")
DEFAULT_EVENT_RETENTION_MS = 7 * 24 * 3600 * 1000
#: The broker's default group.min.session.timeout.ms: the fastest takeover it allows
#: (measured: median about 8 s from SIGKILL to the new owner's first record).
DEFAULT_KAFKA_SESSION_TIMEOUT_MS = 6_000
#: Heartbeats per session: the group learns of a rebalance within one interval.
DEFAULT_KAFKA_HEARTBEAT_INTERVAL_MS = 1_000
#: Classic cooperative-sticky: its session timeout is the client's to choose
#: (KIP-848's is the broker's, 45 s minimum unless the broker lowers it).
DEFAULT_KAFKA_GROUP_PROTOCOL: Literal["classic", "consumer"] = "classic"
DEFAULT_MAX_CHANNELS_PER_CLIENT = 20
#: One record per gap of a shard's stream (bridge/records.py ``GapRecord``).
DEFAULT_TOPIC_GAPS = "bridge.gaps.v1"
#: Fill every gap of the stream from Genesys's analytics history.
DEFAULT_BACKFILL_ENABLED = True
#: An agent's post-gap stream records wait at most this long for its backfill;
#: what the backfill finds later is written with ``late: true``.
DEFAULT_BACKFILL_HOLD_S = 10.0
#: A gap that started longer ago than this is not backfilled (``fallback: "too_old"``).
DEFAULT_BACKFILL_MAX_LOOKBACK_S = 3600.0
#: Where the chart's README suggests mounting a Secret volume; one file per setting.
DEFAULT_SECRETS_DIR = "/var/run/secrets/presence-bridge"


class GenesysClient(BaseModel):
    """One OAuth client (credential set); each brings its own channel budget."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    client_id: str = Field(alias="clientId")
    client_secret: SecretStr = Field(alias="clientSecret")


class Settings(BaseSettings):
    """Every setting of the bridge; see README "Configuration"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Genesys Cloud
    genesys_region: str = DEFAULT_REGION
    genesys_client_id: str | None = None
    genesys_client_secret: SecretStr | None = None
    genesys_extra_clients: list[GenesysClient] = Field(default_factory=list)
    genesys_api_url: str | None = None
    genesys_login_url: str | None = None
    genesys_max_channels_per_client: int = Field(DEFAULT_MAX_CHANNELS_PER_CLIENT, ge=2)
    rest_budget_per_min: int = Field(DEFAULT_REST_BUDGET_PER_MIN, ge=1)
    rest_timeout_s: float = Field(DEFAULT_REST_TIMEOUT_S, gt=0)
    rest_max_retries: int = Field(DEFAULT_REST_MAX_RETRIES, ge=0)

    # Kafka
    kafka_bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    #: ``BRIDGE_KAFKA_CONFIG`` (the method ``kafka_config()`` owns the plain name).
    kafka_extra_config: SecretStr | None = Field(
        None, validation_alias=AliasChoices(KAFKA_CONFIG_ENV, "kafka_extra_config")
    )
    kafka_transaction_timeout_ms: int = Field(DEFAULT_KAFKA_TRANSACTION_TIMEOUT_MS, ge=1000)
    kafka_session_timeout_ms: int = Field(DEFAULT_KAFKA_SESSION_TIMEOUT_MS, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(DEFAULT_KAFKA_HEARTBEAT_INTERVAL_MS, ge=100)
    kafka_group_protocol: Literal["classic", "consumer"] = DEFAULT_KAFKA_GROUP_PROTOCOL
    topic_presence: str = "genesys.presence.v1"
    topic_routing_status: str = "genesys.routing-status.v1"
    topic_agent_state: str = "genesys.agent-state.v1"
    topic_dlq: str = "bridge.dlq.v1"
    topic_gaps: str = DEFAULT_TOPIC_GAPS
    #: ``<bridge-id>`` in it is replaced by :attr:`id` (see :meth:`_check`).
    topic_shard_map: str = DEFAULT_TOPIC_SHARD_MAP
    topic_partitions: int = Field(DEFAULT_TOPIC_PARTITIONS, ge=1)
    topic_replication_factor: int | None = Field(DEFAULT_TOPIC_REPLICATION, ge=1)
    topic_min_insync_replicas: int | None = Field(DEFAULT_TOPIC_MIN_INSYNC, ge=1)
    topic_create: bool = DEFAULT_TOPIC_CREATE
    event_retention_ms: int = DEFAULT_EVENT_RETENTION_MS
    txn_max_ms: int = Field(DEFAULT_TXN_MAX_MS, ge=1)
    txn_max_records: int = Field(DEFAULT_TXN_MAX_RECORDS, ge=1)

    # Bridge
    id: str = Field(DEFAULT_BRIDGE_ID, pattern=r"^[A-Za-z0-9._-]+$")
    shard_capacity: int = Field(DEFAULT_SHARD_CAPACITY, ge=1, le=MAX_SHARD_CAPACITY)
    roster_refresh_s: float = Field(DEFAULT_ROSTER_REFRESH_S, gt=0)
    heartbeat_interval_s: float = Field(DEFAULT_HEARTBEAT_INTERVAL_S, gt=0)
    heartbeat_timeout_factor: float = Field(DEFAULT_HEARTBEAT_TIMEOUT_FACTOR, gt=1)
    ping_interval_s: float = Field(DEFAULT_PING_INTERVAL_S, gt=0)
    pong_timeout_s: float = Field(DEFAULT_PONG_TIMEOUT_S, gt=0)
    sweep_interval_s: float = Field(DEFAULT_SWEEP_INTERVAL_S, ge=0)
    backoff_initial_s: float = Field(DEFAULT_BACKOFF_INITIAL_S, gt=0)
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, gt=0)
    backoff_reset_s: float = Field(DEFAULT_BACKOFF_RESET_S, gt=0)
    channel_extend_margin_s: float = Field(DEFAULT_CHANNEL_EXTEND_MARGIN_S, gt=0)
    drain_timeout_s: float = Field(DEFAULT_DRAIN_TIMEOUT_S, gt=0)
    backfill_enabled: bool = DEFAULT_BACKFILL_ENABLED
    backfill_hold_s: float = Field(DEFAULT_BACKFILL_HOLD_S, ge=0)
    backfill_max_lookback_s: float = Field(DEFAULT_BACKFILL_MAX_LOOKBACK_S, gt=0)

    # Operations
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the pod's metrics port must be reachable
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    #: Read by :func:`load_settings` before the other settings (environment or ``.env`` only).
    secrets_dir: str = DEFAULT_SECRETS_DIR

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.genesys_client_secret is not None and not self.genesys_client_id:
            raise ValueError("BRIDGE_GENESYS_CLIENT_SECRET is set without BRIDGE_GENESYS_CLIENT_ID")
        rf, min_isr = self.topic_replication_factor, self.topic_min_insync_replicas
        if rf is not None and min_isr is not None and min_isr > rf:
            raise ValueError(
                f"BRIDGE_TOPIC_MIN_INSYNC_REPLICAS={min_isr} exceeds BRIDGE_TOPIC_REPLICATION_FACTOR={rf}: "
                "no acks=all write could ever succeed"
            )
        self.kafka_passthrough()  # refuses a malformed or owned pass-through at start
        # The control topic is one fleet's alone: by default its name derives from the id.
        self.topic_shard_map = self.topic_shard_map.replace(BRIDGE_ID_PLACEHOLDER, self.id)
        return self

    def kafka_passthrough(self) -> dict[str, str]:
        """``BRIDGE_KAFKA_CONFIG``: other librdkafka settings, applied to every client last.

        A JSON object of scalar values (booleans become ``true``/``false``).
        Raises ``ValueError`` (one line) for a key in :data:`OWNED_KAFKA_KEYS`.
        """
        if self.kafka_extra_config is None:
            return {}
        try:
            data = json.loads(self.kafka_extra_config.get_secret_value())
        except json.JSONDecodeError:
            raise ValueError("BRIDGE_KAFKA_CONFIG is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("BRIDGE_KAFKA_CONFIG must be a JSON object of librdkafka settings")
        out: dict[str, str] = {}
        for key, value in data.items():
            owner = OWNED_KAFKA_KEYS.get(key)
            if owner is not None:
                raise ValueError(f"BRIDGE_KAFKA_CONFIG may not set {key}: it belongs to {owner}")
            if isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                out[key] = str(value)
            else:
                raise ValueError(f"BRIDGE_KAFKA_CONFIG[{key!r}] must be a string, number or boolean")
        return out

    def kafka_secrets(self) -> list[str]:
        """Every Kafka secret value (to keep out of logs)."""
        values = [
            v.get_secret_value()
            for v in (self.kafka_sasl_password, self.kafka_ssl_key_password)
            if v is not None
        ]
        values += [
            v for k, v in self.kafka_passthrough().items() if any(m in k for m in SECRET_KEY_MARKERS) and v
        ]
        return values

    @property
    def login_url(self) -> str:
        """The OAuth base URL: the explicit override or ``https://login.<region>``."""
        return host_urls(self.genesys_region, self.genesys_login_url, self.genesys_api_url).login_url

    @property
    def api_url(self) -> str:
        """The REST base URL: the explicit override or ``https://api.<region>``."""
        return host_urls(self.genesys_region, self.genesys_login_url, self.genesys_api_url).api_url

    def clients(self) -> list[GenesysClient]:
        """Every configured OAuth client, the primary one first."""
        primary: list[GenesysClient] = []
        if self.genesys_client_id and self.genesys_client_secret is not None:
            primary.append(
                GenesysClient(client_id=self.genesys_client_id, client_secret=self.genesys_client_secret)
            )
        return primary + list(self.genesys_extra_clients)

    def kafka_config(self) -> dict[str, str]:
        """librdkafka client settings shared by producers, consumers and the admin client."""
        conf = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        if self.kafka_ssl_certificate_location:
            conf["ssl.certificate.location"] = self.kafka_ssl_certificate_location
        if self.kafka_ssl_key_location:
            conf["ssl.key.location"] = self.kafka_ssl_key_location
        if self.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf.update(self.kafka_passthrough())
        return conf


class _SecretsLocation(BaseSettings):
    """The one setting needed before the others: where the secret files are."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    secrets_dir: str = DEFAULT_SECRETS_DIR


def _secrets_dir() -> Path | None:
    """The secrets directory to read, or None when the default one is absent."""
    location = _SecretsLocation()
    path = Path(location.secrets_dir)
    if path.is_dir():
        return path
    if "secrets_dir" in location.model_fields_set:
        raise ConfigError(f"{ENV_PREFIX}SECRETS_DIR: {path} is not a directory")
    return None


def load_settings(**overrides: object) -> Settings:
    """Read the settings (environment, ``.env``, then secret files), mapping validation
    failures to :class:`ConfigError` without secret values."""
    secrets_dir = _secrets_dir()
    try:
        return Settings(_secrets_dir=secrets_dir, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # a JSON value (env or file) that does not parse
        raise ConfigError(f"invalid settings: {_env_name(str(exc))}: not valid JSON") from None


def _env_name(message: str) -> str:
    """The variable named by a pydantic-settings parse error (which names the field)."""
    m = re.search(r'field "(\w+)"', message)
    if m is None or m.group(1) not in Settings.model_fields:
        return "a setting"
    alias = Settings.model_fields[m.group(1)].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        alias = alias.choices[0]
    return alias.upper() if isinstance(alias, str) else f"{ENV_PREFIX}{m.group(1).upper()}"


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One validation problem: the variable (when there is one) and pydantic's message."""
    msg = msg.removeprefix("Value error, ")
    if not loc:
        return msg
    return f"{ENV_PREFIX}{'_'.join(str(p) for p in loc).upper()}: {msg}"
