"""Statistics of the linear regions of a piecewise-linear network, each a function of a model so
that a loop over training checkpoints gives its curve.

* :func:`region_statistics`: how many regions a 2D slice holds and how their sizes are
  distributed, and how long the decision boundary is (on the exact partition of
  :func:`~shapelens.regions.partition.partition`).
* :func:`crossings`: the exact 1D partition of a segment ``x0 -> x1`` of input space, the number
  of regions a line crosses (Hanin & Rolnick 2019, "Complexity of linear regions in deep
  networks", ICML), found layer by layer with the same cuts as the 2D engine in one dimension.
* :func:`local_complexity`: the number of linear regions that meet a neighbourhood of each data
  point (Humayun, Balestriero & Baraniuk 2024, "Deep networks always grok and here is why", ICML),
  counted exactly on 2D sections of the neighbourhood, together with the number of neurons whose
  zero set meets it (the quantity the paper counts).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_int, resolve_device, show_progress
from .._results import Result

__all__ = [
    "region_statistics", "RegionStats",
    "crossings", "SegmentRegions",
    "local_complexity", "LocalComplexity",
]


# ======================================================================================
# region statistics on a 2D slice
# ======================================================================================


@dataclass(frozen=True)
class RegionStats(Result):
    """Size statistics of the linear regions of one 2D slice (plane coordinates are Euclidean
    when the plane's directions are orthonormal, as :meth:`Plane.from_points` makes them).

    Attributes
    ----------
    n_regions : number of regions (polygons) in the slice.
    areas : ``(R,)`` region areas, sorted ascending.
    total_area : area of the slice (the sum of ``areas``).
    mean_area, median_area : of ``areas``.
    quantile_levels, quantiles : ``quantiles[i]`` is the ``quantile_levels[i]`` quantile of the areas.
    top10_fraction : fraction of the slice covered by the 10% largest regions (``ceil(0.1 R)``
        regions); 0.1 when all regions have the same size, near 1 when a few regions fill it.
    density : regions per unit area (``n_regions / total_area``).
    n_boundary_segments, boundary_length : the decision boundary inside the slice (segments
        between regions of different predicted class) and its total length.
    bounds : ``(s_min, s_max, t_min, t_max)`` of the slice.
    """

    n_regions: int
    areas: np.ndarray
    total_area: float
    mean_area: float
    median_area: float
    quantile_levels: np.ndarray
    quantiles: np.ndarray
    top10_fraction: float
    density: float
    n_boundary_segments: int
    boundary_length: float
    bounds: tuple

    def plot(self, ax=None, figsize=(5.5, 3.5), bins: int = 40):
        """Histogram of ``log10`` region area, with the median marked."""
        ax = self._axes(ax, figsize)
        a = self.areas[self.areas > 0]
        if a.size:
            ax.hist(np.log10(a), bins=bins, color="tab:blue")
            ax.axvline(math.log10(self.median_area) if self.median_area > 0 else np.nan, color="tab:red",
                       label=f"median {self.median_area:.3g}")
            ax.legend(fontsize=8)
        ax.set_xlabel("log10 region area (plane units)")
        ax.set_ylabel("regions")
        ax.set_title(f"{self.n_regions} regions; 10% largest cover {100 * self.top10_fraction:.0f}% of the slice",
                     fontsize=9)
        return ax


def _is_partition(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("vertices", "offsets", "areas", "boundary", "bounds", "n_regions"))


def region_statistics(model: Any, plane: Any = None, bounds: Any = None, *,
                      quantile_levels=(0.05, 0.25, 0.5, 0.75, 0.95), **partition_kwargs) -> RegionStats:
    """Region count and region-size distribution of a 2D slice of input space.

    The slice is partitioned exactly by :func:`~shapelens.regions.partition.partition` (SplineCam,
    Humayun et al. CVPR 2023, computes the same partition); its statistics are those used to follow
    the partition through training (Hanin & Rolnick 2019 count regions per unit area of a slice).
    Call it on each checkpoint with the same plane and bounds to get the curve.

    Parameters
    ----------
    model : the piecewise-linear network, or a ``Partition`` already computed (then ``plane`` and
        ``bounds`` must be left out).
    plane, bounds : the slice, as in :func:`~shapelens.regions.partition.partition` (the pair
        returned by ``Plane.from_points`` may also be passed as ``plane`` alone).
    quantile_levels : levels of the area quantiles to report, in [0, 1].
    **partition_kwargs : passed on to ``partition`` (``stop_at``, ``max_regions``, ``device``, ``dtype``).
    """
    if _is_partition(model):
        if plane is not None or bounds is not None or partition_kwargs:
            raise ValueError("region_statistics got a Partition and also a plane/bounds/partition options; pass "
                             "either a Partition alone or (model, plane, bounds, **options).")
        P = model
    else:
        if bounds is None and isinstance(plane, tuple) and len(plane) == 2:  # Plane.from_points(...)
            plane, bounds = plane
        if plane is None or bounds is None:
            raise ValueError("region_statistics needs the slice: pass region_statistics(model, plane, bounds) "
                             "(e.g. plane, bounds = Plane.from_points(x0, x1, x2)), or a Partition.")
        from .partition import partition

        P = partition(model, plane, bounds, **partition_kwargs)
    levels = np.asarray(quantile_levels, dtype=float).reshape(-1)
    if levels.size and (not np.all(np.isfinite(levels)) or levels.min() < 0 or levels.max() > 1):
        raise ValueError(f"quantile_levels must lie in [0, 1], got {levels.tolist()}.")
    areas = np.sort(np.asarray(P.areas, dtype=float).reshape(-1))
    R = int(areas.shape[0])
    total = float(areas.sum())
    k = max(1, math.ceil(0.1 * R)) if R else 0
    top = float(areas[R - k:].sum() / total) if R and total > 0 else float("nan")
    seg = np.asarray(P.boundary, dtype=float).reshape(-1, 2, 2)
    length = float(np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1).sum()) if len(seg) else 0.0
    return RegionStats(
        n_regions=R,
        areas=areas,
        total_area=total,
        mean_area=float(areas.mean()) if R else float("nan"),
        median_area=float(np.median(areas)) if R else float("nan"),
        quantile_levels=levels,
        quantiles=np.quantile(areas, levels) if R and levels.size else np.full(levels.shape, np.nan),
        top10_fraction=top,
        density=float(R / total) if total > 0 else float("nan"),
        n_boundary_segments=int(len(seg)),
        boundary_length=length,
        bounds=tuple(float(b) for b in P.bounds),
    )


# ======================================================================================
# the 1D cuts (the partition engine's model handling, on a line instead of a plane)
# ======================================================================================


@dataclass(frozen=True, eq=False)
class _Line:
    """The segment as the partition engine's plane argument: ``origin + s*u + t*v`` with
    ``v = 0``, evaluated only at ``(s, 0)``; a line needs no second direction, so inputs with a
    single feature work too."""

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.origin.shape)


def _new_breaks(ts: torch.Tensor, z: torch.Tensor, layer: Any, rtol: float) -> torch.Tensor:
    """Parameters of the new breakpoints of one layer on the pieces ``[ts[i], ts[i+1]]``.

    On every piece all earlier layers are fixed, so the layer's input ``z`` (N, m) is affine in t
    and known from its values at the two ends. A ReLU-like unit (or a Hardtanh threshold) switches
    where its line value ``z_a - c`` changes sign between the ends, at the interpolated zero. A
    max-pooling window switches from the argmax ``a`` at the left end to ``b`` at the right end where
    ``z_a = z_b``; one such split per pass, repeated by the caller until the argmax at each piece's
    left end is also a maximum at its right end, which by convexity of the maximum makes it the
    maximum on the whole piece. Values within ``rtol`` times the largest magnitude count as zero,
    as in the 2D engine."""
    dt = ts[1:] - ts[:-1]
    if layer.kind != "maxpool":
        vals = z[:, layer.la] - layer.lc.to(z.dtype)[None]
        tol = rtol * vals.abs().amax(0, keepdim=True) + 1e-300
        vl, vr = vals[:-1], vals[1:]
        m = ((vl > tol) & (vr < -tol)) | ((vl < -tol) & (vr > tol))
        p, k = m.nonzero(as_tuple=True)
        a, b = vl[p, k], vr[p, k]
        return ts[p] + dt[p] * (a / (a - b))
    w = layer.windows  # (W, k) flat input indices, -1 padded
    vals = z[:, w.clamp_min(0)].masked_fill((w < 0).unsqueeze(0), -math.inf)  # (N, W, k)
    idx = vals.argmax(dim=2, keepdim=True)  # (N, W, 1)
    finite = torch.where(torch.isfinite(vals), vals.abs(), torch.zeros_like(vals))
    tol = rtol * float(finite.max()) + 1e-300 if finite.numel() else 1e-300
    ia, ib = idx[:-1], idx[1:]
    fl, fr = vals[:-1], vals[1:]
    dl = (fl.gather(2, ia) - fl.gather(2, ib)).squeeze(2)  # >= 0: a is the max at the left end
    dr = (fr.gather(2, ia) - fr.gather(2, ib)).squeeze(2)  # <= 0: b is the max at the right end
    m = (ia != ib).squeeze(2) & (dl > tol) & (dr < -tol)
    p, c = m.nonzero(as_tuple=True)
    a, b = dl[p, c], dr[p, c]
    return ts[p] + dt[p] * (a / (a - b))


def _merge(ts: torch.Tensor, lid: torch.Tensor, new: torch.Tensor, li: int,
           res: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``ts`` (sorted) with the points of ``new`` farther than ``res`` from every kept point added,
    ``lid`` the layer index of each point (``li`` for the added ones); also the number added."""
    if new.numel() == 0:
        return ts, lid, 0
    new = torch.sort(new).values
    new = new[(new > res) & (new < 1 - res)]
    if new.numel() == 0:
        return ts, lid, 0
    keep = torch.ones_like(new, dtype=torch.bool)
    keep[1:] = (new[1:] - new[:-1]) > res
    new = new[keep]
    pos = torch.searchsorted(ts, new)
    left = ts[(pos - 1).clamp_min(0)]
    right = ts[pos.clamp_max(ts.numel() - 1)]
    new = new[((new - left).abs() > res) & ((right - new).abs() > res)]
    if new.numel() == 0:
        return ts, lid, 0
    allt = torch.cat([ts, new])
    alll = torch.cat([lid, torch.full((new.numel(),), li, dtype=lid.dtype, device=lid.device)])
    order = torch.argsort(allt)
    return allt[order], alll[order], int(new.numel())


# ======================================================================================
# crossings of a segment
# ======================================================================================


@dataclass(frozen=True)
class SegmentRegions(Result):
    """The exact partition of the segment ``x(t) = x0 + t (x1 - x0)``, ``t`` in [0, 1], into the
    pieces on which the network is affine (Hanin & Rolnick 2019).

    Attributes
    ----------
    breakpoints : ``(K,)`` sorted parameters in (0, 1) where some unit of a piecewise-linear layer
        changes state (a ReLU unit changes sign, a max-pool window its argmax).
    layer_index : ``(K,)`` index into ``layers`` of the layer that switches at each breakpoint (the
        first one when several switch at the same point).
    layers : the piecewise-linear layers (module names) in forward order.
    per_layer : layer name -> number of breakpoints that layer adds.
    n_pieces : ``K + 1``, the number of linear regions the segment crosses. These are activation
        regions (the pattern changes at every breakpoint), as Hanin & Rolnick count them; the
        affine map can coincide on both sides of a breakpoint when no later layer uses the unit
        that switches (e.g. a max-pool input that is not the maximum).
    length : Euclidean length ``||x1 - x0||`` of the segment in input space.
    density : breakpoints per unit length, ``K / length``.
    outputs : ``(K + 2, n_out)`` model outputs at ``t = 0``, the breakpoints and ``t = 1``; the
        network is affine between consecutive points, so the output along the segment is their
        linear interpolation (:meth:`output_at`).
    output : what ``outputs`` holds ("model output", or the input/output of the ``stop_at`` module).
    """

    breakpoints: np.ndarray
    layer_index: np.ndarray
    layers: tuple
    per_layer: dict
    n_pieces: int
    length: float
    density: float
    outputs: np.ndarray | None = None
    output: str = "model output"

    @property
    def n_breakpoints(self) -> int:
        return int(self.breakpoints.shape[0])

    @property
    def edges(self) -> np.ndarray:
        """``[0, *breakpoints, 1]``: the ends of the pieces."""
        return np.concatenate([[0.0], self.breakpoints, [1.0]])

    def piece_of(self, t) -> np.ndarray:
        """Index of the piece holding each parameter ``t`` (``t`` in [0, 1])."""
        t = np.asarray(t, dtype=float)
        if np.any((t < 0) | (t > 1)):
            raise ValueError("t must lie in [0, 1] (the segment x0 -> x1).")
        return np.searchsorted(self.breakpoints, t, side="right")

    def output_at(self, t) -> np.ndarray:
        """Model outputs ``(len(t), n_out)`` along the segment, by linear interpolation between the
        ends of each piece (exact for a piecewise-linear model)."""
        if self.outputs is None:
            raise ValueError("this result has no outputs (the model's output was not a tensor).")
        t = np.atleast_1d(np.asarray(t, dtype=float))
        e = self.edges
        i = np.clip(self.piece_of(t), 0, len(e) - 2)
        w = ((t - e[i]) / (e[i + 1] - e[i]))[:, None]
        return (1 - w) * self.outputs[i] + w * self.outputs[i + 1]

    def plot(self, ax=None, figsize=(6.5, 3.5), max_outputs: int = 10):
        """The model's outputs along the segment (up to ``max_outputs`` of them), with every
        breakpoint as a thin vertical line coloured by the layer that switches there."""
        from matplotlib import colormaps
        from matplotlib.collections import LineCollection

        ax = self._axes(ax, figsize)
        cm = colormaps["Dark2" if len(self.layers) <= 8 else "tab20b"]
        for li, name in enumerate(self.layers):
            ts = self.breakpoints[self.layer_index == li]
            if len(ts):
                ax.add_collection(LineCollection([((t, 0), (t, 1)) for t in ts], colors=[cm(li % cm.N)],
                                                 linewidths=0.6, alpha=0.6, linestyles="--",
                                                 transform=ax.get_xaxis_transform(), label=f"switch in {name}"))
        if self.outputs is not None:
            e = self.edges
            for j in range(min(self.outputs.shape[1], max_outputs)):
                ax.plot(e, self.outputs[:, j], lw=1.4, color="black" if self.outputs.shape[1] == 1 else None,
                        label=f"output {j}" if self.outputs.shape[1] <= 10 else None)
        if self.n_breakpoints or (self.outputs is not None and self.outputs.shape[1] <= 10):
            ax.legend(fontsize=7, ncol=2)
        ax.set_xlim(0, 1)
        ax.set_xlabel("t along the segment x0 -> x1")
        ax.set_ylabel("model output")
        ax.set_title(f"{self.n_pieces} linear pieces ({self.density:.3g} breakpoints per unit length)", fontsize=9)
        return ax


def _as_input(x: Any, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as exc:
            raise TypeError(f"{name} could not be read as an array ({exc}); pass a tensor or numpy array.") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.uint8, torch.bool)):
        raise TypeError(f"{name} has dtype {t.dtype}; pass real-valued inputs.")
    t = t.to(device=device, dtype=dtype)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass an input of the model's input shape.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite inputs.")
    return t


def crossings(model: nn.Module, x0: Any, x1: Any, *, stop_at: str | None = None, device: Any = "auto",
              dtype: torch.dtype = torch.float64, rtol: float | None = None,
              max_breakpoints: int = 1_000_000) -> SegmentRegions:
    """The exact partition of the segment from ``x0`` to ``x1`` into linear pieces of ``model``.

    Hanin & Rolnick (2019, "Complexity of linear regions in deep networks", ICML) count the
    regions a line through input space crosses and show that at initialization their number per
    unit length grows linearly with the number of neurons. This computes that number exactly: the
    piecewise-linear layers are taken in forward order; on each current piece every earlier layer
    is fixed, so the next layer's input is affine in ``t`` and is known exactly from its values at
    the two ends of the piece (one batched forward pass over all current breakpoints, through the
    partition engine's hooks on the ReLU/LeakyReLU/PReLU/Hardtanh/max-pool modules); a unit's sign
    change (or a max-pool window's change of argmax) is then located in closed form. This is the
    one-dimensional analogue of the polygon cuts of :func:`~shapelens.regions.partition.partition`,
    and accepts the same models (modules that are not piecewise-linear raise
    ``NotPiecewiseLinearError`` naming the first one).

    Parameters
    ----------
    model : a piecewise-linear network (as for ``partition``); copied, cast to ``dtype`` and run in
        eval mode, the original is left as it was.
    x0, x1 : two inputs of the model's input shape, without the batch axis.
    stop_at : as for ``partition``: None (the whole model), ``"last_pl"`` or a module name (stop
        after that module, its own pieces included when it is piecewise-linear).
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    dtype : float64 (default) locates breakpoints to about 1e-12 in ``t``; float32 to about 1e-6.
    rtol : a unit's value within ``rtol`` times its largest magnitude on the segment counts as zero
        (default 1e-10 for float64, 1e-5 for float32, as in ``partition``).
    max_breakpoints : refuse (with the count reached) past this many breakpoints.

    Returns
    -------
    :class:`SegmentRegions` with the breakpoints, the layer of each, the number of pieces, the
    density per unit length and the outputs at the piece ends.
    """
    from .partition import _make_layer, _Net

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    if rtol is None:
        rtol = 1e-10 if dtype == torch.float64 else 1e-5
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (math.isfinite(rtol) and 0 <= rtol < 1e-2):
        raise ValueError(f"rtol must be a number in [0, 0.01), got {rtol!r}.")
    max_breakpoints = check_int(max_breakpoints, "max_breakpoints", 1)
    dev = resolve_device(device)
    a = _as_input(x0, "x0", dev, dtype)
    b = _as_input(x1, "x1", dev, dtype)
    if a.shape != b.shape:
        raise ValueError(f"x0 has shape {tuple(a.shape)} but x1 has shape {tuple(b.shape)}; pass two inputs of the "
                         "same shape (one example each, without the batch axis).")
    direction = b - a
    length = float(torch.linalg.vector_norm(direction))
    if length == 0.0:
        raise ValueError("x0 and x1 are the same point; pass two different inputs (the segment x0 -> x1 has length 0).")
    try:
        net = _Net(model, _Line(a, direction, torch.zeros_like(a)), dev, dtype, stop_at)
    except ValueError as exc:
        if "could not run" in str(exc):
            raise ValueError(
                f"the model could not run on x0 with a batch axis added (shape {(1, *a.shape)}): {exc} Pass x0 and x1 "
                "as single inputs of the model's input shape, without the batch axis."
            ) from exc
        raise
    res = 1e-12 if dtype == torch.float64 else 1e-6
    layers = [_make_layer(c, dev) for c in net.pl]
    ts = torch.tensor([0.0, 1.0], device=dev, dtype=dtype)
    lid = torch.full((2,), -1, dtype=torch.long, device=dev)

    def st_of(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([t, torch.zeros_like(t)], 1)

    with torch.no_grad():
        for li, ly in enumerate(layers):
            passes = 0
            while True:
                passes += 1
                z = net.values(st_of(ts), ly.call)
                new = _new_breaks(ts, z, ly, rtol)
                ts, lid, n_added = _merge(ts, lid, new, li, res)
                if ts.numel() - 2 > max_breakpoints:
                    raise ValueError(
                        f"the segment has more than max_breakpoints={max_breakpoints} breakpoints after layer "
                        f"{ly.call.label!r}; pass a shorter segment or raise max_breakpoints."
                    )
                if ly.kind != "maxpool" or n_added == 0:
                    break
                if passes > 4 * int(ly.windows.shape[1]) + 8:  # the argmax walk has at most k - 1 steps
                    raise RuntimeError(f"the max-pool cuts of layer {ly.call.label!r} did not settle; please report this.")
            if ly.kind == "maxpool" and passes > 1:
                # a split at z_a = z_b where a third entry c is the maximum is not a breakpoint: keep
                # this layer's points only where the argmax of the pieces on either side differs
                mids = (ts[:-1] + ts[1:]) / 2
                pat = ly.pattern(net.values(st_of(mids), ly.call))
                changes = (pat[1:] != pat[:-1]).any(1)
                keep = torch.ones_like(ts, dtype=torch.bool)
                keep[1:-1] = (lid[1:-1] != li) | changes
                ts, lid = ts[keep], lid[keep]
        out = net.output(st_of(ts))
    bp = ts[1:-1].detach().cpu().numpy().astype(np.float64)
    layer_index = lid[1:-1].detach().cpu().numpy().astype(np.int64)
    names = tuple(ly.call.label for ly in layers)
    return SegmentRegions(
        breakpoints=bp,
        layer_index=layer_index,
        layers=names,
        per_layer={n: int((layer_index == i).sum()) for i, n in enumerate(names)},
        n_pieces=int(len(bp) + 1),
        length=length,
        density=float(len(bp) / length),
        outputs=out.detach().cpu().numpy().astype(np.float64),
        output=net.stop_label,
    )


# ======================================================================================
# local complexity
# ======================================================================================


@dataclass(frozen=True)
class LocalComplexity(Result):
    """Local complexity of a network around each data point (Humayun, Balestriero & Baraniuk 2024),
    computed exactly on random 2D sections of the neighbourhood.

    For point ``i`` and each of ``n_planes`` random planes through it (two random orthonormal
    directions), the neighbourhood is the square ``[-radius, radius]^2`` of the plane around the
    point, partitioned exactly.

    Attributes
    ----------
    regions : ``(N,)`` number of linear regions meeting the square, averaged over the planes (the
        local complexity reported here; 1 for an affine network).
    neurons : ``(N,)`` number of units whose zero set (the bent hyperplane where the unit switches,
        through all earlier layers) crosses the square, averaged over the planes: units whose state
        is not the same on every region of the square (a max-pool window counts once when its
        argmax changes). This is the count Humayun et al. make, here exact on the square.
    vertex_neurons : ``(N,)`` Humayun et al.'s estimate of ``neurons`` from the vertices of the
        neighbourhood only (units whose state differs between two of the square's four corners),
        averaged over the planes; never more than ``neurons``.
    per_plane : ``(N, n_planes)`` region counts per plane.
    layer_neurons : layer name -> ``(N,)`` mean ``neurons`` of that layer.
    mean, median : of ``regions``; ``mean_neurons`` of ``neurons``.
    radius, n_planes, seed : the neighbourhood and the draw of the planes.
    partitions : with ``keep_partitions=True``, the ``N * n_planes`` partitions of the squares
        (point-major: ``partitions[i * n_planes + j]``), to plot or inspect; else None.
    """

    regions: np.ndarray
    neurons: np.ndarray
    vertex_neurons: np.ndarray
    per_plane: np.ndarray
    layer_neurons: dict
    mean: float
    median: float
    mean_neurons: float
    radius: float
    n_planes: int
    seed: int
    partitions: tuple | None = None

    def to_dict(self) -> dict:
        out = Result.to_dict(dataclasses.replace(self, partitions=None))
        out["partitions"] = None if self.partitions is None else [P.to_dict() for P in self.partitions]
        return out

    @property
    def density(self) -> np.ndarray:
        """Regions per unit area of the square, ``regions / (2 radius)^2``."""
        return self.regions / (2.0 * self.radius) ** 2

    def plot(self, ax=None, figsize=(5.5, 3.5), bins: int = 30):
        """Histogram of the per-point local complexity (regions meeting the neighbourhood)."""
        ax = self._axes(ax, figsize)
        ax.hist(self.regions, bins=bins, color="tab:blue")
        ax.axvline(self.mean, color="tab:red", label=f"mean {self.mean:.3g}")
        ax.set_xlabel(f"linear regions within radius {self.radius:g} (2D sections)")
        ax.set_ylabel("points")
        ax.legend(fontsize=8)
        return ax


def _random_frame(shape: tuple, gen: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal directions of ``shape`` (Gaussian, then Gram-Schmidt)."""
    while True:
        u = torch.randn(shape, generator=gen, dtype=torch.float64)
        v = torch.randn(shape, generator=gen, dtype=torch.float64)
        nu = torch.linalg.vector_norm(u)
        if nu == 0:
            continue
        u = u / nu
        v = v - (v * u).sum() * u
        nv = torch.linalg.vector_norm(v)
        if nv > 1e-8:
            return u.to(dtype), (v / nv).to(dtype)


def local_complexity(model: nn.Module, x: Any, radius: float, *, n_planes: int = 1, seed: int = 0,
                     stop_at: str | None = None, max_regions: int = 200_000, device: Any = "auto",
                     dtype: torch.dtype = torch.float64, keep_partitions: bool = False,
                     progress: bool | None = None) -> LocalComplexity:
    """Number of linear regions meeting a neighbourhood of each point, exactly on 2D sections.

    Humayun, Balestriero & Baraniuk (2024, "Deep networks always grok and here is why", ICML)
    define the local complexity at ``x`` through the neighbourhood ``conv{x +- r v_p}``, a random
    cross-polytope spanned by ``P`` orthonormal directions, and count the neurons whose
    (layer-wise) hyperplane meets it, estimating that from the sign changes of each neuron's
    pre-activation between the polytope's vertices. Here the neighbourhood is a 2D section: for each
    point, ``n_planes`` random planes through it (two random orthonormal directions, drawn from
    ``seed``) and the square ``[-radius, radius]^2`` of each around the point, which
    :func:`~shapelens.regions.partition.partition` cuts exactly into its linear regions.

    The result reports three counts per point (means over the planes): ``regions``, the number of
    linear regions meeting the square (the density of regions itself); ``neurons``, the number of
    units whose zero set crosses the square (the quantity the paper counts, here exact, including
    the bending of deeper units' zero sets by earlier layers); and ``vertex_neurons``, the paper's
    vertex estimate of it from the square's four corners, which can miss units whose zero set cuts
    the square without separating two corners. For a one-hidden-layer network the zero sets are
    straight lines and ``regions = 1 + neurons + (their intersections inside the square)``.

    Parameters
    ----------
    model : a piecewise-linear network (as for ``partition``).
    x : ``(N, *input_shape)`` data points.
    radius : half the side of the square neighbourhood, in input units (> 0).
    n_planes : random planes per point; the counts are averaged over them.
    seed : seed of the random directions (the same seed gives the same planes).
    stop_at, max_regions, device, dtype : passed on to ``partition``.
    keep_partitions : keep every square's ``Partition`` in the result (``plot_partition`` draws one).
    progress : progress bar over the points (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    from .partition import Plane, partition

    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)):
        raise TypeError(f"radius must be a positive number, got {radius!r}.")
    radius = float(radius)
    if not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a finite number > 0 (half the side of the square around each point), "
                         f"got {radius}.")
    n_planes = check_int(n_planes, "n_planes", 1)
    seed = check_int(seed, "seed", 0)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    dev = resolve_device(device)
    X = _as_input(x, "x", dev, dtype)
    if X.ndim < 2:
        raise ValueError(f"x has shape {tuple(X.shape)}; pass a batch of points (N, *input_shape), e.g. x[None] "
                         "for one point.")
    N = X.shape[0]
    gen = torch.Generator().manual_seed(seed)
    per_plane = np.zeros((N, n_planes), dtype=np.int64)
    neurons = np.zeros((N, n_planes), dtype=np.int64)
    vneurons = np.zeros((N, n_planes), dtype=np.int64)
    layer_counts: dict[str, np.ndarray] = {}
    kept: list = []
    shape = tuple(X.shape[1:])
    Xc = X.detach().cpu().to(torch.float64)
    bounds = (-radius, radius, -radius, radius)
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * radius
    for i in tqdm(range(N), desc="local complexity", unit="point", disable=not show_progress(progress)):
        for j in range(n_planes):
            u, v = _random_frame(shape, gen, torch.float64)
            plane = Plane(Xc[i], u, v)
            try:
                P = partition(model, plane, bounds, stop_at=stop_at, max_regions=max_regions, device=dev, dtype=dtype)
            except ValueError as exc:
                if i == 0 and "could not run" in str(exc):
                    raise ValueError(
                        f"x of shape {tuple(X.shape)} could not be passed through the model ({exc}); pass points as "
                        "(N, *input_shape), the batch axis first."
                    ) from exc
                raise
            per_plane[i, j] = int(P.n_regions)
            if keep_partitions:
                kept.append(P)
            pats = np.asarray(P.patterns)
            switching = pats.max(axis=0) != pats.min(axis=0) if pats.shape[0] else np.zeros(pats.shape[1], bool)
            neurons[i, j] = int(switching.sum())
            for name, sl in P.layer_slices.items():
                layer_counts.setdefault(name, np.zeros((N, n_planes), dtype=np.int64))[i, j] = int(switching[sl].sum())
            # Humayun et al.'s estimate from the vertices of the neighbourhood: units whose state
            # differs between two corners (the pattern at a corner is that of its region)
            cp = pats[P.region_of(corners)]
            vneurons[i, j] = int((cp.max(axis=0) != cp.min(axis=0)).sum()) if cp.shape[1] else 0
    regions = per_plane.mean(axis=1).astype(float)
    return LocalComplexity(
        regions=regions,
        neurons=neurons.mean(axis=1).astype(float),
        vertex_neurons=vneurons.mean(axis=1).astype(float),
        per_plane=per_plane,
        layer_neurons={k: v.mean(axis=1).astype(float) for k, v in layer_counts.items()},
        mean=float(regions.mean()),
        median=float(np.median(regions)),
        mean_neurons=float(neurons.mean()),
        radius=radius,
        n_planes=n_planes,
        seed=seed,
        partitions=tuple(kept) if keep_partitions else None,
    )
