"""``python -m geta.cli`` runs the ``geta`` command."""

import sys

from geta.cli import main

sys.exit(main())
