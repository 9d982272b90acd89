"""Aligned plain-text tables: the one formatter behind layer summaries, kernel-bank tables and CLI listings."""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

Column = Union[str, tuple[str, str]]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows of dicts as aligned text: a header line, a line of dashes, one line per row.

    Args:
        rows: one mapping per row.
        columns: the keys to show, each a key (its own title) or ``(key, title)``.
    Returns:
        The table, lines joined by newlines. Integers are right-aligned with thousands separators;
        everything else is ``str()``-ed and left-aligned. Trailing blanks are stripped.
    """
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    titles = [c if isinstance(c, str) else c[1] for c in columns]
    numeric = [bool(rows) and _is_int(rows[0][key]) for key in keys]
    cells = [[f"{row[key]:,}" if _is_int(row[key]) else str(row[key]) for key in keys] for row in rows]
    widths = [max([len(title)] + [len(line[i]) for line in cells]) for i, title in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(titles), line(["-" * w for w in widths])] + [line(c) for c in cells])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
