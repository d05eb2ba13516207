"""Run several intrinsic-dimension estimators on one point cloud and collect the answers.

Different estimators see different scales and make different assumptions (Campadelli et al.
2015, "Intrinsic dimension estimation: relevant techniques and a benchmark framework"), so
the spread between them is itself information.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._results import Result

__all__ = ["compare_estimators", "DimensionEstimates", "DEFAULT_METHODS", "resolve_methods"]

#: Estimators run by default by ``shapelens dimension`` and the demo's data section.
DEFAULT_METHODS: tuple[str, ...] = ("twonn", "mle", "gride", "lpca", "corr")

#: Parameters worth showing next to an estimator's name (the rest are on the JSON side).
_SHOWN_PARAMS = ("k", "k1", "k2", "n1", "n2", "discard_fraction", "threshold")


@dataclasses.dataclass(frozen=True)
class DimensionEstimates(Result):
    """Intrinsic dimension of one point cloud by several estimators.

    Fields: ``methods`` (registry names), ``estimators`` (class names), ``params`` (each
    estimator's parameters, as ``get_params()``), ``dimensions``, ``dimension_std`` (NaN
    where the method has no uncertainty), ``n_points`` (distinct points each estimator
    used), ``times`` (seconds per fit), ``n_samples`` and ``ambient_dim`` of the input,
    ``errors`` (per method ``None``, or the message of the error that stopped it when
    :func:`compare_estimators` ran with ``on_error="record"``; its numbers are then NaN).
    """

    methods: tuple[str, ...]
    estimators: tuple[str, ...]
    params: tuple[dict, ...]
    dimensions: np.ndarray
    dimension_std: np.ndarray
    n_points: np.ndarray
    times: np.ndarray
    n_samples: int
    ambient_dim: int
    errors: tuple = ()

    def label(self, i: int) -> str:
        """``"mle (k=20)"``: the method with its main parameters."""
        shown = [f"{k}={v}" for k, v in self.params[i].items() if k in _SHOWN_PARAMS and v is not None]
        return f"{self.methods[i]} ({', '.join(shown)})" if shown else self.methods[i]

    def plot(self, ax=None):
        """Horizontal bars: one per estimator, with ± one standard deviation."""
        ax = self._axes(ax, (7, 0.6 * len(self.methods) + 1.5))
        y = np.arange(len(self.methods))[::-1]
        std = np.where(np.isfinite(self.dimension_std), self.dimension_std, 0.0)
        ax.barh(y, self.dimensions, xerr=std, color="#4c78a8", alpha=0.85, capsize=4, height=0.6)
        for yi, d in zip(y, self.dimensions):
            if np.isfinite(d):
                ax.text(d, yi + 0.33, f" {d:.2f}", va="center", ha="left", fontsize=9)
        ax.set_yticks(y, [self.label(i) for i in range(len(self.methods))])
        ax.set_xlabel("intrinsic dimension")
        ax.set_title(f"Intrinsic dimension of {self.n_samples} points in {self.ambient_dim} dimensions")
        top = self.dimensions + std
        ax.set_xlim(0, max(1.0, float(np.max(top[np.isfinite(top)], initial=0.0))) * 1.18)
        ax.grid(axis="x", alpha=0.3)
        return ax


def resolve_methods(methods: Sequence[str] | str | None) -> list[str]:
    """Expand ``None`` (the defaults), ``"all"`` and comma-separated lists into registry names.

    Raises ValueError naming the unknown methods and listing the available ones.
    """
    from . import registry as dimension

    available = list(dimension.available())
    if methods is None or (not isinstance(methods, str) and len(methods) == 0):
        chosen = [m for m in DEFAULT_METHODS if m in available] or available
        return chosen
    if isinstance(methods, str):
        methods = [methods]
    names: list[str] = []
    for m in methods:
        names.extend(part.strip().lower() for part in str(m).split(",") if part.strip())
    if "all" in names:
        return available
    canonical = {type(dimension.get(a)): a for a in available}
    resolved, unknown = [], []
    for m in names:
        if m in available:
            resolved.append(m)
            continue
        try:  # an alias known to the registry ("2nn", "localpca", ...)
            resolved.append(canonical.get(type(dimension.get(m)), m))
        except ValueError:
            unknown.append(m)
    if unknown:
        raise ValueError(
            f"unknown estimator{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"choose from {', '.join(available)} (or 'all')."
        )
    return list(dict.fromkeys(resolved))  # de-duplicate, keep order


def _make_estimator(name: str, overrides: dict[str, Any]):
    from . import registry as dimension

    base = dimension.get(name)
    accepted = base.get_params() if hasattr(base, "get_params") else {}
    kw = {k: v for k, v in overrides.items() if v is not None and k in accepted}
    return dimension.get(name, **kw) if kw else base


def compare_estimators(
    X: Any,
    methods: Sequence[str] | str | None = None,
    *,
    k: int | None = None,
    seed: int = 0,
    device: str = "auto",
    on_error: str = "raise",
) -> DimensionEstimates:
    """Fit several intrinsic-dimension estimators on ``X`` and collect their estimates.

    ``methods``: registry names of :mod:`shapelens.dimension` (default
    :data:`DEFAULT_METHODS`, ``"all"`` for every registered one). ``k``, ``seed`` and
    ``device`` are passed to the estimators that take them (``k``: MLE and LocalPCA; ``None``
    keeps each estimator's own default). Each estimator cites its paper in its docstring.

    ``on_error="raise"`` (default) lets a ``ValueError`` from an estimator (too few points
    for its parameters, ...) propagate; ``"record"`` stores its message in ``errors`` and
    goes on with the other estimators.
    """
    from .._checks import as_points

    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}.")
    names = resolve_methods(methods)
    Xt = as_points(X, name="X")
    rows = []
    for name in names:
        est = _make_estimator(name, {"k": k, "seed": seed, "device": device})
        params = est.get_params() if hasattr(est, "get_params") else {}
        params = {key: v for key, v in params.items() if key not in ("device", "memory_budget")}
        t0 = time.perf_counter()
        try:
            est.fit(Xt)
        except ValueError as exc:
            if on_error == "raise":
                raise
            nan = float("nan")
            rows.append((name, type(est).__name__, params, nan, nan, 0, time.perf_counter() - t0, str(exc)))
            continue
        elapsed = time.perf_counter() - t0
        rows.append(
            (
                name,
                type(est).__name__,
                params,
                float(est.dimension_),
                float(getattr(est, "dimension_std_", float("nan"))),
                int(getattr(est, "n_points_", Xt.shape[0])),
                elapsed,
                None,
            )
        )
    return DimensionEstimates(
        methods=tuple(r[0] for r in rows),
        estimators=tuple(r[1] for r in rows),
        params=tuple(r[2] for r in rows),
        dimensions=np.array([r[3] for r in rows], dtype=np.float64),
        dimension_std=np.array([r[4] for r in rows], dtype=np.float64),
        n_points=np.array([r[5] for r in rows], dtype=np.int64),
        times=np.array([r[6] for r in rows], dtype=np.float64),
        n_samples=int(Xt.shape[0]),
        ambient_dim=int(Xt.shape[1]),
        errors=tuple(r[7] for r in rows),
    )
