"""A faithful Genesys Cloud stand-in: REST, streaming WebSocket, limits, faults, ground truth.

Layout: ``config`` (SimConfig), ``org`` (agents, truth, change log),
``history`` (per-agent intervals for the analytics query), ``generator``
(the working day), ``topics``/``channels`` (subscriptions, limits, fan-out),
``frames`` (payloads and wire frames), ``auth``, ``ratelimit``,
``simulator`` (the state object), ``api`` (REST), ``analytics`` (the user
details query, its contract and limits), ``sockets`` (WebSocket), ``admin``
(``/sim/``), ``server`` (app and :func:`run_simulator`; its docstring lists
every choice made where Genesys is undocumented), ``process`` (run as a
child process), ``cli`` (``presence-bridge sim``).
"""

from bridge.sim.config import SimConfig

__all__ = ["SimConfig"]
