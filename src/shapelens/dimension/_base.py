"""Shared machinery of the intrinsic-dimension estimators: validation, duplicates, kNN."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._checks import as_points, warn
from ..neighbors import knn

__all__ = ["DimensionEstimator", "distinct_points", "neighbour_distances"]


class DimensionEstimator(BaseEstimator):
    """Base of the scikit-learn style estimators.

    ``__init__`` stores parameters only; ``fit(X)`` returns ``self`` and sets
    ``dimension_`` (float), ``dimension_std_`` (float, ``nan`` where the method has no
    uncertainty), ``n_points_`` (points used after dropping duplicates) and
    ``n_duplicates_`` (points dropped).
    """

    #: the fewest distinct points the method needs, given its parameters
    def _min_points(self) -> int:
        return 3

    def _requirement(self) -> str:
        return f"{type(self).__name__} needs at least {self._min_points()} points"

    def fit(self, X, y=None):
        Xt = as_points(X, name="X", min_points=self._min_points(), why=self._requirement())
        Xt, n_dup = distinct_points(Xt)
        self.n_duplicates_ = n_dup
        self.n_points_ = int(Xt.shape[0])
        self.n_features_in_ = int(Xt.shape[1])
        if Xt.shape[0] == 1:
            warn("all points are identical (constant data): the dimension is 0.")
            self.dimension_ = 0.0
            self.dimension_std_ = 0.0
            self._fit_constant()
            return self
        if Xt.shape[0] < self._min_points():
            raise ValueError(
                f"after dropping {n_dup} duplicate points only {Xt.shape[0]} distinct points remain, "
                f"but {self._requirement()}; pass more distinct points or lower the parameter."
            )
        self._fit(Xt)
        return self

    def _fit(self, X: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_constant(self) -> None:
        """Set method-specific fitted attributes for constant data (default: nothing)."""

    def __float__(self) -> float:
        return float(self.dimension_)


def distinct_points(X: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Drop exact duplicate rows, warning with the count.

    Duplicates put a zero at the first neighbour distance, which sends ratio and
    log-distance estimators to infinity; the distinct points carry the same geometry.

    A random projection screens first: exact duplicates share their projection, so when
    no two projections collide there is nothing to drop, and the exact (sorting, memory
    hungry) ``torch.unique`` runs only when some do.
    """
    n = X.shape[0]
    g = torch.Generator().manual_seed(0)
    r = torch.randn(X.shape[1], 1, generator=g, dtype=X.dtype).to(X.device)
    proj = (X @ r).flatten()
    if torch.unique(proj).numel() == n:
        return X, 0
    uniq = torch.unique(X, dim=0)
    n_dup = n - int(uniq.shape[0])
    if n_dup and uniq.shape[0] > 1:  # all identical: the caller reports constant data instead
        warn(
            f"{n_dup} of {n} points are exact duplicates of other points; they were dropped "
            "(duplicate points give zero neighbour distances)."
        )
    return (uniq, n_dup) if n_dup else (X, 0)


def neighbour_distances(X: torch.Tensor, k: int, device, memory_budget) -> np.ndarray:
    """Distances (N, k) to the k nearest other points, as float64 numpy."""
    return knn(X, k, device=device, memory_budget=memory_budget).distances.numpy()


def finite_or_raise(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is not finite ({value}); this should not happen for distinct points, please report it with the data.")
    return float(value)
