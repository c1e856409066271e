"""Genesys Cloud regions: region domain → login and API base URLs.

For a region domain ``D`` the hosts are ``login.D`` (OAuth),
``api.D`` (REST) and ``streaming.D`` (WebSocket; it is never configured, the
channel's ``connectUri`` names it). Explicit base URLs
(``BRIDGE_GENESYS_LOGIN_URL``, ``BRIDGE_GENESYS_API_URL``) override the
region, e.g. to point at the simulator; then the region is not checked for
that host.

The URL rule lives once, in :func:`host_urls`; :func:`base_urls` adds the
check against the known regions. Both take plain values (the application's
settings are read by the worker, not here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.errors import ConfigError

__all__ = ["REGION_DOMAINS", "BaseUrls", "base_urls", "check_region", "host_urls", "region_urls"]

#: Every Genesys Cloud region domain the official SDKs know: the API hosts of
#: ``PureCloudRegionHosts`` in PureCloudPlatformClientV2 269.0.0
#: (``purecloud_region_hosts.py``), ``api.`` stripped, with the SDK's region
#: name alongside. Three of them use ``.pure.cloud`` siblings the older lists
#: missed: ``mxc1.pure.cloud``, ``apse1.pure.cloud`` and the EU sovereign
#: cloud ``edee1.eusc-pure.cloud``.
REGION_DOMAINS: Final[tuple[str, ...]] = (
    "mypurecloud.com",  # us_east_1
    "mypurecloud.ie",  # eu_west_1
    "mypurecloud.com.au",  # ap_southeast_2
    "mypurecloud.jp",  # ap_northeast_1
    "mypurecloud.de",  # eu_central_1
    "usw2.pure.cloud",  # us_west_2
    "cac1.pure.cloud",  # ca_central_1
    "apne2.pure.cloud",  # ap_northeast_2
    "euw2.pure.cloud",  # eu_west_2
    "aps1.pure.cloud",  # ap_south_1
    "use2.us-gov-pure.cloud",  # us_east_2
    "sae1.pure.cloud",  # sa_east_1
    "mec1.pure.cloud",  # me_central_1
    "apne3.pure.cloud",  # ap_northeast_3
    "euc2.pure.cloud",  # eu_central_2
    "mxc1.pure.cloud",  # mx_central_1
    "apse1.pure.cloud",  # ap_southeast_1
    "edee1.eusc-pure.cloud",  # eusc_de_east_1
)


@dataclass(frozen=True, slots=True)
class BaseUrls:
    """Where to get tokens and where to call the REST API (no trailing slash)."""

    login_url: str
    api_url: str


def check_region(domain: str) -> str:
    """``domain`` if it is a known region, else :class:`ConfigError` listing the known ones."""
    if domain not in REGION_DOMAINS:
        raise ConfigError(
            f"unknown Genesys Cloud region {domain!r}; known regions: {', '.join(REGION_DOMAINS)} "
            "(or set BRIDGE_GENESYS_LOGIN_URL and BRIDGE_GENESYS_API_URL)"
        )
    return domain


def host_urls(region: str, login_url: str | None = None, api_url: str | None = None) -> BaseUrls:
    """The explicit base URLs where given, else ``https://login.<region>`` / ``https://api.<region>``.

    Trailing slashes are dropped; the region is not checked (:func:`base_urls` does that).
    """
    return BaseUrls(
        login_url=(login_url or f"https://login.{region}").rstrip("/"),
        api_url=(api_url or f"https://api.{region}").rstrip("/"),
    )


def region_urls(domain: str) -> BaseUrls:
    """``https://login.D`` and ``https://api.D`` for a known region domain ``D``."""
    return host_urls(check_region(domain))


def base_urls(region: str, *, login_url: str | None = None, api_url: str | None = None) -> BaseUrls:
    """The base URLs to use: explicit overrides win, else the (checked) region's hosts.

    The region is checked unless both URLs are given.
    """
    if not (login_url and api_url):
        check_region(region)
    return host_urls(region, login_url, api_url)
