"""Sharpness of a minimum: the worst loss increase in a neighbourhood of the weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from .._checks import check_int
from .._results import Result
from ..probe import eval_mode
from .operators import Hessian, _batches, loss_reduction
from .spectra import eigenvalues, trace

__all__ = ["epsilon_sharpness", "adaptive_sharpness", "max_eigenvalue_sharpness", "trace_sharpness", "Sharpness"]


@dataclass(frozen=True)
class Sharpness(Result):
    """A sharpness value with the losses it came from and its definition.

    ``perturbed_loss``, ``radius`` and ``steps`` belong to the worst-case definitions (NaN /
    0 for the spectral ones); ``std_error`` to the stochastic trace; ``n_matvec`` counts the
    Hessian-vector products of the spectral ones; ``notes`` says e.g. which parameters were
    excluded for receiving no gradient."""

    value: float
    loss: float
    perturbed_loss: float
    definition: str
    radius: float
    steps: int
    std_error: float = float("nan")
    n_matvec: int = 0
    notes: tuple = ()


class _Loss:
    """Full-data loss as a function of (a subset of) the parameters, model in eval mode: the
    one full-data loss of the sharpness measures and the training tracker."""

    def __init__(self, model: nn.Module, loss_fn, data):
        self.model, self.loss_fn = model, loss_fn
        self.batches = _batches(data)
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self.buffers = dict(model.named_buffers())
        self.n = sum(len(y) for _, y in self.batches)
        self.mean = loss_reduction(loss_fn) == "mean"

    def __call__(self, p: dict) -> torch.Tensor:
        total = 0.0
        dev = next(iter(p.values())).device if p else None
        with eval_mode(self.model):
            for x, y in self.batches:
                if dev is not None:
                    x, y = x.to(dev), y.to(dev)
                out = functional_call(self.model, {**self.fixed, **self.buffers, **p}, (x,))
                w = len(y) / self.n if self.mean else 1.0
                total = total + w * self.loss_fn(out, y)
        return total


def _ascend(L: _Loss, project, init, steps: int, step_size):
    """Projected gradient ascent on ``L(theta + delta)`` over the feasible set; keeps the best."""
    theta = L.params
    delta = {n: d.clone().requires_grad_(True) for n, d in init.items()}
    best_val = -float("inf")
    for _ in range(steps + 1):
        val = L({n: theta[n] + delta[n] for n in theta})
        if float(val.detach()) > best_val:
            best_val = float(val.detach())
        g = torch.autograd.grad(val, list(delta.values()))
        with torch.no_grad():
            new = step_size(delta, dict(zip(delta, g)))
            new = project(new)
        delta = {n: d.requires_grad_(True) for n, d in new.items()}
    return best_val


def epsilon_sharpness(model: nn.Module, loss_fn, data, eps: float = 1e-3, *, steps: int = 20, restarts: int = 1,
                      seed: int = 0) -> Sharpness:
    """epsilon-sharpness of Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (2017), "On
    large-batch training for deep learning: generalization gap and sharp minima":

        phi = 100 * (max_{delta in C} L(theta + delta) - L(theta)) / (1 + L(theta)),
        C = { delta : |delta_i| <= eps * (|theta_i| + 1) }  (a box, per parameter).

    The maximum is approached by projected sign-gradient ascent (the box's steepest ascent)
    from ``restarts`` random corners, ``steps`` steps each; Keskar et al. used L-BFGS-B. An
    approximate maximum can only under-estimate phi.
    """
    steps, restarts = check_int(steps, "steps", 1), check_int(restarts, "restarts", 1)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    L = _Loss(model, loss_fn, data)
    base = float(L(L.params))
    half = {n: eps * (p.abs() + 1) for n, p in L.params.items()}
    g = torch.Generator().manual_seed(int(seed))

    def project(d):
        return {n: torch.maximum(torch.minimum(v, half[n]), -half[n]) for n, v in d.items()}

    def step(d, gr):
        return {n: d[n] + 0.25 * half[n] * torch.sign(gr[n]) for n in d}

    worst = -float("inf")
    for _ in range(restarts):
        init = {n: half[n] * (torch.randint(0, 2, half[n].shape, generator=g).to(half[n].dtype) * 2 - 1) for n in half}
        worst = max(worst, _ascend(L, project, init, steps, step))
    return Sharpness(100.0 * (worst - base) / (1.0 + base), base, worst, "epsilon (Keskar et al. 2017)", float(eps), steps)


def adaptive_sharpness(model: nn.Module, loss_fn, data, rho: float = 0.05, *, steps: int = 20, seed: int = 0) -> Sharpness:
    """Adaptive (scale-invariant) sharpness of Kwon, Kim, Park & Choi (2021), "ASAM", as
    measured by Andriushchenko et al. (2023), "A modern look at the relationship between
    sharpness and generalization":

        S = max_{ || delta / |theta| ||_2 <= rho } L(theta + delta) - L(theta)

    (division elementwise), invariant to the rescalings of ReLU networks that change the
    plain Hessian. Maximised by normalized gradient ascent in the scaled coordinates
    ``u = delta / |theta|`` projected onto the ``rho``-sphere, ``steps`` steps.
    """
    steps = check_int(steps, "steps", 1)
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}.")
    L = _Loss(model, loss_fn, data)
    base = float(L(L.params))
    scale = {n: p.abs() for n, p in L.params.items()}
    g = torch.Generator().manual_seed(int(seed))

    def norm(u):
        return torch.sqrt(sum((v * v).sum() for v in u.values()))

    def project(d):
        u = {n: torch.where(scale[n] > 0, d[n] / scale[n].clamp_min(1e-30), torch.zeros_like(d[n])) for n in d}
        r = norm(u)
        return {n: u[n] * (rho / r) * scale[n] for n in d} if r > 0 else d

    def step(d, gr):
        # ascent direction in u-coordinates: dL/du = |theta| * dL/ddelta; move to the sphere point
        gu = {n: gr[n] * scale[n] for n in d}
        r = norm(gu)
        return {n: (gu[n] * (rho / r)) * scale[n] for n in d} if r > 0 else d

    init = project({n: torch.randn(p.shape, generator=g, dtype=p.dtype) * scale[n] for n, p in L.params.items()})
    worst = _ascend(L, project, init, steps, step)
    return Sharpness(worst - base, base, worst, "adaptive L2 (Kwon et al. 2021)", float(rho), steps)


def max_eigenvalue_sharpness(model: nn.Module, loss_fn, data, *, params=None, tol: float = 1e-6,
                             seed: int = 0) -> Sharpness:
    """The largest eigenvalue ``lambda_max`` of the Hessian of the full-data loss at the
    current weights: the sharpness of the edge-of-stability literature (Cohen, Kaur, Li, Kolter
    & Talwalkar 2021; Jastrzebski et al. 2020). Gradient descent with step ``lr`` is stable on
    a quadratic only while ``lambda_max < 2 / lr``; to second order it is the worst loss
    increase per squared step, ``max_{|d|=r} L(theta + d) - L(theta) ~ r^2 lambda_max / 2``
    at a minimum (Keskar et al.'s epsilon-sharpness in the small-``eps`` limit with an L2 ball).
    Not invariant to the rescalings of ReLU networks (Dinh et al. 2017); see
    :func:`adaptive_sharpness` for a scale-invariant number. Computed by Lanczos
    (:func:`~shapelens.curvature.eigenvalues`) on :class:`~shapelens.curvature.Hessian`.
    """
    H = Hessian(model, loss_fn, data, params)
    e = eigenvalues(H, k=1, which="largest", tol=tol, seed=seed)
    return Sharpness(float(e.eigenvalues[-1]), H.loss, float("nan"), "largest Hessian eigenvalue (Cohen et al. 2021)",
                     float("nan"), 0, n_matvec=e.n_matvec, notes=H.notes)


def trace_sharpness(model: nn.Module, loss_fn, data, *, params=None, samples: int = 60, method: str = "hutch++",
                    seed: int = 0) -> Sharpness:
    """The trace of the Hessian of the full-data loss, ``tr H = sum_i lambda_i``: the total
    curvature, the expected loss increase ``E[L(theta + s z) - L(theta)] ~ s^2 tr H / 2`` under
    isotropic Gaussian noise ``z`` at a minimum (the flatness measure of PyHessian, Yao et al.
    2020, and of noise-injection analyses; Jiang et al. 2020 compare it with generalization).
    Estimated by Hutch++ or Hutchinson (:func:`~shapelens.curvature.trace`) with its standard
    error in ``std_error``.
    """
    H = Hessian(model, loss_fn, data, params)
    t = trace(H, method, samples=samples, seed=seed)
    return Sharpness(t.trace, H.loss, float("nan"), f"Hessian trace ({t.method})", float("nan"), 0,
                     std_error=t.std_error, n_matvec=t.n_matvec, notes=H.notes)
