"""``python -m bridge`` runs the console script."""

import sys

from bridge.cli import main

sys.exit(main())
