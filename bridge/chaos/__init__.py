"""``presence-bridge chaos``: a seeded, composed-fault run against a live fleet, and its verdict.

- :mod:`bridge.chaos.schedule`: the seeded, pure fault schedule;
- :mod:`bridge.chaos.faults`: one function per fault;
- :mod:`bridge.chaos.env`: simulator, broker, Toxiproxy and worker processes;
- :mod:`bridge.chaos.checker`: the invariants (the audit's checks plus coverage) and the verdict;
- :mod:`bridge.chaos.runner`: the run's phases;
- :mod:`bridge.chaos.cli`: the subcommand.
"""

__all__: list[str] = []
