"""``python -m xpnet``: the same as the ``xpnet`` command."""

import sys

from .cli import main

sys.exit(main())
