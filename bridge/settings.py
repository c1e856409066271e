"""Settings: environment variables with the ``BRIDGE_`` prefix (and an optional ``.env``).

The names in DESIGN §6 are a contract with the Helm chart. Secrets are
``SecretStr``: their ``repr`` and ``str`` are masked, so a logged settings
object never shows them. Every default is a named constant below, written
once; README "Configuration" lists them all (a test keeps it in step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.errors import ConfigError

__all__ = [
    "BRIDGE_ID_PLACEHOLDER",
    "DEFAULT_BRIDGE_ID",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_SHARD_CAPACITY",
    "DEFAULT_TOPIC_SHARD_MAP",
    "ENV_PREFIX",
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
#: DESIGN §3: reconnect after 2.5 heartbeat intervals of silence.
DEFAULT_HEARTBEAT_TIMEOUT_FACTOR = 2.5
DEFAULT_PING_INTERVAL_S = 30.0
DEFAULT_PONG_TIMEOUT_S = 10.0
DEFAULT_BACKOFF_INITIAL_S = 0.5
#: DESIGN §3: capped at 60-90 s.
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_BACKOFF_RESET_S = 60.0
#: Re-subscribe this long before a channel's ``expires`` (channels live 24 h).
DEFAULT_CHANNEL_EXTEND_MARGIN_S = 3600.0
#: Genesys allows about 300 requests/min per token; keep a margin for other callers.
DEFAULT_REST_BUDGET_PER_MIN = 240
DEFAULT_REST_TIMEOUT_S = 15.0
DEFAULT_REST_MAX_RETRIES = 6
#: The batching window of a transaction, the bulk of the delivery latency:
#: at 1,000 changes/s p99 was 226 ms with 100 ms and 99 ms with 50 ms, for
#: the same throughput under a flood (tests/bench/bench_bridge.py).
DEFAULT_TXN_MAX_MS = 50
#: Large enough that a busy shard is not bound by commit round trips (measured:
#: 500 records per transaction capped one worker near 5,000 changes/s).
DEFAULT_TXN_MAX_RECORDS = 5000
DEFAULT_DRAIN_TIMEOUT_S = 8.0
DEFAULT_TOPIC_PARTITIONS = 6
DEFAULT_TOPIC_REPLICATION = 1
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
    kafka_session_timeout_ms: int = Field(DEFAULT_KAFKA_SESSION_TIMEOUT_MS, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(DEFAULT_KAFKA_HEARTBEAT_INTERVAL_MS, ge=100)
    kafka_group_protocol: Literal["classic", "consumer"] = DEFAULT_KAFKA_GROUP_PROTOCOL
    topic_presence: str = "genesys.presence.v1"
    topic_routing_status: str = "genesys.routing-status.v1"
    topic_agent_state: str = "genesys.agent-state.v1"
    topic_dlq: str = "bridge.dlq.v1"
    #: ``<bridge-id>`` in it is replaced by :attr:`id` (see :meth:`_check`).
    topic_shard_map: str = DEFAULT_TOPIC_SHARD_MAP
    topic_partitions: int = Field(DEFAULT_TOPIC_PARTITIONS, ge=1)
    topic_replication_factor: int = Field(DEFAULT_TOPIC_REPLICATION, ge=1)
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
    backoff_initial_s: float = Field(DEFAULT_BACKOFF_INITIAL_S, gt=0)
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, gt=0)
    backoff_reset_s: float = Field(DEFAULT_BACKOFF_RESET_S, gt=0)
    channel_extend_margin_s: float = Field(DEFAULT_CHANNEL_EXTEND_MARGIN_S, gt=0)
    drain_timeout_s: float = Field(DEFAULT_DRAIN_TIMEOUT_S, gt=0)

    # Operations
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the pod's metrics port must be reachable
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.genesys_client_secret is not None and not self.genesys_client_id:
            raise ValueError("BRIDGE_GENESYS_CLIENT_SECRET is set without BRIDGE_GENESYS_CLIENT_ID")
        # The control topic is one fleet's alone: by default its name derives from the id.
        self.topic_shard_map = self.topic_shard_map.replace(BRIDGE_ID_PLACEHOLDER, self.id)
        return self

    @property
    def login_url(self) -> str:
        """The OAuth base URL: the explicit override or ``https://login.<region>``."""
        return (self.genesys_login_url or f"https://login.{self.genesys_region}").rstrip("/")

    @property
    def api_url(self) -> str:
        """The REST base URL: the explicit override or ``https://api.<region>``."""
        return (self.genesys_api_url or f"https://api.{self.genesys_region}").rstrip("/")

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
        return conf


def load_settings(**overrides: object) -> Settings:
    """Read the settings, mapping validation failures to :class:`ConfigError` without secret values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
