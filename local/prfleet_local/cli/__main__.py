"""`python -m prfleet_local.cli` is the `prfleet` command."""

import sys

from prfleet_local.cli import main

sys.exit(main())
