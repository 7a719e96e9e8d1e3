"""The folder ``xpnet book run`` puts first on ``sys.path``: ``common`` and ``dataset``, named like the book's."""
