"""Global intrinsic-dimension estimators (scikit-learn style)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize, special

from .._checks import check_int
from ..neighbors import knn, radius_counts
from ._base import DimensionEstimator, finite_or_raise, neighbour_distances

__all__ = ["TwoNN", "MLE", "GRIDE", "LocalPCA", "CorrelationDimension", "gride_mle"]


class TwoNN(DimensionEstimator):
    """Two-nearest-neighbour estimator of Facco, d'Errico, Rodriguez & Laio (2017),
    "Estimating the intrinsic dimension of datasets by a minimal neighborhood information",
    Scientific Reports 7:12140.

    For each point the ratio ``mu = r2 / r1`` of its second to first neighbour distance is
    Pareto distributed, ``F(mu) = 1 - mu^-d``, when the density is locally constant. The
    ``discard_fraction`` largest ratios (most affected by density changes) are dropped and
    ``d`` is the slope, through the origin, of ``-log(1 - F_emp(mu))`` against ``log(mu)``
    (``method="linear"``, the paper's estimator, with ``F_emp(mu_(i)) = i / N``), or the
    maximum-likelihood rate with the discarded ratios as censored (``method="mle"``).

    Parameters
    ----------
    discard_fraction : fraction of the largest ratios dropped (paper: 0.1).
    method : ``"linear"`` (default, as in the paper and scikit-dimension) or ``"mle"``.
    device, memory_budget : passed to :func:`shapelens.neighbors.knn`.

    Fitted attributes
    -----------------
    dimension_, dimension_std_ (``d / sqrt(n_kept)``, the Cramer-Rao standard error of the
    Pareto rate), log_mu_ and neg_log_survival_ (the points of the linear fit).
    """

    def __init__(self, discard_fraction: float = 0.1, method: str = "linear", device="auto", memory_budget=None):
        self.discard_fraction = discard_fraction
        self.method = method
        self.device = device
        self.memory_budget = memory_budget

    def _min_points(self) -> int:
        return 3

    def _fit(self, X):
        if not 0.0 <= float(self.discard_fraction) < 1.0:
            raise ValueError(f"discard_fraction must be in [0, 1), got {self.discard_fraction}.")
        if self.method not in ("linear", "mle"):
            raise ValueError(f"method must be 'linear' or 'mle', got {self.method!r}.")
        dist = neighbour_distances(X, 2, self.device, self.memory_budget)
        self.dimension_, self.dimension_std_, self.log_mu_, self.neg_log_survival_ = twonn_from_distances(
            dist[:, 0], dist[:, 1], self.discard_fraction, self.method
        )

    def _fit_constant(self):
        self.log_mu_ = np.zeros(0)
        self.neg_log_survival_ = np.zeros(0)


def twonn_from_distances(r1, r2, discard_fraction=0.1, method="linear"):
    """TwoNN from first and second neighbour distances (Facco et al. 2017)."""
    mu = np.sort(r2 / r1)
    n = mu.shape[0]
    n_keep = int(n * (1.0 - discard_fraction))
    if n_keep < 2:
        raise ValueError(
            f"discard_fraction={discard_fraction} leaves {n_keep} of {n} ratios; TwoNN needs at least 2: "
            "pass more points or a smaller discard_fraction."
        )
    if method == "linear":
        n_keep = min(n_keep, n - 1)  # F_emp = 1 at the last ratio: -log(1 - F) is infinite there
    mu = mu[:n_keep]
    log_mu = np.log(mu)
    f_emp = np.arange(1, n_keep + 1) / n
    y = -np.log1p(-f_emp)
    if method == "linear":
        d = float(np.dot(log_mu, y) / np.dot(log_mu, log_mu))
    else:
        d = float((n_keep - 1) / (log_mu.sum() + (n - n_keep) * log_mu[-1]))
    d = finite_or_raise(d, "the TwoNN slope")
    return d, d / math.sqrt(n_keep), log_mu, y


class MLE(DimensionEstimator):
    """Maximum-likelihood estimator of Levina & Bickel (2005), "Maximum likelihood estimation
    of intrinsic dimension", NeurIPS 17, averaged over points as MacKay & Ghahramani (2005)
    recommend ("Comments on 'Maximum likelihood estimation of intrinsic dimension'").

    Per point ``m_k(x) = [ 1/(k-1) * sum_{j<k} log(T_k(x) / T_j(x)) ]^-1`` from its ``k``
    nearest-neighbour distances ``T_1..T_k``; the global estimate is the inverse of the mean
    of ``1 / m_k(x)`` (averaging inverses, not the estimates, removes the upward bias of the
    plain mean). With ``k`` a range ``(k1, k2)`` the estimate is averaged over ``k`` in it,
    as in Levina & Bickel.

    Fitted attributes: dimension_, dimension_std_ (standard error from the spread of the
    per-point inverses; it ignores the dependence between overlapping neighbourhoods, so it
    is a lower bound), pointwise_ (``m_k(x)`` per distinct point).
    """

    def __init__(self, k: int | tuple[int, int] = 20, device="auto", memory_budget=None):
        self.k = k
        self.device = device
        self.memory_budget = memory_budget

    def _ks(self) -> list[int]:
        if isinstance(self.k, (tuple, list)):
            if len(self.k) != 2:
                raise ValueError(f"k must be an int or a (k1, k2) range, got {self.k!r}.")
            k1, k2 = (check_int(v, "k", 2) for v in self.k)
            if k1 > k2:
                raise ValueError(f"k range must be increasing, got {self.k!r}.")
            return list(range(k1, k2 + 1))
        return [check_int(self.k, "k", 2)]

    def _min_points(self) -> int:
        return max(self._ks()) + 1

    def _requirement(self) -> str:
        return f"MLE with k={max(self._ks())} needs k+1 points"

    def _fit(self, X):
        ks = self._ks()
        dist = neighbour_distances(X, max(ks), self.device, self.memory_budget)
        estimates, stds, pointwise = [], [], None
        logd = np.log(dist)
        for k in ks:
            inv = (logd[:, k - 1:k] - logd[:, : k - 1]).sum(axis=1) / (k - 1)  # 1/m_k(x)
            inv_mean = float(inv.mean())
            d = 1.0 / inv_mean
            estimates.append(d)
            stds.append(d * d * float(inv.std(ddof=1)) / math.sqrt(len(inv)))
            if k == ks[-1]:
                pointwise = 1.0 / inv
        self.dimension_ = finite_or_raise(float(np.mean(estimates)), "the MLE dimension")
        self.dimension_std_ = float(np.mean(stds))
        self.pointwise_ = pointwise

    def _fit_constant(self):
        self.pointwise_ = np.zeros(1)


def _gride_loglik(d, mu, n1, n2):
    # density of mu = r_{n2}/r_{n1} (Denti et al. 2022, eq. 4):
    # f(mu) = d (mu^d - 1)^(n2-n1-1) / (B(n2-n1, n1) mu^((n2-1) d + 1))
    dn = n2 - n1
    lm = np.log(mu)
    val = (
        len(mu) * (math.log(d) - special.betaln(dn, n1))
        - ((n2 - 1) * d + 1) * lm.sum()
    )
    if dn > 1:
        val += (dn - 1) * np.log(np.expm1(d * lm)).sum()
    return val


_TIE = 1e-6  # relative float32 rounding of a distance ratio


def gride_mle(mu: np.ndarray, n1: int, n2: int, d_max: float = 1e3) -> tuple[float, float]:
    """Maximum-likelihood dimension from generalized ratios ``mu = r_{n2} / r_{n1}``
    (Denti, Doimo, Laio & Mira 2022, "The generalized ratios intrinsic dimension estimator",
    Scientific Reports 12:20005). Returns the estimate and its Cramer-Rao standard error
    (the inverse square root of the observed Fisher information)."""
    mu = np.asarray(mu, dtype=np.float64)
    # tied distances (quantised data) give ratios of exactly 1; float32 distances put them a
    # rounding error either side, so snap those to 1 before deciding what to do with them
    mu = np.where(mu < 1.0 + _TIE, 1.0, mu)
    if n2 - n1 == 1:
        # Pareto: a ratio of 1 is a legitimate sample (log 1 = 0), kept as TwoNN keeps it
        s = float(np.log(mu).sum())
        if mu.size < 2 or s <= 0:
            raise ValueError("GRIDE needs at least 2 neighbour-distance ratios, not all 1; pass more distinct points.")
        d = float(mu.size / s)
        return d, d / math.sqrt(mu.size)
    mu = mu[mu > 1.0]  # for n2 - n1 > 1 a ratio of 1 has zero likelihood: ties are dropped
    if mu.size < 2:
        raise ValueError("GRIDE needs at least 2 neighbour-distance ratios above 1; pass more distinct points.")

    def nll(logd):
        return -_gride_loglik(math.exp(logd), mu, n1, n2)

    # start from the n2-n1 = 1-like closed form, then bounded optimisation in log d
    res = optimize.minimize_scalar(nll, bounds=(math.log(1e-3), math.log(d_max)), method="bounded",
                                   options={"xatol": 1e-10})
    d = float(math.exp(res.x))
    h = max(1e-5 * d, 1e-8)
    f0 = -_gride_loglik(d, mu, n1, n2)
    fp = -_gride_loglik(d + h, mu, n1, n2)
    fm = -_gride_loglik(d - h, mu, n1, n2)
    info = (fp - 2 * f0 + fm) / (h * h)
    std = float(1.0 / math.sqrt(info)) if info > 0 else float("nan")
    return d, std


class GRIDE(DimensionEstimator):
    """Generalized ratios intrinsic dimension estimator (GRIDE) of Denti, Doimo, Laio & Mira
    (2022), Scientific Reports 12:20005, with its multi-scale analysis.

    For neighbour ranks ``n1 < n2`` the ratio ``mu = r_{n2} / r_{n1}`` has a closed-form
    density depending only on ``d``; GRIDE maximises its likelihood. ``n1 = 1, n2 = 2`` is
    the TwoNN likelihood; larger ranks probe larger scales and are far less sensitive to
    noise. ``fit`` estimates the dimension at ``(n1, n2)`` and also the *scale curve*: the
    dimension at ``n1 = 1, 2, 4, ...`` with ``n2 = 2 n1`` up to ``range_max`` neighbours,
    against the mean distance to the ``n2``-th neighbour.

    Fitted attributes: dimension_, dimension_std_ (Cramer-Rao), scale_n1_, scale_distances_,
    scale_dimensions_, scale_dimension_std_.
    """

    def __init__(self, n1: int = 1, n2: int | None = None, range_max: int = 64, device="auto", memory_budget=None):
        self.n1 = n1
        self.n2 = n2
        self.range_max = range_max
        self.device = device
        self.memory_budget = memory_budget

    def _ranks(self):
        n1 = check_int(self.n1, "n1", 1)
        n2 = 2 * n1 if self.n2 is None else check_int(self.n2, "n2", 2)
        if n2 <= n1:
            raise ValueError(f"GRIDE needs n2 > n1, got n1={n1}, n2={n2}.")
        rmax = max(check_int(self.range_max, "range_max", 2), n2)
        return n1, n2, rmax

    def _min_points(self) -> int:
        return self._ranks()[2] + 1

    def _requirement(self) -> str:
        n1, n2, rmax = self._ranks()
        return f"GRIDE with range_max={rmax} (largest neighbour rank) needs range_max+1 points; lower range_max"

    def _fit(self, X):
        n1, n2, rmax = self._ranks()
        dist = neighbour_distances(X, rmax, self.device, self.memory_budget)
        self.dimension_, self.dimension_std_ = gride_mle(dist[:, n2 - 1] / dist[:, n1 - 1], n1, n2)
        a, ns, dims, stds, scales = 1, [], [], [], []
        while 2 * a <= rmax:
            d, s = gride_mle(dist[:, 2 * a - 1] / dist[:, a - 1], a, 2 * a)
            ns.append(a)
            dims.append(d)
            stds.append(s)
            scales.append(float(dist[:, 2 * a - 1].mean()))
            a *= 2
        self.scale_n1_ = np.array(ns)
        self.scale_distances_ = np.array(scales)
        self.scale_dimensions_ = np.array(dims)
        self.scale_dimension_std_ = np.array(stds)

    def _fit_constant(self):
        for name in ("scale_n1_", "scale_distances_", "scale_dimensions_", "scale_dimension_std_"):
            setattr(self, name, np.zeros(0))


class LocalPCA(DimensionEstimator):
    """Local principal component analysis (lPCA), after Fukunaga & Olsen (1971), "An algorithm
    for finding intrinsic dimensionality of data", IEEE Trans. Computers C-20.

    Around ``n_centers`` randomly chosen points, PCA of the ``k`` nearest neighbours (the
    centre included); the local dimension is the number of principal components needed:

    * ``criterion="variance"`` (default): the fewest components whose eigenvalues explain at
      least ``threshold`` (default 0.95) of the local variance;
    * ``criterion="fo"``: Fukunaga-Olsen, the number of eigenvalues above ``alpha`` (default
      0.05) times the largest.

    The global estimate is the mean local dimension; dimension_std_ is its standard error.
    Local PCA over-counts on curved manifolds when ``k`` is large and under-counts when
    ``k`` is too small to span the manifold: it is a linear, scale-dependent estimate.
    Fitted attributes also include ``local_dimensions_`` (one integer per centre).
    """

    def __init__(self, k: int = 50, threshold: float = 0.95, criterion: str = "variance", alpha: float = 0.05,
                 n_centers: int | None = 1000, seed: int = 0, device="auto", memory_budget=None):
        self.k = k
        self.threshold = threshold
        self.criterion = criterion
        self.alpha = alpha
        self.n_centers = n_centers
        self.seed = seed
        self.device = device
        self.memory_budget = memory_budget

    def _min_points(self) -> int:
        return check_int(self.k, "k", 2) + 1

    def _requirement(self) -> str:
        return f"LocalPCA with k={self.k} needs k+1 points"

    def _fit(self, X):
        k = check_int(self.k, "k", 2)
        if self.criterion not in ("variance", "fo"):
            raise ValueError(f"criterion must be 'variance' or 'fo', got {self.criterion!r}.")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}.")
        if not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}.")
        n = X.shape[0]
        g = torch.Generator().manual_seed(int(self.seed))
        if self.n_centers is None or self.n_centers >= n:
            centers = torch.arange(n)
        else:
            centers = torch.randperm(n, generator=g)[: check_int(self.n_centers, "n_centers", 1)]
        idx = knn(X[centers], k - 1, reference=X, device=self.device, memory_budget=self.memory_budget).indices
        # the centre finds itself at distance 0 among the reference; the k-1 others complete the patch
        idx = torch.cat([centers[:, None], idx], dim=1)
        dims = []
        for s in range(0, len(centers), 256):
            P = X[idx[s:s + 256]].double()  # (c, k+?, D)
            P = P - P.mean(dim=1, keepdim=True)
            # eigenvalues of the local covariance = eigenvalues of the (smaller) Gram matrix
            if P.shape[2] < P.shape[1]:
                ev = torch.linalg.eigvalsh(P.transpose(1, 2) @ P)
            else:
                ev = torch.linalg.eigvalsh(P @ P.transpose(1, 2))
            ev = ev.flip(1).clamp(min=0)
            total = ev.sum(dim=1, keepdim=True)
            if self.criterion == "variance":
                frac = ev.cumsum(dim=1) / total.clamp(min=1e-300)
                d = (frac < float(self.threshold) - 1e-12).sum(dim=1) + 1
            else:
                d = (ev > float(self.alpha) * ev[:, :1]).sum(dim=1)
            d = torch.where(total[:, 0] > 0, d, torch.zeros_like(d))
            dims.append(d)
        local = torch.cat(dims).numpy().astype(np.int64)
        self.local_dimensions_ = local
        self.dimension_ = float(local.mean())
        self.dimension_std_ = float(local.std(ddof=1) / math.sqrt(len(local))) if len(local) > 1 else float("nan")

    def _fit_constant(self):
        self.local_dimensions_ = np.zeros(1, dtype=np.int64)


class CorrelationDimension(DimensionEstimator):
    """Correlation dimension of Grassberger & Procaccia (1983), "Measuring the strangeness of
    strange attractors", Physica D 9:189-208.

    The correlation sum ``C(r)`` (fraction of pairs closer than ``r``) scales as ``r^d``;
    ``d`` is the least-squares slope of ``log C(r)`` against ``log r`` over ``n_radii``
    log-spaced radii between the mean distance to the ``k1``-th and to the ``k2``-th
    neighbour (scikit-dimension's CorrInt uses the same two end radii and only those two
    points). Pairs are counted exactly over all pairs of up to ``max_points`` points (a
    seeded random subset beyond that). dimension_std_ is the slope's standard error.
    Fitted attributes also include radii_ and correlation_sum_.
    """

    def __init__(self, k1: int = 10, k2: int = 20, n_radii: int = 8, max_points: int | None = 20000, seed: int = 0,
                 device="auto", memory_budget=None):
        self.k1 = k1
        self.k2 = k2
        self.n_radii = n_radii
        self.max_points = max_points
        self.seed = seed
        self.device = device
        self.memory_budget = memory_budget

    def _min_points(self) -> int:
        return check_int(self.k2, "k2", 2) + 1

    def _requirement(self) -> str:
        return f"CorrelationDimension with k2={self.k2} needs k2+1 points"

    def _fit(self, X):
        k1, k2 = check_int(self.k1, "k1", 1), check_int(self.k2, "k2", 2)
        if k1 >= k2:
            raise ValueError(f"k1 must be smaller than k2, got k1={k1}, k2={k2}.")
        n_radii = check_int(self.n_radii, "n_radii", 2)
        if self.max_points is not None and X.shape[0] > self.max_points:
            g = torch.Generator().manual_seed(int(self.seed))
            X = X[torch.randperm(X.shape[0], generator=g)[: check_int(self.max_points, "max_points", k2 + 1)]]
        dist = neighbour_distances(X, k2, self.device, self.memory_budget)
        r_lo, r_hi = float(dist[:, k1 - 1].mean()), float(dist[:, k2 - 1].mean())
        if not r_hi > r_lo > 0:
            raise ValueError(f"the k1 and k2 neighbour radii ({r_lo}, {r_hi}) do not span a range; pass distinct k1 < k2 or more varied data.")
        radii = np.geomspace(r_lo, r_hi, n_radii)
        n = X.shape[0]
        counts = radius_counts(X, radii, device=self.device, memory_budget=self.memory_budget)
        c = counts / (n * (n - 1) / 2.0)
        if np.any(c <= 0):
            raise ValueError("no pair lies within the smallest radius; increase k1.")
        lx, ly = np.log(radii), np.log(c)
        A = np.vstack([lx, np.ones_like(lx)]).T
        coef, res, *_ = np.linalg.lstsq(A, ly, rcond=None)
        slope = float(coef[0])
        resid = ly - A @ coef
        dof = max(1, len(lx) - 2)
        se = math.sqrt(float(resid @ resid) / dof / float(((lx - lx.mean()) ** 2).sum())) if len(lx) > 2 else float("nan")
        self.dimension_ = finite_or_raise(slope, "the correlation-sum slope")
        self.dimension_std_ = se
        self.radii_ = radii
        self.correlation_sum_ = c

    def _fit_constant(self):
        self.radii_ = np.zeros(0)
        self.correlation_sum_ = np.zeros(0)
