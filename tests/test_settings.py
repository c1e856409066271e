"""Settings: env names (a contract with the chart), defaults, secrets."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from bridge import log
from bridge.errors import ConfigError
from bridge.settings import DEFAULT_SECRETS_DIR, Settings, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_documents_every_setting_with_its_default() -> None:
    """Every setting has a README row whose default matches the code."""
    text = README.read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            alias = str(alias.choices[0])
        env = alias.upper() if isinstance(alias, str) else f"BRIDGE_{name.upper()}"
        row = re.search(rf"^\| `{env}` \| (.+?) \|", text, re.MULTILINE)
        assert row, f"{env} missing from README Configuration"
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        documented = row.group(1).strip("`")
        if default is None:
            assert documented == "—", env
        else:
            assert documented == str(default), f"{env}: README says {documented}, code {default}"


def test_secrets_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings object printed or logged never shows its secrets."""
    monkeypatch.setenv("BRIDGE_GENESYS_CLIENT_ID", "cid")
    monkeypatch.setenv("BRIDGE_GENESYS_CLIENT_SECRET", "very-secret-value")
    monkeypatch.setenv("BRIDGE_KAFKA_SASL_PASSWORD", "kafka-pass-123")
    monkeypatch.setenv(
        "BRIDGE_GENESYS_EXTRA_CLIENTS", '[{"clientId": "c2", "clientSecret": "second-secret"}]'
    )
    s = Settings()
    text = repr(s) + str(s)
    for secret in ("very-secret-value", "kafka-pass-123", "second-secret"):
        assert secret not in text
    assert [c.client_id for c in s.clients()] == ["cid", "c2"]
    assert s.kafka_config()["sasl.password"] == "kafka-pass-123"


def test_region_and_overrides() -> None:
    """Region domains give login./api. hosts; explicit URLs win."""
    s = Settings(genesys_region="mypurecloud.ie")
    assert s.login_url == "https://login.mypurecloud.ie"
    assert s.api_url == "https://api.mypurecloud.ie"
    s2 = Settings(genesys_api_url="http://127.0.0.1:8080/", genesys_login_url="http://127.0.0.1:8080")
    assert s2.api_url == "http://127.0.0.1:8080"
    assert s2.login_url == "http://127.0.0.1:8080"


def test_invalid_settings_raise_config_error_without_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad values give a ConfigError naming the variable, not echoing the input."""
    monkeypatch.setenv("BRIDGE_SHARD_CAPACITY", "5000")
    with pytest.raises(ConfigError, match="BRIDGE_SHARD_CAPACITY"):
        load_settings()
    monkeypatch.delenv("BRIDGE_SHARD_CAPACITY")
    monkeypatch.setenv(
        "BRIDGE_GENESYS_EXTRA_CLIENTS", '[{"clientId": "x", "clientSecret": 5, "oops": "leak-me-please"}]'
    )
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "leak-me-please" not in str(excinfo.value)


def test_secret_from_a_mounted_file_is_read_and_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file named after the variable in BRIDGE_SECRETS_DIR sets it; logs and repr never show it."""
    (tmp_path / "BRIDGE_KAFKA_SASL_PASSWORD").write_text("file-password-789\n")
    (tmp_path / "BRIDGE_GENESYS_CLIENT_ID").write_text("cid-from-file")
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("BRIDGE_GENESYS_CLIENT_ID", "cid-from-env")
    s = load_settings()
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "file-password-789"
    assert s.genesys_client_id == "cid-from-env", "the environment wins over a file"
    stream = io.StringIO()
    log.configure_logging("DEBUG", "json", stream=stream)
    try:
        logging.getLogger("bridge.test").info("settings %s %r", s, s)
        load_settings()  # pydantic-settings' own debug logging of the secret files
    finally:
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if not getattr(h, "_bridge", False)
        ]
    assert "settings" in stream.getvalue()
    assert "file-password-789" not in stream.getvalue()


def test_a_malformed_secret_file_fails_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret file that does not validate gives a ConfigError naming the variable only."""
    (tmp_path / "BRIDGE_GENESYS_EXTRA_CLIENTS").write_text('[{"clientId": "x", "clientSecret": "leak-me-7"')
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="BRIDGE_GENESYS_EXTRA_CLIENTS") as excinfo:
        load_settings()
    assert "leak-me-7" not in str(excinfo.value)


def test_secrets_dir_default_is_optional_an_explicit_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default directory may be absent (laptops); a named one that is missing is an error."""
    assert not Path(DEFAULT_SECRETS_DIR).exists()
    assert load_settings().secrets_dir == DEFAULT_SECRETS_DIR
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="BRIDGE_SECRETS_DIR"):
        load_settings()


def test_secret_files_in_the_kubernetes_volume_layout_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret volume's files are symlinks through ..data into a timestamped dir; they count."""
    real = tmp_path / "..2026_12_01_10_00_00.000000001"
    real.mkdir()
    (real / "BRIDGE_KAFKA_SSL_KEY_PASSWORD").write_text("key-pass-4567")
    (tmp_path / "..data").symlink_to(real.name)
    (tmp_path / "BRIDGE_KAFKA_SSL_KEY_PASSWORD").symlink_to("..data/BRIDGE_KAFKA_SSL_KEY_PASSWORD")
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path))
    s = load_settings()
    assert s.kafka_ssl_key_password is not None
    assert s.kafka_ssl_key_password.get_secret_value() == "key-pass-4567"
    assert "key-pass-4567" not in repr(s)


def test_kafka_config_passes_other_librdkafka_settings_through() -> None:
    """BRIDGE_KAFKA_CONFIG reaches every client; booleans and numbers become librdkafka strings."""
    s = load_settings(
        BRIDGE_KAFKA_CONFIG='{"client.rack": "eu-1a", "socket.keepalive.enable": true, "x.ms": 5}'
    )
    conf = s.kafka_config()
    assert (conf["client.rack"], conf["socket.keepalive.enable"], conf["x.ms"]) == ("eu-1a", "true", "5")


@pytest.mark.parametrize("key", ["transactional.id", "isolation.level", "enable.idempotence", "group.id"])
def test_kafka_config_refuses_keys_the_bridge_owns_in_one_line(key: str) -> None:
    """An owned key is a ConfigError at start, one line naming the key."""
    with pytest.raises(ConfigError) as err:
        load_settings(BRIDGE_KAFKA_CONFIG=f'{{"{key}": "x"}}')
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_kafka_config_secrets_are_masked_and_listed() -> None:
    """The pass-through's repr is masked; its secret-looking values and the key password are secrets."""
    s = Settings(
        kafka_extra_config='{"sasl.oauthbearer.client.secret": "oidc-secret-1"}',
        kafka_ssl_key_password="key-pass-2",
    )
    assert "oidc-secret-1" not in repr(s)
    assert set(s.kafka_secrets()) == {"oidc-secret-1", "key-pass-2"}
    assert s.kafka_config()["ssl.key.password"] == "key-pass-2"


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    """No acks=all write could succeed: refused at start."""
    with pytest.raises(ConfigError, match="MIN_INSYNC"):
        load_settings(topic_replication_factor=2, topic_min_insync_replicas=3)


def test_the_control_topic_derives_from_the_bridge_id() -> None:
    """One control topic per fleet by default; an explicit name is kept as given."""
    assert Settings(id="org-a").topic_shard_map == "org-a.shard-map.v1"
    assert Settings().topic_shard_map == "presence-bridge.shard-map.v1"
    assert Settings(id="org-b", topic_shard_map="ctl.<bridge-id>").topic_shard_map == "ctl.org-b"
    assert Settings(id="org-c", topic_shard_map="shared-map").topic_shard_map == "shared-map"
