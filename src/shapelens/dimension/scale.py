"""Intrinsic dimension as a function of scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import as_points, check_int
from .._results import Result
from ._base import distinct_points
from .estimators import GRIDE, twonn_from_distances
from ..neighbors import knn

__all__ = ["ScaleCurve", "scale_curve"]


@dataclass(frozen=True)
class ScaleCurve(Result):
    """Intrinsic dimension against length scale.

    ``scales`` are mean neighbour distances (the length scale each estimate sees),
    ``ranks`` the neighbour rank (GRIDE's ``n2``) or the subsample size (decimation).
    """

    method: str
    scales: np.ndarray
    ranks: np.ndarray
    dimensions: np.ndarray
    dimension_std: np.ndarray
    n_points: int

    def plot(self, ax=None):
        """Dimension against scale (log x axis) with one-standard-error bars."""
        ax = self._axes(ax, (5, 3.5))
        ax.errorbar(self.scales, self.dimensions, yerr=self.dimension_std, marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("scale (mean neighbour distance)")
        ax.set_ylabel("intrinsic dimension")
        ax.set_title(f"ID across scales ({self.method})")
        ax.grid(alpha=0.3)
        return ax


def scale_curve(X, method: str = "gride", *, range_max: int = 256, n_steps: int = 6, seed: int = 0,
                device="auto", memory_budget=None) -> ScaleCurve:
    """Intrinsic dimension as a function of scale, because ID is scale dependent: noise
    inflates it at small scales and curvature at large ones.

    * ``method="gride"``: GRIDE (Denti et al. 2022) with ``n1 = 1, 2, 4, ...`` and
      ``n2 = 2 n1`` up to ``range_max`` neighbours: larger ranks see larger scales.
    * ``method="decimation"``: TwoNN on random subsets of ``N, N/2, N/4, ...`` points
      (``n_steps`` of them), the decimation protocol of Facco et al. (2017): thinner
      samples put the two nearest neighbours further away.
    """
    Xt = as_points(X, name="X", min_points=3)
    Xt, _ = distinct_points(Xt)
    if method == "gride":
        rmax = min(check_int(range_max, "range_max", 2), Xt.shape[0] - 1)
        est = GRIDE(range_max=rmax, device=device, memory_budget=memory_budget).fit(Xt)
        return ScaleCurve("gride", est.scale_distances_, 2 * est.scale_n1_, est.scale_dimensions_,
                          est.scale_dimension_std_, int(Xt.shape[0]))
    if method == "decimation":
        n_steps = check_int(n_steps, "n_steps", 1)
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(Xt.shape[0], generator=g)
        scales, ranks, dims, stds = [], [], [], []
        n = Xt.shape[0]
        for _ in range(n_steps):
            if n < 10:
                break
            dist = knn(Xt[perm[:n]], 2, device=device, memory_budget=memory_budget).distances.numpy()
            d, s, *_ = twonn_from_distances(dist[:, 0], dist[:, 1])
            scales.append(float(dist[:, 1].mean()))
            ranks.append(n)
            dims.append(d)
            stds.append(s)
            n //= 2
        return ScaleCurve("decimation", np.array(scales), np.array(ranks), np.array(dims), np.array(stds), int(Xt.shape[0]))
    raise ValueError(f"method must be 'gride' or 'decimation', got {method!r}.")
