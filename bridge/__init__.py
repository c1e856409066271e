"""presence-bridge: Genesys Cloud agent presence and routing status into Kafka.

The package layout follows the architecture in README "Architecture":
``genesys/`` (auth, REST, sans-I/O protocol, socket shell), ``shard``,
``events``, ``sink``, ``fleet`` and the operational modules (settings,
metrics, health, logging, CLI).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
