"""``python -m harness.cli``: the ``rospr`` command."""

import sys

from harness.cli import main

sys.exit(main())
