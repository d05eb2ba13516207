"""Bundle networks: learned local trivializations of a many-to-one map.

Courts & Kvinge, "Bundle Networks: Fiber Bundles, Local Trivializations, and a Generative
Approach to Exploring Many-to-one Maps", ICLR 2022 (arXiv 2110.06983), and the authors' code
(github.com/NicoCourts/bundle-networks, ``bundlenet/models/bundlenet.py``).

A many-to-one map ``pi: E -> B`` (data ``x`` in the total space ``E``, its label ``y = pi(x)``
in the base ``B``) is modelled as a fiber bundle: the base is covered by neighbourhoods ``U_k``
(k-means on the training base points; each point belongs to the cell of its nearest centre)
and over each one an invertible network ``phi_k: pi^{-1}(U_k) -> U_k x F`` is learned, a *local
trivialization*: its first ``base_dim`` outputs are the base point, the remaining ``fiber_dim``
ones a coordinate along the fiber. One invertible network serves every neighbourhood: it is
conditioned on the neighbourhood's centre. Sampling the fiber over a base point ``b`` draws
fiber coordinates from the fiber prior of ``b``'s neighbourhood and inverts ``phi`` at
``(b, f)``.

What follows the authors (paper and code):

* the architecture: a conditional elementwise affine layer ``x -> exp(s(c)) * x + t(c)``
  whose scale and shift are computed from the neighbourhood centre ``c`` (the "local
  trivialization" layer; ``condition="affine"``), followed by ``n_blocks`` RealNVP affine
  coupling blocks (two-sided, as FrEIA's ``RNVPCouplingBlock``, with FrEIA's soft clamp
  ``s -> 2 * 0.636 * atan(s)`` of the log-scales), each followed by a fixed random
  permutation; every sub-network is an MLP ``Linear-ReLU-(Linear-ReLU)*depth-Linear``. Theirs
  are 512 wide with depth 5 and 5 blocks; the defaults here are smaller for CPU work.
  ``condition="all"`` also feeds the centre to every coupling sub-network (an option of ours).
* the neighbourhoods: scikit-learn ``KMeans`` on the training base points, disjoint cells.
* the fiber prior: the fiber coordinates are a product of ``n_circles`` circles (pairs of
  coordinates) and Gaussian coordinates. Per neighbourhood, a Gaussian coordinate is drawn
  from ``N(mean, std)`` of the encoded training points of that neighbourhood, a circle as
  ``r (cos a, sin a)`` with ``a ~ U[0, 2 pi)`` and ``r ~ N(mean, std)`` of the encoded radii.
  During training these statistics come from the batch (and carry gradients), as in their code.
* the four training losses and their default weights ``(10, 1, 1, 1)``: ``mse`` (mean
  Euclidean distance between the predicted and the true base point; their code calls it MSE
  but takes the unsquared norm), ``kl_bwd`` and ``kl_fwd`` (the 1-nearest-neighbour estimate of
  the KL divergence, Wang, Kulkarni & Verdu 2009, from generated to true points of the
  neighbourhood and back), and ``dist`` (mean distance from a generated point to its nearest
  true point of the neighbourhood). Fibers are generated over the batch's own true base points,
  ``oversample`` (their 5) samples per point. Each loss is averaged over the neighbourhoods of a
  batch; a batch is a few neighbourhoods (their 5) with up to a few hundred points each.
* zero padding: the authors pad data whose width is below ``base_dim + fiber_dim`` with zero
  coordinates (e.g. a torus in R^3 over a circle in R^2 with a circle fiber, total width 4);
  here the caller pads (the width of ``x`` must equal ``total_dim``).

What is ours: a fixed affine standardization of ``x`` and ``y`` fitted on the training data
(an exact invertible map folded into ``phi``); choosing a chart for a point without a known
base point (see :meth:`BundleNetwork.chart_of`); the diagram of the bundle built from
:mod:`shapelens.structure` pieces (:meth:`BundleNetwork.diagram`); and an optional fifth loss,
``nll`` (weight 0 by default, so the default configuration is the paper's):

* ``nll`` is the maximum-likelihood term of a normalizing flow (Dinh, Sohl-Dickstein & Bengio,
  "Density estimation using Real NVP", ICLR 2017), the objective a conditional INN is trained
  with (Ardizzone et al., "Guided Image Generation with Conditional Invertible Neural
  Networks", 2019). ``phi`` is invertible with a tractable log-determinant, so the density of
  ``x`` factorises as ``p(x) = p_B(b) p_F(f | U_k) |det J_phi(x)|`` with ``(b, f) = phi(x)``.
  The base factor is left out: the base coordinates are tied to the true base point by ``mse``,
  and the data's base distribution (e.g. a circle in R^2) has no density on the base
  coordinates. The term is the mean over points of ``-log p_F(f | U_k) - log|det J_phi(x)|``
  (data units, standardization included), averaged per neighbourhood then over
  neighbourhoods like the other losses. It trains the fiber distribution directly, where the
  1-NN KL estimates reshape it only slowly (measured in validation/bundle_networks.py).
* the prior it uses is the one :meth:`BundleNetwork.sample_fiber` draws from. With ``nll`` the
  prior is ``"standard"`` (ours): the Gaussian fiber coordinates are ``N(0, 1)`` in every
  neighbourhood, fixed, because with the paper's prior fitted to the encoded points the term
  is invariant to rescaling the fiber coordinates and training shrinks them (measured on the
  validation's Moebius band, ``mse`` + ``nll`` only, seed 0: the encoded fiber over one base point
  shrank to a range of 0.002 against 3.1 with the standard prior, fiber W1 0.95 against 0.33).
  A circle factor keeps the paper's fitted radius
  distribution (and uniform angle), with its exact plane density
  ``[N(|u|; rm, rs) + N(-|u|; rm, rs)] / (2 pi |u|)``: the radial direction of a circle fiber
  is degenerate (the data have no extent there), so its width must come from the data.
* caveat: data on a lower-dimensional set of R^D (a circle base in R^2, zero padding) have a
  singular density, and the term also rewards stretching ``phi`` in the directions normal to
  the data. The soft clamp of the log-scales bounds that reward
  (``|log det| <= 2 total_dim (n_blocks + 1)`` for the flow), and those directions are never
  sampled (:meth:`BundleNetwork.sample_fiber` fixes the base coordinates and draws only the
  fiber), so the value is a training signal, not a calibrated density of the data. Variants we
  measured and dropped: the density along the learned fiber alone (``+ 1/2 log det(J_f^T J_f)``,
  ``J_f = d phi^{-1} / d f``), which training exploits by tilting the learned fibers across the
  data and paying a little ``mse``; and the full density of noisy data with a Gaussian
  base-residual factor, whose base term dominates training (a free residual width absorbs the
  fiber instead).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shapelens._checks import as_points, check_int, show_progress, single_thread
from shapelens._results import Result
from shapelens.structure.objects import Product, Space, StructureError

__all__ = [
    "BundleNetwork",
    "BundleHistory",
    "ConditionalAffine",
    "AffineCoupling",
    "LocalTrivializationFlow",
    "knn_kl_divergence",
    "wasserstein1",
    "mmd",
]

#: Loss names: the authors' four in the order of their weight list ``[10, 1, 1, 1]``, then our
#: optional likelihood term ``nll`` (weight 0 by default: the paper's configuration).
LOSS_NAMES = ("mse", "kl_bwd", "kl_fwd", "dist", "nll")
DEFAULT_WEIGHTS = {"mse": 10.0, "kl_bwd": 1.0, "kl_fwd": 1.0, "dist": 1.0, "nll": 0.0}
#: The fiber priors: the authors' (statistics of the encoded points) and ours (standard normal).
PRIORS = ("fitted", "standard")
#: Smallest standard deviation of a fitted prior coordinate or radius (standardized units): keeps
#: the prior's log-density finite when the encoded points of a neighbourhood coincide.
PRIOR_STD_FLOOR = 1e-3
#: FrEIA's soft clamp of log-scales: ``s -> CLAMP * 0.636 * atan(s)`` keeps ``|s| < ~2``.
CLAMP = 2.0


def _soft_clamp(s: torch.Tensor) -> torch.Tensor:
    return CLAMP * 0.636 * torch.atan(s)


def _mlp(c_in: int, c_out: int, hidden: int, depth: int) -> nn.Sequential:
    """FrEIA-style sub-network of Courts & Kvinge: Linear-ReLU, ``depth`` x (Linear-ReLU), Linear."""
    layers: list[nn.Module] = [nn.Linear(c_in, hidden), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, c_out))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------
# invertible pieces
# --------------------------------------------------------------------------------------


class ConditionalAffine(nn.Module):
    """Elementwise affine map whose scale and shift depend on a condition only:
    ``y = exp(s(c)) * x + t(c)``, log-determinant ``sum(s(c))``.

    The local-trivialization layer of Courts & Kvinge (2022) (FrEIA's
    ``ConditionalAffineTransform``): ``c`` is the centre of the base neighbourhood."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int):
        super().__init__()
        self.dim = dim
        self.subnet = _mlp(cond_dim, 2 * dim, hidden, depth)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.subnet(c)
        s, t = _soft_clamp(a[:, : self.dim]), a[:, self.dim :]
        if rev:
            return (x - t) * torch.exp(-s), -s.sum(1)
        return torch.exp(s) * x + t, s.sum(1)


class AffineCoupling(nn.Module):
    """Two-sided RealNVP affine coupling block (Dinh et al. 2017; FrEIA's ``RNVPCouplingBlock``).

    ``x = (x1, x2)``; ``y1 = exp(s2(x2)) * x1 + t2(x2)``, ``y2 = exp(s1(y1)) * x2 + t1(y1)``, with
    log-scales soft-clamped. With ``cond_dim > 0`` the sub-networks also read a condition.
    The inverse is exact (up to rounding)."""

    def __init__(self, dim: int, hidden: int, depth: int, cond_dim: int = 0):
        super().__init__()
        if dim < 2:
            raise StructureError(f"an affine coupling block needs at least 2 dimensions, got {dim}.")
        self.len1, self.len2 = dim // 2, dim - dim // 2
        self.cond_dim = cond_dim
        self.subnet1 = _mlp(self.len1 + cond_dim, 2 * self.len2, hidden, depth)  # y1 -> (s1, t1) for x2
        self.subnet2 = _mlp(self.len2 + cond_dim, 2 * self.len1, hidden, depth)  # x2 -> (s2, t2) for x1

    def _st(self, net: nn.Module, u: torch.Tensor, c: torch.Tensor | None, n: int):
        if self.cond_dim:
            u = torch.cat([u, c], 1)
        a = net(u)
        return _soft_clamp(a[:, :n]), a[:, n:]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, rev: bool = False):
        x1, x2 = x[:, : self.len1], x[:, self.len1 :]
        if not rev:
            s2, t2 = self._st(self.subnet2, x2, c, self.len1)
            y1 = torch.exp(s2) * x1 + t2
            s1, t1 = self._st(self.subnet1, y1, c, self.len2)
            y2 = torch.exp(s1) * x2 + t1
            return torch.cat([y1, y2], 1), s1.sum(1) + s2.sum(1)
        s1, t1 = self._st(self.subnet1, x1, c, self.len2)
        y2 = (x2 - t1) * torch.exp(-s1)
        s2, t2 = self._st(self.subnet2, y2, c, self.len1)
        y1 = (x1 - t2) * torch.exp(-s2)
        return torch.cat([y1, y2], 1), -(s1.sum(1) + s2.sum(1))


class LocalTrivializationFlow(nn.Module):
    """The invertible network of a bundle network: a :class:`ConditionalAffine` layer read from
    the neighbourhood condition, then ``n_blocks`` x (:class:`AffineCoupling`, fixed random
    permutation), as in Courts & Kvinge (2022). ``forward(x, c)`` returns ``(z, log|det J|)``;
    ``forward(z, c, rev=True)`` inverts it exactly."""

    def __init__(self, dim: int, cond_dim: int, *, hidden: int, n_blocks: int, depth: int,
                 condition: str = "affine", seed: int = 0):
        super().__init__()
        if condition not in ("affine", "all"):
            raise StructureError(f"condition must be 'affine' (the paper's) or 'all', got {condition!r}.")
        self.dim = dim
        self.condition = condition
        self.affine = ConditionalAffine(dim, cond_dim, hidden, depth)
        cd = cond_dim if condition == "all" else 0
        self.blocks = nn.ModuleList(AffineCoupling(dim, hidden, depth, cd) for _ in range(n_blocks))
        g = torch.Generator().manual_seed(int(seed) + 7919)
        perms = torch.stack([torch.randperm(dim, generator=g) for _ in range(n_blocks)]) if n_blocks else torch.zeros(0, dim, dtype=torch.long)
        self.register_buffer("perms", perms)
        self.register_buffer("inv_perms", torch.argsort(perms, dim=1) if n_blocks else perms.clone())

    def forward(self, x: torch.Tensor, c: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        cc = c if self.condition == "all" else None
        if not rev:
            z, logdet = self.affine(x, c)
            for i, block in enumerate(self.blocks):
                z, ld = block(z, cc)
                z = z[:, self.perms[i]]
                logdet = logdet + ld
            return z, logdet
        z = x
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in reversed(range(len(self.blocks))):
            z = z[:, self.inv_perms[i]]
            z, ld = self.blocks[i](z, cc, rev=True)
            logdet = logdet + ld
        z, ld = self.affine(z, c, rev=True)
        return z, logdet + ld


# --------------------------------------------------------------------------------------
# sample distances (losses and metrics)
# --------------------------------------------------------------------------------------


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (matrix-product form, after centring both samples on a common
    point for accuracy)."""
    o = a.detach().mean(0, keepdim=True)
    a, b = a - o, b - o
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def _nn_dist(a: torch.Tensor, b: torch.Tensor, same: bool) -> torch.Tensor:
    """Distance from each row of ``a`` to its nearest row of ``b`` at nonzero distance (``same``:
    ``b`` is ``a``, whose diagonal is skipped). The gradient is finite (zero at skipped pairs)."""
    d2 = _sqdist(a, b)
    skip = d2 <= 0
    if same:
        skip = skip | torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    d2 = torch.where(skip, torch.full_like(d2, float("inf")), d2)
    return torch.sqrt(d2.min(1).values.clamp_min(1e-30))


def knn_kl_divergence(s1: Any, s2: Any) -> torch.Tensor:
    """1-nearest-neighbour estimate of ``KL(P1 || P2)`` from samples (Wang, Kulkarni & Verdu,
    IEEE Trans. Inf. Theory 55(5), 2009), as in Courts & Kvinge's code:
    ``log(m / (n - 1)) + (d / n) * sum_i log(nu_i / rho_i)``, where ``rho_i`` is the distance from
    ``s1[i]`` to its nearest other point of ``s1`` and ``nu_i`` to its nearest point of ``s2``
    (exact zero distances are skipped, as theirs). Differentiable in both samples."""
    a = s1 if isinstance(s1, torch.Tensor) else torch.as_tensor(np.asarray(s1, dtype=np.float64))
    b = s2 if isinstance(s2, torch.Tensor) else torch.as_tensor(np.asarray(s2, dtype=np.float64), dtype=a.dtype)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 or b.shape[0] < 1 or b.shape[1] != a.shape[1]:
        raise ValueError(f"knn_kl_divergence needs s1 with at least 2 points and s2 with at least 1 of the same width; "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    return _kl(a, b)


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    terms = torch.log(_nn_dist(a, b, False)) - torch.log(_nn_dist(a, a, True))
    return math.log(m / (n - 1)) + d / n * terms.sum()


def wasserstein1(a: Any, b: Any) -> float:
    """Exact Wasserstein-1 distance between two equal-size point samples (uniform weights):
    the mean Euclidean cost of the optimal one-to-one assignment (``scipy.optimize.
    linear_sum_assignment``), which is optimal among all transport plans for equal sizes.
    Courts & Kvinge report the debiased Sinkhorn approximation of this number (geomloss,
    ``p=1``, ``blur=0.01``)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    A, B = _np2d(a, "a"), _np2d(b, "b")
    if A.shape != B.shape:
        raise ValueError(f"wasserstein1 needs two samples of the same shape (equal sizes make the exact assignment "
                         f"optimal); got {A.shape} and {B.shape}. Draw as many generated points as true ones.")
    C = cdist(A, B)
    r, c = linear_sum_assignment(C)
    return float(C[r, c].mean())


def mmd(a: Any, b: Any, blur: float = 0.5) -> float:
    """Gaussian-kernel maximum mean discrepancy in the convention of geomloss's
    ``SamplesLoss("gaussian", blur=blur)``, which Courts & Kvinge use (their tables show 1000x
    this number): ``0.5 * (mean k(a, a') + mean k(b, b') - 2 mean k(a, b))`` over all pairs
    (V-statistic, diagonals included), ``k(x, y) = exp(-|x - y|^2 / (2 blur^2))``."""
    from scipy.spatial.distance import cdist

    A, B = _np2d(a, "a"), _np2d(b, "b")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"mmd needs samples of the same width, got {A.shape} and {B.shape}.")
    s = 2.0 * float(blur) ** 2

    def k(X, Y):
        return np.exp(-cdist(X, Y, "sqeuclidean") / s).mean()

    return float(0.5 * (k(A, A) + k(B, B) - 2.0 * k(A, B)))


def _np2d(x: Any, name: str) -> np.ndarray:
    t = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D sample (N, D), got shape {t.shape}.")
    return t


# --------------------------------------------------------------------------------------
# the bundle network
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BundleHistory(Result):
    """Training log of :meth:`BundleNetwork.fit`: per-epoch means of each loss (``losses[name]``
    is an array of length ``epochs``; ``"total"`` is the weighted sum), the weights used,
    the number of optimizer steps and the wall time."""

    losses: dict
    weights: dict
    epochs: int
    steps: int
    seconds: float
    lr: float
    seed: int

    def plot(self, ax=None):
        """The loss curves on a log scale (KL estimates can be negative: shown as their absolute value)."""
        ax = self._axes(ax, (5.0, 3.2))
        for name, v in self.losses.items():
            ax.plot(np.arange(1, len(v) + 1), np.abs(np.asarray(v)), label=name, lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (|value|)")
        ax.legend(fontsize=7)
        return ax


def _dim(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StructureError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise StructureError(f"{name} must be a positive integer (a dimension), got {value}.")
    return int(value)


class BundleNetwork(nn.Module):
    """A bundle network (Courts & Kvinge, ICLR 2022): learned local trivializations
    ``phi_k: pi^{-1}(U_k) -> U_k x F`` of a many-to-one map ``pi: E -> B``.

    Parameters
    ----------
    total_dim, base_dim, fiber_dim : widths of the total space ``E`` (the data), of the base
        ``B`` (the labels) and of the fiber coordinates; ``total_dim == base_dim + fiber_dim``
        (pad narrower data with zero columns, as the authors do).
    n_neighborhoods : number of base neighbourhoods (k-means cells; theirs 25).
    hidden, depth : width and number of inner hidden layers of every sub-network (theirs 512, 5;
        the defaults 64, 1 are the configuration validated in validation/bundle_networks.py).
    n_blocks : affine coupling blocks after the conditional affine layer (theirs 5, default 4).
    n_circles : circle factors of the fiber prior (pairs of fiber coordinates); default
        ``fiber_dim // 2`` as in their code; the other coordinates are Gaussian.
    condition : ``"affine"`` (the paper: only the first, elementwise affine layer reads the
        neighbourhood centre) or ``"all"`` (every coupling sub-network reads it too).
    weights : loss weights by name (defaults ``mse`` 10, ``kl_bwd`` 1, ``kl_fwd`` 1, ``dist`` 1,
        the authors' ``[10, 1, 1, 1]``, and ``nll`` 0), or a sequence in that order (4 entries:
        the authors' list; 5: with ``nll``). ``weights={"nll": 1.0}`` adds our maximum-likelihood
        term (see the module docstring) to the paper's losses. A loss of weight 0 is not computed
        (reported as NaN), so e.g. ``{"kl_bwd": 0, "kl_fwd": 0, "dist": 0, "nll": 1}`` trains by
        ``mse`` and likelihood only, about 4x faster per step.
    prior : the fiber prior: ``"fitted"`` (the paper's: per neighbourhood, the statistics of the
        encoded training points) or ``"standard"`` (ours: Gaussian coordinates ``N(0, 1)``, circle
        radii fitted as the paper's); ``None`` (default) picks ``"standard"`` when the ``nll``
        weight is nonzero, else ``"fitted"``. ``"fitted"`` with ``nll`` and Gaussian coordinates is
        refused (the likelihood then does not fix their scale).
    oversample : generated fiber samples per training point in the losses (theirs 5).
    seed : seeds the initialization and permutations.

    Use: ``net.fit(x, y)`` (fits the neighbourhoods on ``y``, trains, calibrates the fiber
    prior), then ``net.sample_fiber(y0, n, seed=...)``, ``net.project(x)``,
    ``net.trivialize(x)``, ``net.inverse(b, f)``, ``net.diagram().check(...)``.
    """

    def __init__(self, total_dim: int, base_dim: int, fiber_dim: int, *, n_neighborhoods: int = 25,
                 hidden: int = 64, n_blocks: int = 4, depth: int = 1, n_circles: int | None = None,
                 condition: str = "affine", weights: Mapping[str, float] | Sequence[float] | None = None,
                 prior: str | None = None, oversample: int = 5, seed: int = 0):
        super().__init__()
        D, B, F = _dim(total_dim, "total_dim"), _dim(base_dim, "base_dim"), _dim(fiber_dim, "fiber_dim")
        if D != B + F:
            raise StructureError(
                f"the dimensions of the bundle do not add up: total_dim={D} but base_dim + fiber_dim = {B} + {F} = {B + F}. "
                f"A local trivialization maps the total space onto base x fiber, so total_dim must equal base_dim + fiber_dim; "
                f"pad narrower data with zero columns (as Courts & Kvinge do) or change fiber_dim to {D - B}.")
        self.total_dim, self.base_dim, self.fiber_dim = D, B, F
        self.n_neighborhoods = check_int(n_neighborhoods, "n_neighborhoods", 1)
        self.hidden = check_int(hidden, "hidden", 1)
        self.n_blocks = check_int(n_blocks, "n_blocks", 0)
        self.depth = check_int(depth, "depth", 0)
        self.oversample = check_int(oversample, "oversample", 1)
        self.seed = check_int(seed, "seed", 0)
        nc = F // 2 if n_circles is None else check_int(n_circles, "n_circles", 0)
        if 2 * nc > F:
            raise StructureError(f"n_circles={nc} circles need {2 * nc} fiber coordinates but fiber_dim={F}; "
                                 f"use n_circles <= {F // 2}.")
        self.n_circles = nc
        self.condition = condition
        self.weights = self._parse_weights(weights)
        if prior is None:
            prior = "standard" if self.weights["nll"] != 0 else "fitted"
        if prior not in PRIORS:
            raise StructureError(f"prior must be 'fitted' (the paper's: statistics of the encoded points) or 'standard' "
                                 f"(ours: standard normal Gaussian coordinates), got {prior!r}.")
        if prior == "fitted" and self.weights["nll"] != 0 and F > 2 * nc:
            raise StructureError(
                "the nll loss needs prior='standard' (or None) when the fiber has Gaussian coordinates: with a prior fitted to "
                "the encoded points, -log p_F(f) - log|det J| no longer fixes the scale of the fiber coordinates, and training "
                "shrinks them (measured: the Moebius band's fibers collapse). Pass prior='standard' or leave prior=None.")
        self.prior = prior
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.flow = LocalTrivializationFlow(D, B, hidden=self.hidden, n_blocks=self.n_blocks, depth=self.depth,
                                                condition=condition, seed=self.seed)
        K = self.n_neighborhoods
        self.register_buffer("centers", torch.zeros(K, B))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("x_loc", torch.zeros(D))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("y_loc", torch.zeros(B))
        self.register_buffer("y_scale", torch.ones(()))
        self.register_buffer("prior_mean", torch.zeros(K, F))
        self.register_buffer("prior_std", torch.ones(K, F))
        self.register_buffer("radius_mean", torch.ones(K, nc))
        self.register_buffer("radius_std", torch.zeros(K, nc))
        #: the objects of the bundle's diagram (:meth:`diagram`)
        self.total_space = Space("Total", D)
        self.base_space = Space("Base", B)
        self.fiber_space = Space("Fiber", F)
        self.chart_space = Product(self.base_space, self.fiber_space)  # "Base x Fiber"
        self.labelled_space = Product(self.total_space, self.base_space)  # "Total x Base": data with base points

    # ----------------------------------------------------------------- configuration

    @staticmethod
    def _parse_weights(weights) -> dict[str, float]:
        if weights is None:
            return dict(DEFAULT_WEIGHTS)
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(LOSS_NAMES)
            if unknown:
                raise ValueError(f"unknown loss names {sorted(unknown)} in weights; the losses are {list(LOSS_NAMES)}.")
            out = dict(DEFAULT_WEIGHTS)
            out.update({k: float(v) for k, v in weights.items()})
            return out
        w = list(weights)
        if len(w) not in (len(LOSS_NAMES) - 1, len(LOSS_NAMES)):
            raise ValueError(f"weights as a sequence must have {len(LOSS_NAMES) - 1} entries (the authors' list, in the order "
                             f"{list(LOSS_NAMES[:-1])}) or {len(LOSS_NAMES)} (with 'nll' last), got {w}.")
        out = dict(DEFAULT_WEIGHTS)
        out.update({k: float(v) for k, v in zip(LOSS_NAMES, w)})
        return out

    def extra_repr(self) -> str:
        return (f"total_dim={self.total_dim}, base_dim={self.base_dim}, fiber_dim={self.fiber_dim}, "
                f"n_neighborhoods={self.n_neighborhoods}, n_circles={self.n_circles}, condition={self.condition!r}, "
                f"prior={self.prior!r}")

    @property
    def _dtype(self) -> torch.dtype:
        return self.centers.dtype

    @property
    def _device(self) -> torch.device:
        return self.centers.device

    def _as(self, v: Any, width: int, name: str, what: str) -> torch.Tensor:
        """Validate a batch ``(N, width)`` and convert it to the network's dtype and device."""
        if isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape[1] == width and v.dtype == self._dtype \
                and v.device == self._device:
            if not bool(torch.isfinite(v.detach()).all()):
                raise ValueError(f"{name} contains NaN or infinite values; remove them first.")
            return v
        if isinstance(v, torch.Tensor) and v.ndim == 1 and width == v.shape[0]:
            raise StructureError(f"{name} has shape {tuple(v.shape)}: pass a batch of shape (N, {width}) "
                                 f"(e.g. {name}[None] for one point).")
        t = as_points(v, name=name, dtype=self._dtype, device=self._device)
        if t.shape[1] != width:
            raise StructureError(f"{name} has width {t.shape[1]} but this bundle network's {what} has dimension {width} "
                                 f"(total_dim={self.total_dim}, base_dim={self.base_dim}, fiber_dim={self.fiber_dim}); "
                                 f"pass {name} of shape (N, {width})" + (" (zero-pad narrower data)." if what == "total space" else "."))
        return t

    def _x(self, x: Any) -> torch.Tensor:
        return self._as(x, self.total_dim, "x", "total space")

    def _y(self, y: Any, name: str = "y") -> torch.Tensor:
        return self._as(y, self.base_dim, name, "base")

    def _require_fitted(self) -> None:
        if not bool(self.fitted):
            raise StructureError("this BundleNetwork has no neighbourhoods yet; call net.fit(x, y) or "
                                 "net.fit_neighborhoods(y) with the training base points first.")

    # ----------------------------------------------------------------- neighbourhoods

    def fit_neighborhoods(self, y: Any, x: Any = None, *, seed: int | None = None, standardize: bool = True) -> "BundleNetwork":
        """Cover the base by ``n_neighborhoods`` cells: scikit-learn ``KMeans`` on the training
        base points ``y`` (as Courts & Kvinge); a base point belongs to the cell of its nearest
        centre. With ``x`` also given, fit the standardization of ``x`` (when ``standardize``)
        and calibrate the fiber prior (:meth:`calibrate_prior`). Returns ``self``."""
        from sklearn.cluster import KMeans

        yt = self._y(y)
        K = self.n_neighborhoods
        n_distinct = int(torch.unique(yt, dim=0).shape[0])
        if n_distinct < K:
            raise StructureError(f"n_neighborhoods={K} needs at least {K} distinct base points, y has {n_distinct}; "
                                 f"lower n_neighborhoods or pass more data.")
        seed = self.seed if seed is None else check_int(seed, "seed", 0)
        Y = yt.detach().cpu().double().numpy()
        km = KMeans(n_clusters=K, n_init=10, random_state=seed).fit(Y)
        with torch.no_grad():
            self.centers.copy_(torch.as_tensor(km.cluster_centers_, dtype=self._dtype))
            if standardize:
                self.y_loc.copy_(yt.mean(0))
                self.y_scale.copy_((yt - yt.mean(0)).pow(2).sum(1).mean().sqrt().clamp_min(1e-12))
            else:
                self.y_loc.zero_()
                self.y_scale.fill_(1.0)
            self.fitted.fill_(True)
        if x is not None:
            xt = self._x(x)
            if xt.shape[0] != yt.shape[0]:
                raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
            with torch.no_grad():
                if standardize:
                    self.x_loc.copy_(xt.mean(0))
                    self.x_scale.copy_((xt - xt.mean(0)).pow(2).sum(1).mean().sqrt().clamp_min(1e-12))
                else:
                    self.x_loc.zero_()
                    self.x_scale.fill_(1.0)
            self.calibrate_prior(xt, yt)
        return self

    def neighborhood_of(self, y: Any) -> torch.Tensor:
        """Index of the neighbourhood (nearest centre) of each base point, shape ``(N,)``."""
        self._require_fitted()
        yt = self._y(y)
        return torch.cdist(yt.detach(), self.centers).argmin(1)

    def _cond(self, idx: torch.Tensor) -> torch.Tensor:
        return (self.centers[idx] - self.y_loc) / self.y_scale

    # ----------------------------------------------------------------- the maps

    def _phi(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chart ``idx`` applied to ``x``: (base in base units, fiber coordinates, log|det|)."""
        z, logdet = self.flow((x - self.x_loc) / self.x_scale, self._cond(idx))
        base = z[:, : self.base_dim] * self.y_scale + self.y_loc
        return base, z[:, self.base_dim :], logdet

    def _phi_inv(self, base: torch.Tensor, fiber: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        z = torch.cat([(base - self.y_loc) / self.y_scale, fiber], 1)
        xs, _ = self.flow(z, self._cond(idx), rev=True)
        return xs * self.x_scale + self.x_loc

    def chart_of(self, x: Any) -> torch.Tensor:
        """The neighbourhood used for ``x`` when its base point is unknown: a chart ``k`` is
        *consistent* at ``x`` when the base point it predicts, ``p_B phi_k(x)``, lies in ``U_k``
        (its nearest centre is ``c_k``); among consistent charts the one whose prediction is
        closest to its centre is taken, and when none is consistent the chart minimising
        ``|p_B phi_k(x) - c_k|``. Then :meth:`inverse` (which picks the chart of its base point)
        undoes :meth:`trivialize` exactly wherever a consistent chart exists."""
        self._require_fitted()
        xt = self._x(x)
        K, N = self.n_neighborhoods, xt.shape[0]
        with torch.no_grad():
            preds = torch.stack([self._phi(xt, torch.full((N,), k, dtype=torch.long, device=xt.device))[0]
                                 for k in range(K)])  # (K, N, B)
            dist = (preds - self.centers[:, None, :]).norm(dim=2)  # (K, N)
            nearest = torch.cdist(preds.reshape(K * N, -1), self.centers).argmin(1).reshape(K, N)
            consistent = nearest == torch.arange(K, device=xt.device)[:, None]
            score = torch.where(consistent, dist, dist + torch.finfo(dist.dtype).max / 4)
            return score.argmin(0)

    def trivialize(self, x: Any, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``phi(x) = (b, f)``: base point and fiber coordinates of each data point. With ``y``
        (the true base points) the chart of each point is the neighbourhood of its true base
        point (training mode, as the paper); without, :meth:`chart_of`."""
        self._require_fitted()
        xt = self._x(x)
        if y is None:
            idx = self.chart_of(xt)
        else:
            yt = self._y(y)
            if yt.shape[0] != xt.shape[0]:
                raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
            idx = self.neighborhood_of(yt)
        b, f, _ = self._phi(xt, idx)
        return b, f

    def forward(self, x: Any, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`trivialize`: the tuple ``(base, fiber)`` (a value of ``Base x Fiber``)."""
        return self.trivialize(x, y)

    def project(self, x: Any, y: Any = None) -> torch.Tensor:
        """The learned bundle projection ``pi(x) = p_B(phi(x))``, shape ``(N, base_dim)``."""
        return self.trivialize(x, y)[0]

    def inverse(self, base: Any, fiber: Any = None) -> torch.Tensor:
        """``phi^{-1}(b, f)``: the point of the total space with base point ``b`` and fiber
        coordinates ``f``, in the chart of ``b``'s neighbourhood. Also accepts one tuple ``(b, f)``."""
        self._require_fitted()
        if fiber is None and isinstance(base, (tuple, list)) and len(base) == 2:
            base, fiber = base
        if fiber is None:
            raise StructureError("inverse needs base points and fiber coordinates: inverse(b, f) or inverse((b, f)).")
        bt = self._y(base, "base")
        ft = self._as(fiber, self.fiber_dim, "fiber", "fiber")
        if bt.shape[0] != ft.shape[0]:
            raise ValueError(f"base has {bt.shape[0]} points but fiber has {ft.shape[0]}; pass one fiber coordinate per base point.")
        return self._phi_inv(bt, ft, self.neighborhood_of(bt))

    def log_det(self, x: Any, y: Any = None) -> torch.Tensor:
        """``log|det d phi / d x|`` of each point's chart (standardization included)."""
        self._require_fitted()
        xt = self._x(x)
        idx = self.chart_of(xt) if y is None else self.neighborhood_of(y)
        _, _, ld = self._phi(xt, idx)
        return self._data_log_det(ld)

    # ----------------------------------------------------------------- the fiber prior

    def calibrate_prior(self, x: Any, y: Any) -> "BundleNetwork":
        """Set each neighbourhood's fiber prior from the encoded training points of that
        neighbourhood (Gaussian coordinates: mean and unbiased std; circles: mean and std of the
        radius), by the same rule the training losses use on a batch (:meth:`_stats`): with
        ``prior="standard"`` the Gaussian coordinates get mean 0 and std 1, so that
        :meth:`sample_fiber` draws from the prior the ``nll`` term was trained with.
        Neighbourhoods with fewer than 2 points take the statistics of all points."""
        self._require_fitted()
        xt, yt = self._x(x), self._y(y)
        with torch.no_grad():
            idx = self.neighborhood_of(yt)
            _, f, _ = self._phi(xt, idx)
            gm, gs, grm, grs = self._stats(f)
            for k in range(self.n_neighborhoods):
                sel = idx == k
                if int(sel.sum()) >= 2:
                    m, s, rm, rs = self._stats(f[sel])
                else:
                    m, s, rm, rs = gm, gs, grm, grs
                self.prior_mean[k], self.prior_std[k] = m, s
                self.radius_mean[k], self.radius_std[k] = rm, rs
        return self

    def _stats(self, f: torch.Tensor):
        """Prior statistics of encoded fiber coordinates ``f`` (rows of one neighbourhood): mean
        and std of each coordinate, mean and std of each circle factor's radius (unbiased stds,
        floored at ``PRIOR_STD_FLOOR``). With ``prior="standard"`` the Gaussian coordinates get
        mean 0 and std 1 whatever ``f`` is; the circle radii are always fitted."""
        C, n = self.n_circles, f.shape[0]
        if self.prior == "standard":
            m, s = f.new_zeros(f.shape[1]), f.new_ones(f.shape[1])
        else:
            m = f.mean(0)
            s = f.std(0, unbiased=True).clamp_min(PRIOR_STD_FLOOR) if n > 1 else f.new_full((f.shape[1],), PRIOR_STD_FLOOR)
        if C == 0:
            e = f.new_zeros(0)
            return m, s, e, e
        r = f[:, : 2 * C].reshape(n, C, 2).norm(dim=-1)
        rm = r.mean(0)
        rs = r.std(0, unbiased=True).clamp_min(PRIOR_STD_FLOOR) if n > 1 else torch.full_like(rm, PRIOR_STD_FLOOR)
        return m, s, rm, rs

    def _draw(self, m, s, rm, rs, gen) -> torch.Tensor:
        """Fiber coordinates from the prior: ``m``, ``s`` (rows, F); ``rm``, ``rs`` (rows, C)."""
        C = self.n_circles
        eps = torch.randn(m.shape, generator=gen, dtype=m.dtype, device="cpu").to(m.device)
        f = m + s * eps
        if C:
            er = torch.randn(rm.shape, generator=gen, dtype=m.dtype, device="cpu").to(m.device)
            ang = 2 * math.pi * torch.rand(rm.shape, generator=gen, dtype=m.dtype, device="cpu").to(m.device)
            r = rm + rs * er
            circ = torch.stack([r * torch.cos(ang), r * torch.sin(ang)], -1).reshape(m.shape[0], 2 * C)
            f = torch.cat([circ, f[:, 2 * C :]], 1)
        return f

    def sample_fiber(self, y: Any, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` points of the fiber over base point ``y``: fiber coordinates from the prior of
        ``y``'s neighbourhood, then ``phi^{-1}(y, f)`` in that chart (Courts & Kvinge's
        ``sample_from_fiber``). ``y`` of shape ``(base_dim,)`` gives ``(n, total_dim)``; a batch
        ``(M, base_dim)`` gives ``(M, n, total_dim)``. Reproducible for a given ``seed``."""
        self._require_fitted()
        n = check_int(n, "n", 1)
        arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, dtype=np.float64)
        single = arr.ndim == 1
        if single and arr.shape[0] != self.base_dim:
            raise StructureError(f"y has {arr.shape[0]} coordinates but the base has dimension {self.base_dim}; pass one base "
                                 f"point of shape ({self.base_dim},) or a batch (M, {self.base_dim}).")
        yt = self._y(arr[None] if single else arr)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
        with torch.no_grad():
            M = yt.shape[0]
            idx = self.neighborhood_of(yt).repeat_interleave(n)
            base = yt.repeat_interleave(n, 0)
            f = self._draw(self.prior_mean[idx], self.prior_std[idx], self.radius_mean[idx], self.radius_std[idx], gen)
            out = self._phi_inv(base, f, idx).reshape(M, n, self.total_dim)
        return out[0] if single else out

    # ----------------------------------------------------------------- losses and training

    def losses(self, x: Any, y: Any, *, seed: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The training losses of Courts & Kvinge on a batch, by name, and ``"total"``, their
        weighted sum (differentiable scalars):

        * ``mse``: mean over points of ``|p_B phi(x) - y|`` (each point in the chart of its true
          base point), averaged per neighbourhood then over neighbourhoods;
        * per neighbourhood with at least 2 points in the batch, ``oversample`` fiber samples per
          point are generated over the point's true base point from the batch's prior statistics
          of that neighbourhood and mapped back with ``phi^{-1}``; then ``kl_bwd`` = KL(generated ||
          true), ``kl_fwd`` = KL(true || generated) (1-NN estimates, :func:`knn_kl_divergence`) and
          ``dist`` = mean distance from a generated point to its nearest true point, each averaged
          over neighbourhoods. All distances are in data units;
        * ``nll`` (ours, see the module docstring): over the same points, the mean of
          ``-log p_F(f) - log|det J_phi(x)|`` (data units) with the batch's prior statistics of the
          point's neighbourhood, averaged per neighbourhood then over neighbourhoods.

        A loss whose weight is 0 is not computed and is reported as NaN (``total`` sums the
        others). With fewer than 2 points in every neighbourhood of the batch the
        neighbourhood losses are 0.
        """
        self._require_fitted()
        xt, yt = self._x(x), self._y(y)
        if xt.shape[0] != yt.shape[0]:
            raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
        gen = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else int(seed))
        w = self.weights
        idx = self.neighborhood_of(yt)
        base, f, ld = self._phi(xt, idx)
        groups, inv, counts = torch.unique(idx, return_inverse=True, return_counts=True)
        err = (base - yt).norm(dim=1)
        per = torch.zeros(len(groups), dtype=err.dtype, device=err.device).index_add(0, inv, err) / counts
        out = {"mse": per.mean()}
        nan = torch.full((), float("nan"), dtype=xt.dtype, device=xt.device)
        zero = torch.zeros((), dtype=xt.dtype, device=xt.device)
        keep = counts[inv] >= 2
        if bool(keep.any()):
            xk, yk, fk, ik = xt[keep], yt[keep], f[keep], idx[keep]
            ug, ginv = torch.unique(ik, return_inverse=True)
            per_group = [self._stats(fk[ginv == g]) for g in range(len(ug))]
            S = [torch.stack([st[j] for st in per_group])[ginv] for j in range(4)]
            if any(w[k] != 0 for k in ("kl_bwd", "kl_fwd", "dist")):
                M = self.oversample
                rep = torch.arange(len(ik), device=xt.device).repeat_interleave(M)
                fg = self._draw(S[0][rep], S[1][rep], S[2][rep], S[3][rep], gen)
                xg = self._phi_inv(yk[rep], fg, ik[rep])
                gi = ik[rep]
                kb, kf, ds = [], [], []
                for g in ug:
                    real, fake = xk[ik == g], xg[gi == g]
                    kb.append(_kl(fake, real))
                    kf.append(_kl(real, fake))
                    ds.append(_nn_dist(fake, real, False).mean())
                out["kl_bwd"], out["kl_fwd"], out["dist"] = torch.stack(kb).mean(), torch.stack(kf).mean(), torch.stack(ds).mean()
            else:
                out.update(kl_bwd=nan, kl_fwd=nan, dist=nan)
            if w["nll"] != 0:
                nll = -self._log_prior(fk, *S) - self._data_log_det(ld[keep])
                pg = torch.zeros(len(ug), dtype=nll.dtype, device=nll.device).index_add(0, ginv, nll)
                out["nll"] = (pg / torch.bincount(ginv, minlength=len(ug))).mean()
            else:
                out["nll"] = nan
        else:
            out.update({k: zero if w[k] != 0 else nan for k in ("kl_bwd", "kl_fwd", "dist", "nll")})
        out["total"] = sum(w[k] * out[k] for k in LOSS_NAMES if w[k] != 0)
        return out

    def log_prior(self, f: Any, y: Any) -> torch.Tensor:
        """``log p_F(f)``: the log-density of fiber coordinates ``f`` (N, fiber_dim) under the
        (calibrated) fiber prior of the neighbourhood of each base point ``y`` (N, base_dim), the
        density :meth:`sample_fiber` draws from. A circle factor ``u = r (cos a, sin a)``,
        ``r ~ N(rm, rs)``, ``a ~ U[0, 2 pi)``, has the plane density
        ``[N(|u|; rm, rs) + N(-|u|; rm, rs)] / (2 pi |u|)`` (a negative ``r`` lands at angle ``a + pi``)."""
        self._require_fitted()
        ft, yt = self._as(f, self.fiber_dim, "f", "fiber"), self._y(y)
        if ft.shape[0] != yt.shape[0]:
            raise ValueError(f"f has {ft.shape[0]} rows but y has {yt.shape[0]}; pass one base point per fiber coordinate.")
        k = self.neighborhood_of(yt)
        return self._log_prior(ft, self.prior_mean[k], self.prior_std[k], self.radius_mean[k], self.radius_std[k])

    def _log_prior(self, f: torch.Tensor, m, s, rm, rs) -> torch.Tensor:
        """``log p_F(f)`` for prior statistics ``m, s`` (rows, F) and ``rm, rs`` (rows, C)."""
        C = self.n_circles
        zg = (f[:, 2 * C :] - m[:, 2 * C :]) / s[:, 2 * C :]
        out = -(0.5 * zg * zg + torch.log(s[:, 2 * C :])).sum(1) - 0.5 * zg.shape[1] * math.log(2 * math.pi)
        if C:
            rho = f[:, : 2 * C].reshape(f.shape[0], C, 2).norm(dim=-1).clamp_min(1e-30)
            a, b = (rho - rm) / rs, (rho + rm) / rs
            lp = torch.logaddexp(-0.5 * a * a, -0.5 * b * b) - torch.log(rs) - 0.5 * math.log(2 * math.pi) \
                - torch.log(2 * math.pi * rho)
            out = out + lp.sum(1)
        return out

    def nll(self, x: Any, y: Any) -> torch.Tensor:
        """Per-point ``-log p_F(f) - log|det d phi / d x|`` with ``(b, f) = phi(x)`` in the chart of
        the true base point ``y``, under the calibrated prior: the ``nll`` training term of
        :meth:`losses` (there with the batch's prior statistics), in data units. Differentiable."""
        self._require_fitted()
        xt, yt = self._x(x), self._y(y)
        if xt.shape[0] != yt.shape[0]:
            raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
        k = self.neighborhood_of(yt)
        _, f, ld = self._phi(xt, k)
        lp = self._log_prior(f, self.prior_mean[k], self.prior_std[k], self.radius_mean[k], self.radius_std[k])
        return -lp - self._data_log_det(ld)

    def _data_log_det(self, ld: torch.Tensor) -> torch.Tensor:
        """The flow's log-determinant converted to ``x`` in data units -> (base in base units, f)."""
        return ld - self.total_dim * torch.log(self.x_scale) + self.base_dim * torch.log(self.y_scale)

    def fit(self, x: Any, y: Any, *, epochs: int = 120, lr: float = 2e-3, nbhd_batch: int = 5,
            points_per_nbhd: int = 128, seed: int | None = None, refit_neighborhoods: bool = False,
            standardize: bool = True, clip: float | None = 10.0, final_lr: float | None = 0.01,
            progress: bool | None = None) -> BundleHistory:
        """Train with Adam as Courts & Kvinge: each epoch visits every neighbourhood once, in
        batches of ``nbhd_batch`` neighbourhoods (theirs 5) with up to ``points_per_nbhd`` points
        each (theirs 400), minimising the weighted :meth:`losses`. Fits the neighbourhoods first
        (unless already fitted and ``refit_neighborhoods`` is False) and calibrates the fiber prior
        at the end. Theirs: lr 1e-4 for 2000 epochs (their step decay never triggers); the
        defaults here are for short CPU runs: cosine decay of the rate to ``final_lr * lr``
        (``None``: constant) and gradient norms clipped at ``clip`` (``None``: none), both ours.
        Seeded; a progress bar only on a terminal. Returns a :class:`BundleHistory`."""
        xt, yt = self._x(x), self._y(y)
        if xt.shape[0] != yt.shape[0]:
            raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
        epochs = check_int(epochs, "epochs", 1)
        nbhd_batch = check_int(nbhd_batch, "nbhd_batch", 1)
        points_per_nbhd = check_int(points_per_nbhd, "points_per_nbhd", 2)
        seed = self.seed if seed is None else check_int(seed, "seed", 0)
        if refit_neighborhoods or not bool(self.fitted):
            self.fit_neighborhoods(yt, xt, seed=seed, standardize=standardize)
        idx = self.neighborhood_of(yt).cpu().numpy()
        members = [np.flatnonzero(idx == k) for k in range(self.n_neighborhoods)]
        members = [m for m in members if len(m)]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(self.flow.parameters(), lr=lr)
        n_steps = epochs * math.ceil(len(members) / nbhd_batch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps, eta_min=lr * final_lr) \
            if final_lr is not None else None
        hist = {k: [] for k in (*LOSS_NAMES, "total")}
        steps = 0
        t0 = time.time()
        small = sum(p.numel() for p in self.parameters()) < 1_000_000
        from tqdm import tqdm

        bar = tqdm(range(epochs), desc="BundleNetwork.fit", disable=not show_progress(progress), leave=False)
        was_training = self.training
        self.train()
        try:
            with single_thread(self._device.type == "cpu" and small):
                for _ in bar:
                    order = rng.permutation(len(members))
                    sums = {k: 0.0 for k in hist}
                    nb = 0
                    for s in range(0, len(order), nbhd_batch):
                        sel = []
                        for j in order[s : s + nbhd_batch]:
                            m = members[j]
                            sel.append(m if len(m) <= points_per_nbhd else rng.choice(m, points_per_nbhd, replace=False))
                        b = torch.as_tensor(np.concatenate(sel), device=xt.device)
                        L = self.losses(xt[b], yt[b], generator=gen)
                        opt.zero_grad(set_to_none=True)
                        L["total"].backward()
                        if clip is not None:
                            nn.utils.clip_grad_norm_(self.flow.parameters(), clip)
                        opt.step()
                        if sched is not None:
                            sched.step()
                        steps += 1
                        nb += 1
                        for k in hist:
                            sums[k] += float(L[k].detach())
                    for k in hist:
                        hist[k].append(sums[k] / max(nb, 1))
                    bar.set_postfix(total=f"{hist['total'][-1]:.3g}")
        finally:
            self.train(was_training)
        self.calibrate_prior(xt, yt)
        return BundleHistory(losses={k: np.asarray(v) for k, v in hist.items()}, weights=dict(self.weights),
                             epochs=epochs, steps=steps, seconds=time.time() - t0, lr=float(lr), seed=seed)

    # ----------------------------------------------------------------- the diagram

    def _phi_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``phi`` as a map of values of ``Total -> Base x Fiber`` (chart by :meth:`chart_of`)."""
        return self.trivialize(x)

    def _phi_inv_value(self, bf: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``phi^{-1}`` as a map of values of ``Base x Fiber -> Total``."""
        return self.inverse(bf[0], bf[1])

    def diagram(self, *, tol: float = 1e-6):
        """The bundle as a :class:`~shapelens.structure.diagram.Diagram` built from
        :mod:`shapelens.structure` pieces.

        Objects: ``Total`` (the data, ``total_dim``), ``Base``, ``Fiber``, ``Base x Fiber`` and
        ``Total x Base`` (data paired with its true base points: the graph of the many-to-one map
        on data). Morphisms: ``phi: Total -> Base x Fiber`` (the local trivialization, chart by
        :meth:`chart_of`), ``phi_inv: Base x Fiber -> Total`` (``phi.inverse``), the product
        projections ``p_B``, ``p_F`` of ``Base x Fiber`` and ``p_E``, ``pi`` of ``Total x Base``
        (``pi`` is the bundle projection as the data gives it: each example's true base point).
        Equations:

        * ``"p_B . phi = pi"``: ``p_E >> phi >> p_B == pi`` on ``Total x Base``, the defining
          triangle of a local trivialization (Courts & Kvinge's ``mse`` loss measures the same
          thing, unsquared, with the chart of the true base point);
        * ``"phi^-1 . phi = id"``: ``phi >> phi_inv == id_Total``, exact wherever the point has a
          consistent chart (see :meth:`chart_of`).

        ``net.diagram().check({"Total x Base": (x, y)})`` (or :meth:`check`) gives their errors;
        ``diagram.model("Total", "Base")`` is the learned projection ``phi >> p_B`` as one module
        (``phi_inv`` is declared ``phi``'s inverse, so the pair makes no cycle)."""
        from shapelens.structure.diagram import Diagram
        from shapelens.structure.morphisms import Morphism, projection

        self._require_fitted()
        phi = Morphism(self._phi_value, self.total_space, self.chart_space, "phi")
        phi_inv = Morphism(self._phi_inv_value, self.chart_space, self.total_space, "phi_inv")
        phi.inverse = phi_inv
        p_B = projection(self.chart_space, 0, name="p_B")
        p_F = projection(self.chart_space, 1, name="p_F")
        p_E = projection(self.labelled_space, 0, name="p_E")
        pi = projection(self.labelled_space, 1, name="pi")
        d = Diagram("bundle network")
        d.add(p_E, pi, phi, phi_inv, p_B, p_F)
        d.commutes(d.path(p_E, phi, p_B), d.path(pi), name="p_B . phi = pi", tol=tol)
        d.commutes(d.path(phi, phi_inv), "Total", name="phi^-1 . phi = id", tol=tol)
        return d

    def check(self, x: Any, y: Any, *, tol: float = 1e-6):
        """``self.diagram(tol=tol).check({"Total x Base": (x, y)})``: the relative errors of the
        bundle's equations on data ``x`` with true base points ``y`` (a
        :class:`~shapelens.structure.diagram.DiagramCheck`)."""
        xt, yt = self._x(x), self._y(y)
        if xt.shape[0] != yt.shape[0]:
            raise ValueError(f"x has {xt.shape[0]} points but y has {yt.shape[0]}; pass one base point per data point.")
        return self.diagram(tol=tol).check({self.labelled_space.name: (xt.detach(), yt.detach())})
