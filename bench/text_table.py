"""Tables as plain text for the terminal, without pandas' formatter.

``DataFrame.to_string`` takes ~0.4 s for 10,000 rows (and importing pandas ~0.3 s more), which
was most of ``bench plan`` of a large matrix and a good part of ``bench collect``. This lays the
same table out the same way (every row and column, right-aligned, floats to four decimals) in a
few tens of milliseconds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def cell_text(value: Any) -> str:
    """One value as the table shows it: floats to four decimals, NaN as NaN, the rest as str()."""
    kind = type(value)
    if kind is str or kind is int:
        return str(value)
    if kind is float or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        number = float(value)
        return "NaN" if math.isnan(number) else f"{number:.4f}"
    return str(value)


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Right-aligned columns, one space apart, a header line first."""
    texts = [[cell_text(v) for v in row] for row in rows]
    widths = [len(str(c)) for c in columns]
    for row in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, row)]
    lines = [" ".join(str(c).rjust(w) for c, w in zip(columns, widths))]
    lines += [" ".join(t.rjust(w) for t, w in zip(row, widths)) for row in texts]
    return "\n".join(lines)


def frame_text(frame: "pd.DataFrame") -> str:
    """A DataFrame through :func:`format_table` (no index); empty frames say so as pandas does."""
    if frame.empty:
        return f"Empty DataFrame\nColumns: {list(frame.columns)}"
    return format_table([str(c) for c in frame.columns], frame.itertuples(index=False, name=None))
