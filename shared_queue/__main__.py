"""``python -m shared_queue``: see shared_queue._cli."""

import sys

from ._cli import main

sys.exit(main())
