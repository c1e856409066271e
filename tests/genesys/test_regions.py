"""Region domain → base URLs, with explicit overrides winning."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.genesys.regions import REGION_DOMAINS, BaseUrls, base_urls, region_urls


@pytest.mark.parametrize("domain", REGION_DOMAINS)
def test_every_region_maps_to_login_and_api_hosts(domain: str) -> None:
    """Each known region gives https://login.D and https://api.D."""
    assert region_urls(domain) == BaseUrls(f"https://login.{domain}", f"https://api.{domain}")


def test_unknown_region_lists_known_ones() -> None:
    """An unknown region is a ConfigError naming the known regions."""
    with pytest.raises(ConfigError) as info:
        region_urls("mypurecloud.moon")
    assert "mypurecloud.moon" in str(info.value)
    assert "mypurecloud.ie" in str(info.value) and "use2.us-gov-pure.cloud" in str(info.value)


def test_settings_region_is_checked() -> None:
    """base_urls rejects an unknown region when a host is not overridden."""
    with pytest.raises(ConfigError):
        base_urls("nowhere.example", api_url="http://x")


def test_explicit_urls_win() -> None:
    """Explicit login and API URLs override the region (which is then not checked)."""
    urls = base_urls("nowhere.example", login_url="http://127.0.0.1:8080/", api_url="http://127.0.0.1:8080")
    assert urls == BaseUrls("http://127.0.0.1:8080", "http://127.0.0.1:8080")


@pytest.mark.parametrize("domain", ["mxc1.pure.cloud", "apse1.pure.cloud", "edee1.eusc-pure.cloud"])
def test_regions_the_sdk_knows_are_accepted(domain: str) -> None:
    """Hosts in the SDK's PureCloudRegionHosts that older lists missed start the bridge."""
    assert region_urls(domain).api_url == f"https://api.{domain}"
