"""The picture of a partition: every linear region of a 2D slice a filled polygon, the decision
boundary in bold, the data of the slice on top.

This is the figure SplineCam made familiar (Humayun, Balestriero, Balakrishnan & Baraniuk 2023,
"SplineCam: Exact visualization and characterization of deep network geometry and decision
boundaries", CVPR): regions drawn as polygons with thin edges, coloured at random or by the
class the network predicts there, and the decision boundary traced along region faces. All
polygons go into one :class:`matplotlib.collections.PolyCollection` and all boundary segments
into one :class:`matplotlib.collections.LineCollection`, so 10^5 regions draw in seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._results import Result

__all__ = ["plot_partition", "region_colors", "class_pieces", "COLOR_BY"]

#: The colourings :func:`plot_partition` knows by name (an array of one value per region is
#: also accepted).
COLOR_BY = ("region", "class")

_UNKNOWN_CLASS = (0.86, 0.86, 0.86, 1.0)


def _lighter(rgba: np.ndarray, amount: float) -> np.ndarray:
    out = np.array(rgba, dtype=float, copy=True)
    out[..., :3] = out[..., :3] + (1.0 - out[..., :3]) * amount
    return out


def region_colors(P: Any, color_by: Any = "region", *, cmap: Any = None, seed: int = 0,
                  lighten: float = 0.45) -> np.ndarray:
    """The ``(R, 4)`` RGBA face colour of every region of partition ``P``.

    ``color_by="region"``: a random colour per region drawn from ``seed`` (the same partition and
    seed always give the same picture), or, when ``cmap`` is given, that colormap applied to the
    region index (0 ... R-1 scaled to [0, 1]). ``color_by="class"``: the predicted class
    (``P.predicted``) in ``tab10`` (``tab20`` beyond 10 classes, or ``cmap``), lightened by
    ``lighten`` towards white so that the boundary and the data stand out; regions with no class
    (``predicted == -1``) are light grey. An array of ``R`` numbers: those values through
    ``cmap`` (default ``viridis``), e.g. ``P.areas``.
    """
    from matplotlib import colormaps

    R = int(P.n_regions)
    if isinstance(color_by, str):
        if color_by == "region":
            if cmap is None:
                rng = np.random.default_rng(seed)
                rgb = rng.uniform(0.3, 0.95, size=(R, 3))
                return np.concatenate([rgb, np.ones((R, 1))], axis=1)
            cm = colormaps[cmap] if isinstance(cmap, str) else cmap
            return np.asarray(cm(np.arange(R) / max(R - 1, 1)), dtype=float)
        if color_by == "class":
            pred = np.asarray(P.predicted, dtype=np.int64).reshape(-1)
            if pred.shape[0] != R:
                raise ValueError(f"P.predicted has {pred.shape[0]} entries for {R} regions; pass a Partition.")
            n_cls = int(pred.max()) + 1 if R and pred.max() >= 0 else 0
            if cmap is None:
                cm = colormaps["tab10" if n_cls <= 10 else "tab20"]
                n_colors = 10 if n_cls <= 10 else 20
                base = np.asarray(cm(np.mod(np.maximum(pred, 0), n_colors)), dtype=float)
            else:
                cm = colormaps[cmap] if isinstance(cmap, str) else cmap
                base = np.asarray(cm(np.maximum(pred, 0) / max(n_cls - 1, 1)), dtype=float)
            out = _lighter(base, lighten)
            out[pred < 0] = _UNKNOWN_CLASS
            return out
        raise ValueError(
            f"color_by={color_by!r} is not known; pass one of {COLOR_BY} or an array of one number per region "
            f"({R} values), e.g. P.areas."
        )
    values = np.asarray(color_by, dtype=float).reshape(-1)
    if values.shape[0] != R:
        raise ValueError(
            f"color_by has {values.shape[0]} values but the partition has {R} regions; pass one value per region "
            f"or one of {COLOR_BY}."
        )
    from matplotlib.colors import Normalize

    cm = colormaps[cmap or "viridis"] if (cmap is None or isinstance(cmap, str)) else cmap
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return np.asarray(cm(Normalize(lo, hi if hi > lo else lo + 1.0)(values)), dtype=float)


def _clip(poly: np.ndarray, a: np.ndarray, b: float) -> np.ndarray:
    """The part of convex polygon ``poly`` (k, 2) where ``a . p + b >= 0`` (Sutherland-Hodgman)."""
    if len(poly) == 0:
        return poly
    f = poly @ a + b
    out = []
    k = len(poly)
    for i in range(k):
        j = (i + 1) % k
        if f[i] >= 0:
            out.append(poly[i])
        if (f[i] >= 0) != (f[j] >= 0):
            w = f[i] / (f[i] - f[j])
            out.append(poly[i] + w * (poly[j] - poly[i]))
    return np.asarray(out).reshape(-1, 2)


def class_pieces(P: Any) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The regions that the decision boundary crosses, split into their class cells.

    On region ``r`` the output is affine (``out_A[r] @ (s, t) + out_c[r]``), so the points of
    class ``k`` form the convex cell where score ``k`` beats every other score; it is the region's
    polygon clipped by ``n_out - 1`` half-planes. Regions whose vertices all share one argmax lie in
    that class entirely (the cell is convex) and are not returned.

    Returns ``(pieces, classes, regions)``: the polygons, their class and the region each comes from.
    """
    pred = np.asarray(P.predicted).reshape(-1)
    A = np.asarray(P.out_A, dtype=float)
    c = np.asarray(P.out_c, dtype=float)
    R = int(P.n_regions)
    if R == 0 or pred.size == 0 or pred.min() < 0:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    n_out = A.shape[1]
    verts = np.asarray(P.vertices, dtype=float)
    off = np.asarray(P.offsets, dtype=np.int64)
    rid = np.repeat(np.arange(R), np.diff(off))
    scores = np.einsum("vkd,vd->vk", A[rid], verts) + c[rid]
    if n_out == 1:  # one output: class 1 where it is positive
        scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        A = np.concatenate([np.zeros_like(A), A], axis=1)
        c = np.concatenate([np.zeros_like(c), c], axis=1)
        n_out = 2
    top = scores.argmax(1)
    lo = np.minimum.reduceat(top, off[:-1]) if len(top) else top
    hi = np.maximum.reduceat(top, off[:-1]) if len(top) else top
    pieces: list[np.ndarray] = []
    classes: list[int] = []
    regions: list[int] = []
    for r in np.nonzero(lo != hi)[0]:
        poly = verts[off[r]:off[r + 1]]
        for k in range(n_out):
            piece = poly
            for j in range(n_out):
                if j != k and len(piece):
                    piece = _clip(piece, A[r, k] - A[r, j], float(c[r, k] - c[r, j]))
            if len(piece) >= 3:
                pieces.append(piece)
                classes.append(k)
                regions.append(int(r))
    return pieces, np.asarray(classes, dtype=np.int64), np.asarray(regions, dtype=np.int64)


def _points_in_plane(P: Any, points: Any, coords: str) -> np.ndarray:
    """Plane coordinates ``(N, 2)`` of ``points`` given in plane coordinates or as inputs."""
    if coords not in ("auto", "plane", "input"):
        raise ValueError(f"coords={coords!r} is not known; pass 'auto', 'plane' (points are (N, 2) plane "
                         "coordinates) or 'input' (points are model inputs, projected with P.plane.coords).")
    arr = points.detach().cpu().numpy() if hasattr(points, "detach") else np.asarray(points)
    origin = P.plane.origin
    in_shape = tuple(origin.shape)
    looks_input = tuple(arr.shape[1:]) == in_shape
    looks_plane = arr.ndim == 2 and arr.shape[1] == 2
    if coords == "auto":
        if looks_input:
            coords = "input"
        elif looks_plane:
            coords = "plane"
        elif arr.ndim >= 1 and tuple(arr.shape) == in_shape:  # one input
            arr, coords = arr[None], "input"
        else:
            raise ValueError(
                f"points of shape {arr.shape} are neither plane coordinates (N, 2) nor inputs (N, *{in_shape}); "
                "pass one of those (and coords='plane' or 'input' when both shapes could apply)."
            )
    if coords == "input":
        if tuple(arr.shape[1:]) != in_shape:
            raise ValueError(f"points of shape {arr.shape} are not inputs of the plane's shape (N, *{in_shape}); "
                             "pass inputs of that shape or plane coordinates with coords='plane'.")
        st = P.plane.coords(arr)
        st = st.detach().cpu().numpy() if hasattr(st, "detach") else np.asarray(st)
        return np.asarray(st, dtype=float).reshape(-1, 2)
    if not looks_plane:
        raise ValueError(f"points of shape {arr.shape} are not plane coordinates (N, 2); pass an (N, 2) array "
                         "or inputs with coords='input'.")
    return arr.astype(float)


def plot_partition(
    P: Any,
    ax=None,
    *,
    color_by: Any = "region",
    boundary: bool = True,
    points: Any = None,
    labels: Any = None,
    coords: str = "auto",
    cmap: Any = None,
    seed: int = 0,
    edgecolor: Any = (0.15, 0.15, 0.15, 0.6),
    linewidth: float = 0.25,
    boundary_color: Any = "black",
    boundary_width: float = 2.0,
    point_size: float = 40.0,
    title: str | None = None,
    figsize=(6, 6),
):
    """Draw partition ``P`` (a :class:`~shapelens.regions.partition.Partition`): the SplineCam
    picture (Humayun et al., CVPR 2023).

    Parameters
    ----------
    P : the partition of a 2D slice.
    ax : matplotlib axes to draw on; fresh axes on a new ``Figure`` when None (no pyplot state).
    color_by : ``"region"`` (a seeded random colour per region, or ``cmap`` of the region index),
        ``"class"`` (predicted class, ``tab10`` lightened) or one number per region (e.g.
        ``P.areas``) shown through ``cmap``; see :func:`region_colors`.
    boundary : draw the decision boundary (``P.boundary`` segments) in bold.
    points : data to overlay, as plane coordinates ``(N, 2)`` or as inputs ``(N, *input_shape)``
        projected onto the plane with ``P.plane.coords`` (``coords`` says which when ambiguous:
        ``"auto"`` reads inputs when the trailing shape is the plane's input shape). Points are
        drawn with a white edge; those outside ``P.bounds`` are not clipped away.
    labels : ``(N,)`` class of each point, coloured like ``color_by="class"`` (unlightened);
        black points without labels.
    seed : seed of the random region colours.
    edgecolor, linewidth : the thin polygon edges (``edgecolor="face"`` hides them).
    boundary_color, boundary_width : the decision boundary's line style.

    Returns the axes. Their first ``PolyCollection`` holds exactly one polygon per region (in
    region order) and, when drawn, a ``LineCollection`` holds the boundary segments. With
    ``color_by="class"`` the regions the decision boundary crosses are also split into their class
    cells (:func:`class_pieces`), so the fill follows the boundary exactly.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    ax = Result._axes(ax, figsize)
    vertices = np.asarray(P.vertices, dtype=float)
    offsets = np.asarray(P.offsets, dtype=np.int64)
    R = int(P.n_regions)
    if offsets.shape[0] != R + 1:
        raise ValueError(f"P.offsets has {offsets.shape[0]} entries for {R} regions (expected R + 1); pass a Partition.")
    polys = np.split(vertices, offsets[1:-1]) if R else []
    faces = region_colors(P, color_by, cmap=cmap, seed=seed)
    pc = PolyCollection(polys, facecolors=faces, edgecolors=edgecolor, linewidths=linewidth,
                        antialiaseds=linewidth > 0, zorder=1)
    ax.add_collection(pc)
    if isinstance(color_by, str) and color_by == "class":
        # regions the decision boundary crosses: fill each class cell in its own colour, then
        # draw those regions' edges again on top
        pieces, classes, regions = class_pieces(P)
        if pieces:
            fake = type("_Pred", (), {"predicted": classes, "n_regions": len(classes)})()
            ax.add_collection(PolyCollection(pieces, facecolors=region_colors(fake, "class", cmap=cmap),
                                             edgecolors="none", linewidths=0, zorder=1.5))
            ux = np.unique(regions)
            ax.add_collection(PolyCollection([polys[r] for r in ux], facecolors="none", edgecolors=edgecolor,
                                             linewidths=linewidth, zorder=1.6))
    if boundary:
        seg = np.asarray(P.boundary, dtype=float).reshape(-1, 2, 2)
        lc = LineCollection(seg, colors=boundary_color, linewidths=boundary_width, capstyle="round",
                            zorder=3, label="decision boundary")
        ax.add_collection(lc)
    if points is not None:
        st = _points_in_plane(P, points, coords)
        if labels is None:
            colors: Any = "black"
        else:
            from matplotlib import colormaps

            lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).reshape(-1)
            if lab.shape[0] != st.shape[0]:
                raise ValueError(f"labels has {lab.shape[0]} entries for {st.shape[0]} points; pass one label per point.")
            lab = lab.astype(np.int64)
            n_cls = int(lab.max()) + 1 if lab.size else 0
            cm = colormaps["tab10" if n_cls <= 10 else "tab20"]
            colors = cm(np.mod(lab, 10 if n_cls <= 10 else 20))
        ax.scatter(st[:, 0], st[:, 1], c=colors, s=point_size, edgecolors="white", linewidths=1.2, zorder=4)
    s0, s1, t0, t1 = (float(b) for b in P.bounds)
    ax.set_xlim(s0, s1)
    ax.set_ylim(t0, t1)
    ax.set_aspect("equal")
    ax.set_xlabel("s (plane coordinate along u)")
    ax.set_ylabel("t (plane coordinate along v)")
    if title is None:
        what = {"region": "linear regions", "class": "linear regions by predicted class"}.get(
            color_by if isinstance(color_by, str) else "", "linear regions")
        title = f"{R} {what}"
        if boundary:
            title += f", {len(np.asarray(P.boundary).reshape(-1, 2, 2))} boundary segments"
    if title:
        ax.set_title(title, fontsize=9)
    return ax
