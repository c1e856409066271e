"""Genesys Cloud regions: region domain → login and API base URLs.

DESIGN §2: for a region domain ``D`` the hosts are ``login.D`` (OAuth),
``api.D`` (REST) and ``streaming.D`` (WebSocket; it is never configured, the
channel's ``connectUri`` names it). Explicit base URLs
(``BRIDGE_GENESYS_LOGIN_URL``, ``BRIDGE_GENESYS_API_URL``) override the
region, e.g. to point at the simulator; then the region is not checked for
that host.

The URL construction itself lives once, in :attr:`bridge.settings.Settings.login_url`
and :attr:`~bridge.settings.Settings.api_url`; this module adds the list of
known regions and the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.errors import ConfigError
from bridge.settings import Settings

__all__ = ["REGION_DOMAINS", "BaseUrls", "base_urls", "check_region", "region_urls"]

#: Every Genesys Cloud region domain the bridge knows (DESIGN §2).
REGION_DOMAINS: Final[tuple[str, ...]] = (
    "mypurecloud.com",
    "mypurecloud.ie",
    "mypurecloud.de",
    "mypurecloud.jp",
    "mypurecloud.com.au",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "euw2.pure.cloud",
    "euc2.pure.cloud",
    "aps1.pure.cloud",
    "apne2.pure.cloud",
    "apne3.pure.cloud",
    "sae1.pure.cloud",
    "mec1.pure.cloud",
    "use2.us-gov-pure.cloud",
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


def region_urls(domain: str) -> BaseUrls:
    """``https://login.D`` and ``https://api.D`` for a known region domain ``D``."""
    # model_construct: the URL rule of Settings without reading the environment.
    return base_urls(Settings.model_construct(genesys_region=check_region(domain)))


def base_urls(settings: Settings) -> BaseUrls:
    """The base URLs of ``settings``: explicit overrides win, else the (checked) region's hosts."""
    if not (settings.genesys_login_url and settings.genesys_api_url):
        check_region(settings.genesys_region)
    return BaseUrls(login_url=settings.login_url, api_url=settings.api_url)
