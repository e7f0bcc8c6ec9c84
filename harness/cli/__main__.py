"""``python -m rospr_harness.cli``: the ``rospr`` command."""

import sys

from rospr_harness.cli import main

sys.exit(main())
