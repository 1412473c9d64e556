"""``python -m provex`` runs the CLI."""

import sys

from provex.cli import main

sys.exit(main())
