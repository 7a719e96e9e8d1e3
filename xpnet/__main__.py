"""``python -m xpnet``: the same as the ``xpnet`` command (the one file outside xpnet/tools that names a tool)."""

import sys

from .tools.cli import main

sys.exit(main())
