"""Curvature operators against exact dense matrices of a small model."""

import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dense_reference import flat_loss

from shapelens.curvature import GGN, EmpiricalFisher, Hessian, eigenvalues, trace


def _setup(seed=0, reduction="mean"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 3)).double()
    X = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    batches = [(X[:15], y[:15]), (X[15:], y[15:])]  # unequal batches: the weighting matters
    return model, nn.CrossEntropyLoss(reduction=reduction), batches, X, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hessian_matches_dense_autograd(reduction):
    model, loss_fn, batches, X, y = _setup(reduction=reduction)
    names = [n for n, _ in model.named_parameters()]
    f, theta0 = flat_loss(model, loss_fn, X, y, names)
    dense = torch.autograd.functional.hessian(f, theta0)  # eval mode: dropout off
    model.train()
    H = Hessian(model, loss_fn, batches)
    torch.testing.assert_close(H.to_dense(), dense, rtol=1e-9, atol=1e-10)  # dropout off inside too
    assert model.training and model[2].training, "train/eval state must be restored"
    v = torch.randn(H.shape[0], dtype=torch.float64)
    torch.testing.assert_close(H @ v, dense @ v)
    np.testing.assert_allclose(H.to_scipy() @ v.numpy(), (dense @ v).numpy(), rtol=1e-9)


def test_per_block_hessian_is_the_diagonal_block():
    model, loss_fn, batches, X, y = _setup(1)
    full = Hessian(model, loss_fn, batches).to_dense()
    block = Hessian(model, loss_fn, batches, params=["3.weight", "3.bias"]).to_dense()
    n0 = sum(p.numel() for n, p in model.named_parameters() if n.startswith("0."))
    torch.testing.assert_close(block, full[n0:, n0:])
    same = Hessian(model, loss_fn, batches, params=list(model[3].parameters())).to_dense()
    torch.testing.assert_close(same, block)


def test_ggn_matches_jacobian_formula_and_is_psd():
    model, loss_fn, batches, X, y = _setup(2)
    G = GGN(model, loss_fn, batches).to_dense()
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def out(theta):
        p, i = {}, 0
        for n in names:
            s = params[n].numel()
            p[n] = theta[i:i + s].view(params[n].shape)
            i += s
        return functional_call(model.eval(), p, (X,)).reshape(-1)

    J = torch.autograd.functional.jacobian(out, theta0)  # (40*3, n)
    o = out(theta0).detach()
    HL = torch.autograd.functional.hessian(lambda z: loss_fn(z.view(40, 3), y), o)
    torch.testing.assert_close(G, J.T @ HL @ J, rtol=1e-9, atol=1e-10)
    assert torch.linalg.eigvalsh(G).min() > -1e-10


def test_empirical_fisher_matches_per_example_gradients():
    model, loss_fn, batches, X, y = _setup(3)
    F = EmpiricalFisher(model, loss_fn, batches).to_dense()
    names = [n for n, _ in model.named_parameters()]
    grads = []
    for i in range(40):
        f, theta0 = flat_loss(model, loss_fn, X[i:i + 1], y[i:i + 1], names)
        grads.append(torch.autograd.functional.jacobian(f, theta0))
    Gm = torch.stack(grads)
    torch.testing.assert_close(F, Gm.T @ Gm / 40, rtol=1e-9, atol=1e-12)


def test_lanczos_finds_extreme_eigenvalues_with_small_residuals():
    model, loss_fn, batches, X, y = _setup(4)
    H = Hessian(model, loss_fn, batches)
    exact = np.linalg.eigvalsh(H.to_dense().numpy())
    top = eigenvalues(H, k=3, which="largest", return_eigenvectors=True)
    np.testing.assert_allclose(top.eigenvalues, exact[-3:], rtol=1e-6, atol=1e-9)
    assert np.all(top.residuals <= 1e-5 * np.abs(exact).max())
    u = top.eigenvectors[:, -1]
    np.testing.assert_allclose(H.to_dense().numpy() @ u, exact[-1] * u, atol=1e-5)
    both = eigenvalues(H, k=2, which="both")
    np.testing.assert_allclose(both.eigenvalues, np.r_[exact[:2], exact[-2:]], rtol=1e-6, atol=1e-8)
    assert top.n_matvec <= H.shape[0]


def test_lanczos_beats_power_iteration_count_on_a_known_spectrum():
    rng = np.random.default_rng(0)
    Qm, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    lam = np.r_[np.linspace(10, 9, 5), rng.uniform(-1, 1, 295)]
    A = torch.from_numpy((Qm * lam) @ Qm.T)
    res = eigenvalues(A, k=5, tol=1e-8)
    np.testing.assert_allclose(res.eigenvalues, np.sort(lam)[-5:], rtol=1e-7)
    assert res.n_matvec < 100


def test_trace_estimators_are_unbiased_and_hutchpp_is_tighter():
    rng = np.random.default_rng(1)
    Qm, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    lam = 100.0 * 0.8 ** np.arange(200)  # fast decay, like a Hessian spectrum
    A = torch.from_numpy((Qm * lam) @ Qm.T)
    exact = lam.sum()
    h = trace(A, "hutchinson", samples=90, seed=0)
    hp = trace(A, "hutch++", samples=90, seed=0)
    assert abs(h.trace - exact) < 4 * h.std_error
    assert abs(hp.trace - exact) < 1e-3 * exact
    assert hp.std_error < h.std_error / 10


def test_bad_inputs():
    model, loss_fn, batches, *_ = _setup()
    with pytest.raises(ValueError, match="not a parameter"):
        Hessian(model, loss_fn, batches, params=["nope"])
    H = Hessian(model, loss_fn, batches)
    with pytest.raises(ValueError, match="acts on"):
        H @ torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="reduction"):
        Hessian(model, nn.CrossEntropyLoss(reduction="none"), batches)
    with pytest.raises(ValueError, match="k <="):
        eigenvalues(H, k=1000)
    with pytest.raises(ValueError, match="method"):
        trace(H, "nope")


def test_slq_quadrature_reproduces_moments_and_exact_nodes():
    from shapelens.curvature import spectral_density

    rng = np.random.default_rng(2)
    Qm, _ = np.linalg.qr(rng.standard_normal((120, 120)))
    lam = np.r_[rng.normal(0, 0.5, 110), [8, 9, 10, 20, 30, 40, 50, 60, 70, 80]]
    A = torch.from_numpy((Qm * lam) @ Qm.T)
    sd = spectral_density(A, n_vectors=20, n_iter=40, seed=0)
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=1e-10)
    # Gauss quadrature with 40 nodes is exact for polynomials of degree <= 79: tr(A^k)/n per vector
    m1 = (sd.weights * sd.nodes).sum(1).mean()
    m2 = (sd.weights * sd.nodes ** 2).sum(1).mean()
    assert abs(m1 - lam.mean()) < 0.15 * np.abs(lam).mean()
    assert abs(m2 / (lam ** 2).mean() - 1) < 0.25
    # the outliers are resolved as nodes
    assert np.abs(sd.nodes.max() - 80) < 1e-6
    area = float(np.sum((sd.density[1:] + sd.density[:-1]) / 2 * np.diff(sd.grid)))
    assert area == pytest.approx(1.0, rel=1e-3)
    sd.plot()
    # a full Krylov space makes the quadrature exact: nodes are the eigenvalues
    full = spectral_density(A, n_vectors=1, n_iter=120, seed=1)
    assert np.min(np.abs(full.nodes[0][:, None] - lam[None, :]), axis=1).max() < 1e-6


def test_stochastic_diagonal_converges_to_the_exact_diagonal():
    from shapelens.curvature import diagonal

    model, loss_fn, batches, *_ = _setup(5)
    H = Hessian(model, loss_fn, batches)
    exact = torch.diagonal(H.to_dense()).numpy()
    est = diagonal(H, samples=400, seed=0)
    off = H.to_dense().numpy() - np.diag(exact)
    # unbiased with variance sum_j A_ij^2 / samples per entry: 5 standard errors
    se = np.sqrt((off ** 2).sum(1) / 400)
    assert np.all(np.abs(est - exact) <= 5 * se + 1e-12)


def _least_squares(seed=0, d=3):
    """A linear model at its exact least-squares minimum: the loss is exactly quadratic,
    L(theta + delta) - L(theta) = delta^T A delta with A = X^T X / N."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(200, d, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64)[:d]
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:d] + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(X, y[:, None]).solution.T)
    loss = nn.MSELoss()
    return model, loss, [(X[:120], y[:120, None]), (X[120:], y[120:, None])], (X.T @ X / 200)


def test_epsilon_sharpness_equals_the_box_maximum_of_a_quadratic():
    import itertools

    from shapelens.curvature import epsilon_sharpness

    model, loss, batches, A = _least_squares()
    eps = 1e-2
    theta = model.weight.detach().reshape(-1)
    half = eps * (theta.abs() + 1)
    with torch.no_grad():
        base = float(sum(len(y) / 200 * loss(model(x), y) for x, y in batches))
    # a convex quadratic is maximised over a box at a vertex: enumerate all 8
    best = max(float((torch.tensor(s, dtype=torch.float64) * half) @ A @ (torch.tensor(s, dtype=torch.float64) * half))
               for s in itertools.product([-1, 1], repeat=3))
    res = epsilon_sharpness(model, loss, batches, eps=eps, restarts=8, steps=10)
    assert res.loss == pytest.approx(base, rel=1e-12)
    assert res.value == pytest.approx(100 * best / (1 + base), rel=1e-6)


def test_adaptive_sharpness_equals_rho_squared_top_eigenvalue_of_scaled_hessian():
    from shapelens.curvature import adaptive_sharpness

    model, loss, batches, A = _least_squares(1)
    D = torch.diag(model.weight.detach().reshape(-1).abs())
    lam = float(torch.linalg.eigvalsh(D @ A @ D)[-1])
    res = adaptive_sharpness(model, loss, batches, rho=0.1, steps=60)
    assert res.value == pytest.approx(0.01 * lam, rel=1e-6)
    # scale invariance: rescaling the weights and the inputs inversely leaves it unchanged
    model2, loss2, b2, _ = _least_squares(1)
    with torch.no_grad():
        model2.weight.mul_(torch.tensor([[2.0, 0.5, 4.0]], dtype=torch.float64))
    b2 = [(x / torch.tensor([2.0, 0.5, 4.0], dtype=torch.float64), y) for x, y in b2]
    assert adaptive_sharpness(model2, loss2, b2, rho=0.1, steps=60).value == pytest.approx(res.value, rel=1e-6)


def test_sharpness_bad_inputs():
    from shapelens.curvature import adaptive_sharpness, epsilon_sharpness

    model, loss, batches, _ = _least_squares()
    with pytest.raises(ValueError, match="eps must be positive"):
        epsilon_sharpness(model, loss, batches, eps=0)
    with pytest.raises(ValueError, match="rho must be positive"):
        adaptive_sharpness(model, loss, batches, rho=-1)
    with pytest.raises(ValueError, match="reduction"):
        adaptive_sharpness(model, nn.MSELoss(reduction="none"), batches)


def test_preflight_refuses_bad_batches_naming_them():
    model, loss_fn, batches, X, y = _setup(5)
    bad = [batches[0], (X[15:].clone(), y[15:])]
    bad[1][0][3, 1] = float("nan")
    with pytest.raises(ValueError, match="batch 1"):
        Hessian(model, loss_fn, bad)
    with pytest.raises(ValueError, match="batch 1 is empty"):
        Hessian(model, loss_fn, [batches[0], (X[:0], y[:0])])
    with pytest.raises(ValueError, match="integer inputs.*x.float"):
        Hessian(model, loss_fn, [(torch.randint(0, 3, (8, 3)), y[:8])])
    with pytest.raises(ValueError, match="not a scalar"):
        Hessian(model, lambda o, t: (o - o.mean()).pow(2).sum(1), batches)
    with pytest.raises(ValueError, match="inputs but"):
        Hessian(model, loss_fn, [(X[:5], y[:4])])
    with pytest.raises(TypeError, match="torch tensors"):
        Hessian(model, loss_fn, [(X.numpy(), y.numpy())])


def test_parameters_without_gradient_are_excluded_with_a_note():
    torch.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.head = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 2)  # e.g. an auxiliary head the loss never sees

        def forward(self, x):
            return self.head(torch.tanh(self.body(x)))

    model = TwoHeads().double()
    X = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    with pytest.warns(UserWarning, match="unused.weight, unused.bias"):
        H = Hessian(model, nn.CrossEntropyLoss(), (X, y))
    assert H.excluded == ("unused.weight", "unused.bias")
    assert H.dim == 4 * 3 + 4 + 4 * 3 + 3
    e = eigenvalues(H, k=1)
    assert e.notes and "unused.weight" in e.notes[0]
    with torch.no_grad():
        assert H.loss == pytest.approx(float(nn.CrossEntropyLoss()(model(X), y)), rel=1e-12)
    with pytest.raises(ValueError, match="none of the selected parameters gets a gradient"):
        Hessian(model, nn.CrossEntropyLoss(), (X, y), params=["unused.weight"])


def test_spectral_sharpness_numbers_equal_the_dense_hessian():
    from shapelens.curvature import max_eigenvalue_sharpness, trace_sharpness

    model, loss_fn, batches, X, y = _setup(6)
    dense = Hessian(model, loss_fn, batches).to_dense()
    lam = torch.linalg.eigvalsh(dense)
    s = max_eigenvalue_sharpness(model, loss_fn, batches)
    assert s.value == pytest.approx(float(lam[-1]), rel=1e-6)
    assert s.n_matvec > 0 and "largest Hessian eigenvalue" in s.definition
    t = trace_sharpness(model, loss_fn, batches, samples=90, method="hutchinson")
    assert abs(t.value - float(torch.trace(dense))) < 3 * t.std_error
    assert t.std_error > 0


_DIST_WORKER = r'''
import os, sys
import numpy as np, torch
import torch.distributed as dist
from torch import nn
from shapelens.curvature import Hessian, GGN, eigenvalues, trace
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
X = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
# unequal shards: rank 0 gets 15 points in two batches, rank 1 the other 25 in one
shard = [(X[:10], y[:10]), (X[10:15], y[10:15])] if rank == 0 else [(X[15:], y[15:])]
v = torch.randn(38, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
H = Hessian(model, nn.CrossEntropyLoss(), shard)
G = GGN(model, nn.CrossEntropyLoss(reduction="sum"), shard)
out = dict(Hv=(H @ v).numpy(), Gv=(G @ v).numpy(), top=eigenvalues(H, k=3).eigenvalues,
           tr=np.array([trace(H, samples=30, seed=1).trace]), loss=np.array([H.loss]), n=np.array([H.n_samples]))
np.savez(os.path.join(sys.argv[1], f"rank{rank}.npz"), **out)
dist.barrier()  # both ranks done before either tears the group down (else gloo can abort at exit)
dist.destroy_process_group()
'''


def test_distributed_gloo_two_processes_equal_single_process(tmp_path):
    import socket
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_DIST_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    v = torch.randn(38, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    H = Hessian(model, nn.CrossEntropyLoss(), (X, y))
    G = GGN(model, nn.CrossEntropyLoss(reduction="sum"), (X, y))
    single = dict(Hv=(H @ v).numpy(), Gv=(G @ v).numpy(), top=eigenvalues(H, k=3).eigenvalues,
                  tr=np.array([trace(H, samples=30, seed=1).trace]), loss=np.array([H.loss]), n=np.array([40]))
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        for key, want in single.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-10, atol=1e-12, err_msg=f"rank {rank}: {key}")


def test_mse_loss_operators_match_the_dense_hessian():
    """nn.MSELoss (mean) closes over float targets: a torch.func bug (pytorch#123996) the
    operators must work around."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X = torch.randn(30, 3, dtype=torch.float64)
    Y = torch.randn(30, 2, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    f, theta0 = flat_loss(model, nn.MSELoss(), X, Y, names)
    dense = torch.autograd.functional.hessian(f, theta0)
    torch.testing.assert_close(Hessian(model, nn.MSELoss(), [(X[:10], Y[:10]), (X[10:], Y[10:])]).to_dense(), dense)
    G = GGN(model, nn.MSELoss(), (X, Y)).to_dense()
    J = torch.autograd.functional.jacobian(lambda t: functional_call(model, {n: t[i:j].view_as(p) for n, p, i, j in _slices(model)}, (X,)).reshape(-1), theta0)
    torch.testing.assert_close(G, J.T @ J * (2.0 / Y.numel()))


def _slices(model):
    i = 0
    for n, p in model.named_parameters():
        yield n, p, i, i + p.numel()
        i += p.numel()


def test_hessian_of_a_transformer_through_fused_attention():
    """A Hugging Face causal LM (tiny random Llama, built from a config: nothing downloaded)
    uses F.scaled_dot_product_attention, whose fused kernels have no second derivatives; the
    operators run it on the math kernel and match the dense Hessian of a block."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    lm = LlamaForCausalLM(cfg).double().eval()
    assert lm.config._attn_implementation == "sdpa"

    class NextToken(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids).logits[:, :-1].reshape(-1, cfg.vocab_size)

    def loss(logits, ids):
        return nn.functional.cross_entropy(logits, ids[:, 1:].reshape(-1))

    net = NextToken(lm)
    ids = torch.randint(0, 50, (3, 12))
    block = ["m.model.layers.1.self_attn.q_proj.weight"]  # 16 x 16: inside the attention
    H = Hessian(net, loss, (ids, ids), params=block)
    assert H.dim == 256
    w0 = dict(net.named_parameters())[block[0]].detach()

    def f(theta):
        return loss(functional_call(net, {block[0]: theta.view(16, 16)}, (ids,)), ids)

    lm.config._attn_implementation = "eager"  # the reference: plain differentiable ops
    dense = torch.autograd.functional.hessian(f, w0.reshape(-1))
    lm.config._attn_implementation = "sdpa"
    torch.testing.assert_close(H.to_dense(), dense, rtol=1e-6, atol=1e-9)
    top = eigenvalues(H, k=2, which="both")
    lam = torch.linalg.eigvalsh(dense).numpy()
    np.testing.assert_allclose(top.eigenvalues, np.r_[lam[:2], lam[-2:]], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_every_hvp_mode_gives_the_same_hessian(reduction):
    model, loss_fn, batches, X, y = _setup(9, reduction)
    a = Hessian(model, loss_fn, batches).to_dense()
    for mode in ("reverse-over-reverse", "cached-graph"):
        b = Hessian(model, loss_fn, batches, hvp=mode).to_dense()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="hvp must be one of"):
        Hessian(model, loss_fn, batches, hvp="finite-differences")


def test_cached_graph_is_rebuilt_when_the_weights_change_in_place():
    model, loss_fn, batches, X, y = _setup(10)
    H = Hessian(model, loss_fn, batches, hvp="cached-graph")
    v = torch.randn(H.dim, dtype=torch.float64)
    H @ v  # builds and keeps both batches' graphs
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # an optimizer step, in place
    torch.testing.assert_close(H @ v, Hessian(model, loss_fn, batches) @ v, rtol=1e-10, atol=1e-12)


def _digits_models():
    from shapelens.data import digits

    X, y = map(torch.from_numpy, digits())
    X, y = X[:300].double(), y[:300]
    torch.manual_seed(11)
    mlp = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()  # 1,210 parameters
    cnn = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(36, 10)).double()  # 410 parameters
    return X, y, {"mlp": mlp, "cnn": cnn}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_extreme_eigenvalues_of_small_digits_models_match_the_dense_hessian(name):
    """The issue's acceptance: an MLP and a tiny CNN on the digits, top and bottom eigenvalues
    by Lanczos equal the dense autograd Hessian's to 1e-4 relative."""
    X, y, models = _digits_models()
    model = models[name]
    loss_fn = nn.CrossEntropyLoss()
    names = [n for n, _ in model.named_parameters()]
    f, theta0 = flat_loss(model, loss_fn, X, y, names)
    lam = torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, theta0)).numpy()
    H = Hessian(model, loss_fn, [(X[:128], y[:128]), (X[128:], y[128:])])
    assert H.dim == len(lam) and H.dim <= 2000
    both = eigenvalues(H, k=3, which="both", tol=1e-8)
    want = np.r_[lam[:3], lam[-3:]]
    np.testing.assert_allclose(both.eigenvalues, want, rtol=1e-4, atol=1e-4 * np.abs(lam).max())
