"""Tests for shapelens.data: real datasets (digits, MNIST) and synthetic manifolds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import pdist

import shapelens.data as D
from shapelens.data import DataMissingError


# ------------------------------------------------------------------ real data


def _mnist_or_skip() -> Path:
    """The MNIST file, or skip with a message when the data directory is truly absent."""
    try:
        directory = D.data_dir()
    except DataMissingError as exc:
        pytest.skip(f"shapelens data directory absent: {exc}")
    path = directory / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent; set SHAPELENS_DATA to the folder holding mnist.npz")
    return path


def test_digits_shapes_dtypes_range():
    X, y = D.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    # pixel/16 exactly: multiplying back gives the original integers 0..16
    np.testing.assert_array_equal(X * 16, np.round(X * 16))
    assert set(np.unique(y)) == set(range(10))


def test_mnist_labels_shapes_and_range():
    _mnist_or_skip()
    X, y = D.mnist("train", limit=100)
    assert X.shape == (100, 784) and X.dtype == np.float32
    assert y.dtype == np.int64 and y.shape == (100,)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    assert 0.0 <= X.min() and X.max() == 1.0
    # pixel/255: multiplying back gives integers
    np.testing.assert_allclose(X * 255, np.round(X * 255), atol=1e-4)

    Xt, yt = D.mnist("test")
    assert Xt.shape == (10000, 784) and yt.shape == (10000,)
    assert yt[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(yt).tolist()[:2] == [980, 1135]  # the classic test-set class counts

    Xi, yi = D.mnist("test", limit=3, flatten=False)
    assert Xi.shape == (3, 1, 28, 28) and Xi.dtype == np.float32
    np.testing.assert_array_equal(Xi.reshape(3, 784), Xt[:3])
    np.testing.assert_array_equal(yi, yt[:3])


def test_mnist_is_cached_and_returns_independent_copies():
    _mnist_or_skip()
    D.mnist("test", limit=2)
    before = D._load_npz.cache_info().hits
    X1, _ = D.mnist("test", limit=2)
    assert D._load_npz.cache_info().hits == before + 1
    X1[:] = -1.0  # must not leak into the cache
    X2, _ = D.mnist("test", limit=2)
    assert X2.min() >= 0.0


def test_mnist_bad_arguments():
    _mnist_or_skip()
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        D.mnist("validation")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        D.mnist(limit=0)
    with pytest.raises(TypeError, match="limit must be an integer"):
        D.mnist(limit=2.5)
    with pytest.raises(ValueError, match="only 10000 examples"):
        D.mnist("test", limit=10001)


def test_missing_mnist_in_empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPELENS_DATA", str(tmp_path))
    assert D.data_dir() == tmp_path
    with pytest.raises(DataMissingError) as info:
        D.mnist()
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "mnist.npz" in msg and str(tmp_path) in msg and "SHAPELENS_DATA" in msg


def test_data_dir_env_pointing_nowhere(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("SHAPELENS_DATA", str(missing))
    with pytest.raises(DataMissingError, match="SHAPELENS_DATA"):
        D.data_dir()


def test_data_dir_default_from_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPELENS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # <cwd>/../shared/data does not exist from here
    repo_default = (Path(D.__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not repo_default.is_dir():
        pytest.skip(f"{repo_default} is absent on this machine")
    assert D.data_dir() == repo_default


def test_data_dir_nothing_found_names_places(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPELENS_DATA", raising=False)
    places = [tmp_path / "a" / "shared" / "data", tmp_path / "b" / "shared" / "data"]
    monkeypatch.setattr(D, "_candidate_dirs", lambda: places)
    with pytest.raises(DataMissingError) as info:
        D.data_dir()
    msg = str(info.value)
    assert str(places[0]) in msg and str(places[1]) in msg and "SHAPELENS_DATA" in msg


# ------------------------------------------------------------------ synthetic manifolds

# name -> (call, intrinsic dimension, natural ambient dimension, betti)
CASES = {
    "sphere1": (lambda **kw: D.sphere(400, 1, **kw), 1, 2, (1, 1)),
    "sphere3": (lambda **kw: D.sphere(400, 3, **kw), 3, 4, (1, 0, 0, 1)),
    "ball4": (lambda **kw: D.ball(400, 4, **kw), 4, 4, (1,)),
    "swiss_roll": (lambda **kw: D.swiss_roll(400, **kw), 2, 3, (1,)),
    "helix": (lambda **kw: D.helix(400, **kw), 1, 3, (1, 1)),
    "moebius": (lambda **kw: D.moebius(400, **kw), 2, 3, (1, 1)),
    "linear5": (lambda **kw: D.linear_subspace(400, 5, **kw), 5, 5, (1,)),
    "linear3u": (lambda **kw: D.linear_subspace(400, 3, distribution="uniform", **kw), 3, 3, (1,)),
    "torus": (lambda **kw: D.torus(400, **kw), 2, 3, (1, 2, 1)),
}


def _rank(X: np.ndarray) -> int:
    """Dimension of the affine span, from the singular values of the centred cloud."""
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    return int((s > 1e-9 * s[0]).sum())


@pytest.mark.parametrize("case", list(CASES))
def test_manifold_basics(case):
    make, dim, natural, betti = CASES[case]
    m = make()
    assert isinstance(m, D.Manifold)
    assert m.X.shape == (400, natural) and m.X.dtype == np.float64
    assert m.dimension == dim and isinstance(m.dimension, int)
    assert m.betti == betti and m.betti[0] == 1
    assert m.n == 400 and m.ambient_dim == natural
    assert np.isfinite(m.X).all()
    assert _rank(m.X) == natural


@pytest.mark.parametrize("case", list(CASES))
def test_embedding_is_a_rotation(case):
    make, dim, natural, _ = CASES[case]
    base = make(seed=3)
    emb = make(seed=3, ambient=natural + 7)
    assert emb.X.shape == (400, natural + 7)
    # the same intrinsic sample, rotated: all pairwise distances preserved
    np.testing.assert_allclose(pdist(emb.X), pdist(base.X), rtol=1e-9, atol=1e-9)
    # the embedded cloud still spans only the natural number of directions
    assert _rank(emb.X) == natural
    # ... and it really was rotated out of the first coordinates
    assert np.abs(emb.X[:, natural:]).max() > 1e-3
    assert emb.dimension == dim


@pytest.mark.parametrize("case", list(CASES))
def test_seeds_reproduce_and_differ(case):
    make = CASES[case][0]
    a, b, c = make(seed=1, ambient=12, noise=0.01), make(seed=1, ambient=12, noise=0.01), make(seed=2, ambient=12, noise=0.01)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)


def test_sphere_unit_norm_and_uniform():
    m = D.sphere(20000, 2, seed=0)
    np.testing.assert_allclose(np.linalg.norm(m.X, axis=1), 1.0, atol=1e-12)
    # uniform on S^2: zero mean, covariance I/3, and z uniform in [-1, 1] (Archimedes)
    assert np.abs(m.X.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose(np.cov(m.X.T), np.eye(3) / 3, atol=0.02)
    assert abs(np.mean(m.X[:, 2] > 0.5) - 0.25) < 0.015


def test_ball_is_uniform():
    d = 3
    m = D.ball(20000, d, seed=0)
    r = np.linalg.norm(m.X, axis=1)
    assert r.max() <= 1.0 + 1e-12 and r.max() > 0.99
    # uniform in the ball: P(r < 1/2) = (1/2)^d
    assert abs(np.mean(r < 0.5) - 0.5**d) < 0.01


def test_curves_and_surfaces_satisfy_their_equations():
    h = D.helix(1000, turns=4, major_radius=3.0, minor_radius=0.7, seed=0).X
    rho = np.hypot(h[:, 0], h[:, 1])
    np.testing.assert_allclose((rho - 3.0) ** 2 + h[:, 2] ** 2, 0.7**2, atol=1e-12)
    t = D.torus(1000, major_radius=2.0, minor_radius=1.0, seed=0).X
    rho = np.hypot(t[:, 0], t[:, 1])
    np.testing.assert_allclose((rho - 2.0) ** 2 + t[:, 2] ** 2, 1.0, atol=1e-12)
    mb = D.moebius(1000, width=1.0, seed=0).X
    u = np.arctan2(mb[:, 1], mb[:, 0])
    # (x, y) = rho (cos u, sin u) and z = v sin(u/2) with |v| <= width/2
    assert np.abs(mb[:, 2]).max() <= 0.5 + 1e-12
    assert np.allclose(np.hypot(mb[:, 0], mb[:, 1]) * np.cos(u), mb[:, 0])
    s = D.swiss_roll(1000, seed=0).X
    t_par = np.hypot(s[:, 0], s[:, 2])
    assert t_par.min() >= 1.5 * np.pi - 1e-9 and t_par.max() <= 4.5 * np.pi + 1e-9


def test_torus_is_area_uniform():
    # area element (R + r cos theta): P(cos theta > 0) = (pi R + 2 r) / (2 pi R), not 1/2
    R, r = 2.0, 1.0
    t = D.torus(20000, major_radius=R, minor_radius=r, seed=0).X
    outer = np.hypot(t[:, 0], t[:, 1]) > R
    expected = (math.pi * R + 2 * r) / (2 * math.pi * R)
    assert abs(outer.mean() - expected) < 0.02


def test_noise_is_isotropic_with_given_std_and_keeps_the_rotation():
    clean = D.sphere(5000, 2, ambient=20, seed=4)
    noisy = D.sphere(5000, 2, ambient=20, noise=0.1, seed=4)
    diff = noisy.X - clean.X
    assert abs(diff.std() - 0.1) < 0.005
    per_axis = diff.std(axis=0)
    assert per_axis.min() > 0.09 and per_axis.max() < 0.11
    assert _rank(noisy.X) == 20  # noise fills the ambient space


def test_embed_function():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    Y = D.embed(X, 30, seed=5)
    assert Y.shape == (50, 30)
    np.testing.assert_allclose(pdist(Y), pdist(X), rtol=1e-10)
    np.testing.assert_array_equal(D.embed(X, 30, seed=5), Y)
    np.testing.assert_array_equal(D.embed(X, None), X)
    with pytest.raises(ValueError, match="ambient=3 is smaller"):
        D.embed(X, 3)
    with pytest.raises(ValueError, match="noise must be a finite standard deviation"):
        D.embed(X, 10, noise=-1)
    with pytest.raises(ValueError, match="2-D"):
        D.embed(X[0], 10)


def test_manifold_bad_arguments():
    with pytest.raises(ValueError, match="n must be at least 1"):
        D.sphere(0, 2)
    with pytest.raises(ValueError, match="d must be at least 1"):
        D.ball(10, 0)
    with pytest.raises(ValueError, match="distribution must be"):
        D.linear_subspace(10, 2, distribution="cauchy")
    with pytest.raises(ValueError, match="major_radius > minor_radius"):
        D.torus(10, major_radius=1.0, minor_radius=2.0)
    with pytest.raises(ValueError, match="ambient=2 is smaller"):
        D.swiss_roll(10, ambient=2)


def test_manifold_to_dict_and_registry():
    m = D.helix(5, seed=0)
    d = m.to_dict()
    assert d["type"] == "Manifold" and d["dimension"] == 1 and d["betti"] == [1, 1]
    assert len(d["X"]) == 5
    assert set(D.MANIFOLDS) >= {"sphere", "ball", "swiss_roll", "helix", "moebius", "linear_subspace", "torus"}
    for name, f in D.MANIFOLDS.items():
        assert f(10).X.shape[0] == 10, name
