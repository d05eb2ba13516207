"""Intrinsic dimension of every layer's representation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .._checks import warn
from .._results import Result
from ..probe import capture
from .registry import get

__all__ = ["LayerProfile", "layer_profile"]


@dataclass(frozen=True)
class LayerProfile(Result):
    """Per-layer intrinsic dimension (the "hunchback" curve of Ansuini et al. 2019)."""

    layers: tuple
    dimensions: np.ndarray
    dimension_std: np.ndarray
    ambient_dims: np.ndarray
    estimator: str
    n_points: int
    seconds: float = float("nan")

    def plot(self, ax=None):
        """ID per layer with one-standard-error bars; ambient widths annotated."""
        ax = self._axes(ax, (6, 3.8))
        x = np.arange(len(self.layers))
        ax.errorbar(x, self.dimensions, yerr=np.nan_to_num(self.dimension_std), marker="o", capsize=3,
                    label=f"{self.estimator} ID")
        for xi, di, ai in zip(x, self.dimensions, self.ambient_dims):
            ax.annotate(f"D={int(ai)}", (xi, di), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7,
                        color="0.4")
        ax.set_xticks(x)
        ax.set_xticklabels(self.layers, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("intrinsic dimension")
        ax.set_title(f"Layer ID profile ({self.estimator}, N={self.n_points})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        return ax

    def peak_layer(self) -> str:
        """Name of the layer with the largest intrinsic dimension."""
        return self.layers[int(np.nanargmax(self.dimensions))]


def layer_profile(model, data, layers="auto", estimator="twonn", *, pool="mean", batch_size=256, device="auto",
                  progress=None, **estimator_kw) -> LayerProfile:
    """Intrinsic dimension of each layer's representation of ``data``.

    Ansuini, Laio, Macke & Zoccolan (2019), "Intrinsic dimension of data representations in
    deep neural networks", NeurIPS: along a trained network the ID first rises then falls
    (the "hunchback"), and the last hidden layer's ID tracks test accuracy.

    The model is probed once (:func:`shapelens.probe.capture`) and each layer's point cloud
    goes through the estimator named ``estimator`` (any name in
    :func:`shapelens.dimension.available`, or an estimator instance) with ``estimator_kw``.
    """
    est = get(estimator, **estimator_kw) if isinstance(estimator, str) else estimator
    name = estimator if isinstance(estimator, str) else type(estimator).__name__
    t0 = time.perf_counter()
    acts = capture(model, data, layers, pool=pool, batch_size=batch_size, device=device, progress=progress)
    if not acts:
        raise ValueError("no layers were captured; pass layer names from model.named_modules() or layers='auto'.")
    dims, stds, amb, names = [], [], [], []
    n_points = None
    for lname, X in acts.items():
        e = est.__class__(**est.get_params()) if hasattr(est, "get_params") else est
        e.fit(X)
        dims.append(float(e.dimension_))
        stds.append(float(getattr(e, "dimension_std_", float("nan"))))
        amb.append(int(X.shape[1]))
        names.append(lname)
        n_points = int(X.shape[0])
    if any(d == 0 for d in dims):
        warn("some layers have constant activations (dimension 0): dead units or a collapsed representation.")
    return LayerProfile(tuple(names), np.array(dims), np.array(stds), np.array(amb), name, n_points,
                        time.perf_counter() - t0)
