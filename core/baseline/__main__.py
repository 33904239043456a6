"""``python -m baseline``: the ``baseline`` command."""

import sys

from baseline.cli import main

sys.exit(main())
