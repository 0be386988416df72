"""JSON that every reader accepts: non-finite floats (NaN, +-inf) are written as ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which RFC 8259 does not allow (JavaScript's
``JSON.parse``, ``jq`` and most other readers refuse the whole file). Results, summaries and metrics go
through :func:`dumps` / :func:`dump`, which replace them with ``null`` ("no value": a mean over no samples, a
rate over no lookups) and then refuse any that is left (``allow_nan=False``).
"""

from __future__ import annotations

import math
from typing import IO, Any

__all__ = ["finite", "dumps", "dump"]


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return finite(obj.item())
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)`` with ``allow_nan=False``."""
    import json

    return json.dumps(finite(obj), allow_nan=False, **kw)


def dump(obj: Any, fp: IO[str], **kw: Any) -> None:
    """``json.dump`` of :func:`finite` ``(obj)`` with ``allow_nan=False``."""
    import json

    json.dump(finite(obj), fp, allow_nan=False, **kw)
