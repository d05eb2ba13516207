"""Input-space geometry: the pull-back metric J^T J and the input Hessian of the loss, against
closed forms (linear maps, quadratic losses) and dense autograd Jacobians/Hessians."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.autograd.function import once_differentiable

from shapelens.curvature.input_geometry import InputCurvature, InputMetric, input_curvature, input_metric
from shapelens.probe import UnknownLayerError


def _linear(W, bias=True):
    lin = nn.Linear(W.shape[1], W.shape[0], bias=bias).double()
    with torch.no_grad():
        lin.weight.copy_(W)
        if bias:
            lin.bias.normal_()
    return lin


def _mlp(d_in=4, hidden=7, d_out=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).double()


class _Conv(nn.Module):
    """A tiny CNN on (N, 1, 8, 8) images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Linear(3 * 6 * 6, 5)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


# ---------------------------------------------------------------------------------------
# the metric against closed forms and dense Jacobians
# ---------------------------------------------------------------------------------------


def test_linear_map_metric_is_WtW_everywhere():
    torch.manual_seed(0)
    W = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64) * 10
    res = input_metric(_linear(W), x, method="dense")
    assert isinstance(res, InputMetric) and res.method == "dense" and res.metric.shape == (6, 3, 3)
    for G in res.metric:
        np.testing.assert_allclose(G, (W.T @ W).numpy(), rtol=1e-12, atol=1e-12)
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    np.testing.assert_allclose(res.eigenvalues, np.tile(s ** 2, (6, 1)), rtol=1e-12)
    np.testing.assert_allclose(res.log_volume, np.log(s).sum(), rtol=1e-12)  # 0.5 log det W^T W
    assert res.rank == 3 and res.input_dim == 3 and res.output_dim == 5
    json.dumps(res.to_dict())


def test_mlp_metric_equals_autograd_jacobian():
    model = _mlp()
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.float64)
    res = input_metric(model, x)  # auto -> dense for d = 4
    assert res.method == "dense"
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x[i])
        G = (J.T @ J).numpy()
        np.testing.assert_allclose(res.metric[i], G, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(res.eigenvalues[i], np.linalg.eigvalsh(G)[::-1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res.log_volume[i], 0.5 * np.linalg.slogdet(G)[1], rtol=1e-9)


def test_lanczos_equals_dense_top_k_digits_sized():
    model = _mlp(64, 32, 10, seed=2)
    torch.manual_seed(3)
    x = torch.rand(6, 64, dtype=torch.float64)
    dense = input_metric(model, x, method="dense")
    for k in (5, 10):
        lz = input_metric(model, x, method="lanczos", k=k)
        assert lz.metric is None and lz.eigenvalues.shape == (6, k) and lz.n_matvec > 0
        np.testing.assert_allclose(lz.eigenvalues, dense.eigenvalues[:, :k], rtol=1e-6)
    # k = 10 >= rank (m = 10 < d = 64): the same pseudo-determinant as dense
    assert dense.rank == lz.rank == 10
    np.testing.assert_allclose(lz.log_volume, dense.log_volume, rtol=1e-8)


def test_lanczos_equals_dense_on_images():
    torch.manual_seed(4)
    model = _Conv().double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    dense = input_metric(model, x)
    assert dense.method == "dense" and dense.metric.shape == (4, 64, 64)
    lz = input_metric(model, x, method="lanczos", k=4)
    np.testing.assert_allclose(lz.eigenvalues, dense.eigenvalues[:, :4], rtol=1e-6)
    J = torch.autograd.functional.jacobian(lambda z: model(z.reshape(1, 1, 8, 8))[0], x[0].reshape(-1))
    np.testing.assert_allclose(dense.metric[0], (J.T @ J).numpy(), rtol=1e-10, atol=1e-12)


def test_float32_model_lanczos_close_to_dense():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    x = torch.rand(3, 1, 8, 8)
    dense = input_metric(model, x, method="dense")
    lz = input_metric(model, x, method="lanczos", k=6)
    assert lz.eigenvalues.dtype == np.float64
    np.testing.assert_allclose(lz.eigenvalues, dense.eigenvalues[:, :6], rtol=1e-4)
    np.testing.assert_allclose(lz.log_volume, input_metric(model, x, rank=6).log_volume, rtol=1e-4)


def test_layer_metric_equals_truncated_model():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    for method in ("dense", "lanczos"):
        a = input_metric(model, x, layer="3", method=method, k=4)
        b = input_metric(model[:4], x, method=method, k=4)
        assert a.layer == "3" and a.output_dim == 6
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.log_volume, b.log_volume, rtol=1e-12)
        if method == "dense":
            np.testing.assert_allclose(a.metric, b.metric, rtol=1e-12, atol=1e-14)
    # a nested name
    outer = nn.Sequential(nn.Identity(), model)
    c = input_metric(outer, x, layer="1.3")
    np.testing.assert_allclose(c.metric, input_metric(model[:4], x).metric, rtol=1e-12, atol=1e-14)


def test_pseudo_determinant_when_output_smaller_than_input():
    torch.manual_seed(7)
    W = torch.randn(2, 6, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    closed = 0.5 * np.log(s ** 2).sum()
    dense = input_metric(_linear(W), x, method="dense")
    assert dense.rank == 2 and any("pseudo-determinant" in n for n in dense.notes)
    np.testing.assert_allclose(dense.log_volume, closed, rtol=1e-12)
    np.testing.assert_allclose(dense.eigenvalues[:, :2], np.tile(s ** 2, (4, 1)), rtol=1e-12)
    np.testing.assert_allclose(dense.eigenvalues[:, 2:], 0.0, atol=1e-14)
    # Lanczos with k > m: the zero eigenvalues are found (the Krylov space closes), same volume
    lz = input_metric(_linear(W), x, method="lanczos", k=5)
    np.testing.assert_allclose(lz.eigenvalues[:, :2], np.tile(s ** 2, (4, 1)), rtol=1e-10)
    np.testing.assert_allclose(lz.eigenvalues[:, 2:], 0.0, atol=1e-12)
    np.testing.assert_allclose(lz.log_volume, closed, rtol=1e-10)


def test_lanczos_finds_repeated_eigenvalues_by_deflation():
    x = torch.randn(3, 6, dtype=torch.float64)
    res = input_metric(nn.Identity(), x, method="lanczos", k=4)  # G = I: one distinct eigenvalue
    np.testing.assert_allclose(res.eigenvalues, 1.0, rtol=1e-12)
    np.testing.assert_allclose(res.log_volume, 0.0, atol=1e-12)
    # G = diag(4, 1, 1, 1, 1, 1): the copies of 1 must come from the complement of the found pairs
    W = torch.diag(torch.tensor([2.0, 1, 1, 1, 1, 1], dtype=torch.float64))
    res = input_metric(_linear(W), x, method="lanczos", k=3)
    np.testing.assert_allclose(res.eigenvalues, np.tile([4.0, 1.0, 1.0], (3, 1)), rtol=1e-10)


def test_softmax_rank_and_explicit_rank():
    model = nn.Sequential(_mlp(3, 6, 2, seed=8), nn.Softmax(dim=-1))
    x = torch.randn(8, 3, dtype=torch.float64) * 0.3  # unsaturated: structural rank 1 is clean
    res = input_metric(model, x)
    assert res.rank == 1  # two probabilities summing to one: rank <= 1
    np.testing.assert_allclose(res.log_volume, 0.5 * np.log(res.eigenvalues[:, 0]), rtol=1e-12)
    res2 = input_metric(model, x, rank=1)
    np.testing.assert_allclose(res2.log_volume, res.log_volume)


def test_eval_mode_and_flags_restored():
    torch.manual_seed(9)
    base = _mlp(3, 8, 4, seed=9)
    model = nn.Sequential(base[0], base[1], nn.Dropout(0.5), base[2]).train()
    x = torch.randn(4, 3, dtype=torch.float64)
    a = input_metric(model, x)
    b = input_metric(base, x)
    np.testing.assert_allclose(a.metric, b.metric, rtol=1e-12)  # dropout off during the measurement
    assert model.training and model[2].training
    c = input_curvature(model, nn.CrossEntropyLoss(), x, torch.tensor([0, 1, 2, 3]))
    assert model.training and np.all(np.isfinite(c.eigenvalues))


def test_model_that_cannot_be_vmapped_falls_back_to_a_loop():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()

        def forward(self, x):
            h = self.lin(x)
            return torch.tanh(h) if float(h.detach().sum()) > 0 else h ** 2  # data-dependent control flow

    torch.manual_seed(10)
    model = Branchy()
    x = torch.randn(5, 3, dtype=torch.float64)
    res = input_metric(model, x, method="dense")
    for i in range(5):
        J = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x[i])
        np.testing.assert_allclose(res.metric[i], (J.T @ J).numpy(), rtol=1e-10, atol=1e-12)


class _Cube(torch.autograd.Function):
    """x**3 with a backward that cannot be differentiated again (as custom kernels often are)."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * t


class _CubeNet(nn.Module):
    def __init__(self, residual):
        super().__init__()
        self.residual = residual
        self.a = nn.Linear(4, 3).double()
        self.b = nn.Linear(4, 3).double()

    def forward(self, x):
        out = _Cube.apply(self.a(x))
        return out + torch.tanh(self.b(x)) if self.residual else out


@pytest.mark.parametrize("residual", [False, True])
def test_metric_with_a_backward_that_is_not_differentiable(residual):
    # double backward drops (residual=False: fails on) the custom function's terms; the
    # first-point cross-check must switch to torch.func and still give J^T J exactly
    torch.manual_seed(13)
    model = _CubeNet(residual)
    x = torch.randn(3, 4, dtype=torch.float64)
    lz = input_metric(model, x, method="lanczos", k=3)
    dense = input_metric(model, x, method="dense")
    assert any("torch.func" in n for n in lz.notes)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x[i])
        G = (J.T @ J).numpy()
        np.testing.assert_allclose(dense.metric[i], G, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(lz.eigenvalues[i], np.linalg.eigvalsh(G)[::-1][:3], rtol=1e-6)
    with pytest.warns(UserWarning, match="second derivatives"):
        input_curvature(model, lambda o, t: (o ** 2).sum(), x, torch.zeros(3))


# ---------------------------------------------------------------------------------------
# input curvature of the loss
# ---------------------------------------------------------------------------------------


def test_input_curvature_of_quadratic_form_is_top_eigenvalue_of_A():
    torch.manual_seed(11)
    B = torch.randn(7, 7, dtype=torch.float64)
    A = B + B.T  # indefinite

    def quad(out, y):
        return 0.5 * (out @ A @ out.T).squeeze()

    x = torch.randn(3, 7, dtype=torch.float64)
    res = input_curvature(nn.Identity(), quad, x, torch.zeros(3), k=2)
    assert isinstance(res, InputCurvature) and res.eigenvalues.shape == (3, 2)
    top = np.linalg.eigvalsh(A.numpy())[::-1][:2]
    np.testing.assert_allclose(res.eigenvalues, np.tile(top, (3, 1)), rtol=1e-9)
    np.testing.assert_allclose(res.gradient_norm, (x @ A).norm(dim=1).numpy(), rtol=1e-12)  # grad = A x
    json.dumps(res.to_dict())


def test_input_curvature_matches_dense_hessian_cross_entropy():
    model = _mlp(5, 8, 3, seed=12)
    torch.manual_seed(12)
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 0])
    loss_fn = nn.CrossEntropyLoss()
    res = input_curvature(model, loss_fn, x, y, k=2)
    for i in range(4):
        def f(z, i=i):
            return loss_fn(model(z[None]), y[i:i + 1])

        H = torch.autograd.functional.hessian(f, x[i]).numpy()
        np.testing.assert_allclose(res.eigenvalues[i], np.linalg.eigvalsh(H)[::-1][:2], rtol=1e-7, atol=1e-12)
        g = torch.autograd.functional.jacobian(f, x[i])
        np.testing.assert_allclose(res.gradient_norm[i], float(g.norm()), rtol=1e-12)
        np.testing.assert_allclose(res.loss[i], float(f(x[i]).detach()), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Zavatone-Veth et al. (2023): trained classifiers magnify areas near the decision boundary
# ---------------------------------------------------------------------------------------


def test_trained_classifier_magnifies_near_the_decision_boundary():
    torch.manual_seed(0)
    n = 200  # two unit Gaussian blobs at (-2, 0) and (2, 0): the Bayes boundary is x1 = 0
    X = torch.cat([torch.randn(n, 2) + torch.tensor([-2.0, 0.0]), torch.randn(n, 2) + torch.tensor([2.0, 0.0])]).double()
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(200):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(X), y)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.1
    g = torch.linspace(-4, 4, 21, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    dist = grid[:, 0].abs().numpy()  # distance to the boundary
    hidden = input_metric(net, grid, layer="1")  # the hidden representation, as in the paper
    assert hidden.rank == 2 and np.all(np.isfinite(hidden.log_volume))
    rho_hidden = spearmanr(hidden.log_volume, dist)[0]
    probs = input_metric(nn.Sequential(net, nn.Softmax(dim=-1)), grid, rank=1)  # softmax: rank <= 1
    rho_probs = spearmanr(probs.log_volume, dist)[0]
    assert rho_hidden < -0.3, rho_hidden
    assert rho_probs < -0.5, rho_probs
    # plots: heat map for 2-D inputs, histogram otherwise
    ax = hidden.plot()
    assert ax.get_title() and len(ax.figure.axes) == 2  # the heat map and its colour bar
    ax = input_metric(_mlp(), torch.randn(20, 4, dtype=torch.float64)).plot()
    assert ax.patches  # histogram bars
    ax = hidden.plot(X2d=grid.numpy())
    input_curvature(net, nn.CrossEntropyLoss(), grid[:5], torch.zeros(5, dtype=torch.long)).plot()


# ---------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = _mlp()
    x = torch.randn(3, 4, dtype=torch.float64)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/infinite"):
        input_metric(model, bad)
    with pytest.raises(ValueError, match="NaN/infinite"):
        input_curvature(model, nn.CrossEntropyLoss(), bad, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        input_metric(model, torch.zeros(0, 4))
    with pytest.raises(TypeError, match="float"):
        input_metric(model, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="float"):
        input_curvature(model, nn.CrossEntropyLoss(), np.ones((3, 4), dtype=np.int64), [0, 1, 2])
    with pytest.raises(ValueError, match="batch-first"):
        input_metric(model, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 1"):
        input_metric(model, x, k=0)
    with pytest.raises(ValueError, match="k <= 4"):
        input_metric(model, x, method="lanczos", k=5)
    with pytest.raises(ValueError, match="k <= 4"):
        input_curvature(model, nn.CrossEntropyLoss(), x, torch.zeros(3, dtype=torch.long), k=5)
    with pytest.raises(ValueError, match="at least 1"):
        input_curvature(model, nn.CrossEntropyLoss(), x, torch.zeros(3, dtype=torch.long), k=0)
    with pytest.raises(ValueError, match="method"):
        input_metric(model, x, method="exact")
    with pytest.raises(ValueError, match="rank"):
        input_metric(model, x, rank=5)
    with pytest.raises(UnknownLayerError, match="available names.*0, 1, 2"):
        input_metric(model, x, layer="fc1")
    with pytest.raises(KeyError):  # also a KeyError, like shapelens.probe
        input_metric(model, x, layer="3")

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 2).double()
            self.spare = nn.Linear(4, 2).double()

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="never called"):
        input_metric(Unused(), x, layer="spare")
    with pytest.raises(ValueError, match="not a scalar"):
        input_curvature(model, nn.CrossEntropyLoss(reduction="none"), x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one target per input"):
        input_curvature(model, nn.CrossEntropyLoss(), x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="nn.Module"):
        input_metric(lambda z: z, x)
