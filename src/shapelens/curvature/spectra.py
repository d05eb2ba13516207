"""Spectral algorithms over symmetric linear operators: Lanczos eigenvalues, stochastic traces."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_int
from .._results import Result

__all__ = ["eigenvalues", "Eigen", "trace", "TraceEstimate", "spectral_density", "SpectralDensity", "diagonal"]


def _matvec(op, v: torch.Tensor) -> torch.Tensor:
    if hasattr(op, "matvec"):
        return op.matvec(v)
    return op @ v


def _dim(op) -> int:
    return int(op.shape[0])


@dataclass(frozen=True)
class Eigen(Result):
    """Eigenvalues (ascending within each requested end), optional eigenvectors (columns) and
    the residual norms ``|A u - lambda u|`` that certify each pair."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    n_matvec: int
    eigenvectors: np.ndarray | None = None
    notes: tuple = ()


def eigenvalues(op, k: int = 5, which: str = "largest", *, tol: float = 1e-6, max_iter: int | None = None,
                seed: int = 0, return_eigenvectors: bool = False, v0=None) -> Eigen:
    """Extreme eigenvalues of a symmetric operator by the Lanczos method with full
    reorthogonalization (Lanczos 1950; Golub & Van Loan, "Matrix Computations", sec. 10.1),
    which needs far fewer products than power iteration for several eigenvalues.

    ``which`` is ``"largest"`` or ``"smallest"`` (algebraic) or ``"both"`` (``k`` from each
    end). Iterates until every wanted Ritz pair has residual ``<= tol * max|theta|`` or the
    Krylov space is the whole space (then the answer is exact). ``v0`` is the start vector
    (default: Gaussian from ``seed``); a warm start from a previous eigenvector (e.g. during
    training) needs fewer products.

    Memory: the Lanczos basis, one vector per product, is kept on the operator's device in
    its precision (float64 for float64 operators, float32 otherwise): ``m * n * 4`` bytes for
    ``m`` products on ``n`` float32 parameters (0.54 GB per product for a 135M-parameter model).
    Cap it with ``max_iter``.
    """
    k = check_int(k, "k", 1)
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}.")
    n = _dim(op)
    if k > n:
        raise ValueError(f"k={k} eigenvalues asked of a {n} x {n} operator; pass k <= {n}.")
    m_max = n if max_iter is None else min(n, check_int(max_iter, "max_iter", 1))
    if v0 is None:
        q0 = torch.randn(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    else:
        q0 = torch.as_tensor(v0).detach().reshape(-1)
        if q0.numel() != n or not bool(torch.isfinite(q0).all()) or float(q0.double().norm()) == 0.0:
            raise ValueError(f"v0 must be a finite, non-zero vector of length {n}; got shape {tuple(q0.shape)}.")
    need = min(k if which != "both" else 2 * k, n)
    theta = S = basis = None
    beta = 0.0
    n_mv = 0
    for alphas, betas, beta, basis in _lanczos(op, q0, m_max):
        n_mv = len(alphas)
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, S = np.linalg.eigh(T)
        idx = _wanted(len(theta), k, which)
        res = np.abs(beta * S[-1, idx])
        scale = max(np.abs(theta).max(), 1e-300)
        if len(theta) >= need and np.all(res <= tol * scale):
            break
    idx = _wanted(len(theta), min(k, len(theta)), which)
    res = np.abs(beta * S[-1, idx])
    vecs = None
    if return_eigenvectors:
        vecs = basis.combine(S[:, idx])
    return Eigen(theta[idx], res, n_mv, vecs, _notes(op))


class _Basis:
    """The Lanczos vectors, stored in column blocks that are never copied as the basis grows,
    on the operator's device and in its precision (float64 for float64 operators, else
    float32). Dot products of long float32 vectors are accumulated in float64."""

    def __init__(self, n: int, device, dtype):
        self.n, self.device, self.dtype = n, device, dtype
        itemsize = torch.finfo(dtype).bits // 8
        self.width = int(max(1, min(32, (64 << 20) // max(1, n * itemsize))))  # blocks of <= 64 MiB
        self.blocks: list[torch.Tensor] = []
        self.count = 0

    def append(self, q: torch.Tensor) -> None:
        j = self.count % self.width
        if j == 0:
            self.blocks.append(torch.empty(self.n, self.width, device=self.device, dtype=self.dtype))
        self.blocks[-1][:, j] = q
        self.count += 1

    def column(self, j: int) -> torch.Tensor:
        return self.blocks[j // self.width][:, j % self.width]

    def _filled(self):
        for b, blk in enumerate(self.blocks):
            yield blk[:, : min(self.width, self.count - b * self.width)]

    def project_out(self, w: torch.Tensor) -> torch.Tensor:
        for C in self._filled():
            w = w - C @ (C.T @ w)
        return w

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> float:
        if self.dtype == torch.float64 or self.n <= 1 << 20:
            return float(torch.dot(a.double(), b.double()))
        step = 1 << 20
        return float(sum(torch.dot(a[i:i + step].double(), b[i:i + step].double()) for i in range(0, self.n, step)))

    def combine(self, S: np.ndarray) -> np.ndarray:
        """``Q @ S`` for the first ``S.shape[0]`` basis vectors, as float64 numpy."""
        out = torch.zeros(self.n, S.shape[1], dtype=torch.float64)
        St = torch.from_numpy(np.ascontiguousarray(S))
        for b, C in enumerate(self._filled()):
            rows = St[b * self.width: b * self.width + C.shape[1]]
            if len(rows):
                out += C[:, : len(rows)].double().cpu() @ rows
        return out.numpy()


def _lanczos(op, q0: torch.Tensor, m_max: int):
    """Lanczos recurrence with full reorthogonalization, yielding after every step
    ``(alphas, betas, beta_next, basis)``: the tridiagonal so far, the next off-diagonal
    (the residual scale of the Ritz pairs) and the orthonormal basis (:class:`_Basis`).
    Stops early when the Krylov space is invariant (``beta_next`` ~ 0)."""
    dt = _op_dtype(op)
    store = torch.float64 if dt == torch.float64 else torch.float32
    device = getattr(op, "device", torch.device("cpu"))
    basis = _Basis(_dim(op), device, store)
    q0 = q0.detach().to(device=device, dtype=torch.float64)
    basis.append((q0 / q0.norm()).to(store))
    alphas, betas = [], []
    beta = 0.0
    for j in range(m_max):
        q = basis.column(j)
        w = _matvec(op, q.to(dt)).detach().to(device=device, dtype=store).reshape(-1)
        a = basis.dot(w, q)
        alphas.append(a)
        w = w - a * q - (beta * basis.column(j - 1) if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalization, twice is enough (Parlett)
            w = basis.project_out(w)
        beta = math.sqrt(max(basis.dot(w, w), 0.0))
        yield alphas, betas, beta, basis
        if beta <= 1e-12 * max(abs(x) for x in alphas) or j + 1 == m_max:
            return
        betas = betas + [beta]
        basis.append(w / beta)


@dataclass(frozen=True)
class SpectralDensity(Result):
    """Eigenvalue density by stochastic Lanczos quadrature: Ritz ``nodes`` and ``weights``
    (one row per random vector; each row of weights sums to 1) and the Gaussian-smoothed
    ``density`` on ``grid``."""

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    notes: tuple = ()
    n_matvec: int = 0

    def plot(self, ax=None):
        """Log-density against eigenvalue, the way Ghorbani et al. show Hessian spectra."""
        ax = self._axes(ax, (5, 3.5))
        top = float(np.max(self.density)) if self.density.size else 1.0
        ax.semilogy(self.grid, np.maximum(self.density, 1e-300))
        ax.set_ylim(top * 1e-7, top * 3)  # seven decades: the outliers' mass, not Gaussian tails
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        ax.set_title("Spectral density (SLQ)")
        ax.grid(alpha=0.3)
        return ax


def spectral_density(op, n_vectors: int = 5, n_iter: int = 80, *, sigma: float | None = None,
                     grid_size: int = 1000, seed: int = 0) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature (Golub &
    Meurant 1994; Lin, Saad & Yang 2016; for neural-network Hessians Ghorbani, Krishnan & Xiao
    2019, "An investigation into neural net optimization via Hessian eigenvalue density").

    For each of ``n_vectors`` Rademacher starting vectors, ``n_iter`` Lanczos steps give a
    Gauss quadrature: Ritz values (nodes) with weights the squared first components of the
    Ritz vectors. Averaged, ``sum_i w_i f(theta_i)`` estimates ``tr f(A) / n``. The density is
    the quadrature smoothed by Gaussians of width ``sigma`` (default: 1% of the spectral
    range).
    """
    n_vectors = check_int(n_vectors, "n_vectors", 1)
    n = _dim(op)
    m = min(check_int(n_iter, "n_iter", 2), n)
    g = torch.Generator().manual_seed(int(seed))
    nodes, weights = [], []
    n_mv = 0
    for _ in range(n_vectors):
        v = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
        for alphas, betas, _, _ in _lanczos(op, v, m):
            pass
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        th, S = np.linalg.eigh(T)
        n_mv += len(alphas)
        pad = m - len(th)  # an invariant subspace found early: exact quadrature, pad with zero weight
        nodes.append(np.r_[th, np.full(pad, th[-1])])
        weights.append(np.r_[S[0] ** 2, np.zeros(pad)])
    nodes, weights = np.array(nodes), np.array(weights)
    lo, hi = float(nodes.min()), float(nodes.max())
    width = max(hi - lo, 1e-12)
    sig = 0.01 * width if sigma is None else float(sigma)
    if not sig > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    grid = np.linspace(lo - 0.05 * width - 3 * sig, hi + 0.05 * width + 3 * sig, check_int(grid_size, "grid_size", 10))
    dens = (weights[..., None] * np.exp(-0.5 * ((grid - nodes[..., None]) / sig) ** 2)).sum(axis=(0, 1))
    dens /= n_vectors * sig * math.sqrt(2 * math.pi)
    return SpectralDensity(nodes, weights, grid, dens, sig, _notes(op), n_mv)


def diagonal(op, samples: int = 100, seed: int = 0) -> np.ndarray:
    """Diagonal of a symmetric operator by the stochastic estimator of Bekas, Kokiopoulou &
    Saad (2007): ``E[z * (A z)]`` over Rademacher ``z`` (unbiased; variance falls as
    ``1/samples`` and with the off-diagonal mass). Use ``op.to_dense()`` for small blocks."""
    samples = check_int(samples, "samples", 1)
    n = _dim(op)
    g = torch.Generator().manual_seed(int(seed))
    acc = torch.zeros(n, dtype=torch.float64)
    dt = _op_dtype(op)
    for _ in range(samples):
        z = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
        acc += z * _matvec(op, z.to(dt)).detach().cpu().double()
    return (acc / samples).numpy()


def _notes(op) -> tuple:
    """Notes an operator carries about how it was built (e.g. excluded parameters)."""
    return tuple(getattr(op, "notes", ()))


def _op_dtype(op):
    return getattr(op, "dtype", torch.float64)


def _wanted(m: int, k: int, which: str) -> np.ndarray:
    k = min(k, m)
    if which == "largest":
        return np.arange(m - k, m)
    if which == "smallest":
        return np.arange(0, k)
    lo = np.arange(0, k)
    hi = np.arange(max(k, m - k), m)
    return np.concatenate([lo, hi])


@dataclass(frozen=True)
class TraceEstimate(Result):
    """A stochastic trace estimate with its standard error."""

    trace: float
    std_error: float
    method: str
    n_matvec: int
    notes: tuple = ()


def trace(op, method: str = "hutch++", samples: int = 60, seed: int = 0) -> TraceEstimate:
    """Trace of a symmetric operator from ``samples`` matrix-vector products.

    * ``"hutchinson"``: mean of ``z^T A z`` over Rademacher vectors (Hutchinson 1989);
      standard error from their spread.
    * ``"hutch++"``: Meyer, Musco, Musco & Woodruff (2021), "Hutch++: optimal stochastic
      trace estimation": a third of the products find the dominant subspace ``Q`` (exact
      part ``tr(Q^T A Q)``), the rest run Hutchinson on the deflated remainder; far lower
      variance when the spectrum decays, as Hessian spectra do.
    """
    samples = check_int(samples, "samples", 2)
    n = _dim(op)
    g = torch.Generator().manual_seed(int(seed))
    dt = _op_dtype(op)

    def rademacher(m):
        return (torch.randint(0, 2, (n, m), generator=g).double() * 2 - 1)

    def apply(M):
        return torch.stack([_matvec(op, M[:, j].to(dt)).detach().cpu().double() for j in range(M.shape[1])], dim=1)

    if method == "hutchinson":
        Z = rademacher(samples)
        vals = (Z * apply(Z)).sum(0).numpy()
        return TraceEstimate(float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(samples)), method, samples, _notes(op))
    if method == "hutch++":
        if samples < 6:
            raise ValueError("hutch++ needs samples >= 6 (a third for the subspace, the rest for the remainder).")
        s = samples // 3
        m_rest = samples - 2 * s
        Q, _ = torch.linalg.qr(apply(rademacher(s)))
        exact = float(torch.trace(Q.T @ apply(Q)))
        G = rademacher(m_rest)
        G = G - Q @ (Q.T @ G)
        vals = (G * apply(G)).sum(0).numpy()
        return TraceEstimate(exact + float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(m_rest)), method,
                             2 * s + m_rest, _notes(op))
    raise ValueError(f"method must be 'hutchinson' or 'hutch++', got {method!r}.")
