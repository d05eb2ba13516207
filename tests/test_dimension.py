"""Intrinsic-dimension estimators against ground truth and against scikit-dimension."""

import math
import warnings

import numpy as np
import pytest
import torch

from shapelens import data
from shapelens import dimension as dm
from shapelens._checks import ShapelensWarning

N = 5000

# noise-free manifolds with known dimension d <= 10 (the acceptance set)
MANIFOLDS = (
    [data.sphere(N, d, ambient=max(d + 1, 12), seed=d) for d in (1, 2, 3, 5, 8, 10)]
    + [data.ball(N, d, seed=d) for d in (2, 3, 5)]
    + [data.linear_subspace(N, d, ambient=20, seed=d) for d in (3, 7, 10)]
    + [data.swiss_roll(N), data.helix(N), data.moebius(N), data.torus(N)]
)


@pytest.mark.parametrize("m", MANIFOLDS, ids=lambda m: m.name)
@pytest.mark.parametrize("method", ["twonn", "mle"])
def test_within_ten_percent_of_true_dimension(m, method):
    est = dm.get(method).fit(m.X)
    assert abs(est.dimension_ / m.dimension - 1) < 0.10, (m.name, est.dimension_)
    assert est.dimension_std_ > 0 and math.isfinite(est.dimension_std_)


def test_mle_boundary_bias_on_high_dimensional_ball_is_downward():
    """Documented limitation: in a uniform 10-ball most k-neighbourhoods cross the boundary,
    which Levina-Bickel's Poisson model ignores; the estimate falls below 10 (not above)."""
    m = data.ball(N, 10, seed=0)
    assert 8.0 < dm.MLE().fit(m.X).dimension_ < 10.0


@pytest.mark.parametrize("method", ["gride", "lpca", "corr"])
@pytest.mark.parametrize("d", [2, 5])
def test_other_estimators_on_spheres(method, d):
    m = data.sphere(N, d, ambient=16, seed=3)
    assert abs(dm.estimate(m.X, method) / d - 1) < 0.10


def test_lpca_is_exact_on_linear_subspaces_and_thresholds_work():
    m = data.linear_subspace(2000, 4, ambient=30, seed=1)
    est = dm.LocalPCA(k=40).fit(m.X)
    assert est.dimension_ == 4.0 and set(est.local_dimensions_) == {4}
    assert dm.LocalPCA(criterion="fo", alpha=0.01).fit(m.X).dimension_ == 4.0
    # a tiny threshold needs only the first component
    assert dm.LocalPCA(threshold=1e-6).fit(m.X).dimension_ == 1.0


# ---- agreement with scikit-dimension where definitions match ---------------------------------

skdim = pytest.importorskip("skdim")


@pytest.mark.parametrize("m", [data.sphere(3000, 4, ambient=10, seed=5), data.swiss_roll(3000, noise=0.05),
                               data.linear_subspace(3000, 8, ambient=40, seed=2)], ids=lambda m: m.name)
def test_agrees_with_scikit_dimension(m):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_t = dm.TwoNN().fit(m.X).dimension_
        ours_m = dm.MLE(k=20).fit(m.X).dimension_
        theirs_t = skdim.id.TwoNN().fit(m.X).dimension_
        theirs_m = skdim.id.MLE().fit(m.X, n_neighbors=20).dimension_
    assert abs(ours_t / theirs_t - 1) < 0.01
    assert abs(ours_m / theirs_m - 1) < 0.01
    # the censored-MLE variant of TwoNN is defined identically in both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = dm.TwoNN(method="mle").fit(m.X).dimension_
        b = skdim.id.TwoNN(method="mle").fit(m.X).dimension_
    assert abs(a / b - 1) < 0.01


def test_gride_first_scale_is_the_twonn_likelihood():
    m = data.sphere(3000, 3, ambient=8, seed=2)
    from shapelens.neighbors import knn

    d = knn(m.X, 2).distances.numpy()
    closed = len(d) / np.log(d[:, 1] / d[:, 0]).sum()  # MLE of the Pareto exponent
    g = dm.GRIDE(n1=1, n2=2).fit(m.X)
    assert g.dimension_ == pytest.approx(closed, rel=1e-12)
    # the numerical optimum for n2 - n1 > 1 is a stationary point of the likelihood
    g4 = dm.GRIDE(n1=2, n2=4).fit(m.X)
    from shapelens.dimension.estimators import _gride_loglik

    mu = knn(m.X, 4).distances.numpy()
    mu = mu[:, 3] / mu[:, 1]
    h = 1e-4
    grad = (_gride_loglik(g4.dimension_ + h, mu, 2, 4) - _gride_loglik(g4.dimension_ - h, mu, 2, 4)) / (2 * h)
    assert abs(grad) < 1e-2
    assert abs(g4.dimension_ / 3 - 1) < 0.1


def test_twonn_without_discarding_is_finite_and_gride_keeps_tied_ratios():
    X, _ = data.digits()  # quantised pixels: many exactly tied neighbour distances
    assert math.isfinite(dm.TwoNN(discard_fraction=0.0).fit(X).dimension_)
    from shapelens.neighbors import knn

    d = knn(X, 2).distances.numpy()
    closed = len(d) / np.log(d[:, 1] / d[:, 0]).sum()
    assert dm.GRIDE().fit(X).dimension_ == pytest.approx(closed, rel=1e-5)


def test_gride_scale_curve_shows_noise_inflation_at_small_scales():
    m = data.sphere(4000, 2, ambient=20, noise=0.01, seed=0)
    sc = dm.scale_curve(m.X, "gride", range_max=128)
    assert np.all(np.diff(sc.scales) > 0)
    assert sc.dimensions[0] > 4  # isotropic noise fills the 20 ambient directions at the smallest scale
    assert abs(sc.dimensions[-1] - 2) < 0.5  # the 2-sphere emerges at larger scales
    d = sc.to_dict()
    assert d["type"] == "ScaleCurve" and len(d["dimensions"]) == len(sc.ranks)
    sc.plot()


def test_decimation_scale_curve():
    m = data.sphere(4000, 3, ambient=10, seed=1)
    sc = dm.scale_curve(m.X, "decimation", n_steps=4)
    assert list(sc.ranks) == [4000, 2000, 1000, 500]
    assert np.all(np.abs(sc.dimensions - 3) < 0.6)
    assert np.all(np.diff(sc.scales) > 0)  # thinner samples, larger neighbour distances


def test_correlation_dimension_two_radii_matches_scikit_dimension_corrint():
    m = data.sphere(1500, 3, ambient=6, seed=4)
    ours = dm.CorrelationDimension(k1=10, k2=20, n_radii=2).fit(m.X).dimension_
    theirs = skdim.id.CorrInt(k1=10, k2=20).fit(m.X).dimension_
    # CorrInt counts ordered pairs including i == j (N^2 elements); we count distinct pairs
    assert abs(ours / theirs - 1) < 0.05


# ---- local ID ---------------------------------------------------------------------------------

def test_local_dimension_matches_formula_and_reference_protocol():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    lid = dm.local_dimension(X, k=20)
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=21).fit(X).kneighbors(X)
    r = dist[:, 1:]
    want = -20 / np.log(r / r[:, -1:]).sum(axis=1)  # Ma et al. 2018, eq. (3)
    np.testing.assert_allclose(lid, want, rtol=1e-4)  # float32 distances
    # against a reference batch that contains the points themselves: the self match is skipped
    lid_ref = dm.local_dimension(X[:50], k=20, reference=X)
    np.testing.assert_allclose(lid_ref, want[:50], rtol=1e-4)
    # queries outside the reference use their k nearest reference points
    Q = rng.standard_normal((10, 5))
    dq, _ = NearestNeighbors(n_neighbors=20).fit(X).kneighbors(Q)
    np.testing.assert_allclose(dm.local_dimension(Q, k=20, reference=X), -20 / np.log(dq / dq[:, -1:]).sum(1), rtol=1e-4)


def test_local_dimension_mean_tracks_true_dimension():
    for d in (2, 6):
        m = data.sphere(3000, d, ambient=12, seed=d)
        lid = dm.local_dimension(m.X, k=20)
        assert lid.shape == (3000,)
        assert abs(np.median(lid) / d - 1) < 0.2


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["twonn", "mle", "gride", "lpca", "corr"])
def test_duplicates_are_dropped_with_warning_and_answer_is_finite(method):
    m = data.sphere(2000, 3, ambient=6, seed=0)
    X = np.vstack([m.X, m.X[:300], m.X[:50]])
    with pytest.warns(ShapelensWarning, match="350 of 2350 points are exact duplicates"):
        est = dm.get(method).fit(X)
    assert math.isfinite(est.dimension_) and est.n_duplicates_ == 350 and est.n_points_ == 2000
    clean = dm.get(method).fit(m.X).dimension_
    assert est.dimension_ == pytest.approx(clean, rel=1e-5)  # same points, another order


def test_local_dimension_with_duplicates_is_finite():
    X = np.random.default_rng(1).random((500, 4))
    X = np.vstack([X, X[:20]])
    with pytest.warns(ShapelensWarning, match="duplicates"):
        lid = dm.local_dimension(X, k=10)
    assert np.isfinite(lid).all() and lid.shape == (520,)


@pytest.mark.parametrize("method", ["twonn", "mle", "gride", "lpca", "corr"])
def test_constant_data_is_dimension_zero(method):
    with pytest.warns(ShapelensWarning, match="constant"):
        assert dm.get(method).fit(np.ones((100, 7))).dimension_ == 0.0


def test_constant_data_local_dimension_zero():
    with pytest.warns(ShapelensWarning):
        lid = dm.local_dimension(np.ones((50, 3)), k=5)
    assert (lid == 0).all()


@pytest.mark.parametrize("method,kw,minimum", [("twonn", {}, 3), ("mle", {"k": 20}, 21), ("mle", {"k": 5}, 6),
                                               ("gride", {"range_max": 16}, 17), ("lpca", {"k": 30}, 31),
                                               ("corr", {"k2": 20}, 21)])
def test_too_few_points_names_minimum(method, kw, minimum):
    X = np.random.default_rng(0).random((minimum - 1, 3))
    with pytest.raises(ValueError, match=f"at least {minimum}"):
        dm.get(method, **kw).fit(X)


def test_nan_inf_report_count_and_rows():
    X = np.random.default_rng(0).random((100, 3))
    X[7, 1] = np.nan
    X[42, 0] = np.inf
    with pytest.raises(ValueError, match=r"1 NaN and 1 infinite values in 2 rows \(first rows: \[7, 42\]\)"):
        dm.TwoNN().fit(X)
    with pytest.raises(ValueError, match="NaN"):
        dm.local_dimension(X)


@pytest.mark.parametrize("X,msg", [(np.zeros(30), "must be 2-D"), (np.zeros((5, 4, 3)), "must be 2-D"),
                                   (np.zeros((0, 2)), "empty")])
def test_shapes_refused(X, msg):
    with pytest.raises(ValueError, match=msg):
        dm.MLE().fit(X)


def test_integer_float16_and_tensor_inputs_give_same_answer():
    m = data.sphere(2000, 2, ambient=5, seed=0)
    Xi = np.round(m.X * 1000).astype(np.int32)
    a = dm.TwoNN().fit(Xi).dimension_
    b = dm.TwoNN().fit(torch.from_numpy(Xi.astype(np.float32))).dimension_
    assert a == pytest.approx(b, rel=1e-6)
    c = dm.TwoNN().fit(m.X.astype(np.float16)).dimension_
    assert abs(c - 2) < 0.3


def test_registry_and_errors():
    assert {"twonn", "mle", "gride", "lpca", "corr"} <= set(dm.available())
    assert isinstance(dm.get("2nn"), dm.TwoNN)
    with pytest.raises(ValueError, match="available: "):
        dm.get("nope")
    with pytest.raises(TypeError, match="its parameters are"):
        dm.get("mle", kk=3)
    with pytest.raises(ValueError, match="discard_fraction"):
        dm.TwoNN(discard_fraction=1.5).fit(np.random.rand(50, 3))

    class Dummy(dm.TwoNN):
        pass

    dm.register("dummy_test", Dummy)
    assert isinstance(dm.get("dummy_test"), Dummy)


def test_sklearn_conventions():
    from sklearn.base import clone

    est = dm.MLE(k=7)
    assert clone(est).get_params()["k"] == 7
    assert est.fit(np.random.rand(100, 3)) is est
    assert float(est) == est.dimension_
