"""Loss landscapes (Li et al. 2018) against losses computed by hand with functional_call,
exactly quadratic losses, Gram-Schmidt and PCA done independently in the test."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from shapelens.curvature.landscape import (Landscape, TrajectoryPCA, checkpoint_landscape, eigen_directions,
                                           landscape_1d, landscape_2d, random_directions, trajectory_pca)


def _mlp(seed=0, reduction="mean"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3)).double()
    X = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    batches = [(X[:15], y[:15]), (X[15:], y[15:])]  # unequal batches: the weighting matters
    return model, nn.CrossEntropyLoss(reduction=reduction), batches


def _cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    X = torch.randn(24, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (24,))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(X * 2 + 1)  # running statistics away from their initial values
    return model, nn.CrossEntropyLoss(), [(X[:10], y[:10]), (X[10:], y[10:])]


def _hand_loss(model, loss_fn, batches, params):
    """Full-data loss at ``params`` (name -> tensor), eval mode, weighted by hand."""
    was = model.training
    model.eval()
    full = {**{k: v.detach() for k, v in model.named_parameters()}, **dict(model.named_buffers()), **params}
    n = sum(len(y) for _, y in batches)
    total = 0.0
    with torch.no_grad():
        for x, y in batches:
            w = len(y) / n if loss_fn.reduction == "mean" else 1.0
            total += w * float(loss_fn(functional_call(model, full, (x,)), y))
    model.train(was)
    return total


def _theta(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_identical(model, snap):
    now = model.state_dict()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} was modified"


# --------------------------------------------------------------------------- directions
def test_filter_normalization_exact():
    model, _, _ = _cnn()
    with torch.no_grad():
        model[0].weight[1].zero_()  # a dead filter: its direction must stay zero, not NaN
        model[4].weight[2].zero_()  # a dead row of the Linear weight
    snap = _snapshot(model)
    d1, d2 = random_directions(model, 2, seed=3)
    named = dict(model.named_parameters())
    assert set(d1) == set(named)  # parameters only: running_mean/var/num_batches_tracked get no direction
    for d in (d1, d2):
        for k, p in named.items():
            t = d[k]
            assert t.shape == p.shape and t.dtype == p.dtype and t.device == p.device
            assert torch.isfinite(t).all()
            if p.ndim <= 1:
                assert torch.count_nonzero(t) == 0, f"{k}: biases/BN parameters must be zero under ignore='biasbn'"
            else:
                dn = t.reshape(len(t), -1).norm(dim=1)
                wn = p.detach().reshape(len(p), -1).norm(dim=1)
                torch.testing.assert_close(dn, wn, rtol=1e-12, atol=0)
    assert torch.count_nonzero(d1["0.weight"][1]) == 0 and torch.count_nonzero(d1["4.weight"][2]) == 0
    assert not torch.equal(d1["0.weight"], d2["0.weight"])  # independent draws
    again = random_directions(model, 2, seed=3)
    assert all(torch.equal(again[0][k], d1[k]) for k in d1)  # reproducible
    _assert_identical(model, snap)

    # ignore=None: 1-D parameters normalized as one filter (whole vector to the parameter's norm)
    (dn,) = random_directions(model, 1, ignore=None, seed=1)
    for k in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert math.isclose(float(dn[k].norm()), float(named[k].detach().norm()), rel_tol=1e-12)
    # norm="layer": whole tensors
    (dl,) = random_directions(model, 1, norm="layer", seed=1)
    assert math.isclose(float(dl["4.weight"].norm()), float(named["4.weight"].detach().norm()), rel_tol=1e-12)
    assert torch.count_nonzero(dl["4.bias"]) == 0
    # norm=None: the raw Gaussian draw, same draw as the normalized one before rescaling
    (dr,) = random_directions(model, 1, norm=None, seed=1)
    row = dr["4.weight"][0]
    torch.testing.assert_close(dl["4.weight"][0] / dl["4.weight"][0].norm(), row / row.norm())
    # orthogonalize: zero inner product, norms kept
    o1, o2 = random_directions(model, 2, seed=3, orthogonalize=True)
    dot = sum(float((o1[k] * o2[k]).sum()) for k in o1)
    nrm = math.sqrt(sum(float((o2[k] ** 2).sum()) for k in o2))
    assert abs(dot) < 1e-10 * nrm ** 2
    assert math.isclose(nrm, math.sqrt(sum(float((d2[k] ** 2).sum()) for k in d2)), rel_tol=1e-12)
    # params= restricts the dict; float32 parameters give float32 directions
    (dp,) = random_directions(model.float(), 1, params=["4.weight"])
    assert list(dp) == ["4.weight"] and dp["4.weight"].dtype == torch.float32


# --------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_landscape_1d_equals_hand_computed_loss(reduction):
    model, loss_fn, batches = _mlp(reduction=reduction)
    model.train()  # dropout must be off inside, and the flag restored
    snap = _snapshot(model)
    (d,) = random_directions(model, 1, seed=5)
    res = landscape_1d(model, loss_fn, batches, d, span=(-2.0, 1.5), steps=9)
    assert isinstance(res, Landscape) and res.kind == "custom" and res.losses.shape == (9,)
    theta = _theta(model)
    for a, got in zip(res.coords[0], res.losses):
        want = _hand_loss(model, loss_fn, batches, {k: theta[k] + a * d[k] for k in d})
        assert abs(got - want) < 1e-10
    assert abs(res.center_loss - _hand_loss(model, loss_fn, batches, {})) < 1e-12
    np.testing.assert_allclose(res.coords[0], np.linspace(-2.0, 1.5, 9))
    assert model.training and model[2].training
    _assert_identical(model, snap)
    # "filter" is random_directions(seed) under the hood
    by_name = landscape_1d(model, loss_fn, batches, "filter", span=1.0, steps=5, seed=5)
    by_dict = landscape_1d(model, loss_fn, batches, d, span=1.0, steps=5)
    assert by_name.kind == "filter"
    np.testing.assert_allclose(by_name.losses, by_dict.losses, rtol=0, atol=1e-14)
    _assert_identical(model, snap)


class _ParamDependentBranch(nn.Module):
    """Python control flow on a parameter's value: torch.func.vmap cannot batch it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        if float(self.lin.weight.sum()) > 1e9:
            return x
        return torch.tanh(self.lin(x))


def test_batched_vmap_path_equals_point_loop():
    model, loss_fn, batches = _mlp(1)
    snap = _snapshot(model)
    kw = dict(span=((-1.0, 0.5), (-0.7, 1.2)), steps=(6, 5), seed=2)
    auto = landscape_2d(model, loss_fn, batches, **kw)
    loop = landscape_2d(model, loss_fn, batches, batch_points=1, **kw)
    chunks = landscape_2d(model, loss_fn, batches, batch_points=7, **kw)  # 30 points, uneven chunks
    assert auto.losses.shape == (6, 5) and auto.notes == loop.notes
    np.testing.assert_allclose(auto.losses, loop.losses, rtol=1e-13, atol=0)
    np.testing.assert_allclose(chunks.losses, loop.losses, rtol=1e-13, atol=0)
    assert not any("vmap" in n for n in auto.notes)
    # [i, j] is (alpha_i, beta_j)
    d1, d2 = random_directions(model, 2, seed=2)
    th = _theta(model)
    a, b = auto.coords[0][4], auto.coords[1][1]
    want = _hand_loss(model, loss_fn, batches, {k: th[k] + a * d1[k] + b * d2[k] for k in th})
    assert abs(auto.losses[4, 1] - want) < 1e-10
    _assert_identical(model, snap)

    # a model vmap cannot handle: falls back to the loop, says so, same numbers
    torch.manual_seed(0)
    weird = _ParamDependentBranch().double()
    X, Y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    mse = nn.MSELoss()
    fb = landscape_1d(weird, mse, (X, Y), span=1.0, steps=5)
    ref = landscape_1d(weird, mse, (X, Y), span=1.0, steps=5, batch_points=1)
    assert any("vmap" in n and "one point per forward" in n for n in fb.notes)
    np.testing.assert_allclose(fb.losses, ref.losses, rtol=1e-13)


class _MeanSquaredError(nn.Module):
    """MSE written out: nn.MSELoss(reduction="mean") cannot be differentiated forward-over-reverse
    in torch <= 2.15 (pytorch/pytorch#123996, "ZeroTensors are immutable"), which the Hessian needs."""

    reduction = "mean"

    def forward(self, out, y):
        return ((out - y) ** 2).mean()


def _linreg(loss_fn, seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(5, 1).double()
    X = torch.randn(30, 5, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    return model, loss_fn, [(X[:11], y[:11]), (X[11:], y[11:])]


@pytest.mark.parametrize("loss_fn", [_MeanSquaredError(), nn.MSELoss(reduction="sum")], ids=["mean", "sum"])
def test_eigen_slices_of_an_exactly_quadratic_loss(loss_fn):
    model, loss_fn, batches = _linreg(loss_fn)
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    X = torch.cat([x for x, _ in batches])
    Y = torch.cat([y for _, y in batches])

    def flat_loss(t):
        w, b = t[:5].view(shapes[0]), t[5:].view(shapes[1])
        return loss_fn(functional_call(model, {names[0]: w, names[1]: b}, (X,)), Y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    Hd = torch.autograd.functional.hessian(flat_loss, theta0)
    grad = torch.autograd.functional.jacobian(flat_loss, theta0)
    exact = torch.linalg.eigvalsh(Hd).numpy()[::-1]

    dirs, vals = eigen_directions(model, loss_fn, batches, 2)
    np.testing.assert_allclose(vals, exact[:2], rtol=1e-8)
    flat = [torch.cat([d[k].reshape(-1) for k in names]) for d in dirs]
    for v, lam in zip(flat, vals):
        assert abs(float(v.norm()) - 1) < 1e-10
        torch.testing.assert_close(Hd @ v, lam * v, rtol=0, atol=1e-7)

    res = landscape_1d(model, loss_fn, batches, "eigen", span=3.0, steps=13)
    assert res.kind == "eigen" and res.eigenvalues.shape == (1,)
    a = res.coords[0]
    c2, c1, c0 = np.polyfit(a, res.losses, 2)
    assert np.abs(np.polyval([c2, c1, c0], a) - res.losses).max() < 1e-10  # exactly quadratic
    assert math.isclose(2 * c2, float(vals[0]), rel_tol=1e-8)  # curvature = eigenvalue
    assert abs(c1 - float(grad @ flat[0])) < 1e-9
    assert abs(c0 - res.center_loss) < 1e-10

    # the plane of the top two eigenvectors: no cross term (H-orthogonal), exact quadratic form
    res2 = landscape_2d(model, loss_fn, batches, "eigen", span=2.0, steps=(7, 5))
    A, B = np.meshgrid(*res2.coords, indexing="ij")
    g1, g2 = float(grad @ flat[0]), float(grad @ flat[1])
    want = res2.center_loss + g1 * A + g2 * B + 0.5 * (vals[0] * A ** 2 + vals[1] * B ** 2)
    np.testing.assert_allclose(res2.losses, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res2.eigenvalues, vals, rtol=1e-10)


# --------------------------------------------------------------------------- checkpoints
def _checkpoints(model, k, scale=0.3, seed=7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        out.append({n: (t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype)) if t.is_floating_point() else t.clone()
                    for n, t in model.state_dict().items()})
    return out


def test_checkpoint_line_passes_through_both_checkpoints():
    model, loss_fn, batches = _mlp(2)
    snap = _snapshot(model)
    c0, c1 = _checkpoints(model, 2)
    res = checkpoint_landscape(model, loss_fn, batches, [c0, c1], steps=7, margin=0.25)
    a = res.coords[0]
    np.testing.assert_allclose(a, np.linspace(-0.25, 1.25, 7))  # 0 and 1 are grid points 1 and 5
    l0 = _hand_loss(model, loss_fn, batches, c0)
    l1 = _hand_loss(model, loss_fn, batches, c1)
    assert abs(res.losses[1] - l0) < 1e-10 and abs(res.losses[5] - l1) < 1e-10
    np.testing.assert_allclose(res.marks, [0.0, 1.0])
    np.testing.assert_allclose(res.mark_losses, [l0, l1], rtol=0, atol=1e-10)
    assert res.kind == "checkpoints" and abs(res.center_loss - l0) < 1e-10
    mid = _hand_loss(model, loss_fn, batches, {n: 0.25 * c0[n] + 0.75 * c1[n] for n in c0})  # a = 0.75, index 4
    assert abs(res.losses[4] - mid) < 1e-10
    # a module is a checkpoint too
    other = _mlp(2)[0]
    other.load_state_dict(c1)
    res_m = checkpoint_landscape(model, loss_fn, batches, [c0, other], steps=7)
    np.testing.assert_allclose(res_m.losses, res.losses, rtol=0, atol=1e-13)
    _assert_identical(model, snap)


def test_checkpoint_plane_reproduces_the_three_checkpoints():
    model, loss_fn, batches = _mlp(3)
    snap = _snapshot(model)
    cks = _checkpoints(model, 3, seed=11)
    res = checkpoint_landscape(model, loss_fn, batches, cks, steps=(9, 8), margin=0.2)
    assert res.losses.shape == (9, 8) and res.marks.shape == (3, 2)
    names = [n for n, _ in model.named_parameters()]
    vec = [torch.cat([c[n].reshape(-1) for n in names]).numpy() for c in cks]
    # Gram-Schmidt done independently here
    u, v = vec[1] - vec[0], vec[2] - vec[0]
    e1 = u / np.linalg.norm(u)
    w = v - (v @ e1) * e1
    e2 = w / np.linalg.norm(w)
    for k in range(3):
        a, b = res.marks[k]
        np.testing.assert_allclose(vec[0] + a * e1 + b * e2, vec[k], rtol=0, atol=1e-12)
        assert abs(res.mark_losses[k] - _hand_loss(model, loss_fn, batches, cks[k])) < 1e-10
    # the grid covers the three points with margins, and a grid point is the loss there
    assert res.coords[0][0] < res.marks[:, 0].min() and res.coords[0][-1] > res.marks[:, 0].max()
    assert res.coords[1][0] < 0 < res.marks[2, 1] < res.coords[1][-1]
    i, j = 6, 2
    p = vec[0] + res.coords[0][i] * e1 + res.coords[1][j] * e2
    shapes, sizes = [cks[0][n].shape for n in names], [cks[0][n].numel() for n in names]
    pd, s = {}, 0
    for n, sh, sz in zip(names, shapes, sizes):
        pd[n] = torch.from_numpy(p[s:s + sz].copy()).view(sh)
        s += sz
    assert abs(res.losses[i, j] - _hand_loss(model, loss_fn, batches, pd)) < 1e-10
    _assert_identical(model, snap)


# --------------------------------------------------------------------------- trajectory PCA
def test_trajectory_pca_recovers_a_planar_trajectory():
    g = torch.Generator().manual_seed(0)
    final = {"a.weight": torch.randn(4, 3, generator=g, dtype=torch.float64),
             "a.bias": torch.randn(4, generator=g, dtype=torch.float64)}
    p = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in final.items()}
    q = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in final.items()}
    st = torch.randn(9, 2, generator=g, dtype=torch.float64)
    st[-1] = 0.0  # the last checkpoint is the final weights
    traj = [{k: final[k] + s * p[k] + t * q[k] for k in final} for s, t in st.tolist()]
    res = trajectory_pca(traj)
    assert isinstance(res, TrajectoryPCA) and res.landscape is None
    assert abs(res.explained_variance_ratio.sum() - 1.0) < 1e-12
    assert res.explained_variance_ratio[0] >= res.explained_variance_ratio[1] > 0
    assert np.abs(res.off_plane).max() < 1e-6
    e1, e2 = res.directions
    dot = lambda x, y: sum(float((torch.as_tensor(x[k]) * torch.as_tensor(y[k])).sum()) for k in x)
    assert abs(dot(e1, e1) - 1) < 1e-12 and abs(dot(e2, e2) - 1) < 1e-12 and abs(dot(e1, e2)) < 1e-12
    for (x, y), th in zip(res.coords, traj):
        for k in final:
            torch.testing.assert_close(final[k] + x * torch.as_tensor(e1[k]) + y * torch.as_tensor(e2[k]), th[k],
                                       rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.coords[-1], 0.0, atol=1e-12)
    assert "directions" not in res.to_dict()


def test_trajectory_pca_matches_sklearn_and_draws_the_landscape():
    from sklearn.decomposition import PCA

    model, loss_fn, batches = _mlp(4)
    snap = _snapshot(model)
    g = torch.Generator().manual_seed(1)
    traj, cur = [], {k: v.detach().clone() for k, v in model.state_dict().items()}
    for _ in range(7):  # a random walk: not planar
        cur = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in cur.items()}
        traj.append(cur)
    names = [n for n, _ in model.named_parameters()]
    M = np.stack([torch.cat([t[n].reshape(-1) - traj[-1][n].reshape(-1) for n in names]).numpy() for t in traj])
    sk = PCA(n_components=2).fit(M)
    res = trajectory_pca(traj, model=model, loss_fn=loss_fn, data=batches, steps=(6, 5))
    np.testing.assert_allclose(res.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-9)
    proj = M @ sk.components_.T  # Li et al.: project theta_i - theta_final, uncentred
    np.testing.assert_allclose(np.abs(res.coords), np.abs(proj), rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.off_plane ** 2 + (proj ** 2).sum(1), (M ** 2).sum(1), rtol=1e-9)
    land = res.landscape
    assert land.kind == "pca" and land.losses.shape == (6, 5)
    np.testing.assert_allclose(land.marks, res.coords)
    final_loss = _hand_loss(model, loss_fn, batches, traj[-1])
    assert abs(land.center_loss - final_loss) < 1e-10 and abs(land.mark_losses[-1] - final_loss) < 1e-10
    assert land.coords[0][0] < res.coords[:, 0].min() and land.coords[1][-1] > res.coords[:, 1].max()
    # without the model the same numbers (the MLP has no buffers)
    alone = trajectory_pca(traj)
    np.testing.assert_allclose(alone.coords, res.coords, rtol=0, atol=1e-12)
    _assert_identical(model, snap)


# --------------------------------------------------------------------------- BatchNorm CNN
def test_cnn_with_batchnorm_eval_mode_and_untouched_running_stats():
    model, loss_fn, batches = _cnn()
    assert model.training
    snap = _snapshot(model)
    res = landscape_2d(model, loss_fn, batches, "filter", span=0.5, steps=4, seed=1)
    assert not any("vmap" in n for n in res.notes) and np.isfinite(res.losses).all()
    _assert_identical(model, snap)  # running_mean/var and num_batches_tracked untouched
    assert model.training and model[1].training
    d1, d2 = random_directions(model, 2, seed=1)
    th = _theta(model)
    a, b = res.coords[0][3], res.coords[1][0]
    want = _hand_loss(model, loss_fn, batches, {k: th[k] + a * d1[k] + b * d2[k] for k in th})  # eval-mode BN
    assert abs(res.losses[3, 0] - want) < 1e-10
    loop = landscape_2d(model, loss_fn, batches, "filter", span=0.5, steps=4, seed=1, batch_points=1)
    np.testing.assert_allclose(res.losses, loop.losses, rtol=1e-12)
    _assert_identical(model, snap)


# --------------------------------------------------------------------------- plots
def test_plots_return_axes():
    from matplotlib.figure import Figure

    model, loss_fn, batches = _mlp(5)
    one = landscape_1d(model, loss_fn, batches, steps=5)
    two = landscape_2d(model, loss_fn, batches, steps=4)
    assert one.plot().get_xlabel()
    assert two.plot() is not None and two.plot(kind="heatmap") is not None
    ax3 = two.plot(kind="surface")
    assert ax3.name == "3d"
    given = Figure().add_subplot(projection="3d")
    assert two.plot(given, kind="surface") is given
    with pytest.raises(ValueError, match="3D axes"):
        two.plot(Figure().add_subplot(), kind="surface")
    with pytest.raises(ValueError, match="drawn as a line"):
        one.plot(kind="surface")
    with pytest.raises(ValueError, match="kind must be"):
        two.plot(kind="wireframe")
    plane = checkpoint_landscape(model, loss_fn, batches, _checkpoints(model, 3), steps=4)
    line = checkpoint_landscape(model, loss_fn, batches, _checkpoints(model, 2), steps=4)
    assert plane.plot() is not None and line.plot() is not None
    traj = _checkpoints(model, 4, seed=3)
    pca = trajectory_pca(traj, model=model, loss_fn=loss_fn, data=batches, steps=4)
    assert pca.plot() is not None and trajectory_pca(traj).plot() is not None
    d = two.to_dict()
    assert d["type"] == "Landscape" and len(d["coords"]) == 2


# --------------------------------------------------------------------------- bad input
class _Exp(nn.Module):
    def forward(self, x):
        return torch.exp(torch.exp(x))


class _VectorLoss(nn.Module):
    reduction = "mean"

    def forward(self, out, y):
        return ((out - y) ** 2).mean(1)


def test_non_finite_points_are_kept_and_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Exp()).double()
    X, Y = torch.randn(8, 2, dtype=torch.float64), torch.zeros(8, 2, dtype=torch.float64)
    res = landscape_1d(model, nn.MSELoss(), (X, Y), span=(-1.0, 400.0), steps=9)
    bad = int((~np.isfinite(res.losses)).sum())
    assert 0 < bad < 9 and np.isfinite(res.center_loss)
    assert any(f"{bad} of 9 grid points gave a non-finite loss" in n for n in res.notes)


def test_bad_inputs_raise_clear_errors():
    model, loss_fn, batches = _mlp(6)
    named = dict(model.named_parameters())
    (good,) = random_directions(model, 1)
    with pytest.raises(ValueError, match="steps must be at least 2"):
        landscape_1d(model, loss_fn, batches, steps=1)
    with pytest.raises(ValueError, match="steps"):
        landscape_2d(model, loss_fn, batches, steps=(5, 1))
    with pytest.raises(TypeError, match="steps must be an integer"):
        landscape_1d(model, loss_fn, batches, steps=5.0)
    with pytest.raises(ValueError, match="lo < hi"):
        landscape_1d(model, loss_fn, batches, span=(1.0, -1.0))
    with pytest.raises(ValueError, match="lo < hi"):
        landscape_2d(model, loss_fn, batches, span=((-1, 1), (0.5, 0.5)))
    with pytest.raises(ValueError, match="positive"):
        landscape_2d(model, loss_fn, batches, span=-1.0)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        landscape_1d(model, loss_fn, batches, {**good, "9.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"has shape \(3, 3\) but the parameter has shape \(3, 6\)"):
        landscape_1d(model, loss_fn, batches, {**good, "3.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="zero everywhere"):
        landscape_1d(model, loss_fn, batches, {k: torch.zeros_like(v) for k, v in named.items()})
    with pytest.raises(ValueError, match="not among the selected params"):
        landscape_1d(model, loss_fn, batches, good, params=["0.weight"])
    with pytest.raises(ValueError, match="must be 'filter', 'eigen'"):
        landscape_1d(model, loss_fn, batches, "random")
    with pytest.raises(ValueError, match="pair"):
        landscape_2d(model, loss_fn, batches, good)
    with pytest.raises(TypeError, match="dict name -> tensor"):
        landscape_1d(model, loss_fn, batches, [1, 2, 3])
    with pytest.raises(ValueError, match="reduction"):
        landscape_1d(model, nn.CrossEntropyLoss(reduction="none"), batches, steps=3)
    with pytest.raises(ValueError, match="must return a scalar"):
        landscape_1d(nn.Linear(3, 3).double(), _VectorLoss(), (torch.randn(4, 3).double(), torch.randn(4, 3).double()))
    with pytest.raises(ValueError, match="norm must be"):
        random_directions(model, norm="l2")
    with pytest.raises(ValueError, match="ignore must be"):
        random_directions(model, ignore="bias")
    with pytest.raises(ValueError, match="batch_points must be at least 1"):
        landscape_1d(model, loss_fn, batches, steps=3, batch_points=0)

    cnn, cl, cb = _cnn()
    (cd,) = random_directions(cnn, 1)
    with pytest.raises(ValueError, match="buffer"):
        landscape_1d(cnn, cl, cb, {**cd, "1.running_mean": torch.zeros(4, dtype=torch.float64)})

    cks = _checkpoints(model, 4)
    for k in (1, 4):
        with pytest.raises(ValueError, match=r"needs 2 checkpoints \(a line\) or 3 \(a plane\), got " + str(k)):
            checkpoint_landscape(model, loss_fn, batches, cks[:k])
    with pytest.raises(TypeError, match="list of 2 or 3"):
        checkpoint_landscape(model, loss_fn, batches, cks[0])
    missing = {k: v for k, v in cks[1].items() if k != "3.bias"}
    with pytest.raises(ValueError, match=r"checkpoint 1's keys differ from the model's: missing \['3.bias'\]"):
        checkpoint_landscape(model, loss_fn, batches, [cks[0], missing])
    prefixed = {"module." + k: v for k, v in cks[1].items()}
    with pytest.raises(ValueError, match="DataParallel prefix"):
        checkpoint_landscape(model, loss_fn, batches, [cks[0], prefixed])
    wrong = {**cks[1], "0.weight": torch.zeros(2, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match="has shape"):
        checkpoint_landscape(model, loss_fn, batches, [cks[0], wrong])
    line = {k: 2 * cks[1][k] - cks[0][k] for k in cks[0]}  # on the line through cks[0], cks[1]
    with pytest.raises(ValueError, match="collinear"):
        checkpoint_landscape(model, loss_fn, batches, [cks[0], cks[1], line])
    with pytest.raises(ValueError, match="identical"):
        checkpoint_landscape(model, loss_fn, batches, [cks[0], cks[0], cks[1]])
    with pytest.raises(ValueError, match="margin"):
        checkpoint_landscape(model, loss_fn, batches, cks[:2], margin=-0.1)

    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        trajectory_pca(cks[:2])
    with pytest.raises(ValueError, match="on one line"):
        trajectory_pca([cks[0], cks[1], line])
    with pytest.raises(ValueError, match="model, loss_fn and data together"):
        trajectory_pca(cks, model=model, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="keys differ from checkpoint 0"):
        trajectory_pca([cks[0], cks[1], missing])
