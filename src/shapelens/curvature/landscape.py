"""Loss landscapes: the loss on lines and planes through parameter space.

Follows Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the loss landscape of neural
nets" (NeurIPS): slices ``L(theta + alpha d1 + beta d2)`` along random *filter-normalized*
directions (sec. 4), along the top Hessian eigenvectors, on the line or plane through two or
three checkpoints, and on the plane of the first two principal components of a training
trajectory (sec. 7).

Every grid point is a full-data loss evaluated in eval mode (:func:`shapelens.probe.eval_mode`)
with the weighting of :class:`shapelens.curvature.sharpness._Loss` (batch means weighted by
batch size for ``reduction="mean"``, summed for ``"sum"``). Many grid points share one forward
pass: the perturbed parameters are stacked and evaluated with ``torch.func.vmap`` over
``torch.func.functional_call``, in chunks sized to a memory budget; models that ``vmap``
cannot handle (data-dependent control flow, in-place ops on parameters) fall back to one
forward per point, with a note in the result. The model's own parameters and buffers are
never modified.

Compared with the ``loss-landscapes`` package: buffers (BatchNorm running statistics) are never
perturbed, filters of zero norm stay zero instead of becoming NaN, and directions are drawn in
the dtype and on the device of each parameter (from a CPU generator, so a seed gives the same
directions on any device).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from .._checks import check_int, show_progress
from .._results import Result
from ..neighbors import default_memory_budget
from ..probe import eval_mode
from .operators import Hessian, _batches, loss_reduction, select_params
from .spectra import eigenvalues

__all__ = ["Landscape", "TrajectoryPCA", "random_directions", "eigen_directions", "landscape_1d", "landscape_2d",
           "checkpoint_landscape", "trajectory_pca"]

_KINDS = ("filter", "eigen", "checkpoints", "pca", "custom")


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Landscape(Result):
    """A 1D or 2D slice of the loss (Li et al. 2018).

    Attributes
    ----------
    coords : ``(alphas,)`` or ``(alphas, betas)``, numpy axes of the grid.
    losses : ``(n1,)`` or ``(n1, n2)`` losses, ``losses[i, j]`` at ``(alphas[i], betas[j])``;
        non-finite values are kept (and counted in ``notes``).
    center_loss : the loss at the origin of the slice (the weights, the first checkpoint, or
        the final weights of a trajectory).
    kind : ``"filter"``, ``"eigen"``, ``"checkpoints"``, ``"pca"`` or ``"custom"``.
    eigenvalues : the Hessian eigenvalues of ``"eigen"`` directions (descending), else None.
    marks : coordinates of the checkpoints / trajectory in the slice (``(m,)`` on a line,
        ``(m, 2)`` on a plane), else None.
    mark_losses : the loss evaluated exactly at each mark, else None.
    axis_labels : names of the axes, used by :meth:`plot`.
    notes : what the reader should know (fallbacks, non-finite points, non-orthogonality).
    """

    coords: tuple
    losses: np.ndarray
    center_loss: float
    kind: str
    eigenvalues: np.ndarray | None = None
    marks: np.ndarray | None = None
    mark_losses: np.ndarray | None = None
    axis_labels: tuple = ()
    notes: tuple = ()

    @property
    def ndim(self) -> int:
        return len(self.coords)

    def plot(self, ax=None, kind: str | None = None, *, levels: int = 20):
        """Draw the slice.

        1D: the loss against the coordinate (``kind`` None or ``"line"``). 2D: ``"contour"``
        (default; levels log-spaced in the height above the minimum, dense near the minimum
        as in Li et al.'s figures), ``"heatmap"``, or ``"surface"`` (a 3D surface; needs
        axes made with ``projection="3d"``, created when ``ax`` is None). The centre is
        marked with a star, checkpoints with numbered dots, a trajectory with a line.
        Returns the axes.
        """
        labels = tuple(self.axis_labels) + ("direction 1", "direction 2")[len(self.axis_labels):]
        if ax is None and kind != "surface":
            from matplotlib.figure import Figure

            # constrained layout: room for the axis labels and the colorbar
            ax = Figure(figsize=(5, 3.5) if self.ndim == 1 else (5.5, 4.5), layout="constrained").add_subplot()
        return self._draw(ax, kind, levels, labels)

    def _draw(self, ax, kind, levels, labels):
        if self.ndim == 1:
            if kind not in (None, "line"):
                raise ValueError(f"a 1D landscape is drawn as a line; got kind={kind!r}. Leave kind=None "
                                 "(or compute a 2D landscape for 'contour', 'heatmap' or 'surface').")
            ax = self._axes(ax, (5, 3.5))
            ax.plot(self.coords[0], self.losses, color="C0")
            if self.marks is not None:
                ax.scatter(self.marks, self.mark_losses, color="C3", zorder=3)
                for i, (a, l) in enumerate(zip(self.marks, self.mark_losses)):
                    ax.annotate(str(i), (a, l), textcoords="offset points", xytext=(4, 4), fontsize=8)
            elif self.coords[0][0] <= 0 <= self.coords[0][-1]:
                ax.plot([0.0], [self.center_loss], "k*", ms=9, zorder=3)
            ax.set_xlabel(labels[0])
            ax.set_ylabel("loss")
            return ax
        kind = "contour" if kind is None else kind
        if kind not in ("contour", "heatmap", "surface"):
            raise ValueError(f"kind must be 'contour', 'heatmap' or 'surface' for a 2D landscape, got {kind!r}.")
        A, B = np.meshgrid(self.coords[0], self.coords[1], indexing="ij")
        Z = np.where(np.isfinite(self.losses), self.losses, np.nan)
        if kind == "surface":
            if ax is None:
                from matplotlib.figure import Figure

                ax = Figure(figsize=(6, 5)).add_subplot(projection="3d")
            elif not hasattr(ax, "plot_surface"):
                raise ValueError("kind='surface' needs 3D axes: pass fig.add_subplot(projection='3d') or ax=None.")
            ax.plot_surface(A, B, Z, cmap="viridis", linewidth=0, antialiased=True, alpha=0.9)
            if self.marks is not None:
                ax.scatter(self.marks[:, 0], self.marks[:, 1], self.mark_losses, color="C3", depthshade=False)
            else:
                ax.scatter([0.0], [0.0], [self.center_loss], color="k", marker="*", s=60, depthshade=False)
            ax.set_zlabel("loss")
        else:
            ax = self._axes(ax, (5, 4.5))
            lv = _log_levels(Z, levels)
            if kind == "heatmap" or lv is None:
                mesh = ax.pcolormesh(A, B, np.ma.masked_invalid(Z), shading="auto", cmap="viridis")
                ax.figure.colorbar(mesh, ax=ax, label="loss")
            else:
                cs = ax.contour(A, B, np.ma.masked_invalid(Z), levels=lv, cmap="viridis", linewidths=0.8)
                ax.figure.colorbar(cs, ax=ax, label="loss")
            self._draw_marks(ax)
            ax.set_aspect("auto")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        return ax

    def _draw_marks(self, ax):
        if self.marks is None:
            ax.plot([0.0], [0.0], "k*", ms=10, zorder=3)
            return
        m = np.asarray(self.marks)
        if self.kind == "pca":
            ax.plot(m[:, 0], m[:, 1], "-o", color="C3", ms=3, lw=1, zorder=3)
            ax.plot([m[-1, 0]], [m[-1, 1]], "k*", ms=10, zorder=4)
        else:
            ax.scatter(m[:, 0], m[:, 1], color="C3", zorder=3)
            for i, (a, b) in enumerate(m):
                ax.annotate(str(i), (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _log_levels(Z: np.ndarray, n: int):
    fin = Z[np.isfinite(Z)]
    if fin.size == 0:
        return None
    lo, hi = float(fin.min()), float(fin.max())
    if not hi > lo:
        return None
    lv = lo + np.geomspace((hi - lo) * 1e-3, hi - lo, max(int(n), 2))
    return np.unique(lv)


@dataclass(frozen=True)
class TrajectoryPCA(Result):
    """PCA of a training trajectory (Li et al. 2018, sec. 7).

    Attributes
    ----------
    coords : ``(T, 2)`` projections of ``theta_i - theta_final`` on the two principal
        directions (the final checkpoint at the origin).
    explained_variance_ratio : ``(2,)``, the fraction of the trajectory's variance along each
        direction (of the centred difference matrix, as scikit-learn's ``PCA`` reports it).
    off_plane : ``(T,)`` distance of each checkpoint from the plane of the two directions.
    param_names : the parameters the trajectory was measured on.
    landscape : the 2D :class:`Landscape` on the plane around the final weights (trajectory
        in ``marks``), when a model, loss and data were given; else None.
    directions : the two unit-norm principal directions, name -> numpy array (left out of
        ``to_dict``: as large as the model).
    notes : what the reader should know.
    """

    coords: np.ndarray
    explained_variance_ratio: np.ndarray
    off_plane: np.ndarray
    param_names: tuple
    landscape: Landscape | None
    directions: tuple = field(repr=False, default=())
    notes: tuple = ()

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("directions", None)
        return out

    def plot(self, ax=None, kind: str | None = None):
        """The landscape with the trajectory when there is one, else the projected path."""
        if self.landscape is not None:
            return self.landscape.plot(ax, kind)
        ax = self._axes(ax, (5, 4.5))
        ax.plot(self.coords[:, 0], self.coords[:, 1], "-o", color="C3", ms=3)
        ax.plot([0.0], [0.0], "k*", ms=10)
        r = self.explained_variance_ratio
        ax.set_xlabel(f"PC1 ({r[0]:.1%})")
        ax.set_ylabel(f"PC2 ({r[1]:.1%})")
        return ax


# ----------------------------------------------------------------------------------------
# parameters and directions
# ----------------------------------------------------------------------------------------
def _dot(a: dict, b: dict) -> float:
    return float(sum((a[n].double() * b[n].double()).sum() for n in a if n in b))


def _norm(a: dict) -> float:
    return math.sqrt(max(_dot(a, a), 0.0))


def _filter_scale(d: torch.Tensor, w: torch.Tensor, norm: str | None, ignore: str | None) -> torch.Tensor:
    if d.ndim <= 1:
        if ignore == "biasbn":
            return torch.zeros_like(d)
        if norm is None:
            return d
        return _rescale(d.reshape(1, -1), w.reshape(1, -1)).reshape(d.shape)
    if norm is None:
        return d
    if norm == "layer":
        return _rescale(d.reshape(1, -1), w.reshape(1, -1)).reshape(d.shape)
    return _rescale(d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)).reshape(d.shape)


def _rescale(d2: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Rows of ``d2`` rescaled to the norms of the rows of ``w2``; zero rows stay zero."""
    dn = d2.double().norm(dim=1, keepdim=True)
    wn = w2.double().norm(dim=1, keepdim=True)
    scale = torch.where(dn > 0, wn / dn.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(dn))
    return (d2.double() * scale).to(d2.dtype)


def random_directions(model: nn.Module, n: int = 1, *, params=None, norm: str | None = "filter",
                      ignore: str | None = "biasbn", seed: int = 0, orthogonalize: bool = False) -> list[dict]:
    """Random Gaussian directions in parameter space, filter-normalized as in Li, Xu, Taylor,
    Studer & Goldstein (2018), "Visualizing the loss landscape of neural nets", sec. 4.

    For every parameter with ``ndim >= 2`` a Gaussian ``d`` is drawn and each *filter* (slice
    along dim 0: a row of a Linear weight, an output channel of a Conv weight) is rescaled to
    the Frobenius norm of the same filter of the weights: ``d_f <- d_f / |d_f| * |theta_f|``.
    This removes the scale invariance of ReLU/BatchNorm networks from the picture, so that
    landscapes of different networks can be compared.

    Parameters
    ----------
    model : the ``nn.Module`` whose parameters the directions live in.
    n : number of independent directions (Li et al. draw them independently; in high
        dimension they are nearly orthogonal).
    params : ``None`` (all trainable parameters) or names / parameters: only these get a
        direction (others are left out of the dicts, i.e. held fixed).
    norm : ``"filter"`` (per filter), ``"layer"`` (whole tensor rescaled to the tensor's
        norm), or ``None`` (raw Gaussian).
    ignore : ``"biasbn"`` (default, as Li et al.): parameters with ``ndim <= 1`` (biases,
        BatchNorm/LayerNorm weight and bias) get a zero direction. ``None``: they are
        normalized like one filter (the whole vector rescaled to the parameter's norm; Li et
        al.'s code copies the weights instead).
    seed : the directions are drawn from a CPU generator in float64 and cast to each
        parameter's dtype and device, so a seed gives the same directions everywhere.
    orthogonalize : Gram-Schmidt the directions in the flattened parameter space (each is
        then rescaled to its norm before orthogonalization, so per-filter norms hold only
        approximately).

    Returns
    -------
    A list of ``n`` dicts ``name -> tensor`` (shape, dtype, device of the parameter). Buffers
    (BatchNorm running statistics) never get a direction; filters of zero norm stay zero.
    """
    n = check_int(n, "n", 1)
    if norm not in ("filter", "layer", None):
        raise ValueError(f"norm must be 'filter', 'layer' or None, got {norm!r}.")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore must be 'biasbn' or None, got {ignore!r}.")
    names = select_params(model, params)
    named = dict(model.named_parameters())
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(n):
        d = {}
        for name in names:
            w = named[name].detach()
            raw = torch.randn(w.shape, generator=g, dtype=torch.float64).to(dtype=w.dtype, device=w.device)
            d[name] = _filter_scale(raw, w, norm, ignore)
        out.append(d)
    if orthogonalize and n > 1:
        for i in range(1, n):
            target = _norm(out[i])
            for j in range(i):
                nj = _dot(out[j], out[j])
                if nj > 0:
                    c = _dot(out[i], out[j]) / nj
                    out[i] = {k: (v.double() - c * out[j][k].double()).to(v.dtype) for k, v in out[i].items()}
            now = _norm(out[i])
            if now > 0:
                out[i] = {k: (v.double() * (target / now)).to(v.dtype) for k, v in out[i].items()}
    return out


def eigen_directions(model: nn.Module, loss_fn, data, n: int = 2, *, params=None, seed: int = 0,
                     tol: float = 1e-6) -> tuple[list[dict], np.ndarray]:
    """The top-``n`` eigenvectors of the Hessian of the loss as parameter-space directions.

    The eigenvectors come from Lanczos (:func:`shapelens.curvature.eigenvalues` on
    :class:`shapelens.curvature.Hessian`); along the top one the loss curves most, the view
    Li et al. (2018) contrast with random directions (their sec. 6 relates the landscape's
    convexity to the Hessian's extreme eigenvalues). Each direction has unit Euclidean norm
    over the chosen parameters, its sign fixed so its largest-magnitude entry is positive.

    Returns ``(directions, eigenvalues)``: a list of ``n`` dicts ``name -> tensor`` and the
    eigenvalues, largest first.
    """
    n = check_int(n, "n", 1)
    names = select_params(model, params)
    H = Hessian(model, loss_fn, data, params=names)
    if n > H.dim:
        raise ValueError(f"n={n} eigenvectors asked of {H.dim} parameters; pass n <= {H.dim}.")
    eig = eigenvalues(H, k=n, which="largest", tol=tol, seed=seed, return_eigenvectors=True)
    vals = np.asarray(eig.eigenvalues, dtype=np.float64)[::-1].copy()
    vecs = np.asarray(eig.eigenvectors)[:, ::-1]
    dirs = []
    for j in range(vecs.shape[1]):
        v = vecs[:, j] / np.linalg.norm(vecs[:, j])
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        t = torch.from_numpy(np.ascontiguousarray(v)).to(dtype=H.dtype, device=H.device)
        dirs.append({k: x.clone() for k, x in H._unflatten(t).items()})
    return dirs, vals


def _like_param(v, p: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """``v`` (tensor or array) as a finite tensor of ``p``'s shape, dtype and device."""
    t = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else np.asarray(v))
    if tuple(t.shape) != tuple(p.shape):
        raise ValueError(f"{what} has shape {tuple(t.shape)} but the parameter has shape {tuple(p.shape)}; {fix}.")
    t = t.to(dtype=p.dtype, device=p.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or inf; {fix}, with finite values.")
    return t


def _check_direction(model: nn.Module, names: list[str], d, what: str) -> dict:
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a dict name -> tensor (as random_directions returns), got {type(d).__name__}.")
    named = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    sel = set(names)
    out = {}
    for k, v in d.items():
        if k not in named:
            if k in buffers:
                raise ValueError(f"{what} has key {k!r}, a buffer (e.g. BatchNorm running statistics), not a "
                                 "parameter; buffers are never perturbed, leave it out.")
            raise ValueError(f"{what} has key {k!r}, which is not a parameter of the model; its keys must be "
                             f"parameter names, from: {', '.join(named)}.")
        if k not in sel:
            raise ValueError(f"{what} has key {k!r}, which is not among the selected params; add it to params "
                             "or leave it out of the direction.")
        out[k] = _like_param(v, named[k], f"{what}[{k!r}]", "pass a direction matching the parameters")
    if not out:
        raise ValueError(f"{what} is empty; give a tensor for at least one parameter.")
    if _norm(out) == 0:
        raise ValueError(f"{what} is zero everywhere, so the landscape would be flat; pass a nonzero direction.")
    return out


def _span(span, what: str) -> tuple[float, float]:
    if isinstance(span, (int, float, np.integer, np.floating)) and not isinstance(span, bool):
        s = float(span)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{what}={span!r}: a single number s means (-s, s) and must be positive and finite.")
        return -s, s
    try:
        lo, hi = (float(x) for x in span)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (lo, hi) or a positive number s meaning (-s, s), got {span!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what}={span!r} must be finite.")
    if not lo < hi:
        raise ValueError(f"{what}=({lo}, {hi}) must have lo < hi; swap the ends or widen the span.")
    return lo, hi


def _span2(span) -> tuple[tuple[float, float], tuple[float, float]]:
    if isinstance(span, (tuple, list)) and len(span) == 2 and all(isinstance(s, (tuple, list, np.ndarray)) for s in span):
        return _span(span[0], "span[0]"), _span(span[1], "span[1]")
    s = _span(span, "span")
    return s, s


def _steps2(steps) -> tuple[int, int]:
    if isinstance(steps, (tuple, list)):
        if len(steps) != 2:
            raise ValueError(f"steps must be an int or a pair (n1, n2), got {steps!r}.")
        return check_int(steps[0], "steps[0]", 2), check_int(steps[1], "steps[1]", 2)
    s = check_int(steps, "steps", 2)
    return s, s


def _resolve(model, loss_fn, data, direction, n: int, names, seed: int):
    """``(dirs, kind, eigenvalues, labels, notes)`` for a direction spec."""
    if isinstance(direction, str):
        if direction == "filter":
            dirs = random_directions(model, n, params=names, seed=seed)
            return dirs, "filter", None, tuple(f"direction {i + 1} (filter-normalized)" for i in range(n)), []
        if direction == "eigen":
            dirs, vals = eigen_directions(model, loss_fn, data, n, params=names, seed=seed)
            return dirs, "eigen", vals, tuple(f"eigenvector {i + 1} (lambda = {v:.3g})" for i, v in enumerate(vals)), []
        raise ValueError(f"direction must be 'filter', 'eigen' or a dict name -> tensor, got {direction!r}.")
    if n == 1:
        return [_check_direction(model, names, direction, "direction")], "custom", None, ("direction",), []
    if isinstance(direction, Mapping) or not isinstance(direction, (tuple, list)) or len(direction) != 2:
        raise ValueError("directions must be 'filter', 'eigen' or a pair (dict, dict) of name -> tensor.")
    dirs = [_check_direction(model, names, d, f"directions[{i}]") for i, d in enumerate(direction)]
    return dirs, "custom", None, ("direction 1", "direction 2"), []


def _cosine_note(dirs) -> list[str]:
    if len(dirs) < 2:
        return []
    c = _dot(dirs[0], dirs[1]) / max(_norm(dirs[0]) * _norm(dirs[1]), 1e-300)
    if abs(c) > 0.05:
        return [f"the two directions are not orthogonal (cosine {c:.3f}); the plot's axes are skewed in parameter space."]
    return []


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o) for o in obj)
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(o) for o in obj.values())
    return 0


class _Evaluator:
    """Full-data loss at ``base + sum_j c_j d_j`` for many coefficient vectors ``c``.

    Same weighting as ``sharpness._Loss``: ``len(y) / N`` per batch for a mean loss, 1 for a
    sum. Only the parameters with a direction are stacked under ``vmap``; the rest, and the
    buffers, are shared by every point.
    """

    def __init__(self, model: nn.Module, loss_fn, data, dirs: list[dict], base: dict | None = None):
        self.model, self.loss_fn = model, loss_fn
        self.batches = _batches(data)
        named = dict(model.named_parameters())
        self.moving = [n for n in named if any(n in d for d in dirs)]
        theta = {n: (base[n] if base is not None and n in base else p.detach()) for n, p in named.items()}
        self.base = {n: theta[n] for n in self.moving}
        self.fixed = {n: t for n, t in theta.items() if n not in self.base}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # never the model's own
        self.dirs = [{n: d[n] for n in self.moving if n in d} for d in dirs]
        self.mean = loss_reduction(loss_fn) == "mean"
        self.n = sum(len(y) for _, y in self.batches)
        if self.n == 0:
            raise ValueError("data has no samples; pass at least one non-empty (inputs, targets) batch.")
        self.device = self.base[self.moving[0]].device
        self.act_bytes = 0
        self.notes: list[str] = []

    def _w(self, y) -> float:
        return len(y) / self.n if self.mean else 1.0

    def _params_at(self, c) -> dict:
        out = {}
        for n, b in self.base.items():
            v = b
            for j, d in enumerate(self.dirs):
                if n in d:
                    v = v + torch.as_tensor(c[j], dtype=b.dtype, device=b.device) * d[n]
            out[n] = v
        return out

    def _stacked(self, C: np.ndarray) -> dict:
        out = {}
        for n, b in self.base.items():
            v = b.unsqueeze(0).expand((len(C),) + tuple(b.shape))
            for j, d in enumerate(self.dirs):
                if n in d:
                    cj = torch.as_tensor(C[:, j], dtype=b.dtype, device=b.device).view((-1,) + (1,) * b.ndim)
                    v = v + cj * d[n]
            out[n] = v
        return out

    def one(self, c, measure: bool = False) -> float:
        """Loss at one point by plain forward passes (also validates the loss)."""
        p = {**self.fixed, **self.buffers, **self._params_at(c)}
        total = 0.0
        hooks = []
        if measure:
            sizes = []
            leaves = [m for m in self.model.modules() if not any(True for _ in m.children())]
            hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(_tensor_bytes(o))) for m in leaves]
        try:
            with torch.no_grad():
                for x, y in self.batches:
                    if measure:
                        sizes.clear()
                    out = functional_call(self.model, p, (x.to(self.device),))
                    loss = self.loss_fn(out, y.to(self.device))
                    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                        raise ValueError(f"loss_fn must return a scalar, got {shape}; use reduction='mean' or 'sum'.")
                    total += self._w(y) * float(loss)
                    if measure:
                        self.act_bytes = max(self.act_bytes, sum(sizes) + _tensor_bytes(out))
        finally:
            for h in hooks:
                h.remove()
        return total

    def many(self, C: np.ndarray) -> np.ndarray:
        """Losses at the rows of ``C`` (one forward per data batch for the whole chunk)."""
        total = None
        with torch.no_grad():
            stacked = self._stacked(C)
            for x, y in self.batches:
                x, yd = x.to(self.device), y.to(self.device)

                def f(p, x=x, yd=yd):
                    return self.loss_fn(functional_call(self.model, {**self.fixed, **self.buffers, **p}, (x,)), yd)

                loss = vmap(f)(stacked).reshape(len(C)).double()  # accumulate like one(): in float64
                total = self._w(y) * loss if total is None else total + self._w(y) * loss
        return total.detach().double().cpu().numpy()

    def point_bytes(self) -> int:
        par = sum(b.numel() * b.element_size() for b in self.base.values())
        return 2 * par + 2 * self.act_bytes


def _evaluate(ev: _Evaluator, C: np.ndarray, batch_points, progress) -> np.ndarray:
    """Losses at every row of ``C``, ``batch_points`` rows per ``vmap`` call."""
    P = len(C)
    if batch_points is None:
        budget = default_memory_budget(ev.device)
        bp = max(1, min(P, 1024, budget // max(ev.point_bytes(), 1)))
    else:
        bp = min(batch_points, P)
    out = np.empty(P, dtype=np.float64)
    batched = bp > 1
    with eval_mode(ev.model), tqdm(total=P, desc="landscape", unit="pt", disable=not show_progress(progress),
                                   leave=False) as bar:
        i = 0
        while i < P:
            j = min(P, i + bp)
            if batched:
                try:
                    out[i:j] = ev.many(C[i:j])
                except Exception as exc:  # vmap cannot handle every model: fall back, say so
                    batched = False
                    ev.notes.append(f"batched evaluation (torch.func.vmap) failed ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); evaluated one point per forward.")
                    continue
            else:
                for r in range(i, j):
                    out[r] = ev.one(C[r])
            bar.update(j - i)
            i = j
    return out


def _batch_points(batch_points):
    return None if batch_points is None else check_int(batch_points, "batch_points", 1)


def _finish(losses: np.ndarray, notes: list[str]) -> None:
    bad = int((~np.isfinite(losses)).sum())
    if bad:
        notes.append(f"{bad} of {losses.size} grid points gave a non-finite loss (NaN or inf), kept as such in "
                     "losses; far from the minimum the loss can legitimately overflow: narrow the span to avoid them.")


def _run(model, loss_fn, data, dirs, C: np.ndarray, *, base=None, batch_points=None, progress=None):
    """``(center_loss, losses at rows of C, notes)``."""
    ev = _Evaluator(model, loss_fn, data, dirs, base)
    with eval_mode(model):
        center = ev.one(np.zeros(len(dirs)), measure=True)
    losses = _evaluate(ev, C, batch_points, progress)
    notes = list(ev.notes)
    if not math.isfinite(center):
        notes.append(f"the loss at the centre is not finite ({center}).")
    return center, losses, notes


# ----------------------------------------------------------------------------------------
# public landscapes
# ----------------------------------------------------------------------------------------
def landscape_1d(model: nn.Module, loss_fn, data, direction="filter", *, span=(-1.0, 1.0), steps: int = 51,
                 params=None, seed: int = 0, batch_points: int | None = None, progress: bool | None = None) -> Landscape:
    """The loss on a line ``L(theta + alpha d)``, ``alpha`` on ``steps`` points of ``span``
    (Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the loss landscape of neural nets").

    Parameters
    ----------
    direction : ``"filter"`` (a random filter-normalized direction, :func:`random_directions`;
        ``alpha = 1`` moves each filter by its own norm), ``"eigen"`` (the top Hessian
        eigenvector, unit norm), or a dict ``name -> tensor`` (kind ``"custom"``; parameters
        left out are held fixed).
    span : ``(lo, hi)`` or a positive number ``s`` meaning ``(-s, s)``.
    steps : grid points (at least 2).
    params : parameters to perturb (names or tensors; default all trainable).
    seed : for the random direction / the Lanczos start vector.
    batch_points : grid points per batched (``vmap``) forward; default from a memory budget
        (a quarter of free memory). 1 evaluates point by point.
    progress : tqdm bar over the grid; None shows it only on a terminal.

    The model is evaluated in eval mode and its parameters and buffers are never modified.
    """
    steps = check_int(steps, "steps", 2)
    lo, hi = _span(span, "span")
    batch_points = _batch_points(batch_points)
    names = select_params(model, params)
    dirs, kind, vals, labels, notes = _resolve(model, loss_fn, data, direction, 1, names, seed)
    alphas = np.linspace(lo, hi, steps)
    center, losses, more = _run(model, loss_fn, data, dirs, alphas[:, None], batch_points=batch_points, progress=progress)
    notes += more
    _finish(losses, notes)
    return Landscape((alphas,), losses, center, kind, vals, None, None, labels, tuple(notes))


def landscape_2d(model: nn.Module, loss_fn, data, directions="filter", *, span=((-1.0, 1.0), (-1.0, 1.0)), steps=21,
                 params=None, seed: int = 0, batch_points: int | None = None, progress: bool | None = None) -> Landscape:
    """The loss on a plane ``L(theta + alpha d1 + beta d2)`` (Li, Xu, Taylor, Studer &
    Goldstein 2018, "Visualizing the loss landscape of neural nets", fig. 1 and sec. 4).

    Parameters
    ----------
    directions : ``"filter"`` (two independent random filter-normalized directions, as Li et
        al.; not orthogonalized, nearly orthogonal in high dimension), ``"eigen"`` (the top
        two Hessian eigenvectors, orthonormal), or a pair ``(dict, dict)`` (kind ``"custom"``).
    span : ``((lo1, hi1), (lo2, hi2))``, one ``(lo, hi)`` for both axes, or a positive
        number ``s`` meaning ``(-s, s)`` on both.
    steps : an int for both axes or ``(n1, n2)``; ``losses[i, j]`` is at ``(alphas[i], betas[j])``.
    params, seed, batch_points, progress : as in :func:`landscape_1d`.
    """
    n1, n2 = _steps2(steps)
    (a0, a1), (b0, b1) = _span2(span)
    batch_points = _batch_points(batch_points)
    names = select_params(model, params)
    dirs, kind, vals, labels, notes = _resolve(model, loss_fn, data, directions, 2, names, seed)
    notes += _cosine_note(dirs)
    alphas, betas = np.linspace(a0, a1, n1), np.linspace(b0, b1, n2)
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    C = np.stack([A.ravel(), B.ravel()], axis=1)
    center, losses, more = _run(model, loss_fn, data, dirs, C, batch_points=batch_points, progress=progress)
    notes += more
    losses = losses.reshape(n1, n2)
    _finish(losses, notes)
    return Landscape((alphas, betas), losses, center, kind, vals, None, None, labels, tuple(notes))


def _state(ckpt, i: int) -> Mapping:
    if isinstance(ckpt, nn.Module):
        return ckpt.state_dict()
    if isinstance(ckpt, Mapping):
        return ckpt
    raise TypeError(f"checkpoint {i} is a {type(ckpt).__name__}; pass a state_dict (dict name -> tensor) or an nn.Module.")


def _ckpt_params(model: nn.Module, ckpt, names: list[str], i: int) -> dict:
    """The selected parameters of one checkpoint, as tensors like the model's."""
    sd = _state(ckpt, i)
    named = dict(model.named_parameters())
    known = set(named) | {n for n, _ in model.named_buffers()} | set(model.state_dict())
    missing = [n for n in names if n not in sd]
    unexpected = [k for k in sd if k not in known]
    if missing or unexpected:
        hint = ""
        if unexpected and all(str(k).startswith("module.") for k in unexpected):
            hint = " (the keys start with 'module.': strip that DataParallel prefix)"
        raise ValueError(f"checkpoint {i}'s keys differ from the model's: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}{hint}; pass state_dicts of this model's architecture.")
    out = {}
    for n in names:
        out[n] = _like_param(sd[n], named[n], f"checkpoint {i}[{n!r}]", "pass checkpoints of this model's architecture")
    return out


def _sub(a: dict, b: dict) -> dict:
    return {n: a[n] - b[n] for n in a}


def _margin(margin) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise ValueError(f"margin must be a non-negative number, got {margin!r}.") from None
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"margin must be a non-negative finite number, got {margin!r}.")
    return m


def _extent(lo: float, hi: float, margin: float) -> tuple[float, float]:
    w = hi - lo
    return lo - margin * w, hi + margin * w


def checkpoint_landscape(model: nn.Module, loss_fn, data, checkpoints, *, steps=None, margin: float = 0.25,
                         params=None, batch_points: int | None = None, progress: bool | None = None) -> Landscape:
    """The loss on the line through two checkpoints or the plane through three.

    Two checkpoints: ``L(theta_0 + a (theta_1 - theta_0))`` for ``a`` from ``-margin`` to
    ``1 + margin`` (the linear interpolation of Goodfellow, Vinyals & Saxe 2015, used by Li,
    Xu, Taylor, Studer & Goldstein 2018, sec. 3); the checkpoints sit at ``a = 0`` and 1.
    Three checkpoints: the plane through them, origin ``theta_0``, an orthonormal basis by
    Gram-Schmidt (``e1`` along ``theta_1 - theta_0``), so plane distances are parameter-space
    distances; the grid covers the three points with ``margin`` times the extent on each side.

    ``checkpoints`` are state_dicts or modules of the model's architecture; ``model`` supplies
    the architecture, the buffers (BatchNorm running statistics, which are never interpolated)
    and the parameters outside ``params`` (held fixed). ``marks`` holds the checkpoints'
    coordinates and ``mark_losses`` their losses. ``steps`` defaults to 51 on a line and 21
    (per axis; or ``(n1, n2)``) on a plane.
    """
    if isinstance(checkpoints, (Mapping, nn.Module)) or not isinstance(checkpoints, (list, tuple)):
        raise TypeError("checkpoints must be a list of 2 or 3 state_dicts or modules.")
    k = len(checkpoints)
    if k not in (2, 3):
        raise ValueError(f"checkpoint_landscape needs 2 checkpoints (a line) or 3 (a plane), got {k}; "
                         "for a longer trajectory use trajectory_pca.")
    m = _margin(margin)
    batch_points = _batch_points(batch_points)
    names = select_params(model, params)
    thetas = [_ckpt_params(model, c, names, i) for i, c in enumerate(checkpoints)]
    origin = thetas[0]
    u = _sub(thetas[1], origin)
    nu = _norm(u)
    if nu == 0:
        raise ValueError("checkpoints 0 and 1 have identical parameters; the line (or plane) through them is undefined.")
    notes = []
    if any(True for _ in model.buffers()):
        notes.append("the model's own buffers (e.g. BatchNorm running statistics) are used at every point; "
                     "the checkpoints' buffers are not interpolated.")
    if k == 2:
        steps = 51 if steps is None else check_int(steps, "steps", 2)
        alphas = np.linspace(-m, 1 + m, steps)
        marks = np.array([0.0, 1.0])
        C = np.concatenate([alphas, marks])[:, None]
        center, losses, more = _run(model, loss_fn, data, [u], C, base=origin, batch_points=batch_points, progress=progress)
        notes += more
        grid = losses[:steps]
        _finish(grid, notes)
        return Landscape((alphas,), grid, center, "checkpoints", None, marks, losses[steps:],
                         ("interpolation coefficient (0: checkpoint 0, 1: checkpoint 1)",), tuple(notes))
    n1, n2 = _steps2(21 if steps is None else steps)
    dtype = next(iter(origin.values())).dtype
    e1 = {n: (t.double() / nu).to(t.dtype) for n, t in u.items()}
    v = _sub(thetas[2], origin)
    nv = _norm(v)
    c = _dot(v, e1)
    w = {n: (t.double() - c * e1[n].double()) for n, t in v.items()}
    h = _norm(w)
    tol = math.sqrt(torch.finfo(dtype).eps)
    if nv == 0 or h <= tol * max(nv, nu):
        raise ValueError(f"the three checkpoints are collinear (checkpoint 2 lies within {tol:.1e} relative of the "
                         "line through checkpoints 0 and 1), so they span no plane; pass two of them for a line.")
    e2 = {n: (t / h).to(v[n].dtype) for n, t in w.items()}
    marks = np.array([[0.0, 0.0], [nu, 0.0], [c, h]])
    (x0, x1), (y0, y1) = _extent(min(0.0, c), max(nu, c), m), _extent(0.0, h, m)
    alphas, betas = np.linspace(x0, x1, n1), np.linspace(y0, y1, n2)
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    C = np.concatenate([np.stack([A.ravel(), B.ravel()], axis=1), marks])
    center, losses, more = _run(model, loss_fn, data, [e1, e2], C, base=origin, batch_points=batch_points, progress=progress)
    notes += more
    grid = losses[: n1 * n2].reshape(n1, n2)
    _finish(grid, notes)
    return Landscape((alphas, betas), grid, center, "checkpoints", None, marks, losses[n1 * n2:],
                     ("plane axis 1 (towards checkpoint 1)", "plane axis 2"), tuple(notes))


def _traj_params(checkpoints, model, params, ignore) -> tuple[list[str], list[dict]]:
    if model is not None:
        names = select_params(model, params)
        if ignore == "biasbn":
            named = dict(model.named_parameters())
            names = [n for n in names if named[n].ndim > 1]
        return names, [_ckpt_params(model, c, names, i) for i, c in enumerate(checkpoints)]
    sd0 = _state(checkpoints[0], 0)
    if params is None:
        names = [k for k, t in sd0.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    else:
        names = [params] if isinstance(params, str) else list(params)
        if not all(isinstance(n, str) for n in names):
            raise TypeError("without a model, params must be checkpoint key names.")
    if ignore == "biasbn":
        names = [n for n in names if n in sd0 and torch.as_tensor(sd0[n]).ndim > 1]
    if not names:
        raise ValueError("no floating-point tensors to measure in the checkpoints; pass params or a model.")
    out = []
    for i, c in enumerate(checkpoints):
        sd = _state(c, i)
        missing = [n for n in names if n not in sd]
        extra = [k for k in sd if k not in sd0]
        if missing or extra:
            raise ValueError(f"checkpoint {i}'s keys differ from checkpoint 0's: missing {missing[:5]}, unexpected "
                             f"{extra[:5]}; pass checkpoints of one model.")
        d = {}
        for n in names:
            t = torch.as_tensor(sd[n].detach() if isinstance(sd[n], torch.Tensor) else np.asarray(sd[n]))
            ref = torch.as_tensor(sd0[n])
            if tuple(t.shape) != tuple(ref.shape):
                raise ValueError(f"checkpoint {i}[{n!r}] has shape {tuple(t.shape)}, checkpoint 0 has {tuple(ref.shape)}.")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"checkpoint {i}[{n!r}] contains NaN or inf; pass finite checkpoints.")
            d[n] = t.to(dtype=ref.dtype, device=ref.device)
        out.append(d)
    return names, out


_CHUNK_BYTES = 64 << 20


def trajectory_pca(checkpoints, *, model: nn.Module | None = None, loss_fn=None, data=None, steps=21,
                   margin: float = 0.25, params=None, ignore: str | None = None, batch_points: int | None = None,
                   progress: bool | None = None) -> TrajectoryPCA:
    """PCA of a training trajectory and the loss on its plane (Li, Xu, Taylor, Studer &
    Goldstein 2018, "Visualizing the loss landscape of neural nets", sec. 7).

    With ``theta_T`` the final checkpoint, the rows ``theta_i - theta_T`` (``i = 1..T``) form a
    matrix whose top two principal directions (of the centred rows, as scikit-learn's ``PCA``
    that Li et al. use) span the plane that captures most of the trajectory's movement; the
    trajectory is drawn by projecting each ``theta_i - theta_T`` onto them (final point at the
    origin). Computed through the ``T x T`` Gram matrix, streamed over parameters, so no
    ``T x n`` matrix is formed.

    Parameters
    ----------
    checkpoints : at least 3 state_dicts or modules, in training order, the last the final.
    model : gives the parameter names (else every floating-point entry of the checkpoints,
        buffers included unless ``params`` restricts them). With ``loss_fn`` and ``data`` too,
        the 2D landscape on the plane around the final weights is computed, the trajectory in
        its ``marks`` (kind ``"pca"``).
    steps, margin : grid per axis (int or pair) and the margin around the trajectory's extent.
    params : names (or parameters of ``model``) to measure.
    ignore : ``"biasbn"`` leaves out parameters with ``ndim <= 1``, as Li et al.'s code can.
    """
    if isinstance(checkpoints, (Mapping, nn.Module)) or not isinstance(checkpoints, (list, tuple)):
        raise TypeError("checkpoints must be a list of state_dicts or modules, in training order.")
    T = len(checkpoints)
    if T < 3:
        raise ValueError(f"trajectory_pca needs at least 3 checkpoints for two principal directions, got {T}; "
                         "for two use checkpoint_landscape.")
    if ignore not in ("biasbn", None):
        raise ValueError(f"ignore must be 'biasbn' or None, got {ignore!r}.")
    if (loss_fn is not None or data is not None) and (model is None or loss_fn is None or data is None):
        raise ValueError("for the landscape on the PCA plane pass model, loss_fn and data together "
                         "(or none of loss_fn and data for the PCA alone).")
    m = _margin(margin)
    n1, n2 = _steps2(steps)
    batch_points = _batch_points(batch_points)
    names, thetas = _traj_params(list(checkpoints), model, params, ignore)
    final = thetas[-1]
    G = np.zeros((T, T))
    step = max(1, _CHUNK_BYTES // (8 * T))
    for n in names:
        fin = final[n].reshape(-1)
        for s in range(0, fin.numel(), step):
            D = torch.stack([(t[n].reshape(-1)[s:s + step].double() - fin[s:s + step].double()) for t in thetas])
            G += (D @ D.T).cpu().numpy()
    H = np.eye(T) - 1.0 / T
    lam, U = np.linalg.eigh(H @ G @ H)
    lam, U = lam[::-1], U[:, ::-1]
    total = float(np.clip(lam, 0, None).sum())
    if total <= 0 or lam[1] <= 1e-10 * lam[0]:
        what = "identical" if total <= 0 else "on one line"
        raise ValueError(f"the checkpoints are {what}: the trajectory has no second principal direction; "
                         "for a line use checkpoint_landscape with two checkpoints.")
    s = np.sqrt(lam[:2])
    U2 = U[:, :2]
    coords = G @ U2 / s  # <theta_i - theta_T, e_k>, since e_k = D^T u_k / s_k
    sign = np.where(coords[0] < 0, -1.0, 1.0)
    coords, U2 = coords * sign, U2 * sign
    evr = lam[:2] / total
    dirs = []
    for k in range(2):
        uk = torch.from_numpy(np.ascontiguousarray(U2[:, k] / s[k]))
        d = {}
        for n in names:
            acc = torch.zeros(final[n].shape, dtype=torch.float64, device=final[n].device)
            for i, t in enumerate(thetas):
                acc += float(uk[i]) * (t[n].double() - final[n].double())
            d[n] = acc.to(final[n].dtype)
        dirs.append(d)
    sq = np.diag(G)
    off = np.sqrt(np.clip(sq - (coords ** 2).sum(1), 0, None))
    notes = [f"explained variance ratio {evr[0]:.4f}, {evr[1]:.4f} (sum {evr.sum():.4f})."]
    if model is None and any(str(n).endswith(("running_mean", "running_var")) for n in names):
        notes.append("without a model every floating-point entry counts, BatchNorm running statistics included; "
                     "pass model= or params= to measure parameters only.")
    land = None
    if loss_fn is not None:
        (x0, x1) = _extent(float(coords[:, 0].min()), float(coords[:, 0].max()), m)
        (y0, y1) = _extent(float(coords[:, 1].min()), float(coords[:, 1].max()), m)
        alphas, betas = np.linspace(x0, x1, n1), np.linspace(y0, y1, n2)
        A, B = np.meshgrid(alphas, betas, indexing="ij")
        C = np.concatenate([np.stack([A.ravel(), B.ravel()], axis=1), coords])
        base = _ckpt_params(model, checkpoints[-1], select_params(model, params), T - 1)  # biases too under biasbn
        center, losses, more = _run(model, loss_fn, data, dirs, C, base=base, batch_points=batch_points, progress=progress)
        lnotes = notes[:1] + more
        grid = losses[: n1 * n2].reshape(n1, n2)
        _finish(grid, lnotes)
        land = Landscape((alphas, betas), grid, center, "pca", None, coords.copy(), losses[n1 * n2:],
                         (f"PC1 ({evr[0]:.1%})", f"PC2 ({evr[1]:.1%})"), tuple(lnotes))
    np_dirs = tuple({n: t.detach().cpu().numpy() for n, t in d.items()} for d in dirs)
    return TrajectoryPCA(coords, evr, off, tuple(names), land, np_dirs, tuple(notes))
