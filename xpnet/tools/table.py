"""Plain-text tables, as the experiments and the search print them.

    >>> print(format_table([("name", "name", None), ("acc", "accuracy", ".3f")],
    ...                    [{"name": "a", "acc": 0.5}, {"name": "bb", "acc": None}]))
    name  accuracy
    ----  --------
       a     0.500
      bb         -
"""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(columns, rows):
    """A header line, a rule, one line per row, every column right-aligned.

    ``columns``: ``(key, header, format)`` for each column, ``format`` a format
    spec for the values (``".4f"``, ``","``) or None to print them as they
    are. ``rows``: dicts; a missing value or None prints as ``-``.
    """
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value, fmt):
    if value is None:
        return "-"
    return format(value, fmt) if fmt else str(value)
