"""Settings: env names (a contract with the chart), defaults, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import Settings, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_documents_every_setting_with_its_default() -> None:
    """Every setting has a README row whose default matches the code."""
    text = README.read_text()
    for name, field in Settings.model_fields.items():
        env = f"BRIDGE_{name.upper()}"
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


def test_the_control_topic_derives_from_the_bridge_id() -> None:
    """One control topic per fleet by default; an explicit name is kept as given."""
    assert Settings(id="org-a").topic_shard_map == "org-a.shard-map.v1"
    assert Settings().topic_shard_map == "presence-bridge.shard-map.v1"
    assert Settings(id="org-b", topic_shard_map="ctl.<bridge-id>").topic_shard_map == "ctl.org-b"
    assert Settings(id="org-c", topic_shard_map="shared-map").topic_shard_map == "shared-map"
