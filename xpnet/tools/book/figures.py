"""A matplotlib backend for a machine without a display: ``plt.show()`` writes the open figures to PNG files.

``xpnet book run`` selects it (``module://xpnet.tools.book.figures``) when
there is no display, or when ``--out`` names a folder. Each ``show()``
writes every open figure to ``<prefix>-figure<N>.png``, N counting from 1
over the run, says so on stderr, and closes the figures, as closing the
windows of the book's interactive ``show()`` would. Drawing is Agg's.
"""

from __future__ import annotations

import os
import sys

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase

PREFIX_VARIABLE = "XPNET_BOOK_FIGURES"  # set by xpnet book run: the output folder joined with the script's name
written: list[str] = []  # the files written so far


def show(*args, **kwargs):
    """Write every open figure to the next ``<prefix>-figure<N>.png``, then close them all."""
    import matplotlib.pyplot as plt

    prefix = os.environ.get(PREFIX_VARIABLE) or "figure"
    for number in plt.get_fignums():
        path = f"{prefix}-figure{len(written) + 1}.png"
        plt.figure(number).savefig(path)
        written.append(path)
        print(f"xpnet book run: figure written to {path}", file=sys.stderr)
    plt.close("all")
