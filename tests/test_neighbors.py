"""Exact kNN against scikit-learn's brute-force search, memory-bounded chunking, bad input."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from shapelens.neighbors import knn, radius_counts


def _sk(X, k, Q=None):
    nn = NearestNeighbors(n_neighbors=k + (Q is None), algorithm="brute").fit(X.astype(np.float64))
    d, i = nn.kneighbors(X.astype(np.float64) if Q is None else Q.astype(np.float64))
    return (d[:, 1:], i[:, 1:]) if Q is None else (d, i)


def _same_up_to_ties(X, got, want):
    """Indices agree, except for swaps of neighbours equidistant to float32 precision."""
    X = X.astype(np.float64)
    rows, cols = np.nonzero(got != want)
    assert len(rows) <= 0.001 * got.size
    for r, c in zip(rows, cols):
        a = np.linalg.norm(X[r] - X[got[r, c]])
        b = np.linalg.norm(X[r] - X[want[r, c]])
        assert abs(a - b) <= 1e-5 * b, (r, c, a, b)


@pytest.mark.parametrize("n,d,k,budget", [(700, 3, 10, None), (1500, 40, 20, 300_000), (300, 784, 5, 2_000_000)])
def test_self_knn_matches_sklearn(n, d, k, budget):
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((n, d)) + 50.0).astype(np.float32)  # far from origin: centring matters
    res = knn(X, k, memory_budget=budget)
    dist, idx = res
    sd, si = _sk(X, k)
    assert dist.shape == (n, k) and idx.shape == (n, k)
    # float32 points: distances to float32 accuracy (centred expansion)
    np.testing.assert_allclose(dist.numpy(), sd, rtol=1e-5)
    _same_up_to_ties(X, idx.numpy(), si)
    assert not (idx.numpy() == np.arange(n)[:, None]).any(), "self must be excluded"
    assert res.n_duplicates == 0


def test_small_budget_gives_same_answer_as_large():
    rng = np.random.default_rng(1)
    X = rng.random((2000, 16)).astype(np.float32)
    a = knn(X, 7, memory_budget=200_000)  # blocks of ~100 rows: many off-diagonal blocks
    b = knn(X, 7)
    _same_up_to_ties(X, a.indices.numpy(), b.indices.numpy())
    torch.testing.assert_close(a.distances, b.distances, rtol=1e-6, atol=0)


def test_reference_queries_match_sklearn_and_find_themselves():
    rng = np.random.default_rng(2)
    R = rng.random((900, 12)).astype(np.float32)
    Q = np.vstack([rng.random((50, 12)), R[:5]]).astype(np.float32)
    dist, idx = knn(Q, 6, reference=R, memory_budget=100_000)
    sd, si = _sk(R, 6, Q)
    np.testing.assert_allclose(dist.numpy(), sd, rtol=1e-5, atol=1e-6)
    assert (idx.numpy() == si).all()
    assert (dist[-5:, 0] == 0).all() and (idx[-5:, 0].numpy() == np.arange(5)).all()


def test_near_duplicates_are_measured_exactly_in_float64():
    """Two float64 points 1e-10 apart collapse to one float32 value; the rows at risk of
    cancellation are re-measured in the caller's precision, so they stay distinct."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((500, 3)) * 3 + 10
    X[1] = X[0] + np.array([1e-10, 0, 0])
    X[3] = X[2] + np.array([0, 3e-9, 4e-9])
    dist, idx = knn(X, 2)
    assert dist[0, 0].item() == pytest.approx(1e-10, rel=1e-5) and idx[0, 0] == 1
    assert dist[2, 0].item() == pytest.approx(5e-9, rel=1e-6) and idx[2, 0] == 3
    # scikit-learn's float64 expansion loses these pairs (it returns 0); elsewhere we agree
    sd, si = _sk(X, 2)
    np.testing.assert_allclose(dist.numpy()[4:], sd[4:], rtol=1e-5)
    assert (sd[:4, 0] < 1e-7).all()


def test_duplicates_are_reported_not_hidden():
    rng = np.random.default_rng(3)
    X = rng.random((200, 5))
    X = np.vstack([X, X[:10], X[:3]])
    res = knn(X, 3)
    assert res.n_duplicates == 23  # 10 originals + their copies + 3 third copies
    assert (res.distances[res.duplicate_mask, 0] == 0).all()
    assert np.isfinite(res.distances.numpy()).all()


def test_no_n_by_n_matrix_for_large_n(monkeypatch):
    """Peak extra memory stays bounded: every block the kernel forms is at most budget-sized."""
    import shapelens.neighbors as nb

    seen = []
    real = torch.addmm

    def spy(inp, a, b, **kw):
        out = real(inp, a, b, **kw)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(nb.torch, "addmm", spy)
    X = torch.randn(20_000, 8)
    knn(X, 2, memory_budget=4_000_000)
    assert max(seen) * 4 <= 4_000_000
    assert max(seen) < 20_000 * 20_000 / 100


def test_radius_counts_exact():
    rng = np.random.default_rng(4)
    X = rng.random((400, 3))
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    iu = np.triu_indices(400, 1)
    radii = [0.05, 0.1, 0.3]
    got = radius_counts(X, radii, memory_budget=100_000)
    want = [(D[iu] < r).sum() for r in radii]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "X,msg",
    [
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, np.inf]]), "1 NaN and 1 infinite"),
        (np.zeros(10), "must be 2-D"),
        (np.zeros((4, 3, 2)), "flatten the trailing axes"),
        (np.zeros((0, 3)), "is empty"),
        (np.array([["a", "b"]]), "not numeric"),
    ],
)
def test_bad_input_messages(X, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        knn(X, 1)


def test_too_few_points_names_minimum():
    with pytest.raises(ValueError, match="at least 6 are needed"):
        knn(np.random.rand(5, 2), 5)


def test_integer_and_float16_are_converted():
    X = np.random.default_rng(5).integers(0, 100, size=(50, 4))
    a = knn(X, 3)
    b = knn(X.astype(np.float16), 3)
    c = knn(X.astype(np.float64), 3)
    assert torch.equal(a.indices, c.indices) and torch.equal(b.indices, c.indices)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (the GPU path is run on a lent GPU)")
def test_cuda_matches_cpu():  # pragma: no cover - runs only with a GPU
    X = torch.randn(5000, 64)
    a = knn(X, 10, device="cpu")
    b = knn(X, 10, device="cuda")
    assert (a.indices == b.indices).float().mean() > 0.999
    torch.testing.assert_close(a.distances, b.distances, rtol=1e-6, atol=1e-6)
