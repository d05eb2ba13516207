"""Exact k-nearest neighbours in torch, chunked to a memory budget, on CPU or CUDA.

Every distance-based estimator in shapelens shares this one kernel.

How it works
------------
Squared Euclidean distances are computed blockwise as ``|x|^2 + |y|^2 - 2 x.y`` with a
matrix product (the data are centred first, which keeps the float32 cancellation error
small). For the self-kNN of one point cloud the distance matrix is symmetric, so only the
blocks on and above the diagonal are computed and each block updates the running top-k of
both its row block and its column block: half the matrix products of the naive method.
The ``k + margin`` best candidates of each point are sorted and cut to ``k``. Their
distances come from the centred float32 expansion (within 1e-5 relative of a float64
search in the tests), except in rows where a candidate is so close that
cancellation could matter (near or exact duplicates): those rows are re-measured directly
as ``|x - y|`` in the caller's precision, so duplicates are exactly 0 and distinct points
never are. The neighbour *set* is exact except where two candidates tie to within float32
rounding.

Peak extra memory is bounded by the budget: no ``N x N`` matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import as_points, check_int, resolve_device, show_progress

__all__ = ["knn", "KNN", "default_memory_budget", "pairwise_distances", "radius_counts"]

_MARGIN = 8  # extra candidates re-measured exactly to make the float32 ranking safe
_MIN_BLOCK = 64
_MAX_BLOCK = {"cpu": 2048}  # measured: on CPU smaller blocks skip more of the lower triangle
_MAX_BLOCK_DEFAULT = 8192  # accelerators want large matrix products


@dataclass(frozen=True)
class KNN:
    """k-nearest-neighbour result.

    Unpacks as ``distances, indices = knn(X, k)``.

    Attributes
    ----------
    distances : torch.Tensor, float64, shape ``(N, k)``, ascending per row, on the CPU.
    indices : torch.Tensor, int64, shape ``(N, k)``, into the reference set (``X`` itself
        for a self-kNN, whose own row is excluded).
    duplicate_mask : torch.Tensor, bool, shape ``(N,)``: the point has another point at
        distance exactly zero (an exact duplicate).
    """

    distances: torch.Tensor
    indices: torch.Tensor
    duplicate_mask: torch.Tensor

    @property
    def n_duplicates(self) -> int:
        """Number of points that have an exact duplicate elsewhere in the reference set."""
        return int(self.duplicate_mask.sum())

    def __iter__(self):
        yield self.distances
        yield self.indices


def default_memory_budget(device: torch.device) -> int:
    """Bytes that the chunked kernels may use beyond their inputs and outputs.

    CUDA: a quarter of the free device memory. CPU: a quarter of ``MemAvailable``, capped
    at 2 GiB (larger blocks stop paying off on a CPU long before that).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        avail = 8 << 30
    return int(min(avail // 4, 2 << 30))


def _block_size(budget: int, n: int, d: int, k: int, itemsize: int, device_type: str = "cpu") -> int:
    # per block: the Gram/distance block (b*b), a transposed copy (b*b), top-k outputs,
    # plus the row slices (b*d) twice. Solve 2*b*b*itemsize + 2*b*d*itemsize <= budget.
    a = 2 * itemsize
    bq = 2 * d * itemsize
    b = int((-bq + (bq * bq + 4 * a * budget) ** 0.5) / (2 * a))
    if b < _MIN_BLOCK:
        need = 2 * _MIN_BLOCK * _MIN_BLOCK * itemsize + 2 * _MIN_BLOCK * d * itemsize
        raise MemoryError(
            f"memory_budget={budget} bytes is too small for exact kNN with D={d}: the smallest "
            f"block needs about {need} bytes; raise memory_budget (or leave it at the default)."
        )
    return max(1, min(b, _MAX_BLOCK.get(device_type, _MAX_BLOCK_DEFAULT), n))


def _progress(total: int, desc: str, progress: bool | None):
    return tqdm(total=total, desc=desc, disable=not show_progress(progress), leave=False)


def _merge(run_v, run_i, new_v, new_i, kk):
    """Merge two per-row candidate lists, keeping the kk smallest."""
    v = torch.cat([run_v, new_v], dim=1)
    i = torch.cat([run_i, new_i], dim=1)
    top_v, pos = torch.topk(v, kk, dim=1, largest=False, sorted=False)
    return top_v, torch.gather(i, 1, pos)


def _sq_norms(X, mu, block):
    out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for s in range(0, X.shape[0], block):
        c = X[s:s + block] - mu
        out[s:s + block] = (c * c).sum(dim=1)
    return out


def _candidates_self(X, mu, kk, block, progress):
    """Top-kk candidate indices of every row, from the upper-triangle blocks only.

    ``X`` is centred on the fly (``X - mu`` per block) so no full copy is made.
    """
    n = X.shape[0]
    dev = X.device
    sq = _sq_norms(X, mu, block)
    run_v = torch.full((n, kk), float("inf"), dtype=X.dtype, device=dev)
    run_i = torch.full((n, kk), -1, dtype=torch.int64, device=dev)
    starts = list(range(0, n, block))
    total = len(starts) * (len(starts) + 1) // 2
    with _progress(total, "kNN blocks", progress) as bar:
        for bi, s_i in enumerate(starts):
            e_i = min(s_i + block, n)
            Xi = X[s_i:e_i] - mu
            for s_j in starts[bi:]:
                e_j = min(s_j + block, n)
                Xj = Xi if s_j == s_i else X[s_j:e_j] - mu
                d2 = torch.addmm(sq[s_i:e_i, None], Xi, Xj.T, beta=1.0, alpha=-2.0)
                d2.add_(sq[None, s_j:e_j])
                if s_i == s_j:
                    d2.fill_diagonal_(float("inf"))
                kr = min(kk, e_j - s_j)
                v, p = torch.topk(d2, kr, dim=1, largest=False, sorted=False)
                run_v[s_i:e_i], run_i[s_i:e_i] = _merge(run_v[s_i:e_i], run_i[s_i:e_i], v, p + s_j, kk)
                if s_j != s_i:
                    d2t = d2.T.contiguous()
                    del d2
                    kc = min(kk, e_i - s_i)
                    v, p = torch.topk(d2t, kc, dim=1, largest=False, sorted=False)
                    run_v[s_j:e_j], run_i[s_j:e_j] = _merge(run_v[s_j:e_j], run_i[s_j:e_j], v, p + s_i, kk)
                    del d2t
                bar.update(1)
    return run_v, run_i, sq, sq


def _candidates_ref(Q, R, mu, kk, block, progress):
    nq, nr = Q.shape[0], R.shape[0]
    dev = Q.device
    sq_q = _sq_norms(Q, mu, block)
    sq_r = _sq_norms(R, mu, block)
    run_v = torch.full((nq, kk), float("inf"), dtype=Q.dtype, device=dev)
    run_i = torch.full((nq, kk), -1, dtype=torch.int64, device=dev)
    qs = list(range(0, nq, block))
    rs = list(range(0, nr, block))
    with _progress(len(qs) * len(rs), "kNN blocks", progress) as bar:
        for s_i in qs:
            e_i = min(s_i + block, nq)
            Qi = Q[s_i:e_i] - mu
            for s_j in rs:
                e_j = min(s_j + block, nr)
                d2 = torch.addmm(sq_q[s_i:e_i, None], Qi, (R[s_j:e_j] - mu).T, beta=1.0, alpha=-2.0)
                d2.add_(sq_r[None, s_j:e_j])
                kr = min(kk, e_j - s_j)
                v, p = torch.topk(d2, kr, dim=1, largest=False, sorted=False)
                run_v[s_i:e_i], run_i[s_i:e_i] = _merge(run_v[s_i:e_i], run_i[s_i:e_i], v, p + s_j, kk)
                bar.update(1)
    return run_v, run_i, sq_q, sq_r


_REFINE_CHUNK_BYTES = 32 << 20  # gathered candidates per chunk: cache-friendly, far below any budget
_RISK = 1e4  # re-measure a row when a candidate is closer than this many rounding units


def _finish(Q, R, vals, cand, sq_q, sq_r, k, exclude_self):
    """Sort the candidates, re-measure the rows where float32 cancellation could matter,
    cut to ``k`` and take square roots (float64 on output).

    The expansion ``|q|^2 + |r|^2 - 2 q.r`` of centred float32 points has an absolute error
    of about ``eps32 * (sqrt(D) + 4) * (|q|^2 + |r|^2)``. Where every candidate is far above
    that scale (the usual case) its relative error is about ``1/_RISK`` at worst, and far
    smaller typically;
    rows with a candidate within ``_RISK`` rounding units (near or exact duplicates) are
    re-measured directly as ``|q - r|`` in the caller's precision, so duplicates come out as
    exactly 0 and distinct points as non-zero.
    """
    nq, kk = cand.shape
    d = Q.shape[1]
    valid = cand >= 0
    cc = cand.clamp(min=0)
    vals.masked_fill_(~valid, float("inf"))
    unit = torch.finfo(torch.float32).eps * (d ** 0.5 + 4.0)
    scale = (sq_q[:, None] + sq_r[cc]) * unit
    risky = ((vals < _RISK * scale) & valid).any(dim=1).nonzero().flatten()
    per_row = max(1, kk * d * Q.element_size() * 2)
    rows = max(1, _REFINE_CHUNK_BYTES // per_row)
    vals64 = vals.double()
    for s in range(0, risky.numel(), rows):
        r = risky[s:s + rows]
        diff = R.index_select(0, cc[r].flatten()).view(len(r), kk, d)
        diff.sub_(Q[r][:, None, :])
        exact = torch.linalg.vector_norm(diff, dim=2).double().square()
        exact.masked_fill_(~valid[r], float("inf"))
        if exclude_self:
            exact.masked_fill_(cand[r] == r[:, None], float("inf"))
        vals64[r] = exact
    vals64, order = torch.sort(vals64, dim=1, stable=True)
    dist = vals64[:, :k].clamp_(min=0).sqrt_()
    idx = torch.gather(cc, 1, order[:, :k])
    return dist.cpu(), idx.cpu()


def knn(
    X,
    k: int,
    *,
    reference=None,
    device: str | torch.device | None = "auto",
    memory_budget: int | None = None,
    progress: bool | None = None,
) -> KNN:
    """Exact k-nearest neighbours under the Euclidean distance.

    Parameters
    ----------
    X : array-like ``(N, D)``: the query points.
    k : number of neighbours per point (self excluded).
    reference : optional array-like ``(M, D)``. When given, neighbours of each row of ``X``
        are searched among ``reference`` and nothing is excluded (a query identical to a
        reference point finds it at distance 0). When ``None``, the self-kNN of ``X`` is
        computed and each point's own row is excluded by index, so exact duplicates of a
        point *do* appear at distance 0 and are reported in ``duplicate_mask``.
    device : ``"auto"`` (CUDA when available, or where a CUDA tensor already lives), or an
        explicit device. Results are identical on CPU and CUDA up to float rounding.
    memory_budget : bytes of working memory beyond the inputs and outputs; default
        :func:`default_memory_budget`. No ``N x N`` matrix is materialised for any N.
    progress : show a progress bar (default: only on a terminal).

    Returns
    -------
    KNN with ``distances`` (float64, ascending), ``indices`` (int64) and ``duplicate_mask``,
    all on the CPU.

    Notes
    -----
    Brute force is the right exact method in high dimension, where space-partitioning trees
    degrade to a scan; its cost is that of the ``N x N x D`` matrix product, halved here by
    symmetry for a self-kNN.
    """
    k = check_int(k, "k", 1)
    Xt = as_points(X, name="X", min_points=(k + 1) if reference is None else 1,
                   why=f"k={k} neighbours with the point itself excluded need k+1 points")
    dev = resolve_device(device, like=Xt)
    if memory_budget is None:
        budget = default_memory_budget(dev)
    else:
        budget = check_int(memory_budget, "memory_budget", 1)
    itemsize = 4
    if reference is None:
        n, d = Xt.shape
        Xw = Xt.to(dev, torch.float32)
        mu = Xw.mean(dim=0, keepdim=True)
        kk = min(k + _MARGIN, n - 1)
        block = _block_size(budget, n, d, kk, itemsize, dev.type)
        vals, cand, sq, _ = _candidates_self(Xw, mu, kk, block, progress)
        Xr = Xt.to(dev)  # re-measure in the caller's precision: float64 points stay distinct
        dist, idx = _finish(Xr, Xr, vals, cand, sq, sq, k, exclude_self=True)
    else:
        Rt = as_points(reference, name="reference", min_points=k,
                       why=f"k={k} neighbours need at least k reference points")
        if Rt.shape[1] != Xt.shape[1]:
            raise ValueError(
                f"X has {Xt.shape[1]} features but reference has {Rt.shape[1]}; both must live in the same space."
            )
        Qw = Xt.to(dev, torch.float32)
        Rw = Rt.to(dev, torch.float32)
        mu = Rw.mean(dim=0, keepdim=True)
        kk = min(k + _MARGIN, Rw.shape[0])
        block = _block_size(budget, max(Qw.shape[0], Rw.shape[0]), Qw.shape[1], kk, itemsize, dev.type)
        vals, cand, sq_q, sq_r = _candidates_ref(Qw, Rw, mu, kk, block, progress)
        dist, idx = _finish(Xt.to(dev), Rt.to(dev), vals, cand, sq_q, sq_r, k, exclude_self=False)
    return KNN(distances=dist, indices=idx, duplicate_mask=dist[:, 0] == 0)


def pairwise_distances(X, Y=None, *, device="auto") -> torch.Tensor:
    """Dense Euclidean distance matrix (float64, CPU) for small point clouds.

    Use only where an ``N x M`` matrix is wanted (it is materialised); :func:`knn` is the
    chunked kernel for neighbour queries.
    """
    Xt = as_points(X, name="X", dtype=torch.float64)
    Yt = Xt if Y is None else as_points(Y, name="Y", dtype=torch.float64)
    if Yt.shape[1] != Xt.shape[1]:
        raise ValueError(f"X has {Xt.shape[1]} features but Y has {Yt.shape[1]}; both must live in the same space.")
    dev = resolve_device(device, like=Xt)
    return torch.cdist(Xt.to(dev), Yt.to(dev)).cpu()


def radius_counts(X, radii, *, device="auto", memory_budget=None, progress: bool | None = None) -> np.ndarray:
    """Number of unordered pairs ``{i, j}``, ``i != j``, with ``|x_i - x_j| < r`` for each radius.

    Exact, over all pairs, blockwise over the upper triangle of the distance matrix (no
    ``N x N`` matrix is formed). Used by the Grassberger-Procaccia correlation sum.
    """
    Xt = as_points(X, name="X", min_points=2, why="pairs need two points")
    r = np.sort(np.asarray(radii, dtype=np.float64).ravel())
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("radii must be a non-empty array of positive finite numbers.")
    dev = resolve_device(device, like=Xt)
    budget = default_memory_budget(dev) if memory_budget is None else check_int(memory_budget, "memory_budget", 1)
    Xw = Xt.to(dev, torch.float32)
    mu = Xw.mean(dim=0, keepdim=True)
    n, d = Xw.shape
    block = _block_size(budget, n, d, 1, 4, dev.type)
    sq = _sq_norms(Xw, mu, block)
    r2 = torch.as_tensor(r * r, dtype=torch.float32, device=dev)
    counts = torch.zeros(r.size + 1, dtype=torch.int64, device=dev)
    starts = list(range(0, n, block))
    with _progress(len(starts) * (len(starts) + 1) // 2, "pair counts", progress) as bar:
        for bi, s_i in enumerate(starts):
            e_i = min(s_i + block, n)
            Xi = Xw[s_i:e_i] - mu
            for s_j in starts[bi:]:
                e_j = min(s_j + block, n)
                d2 = torch.addmm(sq[s_i:e_i, None], Xi, (Xw[s_j:e_j] - mu).T, beta=1.0, alpha=-2.0)
                d2.add_(sq[None, s_j:e_j]).clamp_(min=0)
                if s_i == s_j:
                    d2 = d2[torch.triu(torch.ones_like(d2, dtype=torch.bool), diagonal=1)]
                # bucket b holds distances in [r_{b-1}, r_b): strict "< r" per radius
                counts += torch.bincount(torch.bucketize(d2.reshape(-1), r2, right=True), minlength=r.size + 1)
                bar.update(1)
    return torch.cumsum(counts, 0)[:-1].cpu().numpy().astype(np.float64)
