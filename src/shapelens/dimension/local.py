"""Local intrinsic dimension per point."""

from __future__ import annotations

import numpy as np

from .._checks import as_points, check_int, warn
from ..neighbors import knn

__all__ = ["local_dimension", "lid_from_distances", "nonzero_neighbour_distances"]


def nonzero_neighbour_distances(X, k: int, reference=None, *, device="auto", memory_budget=None) -> np.ndarray:
    """The ``k`` smallest *non-zero* neighbour distances of each row, ``(N, k)`` float64,
    and the number of zero distances each row had.

    Zero distances are the point itself (when it is in ``reference``) or exact duplicates;
    skipping them is the "first non-zero neighbour" rule that keeps log-distance
    estimators finite. Rows with fewer than ``k`` non-zero neighbours get ``nan`` in the
    missing places.
    """
    extra = 1 if reference is not None else 0
    kk = k + extra
    while True:
        res = knn(X, kk, reference=reference, device=device, memory_budget=memory_budget)
        dist = res.distances.numpy()
        zeros = (dist == 0).sum(axis=1)
        n_avail = X.shape[0] - 1 if reference is None else reference.shape[0]
        need = k + int(zeros.max())
        if need <= kk or kk >= n_avail:
            break
        kk = min(need, n_avail)
    # stable partition: non-zero distances first, in ascending order
    order = np.argsort(dist == 0, axis=1, kind="stable")
    dist = np.take_along_axis(dist, order, axis=1)
    nz = np.minimum(dist.shape[1] - zeros, k)
    out = np.full((dist.shape[0], k), np.nan)
    cols = np.arange(k)[None, :]
    mask = cols < nz[:, None]
    out[mask] = dist[:, :k][mask]
    return out, zeros


def lid_from_distances(dist: np.ndarray) -> np.ndarray:
    """Ma et al. (2018)'s maximum-likelihood LID from each row's ``k`` smallest non-zero
    neighbour distances, ascending: ``-k / sum_i log(r_i / r_k)``.

    Rows containing ``nan`` (fewer than ``k`` distinct neighbours) give 0; rows whose ``k``
    distances are all equal give ``inf``. Shared by :func:`local_dimension` and the LID
    features of :class:`shapelens.detect.LIDDetector`.
    """
    dist = np.asarray(dist, dtype=np.float64)
    k = dist.shape[1]
    valid = np.all(np.isfinite(dist), axis=1)
    lid = np.zeros(dist.shape[0])
    if valid.any():
        d = dist[valid]
        s = np.log(d / d[:, -1:]).sum(axis=1)  # <= 0, zero only if all k distances are equal
        with np.errstate(divide="ignore"):
            lid[valid] = np.where(s < 0, -k / s, np.inf)
    return lid


def local_dimension(X, k: int = 20, reference=None, *, device="auto", memory_budget=None) -> np.ndarray:
    """Local intrinsic dimension (LID) of every point by the maximum-likelihood estimator of
    Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey (2018),
    "Characterizing adversarial subspaces using local intrinsic dimensionality", ICLR
    (after Amsaleg et al. 2015 and Levina & Bickel 2005):

        LID(x) = - ( 1/k * sum_{i=1..k} log( r_i(x) / r_k(x) ) )^-1

    with ``r_i(x)`` the distance from ``x`` to its ``i``-th nearest neighbour.

    Parameters
    ----------
    X : ``(N, D)`` points whose LID is wanted.
    k : neighbours per point (Ma et al. use 20 on mini-batches of 100).
    reference : optional ``(M, D)`` batch the neighbours are taken from (Ma et al. estimate
        each example's LID against the clean mini-batch). When ``None``, neighbours come
        from ``X`` itself. Either way a neighbour at distance exactly 0 (the point itself or
        an exact duplicate) is skipped: the first ``k`` non-zero neighbours are used, with a
        warning when duplicates were present.

    Returns
    -------
    ``np.ndarray`` of shape ``(N,)``, float64. A point whose neighbours all coincide with it
    (constant data) gets LID 0, with a warning.
    """
    k = check_int(k, "k", 2)
    Xt = as_points(X, name="X", min_points=1 if reference is not None else k + 1,
                   why=f"k={k} neighbours need k+1 points")
    Rt = None
    if reference is not None:
        Rt = as_points(reference, name="reference", min_points=k, why=f"k={k} neighbours need at least k reference points")
    dist, zeros = nonzero_neighbour_distances(Xt, k, Rt, device=device, memory_budget=memory_budget)
    own = 1 if reference is not None else 0
    n_dup = int(((zeros - own) > 0).sum()) if reference is None else int((zeros > 1).sum())
    if n_dup:
        warn(f"{n_dup} points have exact duplicates among their neighbours; the first k non-zero neighbours were used.")
    lid = lid_from_distances(dist)
    valid = np.all(np.isfinite(dist), axis=1)
    if not valid.all():
        warn(f"{int((~valid).sum())} points have fewer than k={k} distinct neighbours (constant data around them); their LID is 0.")
    if np.isinf(lid).any():
        warn(f"{int(np.isinf(lid).sum())} points have all k neighbours at the same distance; their LID is unbounded (inf). Use a larger k.")
    return lid
