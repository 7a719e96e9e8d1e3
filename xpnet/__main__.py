"""``python -m xpnet``: the same as the ``xpnet`` command."""

import sys

from .tools.cli import main

sys.exit(main())
