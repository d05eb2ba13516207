"""Exact linear regions of a piecewise-linear network on a 2-D slice of its input space.

A network built from affine layers (Linear, convolutions, BatchNorm in eval mode, average
pooling, flatten, residual additions) and piecewise-linear activations (ReLU, LeakyReLU,
PReLU, Hardtanh/ReLU6, max pooling) is continuous and affine on each cell of a polyhedral
partition of its input space (Montufar et al. 2014, "On the number of linear regions of deep
neural networks"; Hanin and Rolnick 2019, "Deep ReLU networks have surprisingly few
activation patterns"). :func:`partition` computes that partition exactly on a 2-D affine
slice of input space, as SplineCam does (Humayun, Balestriero, Balakrishnan and Baraniuk,
CVPR 2023, "SplineCam: exact visualization and characterization of deep network geometry and
decision boundaries"), by successive cuts of convex polygons, layer by layer:

* The slice starts as the bounds rectangle. Before the cuts of piecewise-linear layer ``l``,
  the network up to that layer's input is affine on every current polygon (the polygons
  already refine the regions of all earlier layers), so its values at the polygon vertices
  determine it there. They are computed by one batched forward pass over the (shared)
  vertices, resumed from the previous layer's output when the architecture allows it.
* Each unit's zero line (``z_i = 0`` for ReLU-like units, ``z_i - z_j = 0`` for the pairs of
  a max-pooling window) then cuts every polygon it crosses in two; new vertices are placed by
  linear interpolation along the crossing edges, and the layer's other pre-activations are
  carried to them by the same interpolation (exact, as they are affine on the polygon). The
  cuts run in rounds: every polygon is cut by the lowest-numbered line still crossing it, and
  its pieces keep the later lines that cross them, so each piece is the cell of a point in the
  arrangement of a growing prefix of the lines (randomised incremental construction, a
  logarithmic number of rounds). Both sides of an edge meet its lines in the same order, so
  the mesh stays conforming (neighbours share their vertices). All work is vectorised over
  polygons in torch (CPU or CUDA); crossing tests use signs packed 64 to a word.
* Max-pooling and the decision cells are argmax arrangements: the pair lines over-refine
  them, so the pieces of one argmax cell inside one earlier polygon are merged back (their
  union is convex) before going on.

Decision boundaries are the edges between argmax cells of different classes, inside regions
and along their edges.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import operator
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shapelens._checks import check_int, resolve_device, show_progress, single_thread, warn
from shapelens._results import Result
from shapelens.probe import _first_tensor, eval_mode

__all__ = ["Plane", "Partition", "partition", "PartitionTooLarge", "NotPiecewiseLinearError", "estimate_regions"]


class NotPiecewiseLinearError(ValueError):
    """The model contains an operation that is not piecewise-linear (GELU, SiLU, tanh,
    softmax inside the network, attention, LayerNorm, ...); the message names the first one."""


class PartitionTooLarge(MemoryError):
    """The slice has (or is estimated to have) more linear regions than ``max_regions``.

    ``estimate`` holds the estimated (or reached) region count."""

    def __init__(self, message: str, estimate: int | None = None):
        super().__init__(message)
        self.estimate = estimate


# ======================================================================================
# the plane
# ======================================================================================


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} could not be read as a numeric array ({exc}); pass a numpy array or tensor.") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass an input of the model's input shape (without the batch axis).")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite inputs.")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Plane(Result):
    """A 2-D affine slice of input space: the point ``(s, t)`` is ``origin + s*u + t*v``.

    ``origin``, ``u`` and ``v`` have the shape of one model input (without the batch axis);
    ``u`` and ``v`` must be non-zero and linearly independent. SplineCam (Humayun et al.,
    CVPR 2023) and Novak et al. (2018) slice input space through three data points, see
    :meth:`from_points`.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def __post_init__(self) -> None:
        o = _as_array(self.origin, "origin")
        u = _as_array(self.u, "u")
        v = _as_array(self.v, "v")
        if not (o.shape == u.shape == v.shape):
            raise ValueError(
                f"origin, u and v must have the same shape (one model input), got {o.shape}, {u.shape}, {v.shape}."
            )
        nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
        if nu == 0.0 or nv == 0.0:
            raise ValueError(
                f"the plane's directions must be non-zero (|u| = {nu:g}, |v| = {nv:g}); pass two linearly "
                "independent directions."
            )
        cos = abs(float(np.dot(u.ravel(), v.ravel()))) / (nu * nv)
        if not cos < 1.0 - 1e-10:
            raise ValueError(
                f"the plane's directions u and v are linearly dependent (|cos angle| = {cos:.12f}); the slice would "
                "be a line. Pass two independent directions (or three non-collinear points to Plane.from_points)."
            )
        object.__setattr__(self, "origin", o)
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "v", v)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one input (without the batch axis)."""
        return tuple(self.origin.shape)

    @classmethod
    def from_points(cls, x0: Any, x1: Any, x2: Any, margin: float = 0.2) -> tuple["Plane", tuple[float, float, float, float]]:
        """The plane through three inputs, and bounds that cover them with a margin.

        ``origin = x0``; ``u`` is ``x1 - x0`` normalised and ``v`` the normalised part of
        ``x2 - x0`` orthogonal to ``u`` (Gram-Schmidt), so plane coordinates are Euclidean
        distances in input space. The bounds are the bounding box of the three points'
        coordinates ``(0, 0)``, ``(|x1 - x0|, 0)``, ``(s2, t2)`` widened on every side by
        ``margin`` times its larger side.

        Returns ``(plane, (s_min, s_max, t_min, t_max))``. Raises ValueError for points of
        different shapes, non-finite values, or collinear (or coincident) points.
        """
        a, b, c = _as_array(x0, "x0"), _as_array(x1, "x1"), _as_array(x2, "x2")
        if not (a.shape == b.shape == c.shape):
            raise ValueError(f"the three points must have the same shape, got {a.shape}, {b.shape}, {c.shape}.")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}.")
        d1 = (b - a).ravel()
        d2 = (c - a).ravel()
        n1 = float(np.linalg.norm(d1))
        n2 = float(np.linalg.norm(d2))
        if n1 == 0.0 or n2 == 0.0:
            raise ValueError(
                "two of the three points coincide (x1 == x0 or x2 == x0); pass three distinct, non-collinear points."
            )
        u = d1 / n1
        s2 = float(np.dot(d2, u))
        w = d2 - s2 * u
        w = w - float(np.dot(w, u)) * u  # second Gram-Schmidt pass for accuracy
        t2 = float(np.linalg.norm(w))
        if t2 <= 1e-9 * max(n1, n2):
            raise ValueError(
                f"the three points are collinear (x2 - x0 is parallel to x1 - x0 up to {t2:.3g}); the plane through "
                "them is not defined. Pick three points that do not lie on one line."
            )
        v = w / t2
        plane = cls(a, u.reshape(a.shape), v.reshape(a.shape))
        s = np.array([0.0, n1, s2])
        t = np.array([0.0, 0.0, t2])
        pad = float(margin) * max(s.max() - s.min(), t.max() - t.min())
        bounds = (float(s.min() - pad), float(s.max() + pad), float(t.min() - pad), float(t.max() + pad))
        return plane, bounds

    def coords(self, x: Any) -> np.ndarray:
        """Plane coordinates ``(N, 2)`` of inputs ``x`` of shape ``(N, *shape)`` or ``(N, prod(shape))``:
        the least-squares projection onto the plane."""
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        arr = np.asarray(arr, dtype=np.float64)
        d = int(np.prod(self.shape))
        if arr.size % d != 0 or arr.ndim == 0:
            raise ValueError(f"x must have shape (N, *{self.shape}) or (N, {d}), got {arr.shape}.")
        flat = arr.reshape(-1, d) - self.origin.reshape(1, -1)
        B = np.stack([self.u.ravel(), self.v.ravel()], axis=1)  # (d, 2)
        G = B.T @ B
        return np.linalg.solve(G, (flat @ B).T).T

    def lift(self, st: Any) -> Any:
        """Inputs ``origin + s*u + t*v`` of shape ``(N, *shape)`` for plane points ``(N, 2)``
        (a numpy array gives a numpy array, a tensor gives a tensor of its dtype and device)."""
        if isinstance(st, torch.Tensor):
            dt = st.dtype if st.is_floating_point() else torch.float64
            o = torch.as_tensor(self.origin, dtype=dt, device=st.device)
            u = torch.as_tensor(self.u, dtype=dt, device=st.device)
            v = torch.as_tensor(self.v, dtype=dt, device=st.device)
            st = st.to(dt).reshape(-1, 2)
            shape = (-1,) + (1,) * o.ndim
            return o.unsqueeze(0) + st[:, 0].reshape(shape) * u.unsqueeze(0) + st[:, 1].reshape(shape) * v.unsqueeze(0)
        st = np.asarray(st, dtype=np.float64).reshape(-1, 2)
        shape = (-1,) + (1,) * self.origin.ndim
        return self.origin[None] + st[:, 0].reshape(shape) * self.u[None] + st[:, 1].reshape(shape) * self.v[None]


# ======================================================================================
# the model: which modules run, which are piecewise-linear
# ======================================================================================

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _types(*names: str) -> tuple[type, ...]:
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


_AFFINE_TYPES = _types(
    "Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Flatten", "Unflatten", "Identity",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
    "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d", "PixelShuffle", "PixelUnshuffle",
    "ChannelShuffle", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
)
_RELU_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU)
_HARDTANH_TYPES = (nn.Hardtanh,)  # includes ReLU6
_MAXPOOL_TYPES = _types("MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")
_PL_TYPES = _RELU_TYPES + _HARDTANH_TYPES + _MAXPOOL_TYPES

_WHY = {
    "GELU": "GELU is smooth (x * Phi(x)), not piecewise-linear",
    "SiLU": "SiLU/swish is smooth, not piecewise-linear",
    "Tanh": "tanh is smooth, not piecewise-linear",
    "Sigmoid": "the sigmoid is smooth, not piecewise-linear",
    "Softmax": "softmax is smooth (exponentials), not piecewise-linear",
    "LogSoftmax": "log-softmax is smooth, not piecewise-linear",
    "LayerNorm": "LayerNorm divides by a per-example standard deviation",
    "GroupNorm": "GroupNorm divides by a per-example standard deviation",
    "MultiheadAttention": "attention multiplies inputs with each other and uses softmax",
    "ELU": "ELU is exponential for negative inputs",
    "Softplus": "softplus is smooth",
    "Mish": "Mish is smooth",
    "Hardswish": "Hardswish multiplies the input with a function of itself (piecewise quadratic)",
    "Hardsigmoid": "Hardsigmoid is piecewise-linear but not supported; replace it with Hardtanh",
    "Threshold": "Threshold is discontinuous",
}


def _not_pl_reason(module: nn.Module) -> str:
    name = type(module).__name__
    if name in _WHY:
        return _WHY[name]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BatchNorm without running statistics normalises by the batch (track_running_stats=False)"
    if isinstance(module, (nn.RNNBase,)):
        return "recurrent layers use tanh/sigmoid gates"
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return "InstanceNorm divides by a per-example standard deviation"
    return f"{name} is not one of the supported kinds (Linear, Conv, BatchNorm, average/max pooling, Flatten, ReLU, LeakyReLU, PReLU, Hardtanh)"


def _classify(module: nn.Module) -> str:
    """'pl', 'affine' or 'bad' for an atomic module."""
    if isinstance(module, _PL_TYPES):
        return "pl"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "affine" if module.running_mean is not None and module.running_var is not None else "bad"
    if isinstance(module, _AFFINE_TYPES):
        if isinstance(module, (nn.Upsample,)) and getattr(module, "mode", "nearest") not in (
            "nearest", "linear", "bilinear", "bicubic", "trilinear", "nearest-exact"
        ):
            return "bad"
        return "affine"
    return "bad"


def _is_atomic(module: nn.Module) -> bool:
    """Built-in torch.nn modules (not containers) are atomic; user modules are looked into."""
    if isinstance(module, _CONTAINERS):
        return False
    mod = type(module).__module__ or ""
    return mod.startswith("torch.nn") or mod.startswith("torch.ao.nn")


class _Stop(Exception):
    def __init__(self, value: Any):
        super().__init__("stop")
        self.value = value


@dataclasses.dataclass
class _Call:
    name: str
    module: nn.Module
    call: int  # 0 for the first call of this module in a forward pass
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return self.name if self.call == 0 else f"{self.name}#{self.call + 1}"


# ----- torch.fx check for functional non-linearities -----------------------------------

_FX_LINEAR_FUNCS = {
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, operator.iadd, operator.isub,
    torch.add, torch.sub, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.transpose,
    torch.permute, torch.squeeze, torch.unsqueeze, torch.sum, torch.mean, torch.chunk, torch.split,
    torch.narrow, torch.roll, torch.flip, torch.movedim, torch.unbind, torch.t, torch.hstack, torch.vstack,
    F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.pad, F.dropout, F.interpolate, F.pixel_shuffle, F.pixel_unshuffle, torch.zeros_like, torch.ones_like,
    getattr,
}
_FX_BILINEAR = {operator.mul, operator.imul, torch.mul, operator.matmul, torch.matmul, torch.mm, torch.bmm, torch.einsum}
_FX_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide}
_FX_LINEAR_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "size", "squeeze", "unsqueeze", "sum",
    "mean", "expand", "expand_as", "repeat", "chunk", "split", "narrow", "add", "add_", "sub", "sub_", "neg", "t",
    "view_as", "reshape_as", "clone", "to", "float", "double", "type_as", "unflatten", "flip", "roll", "movedim",
    "unbind", "dim", "__getitem__", "detach", "numel",
}
_FX_BILINEAR_METHODS = {"mul", "mul_", "matmul", "mm", "bmm", "__mul__", "__matmul__"}
_FX_DIV_METHODS = {"div", "div_", "__truediv__", "true_divide"}
_FX_PL_FUNCS = {
    F.relu, torch.relu, F.relu_, F.leaky_relu, F.hardtanh, F.relu6, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, torch.max, torch.maximum, torch.min, torch.minimum,
    torch.clamp, torch.clip, torch.abs, torch.amax, torch.amin, F.prelu,
}
_FX_PL_METHODS = {"relu", "relu_", "clamp", "clamp_", "clip", "abs", "max", "min", "amax", "amin", "clamp_min", "clamp_max"}


def _leaves(args: Any) -> list[Any]:
    """The non-container leaves of an fx node's (nested) arguments: lists, tuples and dict values
    are opened, everything else (nodes, constants) is a leaf."""
    if isinstance(args, (list, tuple)):
        return [leaf for a in args for leaf in _leaves(a)]
    if isinstance(args, dict):
        return [leaf for a in args.values() for leaf in _leaves(a)]
    return [args]


def _fx_check(model: nn.Module) -> tuple[list[tuple[int, str, str]], dict[str, int], str | None]:
    """Trace ``model`` with torch.fx and list the input-dependent function/method nodes that are
    not affine: (position in graph order, message, kind), the graph position of the first call
    of every module, and None; or ([], {}, reason) when the model does not trace."""
    try:
        import torch.fx as fx

        graph = fx.Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "cannot check"
        return [], {}, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    dep: set[Any] = set()
    bad: list[tuple[int, str, str]] = []
    order: dict[str, int] = {}

    def deps(args: Any) -> list[Any]:
        return [a for a in _leaves(args) if a in dep]

    for pos, node in enumerate(graph.nodes):
        if node.op == "placeholder":
            dep.add(node)
            continue
        if node.op in ("get_attr", "output"):
            continue
        d = deps((node.args, node.kwargs))
        if node.op == "call_module":
            order.setdefault(str(node.target), pos)
            if d:
                dep.add(node)
            continue
        if not d:
            continue
        dep.add(node)
        where = ""
        stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
        if stack:
            try:
                last = list(stack.values())[-1]
                path = last[0] if isinstance(last, tuple) else str(last)
                where = f" in module {path!r}"
            except Exception:  # noqa: BLE001
                where = ""
        target = node.target
        tname = getattr(target, "__name__", str(target))
        if node.op == "call_function":
            if target in _FX_LINEAR_FUNCS:
                if target is F.dropout and node.kwargs.get("training", False):
                    bad.append((pos, f"F.dropout with training=True at node {node.name!r}{where} is random", "bad"))
                continue
            if target in _FX_BILINEAR:
                if len(d) > 1 or (target is torch.einsum and len(d) > 1):
                    bad.append((pos, f"{tname} of two input-dependent tensors at node {node.name!r}{where} is not piecewise-linear", "bad"))
                continue
            if target in _FX_DIV:
                args = list(node.args)
                if len(args) >= 2 and deps(args[1:]):
                    bad.append((pos, f"division by an input-dependent tensor at node {node.name!r}{where} is not piecewise-linear", "bad"))
                continue
            if target in _FX_PL_FUNCS:
                bad.append((
                    pos,
                    f"function {tname} at node {node.name!r}{where} is piecewise-linear, but functional calls cannot be "
                    "hooked; use the module form (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.Hardtanh) in the forward",
                    "functional_pl",
                ))
                continue
            bad.append((pos, f"function {tname} at node {node.name!r}{where} is not piecewise-linear (or not known to shapelens)", "bad"))
        elif node.op == "call_method":
            m = str(target)
            if m in _FX_LINEAR_METHODS:
                continue
            if m in _FX_BILINEAR_METHODS:
                if len(d) > 1:
                    bad.append((pos, f"method .{m}() of two input-dependent tensors at node {node.name!r}{where} is not piecewise-linear", "bad"))
                continue
            if m in _FX_DIV_METHODS:
                if len(d) > 1 or (d and node.args and node.args[0] not in dep):
                    bad.append((pos, f"division by an input-dependent tensor at node {node.name!r}{where} is not piecewise-linear", "bad"))
                continue
            if m in _FX_PL_METHODS:
                bad.append((
                    pos,
                    f"method .{m}() at node {node.name!r}{where} is piecewise-linear, but functional calls cannot be hooked; "
                    "use the module form (nn.ReLU, nn.MaxPool2d, nn.Hardtanh) in the forward",
                    "functional_pl",
                ))
                continue
            bad.append((pos, f"method .{m}() at node {node.name!r}{where} is not piecewise-linear (or not known to shapelens)", "bad"))
    return bad, order, None


# ----- torch.fx rewrite of functional calls into modules -------------------------------


def _arg(node: Any, pos: int, name: str, default: Any) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _const(*vals: Any) -> bool:
    import torch.fx as fx

    def ok(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(ok(x) for x in v)
        return not isinstance(v, fx.Node)

    return all(ok(v) for v in vals)


def _module_for(node: Any) -> nn.Module | None:
    """The nn.Module equivalent of a functional call node, or None (not known / not constant)."""
    t = node.target
    if node.op == "call_function":
        if t in (F.relu, torch.relu, F.relu_, torch.relu_):
            return nn.ReLU()
        if t is F.leaky_relu:
            s = _arg(node, 1, "negative_slope", 0.01)
            return nn.LeakyReLU(float(s)) if _const(s) else None
        if t is F.relu6:
            return nn.ReLU6()
        if t is F.hardtanh:
            lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
            return nn.Hardtanh(float(lo), float(hi)) if _const(lo, hi) else None
        pools = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.max_pool3d: nn.MaxPool3d}
        if t in pools:
            k = _arg(node, 1, "kernel_size", None)
            st = _arg(node, 2, "stride", None)
            pd = _arg(node, 3, "padding", 0)
            dl = _arg(node, 4, "dilation", 1)
            cm = _arg(node, 5, "ceil_mode", False)
            ri = _arg(node, 6, "return_indices", False)
            if not _const(k, st, pd, dl, cm, ri) or ri or k is None:
                return None
            return pools[t](k, stride=st if st not in (None, [], ()) else None, padding=pd, dilation=dl, ceil_mode=bool(cm))
        apools = {F.adaptive_max_pool1d: nn.AdaptiveMaxPool1d, F.adaptive_max_pool2d: nn.AdaptiveMaxPool2d}
        if t in apools:
            o = _arg(node, 1, "output_size", None)
            ri = _arg(node, 2, "return_indices", False)
            return apools[t](o) if (_const(o, ri) and not ri and o is not None) else None
        if t in (F.softmax, torch.softmax, F.log_softmax, torch.log_softmax):
            d = _arg(node, 1, "dim", None)
            if not _const(d) or node.kwargs.get("dtype") is not None:
                return None
            return nn.Softmax(d) if t in (F.softmax, torch.softmax) else nn.LogSoftmax(d)
        if t in (torch.clamp, torch.clip):
            lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
            if not _const(lo, hi) or isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
                return None
            if lo is not None and hi is None and float(lo) == 0.0:
                return nn.ReLU()
            if lo is not None and hi is not None:
                return nn.Hardtanh(float(lo), float(hi))
            return None
        smooth = {F.gelu: nn.GELU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh, torch.sigmoid: nn.Sigmoid,
                  F.sigmoid: nn.Sigmoid, F.silu: nn.SiLU, F.elu: nn.ELU, F.softplus: nn.Softplus, F.mish: nn.Mish}
        if t in smooth:
            return smooth[t]()  # not piecewise-linear: a module so that errors and stop_at can name it
        return None
    if node.op == "call_method":
        m = str(t)
        if m in ("relu", "relu_"):
            return nn.ReLU()
        if m in ("softmax", "log_softmax"):
            d = _arg(node, 1, "dim", None)
            if not _const(d) or node.kwargs.get("dtype") is not None:
                return None
            return nn.Softmax(d) if m == "softmax" else nn.LogSoftmax(d)
        if m in ("clamp", "clamp_", "clip", "clamp_min", "clamp_min_"):
            if m.startswith("clamp_min"):
                lo, hi = _arg(node, 1, "min", None), None
            else:
                lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
            if not _const(lo, hi) or isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
                return None
            if lo is not None and hi is None and float(lo) == 0.0:
                return nn.ReLU()
            if lo is not None and hi is not None:
                return nn.Hardtanh(float(lo), float(hi))
            return None
        if m in ("tanh", "sigmoid"):
            return nn.Tanh() if m == "tanh" else nn.Sigmoid()
    return None


def _fx_rewrite(net: nn.Module) -> tuple[nn.Module, list[str]]:
    """Trace ``net`` with torch.fx and replace functional calls on input-dependent tensors
    (``F.relu``, ``x.relu()``, ``F.max_pool2d``, ``F.leaky_relu``, ``torch.clamp(x, min=0)``,
    softmax, tanh, ...) by equivalent modules named after their fx node, so that hooks see
    them. Returns (the GraphModule, or ``net`` when nothing was replaced; the new names).
    Raises whatever tracing raises."""
    import torch.fx as fx

    tracer = fx.Tracer()
    graph = tracer.trace(net)
    dep: set[Any] = set()
    names = {n for n, _ in net.named_modules()}
    todo: list[tuple[Any, nn.Module]] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            dep.add(node)
            continue
        if node.op in ("get_attr", "output"):
            continue
        if not any(a in dep for a in _leaves((node.args, node.kwargs))):
            continue
        dep.add(node)
        if node.op in ("call_function", "call_method") and node.args and node.args[0] in dep:
            mod = _module_for(node)
            if mod is not None:
                todo.append((node, mod))
    if not todo:
        return net, []
    gm = fx.GraphModule(tracer.root, graph)
    added: list[str] = []
    for node, mod in todo:
        name = node.name
        while name in names or hasattr(gm, name):
            name = name + "_fn"
        names.add(name)
        gm.add_submodule(name, mod.to(next((p.dtype for p in gm.parameters()), torch.float64)))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, args=(node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        added.append(name)
    gm.graph.lint()
    gm.recompile()
    return gm, added


# ======================================================================================
# running the model on plane points
# ======================================================================================


class _Threads:
    def __init__(self, n: int | None):
        self.n = n
        self.old = None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False


class _Net:
    """A float64 (or ``dtype``) copy of the model in eval mode, the piecewise-linear layers in
    execution order, and forward passes that return a chosen layer's input at plane points."""

    def __init__(self, model: nn.Module, plane: Plane, device: torch.device, dtype: torch.dtype, stop_at: Any,
                 threads: int | None = None):
        self.device, self.dtype = device, dtype
        self.threads = threads or torch.get_num_threads()
        trained_bn = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        with eval_mode(model):
            net = copy.deepcopy(model)
        net = net.to(device=device, dtype=dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.fx_note: str | None = None
        self.functional: list[str] = []
        if any(not _is_atomic(m) and not isinstance(m, _CONTAINERS) for m in net.modules()):
            try:
                net, self.functional = _fx_rewrite(net)
            except Exception as exc:  # noqa: BLE001 - the model does not trace
                self.fx_note = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if trained_bn:
            warn(
                f"BatchNorm module(s) {trained_bn[:3]}{'...' if len(trained_bn) > 3 else ''} are in training mode; the "
                "partition evaluates the model in eval mode (running statistics), where it is piecewise-linear."
            )
        self.net = net
        self.plane = plane
        self.o = torch.as_tensor(plane.origin, dtype=dtype, device=device)
        self.u = torch.as_tensor(plane.u, dtype=dtype, device=device)
        self.v = torch.as_tensor(plane.v, dtype=dtype, device=device)
        self._trace(stop_at)
        self._strategy: dict[Any, str] = {}
        self._affine0: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ----- plane -> inputs
    def lift(self, st: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * self.o.ndim
        return self.o.unsqueeze(0) + st[:, 0].reshape(shape) * self.u.unsqueeze(0) + st[:, 1].reshape(shape) * self.v.unsqueeze(0)

    def _dummy(self) -> torch.Tensor:
        st = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=self.dtype, device=self.device)
        return self.lift(st)

    # ----- the structure
    def _trace(self, stop_at: Any) -> None:
        net = self.net
        names = {m: n for n, m in net.named_modules()}
        atomic: list[tuple[str, nn.Module]] = []
        skip: list[str] = []
        for n, m in net.named_modules():
            if any(n.startswith(p + ".") for p in skip):
                continue
            if _is_atomic(m):
                atomic.append((n, m))
                skip.append(n)
        calls: list[_Call] = []
        counts: dict[int, int] = {}
        handles = []

        def pre(mod: nn.Module, args: Any) -> None:
            k = counts.get(id(mod), 0)
            counts[id(mod)] = k + 1
            x = args[0] if args else None
            shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
            calls.append(_Call(names[mod], mod, k, _classify(mod), shape, ()))

        def post(mod: nn.Module, args: Any, out: Any) -> None:
            for c in reversed(calls):
                if c.module is mod:
                    if isinstance(out, torch.Tensor):
                        c.out_shape = tuple(out.shape[1:])
                    break

        for n, m in atomic:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        try:
            with torch.no_grad():
                out = net(self._dummy())
        except Exception as exc:
            raise ValueError(
                f"the model could not run on inputs of the plane's shape {self.plane.shape} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); the plane's origin, u and v must have the shape of one "
                "model input without the batch axis."
            ) from exc
        finally:
            for h in handles:
                h.remove()
        out_t = _first_tensor(out, "model output")
        self.model_out_shape = tuple(out_t.shape[1:])
        self.calls = calls
        # functional check with torch.fx (only models with custom forward code)
        custom = [n for n, m in net.named_modules() if not _is_atomic(m) and not isinstance(m, _CONTAINERS)]
        fx_bad: list[tuple[int, str, str]] = []
        fx_pos: dict[str, int] | None = None
        if custom and self.fx_note is None:
            fx_bad, order, reason = _fx_check(net)
            if reason is not None:
                self.fx_note = reason
            else:
                fx_pos = order
        # the stop point
        first_bad = next((c for c in calls if c.kind == "bad"), None)
        first_fx = fx_bad[0] if fx_bad else None
        self.stop: tuple[str, _Call] | None = None
        self.stop_label = "model output"

        def fx_before(call: _Call | None) -> bool:
            """Whether the first bad fx node runs before ``call`` (None: before the end)."""
            if first_fx is None:
                return False
            if call is None or fx_pos is None:
                return True
            p = fx_pos.get(call.name)
            return p is None or first_fx[0] < p

        if stop_at is None:
            if first_bad is not None and not fx_before(first_bad):
                raise NotPiecewiseLinearError(
                    f"module {first_bad.name!r} ({type(first_bad.module).__name__}) is not piecewise-linear: "
                    f"{_not_pl_reason(first_bad.module)}{self._functional_note(first_bad.name)}. Pass stop_at='last_pl' to "
                    "partition by the layers before it, "
                    "or stop_at=<module name> to stop after an earlier module."
                )
            if first_fx is not None:
                raise NotPiecewiseLinearError(
                    f"the model's forward is not piecewise-linear: {first_fx[1]}. Pass stop_at=<module name> to stop "
                    "after a module that runs before it."
                )
        elif isinstance(stop_at, str) and stop_at == "last_pl":
            if first_fx is not None and fx_before(first_bad):
                raise NotPiecewiseLinearError(
                    f"the model's forward is not piecewise-linear: {first_fx[1]}; stop_at='last_pl' can only stop at "
                    "modules. Pass stop_at=<name of the last module before it>."
                )
            if first_bad is not None:
                self.stop = ("pre", first_bad)
                self.stop_label = f"input of module {first_bad.label!r} ({type(first_bad.module).__name__})"
        elif isinstance(stop_at, str):
            mods = dict(net.named_modules())
            if stop_at not in mods or stop_at == "":
                avail = [n for n in mods if n]
                close = difflib.get_close_matches(stop_at, avail, n=5, cutoff=0.5)
                hint = f"did you mean one of {close}? " if close else ""
                raise ValueError(
                    f"stop_at={stop_at!r} is neither 'last_pl' nor a submodule of {type(net).__name__}; "
                    f"{hint}available names: {', '.join(avail[:40])}{' ...' if len(avail) > 40 else ''}."
                )
            target = mods[stop_at]
            # the stop point is the end of the module's first call; it must be atomic or a block
            idx = None
            if _is_atomic(target):
                idx = next((i for i, c in enumerate(calls) if c.module is target), None)
                if idx is None:
                    raise ValueError(f"module {stop_at!r} does not run in the model's forward pass; pick one that does.")
                stop_call = calls[idx]
                before = calls[:idx + 1]
            else:
                # a block: every atomic call inside it or before its end
                inside = [i for i, c in enumerate(calls) if c.name == stop_at or c.name.startswith(stop_at + ".")]
                if not inside:
                    raise ValueError(f"module {stop_at!r} does not run in the model's forward pass; pick one that does.")
                stop_call = _Call(stop_at, target, 0, "block", (), ())
                before = calls[: inside[-1] + 1]
            bad_before = next((c for c in before if c.kind == "bad"), None)
            if bad_before is not None:
                raise NotPiecewiseLinearError(
                    f"module {bad_before.name!r} ({type(bad_before.module).__name__}) runs before stop_at={stop_at!r} and is "
                    f"not piecewise-linear: {_not_pl_reason(bad_before.module)}{self._functional_note(bad_before.name)}. "
                    "Pick an earlier stop_at, or 'last_pl'."
                )
            if first_fx is not None and fx_pos is not None:
                p = fx_pos.get(stop_at)
                if p is None or first_fx[0] < p:
                    raise NotPiecewiseLinearError(
                        f"the model's forward is not piecewise-linear before stop_at={stop_at!r}: {first_fx[1]}."
                    )
            self.stop = ("post", stop_call)
            self.stop_label = f"output of module {stop_at!r} ({type(target).__name__})"
            calls = before
            if stop_call.kind == "pl":
                calls = before  # the stop module's own cuts are included
        else:
            raise TypeError(f"stop_at must be None, 'last_pl' or a module name, got {stop_at!r}.")
        if self.stop is not None and self.stop[0] == "pre":
            idx = calls.index(self.stop[1])
            calls = calls[:idx]
        self.pl = [c for c in calls if c.kind == "pl"]
        # is the output class scores?
        self.scores = self.stop is None
        if self.stop is not None and self.stop[0] == "pre":
            # stopping right before a final (log-)softmax / sigmoid keeps the class scores
            c = self.stop[1]
            rest = self.calls[self.calls.index(c):]
            if len(rest) == 1 and isinstance(c.module, (nn.Softmax, nn.LogSoftmax)):
                self.scores = True
        if self.fx_note is not None:
            warn(
                f"the model does not trace with torch.fx ({self.fx_note}), so functional operations inside custom "
                "forward methods (F.relu, torch.tanh, x * y) cannot be checked; the partition checks that the output is "
                "affine on a sample of regions and raises NotPiecewiseLinearError when it is not."
            )

    def _functional_note(self, name: str) -> str:
        if name in self.functional:
            return " (a functional call in the model's forward, which shapelens turned into a module with torch.fx)"
        return ""

    # ----- forward passes
    def _run(self, x: torch.Tensor, *, sub: tuple[str, _Call, Callable[[Any], Any]] | None, target: Any) -> torch.Tensor:
        """One forward pass of ``x``; ``sub`` replaces a module's input ('pre') or output
        ('post'); ``target`` is a _Call whose input is returned, or 'out' (the stop point)."""
        handles = []
        counters: dict[int, int] = {}

        def counted(c: _Call) -> Callable[[], bool]:
            def hit() -> bool:
                k = counters.get(id(c), 0)
                counters[id(c)] = k + 1
                return k == c.call

            return hit

        try:
            if sub is not None:
                mode, c, fn = sub
                hit = counted(c)
                if mode == "pre":
                    def pre_sub(mod, args, hit=hit, fn=fn):
                        if hit():
                            return (fn(args[0]),) + tuple(args[1:])
                        return None

                    handles.append(c.module.register_forward_pre_hook(pre_sub))
                else:
                    def post_sub(mod, args, out, hit=hit, fn=fn):
                        if hit():
                            return fn(out)
                        return None

                    handles.append(c.module.register_forward_hook(post_sub))
            if isinstance(target, _Call):
                cnt = {"n": 0}

                def pre_cap(mod, args, target=target, cnt=cnt):
                    k = cnt["n"]
                    cnt["n"] += 1
                    if k == target.call:
                        raise _Stop(args[0])

                handles.append(target.module.register_forward_pre_hook(pre_cap))
            elif self.stop is not None:
                mode, c = self.stop
                cnt2 = {"n": 0}
                if mode == "pre":
                    def pre_stop(mod, args, c=c, cnt2=cnt2):
                        k = cnt2["n"]
                        cnt2["n"] += 1
                        if k == c.call:
                            raise _Stop(args[0])

                    handles.append(c.module.register_forward_pre_hook(pre_stop))
                else:
                    def post_stop(mod, args, out, c=c, cnt2=cnt2):
                        k = cnt2["n"]
                        cnt2["n"] += 1
                        if k == c.call:
                            raise _Stop(out)

                    handles.append(c.module.register_forward_hook(post_stop))
            try:
                out = self.net(x)
            except _Stop as s:
                out = s.value
            else:
                if isinstance(target, _Call):
                    raise RuntimeError(f"layer {target.label!r} did not run")
            out = _first_tensor(out, "output")
            return out
        finally:
            for h in handles:
                h.remove()

    def _chunk_rows(self) -> int:
        numel = 1
        for c in self.calls:
            for s in (c.in_shape, c.out_shape):
                numel = max(numel, int(np.prod(s)) if s else 1)
        numel = max(numel, int(np.prod(self.plane.shape)))
        return int(min(max(int(2.5e7 // numel), 64), 1 << 16))

    def _affine_first(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input of the first PL layer (or the stop output when there is none) at (0,0), and its
        changes per unit s and per unit t (exact: everything before it is affine)."""
        if self._affine0 is None:
            target = self.pl[0] if self.pl else "out"
            with torch.no_grad():
                z = self._run(self._dummy(), sub=None, target=target)
            z = z.reshape(3, -1)
            self._affine0 = (z[0], z[1] - z[0], z[2] - z[0])
        return self._affine0

    def values(self, st: torch.Tensor, target: Any, carried: torch.Tensor | None = None) -> torch.Tensor:
        """Values (N, m) at plane points ``st`` of the input of PL layer ``target`` (a _Call) or
        of the output ('out'). ``carried``: the input of the previous PL layer at the same
        points (N, m_prev), used to resume the forward pass from that layer's output."""
        li = self.pl.index(target) if isinstance(target, _Call) else len(self.pl)
        if li == 0:
            z0, zs, zt = self._affine_first()
            return z0.unsqueeze(0) + st[:, :1] * zs.unsqueeze(0) + st[:, 1:2] * zt.unsqueeze(0)
        prev = self.pl[li - 1]
        order = []
        if carried is not None:
            order.append("resume")
        order += ["first", "lift"]
        key = (li, carried is not None)
        if key in self._strategy:
            order = [self._strategy[key]]
        last_exc: Exception | None = None
        for strat in order:
            try:
                res = self._values_with(strat, st, target, prev, carried)
            except Exception as exc:  # noqa: BLE001 - fall back to a safer strategy
                if isinstance(exc, (NotPiecewiseLinearError, PartitionTooLarge)):
                    raise
                if strat == "lift":
                    raise
                last_exc = exc
                continue
            if key not in self._strategy and strat != "lift":
                # verify on a few points against the plain forward pass
                k = min(8, st.shape[0])
                ref = self._values_with("lift", st[:k], target, prev, None)
                scale = float(ref.abs().max()) + 1.0
                if res.shape != (st.shape[0],) + tuple(ref.shape[1:]) or not bool(
                    ((res[:k] - ref).abs() <= 1e-7 * scale).all()
                ):
                    continue
            self._strategy[key] = strat
            return res
        raise RuntimeError(f"no forward strategy worked ({last_exc})")

    def _pool(self, rows: int):
        """The caller's CPU thread pool for forward passes over many points (partition runs its
        many small operations single-threaded)."""
        return _Threads(self.threads if (rows >= 4096 and self.device.type == "cpu") else None)

    def _values_with(self, strat: str, st: torch.Tensor, target: Any, prev: _Call, carried: torch.Tensor | None) -> torch.Tensor:
        with self._pool(st.shape[0]):
            return self._values_with_(strat, st, target, prev, carried)

    def _values_with_(self, strat: str, st: torch.Tensor, target: Any, prev: _Call, carried: torch.Tensor | None) -> torch.Tensor:
        n = st.shape[0]
        rows = self._chunk_rows()
        outs = []
        for i in range(0, n, rows):
            sl = st[i:i + rows]
            k = sl.shape[0]
            pad = 4 - k if k < 4 else (1 if k == 3 else 0)
            if pad:
                sl = torch.cat([sl, sl[:1].expand(pad, 2)], 0)
            if strat == "lift":
                out = self._run(self.lift(sl), sub=None, target=target)
            elif strat == "first":
                z0, zs, zt = self._affine_first()
                first = self.pl[0]
                vals = z0.unsqueeze(0) + sl[:, :1] * zs.unsqueeze(0) + sl[:, 1:2] * zt.unsqueeze(0)
                vals = vals.reshape((vals.shape[0],) + first.in_shape)
                out = self._run(self._dummy(), sub=("pre", first, lambda _x, vals=vals: vals), target=target)
            else:  # resume from the previous PL layer's output
                c = carried[i:i + rows]
                if pad:
                    c = torch.cat([c, c[:1].expand(pad, c.shape[1])], 0)
                c = c.reshape((c.shape[0],) + prev.in_shape)
                y = prev.module(c.clone() if getattr(prev.module, "inplace", False) else c)
                out = self._run(self._dummy(), sub=("post", prev, lambda _o, y=y: y), target=target)
            out = out.reshape(out.shape[0], -1)
            if out.shape[0] != sl.shape[0]:
                raise RuntimeError("batch size changed")
            outs.append(out[:k])
        return torch.cat(outs, 0)

    def all_inputs(self, st: torch.Tensor) -> list[torch.Tensor]:
        """The inputs (N, m_l) of every PL layer at plane points, in one forward pass per chunk:
        the first layer's input from its affine map when the architecture allows it (checked
        against plain forward passes once), else from the lifted inputs."""
        if not self.pl:
            return []
        cached = self._strategy.get("all")
        with self._pool(st.shape[0]):
            for mode in ([cached] if cached else ["first", "lift"]):
                try:
                    res = self._all_inputs(st, mode)
                except Exception:  # noqa: BLE001 - fall back to plain forward passes
                    if mode == "lift":
                        raise
                    continue
                if cached is None and mode == "first":
                    k = min(8, st.shape[0])
                    ref = self._all_inputs(st[:k], "lift")
                    if not all(r.shape == q.shape and bool(((r - q).abs() <= 1e-7 * (float(q.abs().max()) + 1.0)).all())
                               for r, q in zip([x[:k] for x in res], ref)):
                        continue
                self._strategy["all"] = mode
                return res
        raise RuntimeError("no forward strategy worked")

    def _all_inputs(self, st: torch.Tensor, mode: str) -> list[torch.Tensor]:
        res: list[list[torch.Tensor]] = []
        rows = self._chunk_rows()
        first = self.pl[0]
        for i in range(0, st.shape[0], rows):
            sl = st[i:i + rows]
            k = sl.shape[0]
            pad = 4 - k if k < 4 else (1 if k == 3 else 0)
            if pad:
                sl = torch.cat([sl, sl[:1].expand(pad, 2)], 0)
            got: list[torch.Tensor] = []
            handles = []
            counters: dict[int, int] = {}
            if mode == "first":
                z0, zs, zt = self._affine_first()
                vals = z0.unsqueeze(0) + sl[:, :1] * zs.unsqueeze(0) + sl[:, 1:2] * zt.unsqueeze(0)
                vals = vals.reshape((vals.shape[0],) + first.in_shape)
                sub_count = {"n": 0}

                def sub(mod, args, vals=vals, sub_count=sub_count):
                    n = sub_count["n"]
                    sub_count["n"] += 1
                    if n == first.call:
                        return (vals,) + tuple(args[1:])
                    return None

                handles.append(first.module.register_forward_pre_hook(sub))
                x = self._dummy()
            else:
                x = self.lift(sl)
            for c in self.pl:
                def pre(mod, args, c=c):
                    n = counters.get(id(c), 0)
                    counters[id(c)] = n + 1
                    if n == c.call:
                        got.append(args[0].reshape(args[0].shape[0], -1).clone())
                        if c is self.pl[-1]:
                            raise _Stop(None)

                handles.append(c.module.register_forward_pre_hook(pre))
            try:
                try:
                    self.net(x)
                except _Stop:
                    pass
            finally:
                for h in handles:
                    h.remove()
            if len(got) != len(self.pl) or any(g.shape[0] != sl.shape[0] for g in got):
                raise RuntimeError("batch size changed")
            res.append([g[:k] for g in got])
        return [torch.cat([r[j] for r in res], 0) for j in range(len(self.pl))]

    def output(self, st: torch.Tensor) -> torch.Tensor:
        """The output at the stop point (N, n_out) by plain forward passes."""
        rows = self._chunk_rows()
        outs = []
        for i in range(0, st.shape[0], rows):
            sl = st[i:i + rows]
            out = self._run(self.lift(sl), sub=None, target="out")
            outs.append(out.reshape(out.shape[0], -1))
        return torch.cat(outs, 0)


# ======================================================================================
# layers: cut lines and patterns
# ======================================================================================


@dataclasses.dataclass
class _Layer:
    call: _Call
    kind: str  # relu | hardtanh | maxpool
    m: int  # number of input features
    la: torch.Tensor  # (L,) first feature of each line
    lb: torch.Tensor  # (L,) second feature (maxpool pairs) or -1
    lc: torch.Tensor  # (L,) constant
    n_units: int
    windows: torch.Tensor | None = None  # (C*n_windows, k) feature indices, -1 padded
    lo: float = 0.0
    hi: float = 0.0

    def pattern(self, z: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """Pattern (N, n_units) of inputs z (N, m); max-pool values within ``tol`` of the
        window's maximum count as tied."""
        if self.kind == "relu":
            return (z > 0).to(torch.int8)
        if self.kind == "hardtanh":
            return ((z > self.lo).to(torch.int8) + (z > self.hi).to(torch.int8))
        w = self.windows
        vals = z[:, w.clamp_min(0)]
        vals = vals.masked_fill((w < 0).unsqueeze(0), -math.inf)
        # ties (within tol, e.g. windows of zeros after a ReLU) go to the first position, as in torch
        top = vals.amax(dim=2, keepdim=True)
        near = vals >= top - tol
        out = near.to(torch.int8).argmax(dim=2)
        return out.to(torch.int8 if w.shape[1] <= 127 else torch.int16)


def _maxpool_windows(module: nn.Module, in_shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """Windows of a max-pooling module as (C*n_out, k) flat input indices (-1 padding),
    found by pooling one-hot images (works for padding, dilation, ceil_mode, adaptive)."""
    if len(in_shape) < 2:
        raise NotPiecewiseLinearError(f"max pooling on input of shape {in_shape} without a channel axis is not supported.")
    C = in_shape[0]
    spatial = in_shape[1:]
    S = int(np.prod(spatial))
    rows = []
    pool = copy.deepcopy(module).cpu().float()
    step = max(1, int(4e6 // max(S, 1)))
    for i in range(0, S, step):
        j = min(S, i + step)
        eye = torch.zeros((j - i, S), dtype=torch.float32)
        eye[torch.arange(j - i), torch.arange(i, j)] = 1.0
        out = pool(eye.reshape((j - i, 1) + tuple(spatial)))
        rows.append(out.reshape(j - i, -1) > 0.5)
    member = torch.cat(rows, 0)  # (S_in, S_out)
    S_out = member.shape[1]
    counts = member.sum(0)
    k = int(counts.max()) if S_out else 1
    win = torch.full((S_out, k), -1, dtype=torch.long)
    o_idx, i_idx = member.T.nonzero(as_tuple=True)  # sorted by output then input
    pos = torch.arange(o_idx.shape[0]) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    win[o_idx, pos] = i_idx
    full = torch.cat([torch.where(win >= 0, win + c * S, win) for c in range(C)], 0)
    return full.to(device)


def _make_layer(call: _Call, device) -> _Layer:
    mod = call.module
    m = int(np.prod(call.in_shape)) if call.in_shape else 1
    if isinstance(mod, _RELU_TYPES):
        a = torch.arange(m, device=device)
        return _Layer(call, "relu", m, a, torch.full_like(a, -1), torch.zeros(m, dtype=torch.float64, device=device), m)
    if isinstance(mod, _HARDTANH_TYPES):
        lo, hi = float(mod.min_val), float(mod.max_val)
        a = torch.arange(m, device=device)
        la = torch.cat([a, a])
        lc = torch.cat([torch.full((m,), lo, dtype=torch.float64), torch.full((m,), hi, dtype=torch.float64)]).to(device)
        return _Layer(call, "hardtanh", m, la, torch.full_like(la, -1), lc, m, lo=lo, hi=hi)
    win = _maxpool_windows(mod, call.in_shape, device, torch.float64)
    k = win.shape[1]
    ii, jj = torch.triu_indices(k, k, 1, device=device)
    A = win[:, ii]
    B = win[:, jj]
    ok = (A >= 0) & (B >= 0)
    la, lb = A[ok], B[ok]
    return _Layer(call, "maxpool", m, la, lb, torch.zeros(la.shape[0], dtype=torch.float64, device=device), win.shape[0], windows=win)


# ======================================================================================
# the polygon mesh and the cuts
# ======================================================================================


class _Grow:
    """A tensor with spare rows, for cheap appends."""

    def __init__(self, t: torch.Tensor):
        self.data = t
        self.n = t.shape[0]

    @property
    def t(self) -> torch.Tensor:
        return self.data[: self.n]

    def reserve(self, cap: int) -> None:
        if cap > self.data.shape[0]:
            new = self.data.new_empty((cap,) + tuple(self.data.shape[1:]))
            new[: self.n] = self.data[: self.n]
            self.data = new

    def append(self, rows: torch.Tensor) -> None:
        k = rows.shape[0]
        need = self.n + k
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0], 64)
            new = self.data.new_empty((cap,) + tuple(self.data.shape[1:]))
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.data[self.n:need] = rows
        self.n = need


_KEY = 1 << 31  # edge keys lo * _KEY + hi (vertex ids stay below 2**31)


class _Mesh:
    """Convex polygons (CCW) as padded vertex-index rows over a shared vertex table X (V, 2)
    with per-vertex values Z (V, m) of the current layer's input."""

    def __init__(self, X: torch.Tensor, Z: torch.Tensor, polys: torch.Tensor, cnt: torch.Tensor):
        self.X = _Grow(X)
        self.Z = _Grow(Z)
        self.polys = _Grow(polys)
        self.cnt = _Grow(cnt)
        self.anc = _Grow(torch.arange(polys.shape[0], device=polys.device))
        self.edge_table: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def P(self) -> int:
        return self.polys.n

    @property
    def K(self) -> int:
        return self.polys.data.shape[1]

    def widen(self, K: int) -> None:
        if K <= self.K:
            return
        d = self.polys.data
        extra = torch.full((d.shape[0], K - d.shape[1]), -1, dtype=d.dtype, device=d.device)
        self.polys.data = torch.cat([d, extra], 1)

    def reset_values(self, Z: torch.Tensor, capacity: int = 0) -> None:
        """New per-vertex values (V, m), with room for ``capacity`` rows in all."""
        self.Z = _Grow(Z)
        if capacity > Z.shape[0]:
            self.Z.reserve(capacity)
            self.X.reserve(capacity)

    def line_values_multi(self, ids: torch.Tensor, la: torch.Tensor, lb: torch.Tensor, lc: torch.Tensor,
                          lines: torch.Tensor) -> torch.Tensor:
        """Values of line ``lines[i]`` at vertices ``ids[i, :]`` (rows of ids, one line per row)."""
        Z = self.Z.data
        a = la[lines]
        b = lb[lines]
        shape = ids.shape
        cols_a = a.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape)
        val = Z[ids, cols_a]
        if bool((b >= 0).any()):
            cols_b = b.clamp_min(0).reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape)
            vb = Z[ids, cols_b]
            has_b = (b >= 0).reshape((-1,) + (1,) * (len(shape) - 1))
            val = val - torch.where(has_b, vb, torch.zeros_like(vb))
        c = lc[lines].to(val.dtype)
        if bool((c != 0).any()):
            val = val - c.reshape((-1,) + (1,) * (len(shape) - 1))
        return val

    def crossing(self, rows: torch.Tensor, lines: torch.Tensor, la, lb, lc, tols) -> torch.Tensor:
        """Whether line ``lines[i]`` has vertices strictly on both sides (beyond its tolerance) in polygon ``rows[i]``."""
        vi = self.polys.data[rows]
        valid = vi >= 0
        val = self.line_values_multi(vi.clamp_min(0), la, lb, lc, lines)
        tol = tols[lines].unsqueeze(1)
        return ((val > tol) & valid).any(1) & ((val < -tol) & valid).any(1)

    def cut_multi(self, rows: torch.Tensor, lines: torch.Tensor, la, lb, lc, tols) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut polygon ``rows[i]`` by line ``lines[i]`` (each polygon at most once). The positive
        piece keeps the row, the negative one is appended. Returns (split mask, new row ids)."""
        polys = self.polys.data
        vi = polys.index_select(0, rows)
        cnt = self.cnt.data.index_select(0, rows)
        valid = vi >= 0
        vic = vi.clamp_min(0)
        val = self.line_values_multi(vic, la, lb, lc, lines)
        tol = tols[lines].unsqueeze(1)
        pos = (val > tol) & valid
        neg = (val < -tol) & valid
        split = pos.any(1) & neg.any(1)
        dev = vi.device
        if not bool(split.any()):
            return split, torch.empty(0, dtype=torch.long, device=dev)
        if not bool(split.all()):
            rows, lines, vi, vic, val, valid, cnt, pos, neg = (
                t[split] for t in (rows, lines, vi, vic, val, valid, cnt, pos, neg)
            )
        s = pos.to(torch.int8) - neg.to(torch.int8)
        T, K = vi.shape
        j = torch.arange(K, device=dev).unsqueeze(0)
        nxt = torch.where(j + 1 < cnt.unsqueeze(1), j + 1, torch.zeros_like(j))
        vn = vi.gather(1, nxt)
        sn = s.gather(1, nxt)
        cross = valid & (s * sn < 0)
        ea = vi[cross]
        eb = vn[cross]
        el = lines.unsqueeze(1).expand(-1, K)[cross]
        # An edge is cut by the lowest-numbered line crossing it, from both sides (each side
        # takes its lines in order), so the edge alone identifies the new vertex: look it up
        # among the vertices made earlier in this layer, make the missing ones once.
        elo = torch.minimum(ea, eb)
        ehi = torch.maximum(ea, eb)
        key = elo * _KEY + ehi
        ukey, inv = torch.unique(key, return_inverse=True)
        found = torch.full_like(ukey, -1)
        for ks, ids in self.edge_table:
            pos = torch.searchsorted(ks, ukey).clamp_max(ks.shape[0] - 1)
            hit = ks[pos] == ukey
            found = torch.where(hit, ids[pos], found)
        miss = found < 0
        if bool(miss.any()):
            first = torch.full_like(ukey, key.shape[0])
            first.scatter_reduce_(0, inv, torch.arange(key.shape[0], device=dev), reduce="amin")
            first = first[miss]
            ulo, uhi, ul = elo[first], ehi[first], el[first]
            zlo = self.line_values_multi(ulo, la, lb, lc, ul)
            zhi = self.line_values_multi(uhi, la, lb, lc, ul)
            t = (zlo / (zlo - zhi)).unsqueeze(1)
            X = self.X.data
            Zd = self.Z.data
            newX = torch.lerp(X.index_select(0, ulo), X.index_select(0, uhi), t)
            newZ = torch.lerp(Zd.index_select(0, ulo), Zd.index_select(0, uhi), t)
            V = self.X.n
            new_ids = torch.arange(V, V + ulo.shape[0], device=dev)
            self.X.append(newX)
            self.Z.append(newZ)
            found[miss] = new_ids
            self.edge_table.append((ukey[miss], new_ids))
            if len(self.edge_table) > 8:
                ks = torch.cat([k for k, _ in self.edge_table])
                ids = torch.cat([i for _, i in self.edge_table])
                o = torch.argsort(ks)
                self.edge_table = [(ks[o], ids[o])]
        cross_id = torch.full((T, K), -1, dtype=torch.long, device=dev)
        cross_id[cross] = found[inv]
        aug = torch.stack([vi, cross_id], 2).reshape(T, 2 * K)
        asg = torch.stack([s, torch.zeros_like(s)], 2).reshape(T, 2 * K)
        aval = torch.stack([valid, cross], 2).reshape(T, 2 * K)
        piece_p, cnt_p = _compact_rows(aug, aval & (asg >= 0))
        piece_n, cnt_n = _compact_rows(aug, aval & (asg <= 0))
        self.widen(max(piece_p.shape[1], piece_n.shape[1]))
        Kc = self.K
        full_p = torch.full((T, Kc), -1, dtype=torch.long, device=dev)
        full_p[:, : piece_p.shape[1]] = piece_p
        full_n = torch.full((T, Kc), -1, dtype=torch.long, device=dev)
        full_n[:, : piece_n.shape[1]] = piece_n
        self.polys.data[rows] = full_p
        self.cnt.data[rows] = cnt_p
        first_new = self.P
        self.polys.append(full_n)
        self.cnt.append(cnt_n)
        self.anc.append(self.anc.data[rows])
        return split, torch.arange(first_new, first_new + T, device=dev)

    def compact(self) -> None:
        """Drop unreferenced vertices (left inside merged polygons)."""
        Xt = self.X.t
        V = Xt.shape[0]
        if V == 0:
            return
        dev = Xt.device
        polys = self.polys.t
        used = torch.zeros(V, dtype=torch.bool, device=dev)
        used[polys[polys >= 0]] = True
        if bool(used.all()):
            return
        remap = torch.cumsum(used.to(torch.long), 0) - 1
        newp = torch.where(polys >= 0, remap[polys.clamp_min(0)], polys)
        self.X = _Grow(Xt[used])
        self.Z = _Grow(self.Z.t[used])
        self.polys = _Grow(newp)
        self.cnt = _Grow(self.cnt.t.clone())

    def restart(self) -> None:
        """Every polygon becomes its own ancestor (at the start of a layer)."""
        self.anc = _Grow(torch.arange(self.P, device=self.polys.data.device))

    def merge(self, gkey: torch.Tensor) -> None:
        """Merge the polygons that share a key row (their union must be convex): the boundary
        edges of each group (edges whose reverse is not in the group) are chained into one
        cycle. Needs a conforming mesh (call :meth:`dedupe` first)."""
        P = self.P
        if P == 0:
            return
        gid = _row_ids(gkey)
        sizes = torch.bincount(gid)
        multi = sizes[gid] > 1
        if not bool(multi.any()):
            return
        dev = gid.device
        members = multi.nonzero().squeeze(1)
        vi = self.polys.data[members]
        cnt = self.cnt.data[members]
        K = vi.shape[1]
        j = torch.arange(K, device=dev).unsqueeze(0)
        valid = j < cnt.unsqueeze(1)
        nxt = torch.where(j + 1 < cnt.unsqueeze(1), j + 1, torch.zeros_like(j))
        vn = vi.gather(1, nxt)
        g = gid[members].unsqueeze(1).expand(-1, K)
        ea, eb, eg = vi[valid], vn[valid], g[valid]
        V = self.X.n + 1
        key = (eg * V + ea) * V + eb
        rkey = (eg * V + eb) * V + ea
        boundary = ~torch.isin(rkey, key)
        ba, bb, bg = ea[boundary], eb[boundary], eg[boundary]
        skey = bg * V + ba
        order = torch.argsort(skey)
        skey, ba, bb, bg = skey[order], ba[order], bb[order], bg[order]
        # groups whose boundary is not one simple cycle (tolerance artefacts) stay unmerged
        dup = torch.zeros_like(skey, dtype=torch.bool)
        dup[1:] = skey[1:] == skey[:-1]
        ug, nb = torch.unique_consecutive(bg, return_counts=True)
        starts = torch.cumsum(nb, 0) - nb
        L = int(nb.max())
        G = ug.shape[0]
        seq = torch.full((G, L), -1, dtype=torch.long, device=dev)
        start_a = ba[starts]
        cur_b = bb[starts]
        seq[:, 0] = start_a
        ok = torch.ones(G, dtype=torch.bool, device=dev)
        for step in range(1, L):
            active = step < nb
            if not bool(active.any()):
                break
            q = ug * V + cur_b
            p = torch.searchsorted(skey, q).clamp_max(skey.shape[0] - 1)
            found = skey[p] == q
            ok &= found | ~active
            seq[:, step] = torch.where(active, cur_b, seq[:, step])
            cur_b = torch.where(active, bb[p], cur_b)
        ok &= cur_b == start_a
        if bool(dup.any()):
            ok &= ~torch.isin(ug, torch.unique(bg[dup]))
        merged_g = ug[ok]
        if merged_g.numel() == 0:
            return
        remove = torch.isin(gid, merged_g)
        rep = torch.full((int(gid.max()) + 1,), -1, dtype=torch.long, device=dev)
        rep[gid[remove]] = remove.nonzero().squeeze(1)  # any member, for the ancestor
        new_rows = seq[ok]
        new_cnt = nb[ok]
        new_anc = self.anc.t[rep[merged_g]]
        self.widen(new_rows.shape[1])
        pad = torch.full((new_rows.shape[0], self.K), -1, dtype=torch.long, device=dev)
        pad[:, : new_rows.shape[1]] = new_rows
        keep = ~remove
        self.polys = _Grow(torch.cat([self.polys.t[keep], pad], 0))
        self.cnt = _Grow(torch.cat([self.cnt.t[keep], new_cnt], 0))
        self.anc = _Grow(torch.cat([self.anc.t[keep], new_anc], 0))

    def poly_means(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-vertex ``values`` (V, m) over each polygon's vertices (P, m): the
        values at the vertex centroid when they are affine on the polygon."""
        polys, cnt = self.polys.t, self.cnt.t
        P, K = polys.shape
        out = values.new_zeros((P, values.shape[1]))
        for j in range(K):
            col = polys[:, j]
            ok = col >= 0
            if bool(ok.all()):
                out += values[col]
            else:
                idx = ok.nonzero().squeeze(1)
                out[idx] += values[col[idx]]
        return out / cnt.to(values.dtype).unsqueeze(1)


def _row_ids(rows: torch.Tensor) -> torch.Tensor:
    """Ids 0..G-1 of the distinct rows of an integer tensor (N, w) (torch.unique(dim=0) is
    slow on CPU: sort a 1-D key when the columns fit, else numpy's row unique)."""
    if rows.ndim == 1:
        return torch.unique(rows, return_inverse=True)[1]
    if rows.shape[1] == 1:
        return torch.unique(rows[:, 0], return_inverse=True)[1]
    lo = rows.amin(0).to(torch.int64)
    span = (rows.amax(0).to(torch.int64) - lo + 1).tolist()
    total = 1
    for x in span:
        total *= int(x)
    if total < 2 ** 62:
        key = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
        for j, x in enumerate(span):
            key = key * int(x) + (rows[:, j].to(torch.int64) - lo[j])
        return torch.unique(key, return_inverse=True)[1]
    arr = np.ascontiguousarray(rows.cpu().numpy())
    _, inv = np.unique(arr, axis=0, return_inverse=True)
    return torch.from_numpy(inv.reshape(-1).astype(np.int64)).to(rows.device)


def _compact_rows(ids: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept entries of each row to the front (order preserved); -1 elsewhere."""
    n, w = ids.shape
    cnt = keep.sum(1)
    W = int(cnt.max()) if n else 0
    pos = torch.where(keep, torch.cumsum(keep, 1) - 1, torch.full_like(ids, w))
    out = torch.full((n, w + 1), -1, dtype=ids.dtype, device=ids.device)
    out.scatter_(1, pos, torch.where(keep, ids, torch.full_like(ids, -1)))
    return out[:, :W], cnt


def _absmax(vals: torch.Tensor) -> torch.Tensor:
    """Largest magnitude per column, without a temporary |vals|."""
    if vals.shape[0] == 0:
        return vals.new_zeros(vals.shape[1])
    return torch.maximum(vals.amax(0), -vals.amin(0))


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """(n, L) bool -> (n, ceil(L/64)) int64 bit words (bit k of word w is column 64 w + k)."""
    n, L = mask.shape
    W = (L + 63) // 64
    if mask.device.type == "cpu":
        packed = np.packbits(mask.numpy(), axis=1, bitorder="little")  # (n, ceil(L/8)) uint8
        if packed.shape[1] != 8 * W:
            packed = np.concatenate([packed, np.zeros((n, 8 * W - packed.shape[1]), dtype=np.uint8)], 1)
        return torch.from_numpy(np.ascontiguousarray(packed).view("<i8").astype(np.int64, copy=False))
    if W * 64 != L:
        mask = torch.cat([mask, mask.new_zeros((n, W * 64 - L))], 1)
    shifts = torch.arange(64, device=mask.device, dtype=torch.int64)
    return (mask.reshape(n, W, 64).to(torch.int64) << shifts).sum(2)


def _unpack_bits(words: torch.Tensor, L: int) -> torch.Tensor:
    """Inverse of :func:`_pack_bits`: (n, W) int64 -> (n, L) int8 of 0/1."""
    if words.device.type == "cpu":
        b = np.unpackbits(np.ascontiguousarray(words.numpy().astype("<i8")).view(np.uint8), axis=1, bitorder="little")
        return torch.from_numpy(np.ascontiguousarray(b[:, :L]).view(np.int8))
    shifts = torch.arange(64, device=words.device, dtype=torch.int64)
    bits = (words.unsqueeze(2) >> shifts) & 1
    return bits.reshape(words.shape[0], -1)[:, :L].to(torch.int8)


def _crossing_table(mesh: _Mesh, la: torch.Tensor, lb: torch.Tensor, lc: torch.Tensor, rtol: float):
    """Tolerances per line and the (polygon, line) pairs where the line has vertices strictly
    on both sides, sorted by polygon then line; signs are packed 64 to a word."""
    Zt = mesh.Z.t
    V, m = Zt.shape
    L = int(la.shape[0])
    dev = Zt.device
    polys = mesh.polys.t
    P, K = polys.shape
    tols = torch.empty(L, dtype=Zt.dtype, device=dev)
    W = (L + 63) // 64
    pos_w = torch.empty((V, W), dtype=torch.int64, device=dev)
    neg_w = torch.empty((V, W), dtype=torch.int64, device=dev)
    simple = bool((lb < 0).all()) and bool((lc == 0).all()) and L == m and bool((la == torch.arange(m, device=dev)).all())
    step = max(64, (int(8e6 // max(1, V)) // 64) * 64)
    zero = torch.zeros((), dtype=Zt.dtype, device=dev)
    for i in range(0, L, step):
        if simple:
            vals = Zt[:, i:i + step]
        else:
            a, b = la[i:i + step], lb[i:i + step]
            vals = Zt[:, a] - torch.where(b >= 0, Zt[:, b.clamp_min(0)], zero) - lc[i:i + step]
        tol = rtol * _absmax(vals) + 1e-300
        tols[i:i + step] = tol
        pos_w[:, i // 64:(i + vals.shape[1] + 63) // 64] = _pack_bits(vals > tol)
        neg_w[:, i // 64:(i + vals.shape[1] + 63) // 64] = _pack_bits(vals < -tol)
    pos_p = torch.zeros((P, W), dtype=torch.int64, device=dev)
    neg_p = torch.zeros((P, W), dtype=torch.int64, device=dev)
    for j in range(K):
        col = polys[:, j]
        ok = (col >= 0).unsqueeze(1)
        c = col.clamp_min(0)
        pos_p |= torch.where(ok, pos_w[c], 0)
        neg_p |= torch.where(ok, neg_w[c], 0)
    cross = pos_p & neg_p
    p_idx, w_idx = (cross != 0).nonzero(as_tuple=True)
    if p_idx.numel() == 0:
        e = torch.empty(0, dtype=torch.long, device=dev)
        return tols, e, e
    words = cross[p_idx, w_idx]
    shifts = torch.arange(64, device=dev, dtype=torch.int64)
    bits = ((words.unsqueeze(1) >> shifts) & 1).bool()
    r, bit = bits.nonzero(as_tuple=True)
    pp = p_idx[r]
    pl = w_idx[r] * 64 + bit
    return tols, pp, pl


def _poly_or(mesh: _Mesh, words: torch.Tensor) -> torch.Tensor:
    """Bitwise OR of per-vertex words (V, W) over each polygon's vertices (P, W)."""
    polys = mesh.polys.t
    out = torch.zeros((polys.shape[0], words.shape[1]), dtype=torch.int64, device=words.device)
    for j in range(polys.shape[1]):
        col = polys[:, j]
        out |= torch.where((col >= 0).unsqueeze(1), words[col.clamp_min(0)], 0)
    return out


def _pattern_bits(mesh: _Mesh, ly: "_Layer", tols: torch.Tensor) -> torch.Tensor:
    """ReLU-like and Hardtanh patterns of the current polygons: a unit is on a polygon
    where a vertex is beyond its tolerance on the positive side (no vertex is beyond it on
    the other side once the polygons are cut)."""
    Z = mesh.Z.t
    m = ly.m
    if ly.kind == "relu":
        return _unpack_bits(_poly_or(mesh, _pack_bits(Z > tols[:m])), m)
    lo = _unpack_bits(_poly_or(mesh, _pack_bits(Z - ly.lo > tols[:m])), m)
    hi = _unpack_bits(_poly_or(mesh, _pack_bits(Z - ly.hi > tols[m:2 * m])), m)
    return lo + hi


def _cut_by_lines(mesh: _Mesh, la: torch.Tensor, lb: torch.Tensor, lc: torch.Tensor, rtol: float, limit: int | None,
                  limit_msg: Callable[[int], str] | None, anc_lines: torch.Tensor | None = None) -> None:
    """Cut every polygon by every line of a layer that crosses it, in rounds: in each round
    every polygon is cut by the first (lowest-numbered) line still crossing it, and its two
    pieces keep the later lines that cross them. Each piece thus is the cell of a point in the
    arrangement of a growing prefix of the lines (randomised incremental construction), so the
    number of rounds grows like the logarithm of the number of lines. A shared edge is cut in
    the same order from both sides, so both create the same crossing points bit for bit."""
    P0 = mesh.P
    L = int(la.shape[0])
    if L == 0 or P0 == 0:
        return torch.zeros(L, dtype=mesh.Z.data.dtype, device=la.device)
    dev = la.device
    lc = lc.to(mesh.Z.data.dtype)
    mesh.edge_table = []
    tols, pp, pl = _crossing_table(mesh, la, lb, lc, rtol)
    if pp.numel() == 0:
        return tols
    order = torch.argsort(pp * L + pl)
    pp, pl = pp[order], pl[order]
    while pp.numel():
        first = torch.ones_like(pp, dtype=torch.bool)
        first[1:] = pp[1:] != pp[:-1]
        rows, lines = pp[first], pl[first]
        rp, rl = pp[~first], pl[~first]
        split, new_rows = mesh.cut_multi(rows, lines, la, lb, lc, tols)
        if limit is not None and mesh.P > limit:
            raise PartitionTooLarge(limit_msg(mesh.P), mesh.P)
        if new_rows.numel() == 0:
            pp, pl = rp, rl
            continue
        child = torch.full((mesh.P,), -1, dtype=torch.long, device=dev)
        child[rows[split]] = new_rows
        ch = child[rp]
        was_split = ch >= 0
        keep_p, keep_l = rp[~was_split], rl[~was_split]
        sp, sl = rp[was_split], rl[was_split]
        tp = torch.cat([sp, ch[was_split]])
        tl = torch.cat([sl, sl])
        ok = mesh.crossing(tp, tl, la, lb, lc, tols)
        pp = torch.cat([keep_p, tp[ok]])
        pl = torch.cat([keep_l, tl[ok]])
        order = torch.argsort(pp * L + pl)
        pp, pl = pp[order], pl[order]
    mesh.edge_table = []
    return tols


# ======================================================================================
# the result
# ======================================================================================


@dataclasses.dataclass(frozen=True, eq=False)
class Partition(Result):
    """The exact linear regions of a piecewise-linear network on a 2-D slice (SplineCam,
    Humayun et al. CVPR 2023), as returned by :func:`partition`.

    Attributes
    ----------
    vertices : (V, 2) float64 plane coordinates; region ``r`` is the convex polygon
        ``vertices[offsets[r]:offsets[r+1]]`` in counter-clockwise order.
    offsets : (R + 1,) int64.
    areas : (R,) polygon areas (they sum to the area of ``bounds``).
    patterns : (R, n_units) int8 activation pattern: for every piecewise-linear layer in
        execution order, 1/0 per ReLU/LeakyReLU/PReLU unit (active or not), 0/1/2 per Hardtanh
        unit (below, linear, above), the argmax position inside each max-pooling window.
    layer_slices : dict layer name -> slice of the pattern columns.
    out_A, out_c : (R, n_out, 2) and (R, n_out): on region ``r`` the output (see ``output``)
        restricted to the plane is ``out_A[r] @ (s, t) + out_c[r]``.
    predicted : (R,) the argmax class at the region's centroid (for one output, 1 when it is
        positive), or -1 everywhere when the output is not class scores.
    boundary : (K, 2, 2) decision-boundary segments (endpoints in plane coordinates): where
        the predicted class changes, inside regions and along their edges.
    bounds : (s_min, s_max, t_min, t_max).
    plane : the :class:`Plane`.
    layers : names of the piecewise-linear layers (``name#2`` for a second call of a module).
    output : what ``out_A``/``out_c`` describe ("model output", or the input/output of the
        ``stop_at`` module).
    """

    vertices: np.ndarray
    offsets: np.ndarray
    areas: np.ndarray
    patterns: np.ndarray
    layer_slices: dict
    out_A: np.ndarray
    out_c: np.ndarray
    predicted: np.ndarray
    boundary: np.ndarray
    bounds: tuple
    plane: Plane
    layers: tuple
    output: str = "model output"

    @property
    def n_regions(self) -> int:
        """The number of linear regions R."""
        return int(self.offsets.shape[0] - 1)

    def polygon(self, r: int) -> np.ndarray:
        """Vertices (k, 2) of region ``r``, counter-clockwise."""
        r = int(r)
        if not -self.n_regions <= r < self.n_regions:
            raise IndexError(f"region {r} out of range (the partition has {self.n_regions} regions).")
        r %= self.n_regions
        return self.vertices[self.offsets[r]:self.offsets[r + 1]]

    def region_of(self, st: Any) -> np.ndarray:
        """Region index (N,) of plane points ``st`` (N, 2); -1 outside ``bounds``.

        A point on a shared edge gets the region it is deepest inside (any of them)."""
        pts = np.asarray(st, dtype=np.float64).reshape(-1, 2)
        return _locate(self, pts)

    def plot(self, ax=None, **kw):
        """Draw the partition (see :func:`shapelens.regions.plots.plot_partition`)."""
        from .plots import plot_partition

        return plot_partition(self, ax=ax, **kw)

    def to_dict(self, patterns: bool | None = None) -> dict:
        """JSON-safe data. ``patterns``: include the (R, n_units) activation patterns; ``None``
        includes them when they have at most 2 million entries (else ``"patterns": None`` and
        ``"patterns_omitted": true``; they stay in the object)."""
        if patterns is None:
            patterns = self.patterns.size <= 2_000_000
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "n_regions": self.n_regions,
            "bounds": [float(x) for x in self.bounds],
            "layers": list(self.layers),
            "layer_slices": {k: [int(s.start), int(s.stop)] for k, s in self.layer_slices.items()},
            "output": self.output,
            "plane": self.plane.to_dict(),
        }
        for name in ("vertices", "offsets", "areas", "out_A", "out_c", "predicted", "boundary"):
            arr = getattr(self, name)
            out[name] = arr.tolist()  # finite numbers: numpy's fast conversion
        out["patterns"] = self.patterns.tolist() if patterns else None
        out["patterns_omitted"] = not patterns
        return out


def _locate(part: Partition, pts: np.ndarray) -> np.ndarray:
    """Point location by a uniform grid of polygon bounding boxes."""
    N = pts.shape[0]
    out = np.full(N, -1, dtype=np.int64)
    R = part.n_regions
    if N == 0 or R == 0:
        return out
    s0, s1, t0, t1 = part.bounds
    w, h = s1 - s0, t1 - t0
    eps = 1e-12 * max(w, h)
    inside = (pts[:, 0] >= s0 - eps) & (pts[:, 0] <= s1 + eps) & (pts[:, 1] >= t0 - eps) & (pts[:, 1] <= t1 + eps)
    if not inside.any():
        return out
    G = int(max(1, min(1024, math.ceil(math.sqrt(R)))))
    V = part.vertices
    off = part.offsets
    cnt = np.diff(off)
    rid = np.repeat(np.arange(R), cnt)
    lo_s = np.minimum.reduceat(V[:, 0], off[:-1])
    hi_s = np.maximum.reduceat(V[:, 0], off[:-1])
    lo_t = np.minimum.reduceat(V[:, 1], off[:-1])
    hi_t = np.maximum.reduceat(V[:, 1], off[:-1])

    def cell(x, a, span):
        return np.clip(((x - a) / span * G).astype(np.int64), 0, G - 1)

    ci0, ci1 = cell(lo_s - eps, s0, w), cell(hi_s + eps, s0, w)
    cj0, cj1 = cell(lo_t - eps, t0, h), cell(hi_t + eps, t0, h)
    ni = ci1 - ci0 + 1
    nj = cj1 - cj0 + 1
    tot = ni * nj
    reg = np.repeat(np.arange(R), tot)
    k = np.arange(tot.sum()) - np.repeat(np.cumsum(tot) - tot, tot)
    ci = np.repeat(ci0, tot) + k // np.repeat(nj, tot)
    cj = np.repeat(cj0, tot) + k % np.repeat(nj, tot)
    cid = ci * G + cj
    order = np.argsort(cid, kind="stable")
    cid, reg = cid[order], reg[order]
    cstart = np.searchsorted(cid, np.arange(G * G))
    cend = np.searchsorted(cid, np.arange(G * G), side="right")
    # padded edges per region
    Kmax = int(cnt.max())
    Pv = np.full((R, Kmax, 2), np.nan)
    j = np.arange(V.shape[0]) - np.repeat(off[:-1], cnt)
    Pv[rid, j] = V
    nxt_j = np.where(j + 1 < np.repeat(cnt, cnt), j + 1, 0)
    Pn = np.full((R, Kmax, 2), np.nan)
    Pn[rid, j] = V[off[:-1][rid] + nxt_j]
    idx = np.nonzero(inside)[0]
    p = pts[idx]
    pc = cell(p[:, 0], s0, w) * G + cell(p[:, 1], t0, h)
    nc = cend[pc] - cstart[pc]
    best = np.full(idx.shape[0], -np.inf)
    best_r = np.full(idx.shape[0], -1, dtype=np.int64)
    # process pairs (point, candidate) in chunks
    total = int(nc.sum())
    pt_rep = np.repeat(np.arange(idx.shape[0]), nc)
    kk = np.arange(total) - np.repeat(np.cumsum(nc) - nc, nc)
    cand = reg[np.repeat(cstart[pc], nc) + kk]
    chunk = max(1, 2_000_000 // max(1, Kmax))
    for a in range(0, total, chunk):
        pr = pt_rep[a:a + chunk]
        cr = cand[a:a + chunk]
        A = Pv[cr]
        B = Pn[cr]
        q = p[pr][:, None, :]
        e = B - A
        ln = np.hypot(e[..., 0], e[..., 1])
        cross = (e[..., 0] * (q[..., 1] - A[..., 1]) - e[..., 1] * (q[..., 0] - A[..., 0])) / np.where(ln > 0, ln, 1.0)
        cross = np.where(np.isnan(cross) | (ln == 0), np.inf, cross)
        depth = cross.min(1)
        # per point keep the deepest candidate
        ordr = np.lexsort((-depth, pr))
        pr_s, d_s, c_s = pr[ordr], depth[ordr], cr[ordr]
        firsts = np.ones(pr_s.shape[0], dtype=bool)
        firsts[1:] = pr_s[1:] != pr_s[:-1]
        upd = d_s[firsts] > best[pr_s[firsts]]
        tgt = pr_s[firsts][upd]
        best[tgt] = d_s[firsts][upd]
        best_r[tgt] = c_s[firsts][upd]
    scale = max(w, h)
    best_r[best < -1e-9 * scale] = -1
    out[idx] = best_r
    return out


# ======================================================================================
# estimate
# ======================================================================================


def estimate_regions(model: nn.Module, plane: Plane, bounds: Any, *, stop_at: Any = None, n_lines: int = 8,
                     device: str | torch.device = "auto", dtype: torch.dtype = torch.float64) -> int:
    """A quick estimate of the number of linear regions of ``model`` on the slice (the one
    :func:`partition` checks against ``max_regions``): exact region-boundary crossings along
    ``n_lines`` horizontal and ``n_lines`` vertical test lines give the boundary length per area
    (Cauchy-Crofton), and the region density of a Poisson line tessellation with that boundary
    length gives the count. Typically within a factor of 1.5 of the exact count."""
    plane = _check_plane(plane)
    b = _check_bounds(bounds)
    n_lines = check_int(n_lines, "n_lines", 1)
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    with single_thread(dev.type == "cpu"):
        net = _Net(model, plane, dev, dtype, stop_at, threads)
        return _estimate(net, b, n_lines)


def _estimate(net: _Net, b: tuple[float, float, float, float], n_lines: int = 8) -> int:
    """Regions estimated from exact crossings along test lines.

    Along ``n_lines`` horizontal and ``n_lines`` vertical lines through the box, the network is
    piecewise-linear in one variable; its breakpoints are found exactly, layer by layer, and the
    region boundaries crossed are counted (consecutive pieces with different activation
    patterns). Cauchy-Crofton turns C crossings on test lines of total length l into the
    boundary length per area L_A = pi C / (2 l), and a partition with boundary length L_A per
    area has about L_A^2 A / pi cells in area A (the cell density of a Poisson line
    tessellation; within a factor 1.5 on random and trained ReLU networks)."""
    if not net.pl:
        return 1
    dev, dt = net.device, net.dtype
    layers = [_make_layer(c, dev) for c in net.pl]
    s0, s1, t0, t1 = b
    w, h = s1 - s0, t1 - t0
    fr = (torch.arange(n_lines, dtype=dt, device=dev) + 0.5) / n_lines
    # segments: start (S, 2), direction (S, 2)
    starts = torch.cat([torch.stack([torch.full_like(fr, s0), t0 + h * fr], 1), torch.stack([s0 + w * fr, torch.full_like(fr, t0)], 1)])
    dirs = torch.cat([torch.tensor([[w, 0.0]], dtype=dt, device=dev).expand(n_lines, 2),
                      torch.tensor([[0.0, h]], dtype=dt, device=dev).expand(n_lines, 2)])
    S = starts.shape[0]
    seg = torch.arange(S, device=dev).repeat_interleave(2)
    tt = torch.tensor([0.0, 1.0], dtype=dt, device=dev).repeat(S)

    def points(seg_, t_):
        return starts[seg_] + t_.unsqueeze(1) * dirs[seg_]

    with torch.no_grad():
        for ly in layers:
            z = net.values(points(seg, tt), ly.call)
            same = seg[1:] == seg[:-1]
            new_seg, new_t = [], []
            L = ly.la.shape[0]
            step = max(1, int(4e6 // max(1, z.shape[0])))
            for i in range(0, L, step):
                a, bb = ly.la[i:i + step], ly.lb[i:i + step]
                v = z[:, a] - torch.where(bb >= 0, z[:, bb.clamp_min(0)], torch.zeros((), dtype=dt, device=dev)) \
                    - ly.lc[i:i + step].to(dt)
                tol = 1e-10 * _absmax(v) + 1e-300
                vl, vr = v[:-1], v[1:]
                m = same.unsqueeze(1) & (((vl > tol) & (vr < -tol)) | ((vl < -tol) & (vr > tol)))
                k, _ = m.nonzero(as_tuple=True)
                if k.numel():
                    lam = vl[m] / (vl[m] - vr[m])
                    new_seg.append(seg[k])
                    new_t.append(tt[k] + lam * (tt[k + 1] - tt[k]))
            if new_seg:
                seg = torch.cat([seg] + new_seg)
                tt = torch.cat([tt] + new_t)
                o = torch.argsort(seg.to(dt) * 4.0 + tt)
                seg, tt = seg[o], tt[o]
        # region boundaries crossed: pattern changes between consecutive pieces
        same = seg[1:] == seg[:-1]
        mids = (tt[:-1] + tt[1:]) / 2
        ms, mt = seg[:-1][same], mids[same]
        zs = net.all_inputs(points(ms, mt))
        pat = torch.cat([ly.pattern(z).to(torch.int16) for ly, z in zip(layers, zs)], 1)
        change = (ms[1:] == ms[:-1]) & (pat[1:] != pat[:-1]).any(1)
        C = int(change.sum())
    length = n_lines * (w + h)
    A = w * h
    LA = math.pi * C / (2.0 * length)
    return int(max(1, round(LA * LA * A / math.pi)))


# ======================================================================================
# partition
# ======================================================================================


def _check_plane(plane: Any) -> Plane:
    if not isinstance(plane, Plane):
        raise TypeError(
            f"plane must be a shapelens.regions.Plane, got {type(plane).__name__}; build one with Plane(origin, u, v) "
            "or Plane.from_points(x0, x1, x2)."
        )
    return plane


def _check_bounds(bounds: Any) -> tuple[float, float, float, float]:
    try:
        b = tuple(float(x) for x in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be four numbers (s_min, s_max, t_min, t_max), got {bounds!r}.") from None
    if len(b) != 4:
        raise ValueError(f"bounds must be four numbers (s_min, s_max, t_min, t_max), got {len(b)} values.")
    if not all(math.isfinite(x) for x in b):
        raise ValueError(
            f"bounds must be finite, got {b}; the partition of an unbounded slice is infinite. Pass a bounded box, "
            "e.g. the bounds returned by Plane.from_points."
        )
    if not (b[0] < b[1] and b[2] < b[3]):
        raise ValueError(f"bounds {b} are empty: need s_min < s_max and t_min < t_max.")
    return b  # type: ignore[return-value]


def partition(
    model: nn.Module,
    plane: Plane,
    bounds: Any,
    *,
    stop_at: str | None = None,
    max_regions: int = 200_000,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
    progress: bool | None = None,
) -> Partition:
    """Exact partition of a 2-D slice of input space into the linear regions of a
    piecewise-linear network (SplineCam: Humayun et al., CVPR 2023).

    Parameters
    ----------
    model : an ``nn.Module`` taking one tensor, made of Linear, Conv1d/2d/3d (and transposed),
        BatchNorm (evaluated with running statistics), average pooling, Flatten/Unflatten,
        padding, Upsample, Identity/Dropout (eval), residual additions and other affine tensor
        operations, with the piecewise-linear ReLU, LeakyReLU, PReLU, Hardtanh/ReLU6 and
        max-pooling modules (``nn.MaxPool*``, ``nn.AdaptiveMaxPool*``). It is copied, cast to
        ``dtype`` and run in eval mode; the original is left as it was.
    plane, bounds : the slice: points ``plane.origin + s*plane.u + t*plane.v`` with
        ``s_min <= s <= s_max`` and ``t_min <= t <= t_max``; see :meth:`Plane.from_points`.
    stop_at : ``None`` (the whole model; any module or forward operation that is not
        piecewise-linear raises :class:`NotPiecewiseLinearError` naming the first one),
        ``"last_pl"`` (partition by the layers before the first non-piecewise-linear module;
        the output is that module's input) or a module name (stop after that module; the
        output is its output, and its own pieces are included when it is piecewise-linear).
    max_regions : refuse (:class:`PartitionTooLarge`) when the estimate of
        :func:`estimate_regions` (exact crossings along 16 test lines), or the count reached
        while cutting, passes this.
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    dtype : ``torch.float64`` (default, recommended) or ``torch.float32``.
    rtol : pre-activations within ``rtol`` times their largest magnitude on the slice count
        as zero, so no sliver regions thinner than about ``rtol`` times the slice are made
        (default 1e-10 for float64, 1e-5 for float32).
    progress : a progress bar over the layers; ``None`` shows one only on a terminal.

    Returns
    -------
    :class:`Partition`.

    Notes
    -----
    Functional operations inside a custom ``forward`` are invisible to module hooks. When the
    model traces with ``torch.fx``, ``F.relu``/``x.relu()``/``torch.clamp(x, min=0)``,
    ``F.leaky_relu``, ``F.hardtanh``/``F.relu6``, ``F.max_pool*``/``F.adaptive_max_pool*`` are
    turned into the equivalent modules (layers named after their fx node, e.g. ``'relu_1'``),
    and softmax, tanh, GELU, ... into modules that ``stop_at='last_pl'`` can stop before; other
    input-dependent non-affine operations (``x * y``, ``torch.maximum``, unknown functions) are
    refused, naming the node. When the model does not trace, a warning says so, and the output
    is checked to be affine on a sample of 64 regions (``NotPiecewiseLinearError`` if not).

    Stopping right before a final ``nn.Softmax``/``nn.LogSoftmax`` keeps ``predicted`` and the
    decision boundary (the argmax is the same); any other ``stop_at`` describes a hidden layer:
    ``predicted`` is -1 and ``boundary`` is empty. A model with one output is a binary
    classifier: class 1 where the output is positive, the boundary is its zero line.

    The cost grows about linearly with the number of regions: a slice through three MNIST
    digits of a 784-256-256-256-10 ReLU MLP (about 90,000 regions) takes about 2 s on 2 CPU
    cores; the memory is about 4 x 8 bytes per region and unit of the widest layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    plane = _check_plane(plane)
    b = _check_bounds(bounds)
    max_regions = check_int(max_regions, "max_regions", 1)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    if rtol is None:
        rtol = 1e-10 if dtype == torch.float64 else 1e-5
    if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and 0 <= rtol < 1e-2):
        raise ValueError(f"rtol must be a number in [0, 0.01), got {rtol!r}.")
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    # thousands of small tensor operations: a CPU thread pool only spin-waits on them (the
    # forward passes over many vertices use the caller's pool)
    with single_thread(dev.type == "cpu"):
        return _partition(model, plane, b, stop_at, max_regions, dev, dtype, rtol, threads, show_progress(progress))


def _available_bytes(device: torch.device) -> int:
    """Free memory where the partition runs: CUDA free memory, or MemAvailable on Linux."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 << 30


def _partition(model, plane, b, stop_at, max_regions, dev, dtype, rtol, threads, show) -> Partition:
    net = _Net(model, plane, dev, dtype, stop_at, threads)
    est = _estimate(net, b)
    if est > max_regions:
        raise PartitionTooLarge(
            f"the slice is estimated to hold about {est} linear regions (from the region boundaries crossed by 16 test lines), "
            f"more than max_regions={max_regions}. Use smaller bounds, stop_at=<an earlier layer>, or a larger "
            "max_regions (memory and time grow about linearly with the region count).",
            est,
        )

    def too_many(n: int) -> str:
        return (
            f"the partition passed max_regions={max_regions} while cutting ({n} pieces, estimate was {est}); use smaller "
            "bounds, stop_at=<an earlier layer>, or a larger max_regions."
        )

    layers = [_make_layer(c, dev) for c in net.pl]
    # memory: per region about one vertex carrying the widest layer input (values, their copy
    # for the forward pass and the buffer growth), its pattern and its polygon
    width = max([ly.m for ly in layers] + [int(np.prod(net.model_out_shape)) if net.model_out_shape else 1])
    units = sum(ly.n_units for ly in layers)
    itemsize = torch.tensor([], dtype=dtype).element_size()
    need = int(1.3 * est * (4 * width * itemsize + units + 200))
    avail = _available_bytes(dev)
    if need > 0.8 * avail:
        raise PartitionTooLarge(
            f"the slice is estimated to hold about {est} linear regions, which need about {need / 2**30:.1f} GiB "
            f"(layer inputs of up to {width} values at every vertex) but only {avail / 2**30:.1f} GiB is free on "
            f"{dev}. Use smaller bounds or stop_at=<an earlier layer>.",
            est,
        )
    # the start: the bounds rectangle, counter-clockwise
    X = torch.tensor([[b[0], b[2]], [b[1], b[2]], [b[1], b[3]], [b[0], b[3]]], dtype=dtype, device=dev)
    polys = torch.arange(4, device=dev).unsqueeze(0)
    cnt = torch.tensor([4], device=dev)
    with torch.no_grad():
        if layers:
            Z = net.values(X, layers[0].call)
        else:
            Z = net.values(X, "out")
        mesh = _Mesh(X, Z, polys, cnt)
        wide = any(ly.kind == "maxpool" and ly.windows.shape[1] > 127 for ly in layers)
        pdt = torch.int16 if wide else torch.int8
        pattern_cols: torch.Tensor = torch.zeros((1, 0), dtype=pdt, device=dev)
        bar = None
        if show and layers:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(layers), desc="partition", unit="layer")
        try:
            pattern_cols, layer_slices = _cut_layers(net, mesh, layers, pattern_cols, rtol, max_regions, too_many, bar, est)
        finally:
            if bar is not None:
                bar.set_postfix_str(f"{mesh.P} regions")
                bar.close()
        # the output at the vertices
        if layers:
            Y = net.values(mesh.X.t, "out", carried=mesh.Z.t)
        else:
            Y = mesh.Z.t
        mesh.reset_values(Y)
        result = _finish(net, mesh, Y, pattern_cols, layer_slices, b, plane, rtol,
                         merged=any(ly.kind == "maxpool" for ly in layers))
    return result


def _cut_layers(net, mesh, layers, pattern_cols, rtol, max_regions, too_many, bar, est):
    """The cuts of every piecewise-linear layer, and the patterns."""
    layer_slices: dict[str, slice] = {}
    col = 0
    pdt = pattern_cols.dtype
    for li, ly in enumerate(layers):
        if bar is not None:
            bar.set_postfix_str(f"{ly.call.label}: {mesh.P} regions")
        if li > 0:
            Zc = net.values(mesh.X.t, ly.call, carried=mesh.Z.t)
            # room for the new vertices (about one per new region; the estimate is the final count)
            mesh.reset_values(Zc, capacity=min(int(1.3 * est) + 64, 8 * Zc.shape[0]))
        mesh.restart()
        limit = max_regions if ly.kind != "maxpool" else 4 * max_regions
        tols = _cut_by_lines(mesh, ly.la, ly.lb, ly.lc, rtol, limit, too_many)
        if ly.kind != "maxpool":
            pat = _pattern_bits(mesh, ly, tols).to(pdt)
        else:
            ztol = rtol * float(mesh.Z.t.abs().max()) if mesh.Z.n else 0.0
            pat = ly.pattern(mesh.poly_means(mesh.Z.t), ztol).to(pdt)
            mesh.merge(torch.cat([mesh.anc.t.unsqueeze(1), pat.to(torch.long)], 1))
            mesh.compact()
            pat = ly.pattern(mesh.poly_means(mesh.Z.t), ztol).to(pdt)
        if mesh.P > max_regions:
            raise PartitionTooLarge(too_many(mesh.P), mesh.P)
        pattern_cols = torch.cat([pattern_cols.index_select(0, mesh.anc.t), pat], 1)
        layer_slices[ly.call.label] = slice(col, col + ly.n_units)
        col += ly.n_units
        if bar is not None:
            bar.update(1)
    return pattern_cols, layer_slices


def _finish(net: _Net, mesh: _Mesh, Y: torch.Tensor, pattern_cols: torch.Tensor, layer_slices: dict, b, plane: Plane,
            rtol: float, merged: bool = True) -> Partition:
    dev, dtype = net.device, net.dtype
    P, K = mesh.P, mesh.K
    polys, cnt = mesh.polys.t, mesh.cnt.t
    X = mesh.X.t
    n_out = Y.shape[1]
    # affine maps: least squares over each polygon's vertices, centred
    valid = polys >= 0
    w = valid.to(dtype)
    cx = mesh.poly_means(X)  # (P, 2)
    d = (X[polys.clamp_min(0)] - cx.unsqueeze(1)) * w.unsqueeze(2)  # (P, K, 2)
    G = d.transpose(1, 2) @ d  # (P, 2, 2)
    ym = mesh.poly_means(Y)  # (P, n_out)
    A_list = []
    step = max(1, 2_000_000 // max(1, K * n_out))
    for i in range(0, P, step):
        yy = (Y[polys[i:i + step].clamp_min(0)] - ym[i:i + step].unsqueeze(1)) * w[i:i + step].unsqueeze(2)
        rhs = d[i:i + step].transpose(1, 2) @ yy  # (p, 2, n_out)
        A_list.append(torch.linalg.solve(G[i:i + step], rhs).transpose(1, 2))  # (p, n_out, 2)
    A = torch.cat(A_list, 0) if A_list else torch.zeros((0, n_out, 2), dtype=dtype, device=dev)
    c = ym - (A @ cx.unsqueeze(2)).squeeze(2)
    # a sample check that the output is affine on regions (hidden non-linearities)
    _check_affine(net, cx, A, c, rtol)
    # predicted class and the decision boundary
    if net.scores:
        if n_out == 1:
            pred = (ym[:, 0] > 0).to(torch.long)
            la = torch.zeros(1, dtype=torch.long, device=dev)
            lb = torch.full((1,), -1, dtype=torch.long, device=dev)
        else:
            pred = ym.argmax(1)
            ii, jj = torch.triu_indices(n_out, n_out, 1, device=dev)
            la, lb = ii, jj
        boundary = _decision_boundary(mesh, Y, la, lb, n_out, rtol)
    else:
        pred = torch.full((P,), -1, dtype=torch.long, device=dev)
        boundary = torch.zeros((0, 2, 2), dtype=dtype, device=dev)
    # output polygons (merged max-pool cells may have collinear vertices: dropped)
    if merged:
        verts, offsets = _clean_polygons(X, polys, cnt)
    else:
        valid_c = torch.arange(polys.shape[1], device=polys.device).unsqueeze(0) < cnt.unsqueeze(1)
        verts = X[polys[valid_c]].cpu().numpy().astype(np.float64, copy=False)
        offsets = np.zeros(P + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(cnt.cpu().numpy())
    vn = verts
    off = offsets
    cnts = np.diff(off)
    rid = np.repeat(np.arange(P), cnts)
    j = np.arange(vn.shape[0]) - np.repeat(off[:-1], cnts)
    nxt = off[:-1][rid] + np.where(j + 1 < cnts[rid], j + 1, 0)
    areas = 0.5 * np.bincount(rid, weights=vn[:, 0] * vn[nxt, 1] - vn[nxt, 0] * vn[:, 1], minlength=P)
    names = tuple(layer_slices.keys())
    pats = pattern_cols.cpu().numpy()
    return Partition(
        vertices=vn,
        offsets=off,
        areas=areas,
        patterns=pats,
        layer_slices=dict(layer_slices),
        out_A=A.cpu().numpy().astype(np.float64, copy=False),
        out_c=c.cpu().numpy().astype(np.float64, copy=False),
        predicted=pred.cpu().numpy().astype(np.int64),
        boundary=boundary.cpu().numpy().astype(np.float64, copy=False),
        bounds=tuple(float(x) for x in b),
        plane=plane,
        layers=names,
        output=net.stop_label,
    )


def _check_affine(net: _Net, cx: torch.Tensor, A: torch.Tensor, c: torch.Tensor, rtol: float) -> None:
    P = cx.shape[0]
    if P == 0:
        return
    gen = torch.Generator().manual_seed(0)
    k = min(P, 64)
    idx = torch.randperm(P, generator=gen)[:k].to(cx.device)
    y = net.output(cx[idx])
    pred = (A[idx] @ cx[idx].unsqueeze(2)).squeeze(2) + c[idx]
    scale = float(y.abs().max()) + float(A[idx].abs().max()) + 1e-30
    err = float((y - pred).abs().max())
    tol = (1e-6 if net.dtype == torch.float64 else 1e-2) * scale
    if err > tol:
        raise NotPiecewiseLinearError(
            f"the output is not affine on the computed regions (error {err:.3g} at region centroids, scale {scale:.3g}); "
            "the model's forward contains an operation that is not piecewise-linear or that module hooks cannot see "
            "(functional calls such as F.relu, torch.tanh, x * y inside a custom forward). Use module forms "
            "(nn.ReLU, nn.MaxPool2d) or pass stop_at."
        )


def _vertex_class(Y: torch.Tensor, n_out: int) -> torch.Tensor:
    return (Y[:, 0] > 0).to(torch.long) if n_out == 1 else Y.argmax(1)


def _decision_boundary(mesh: _Mesh, Y: torch.Tensor, la: torch.Tensor, lb: torch.Tensor, n_out: int, rtol: float) -> torch.Tensor:
    """The decision boundary as (K, 2, 2) segments: the edges between argmax cells of
    different classes. A region whose vertices share one argmax class is one cell (the
    argmax of affine functions over a convex polygon is attained at the vertices); the other
    regions are cut into argmax cells by the pairwise logit-difference lines (merging the
    pieces of each cell). The class changes only where the top two outputs tie, so only edges
    whose two ends are ties are matched with their twins."""
    polys, cnt = mesh.polys.t, mesh.cnt.t
    P, K = polys.shape
    dev = polys.device
    if P == 0:
        return torch.zeros((0, 2, 2), dtype=Y.dtype, device=dev)
    vcls = _vertex_class(Y, n_out)
    valid = polys >= 0
    pc = vcls[polys.clamp_min(0)]
    big = torch.iinfo(torch.long).max
    mixed = torch.where(valid, pc, torch.full_like(pc, -1)).amax(1) != torch.where(valid, pc, torch.full_like(pc, big)).amin(1)
    # uniform regions: one cell each, class of any vertex (all agree)
    uni = ~mixed
    rows_u, cnt_u, cls_u = polys[uni], cnt[uni], pc[uni][:, 0]
    Xc, Yc = mesh.X.t, Y
    if bool(mixed.any()):
        cells = _Mesh(mesh.X.t.clone(), Y.clone(), polys[mixed].clone(), cnt[mixed].clone())
        lc = torch.zeros(la.shape[0], dtype=torch.float64, device=dev)
        _cut_by_lines(cells, la, lb, lc, rtol, None, None)
        cls = _vertex_class(cells.poly_means(cells.Z.t), n_out)
        cells.merge(torch.stack([cells.anc.t, cls], 1))
        cls = _vertex_class(cells.poly_means(cells.Z.t), n_out)
        Xc, Yc = cells.X.t, cells.Z.t
        Kc = max(K, cells.K)
        pad = lambda r: torch.cat([r, torch.full((r.shape[0], Kc - r.shape[1]), -1, dtype=r.dtype, device=dev)], 1)
        all_rows = torch.cat([pad(rows_u), pad(cells.polys.t)], 0)
        all_cnt = torch.cat([cnt_u, cells.cnt.t])
        all_cls = torch.cat([cls_u, cls])
    else:
        all_rows, all_cnt, all_cls = rows_u, cnt_u, cls_u
    # vertices where the top two outputs tie
    if n_out == 1:
        gap = Yc[:, 0].abs()
    else:
        top = torch.topk(Yc, 2, dim=1).values
        gap = top[:, 0] - top[:, 1]
    tie = gap <= 1e-7 * (float(Yc.abs().max()) + 1e-300)
    Kc = all_rows.shape[1]
    j = torch.arange(Kc, device=dev).unsqueeze(0)
    valid = j < all_cnt.unsqueeze(1)
    nxt = torch.where(j + 1 < all_cnt.unsqueeze(1), j + 1, torch.zeros_like(j))
    vn = all_rows.gather(1, nxt)
    va = all_rows.clamp_min(0)
    cand = valid & tie[va] & tie[vn.clamp_min(0)]
    ea, eb = all_rows[cand], vn[cand]
    ec = all_cls.unsqueeze(1).expand(-1, Kc)[cand]
    if ea.numel() == 0:
        return torch.zeros((0, 2, 2), dtype=Y.dtype, device=dev)
    V = Xc.shape[0] + 1
    key = ea * V + eb
    order = torch.argsort(key)
    skey, scls = key[order], ec[order]
    rkey = eb * V + ea
    p = torch.searchsorted(skey, rkey).clamp_max(skey.shape[0] - 1)
    found = skey[p] == rkey
    diff = found & (scls[p] != ec) & (ea < eb)
    return torch.stack([Xc[ea[diff]], Xc[eb[diff]]], 1)


def _clean_polygons(X: torch.Tensor, polys: torch.Tensor, cnt: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates per polygon with repeated and collinear vertices removed (CCW kept)."""
    Xn = X.cpu().numpy().astype(np.float64, copy=False)
    pn = polys.cpu().numpy()
    cn = cnt.cpu().numpy()
    P, K = pn.shape
    if P == 0:
        return np.zeros((0, 2)), np.zeros(1, dtype=np.int64)
    j = np.arange(K)[None, :]
    valid = j < cn[:, None]
    pts = Xn[np.clip(pn, 0, None)]  # (P, K, 2)
    prv = np.where(j - 1 >= 0, j - 1, cn[:, None] - 1)
    nxt = np.where(j + 1 < cn[:, None], j + 1, 0)
    a = np.take_along_axis(pts, prv[..., None], 1)
    c = np.take_along_axis(pts, nxt[..., None], 1)
    e1 = pts - a
    e2 = c - pts
    cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    n1 = np.hypot(e1[..., 0], e1[..., 1])
    n2 = np.hypot(e2[..., 0], e2[..., 1])
    keep = valid & (cross > 1e-13 * n1 * n2) & (n1 > 0)
    # never drop below three vertices
    kc = keep.sum(1)
    weak = kc < 3
    keep[weak] = valid[weak]
    counts = keep.sum(1)
    verts = pts[keep]
    offsets = np.zeros(P + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return verts, offsets
