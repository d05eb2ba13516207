"""Base for result objects: frozen dataclasses with a JSON-safe ``to_dict``."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Convert numpy/torch values, tuples and dataclasses into JSON-safe Python objects.

    Non-finite floats become ``None`` (JSON has no NaN) except +/-inf, which become the
    strings ``"inf"``/``"-inf"`` so that infinite deaths in diagrams stay explicit.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class Result:
    """Mixin for frozen dataclass results: ``to_dict()`` returns JSON-safe data."""

    @staticmethod
    def _axes(ax, figsize):
        """``ax``, or fresh axes on a new matplotlib ``Figure`` (no pyplot global state)."""
        if ax is not None:
            return ax
        from matplotlib.figure import Figure

        return Figure(figsize=figsize).add_subplot()

    def to_dict(self) -> dict:
        out = jsonable(self)
        out["type"] = type(self).__name__
        return out
