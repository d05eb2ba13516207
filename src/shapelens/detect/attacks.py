"""White-box gradient attacks in plain torch: FGSM, BIM and PGD.

These are the attacks used to build and evaluate adversarial-example detectors such as
:class:`shapelens.detect.LIDDetector` (Ma et al. 2018). They are deliberately small:

* :func:`fgsm` -- Fast Gradient Sign Method, Goodfellow, Shlens & Szegedy, "Explaining and
  Harnessing Adversarial Examples", ICLR 2015: one step of size ``eps`` along the sign of
  the input gradient of the loss.
* :func:`bim` -- Basic Iterative Method, Kurakin, Goodfellow & Bengio, "Adversarial examples
  in the physical world", ICLR workshop 2017: ``n_steps`` FGSM steps of size ``alpha``, each
  followed by projection onto the L-infinity ball of radius ``eps`` around the clean input
  and onto the valid pixel range. ``early_stop=True`` gives the "BIM-a" variant of Feinman
  et al. 2017 / Ma et al. 2018 (each example keeps the first iterate that is misclassified),
  ``early_stop=False`` the "BIM-b" variant (the last iterate).
* :func:`pgd` -- Projected Gradient Descent, Madry, Makelov, Schmidt, Tsipras & Vladu,
  "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018: BIM from a
  uniformly random start inside the ball, in the L-infinity or L2 geometry.

Every attack

* runs the model in eval mode and restores every submodule's train/eval flag afterwards
  (also when the model raises);
* differentiates with respect to the input only (``torch.autograd.grad``), so the model's
  parameters' ``.grad`` fields are never touched;
* works on a batch ``x`` of shape ``(N, ...)`` with integer labels ``y`` of shape ``(N,)``,
  optionally in chunks of ``batch_size`` to bound memory, on the device the model lives on;
* returns a detached tensor with the dtype and device of ``x`` (a numpy array when ``x`` is
  one).

The default loss is the summed cross-entropy of the model's outputs (logits) against ``y``;
because it is summed, each example's gradient does not depend on the other examples.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_int
from ..probe import eval_mode

__all__ = ["fgsm", "bim", "pgd"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _model_device(model: torch.nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return None


def _check_eps(value: Any, name: str, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {need}, got {value!r}.")
    return v


def _check_clip(clip: Any) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise TypeError(f"clip must be a pair (low, high) or None, got {clip!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"clip must be a pair of finite numbers with low < high, got {clip!r}.")
    return lo, hi


def _prepare(x: Any, y: Any, clip: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate inputs; return float tensor x, long tensor y, and whether x was numpy."""
    was_numpy = not isinstance(x, torch.Tensor)
    if was_numpy:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"x must be a numeric array or tensor, got dtype {arr.dtype}.")
        x_t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        x_t = x.detach()
    if not x_t.is_floating_point():
        x_t = x_t.to(torch.float32)
    if x_t.ndim < 2:
        raise ValueError(
            f"x must have a batch axis first, shape (N, ...), got shape {tuple(x_t.shape)}; "
            "for a single example use x[None]."
        )
    if x_t.shape[0] == 0:
        raise ValueError("x is empty (no examples); pass at least one example.")
    if not bool(torch.isfinite(x_t).all()):
        n_bad = int((~torch.isfinite(x_t)).sum())
        raise ValueError(f"x contains {n_bad} NaN or infinite values; attacks need finite inputs.")
    y_t = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if y_t.ndim != 1 or y_t.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"y must be a 1-D array of {x_t.shape[0]} integer labels (one per example in x), "
            f"got shape {tuple(y_t.shape)}."
        )
    if y_t.is_floating_point() or y_t.is_complex() or y_t.dtype == torch.bool:
        if y_t.is_floating_point() and bool((y_t == y_t.round()).all()):
            y_t = y_t.long()
        else:
            raise TypeError(f"y must hold integer class labels, got dtype {y_t.dtype}.")
    y_t = y_t.long()
    if clip is not None:
        lo, hi = clip
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        xmin, xmax = float(x_t.min()), float(x_t.max())
        if xmin < lo - tol or xmax > hi + tol:
            raise ValueError(
                f"x has values in [{xmin:.4g}, {xmax:.4g}], outside clip=({lo:g}, {hi:g}); rescale x into "
                "the valid input range or pass the clip range the model expects (clip=None disables clipping)."
            )
    return x_t, y_t, was_numpy


def _default_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2:
        raise ValueError(
            f"the model returned outputs of shape {tuple(logits.shape)}; the default cross-entropy loss needs "
            "logits of shape (N, n_classes). Pass loss_fn=... for other outputs."
        )
    return F.cross_entropy(logits, y, reduction="sum")


def _input_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the loss with respect to ``x`` only, plus the model's outputs."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        loss = loss_fn(out, y)
        if loss.ndim != 0:
            loss = loss.sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad, out.detach()


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    n = flat.norm(dim=1).clamp_min(1e-12)
    factor = torch.clamp(eps / n, max=1.0)
    return (flat * factor[:, None]).view_as(delta)


def _step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return alpha * grad.sign()
    flat = grad.flatten(1)
    n = flat.norm(dim=1).clamp_min(1e-12)
    return (alpha * flat / n[:, None]).view_as(grad)


def _clip(x: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def _run_batched(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    was_numpy: bool,
    batch_size: int | None,
    one: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
) -> Any:
    dev = _model_device(model) or x.device
    n = x.shape[0]
    bs = n if batch_size is None else check_int(batch_size, "batch_size", 1)
    outs = []
    with eval_mode(model):
        for start in range(0, n, bs):
            xb = x[start : start + bs].to(dev)
            yb = y[start : start + bs].to(dev)
            outs.append(one(xb, yb, start).detach().to(x.device))
    adv = torch.cat(outs, dim=0).to(x.dtype)
    return adv.numpy() if was_numpy else adv


# --------------------------------------------------------------------------- attacks


def fgsm(
    model: torch.nn.Module,
    x: Any,
    y: Any,
    eps: float,
    *,
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int | None = None,
) -> Any:
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015).

    ``x_adv = clip(x + eps * sign(grad_x loss(model(x), y)))``: one L-infinity step that
    increases the loss to first order. Coordinates whose gradient is exactly zero are left
    unchanged, all others move by exactly ``eps`` before clipping.

    Parameters
    ----------
    model : a ``torch.nn.Module`` returning logits (or whatever ``loss_fn`` expects).
    x : inputs of shape ``(N, ...)`` (tensor or numpy array) inside ``clip``.
    y : integer labels of shape ``(N,)`` (the true labels; untargeted attack).
    eps : L-infinity size of the perturbation, ``>= 0`` (``eps=0`` returns ``x``).
    loss_fn : ``loss_fn(outputs, y) -> scalar``; default summed cross-entropy.
    clip : valid input range ``(low, high)``, or ``None`` for no clipping.
    batch_size : process the attack in chunks of this many examples (default: all at once).

    Returns
    -------
    The adversarial examples, same shape/dtype/device as ``x`` (numpy in, numpy out).
    """
    eps = _check_eps(eps, "eps")
    clip = _check_clip(clip)
    x_t, y_t, was_numpy = _prepare(x, y, clip)
    lf = loss_fn or _default_loss

    def one(xb: torch.Tensor, yb: torch.Tensor, _start: int) -> torch.Tensor:
        grad, _ = _input_grad(model, xb, yb, lf)
        return _clip(xb + eps * grad.sign(), clip)

    return _run_batched(model, x_t, y_t, was_numpy, batch_size, one)


def _iterate(
    model: torch.nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    delta: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    clip: tuple[float, float] | None,
    loss_fn: LossFn,
    early_stop: bool,
) -> torch.Tensor:
    """Projected gradient ascent on the loss from ``xb + delta``."""
    x_adv = _clip(xb + _project(delta, eps, norm), clip)
    done = torch.zeros(xb.shape[0], dtype=torch.bool, device=xb.device)
    for _ in range(steps):
        grad, _ = _input_grad(model, x_adv, yb, loss_fn)
        cand = x_adv + _step(grad, alpha, norm)
        cand = _clip(xb + _project(cand - xb, eps, norm), clip)
        if early_stop:
            cand = torch.where(done.view(-1, *([1] * (xb.ndim - 1))), x_adv, cand)
            with torch.no_grad():
                out = model(cand)
            if out.ndim == 2:
                done = done | (out.argmax(dim=1) != yb)
        x_adv = cand.detach()
        if early_stop and bool(done.all()):
            break
    return x_adv


def bim(
    model: torch.nn.Module,
    x: Any,
    y: Any,
    eps: float,
    alpha: float,
    n_steps: int,
    *,
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    early_stop: bool = False,
    batch_size: int | None = None,
) -> Any:
    """Basic Iterative Method, iterative FGSM (Kurakin, Goodfellow & Bengio, 2017).

    Starting from ``x``, repeat ``n_steps`` times: ``x_adv <- clip(proj_eps(x_adv + alpha *
    sign(grad)))``, where ``proj_eps`` projects onto the L-infinity ball of radius ``eps``
    around the clean ``x``. The result always satisfies ``|x_adv - x|_inf <= eps``.

    ``early_stop=True`` freezes each example at the first iterate the model misclassifies
    (the "BIM-a" variant of Feinman et al. 2017 and Ma et al. 2018, which gives minimal
    perturbations); ``early_stop=False`` returns the last iterate ("BIM-b").
    Ma et al. (2018) use ``eps=0.3``-``0.4``, ``alpha=0.01`` and 50 steps on MNIST in [0, 1]
    range units.

    Other parameters and the return value are as in :func:`fgsm`; ``alpha > 0`` is the step
    size and ``n_steps >= 1`` the number of steps.
    """
    eps = _check_eps(eps, "eps")
    alpha = _check_eps(alpha, "alpha", positive=True)
    n_steps = check_int(n_steps, "n_steps", 1)
    clip = _check_clip(clip)
    x_t, y_t, was_numpy = _prepare(x, y, clip)
    lf = loss_fn or _default_loss

    def one(xb: torch.Tensor, yb: torch.Tensor, _start: int) -> torch.Tensor:
        return _iterate(model, xb, yb, torch.zeros_like(xb), eps=eps, alpha=alpha, steps=n_steps,
                        norm="linf", clip=clip, loss_fn=lf, early_stop=bool(early_stop))

    return _run_batched(model, x_t, y_t, was_numpy, batch_size, one)


def pgd(
    model: torch.nn.Module,
    x: Any,
    y: Any,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = True,
    seed: int = 0,
    norm: str = "linf",
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int | None = None,
) -> Any:
    """Projected Gradient Descent (Madry, Makelov, Schmidt, Tsipras & Vladu, ICLR 2018).

    Projected gradient ascent on the loss inside the ``norm``-ball of radius ``eps`` around
    ``x``, from a random start:

    * ``norm="linf"``: start uniformly in ``[-eps, eps]^d``; steps ``alpha * sign(grad)``;
      projection by coordinate-wise clamping (Madry et al.'s attack).
    * ``norm="l2"``: start at a uniformly random direction with radius ``eps * U``,
      ``U ~ Uniform(0, 1)``; steps ``alpha * grad / |grad|_2``; projection by rescaling onto
      the L2 ball.

    After every step the iterate is clipped to ``clip``. ``random_start=False`` starts at
    ``x`` (then L-infinity PGD is exactly :func:`bim`). ``seed`` makes the random start
    reproducible (it is drawn on the CPU, so CPU and GPU runs start from the same point).
    Other parameters and the return value are as in :func:`bim`.
    """
    eps = _check_eps(eps, "eps")
    alpha = _check_eps(alpha, "alpha", positive=True)
    steps = check_int(steps, "steps", 1)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}.")
    clip = _check_clip(clip)
    x_t, y_t, was_numpy = _prepare(x, y, clip)
    lf = loss_fn or _default_loss
    gen = torch.Generator().manual_seed(int(seed))
    # Draw the whole random start up front so that chunking does not change it.
    if random_start and eps > 0:
        shape = x_t.shape
        if norm == "linf":
            start = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * eps
        else:
            direction = torch.randn(shape, generator=gen, dtype=torch.float64).flatten(1)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            radius = torch.rand(shape[0], 1, generator=gen, dtype=torch.float64) * eps
            start = (direction * radius).view(shape)
        start = start.to(x_t.dtype)
    else:
        start = torch.zeros_like(x_t)

    def one(xb: torch.Tensor, yb: torch.Tensor, s: int) -> torch.Tensor:
        delta = start[s : s + xb.shape[0]].to(xb.device)
        return _iterate(model, xb, yb, delta, eps=eps, alpha=alpha, steps=steps, norm=norm,
                        clip=clip, loss_fn=lf, early_stop=False)

    return _run_batched(model, x_t, y_t, was_numpy, batch_size, one)
