"""Bundle networks (Courts & Kvinge 2022): exact invertibility, log-determinants, the losses and
metrics against direct computations (our maximum-likelihood term included), dimension errors,
seeded sampling from the prior the likelihood was trained with, the bundle's diagram, and short
training runs that must improve the recovered fibers."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from shapelens.structure.bundle import (
    AffineCoupling,
    BundleHistory,
    BundleNetwork,
    LocalTrivializationFlow,
    knn_kl_divergence,
    mmd,
    wasserstein1,
)
from shapelens.structure.objects import StructureError

D64 = torch.float64


def small_net(total=3, base=2, fiber=1, k=1, **kw) -> BundleNetwork:
    args = dict(n_neighborhoods=k, hidden=16, n_blocks=2, depth=1, seed=0)
    args.update(kw)
    return BundleNetwork(total, base, fiber, **args).to(D64)


def moebius(n: int, rng: np.random.Generator, s=None):
    """Moebius band over the circle of radius 4.5 (Courts & Kvinge's construction, R = 8, width 2)."""
    s = rng.uniform(0, 2 * np.pi, n) if s is None else np.full(n, s)
    t = 2.0 * (2 * rng.uniform(size=n) - 1)
    normal = np.c_[-np.cos(s), -np.sin(s), np.zeros(n)]
    d = np.cos(s / 2)[:, None] * normal + np.sin(s / 2)[:, None] * np.array([0.0, 0.0, 1.0])
    x = 8.0 * np.c_[np.cos(s), np.sin(s), np.zeros(n)] + t[:, None] * d
    return x, 4.5 * np.c_[np.cos(s), np.sin(s)]


# --------------------------------------------------------------------------------------
# the invertible network
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,condition", [(2, "affine"), (5, "affine"), (4, "all"), (3, "all")])
def test_flow_inverse_is_exact_in_float64(dim, condition):
    torch.manual_seed(0)
    flow = LocalTrivializationFlow(dim, 2, hidden=16, n_blocks=3, depth=1, condition=condition, seed=1).to(D64)
    x, c = torch.randn(64, dim, dtype=D64) * 3, torch.randn(64, 2, dtype=D64)
    z, ld = flow(x, c)
    x2, ld_rev = flow(z, c, rev=True)
    assert torch.allclose(x2, x, atol=1e-10, rtol=0)
    assert torch.allclose(ld_rev, -ld, atol=1e-10, rtol=0)
    z2, _ = flow(flow(z, c, rev=True)[0], c)
    assert torch.allclose(z2, z, atol=1e-10, rtol=0)
    assert (z - x).abs().max() > 0.1  # not the identity


def test_flow_log_determinant_matches_jacrev():
    torch.manual_seed(1)
    flow = LocalTrivializationFlow(3, 2, hidden=8, n_blocks=2, depth=1, condition="all", seed=2).to(D64)
    x, c = torch.randn(5, 3, dtype=D64), torch.randn(5, 2, dtype=D64)
    with torch.no_grad():
        _, ld = flow(x, c)
    for i in range(5):
        J = torch.func.jacrev(lambda v: flow(v[None], c[i : i + 1])[0][0])(x[i])
        assert abs(float(torch.linalg.slogdet(J.detach()).logabsdet) - float(ld[i])) < 1e-10


def test_coupling_needs_two_dimensions():
    with pytest.raises(StructureError, match="at least 2"):
        AffineCoupling(1, 4, 1)


def test_network_log_det_includes_standardization():
    rng = np.random.default_rng(0)
    x, y = moebius(200, rng)
    net = small_net()
    net.fit_neighborhoods(y, x)  # sets a non-trivial standardization
    assert float(net.x_scale) != 1.0
    xt, yt = torch.as_tensor(x[:4]), torch.as_tensor(y[:4])
    ld = net.log_det(xt, yt)
    for i in range(4):
        J = torch.autograd.functional.jacobian(lambda v: torch.cat(net.trivialize(v[None], yt[i : i + 1]), 1)[0], xt[i])
        assert abs(float(torch.linalg.slogdet(J.detach()).logabsdet) - float(ld[i].detach())) < 1e-9


def test_network_inverse_undoes_trivialize_with_one_chart():
    rng = np.random.default_rng(1)
    x, y = moebius(300, rng)
    net = small_net()
    net.fit_neighborhoods(y, x)
    xt = torch.as_tensor(x)
    b, f = net.trivialize(xt)
    assert torch.allclose(net.inverse(b, f), xt, atol=1e-10, rtol=0)
    assert torch.allclose(net.inverse((b, f)), xt, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------------------
# metrics and losses against direct computations
# --------------------------------------------------------------------------------------


def test_mmd_matches_direct_formula():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) + 0.4
    blur = 0.7

    def k(u, v):
        return math.exp(-float(((u - v) ** 2).sum()) / (2 * blur**2))

    kaa = sum(k(u, v) for u in a for v in a) / len(a) ** 2
    kbb = sum(k(u, v) for u in b for v in b) / len(b) ** 2
    kab = sum(k(u, v) for u in a for v in b) / (len(a) * len(b))
    assert mmd(a, b, blur=blur) == pytest.approx(0.5 * (kaa + kbb - 2 * kab), rel=1e-12)
    assert mmd(a, a) == pytest.approx(0.0, abs=1e-15)


def test_wasserstein1_is_the_optimal_assignment():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    best = min(np.mean([np.linalg.norm(a[i] - b[p[i]]) for i in range(6)]) for p in itertools.permutations(range(6)))
    assert wasserstein1(a, b) == pytest.approx(best, rel=1e-12)
    u, v = rng.normal(size=(50, 1)), rng.normal(size=(50, 1)) * 2  # 1-D: sorted matching is optimal
    assert wasserstein1(u, v) == pytest.approx(np.mean(np.abs(np.sort(u[:, 0]) - np.sort(v[:, 0]))), rel=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        wasserstein1(a, b[:5])


def _kl_numpy(s1, s2):
    n, m, d = len(s1), len(s2), s1.shape[1]
    out = math.log(m / (n - 1))
    for p in s1:
        nu = min(np.linalg.norm(q - p) for q in s2 if np.linalg.norm(q - p) > 0)
        rho = min(np.linalg.norm(q - p) for q in s1 if np.linalg.norm(q - p) > 0)
        out += d / n * math.log(nu / rho)
    return out


def test_knn_kl_matches_direct_formula():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(35, 3)) * 1.5
    assert float(knn_kl_divergence(a, b)) == pytest.approx(_kl_numpy(a, b), rel=1e-10)
    assert float(knn_kl_divergence(b, a)) == pytest.approx(_kl_numpy(b, a), rel=1e-10)


@pytest.mark.parametrize("circles", [0, 1])
def test_losses_match_hand_computation(circles):
    rng = np.random.default_rng(5)
    x, y = moebius(40, rng)
    total, fiber = (3, 1) if circles == 0 else (4, 2)
    x = np.c_[x, np.zeros((40, total - 3))]
    net = small_net(total, 2, fiber, n_circles=circles, oversample=3,
                    weights={"mse": 2.0, "kl_bwd": 0.5, "kl_fwd": 0.25, "dist": 3.0})
    net.fit_neighborhoods(y, x)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    L = net.losses(xt, yt, seed=11)
    # by hand: one neighbourhood, so the averages over neighbourhoods are plain means
    b, f = net.trivialize(xt, yt)
    assert float(L["mse"].detach()) == pytest.approx(float((b - yt).norm(dim=1).mean().detach()), rel=1e-12)
    M, N = 3, 40
    g = torch.Generator().manual_seed(11)
    mean, sd = f.mean(0), f.std(0, unbiased=True)
    eps = torch.randn((N * M, fiber), generator=g, dtype=D64)
    draw = mean + sd * eps
    if circles:
        r = f[:, :2].norm(dim=1)
        er = torch.randn((N * M, 1), generator=g, dtype=D64)
        ang = 2 * math.pi * torch.rand((N * M, 1), generator=g, dtype=D64)
        rad = r.mean() + r.std(unbiased=True) * er
        draw = torch.cat([rad * torch.cos(ang), rad * torch.sin(ang)], 1)
    xg = net.inverse(yt.repeat_interleave(M, 0), draw.detach()).detach().numpy()
    assert float(L["kl_bwd"].detach()) == pytest.approx(_kl_numpy(xg, x), rel=1e-9)
    assert float(L["kl_fwd"].detach()) == pytest.approx(_kl_numpy(x, xg), rel=1e-9)
    dist = np.mean([min(np.linalg.norm(p - q) for q in x) for p in xg])
    assert float(L["dist"].detach()) == pytest.approx(dist, rel=1e-9)
    w = net.weights
    assert float(L["total"].detach()) == pytest.approx(sum(w[k] * float(L[k].detach()) for k in ("mse", "kl_bwd", "kl_fwd", "dist")), rel=1e-12)
    L["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.flow.parameters())


def test_losses_average_over_neighbourhoods():
    rng = np.random.default_rng(6)
    x, y = moebius(120, rng)
    net = small_net(k=3)
    net.fit_neighborhoods(y, x)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    L = net.losses(xt, yt, seed=0)
    idx = net.neighborhood_of(yt)
    err = (net.project(xt, yt) - yt).norm(dim=1)
    per = [float(err[idx == k].mean().detach()) for k in range(3)]
    assert float(L["mse"].detach()) == pytest.approx(np.mean(per), rel=1e-12)


def _log_normal(v, m, s):
    return -0.5 * ((v - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)


@pytest.mark.parametrize("circles", [0, 1])
def test_nll_matches_hand_computation(circles):
    """-log p_F(f) - log|det J_phi(x)| per point, the log-determinant from torch.func.jacrev of the
    data-unit chart map x -> (b, f), averaged per neighbourhood then over neighbourhoods."""
    rng = np.random.default_rng(12)
    x, y = moebius(60, rng)
    total, fiber = (3, 1) if circles == 0 else (4, 2)
    x = np.c_[x, 0.3 * rng.normal(size=(60, total - 3))]  # a non-degenerate padding column
    net = small_net(total, 2, fiber, k=2, n_circles=circles, weights=[0.0, 0.0, 0.0, 0.0, 1.5])
    assert net.prior == "standard" and net.weights["nll"] == 1.5
    net.fit_neighborhoods(y, x)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    L = net.losses(xt, yt, seed=0)
    assert all(math.isnan(float(L[k])) for k in ("kl_bwd", "kl_fwd", "dist"))  # weight 0: not computed
    idx = net.neighborhood_of(yt).numpy()
    _, f = net.trivialize(xt, yt)
    f = f.detach().numpy()
    logdet = np.array([float(torch.linalg.slogdet(torch.func.jacrev(
        lambda v: torch.cat(net.trivialize(v[None], yt[i : i + 1]), 1)[0])(xt[i]).detach()).logabsdet) for i in range(60)])
    per_nbhd = []
    for k in range(2):
        fk = f[idx == k]
        if circles:  # ring: radius ~ N(mean, std) of the neighbourhood's radii, uniform angle
            r = np.linalg.norm(fk, axis=1)
            rm, rs = r.mean(), r.std(ddof=1)
            lp = np.logaddexp(_log_normal(r, rm, rs), _log_normal(-r, rm, rs)) - np.log(2 * np.pi * r)
        else:  # standard prior: N(0, 1)
            lp = _log_normal(fk[:, 0], 0.0, 1.0)
        per_nbhd.append(np.mean(-lp - logdet[idx == k]))
    assert 0 < (idx == 0).sum() < 60
    assert float(L["nll"].detach()) == pytest.approx(np.mean(per_nbhd), rel=1e-10)
    assert float(L["total"].detach()) == pytest.approx(1.5 * np.mean(per_nbhd), rel=1e-10)
    L["total"].backward()
    grads = [p.grad for p in net.flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    # net.nll: the same per-point term under the calibrated prior (= the batch statistics here)
    per_point = net.nll(xt, yt).detach().numpy()
    hand = np.empty(60)
    for k in range(2):
        sel = idx == k
        hand[sel] = -(net.log_prior(f[sel], y[sel]).detach().numpy()) - logdet[sel]
    assert np.allclose(per_point, hand, rtol=1e-10, atol=1e-10)
    assert np.mean([per_point[idx == k].mean() for k in range(2)]) == pytest.approx(np.mean(per_nbhd), rel=1e-10)


def test_sampling_draws_from_the_prior_the_likelihood_uses():
    """With the nll term the prior is the standard one: after calibration the Gaussian
    coordinates are N(0, 1) in every neighbourhood, the circle radius keeps the fitted statistics,
    and the fiber coordinates of sample_fiber's points are exactly the documented draws."""
    rng = np.random.default_rng(13)
    x, y = moebius(300, rng)
    x = np.c_[x, np.zeros((300, 2))]
    net = small_net(5, 2, 3, k=3, n_circles=1, weights={"nll": 1.0})
    net.fit_neighborhoods(y, x)
    assert net.prior == "standard" and torch.all(net.prior_mean == 0) and torch.all(net.prior_std == 1)
    _, f = net.trivialize(torch.as_tensor(x), torch.as_tensor(y))
    idx = net.neighborhood_of(torch.as_tensor(y))
    for k in range(3):  # circle radius: fitted, as the paper's prior
        r = f[idx == k, :2].detach().norm(dim=1)
        assert float(net.radius_mean[k]) == pytest.approx(float(r.mean()), rel=1e-12)
        assert float(net.radius_std[k]) == pytest.approx(float(r.std(unbiased=True)), rel=1e-12)
    n, y0 = 400, y[7]
    pts = net.sample_fiber(y0, n, seed=5)
    _, fs = net.trivialize(pts, torch.as_tensor(np.tile(y0, (n, 1))))
    k = int(net.neighborhood_of(torch.as_tensor(y0[None]))[0])
    g = torch.Generator().manual_seed(5)
    eps = torch.randn((n, 3), generator=g, dtype=D64)
    er = torch.randn((n, 1), generator=g, dtype=D64)
    ang = 2 * math.pi * torch.rand((n, 1), generator=g, dtype=D64)
    rad = net.radius_mean[k] + net.radius_std[k] * er
    want = torch.cat([rad * torch.cos(ang), rad * torch.sin(ang), eps[:, 2:]], 1)
    assert torch.allclose(fs, want, atol=1e-9, rtol=0)
    # the paper's default keeps the fitted Gaussian statistics
    paper = small_net(5, 2, 3, k=3, n_circles=1)
    paper.fit_neighborhoods(y, x)
    assert paper.prior == "fitted" and not torch.allclose(paper.prior_std[:, 2], torch.ones(3, dtype=D64))


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_dimensions_must_add_up_and_be_positive():
    with pytest.raises(StructureError, match="do not add up.*total_dim=4.*2 \\+ 1 = 3"):
        BundleNetwork(4, 2, 1)
    for args in [(3, 0, 3), (0, 2, 1), (3, 2, -1)]:
        with pytest.raises(StructureError, match="positive integer"):
            BundleNetwork(*args)
    with pytest.raises(StructureError, match="positive integer"):
        BundleNetwork(3, 2.0, 1)
    with pytest.raises(StructureError, match="n_circles=2"):
        BundleNetwork(5, 2, 3, n_circles=2)
    with pytest.raises(StructureError, match="condition"):
        BundleNetwork(3, 2, 1, condition="some")
    with pytest.raises(ValueError, match="unknown loss names"):
        BundleNetwork(3, 2, 1, weights={"kl": 1.0})
    with pytest.raises(ValueError, match="4 entries.*or 5"):
        BundleNetwork(3, 2, 1, weights=[1.0, 2.0])
    with pytest.raises(StructureError, match="prior must be"):
        BundleNetwork(3, 2, 1, prior="uniform")
    with pytest.raises(StructureError, match="needs prior='standard'"):
        BundleNetwork(3, 2, 1, prior="fitted", weights={"nll": 1.0})


def test_wrong_widths_and_unfitted_use_are_clear_errors():
    rng = np.random.default_rng(7)
    x, y = moebius(60, rng)
    net = small_net(k=2)
    with pytest.raises(StructureError, match="no neighbourhoods yet"):
        net.trivialize(x)
    with pytest.raises(StructureError, match="no neighbourhoods yet"):
        net.diagram()
    with pytest.raises(StructureError, match="base has dimension 2"):
        net.fit_neighborhoods(np.c_[y, y])
    net.fit_neighborhoods(y, x)
    with pytest.raises(StructureError, match="width 4.*total space has dimension 3.*zero-pad"):
        net.trivialize(np.c_[x, x[:, :1]])
    with pytest.raises(StructureError, match="width 2.*total space"):
        net.losses(x[:, :2], y)
    with pytest.raises(StructureError, match="width 3.*base has dimension 2"):
        net.fit(x, np.c_[y, y[:, :1]], epochs=1)
    with pytest.raises(StructureError, match="shape \\(3,\\).*\\(N, 3\\)"):
        net.trivialize(torch.as_tensor(x[0]))
    with pytest.raises(StructureError, match="3 coordinates.*dimension 2"):
        net.sample_fiber(np.zeros(3), 5)
    with pytest.raises(StructureError, match="fiber has dimension 1"):
        net.inverse(y, np.zeros((60, 2)))
    with pytest.raises(StructureError, match="needs at least 5 distinct base points"):
        small_net(k=5).fit_neighborhoods(y[:4])


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------


def test_sampling_is_reproducible_and_lies_over_its_base_point():
    rng = np.random.default_rng(8)
    x, y = moebius(200, rng)
    x = np.c_[x, np.zeros(200)]
    net = small_net(4, 2, 2, k=3, n_circles=1)
    net.fit_neighborhoods(y, x)
    y0 = y[0]
    a, b = net.sample_fiber(y0, 50, seed=3), net.sample_fiber(y0, 50, seed=3)
    assert a.shape == (50, 4) and torch.equal(a, b)
    assert not torch.allclose(a, net.sample_fiber(y0, 50, seed=4))
    batch = net.sample_fiber(y[:5], 7, seed=1)
    assert batch.shape == (5, 7, 4)
    # the samples lie exactly over their base point (same chart forward and back)
    base, fib = net.trivialize(a, torch.as_tensor(np.tile(y0, (50, 1))))
    assert torch.allclose(base, torch.as_tensor(y0).expand(50, 2), atol=1e-10, rtol=0)
    # circle prior: the first two fiber coordinates have the calibrated radius distribution's support
    k = int(net.neighborhood_of(torch.as_tensor(y0[None]))[0])
    assert float(net.radius_mean[k]) > 0


# --------------------------------------------------------------------------------------
# the diagram
# --------------------------------------------------------------------------------------


def test_diagram_commutes_for_a_projection_exact_by_construction():
    torch.manual_seed(0)
    net = small_net()
    y = torch.randn(80, 2, dtype=D64) * 3
    net.fit_neighborhoods(y)
    x = net.inverse(y, torch.randn(80, 1, dtype=D64)).detach()  # the true base point of x is y, exactly
    d = net.diagram()
    assert set(d.objects) == {"Total x Base", "Total", "Base", "Base x Fiber", "Fiber"}
    assert d.morphisms["phi"].inverse is d.morphisms["phi_inv"]
    check = d.check({"Total x Base": (x, y)})
    assert check.commutes
    assert check["p_B . phi = pi"].max < 1e-12 and check["phi^-1 . phi = id"].max < 1e-12
    assert check["phi^-1 . phi = id"].source.startswith("Total x Base via")
    # the learned projection as one module equals net.project
    proj = d.path("phi", "p_B").as_morphism()
    assert torch.allclose(proj(x), net.project(x), atol=0, rtol=0)
    # wrong base points: the triangle does not commute
    bad = net.check(x, y + 0.5)
    assert not bad.commutes and bad["p_B . phi = pi"].mean > 1e-2
    assert bad["phi^-1 . phi = id"].max < 1e-12
    # the diagram's loss is differentiable in the network's parameters
    loss = d.loss({"Total x Base": (x, y + 0.5)})
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.flow.parameters())


def test_inverse_equation_is_exact_with_several_charts():
    torch.manual_seed(1)
    net = small_net(k=4)
    net.fit_neighborhoods(torch.randn(300, 2, dtype=D64) * 3)
    y = torch.randn(60, 2, dtype=D64) * 3
    x = net.inverse(y, torch.randn(60, 1, dtype=D64)).detach()
    check = net.check(x, y)
    assert check["phi^-1 . phi = id"].max < 1e-12
    # the chart chosen from x alone is consistent: its predicted base point lies in its cell
    idx = net.chart_of(x)
    assert torch.equal(net.neighborhood_of(net._phi(x, idx)[0]), idx)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def _fiber_w1(net, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for j, s0 in enumerate([0.5, 2.0, 3.5, 5.0]):
        true, base = moebius(100, rng, s=s0)
        gen = net.sample_fiber(base[0], 100, seed=j).detach().numpy()
        out.append(wasserstein1(true, gen))
    return float(np.mean(out))


def test_short_training_improves_the_recovered_fibers():
    rng = np.random.default_rng(9)
    x, y = moebius(600, rng)
    net = BundleNetwork(3, 2, 1, n_neighborhoods=6, hidden=32, n_blocks=3, depth=1, seed=0)
    net.fit_neighborhoods(y, x)
    before = _fiber_w1(net)
    h = net.fit(x, y, epochs=40, lr=3e-3, nbhd_batch=3, points_per_nbhd=100, progress=False)
    after = _fiber_w1(net)
    assert isinstance(h, BundleHistory) and h.steps == 80 and len(h.losses["total"]) == 40
    assert h.losses["total"][-5:].mean() < h.losses["total"][:5].mean()
    assert after < 0.5 * before, (before, after)
    json.dumps(h.to_dict())


def test_fit_is_reproducible_by_seed():
    rng = np.random.default_rng(10)
    x, y = moebius(150, rng)
    runs = []
    for _ in range(2):
        net = BundleNetwork(3, 2, 1, n_neighborhoods=3, hidden=8, n_blocks=1, depth=0, seed=4)
        h = net.fit(x, y, epochs=3, progress=False)
        runs.append((h.losses["total"], net.sample_fiber(y[0], 5, seed=0)))
    assert np.array_equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_nll_term_trains_the_fiber_distribution():
    """mse alone fixes the base but not the distribution along the fibers; adding the likelihood
    term (the KL/dist losses off in both runs, same seed and steps) must recover the fibers."""
    rng = np.random.default_rng(9)
    x, y = moebius(600, rng)
    off = {"kl_bwd": 0.0, "kl_fwd": 0.0, "dist": 0.0}
    w1 = {}
    for name, w in (("mse", off), ("mse+nll", dict(off, nll=1.0))):
        net = BundleNetwork(3, 2, 1, n_neighborhoods=6, hidden=32, n_blocks=3, depth=1, seed=1, weights=w)
        h = net.fit(x, y, epochs=300, lr=3e-3, nbhd_batch=3, points_per_nbhd=100, progress=False)
        w1[name] = _fiber_w1(net)
        assert np.isnan(h.losses["kl_bwd"]).all()
    assert np.isfinite(h.losses["nll"]).all() and h.losses["nll"][-10:].mean() < h.losses["nll"][:10].mean()
    assert w1["mse+nll"] < 0.8 and w1["mse+nll"] < 0.5 * w1["mse"], w1


def test_the_bundle_diagram_gives_the_learned_projection_as_one_model():
    """phi and phi_inv are a declared inverse pair, so the diagram has exactly one path Total -> Base."""
    from shapelens.atlas.demo import torus_over_circle
    from shapelens.structure import BundleNetwork

    x, y = torus_over_circle(200)
    net = BundleNetwork(4, 2, 2, n_neighborhoods=4, hidden=16, n_blocks=2, seed=0)
    net.fit_neighborhoods(y, x)
    net.calibrate_prior(x, y)
    d = net.diagram()
    proj = d.model("Total", "Base")
    assert proj.name == "phi >> p_B" and proj.diagram is d
    with torch.no_grad():
        assert torch.allclose(proj(x), net.trivialize(x)[0].to(proj(x).dtype), atol=1e-6)
