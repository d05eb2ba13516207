"""Input-space geometry of a network: the pull-back metric and the curvature of the loss in x.

A network ``f`` maps its input space into an output (or hidden-layer) space. Pulling the
Euclidean metric of the output back through ``f`` gives the Riemannian metric
``G(x) = J(x)^T J(x)`` on input space (Hauser & Ray 2017, "Principles of Riemannian geometry
in neural networks"); its volume element ``sqrt(det G)`` says how much ``f`` magnifies a small
area around ``x``. Zavatone-Veth, Yang, Rubinfien & Pehlevan (2023), "Neural networks learn to
magnify areas near decision boundaries", show that training makes this magnification largest
along the decision boundaries. :func:`input_metric` measures ``G``, its spectrum and the log
volume element per point.

:func:`input_curvature` measures the curvature of the *loss* in input space, the top
eigenvalues of the input Hessian ``d^2 L / dx^2`` per example, which Moosavi-Dezfooli, Uesato,
Fawzi & Frossard (2019), "Robustness via curvature regularization, and vice versa", tie to
adversarial vulnerability.

Both evaluate the model in eval mode (:func:`shapelens.probe.eval_mode`), one example at a
time (a batch of one), with ``torch.func``; the model's train/eval flags are restored after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, jacfwd, jacrev, jvp, vjp, vmap

from .._checks import check_int, show_progress, warn
from .._results import Result
from ..probe import _first_tensor, _model_device_dtype, _resolve_layers, eval_mode
from .spectra import eigenvalues as _lanczos

__all__ = ["input_metric", "InputMetric", "input_curvature", "InputCurvature"]

#: ``method="auto"`` uses the dense Jacobian when the flattened input has at most this many
#: dimensions (and the output at most ``_DENSE_MAX_OUT``), Lanczos otherwise.
_DENSE_MAX_IN = 256
_DENSE_MAX_OUT = 4096
#: Largest per-point metric tensor ``(N, d, d)`` float64 the dense method will hold.
_METRIC_BUDGET_BYTES = 2 * 1024 ** 3
#: Largest Jacobian chunk ``(batch, m, d)`` the dense method builds at once.
_CHUNK_BUDGET_BYTES = 256 * 1024 ** 2


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputMetric(Result):
    """The pull-back metric ``G(x) = J(x)^T J(x)`` at each of ``N`` inputs.

    ``eigenvalues`` (N, r), descending: all ``d`` eigenvalues for ``method="dense"``, the
    top ``k`` for ``"lanczos"``. ``log_volume`` (N,): ``0.5 * sum(log lambda_i)`` over the
    top ``rank`` eigenvalues, i.e. the log of the ``rank``-dimensional volume element
    (``rank = d`` gives ``0.5 log det G``; fewer when ``G`` is rank deficient, a
    pseudo-determinant, see ``notes``). ``metric`` (N, d, d) for the dense method, else
    ``None``. ``points`` holds the inputs when they are 2-D (for :meth:`plot`), else ``None``.
    ``n_matvec`` counts the ``J^T J v`` products of the Lanczos method (0 for dense).
    """

    eigenvalues: np.ndarray
    log_volume: np.ndarray
    metric: np.ndarray | None
    method: str
    layer: str | None
    rank: int
    input_dim: int
    output_dim: int
    n_matvec: int = 0
    points: np.ndarray | None = None
    notes: tuple = ()

    def plot(self, ax=None, X2d=None):
        """For 2-D inputs (or with ``X2d`` (N, 2) coordinates given), the log volume element
        as a filled-contour heat map with the points on top, the picture of Zavatone-Veth et
        al. (2023), fig. 1; otherwise a histogram of the log volume element."""
        ax = self._axes(ax, (5, 4))
        lv = np.asarray(self.log_volume, dtype=float)
        pts = self.points if X2d is None else np.asarray(X2d, dtype=float)
        if pts is not None and (pts.ndim != 2 or pts.shape != (len(lv), 2)):
            raise ValueError(f"X2d must have shape ({len(lv)}, 2), one 2-D coordinate per point; got {pts.shape}.")
        ok = np.isfinite(lv)
        label = f"log volume element ({self.rank}-dim)"
        if pts is not None:
            mappable = None
            if ok.sum() >= 16:
                try:
                    mappable = ax.tricontourf(pts[ok, 0], pts[ok, 1], lv[ok], levels=30, cmap="viridis")
                except (ValueError, RuntimeError):  # collinear points: no triangulation
                    mappable = None
            sc = ax.scatter(pts[ok, 0], pts[ok, 1], c=lv[ok], s=8 if mappable is not None else 20,
                            cmap="viridis", edgecolors="none")
            if (~ok).any():
                ax.scatter(pts[~ok, 0], pts[~ok, 1], marker="x", c="red", s=15, label="degenerate (log vol = -inf)")
                ax.legend(loc="best", fontsize=7)
            ax.figure.colorbar(mappable if mappable is not None else sc, ax=ax, label=label)
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            ax.set_title("Pull-back volume element")
        else:
            ax.hist(lv[ok], bins=min(50, max(5, int(np.sqrt(ok.sum())))), color="C0")
            ax.set_xlabel(label)
            ax.set_ylabel("points")
            ax.set_title("Pull-back volume element")
            ax.grid(alpha=0.3)
        return ax


@dataclass(frozen=True)
class InputCurvature(Result):
    """Per-example curvature of the loss in input space.

    ``eigenvalues`` (N, k): the ``k`` algebraically largest eigenvalues of the input Hessian
    ``d^2 L(f(x_i), y_i) / dx_i^2``, descending; ``gradient_norm`` (N,): ``|dL/dx_i|``;
    ``loss`` (N,): the per-example loss; ``n_matvec``: Hessian-vector products in total."""

    eigenvalues: np.ndarray
    gradient_norm: np.ndarray
    loss: np.ndarray
    n_matvec: int
    notes: tuple = ()

    def plot(self, ax=None):
        """Largest input-Hessian eigenvalue against input-gradient norm, one dot per example
        (Moosavi-Dezfooli et al. (2019) relate both to robustness)."""
        ax = self._axes(ax, (5, 4))
        top = np.asarray(self.eigenvalues)[:, 0]
        ax.scatter(self.gradient_norm, top, s=12, alpha=0.7)
        ax.set_xlabel("input-gradient norm |dL/dx|")
        ax.set_ylabel("largest input-Hessian eigenvalue")
        if np.all(self.gradient_norm > 0):
            ax.set_xscale("log")
        ax.set_title("Input-space curvature of the loss")
        ax.grid(alpha=0.3)
        return ax


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _model_dtype(model: nn.Module):
    devices, dtype = _model_device_dtype(model)
    return (next(iter(devices)) if devices else torch.device("cpu")), dtype


def _check_inputs(x, model: nn.Module, name: str = "x") -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor):
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy raises many kinds
            raise TypeError(f"{name} could not be read as an array ({exc}); pass a tensor of shape (N, ...).") from exc
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"{name} has dtype {arr.dtype}, which is not numeric; pass a float tensor of shape (N, ...).")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x.detach()
    if x.is_complex():
        raise TypeError(f"{name} is complex; pass real-valued inputs.")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; the input-space metric needs real-valued inputs that can be "
            f"differentiated: convert it to float first, e.g. x.float() (or x.double()). Token ids have no "
            "input-space geometry; pass embeddings and the model from the embedding layer on instead."
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be batch-first with shape (N, ...), got shape {tuple(x.shape)}; use "
            "x.reshape(-1, 1) for N one-dimensional inputs or x[None] for a single input."
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one input with at least one feature.")
    finite = torch.isfinite(x.reshape(len(x), -1))
    if not bool(finite.all()):
        rows = torch.nonzero(~finite.all(dim=1)).flatten()
        raise ValueError(
            f"{name} contains {int((~finite).sum())} NaN/infinite values in {len(rows)} inputs "
            f"(first: {rows[:5].tolist()}); remove or impute them first."
        )
    device, dtype = _model_dtype(model)
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    return x.to(device)


def _find_layer(model: nn.Module, layer: str) -> nn.Module:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) as in model.named_modules(), got {layer!r}.")
    (name,), _ = _resolve_layers(model, [layer])  # the probe's rules and error (lists the names)
    return dict(model.named_modules())[name]


def _bar(total: int, desc: str, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt", disable=not show_progress(progress), leave=False)


# --------------------------------------------------------------------------------------
# the per-example map x -> f(x) (flattened) evaluated on a batch of one
# --------------------------------------------------------------------------------------


class _LayerReached(Exception):
    """Raised by the forward hook to stop the forward pass once the wanted layer has run."""


class _Map:
    """``x_flat (d,) -> output (m,)``: the model (or the first output of ``layer``) on the batch
    of one ``x_flat.reshape(1, *shape)``, in a functional call over detached parameters."""

    def __init__(self, model: nn.Module, shape: tuple, layer: str | None):
        self.model, self.shape, self.layer = model, tuple(shape), layer
        self.module = None if layer is None else _find_layer(model, layer)
        self.state = {**{n: p.detach() for n, p in model.named_parameters()},
                      **{n: b.detach() for n, b in model.named_buffers()}}

    def raw(self, xf: torch.Tensor):
        """The model's own output (for a loss function), not flattened."""
        return functional_call(self.model, self.state, (xf.reshape(1, *self.shape),))

    def __call__(self, xf: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return _first_tensor(self.raw(xf), "model output").reshape(-1)
        box = []

        def hook(mod, args, output):
            box.append(output)
            raise _LayerReached  # the rest of the network does not matter

        handle = self.module.register_forward_hook(hook)
        try:
            self.raw(xf)
        except _LayerReached:
            pass
        finally:
            handle.remove()
        if not box:
            raise ValueError(
                f"layer {self.layer!r} is never called in the forward pass of {type(self.model).__name__}, so "
                "the input-space metric at it is undefined; choose a module that the forward pass runs "
                "(see model.named_modules())."
            )
        return _first_tensor(box[0], self.layer).reshape(-1)


def _map_points(fn, X: torch.Tensor) -> torch.Tensor:
    """``fn`` over the rows of ``X`` with ``vmap``, or a Python loop when the model cannot be
    vmapped (data-dependent control flow, ``.item()``, in-place ops on inputs)."""
    try:
        return vmap(fn)(X)
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return torch.stack([fn(xi) for xi in X])


# --------------------------------------------------------------------------------------
# per-point matrix-free products
# --------------------------------------------------------------------------------------


def _metric_fast(fmap: _Map, xi: torch.Tensor):
    """``v -> J^T (J v)`` at ``xi`` on one kept autograd graph: ``J^T u`` is one backward pass
    with ``create_graph``; ``J v`` the derivative of that linear function of ``u`` along ``v``
    (the "double-vjp" form of a Jacobian-vector product); ``J^T (J v)`` a second backward
    pass. No forward pass per product: ~20x cheaper than ``torch.func`` ``jvp`` + ``vjp`` on
    small models. Raises RuntimeError where the backward pass is not differentiable."""
    with torch.enable_grad():
        x = xi.detach().clone().requires_grad_(True)
        out = fmap(x)
        u = torch.zeros_like(out, requires_grad=True)
        (gx,) = torch.autograd.grad(out, x, u, create_graph=True)  # raises if out does not depend on x
    if not gx.requires_grad:
        raise RuntimeError("J^T u does not depend on u: the backward pass is not differentiable")

    def mv(v):
        with torch.enable_grad():
            (Jv,) = torch.autograd.grad(gx, u, v.reshape(x.shape), retain_graph=True)
            (JtJv,) = torch.autograd.grad(out, x, Jv, retain_graph=True)
        return JtJv

    return mv


def _metric_func(fmap: _Map, xi: torch.Tensor):
    """``v -> J^T (J v)`` by ``torch.func``: a ``jvp`` (forward mode) then a ``vjp``."""
    _, pull = vjp(fmap, xi)
    return lambda v: pull(jvp(fmap, (xi,), (v,))[1])[0]


def _hessian_fast(loss_at, xi: torch.Tensor):
    """Input gradient, loss and ``v -> H v`` by differentiating the gradient on one kept
    autograd graph (Pearlmutter 1994, reverse-over-reverse)."""
    with torch.enable_grad():
        x = xi.detach().clone().requires_grad_(True)
        loss = loss_at(x)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)

    def mv(v):
        if not g.requires_grad:  # the gradient is constant in x: a loss linear in x
            return torch.zeros_like(x)
        with torch.enable_grad():
            return torch.autograd.grad(g, x, v.reshape(x.shape), retain_graph=True)[0]

    return g.detach(), loss.detach(), mv


def _hessian_func(loss_at, xi: torch.Tensor):
    """Input gradient, loss and ``v -> H v`` by ``torch.func`` forward-over-reverse
    (``jvp`` of ``grad``)."""
    g, loss = grad_and_value(loss_at)(xi)
    return g, loss, lambda v: jvp(lambda z: grad_and_value(loss_at)(z)[0], (xi,), (v,))[1]


def _first_working(fast, func):
    """``fast(*args)``, or ``func(*args)`` at a point where the fast form cannot be built
    (e.g. an output that does not depend on the input there)."""

    def products(*args):
        try:
            return fast(*args)
        except RuntimeError:
            return func(*args)

    return products


def _pick_products(fast, func, d: int, dtype, device, seed: int) -> tuple[str, str | None]:
    """Choose the product implementation once per call, at the first point: the fast
    autograd one when it agrees with ``torch.func`` on a random vector, the ``torch.func``
    one otherwise. Returns ``(choice, why)`` with ``why`` in ``None`` (they agree),
    ``"fast failed"``, ``"disagree"`` or ``"no func"`` (torch.func could not run)."""
    v = torch.randn(d, generator=torch.Generator().manual_seed(int(seed) + 1), dtype=torch.float64)
    v = v.to(device=device, dtype=dtype)
    try:
        a = fast()(v)
    except RuntimeError:
        return "func", "fast failed"
    try:
        b = func()(v)
    except (RuntimeError, NotImplementedError):
        return "fast", "no func"
    tol = max(1e-3, 1e4 * torch.finfo(dtype).eps)  # dropped terms are O(1); rounding in saturated nets is not tiny
    if float((a - b).norm()) <= tol * max(float(b.norm()), float(a.norm()), torch.finfo(dtype).tiny):
        return "fast", None
    return "func", "disagree"


# --------------------------------------------------------------------------------------
# Lanczos on one point's operator, with deflation when the Krylov space closes early
# --------------------------------------------------------------------------------------


class _PointOperator:
    """A ``d x d`` symmetric operator for :func:`shapelens.curvature.spectra.eigenvalues`:
    ``v -> A v - c Q Q^T v`` (the shift moves already-found eigenpairs ``Q`` to the bottom)."""

    def __init__(self, mv, d: int, dtype, device, Q=None, shift: float = 0.0):
        self._mv, self.dim, self.dtype, self.device = mv, d, dtype, device
        self.Q, self.shift = Q, shift
        self.n = 0

    @property
    def shape(self):
        return (self.dim, self.dim)

    def matvec(self, v):
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype).reshape(-1)
        self.n += 1
        out = self._mv(v).reshape(-1)
        if self.Q is not None:
            out = out - self.shift * (self.Q @ (self.Q.T @ v))
        return out


def _top_eigs(mv, d: int, k: int, dtype, device, tol: float, seed: int, rank_bound: int | None, zero_rtol: float):
    """The ``k`` algebraically largest eigenvalues (descending) of the symmetric operator
    ``mv`` and the number of products used.

    Single-vector Lanczos finds one copy of each distinct eigenvalue its start vector touches.
    When the Krylov space closes before ``k`` values are found (the operator has fewer than
    ``k`` distinct eigenvalues, e.g. a rank-deficient metric), every distinct eigenvalue is
    among those found, and the rest are copies: they are found by restarting on the
    orthogonal complement (the found pairs shifted below the spectrum), or, for a metric of
    rank at most ``rank_bound`` whose nonzero eigenvalues are all found, are zero.
    """
    vals: list[float] = []
    vecs: list[np.ndarray] = []
    n_mv = 0
    for rnd in range(k + 1):
        need = k - len(vals)
        M = max((abs(v) for v in vals), default=0.0)
        Q = None
        if vecs:
            Q = torch.from_numpy(np.stack(vecs, axis=1)).to(device=device, dtype=dtype)
        op = _PointOperator(mv, d, dtype, device, Q, 3.0 * M)
        e = _lanczos(op, need, "largest", tol=tol, seed=seed + 7919 * rnd, return_eigenvectors=True)
        n_mv += op.n
        th = np.asarray(e.eigenvalues)[::-1]
        U = np.asarray(e.eigenvectors)[:, ::-1]
        if rnd == 0 and len(th) == need:
            return th.astype(float), n_mv
        if rnd > 0:  # drop the shifted copies of already-found pairs (at <= -2M; genuine ones >= -M)
            keep = th > -1.5 * M
            th, U = th[keep], U[:, keep]
        vals.extend(float(t) for t in th)
        vecs.extend(U[:, j] for j in range(U.shape[1]))
        if len(vals) >= k:
            break
        M = max(abs(v) for v in vals) if vals else 0.0
        n_nonzero = sum(v > zero_rtol * M for v in vals)
        if M == 0.0 or (rank_bound is not None and n_nonzero >= rank_bound):
            vals.extend([0.0] * (k - len(vals)))
            break
    if len(vals) < k:  # pragma: no cover - needs a start vector orthogonal to an eigenspace
        warn(f"Lanczos found only {len(vals)} of k={k} eigenvalues; the rest are reported as NaN.")
        vals.extend([float("nan")] * (k - len(vals)))
    return np.sort(np.asarray(vals, dtype=float))[::-1][:k], n_mv


# --------------------------------------------------------------------------------------
# input_metric
# --------------------------------------------------------------------------------------


def input_metric(model: nn.Module, x, layer: str | None = None, *, method: str = "auto", k: int | None = None,
                 batch_size: int | None = None, seed: int = 0, tol: float = 1e-6, rank: int | None = None,
                 progress=None) -> InputMetric:
    """The pull-back (input-space) Riemannian metric ``G(x) = J(x)^T J(x)`` of a network at
    each input, its eigenvalues and its log volume element.

    ``J(x)`` is the Jacobian of the map from the flattened input (dimension ``d``) to the
    flattened output of the model, or of the submodule named ``layer`` (a name from
    ``model.named_modules()``, captured with a forward hook in a functional call; the forward
    pass stops there). Following Hauser & Ray (2017), "Principles of Riemannian geometry in
    neural networks", and Zavatone-Veth, Yang, Rubinfien & Pehlevan (2023), "Neural networks
    learn to magnify areas near decision boundaries", ``sqrt(det G(x))`` is the factor by
    which the network magnifies a small input area at ``x``; trained classifiers magnify most
    along their decision boundaries.

    Each input is evaluated alone (a batch of one) with the model in eval mode
    (:func:`shapelens.probe.eval_mode`; train/eval flags restored after), so the metric of an
    example never depends on the rest of the batch.

    Parameters
    ----------
    model : the ``nn.Module``; its output (or the layer's) may have any shape, and is
        flattened per example to a vector of dimension ``m``. A tuple/dict output is read
        like :func:`shapelens.probe.capture` does (first tensor / ``last_hidden_state``).
    x : float inputs of shape ``(N, ...)``, e.g. ``(N, 2)`` or images ``(N, 1, 28, 28)``;
        converted to the model's dtype and device.
    layer : ``None`` (the model's output) or a module name; the first call of that module
        counts.
    method : ``"dense"``: the full Jacobian per point by ``torch.func.jacrev`` (or
        ``jacfwd`` when ``d <= m``) under ``vmap``; returns ``metric`` (N, d, d) and all ``d``
        eigenvalues (squared singular values of ``J``, zero-padded when ``m < d``).
        ``"lanczos"``: matrix-free, the top ``k`` eigenvalues per point by Lanczos
        (:func:`shapelens.curvature.spectra.eigenvalues`) on ``v -> J^T (J v)``, a
        Jacobian-vector product then a vector-Jacobian product, on one autograd graph kept
        per point (``J v`` by the double-vjp trick); ``torch.func.jvp``/``vjp`` instead when
        a check at the first point finds the model's backward pass not differentiable;
        ``metric`` is ``None``. ``"auto"``: dense when ``d <= 256``, ``m <= 4096`` and the
        (N, d, d) metric fits in 2 GiB, else Lanczos.
    k : eigenvalues per point for Lanczos (default ``min(10, d)``); must be ``1 <= k <= d``.
        The dense method returns all ``d`` and ignores ``k`` (it is still validated).
    batch_size : inputs per ``vmap`` chunk of the dense method (default: as many as keep one
        chunk's Jacobian under 256 MiB, at most 256).
    seed : start vectors of Lanczos. tol : Lanczos residual tolerance (relative).
    rank : dimension of the volume element (see below); ``None`` picks it from the data.
    progress : tqdm bar over points/chunks; ``None`` shows it only on a terminal.

    The log volume element
    ----------------------
    ``log_volume = 0.5 * sum_{i <= r} log(lambda_i)`` over the top ``r = rank`` eigenvalues,
    the log of the ``r``-dimensional volume element. With ``G`` of full rank ``d`` (needs
    ``m >= d``) it is ``0.5 * log det G``. When ``m < d``, ``G`` has rank ``<= m`` and
    ``det G = 0``: the value is then the log of the pseudo-determinant, ``0.5 * sum log`` of
    the ``m`` nonzero eigenvalues, the volume element on the row space of ``J``. Maps of
    lower structural rank are treated alike (a softmax output of ``C`` classes has rank
    ``<= C - 1``). By default ``r`` is the median over the points of the numerical rank of
    ``G`` (eigenvalues above ``(max(m, d) * eps)^2 * lambda_max`` for the dense method,
    ``100 * eps * lambda_max`` for Lanczos; ``eps`` of the model's dtype), which ignores
    rounding noise in structurally zero eigenvalues; pass ``rank`` to fix it (do, for
    softmax outputs: where the softmax saturates, its structurally zero direction is lost
    in rounding, e.g. ``rank=C - 1``). For Lanczos
    ``r <= k``: the volume element of the top-``k`` subspace, equal to the dense value when
    ``k >= rank``. Points whose numerical rank is below ``r`` get ``-inf`` (and a warning).
    ``notes`` records which case applies. Eigenvalues are clipped at 0 (``G`` is PSD).

    Limitation: single-vector Lanczos finds one copy of an exactly repeated *nonzero*
    eigenvalue unless its Krylov space closes (then copies are found by deflation);
    repeated zero eigenvalues (``m < d``) are handled.

    Raises
    ------
    TypeError for a non-module model or integer/bool/complex ``x`` (convert with
    ``x.float()``); ValueError for empty or non-finite ``x``, a bad ``method``, ``k`` outside
    ``[1, d]``, ``rank`` above the eigenvalues available, a non-finite Jacobian, a layer
    that the forward pass never reaches;
    :class:`shapelens.probe.UnknownLayerError` (a ValueError and KeyError) for an unknown
    layer name, listing the available ones.
    """
    x = _check_inputs(x, model)
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lanczos', got {method!r}.")
    N, shape = x.shape[0], tuple(x.shape[1:])
    d = int(np.prod(shape))
    k_given = k is not None
    k = min(10, d) if k is None else check_int(k, "k", 1)
    if k > d:
        raise ValueError(f"k={k} eigenvalues asked of a metric on a {d}-dimensional input (x of shape "
                         f"{tuple(x.shape)}); pass k <= {d}.")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}.")
    fmap = _Map(model, shape, layer)
    X = x.reshape(N, d)
    with eval_mode(model):
        with torch.no_grad():
            m = int(fmap(X[0]).numel())
        if m == 0:
            raise ValueError(f"the {'layer ' + repr(layer) if layer else 'model'} output is empty; the metric needs m >= 1 outputs.")
        if method == "auto":
            fits = N * d * d * 8 <= _METRIC_BUDGET_BYTES
            method = "dense" if (d <= _DENSE_MAX_IN and m <= _DENSE_MAX_OUT and fits) else "lanczos"
        if method == "dense":
            res = _dense_metric(fmap, X, d, m, batch_size, progress)
        else:
            res = _lanczos_metric(fmap, X, d, m, k, tol, seed, progress)
    eig, metric, n_mv, zero_rtol, product_note = res
    eig = np.maximum(eig, 0.0)  # G is positive semi-definite: negative Ritz values are rounding
    cap = min(m, d) if method == "dense" else min(m, d, k)
    nonzero = eig > zero_rtol * eig[:, :1]
    ranks = nonzero.sum(axis=1)
    notes = [product_note] if product_note else []
    if method == "dense" and k_given:
        notes.append("k is ignored by method='dense' (all d eigenvalues are returned).")
    if rank is None:
        r = int(np.sort(ranks)[(N - 1) // 2])  # the (lower) median numerical rank: robust to rounding noise
        how = "the median numerical rank of G over the points"
    else:
        r = check_int(rank, "rank", 1)
        if r > cap:
            raise ValueError(f"rank={r} exceeds the {cap} eigenvalues available (min(m, d{', k' if method == 'lanczos' else ''})"
                             f" = {cap}); pass rank <= {cap} or rank=None.")
        how = "rank given by the caller"
    if r == 0:
        logv = np.full(N, -np.inf)
        notes.append("G is numerically zero at most points (the map is locally constant): log_volume is -inf.")
    else:
        top = np.where(nonzero[:, :r], eig[:, :r], 0.0)
        with np.errstate(divide="ignore"):
            logv = 0.5 * np.log(top).sum(axis=1)
        if method == "lanczos":
            notes.append(f"Lanczos: top k={k} eigenvalues per point; log_volume is the {r}-dimensional volume element "
                         "over the top eigenvalues (the full one when k >= the rank of G).")
        if r == d:
            notes.append("log_volume = 0.5 * log det G (G has full rank d).")
        elif m < d and r == min(m, k if method == "lanczos" else m):
            notes.append(f"output dim m={m} < input dim d={d}: G has rank <= {m} and det G = 0; log_volume is "
                         f"0.5 * sum log of the top {r} eigenvalues (pseudo-determinant: the {r}-dim volume element).")
        else:
            notes.append(f"log_volume is 0.5 * sum log of the top {r} eigenvalues ({how}; det G = 0 beyond it, e.g. "
                         f"softmax outputs have rank <= classes - 1): the {r}-dim volume element (pseudo-determinant).")
    n_deg = int((ranks < r).sum()) if r > 0 else 0
    if n_deg:
        notes.append(f"{n_deg} of {N} points have numerical rank < {r}: their log_volume is -inf.")
        warn(f"the metric is degenerate (numerical rank < {r}) at {n_deg} of {N} points; their log volume element is -inf.")
    pts = X.detach().cpu().double().numpy() if d == 2 else None
    return InputMetric(eigenvalues=eig, log_volume=np.asarray(logv, dtype=float), metric=metric, method=method,
                       layer=layer, rank=r, input_dim=d, output_dim=m, n_matvec=int(n_mv), points=pts,
                       notes=tuple(notes))


def _dense_metric(fmap: _Map, X: torch.Tensor, d: int, m: int, batch_size, progress):
    N = X.shape[0]
    if N * d * d * 8 > _METRIC_BUDGET_BYTES:
        raise ValueError(
            f"method='dense' would hold the metric of {N} points as an ({N}, {d}, {d}) float64 array, "
            f"{N * d * d * 8 / 2 ** 30:.1f} GiB (budget {_METRIC_BUDGET_BYTES / 2 ** 30:.0f} GiB); pass fewer points "
            "or method='lanczos' (top-k eigenvalues without the matrix)."
        )
    if batch_size is None:
        item = max(1, m * d * X.element_size() * 3)
        batch_size = int(max(1, min(256, _CHUNK_BUDGET_BYTES // item)))
    else:
        batch_size = check_int(batch_size, "batch_size", 1)
    jac = jacfwd(fmap) if d <= m else jacrev(fmap)
    metric = np.empty((N, d, d))
    eig = np.zeros((N, d))
    bar = _bar(N, "input metric", progress)
    try:
        for s in range(0, N, batch_size):
            J = _map_points(jac, X[s:s + batch_size]).detach()  # (b, m, d)
            if not bool(torch.isfinite(J).all()):
                bad = s + int(torch.nonzero(~torch.isfinite(J).reshape(len(J), -1).all(1))[0])
                raise ValueError(f"the Jacobian at input {bad} is not finite; check the model's output there.")
            G = torch.einsum("bmd,bme->bde", J, J)
            sv = torch.linalg.svdvals(J.double())  # accurate small eigenvalues: lambda = s^2
            metric[s:s + len(J)] = G.double().cpu().numpy()
            eig[s:s + len(J), : sv.shape[1]] = (sv ** 2).cpu().numpy()
            bar.update(len(J))
    finally:
        bar.close()
    eps = torch.finfo(X.dtype).eps
    return eig, metric, 0, (max(m, d) * eps) ** 2, None  # numpy.linalg.matrix_rank's tolerance on s, squared


def _lanczos_metric(fmap: _Map, X: torch.Tensor, d: int, m: int, k: int, tol: float, seed: int, progress):
    N = X.shape[0]
    eig = np.zeros((N, k))
    n_mv = 0
    eps = torch.finfo(X.dtype).eps
    zero_rtol = 100 * eps
    choice, why = _pick_products(lambda: _metric_fast(fmap, X[0]), lambda: _metric_func(fmap, X[0]),
                                 d, X.dtype, X.device, seed)
    note = {None: None,
            "fast failed": "products by torch.func (jvp/vjp): the model's backward pass is not differentiable.",
            "disagree": "products by torch.func (jvp/vjp): double backward disagreed with them (a backward pass that "
                        "is not differentiable somewhere in the model, e.g. a custom autograd function).",
            "no func": "products by double backward (torch.func's forward mode could not run on this model to "
                       "cross-check them)."}[why]
    products = _metric_func if choice == "func" else _first_working(_metric_fast, _metric_func)
    bar = _bar(N, "input metric (Lanczos)", progress)
    try:
        for i in range(N):
            mv = products(fmap, X[i])
            vals, n = _top_eigs(mv, d, k, X.dtype, X.device, tol, seed, m, zero_rtol)
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"the metric at input {i} is not finite; check the model's output there.")
            eig[i] = vals
            n_mv += n
            bar.update(1)
    finally:
        bar.close()
    return eig, None, n_mv, zero_rtol, note


# --------------------------------------------------------------------------------------
# input_curvature
# --------------------------------------------------------------------------------------


def input_curvature(model: nn.Module, loss_fn, x, y, *, k: int = 1, seed: int = 0, tol: float = 1e-6,
                    progress=None) -> InputCurvature:
    """Per-example curvature of the loss in input space: the ``k`` largest eigenvalues of the
    input Hessian ``H_i = d^2 L(f(x_i), y_i) / dx_i^2`` and the input-gradient norm
    ``|dL/dx_i|``, after Moosavi-Dezfooli, Uesato, Fawzi & Frossard (2019), "Robustness via
    curvature regularization, and vice versa" (large input curvature goes with adversarial
    vulnerability; their CURE regularizer penalizes it).

    The loss of example ``i`` is ``loss_fn(model(x_i[None]), y_i[None])`` (a batch of one,
    model in eval mode, flags restored after); ``H_i v`` (Pearlmutter 1994) differentiates
    the input gradient on one autograd graph kept per example, cross-checked at the first
    points against ``torch.func`` forward-over-reverse (``jvp`` of ``grad``), which is used
    instead, with a warning, when they disagree (second derivatives through a custom
    autograd function whose backward is not differentiable are unreliable either way). The
    eigenvalues come from Lanczos (:func:`shapelens.curvature.spectra.eigenvalues`, ``which="largest"``,
    algebraic: the most positive curvature). Inputs of any shape ``(N, ...)``; the Hessian is
    over the flattened input of dimension ``d``.

    Raises TypeError for integer/bool ``x`` (convert with ``x.float()``), ValueError for
    empty or non-finite ``x``, ``len(y) != len(x)``, ``k`` outside ``[1, d]``, a loss that is
    not a scalar (use ``reduction="mean"`` or ``"sum"``) or not finite at some example.
    """
    x = _check_inputs(x, model)
    N, shape = x.shape[0], tuple(x.shape[1:])
    d = int(np.prod(shape))
    k = check_int(k, "k", 1)
    if k > d:
        raise ValueError(f"k={k} eigenvalues asked of the Hessian over a {d}-dimensional input; pass k <= {d}.")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}.")
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(np.asarray(y))
    if y.ndim == 0 or len(y) != N:
        raise ValueError(f"y must have one target per input along axis 0: got shape {tuple(y.shape)} for {N} inputs.")
    y = y.to(x.device)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}.")
    fmap = _Map(model, shape, None)
    X = x.reshape(N, d)
    eig = np.zeros((N, k))
    gnorm = np.zeros(N)
    losses = np.zeros(N)
    n_mv = 0
    with eval_mode(model):
        with torch.no_grad():
            l0 = loss_fn(fmap.raw(X[0]), y[:1])
        if not isinstance(l0, torch.Tensor) or l0.ndim != 0:
            shp = tuple(l0.shape) if isinstance(l0, torch.Tensor) else type(l0).__name__
            raise ValueError(f"loss_fn returned {shp}, not a scalar tensor; use a reducing loss "
                             "(reduction='mean' or 'sum'), evaluated here on a batch of one.")

        def loss_of(i):
            yi = y[i:i + 1]
            return lambda xf: loss_fn(fmap.raw(xf), yi)

        with torch.no_grad():  # cross-check at the least saturated of the first points (largest loss)
            first = [float(loss_fn(fmap.raw(X[i]), y[i:i + 1])) for i in range(min(N, 16))]
        i0 = int(np.nanargmax(first)) if np.isfinite(first).any() else 0

        def fast0():
            return _hessian_fast(loss_of(i0), X[i0])[2]

        def func0():
            return _hessian_func(loss_of(i0), X[i0])[2]

        choice, why = _pick_products(fast0, func0, d, X.dtype, X.device, seed)
        note = None
        if why in ("fast failed", "disagree"):
            note = ("second derivatives through this model are unreliable: double backward "
                    f"{'failed' if why == 'fast failed' else 'disagreed with torch.func'} (a custom autograd function whose "
                    "backward is not differentiable?); the torch.func values are reported but may miss terms.")
            warn(note)
        elif why == "no func":
            note = "Hessian products by double backward (torch.func's forward mode could not cross-check them)."
        products = _hessian_func if choice == "func" else _first_working(_hessian_fast, _hessian_func)
        bar = _bar(N, "input curvature", progress)
        try:
            for i in range(N):
                g, lv, mv = products(loss_of(i), X[i])
                if not (bool(torch.isfinite(lv)) and bool(torch.isfinite(g).all())):
                    raise ValueError(f"the loss or its input gradient at example {i} is not finite "
                                     f"(loss {float(lv)}); check the model, loss_fn and targets there.")
                vals, n = _top_eigs(mv, d, k, X.dtype, X.device, tol, seed, None, 100 * torch.finfo(X.dtype).eps)
                eig[i], gnorm[i], losses[i] = vals, float(g.norm()), float(lv)
                n_mv += n
                bar.update(1)
        finally:
            bar.close()
    return InputCurvature(eigenvalues=eig, gradient_norm=gnorm, loss=losses, n_matvec=int(n_mv),
                          notes=(note,) if note else ())
