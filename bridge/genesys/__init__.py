"""The Genesys Cloud client layer (README "Architecture"): regions, auth, REST, protocol, socket.

* :mod:`~bridge.genesys.config` — the plain values the layer is configured with.
* :mod:`~bridge.genesys.regions` — region domain → base URLs, overrides.
* :mod:`~bridge.genesys.retry` — retry policy as data (classify, full-jitter delays).
* :mod:`~bridge.genesys.http` — HTTP status → error, ``Retry-After``.
* :mod:`~bridge.genesys.protocol` — sans-I/O notification frames → typed messages.
* :mod:`~bridge.genesys.auth` — OAuth client credentials as an async ``httpx.Auth``.
* :mod:`~bridge.genesys.models` — the REST replies as pydantic models.
* :mod:`~bridge.genesys.budget` — the request budget and the per-endpoint allowances.
* :mod:`~bridge.genesys.rest` — the REST client (budget, retries, typed replies).
* :mod:`~bridge.genesys.socket` — the thin aiohttp shell around one notification socket.

The package re-exports nothing: import from the modules. Importing one module
loads only what it needs, so the sans-I/O :mod:`~bridge.genesys.protocol`
comes without httpx or aiohttp.
"""

from __future__ import annotations

__all__: list[str] = []
