"""``python -m bridge.sim``: run the simulator (same options as ``presence-bridge sim``)."""

import sys

from bridge.sim.cli import main

sys.exit(main())
