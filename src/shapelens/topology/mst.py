"""Exact Euclidean minimum spanning trees in torch: the H0 persistence of a Vietoris-Rips
filtration (each MST edge length is the death of one connected component) and the basis of the
persistent-homology dimension.

Prim's algorithm on the complete graph, one point added per step: the distances from the point
just added to every point still outside the tree are computed on the fly (``O(N D)`` memory,
never the ``N x N`` matrix), so the cost is ``O(N^2 D)`` arithmetic on CPU or CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import as_points, resolve_device
from .._results import Result

__all__ = ["minimum_spanning_tree", "SpanningTree"]


@dataclass(frozen=True)
class SpanningTree(Result):
    """The ``N - 1`` edges (pairs of point indices) of a Euclidean minimum spanning tree and
    their lengths, sorted by length (ascending)."""

    edges: np.ndarray
    lengths: np.ndarray
    n_points: int

    @property
    def total_length(self) -> float:
        """Sum of the edge lengths (``alpha = 1`` weight of the PH-dimension estimator)."""
        return float(self.lengths.sum())

    def h0_deaths(self) -> np.ndarray:
        """Deaths of the H0 classes of the Vietoris-Rips filtration at radius = distance: the
        edge lengths (all births are 0), plus one class that never dies (``inf``)."""
        return np.r_[self.lengths, np.inf]


def minimum_spanning_tree(X, *, device: str = "auto") -> SpanningTree:
    """Exact Euclidean minimum spanning tree of the rows of ``X`` (Prim 1957, "Shortest
    connection networks and some generalizations"), in torch, on CPU or CUDA.

    Distances are computed as ``|x_i - x_j|`` directly (not by the Gram expansion), in float64
    on the CPU and in the input's precision on a GPU. Ties between equal lengths are broken by
    the lower index, so the tree is deterministic; duplicate points give zero-length edges.
    """
    dev = resolve_device(device, like=X if isinstance(X, torch.Tensor) else None)
    P = as_points(X, name="X", min_points=1)
    P = P.to(device=dev, dtype=torch.float64 if dev.type == "cpu" else P.dtype)
    n = P.shape[0]
    edges = np.zeros((max(n - 1, 0), 2), dtype=np.int64)
    lengths = np.zeros(max(n - 1, 0), dtype=np.float64)
    if n == 1:
        return SpanningTree(edges, lengths, 1)
    inside = torch.zeros(n, dtype=torch.bool, device=dev)
    best = torch.full((n,), float("inf"), dtype=P.dtype, device=dev)
    parent = torch.zeros(n, dtype=torch.long, device=dev)
    current = 0
    inside[0] = True
    for step in range(n - 1):
        d = torch.linalg.vector_norm(P - P[current], dim=1)
        closer = (d < best) & ~inside
        best = torch.where(closer, d, best)
        parent = torch.where(closer, torch.full_like(parent, current), parent)
        masked = torch.where(inside, torch.full_like(best, float("inf")), best)
        nxt = int(torch.argmin(masked))
        edges[step] = (int(parent[nxt]), nxt)
        lengths[step] = float(masked[nxt])
        inside[nxt] = True
        current = nxt
    order = np.argsort(lengths, kind="stable")
    return SpanningTree(edges[order], lengths[order], n)
