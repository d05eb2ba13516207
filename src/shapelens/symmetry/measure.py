"""Measuring how equivariant a model is: the relative equivariance error under sampled group
elements (per layer through the probe's forward hooks), and the Lie derivative of Gruver,
Finzi, Goldblum & Wilson (2023, "The Lie Derivative for Measuring Learned Equivariance", ICLR)
computed with exact forward-mode autodiff through a differentiable image warp.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._checks import check_int, show_progress, warn
from .._results import Result
from ..probe import _first_tensor, _resolve_layers, eval_mode
from .transforms import DEFAULT_PADDING, IMAGE_TRANSFORMS, INTERPOLATIONS, PADDINGS

__all__ = ["equivariance_error", "EquivarianceError", "LayerEquivarianceError", "lie_derivative",
           "LieDerivative", "LIE_NORMS"]

#: The per-example norms :func:`lie_derivative` reports.
LIE_NORMS = ("l2", "l2_squared", "mean_abs")


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerEquivarianceError(Result):
    """Equivariance error of one layer's output: ``mean`` and ``max`` over (group element,
    example) pairs, ``per_element`` the mean over examples for each sampled element."""

    mean: float
    max: float
    per_element: np.ndarray
    invariance: bool


@dataclass(frozen=True)
class EquivarianceError(Result):
    """Relative equivariance error ``||f(rho_in(g) x) - rho_out(g) f(x)|| / ||rho_out(g) f(x)||``
    (L2 over all non-batch axes of each example).

    ``mean``/``max`` are over every (group element, example) pair; ``per_element`` (n_elements,)
    is the mean over examples for each element in ``elements``; ``layers`` maps each requested
    layer name to its :class:`LayerEquivarianceError`. ``exhaustive`` is True when every element
    of a finite group was used instead of a sample; ``invariance`` when ``act_out`` was None.
    """

    mean: float
    max: float
    per_element: np.ndarray
    elements: tuple
    layers: dict = field(default_factory=dict)
    group: str = ""
    n_examples: int = 0
    exhaustive: bool = False
    invariance: bool = False

    @property
    def n_elements(self) -> int:
        return len(self.per_element)

    def plot(self, ax=None, figsize=(6, 3.5)):
        """Bar chart of the mean error of each layer (in forward order as requested) and of the
        output, with the maximum marked; log scale when every value is positive."""
        ax = self._axes(ax, figsize)
        names = list(self.layers) + ["output"]
        means = [self.layers[n].mean for n in self.layers] + [self.mean]
        maxes = [self.layers[n].max for n in self.layers] + [self.max]
        pos = np.arange(len(names))
        ax.bar(pos, means, color="tab:blue", label="mean")
        ax.scatter(pos, maxes, color="tab:red", marker="_", s=200, zorder=3, label="max")
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
        vals = np.asarray(means + maxes, dtype=float)
        if np.all(np.isfinite(vals)) and np.all(vals > 0):
            ax.set_yscale("log")
        ax.set_ylabel("relative equivariance error")
        kind = "invariance" if self.invariance else "equivariance"
        how = "all" if self.exhaustive else "sampled"
        ax.set_title(f"{kind} error under {self.group} ({self.n_elements} {how} elements, {self.n_examples} examples)",
                     fontsize=9)
        ax.legend(fontsize=8)
        return ax


@dataclass(frozen=True)
class LieDerivative(Result):
    """Per-example norms ``values`` (N,) of the Lie derivative ``L_X f(x)`` for the one-parameter
    transformation ``transform``, with their ``mean`` and ``max``; ``norm`` says which norm (see
    :func:`lie_derivative`). ``derivative`` holds ``L_X f(x)`` itself (N, ...) when
    ``keep_derivative=True`` was asked, else None."""

    values: np.ndarray
    mean: float
    max: float
    transform: str
    norm: str
    output: str
    interpolation: str
    padding: str
    derivative: np.ndarray | None = None

    def plot(self, ax=None, figsize=(5, 3.5), bins=30):
        """Histogram of the per-example values."""
        ax = self._axes(ax, figsize)
        ax.hist(self.values, bins=bins, color="tab:blue")
        ax.axvline(self.mean, color="tab:red", label=f"mean {self.mean:.3g}")
        ax.set_xlabel(f"{self.norm} norm of the Lie derivative ({self.transform})")
        ax.set_ylabel("examples")
        ax.legend(fontsize=8)
        return ax


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _model_dtype_device(f: Any) -> tuple[torch.dtype | None, torch.device | None]:
    if not isinstance(f, nn.Module):
        return None, None
    for t in list(f.parameters()) + list(f.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    for t in list(f.parameters()) + list(f.buffers()):
        return None, t.device
    return None, None


def _as_input(x: Any, f: Any, name: str = "x") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} is an object array; pass a numeric array or tensor.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array with examples along axis 0, "
                        f"got {type(x).__name__}.")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; pass at least one example along axis 0.")
    dtype, device = _model_dtype_device(f)
    if x.is_floating_point() and dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if device is not None:
        x = x.to(device)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN/infinite values; remove them first.")
    return x


def _is_rep(a: Any) -> bool:
    return hasattr(a, "rho") and hasattr(a, "dim")


def _check_action(a: Any, name: str, group: Any, allow_none: bool) -> None:
    if a is None:
        if not allow_none:
            raise ValueError(f"{name} is None; give a Rep acting on the input's last axis or a callable (g, x) -> x'.")
        return
    if _is_rep(a):
        g_rep = getattr(a, "group", None)
        if g_rep is not None and g_rep is not group:
            raise ValueError(f"{name} is a representation of {getattr(g_rep, 'name', g_rep)!r} but the group passed is "
                             f"{getattr(group, 'name', group)!r}; build the representation from the same group object.")
        return
    if not callable(a):
        raise TypeError(f"{name} must be a Rep, a callable (g, x) -> x' or None, got {type(a).__name__}.")


class _Action:
    """Applies a Rep (on the last axis, rho(g) cast to the tensor's dtype; matrices cached per
    element) or a callable (g, x) -> x'; None is the identity."""

    def __init__(self, a: Any, name: str):
        self.a, self.name = a, name
        self.cache: dict[int, np.ndarray] = {}
        self.is_rep = a is not None and _is_rep(a)

    def __call__(self, k: int, g: Any, x: torch.Tensor, where: str) -> torch.Tensor:
        if self.a is None:
            return x
        if self.is_rep:
            dim = int(self.a.dim)
            if x.shape[-1] != dim:
                raise ValueError(f"{self.name} has dimension {dim} but {where} has {x.shape[-1]} features on its last "
                                 f"axis (shape {tuple(x.shape)}); a Rep acts on the last axis, so give a representation "
                                 f"of dimension {x.shape[-1]} or a callable action (g, x) -> x'.")
            if not x.is_floating_point():
                raise TypeError(f"{self.name} is a Rep, which acts by matrix multiplication, but {where} has dtype "
                                f"{x.dtype}; pass floating-point data or a callable action.")
            if k not in self.cache:
                self.cache[k] = np.asarray(self.a.rho(g), dtype=np.float64)
            R = torch.as_tensor(self.cache[k], dtype=x.dtype, device=x.device)
            return x @ R.T
        out = self.a(g, x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name}(g, x) returned {type(out).__name__}; an action must return a tensor.")
        return out


def _group_elements(group: Any, samples: int, seed: int) -> tuple[tuple, bool]:
    finite = getattr(group, "is_finite", None)
    if finite is None:
        finite = hasattr(group, "elements") and hasattr(group, "order")
    if finite:
        try:
            order = int(group.order)
        except (ValueError, MemoryError):  # too large to enumerate: sample it
            order = None
        if order is not None and order <= samples:
            elements = tuple(group.elements)
            if not elements:
                raise ValueError(f"group {getattr(group, 'name', group)!r} has no elements; give a non-empty group.")
            return elements, True
    if not hasattr(group, "sample"):
        raise TypeError(f"group must have a sample(n, seed=...) method (a shapelens.symmetry group), "
                        f"got {type(group).__name__}.")
    elements = tuple(group.sample(samples, seed=seed))
    if not elements:
        raise ValueError(f"group {getattr(group, 'name', group)!r} returned no elements from sample({samples}); "
                         "it has no elements to measure with.")
    return elements, False


def _relative_errors(a: torch.Tensor, b: torch.Tensor, what: str, state: dict) -> np.ndarray:
    """Per-example ||a - b|| / ||b|| (L2 over all non-batch axes), in float64; 0/0 := 0, x/0 := inf."""
    if a.shape != b.shape:
        raise ValueError(f"{what}: f(rho_in(g) x) has shape {tuple(a.shape)} but rho_out(g) f(x) has shape "
                         f"{tuple(b.shape)}; with act_out=None (invariance) the output must keep its shape under "
                         "act_in, otherwise give an act_out that maps f(x) to the shape of f(rho_in(g) x).")
    B = a.shape[0]
    a64 = a.detach().reshape(B, -1).to(torch.float64)
    b64 = b.detach().reshape(B, -1).to(torch.float64)
    num = torch.linalg.vector_norm(a64 - b64, dim=1).cpu().numpy()
    den = torch.linalg.vector_norm(b64, dim=1).cpu().numpy()
    out = np.zeros(B)
    pos = den > 0
    out[pos] = num[pos] / den[pos]
    bad = (~pos) & (num > 0)
    out[bad] = np.inf
    if bad.any() and not state.get("zero_warned"):
        state["zero_warned"] = True
        warn(f"{what}: rho_out(g) f(x) is exactly zero for {int(bad.sum())} examples while f(rho_in(g) x) is not; "
             "their relative error is infinite.")
    return out


def _check_finite(t: torch.Tensor, what: str) -> None:
    if t.is_floating_point() or t.is_complex():
        ok = torch.isfinite(t)
        if not bool(ok.all()):
            raise ValueError(f"{what} has {int((~ok).sum())} NaN/infinite values out of {t.numel()}; the equivariance "
                             "error is undefined. Check the model and the input scale.")


# --------------------------------------------------------------------------------------
# equivariance error
# --------------------------------------------------------------------------------------


def equivariance_error(
    f: Callable[[torch.Tensor], Any],
    group: Any,
    act_in: Any,
    act_out: Any,
    x: Any,
    *,
    samples: int = 16,
    seed: int = 0,
    model_layers: list[str] | str | None = None,
    layer_act_out: Any = None,
    batch_size: int = 256,
    progress: bool | None = None,
) -> EquivarianceError:
    """Relative equivariance error of ``f`` under a group, per sampled element and per layer.

    For each group element ``g`` and example ``x_i``::

        e(g, i) = ||f(rho_in(g) x_i) - rho_out(g) f(x_i)||_2 / ||rho_out(g) f(x_i)||_2

    with the L2 norm over all non-batch axes of the example (0/0 counts as 0). The result's
    ``mean`` and ``max`` are over all (g, i) pairs and ``per_element`` is the mean over examples
    for each element. This is the sampled (global) equivariance error of e.g. Finzi, Welling &
    Wilson (2021, EMLP) and Gruver et al. (2023, ICLR; their discrete-transform baselines), as
    opposed to the infinitesimal :func:`lie_derivative`.

    Parameters
    ----------
    f : an ``nn.Module`` (run in eval mode, see :func:`shapelens.probe.eval_mode`) or any callable
        mapping a batch to a batch; everything runs under ``torch.no_grad()``. Floating inputs are
        cast to a module's parameter dtype and moved to its device.
    group : a shapelens.symmetry group. Elements come from ``group.sample(samples, seed=seed)``,
        or are all elements of a finite group whose order is at most ``samples``.
    act_in, act_out : how ``g`` acts on the input and on the output: a ``Rep`` (acts on the last
        axis, ``x -> x @ rho(g).T`` with ``rho(g)`` cast to the tensor's dtype), a callable
        ``(g, x) -> x'`` acting on a batch, or, for ``act_out`` only, ``None``: the trivial
        action, i.e. the invariance error ``||f(rho_in(g) x) - f(x)|| / ||f(x)||``.
    x : the inputs, a tensor or array with examples along axis 0.
    samples : how many group elements to draw (or the largest finite order enumerated).
    seed : seed of the element sampling.
    model_layers : names from ``f.named_modules()`` (f must be an ``nn.Module``); each layer's
        output is compared too, read with forward hooks (the probe's layer lookup and output
        unpacking: tuples give element 0, dict-like outputs ``last_hidden_state``).
    layer_act_out : the action on those layers' outputs: a dict ``name -> action`` (missing
        names get ``None``), one action for all layers, or ``None`` (invariance for every layer).
    batch_size : examples per forward pass.
    progress : show a progress bar; ``None`` shows one only on a terminal.

    Returns
    -------
    :class:`EquivarianceError`.

    Raises
    ------
    ValueError for a Rep whose dimension does not match the axis it acts on, a group that yields
    no elements, outputs whose shape changes under ``act_in`` with ``act_out=None``, and
    non-finite outputs; :class:`shapelens.probe.UnknownLayerError` for unknown layer names.
    """
    samples = check_int(samples, "samples", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    if not callable(f):
        raise TypeError(f"f must be a callable or nn.Module, got {type(f).__name__}.")
    _check_action(act_in, "act_in", group, allow_none=False)
    _check_action(act_out, "act_out", group, allow_none=True)
    x = _as_input(x, f)
    elements, exhaustive = _group_elements(group, samples, seed)

    names: list[str] = []
    if model_layers is not None:
        if not isinstance(f, nn.Module):
            raise TypeError("model_layers needs f to be an nn.Module (its submodules are hooked); got "
                            f"{type(f).__name__}.")
        names, _ = _resolve_layers(f, model_layers)
    if isinstance(layer_act_out, Mapping):
        unknown = [k for k in layer_act_out if k not in names]
        if unknown:
            raise ValueError(f"layer_act_out names layers {unknown} that are not in model_layers {names}; "
                             "give an action for the measured layers only.")
        layer_acts = {n: layer_act_out.get(n) for n in names}
    else:
        layer_acts = {n: layer_act_out for n in names}
    for n, a in layer_acts.items():
        _check_action(a, f"layer_act_out[{n!r}]", group, allow_none=True)

    a_in = _Action(act_in, "act_in")
    a_out = _Action(act_out, "act_out")
    a_layer = {n: _Action(a, f"layer_act_out[{n!r}]") for n, a in layer_acts.items()}

    N = x.shape[0]
    G = len(elements)
    err = np.zeros((G, N))
    layer_err = {n: np.zeros((G, N)) for n in names}
    captured: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    state: dict[str, Any] = {}

    def make_hook(layer: str):
        def hook(mod, args, output):
            calls[layer] = calls.get(layer, 0) + 1
            if calls[layer] == 2 and not state.get("reuse_" + layer):
                state["reuse_" + layer] = True
                warn(f"layer {layer!r} runs more than once per forward pass; its last call's output is measured.")
            # copy: a later in-place op in the forward (e.g. ReLU(inplace=True)) must not change it
            captured[layer] = _first_tensor(output, layer).detach().clone()

        return hook

    def run(inp: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        captured.clear()
        calls.clear()
        out = _first_tensor(f(inp), "output")
        missing = [n for n in names if n not in captured]
        if missing:
            raise ValueError(f"layers {missing} did not run during the forward pass; pick modules that f's forward calls.")
        return out.detach(), dict(captured)

    bar = None
    with ExitStack() as stack:
        if isinstance(f, nn.Module):
            stack.enter_context(eval_mode(f))
            modules = dict(f.named_modules())
            for n in names:
                h = modules[n].register_forward_hook(make_hook(n))
                stack.callback(h.remove)
        stack.enter_context(torch.no_grad())
        if show_progress(progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=G * -(-N // batch_size), desc="equivariance", unit="pass")
            stack.callback(bar.close)
        for start in range(0, N, batch_size):
            xb = x[start:start + batch_size]
            sl = slice(start, start + xb.shape[0])
            base, base_layers = run(xb)
            _check_finite(base, "f(x)")
            for n in names:
                _check_finite(base_layers[n], f"layer {n!r} on x")
            for k, g in enumerate(elements):
                xg = a_in(k, g, xb, "x")
                out, outs = run(xg)
                _check_finite(out, f"f(rho_in(g) x) for group element #{k}")
                target = a_out(k, g, base, "f(x)")
                err[k, sl] = _relative_errors(out, target, f"group element #{k}", state)
                for n in names:
                    _check_finite(outs[n], f"layer {n!r} on rho_in(g) x for group element #{k}")
                    tgt = a_layer[n](k, g, base_layers[n], f"layer {n!r}'s output")
                    layer_err[n][k, sl] = _relative_errors(outs[n], tgt, f"layer {n!r}, group element #{k}", state)
                if bar is not None:
                    bar.update(1)

    layers = {
        n: LayerEquivarianceError(mean=float(e.mean()), max=float(e.max()), per_element=e.mean(axis=1),
                                  invariance=layer_acts[n] is None)
        for n, e in layer_err.items()
    }
    return EquivarianceError(
        mean=float(err.mean()),
        max=float(err.max()),
        per_element=err.mean(axis=1),
        elements=tuple(_plain(g) for g in elements),
        layers=layers,
        group=str(getattr(group, "name", type(group).__name__)),
        n_examples=int(N),
        exhaustive=exhaustive,
        invariance=act_out is None,
    )


def _plain(g: Any) -> Any:
    if isinstance(g, np.ndarray):
        return g.copy()
    if isinstance(g, torch.Tensor):
        return g.detach().cpu().numpy()
    return g


# --------------------------------------------------------------------------------------
# Lie derivative
# --------------------------------------------------------------------------------------


def _jvp_t(g: Callable[[torch.Tensor], torch.Tensor], t0: torch.Tensor, state: dict) -> torch.Tensor:
    """d/dt g(t) at t0 by forward-mode AD (torch.func.jvp); if some operation in g has no
    forward-mode rule, by the exact double-backward identity (the derivative of the VJP
    v -> v^T J in v, applied to the tangent), which Gruver et al.'s code uses throughout."""
    try:
        _, dy = torch.func.jvp(g, (t0,), (torch.ones_like(t0),))
        return dy
    except Exception as first:  # an op without a forward-mode rule (or a genuine error, re-raised below)
        try:
            with torch.enable_grad():
                t = t0.detach().clone().requires_grad_(True)
                y = g(t)
                v = torch.zeros_like(y, requires_grad=True)
                (vj,) = torch.autograd.grad(y, t, v, create_graph=True, allow_unused=True)
                if vj is None:
                    return torch.zeros_like(y)
                (ju,) = torch.autograd.grad(vj, v, torch.ones_like(vj), allow_unused=True)
                dy = torch.zeros_like(y) if ju is None else ju
        except Exception:
            raise first
        if not state.get("fallback_warned"):
            state["fallback_warned"] = True
            warn(f"forward-mode autodiff failed in f ({type(first).__name__}: {str(first).splitlines()[0][:160]}); "
                 "the Lie derivative was computed exactly by double backward instead (slower).")
        return dy.detach()


def lie_derivative(
    f: Callable[[torch.Tensor], Any],
    transform: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: Any,
    *,
    output: str = "invariant",
    norm: str = "l2",
    interpolation: str = "bicubic",
    padding: str | None = None,
    batch_size: int = 64,
    keep_derivative: bool = False,
    progress: bool | None = None,
) -> LieDerivative:
    """Lie derivative of ``f`` along a one-parameter image transformation (Gruver, Finzi,
    Goldblum & Wilson 2023, "The Lie Derivative for Measuring Learned Equivariance", ICLR).

    With ``T_t`` the transformation by the amount ``t``:

    * ``output="invariant"`` (classifiers, logits, any output the transformation should not
      change): ``L_X f(x) = d/dt f(T_t x)`` at ``t = 0``;
    * ``output="equivariant"`` (image-shaped outputs ``(B, C', H', W')`` that should move with
      the input, e.g. feature maps): ``L_X f(x) = d/dt T_t^{-1} f(T_t x)`` at ``t = 0``, with
      ``T_t^{-1} = T_{-t}`` applied to the output (equivalently ``d/dt [f(T_t x) - T_t f(x)]``).
      For named translations the output's shift is the same fraction of the image, i.e.
      ``t * W' / W`` pixels of a ``W'``-wide output (downsampling layers); a callable transform
      is applied to the output as given.

    Both are zero for every ``x`` exactly when ``f`` is invariant / equivariant to the
    transformation near the identity. The derivative is exact forward-mode autodiff
    (``torch.func.jvp`` in ``t``) through the differentiable warp of
    :mod:`shapelens.symmetry.transforms`, never a finite difference; modules run in eval mode.

    Parameters
    ----------
    f : an ``nn.Module`` or a callable on batches. Floating inputs are cast to a module's
        parameter dtype.
    transform : ``"translate_x"``, ``"translate_y"`` (``t`` in pixels), ``"rotate"`` (radians,
        about the image centre) or ``"scale"`` (factor ``exp(t)``), see ``IMAGE_TRANSFORMS``; or
        a callable ``(x, t) -> x'`` differentiable in the 0-d tensor ``t`` with ``T_0 = id``.
    x : images ``(B, C, H, W)`` (for a callable transform: whatever it accepts).
    output : ``"invariant"`` or ``"equivariant"``, as above.
    norm : per-example summary of ``L_X f(x)``, over all non-batch axes:

        * ``"l2"`` (default): ``||L_X f(x)||_2``;
        * ``"l2_squared"``: ``||L_X f(x)||_2^2``;
        * ``"mean_abs"``: the mean absolute entry ``||L_X f(x)||_1 / d``, which is what Gruver
          et al.'s released end-to-end code reports (``lee/e2e_lee.py``: ``.abs().mean(-1)``
          of the Lie derivative of the softmax probabilities). To reproduce their numbers pass
          ``f = lambda x: model(x).softmax(-1)`` and note that their ``t`` for translations is in
          normalized units (``t = 1`` is ``(W - 1) / 2`` pixels, so their values are
          ``(W - 1) / 2`` times ours), their rotation runs clockwise (same magnitude), and their
          warp is bilinear with reflection padding.

    interpolation : ``"bicubic"`` (default; Catmull-Rom, continuously differentiable, so the
        derivative at ``t = 0`` exists and is the same from both sides: a central-difference
        generator) or ``"bilinear"`` (Gruver et al.'s warp; its derivative at ``t = 0`` is
        one-sided, the forward-difference branch). Named transforms only.
    padding : ``"zeros"``, ``"border"`` or ``"circular"``; default ``"circular"`` for
        translations (so circular convolutions are exactly equivariant) and ``"zeros"`` for
        rotation and scaling. Named transforms only.
    batch_size : examples per forward pass.
    keep_derivative : also return ``L_X f(x)`` itself (as a numpy array) in ``derivative``.
    progress : show a progress bar; ``None`` shows one only on a terminal.

    Returns
    -------
    :class:`LieDerivative` with the per-example values, their mean and max.

    Notes
    -----
    On the norm: Gruver et al.'s released code reports, for whole models, the mean absolute
    entry of the Lie derivative of the softmax probabilities (``"mean_abs"`` here), and for its
    layer-wise attribution (``lee/layerwise_lee.py``) a random-projection estimate
    ``E_z (z^T J_layer L_layer)^2`` of the squared norm of each layer's contribution. The paper
    states its local equivariance error in terms of the norm of ``L_X f(x)``; as its exact
    normalization could not be checked against the text for this implementation, ``"l2"`` (the
    plain Euclidean norm, which grows with the output dimension) is the default and the code's
    convention is ``"mean_abs"``; compare numbers only under the same norm.

    One ``t`` is shared by the whole batch, so the per-example derivatives are right only when
    examples do not interact inside ``f`` (true for modules in eval mode).

    With ``interpolation="bilinear"`` the value is the derivative along the forward-difference
    branch at every pixel, deterministically here; in Gruver et al.'s code, whose grid comes
    from ``F.affine_grid`` in float32, about 16% of a 224 x 224 grid's pixels fall on the
    backward-difference branch by rounding (see :mod:`shapelens.symmetry.transforms`).
    """
    if not callable(f):
        raise TypeError(f"f must be a callable or nn.Module, got {type(f).__name__}.")
    if output not in ("invariant", "equivariant"):
        raise ValueError(f"output must be 'invariant' (d/dt f(T_t x)) or 'equivariant' (d/dt T_t^-1 f(T_t x)), got {output!r}.")
    if norm not in LIE_NORMS:
        raise ValueError(f"norm must be one of {list(LIE_NORMS)}, got {norm!r}.")
    batch_size = check_int(batch_size, "batch_size", 1)

    if isinstance(transform, str):
        if transform not in IMAGE_TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; use one of {list(IMAGE_TRANSFORMS)} or pass a callable "
                             "(x, t) -> x' differentiable in t.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}.")
        pad = DEFAULT_PADDING[transform] if padding is None else padding
        if pad not in PADDINGS:
            raise ValueError(f"padding must be one of {list(PADDINGS)}, got {pad!r}.")
        base = IMAGE_TRANSFORMS[transform]
        name = transform

        def T(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return base(z, t, padding=pad, interpolation=interpolation)

        axis = {"translate_x": -1, "translate_y": -2}.get(transform)
    elif callable(transform):
        T = transform
        name = getattr(transform, "__name__", type(transform).__name__)
        pad = "n/a" if padding is None else str(padding)
        axis = None
    else:
        raise TypeError(f"transform must be a name from {list(IMAGE_TRANSFORMS)} or a callable (x, t) -> x', "
                        f"got {type(transform).__name__}.")

    x = _as_input(x, f)
    if isinstance(transform, str):
        if x.ndim != 4:
            raise ValueError(f"x must be a batch of images (B, C, H, W) for transform {transform!r}, got shape "
                             f"{tuple(x.shape)}" + (" (add the channel axis with x.unsqueeze(1))." if x.ndim == 3 else "."))
        if not x.is_floating_point():
            raise TypeError(f"x has dtype {x.dtype}; pass floating-point images.")
    if not x.is_floating_point():
        raise TypeError(f"x has dtype {x.dtype}; the transformation parameter acts on floating-point inputs.")
    in_size = x.shape[axis] if axis is not None else None

    def g_of_t(xb: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def g(t: torch.Tensor) -> torch.Tensor:
            y = _first_tensor(f(T(xb, t)), "output")
            if output == "equivariant":
                if y.ndim != 4:
                    raise ValueError(f"output='equivariant' needs image outputs (B, C, H, W) to transform back, but f "
                                     f"returned shape {tuple(y.shape)}; use output='invariant' for logits or vectors.")
                s = t if axis is None else t * (y.shape[axis] / in_size)
                y = T(y, -s)
            return y

        return g

    state: dict[str, Any] = {}
    values: list[np.ndarray] = []
    derivs: list[np.ndarray] = []
    N = x.shape[0]
    bar = None
    with ExitStack() as stack:
        if isinstance(f, nn.Module):
            stack.enter_context(eval_mode(f))
        stack.enter_context(torch.no_grad())
        if show_progress(progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=-(-N // batch_size), desc="lie derivative", unit="batch")
            stack.callback(bar.close)
        for start in range(0, N, batch_size):
            xb = x[start:start + batch_size]
            t0 = torch.zeros((), dtype=x.dtype, device=x.device)
            d = _jvp_t(g_of_t(xb), t0, state)
            if not isinstance(d, torch.Tensor) or d.ndim == 0 or d.shape[0] != xb.shape[0]:
                raise ValueError(f"f returned shape {tuple(getattr(d, 'shape', ()))} for a batch of {xb.shape[0]}; "
                                 "the Lie derivative needs batch-first outputs.")
            _check_finite(d, "the Lie derivative")
            flat = d.detach().reshape(d.shape[0], -1).to(torch.float64)
            if norm == "l2":
                v = torch.linalg.vector_norm(flat, dim=1)
            elif norm == "l2_squared":
                v = (flat * flat).sum(dim=1)
            else:
                v = flat.abs().mean(dim=1)
            values.append(v.cpu().numpy())
            if keep_derivative:
                derivs.append(d.detach().cpu().numpy())
            if bar is not None:
                bar.update(1)
    vals = np.concatenate(values)
    return LieDerivative(
        values=vals,
        mean=float(vals.mean()),
        max=float(vals.max()),
        transform=name,
        norm=norm,
        output=output,
        interpolation=interpolation if isinstance(transform, str) else "n/a",
        padding=pad,
        derivative=np.concatenate(derivs) if keep_derivative else None,
    )
