"""The book's chapter scripts, run unchanged on xpnet: ``xpnet book run path/to/script.py [args]``.

``shim/`` holds packages named like the book's, ``common`` and ``dataset``,
whose modules define every public name of the book's modules from xpnet's
own classes and functions; :mod:`xpnet.tools.book.run` puts that folder in
front of ``sys.path`` and runs a script as ``__main__``. The networks and
optimizers of the book's ``common`` are in :mod:`xpnet.tools.book.host`:
they compute on ``XPNET_DEVICE`` and hand the script NumPy.
"""

from pathlib import Path

SHIM = Path(__file__).resolve().parent / "shim"  # the folder that holds common/ and dataset/
