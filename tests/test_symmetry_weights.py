"""Weight-space symmetries: hidden-unit permutations (parsed from torch.fx traces), Git Re-Basin
alignment, interpolation barriers, ReLU rescaling and its canonical form.

Ground truth: exact function invariance in float64, the hand-written Git Re-Basin MLP spec,
brute force over all permutations of a small layer, exactly permuted / rescaled copies whose
inverse is known, and BatchNorm statistics computed by hand."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapelens._checks import ShapelensWarning, single_thread
from shapelens.symmetry.weights import (
    Axis,
    align,
    canonical_form,
    interpolation_barrier,
    permutation_spec,
    permute_hidden,
    random_perms,
    rescale_hidden,
    weight_distance,
)

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a torch thread pool only spin-waits on a shared 2-core machine."""
    with single_thread():
        yield


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def mlp(width=16, second=12, act=nn.ReLU, seed=0, d_in=8, d_out=3):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(d_in, width), act1=act(), fc2=nn.Linear(width, second),
                                     act2=act(), out=nn.Linear(second, d_out))).to(D)


class ResMLP(nn.Module):
    """Pre-activation residual MLP: h = stem(x); h = h + block(relu(h)); head(relu(h))."""

    def __init__(self, d=10, hidden=7, n_blocks=2, act=F.relu, one_layer=False):
        super().__init__()
        self.act = act
        self.stem = nn.Linear(6, d)
        # one_layer: each block is a single d x d Linear that reads and writes the stream, so
        # the stream's permutation acts on both axes of its weight
        self.blocks = nn.ModuleList([nn.Linear(d, d) if one_layer else
                                     nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))
                                     for _ in range(n_blocks)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(self.act(h))
        return self.head(self.act(h))


class BasicBlock(nn.Module):
    def __init__(self, c, act):
        super().__init__()
        self.act = act
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.act(x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))


class ResCNN(nn.Module):
    """ResNet-style: stem conv+BN, two identity blocks (residual stream), a strided
    conv, global average pooling (x.mean or AdaptiveAvgPool2d + flatten), linear head."""

    def __init__(self, c=6, act=F.relu, gap="mean"):
        super().__init__()
        self.act = act
        self.gap = gap
        self.stem = nn.Conv2d(2, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.layer1 = BasicBlock(c, act)
        self.layer2 = BasicBlock(c, act)
        self.down = nn.Conv2d(c, 8, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.act(self.bn(self.stem(x)))
        h = self.layer2(self.layer1(h))
        h = self.act(self.down(h))
        h = h.mean((2, 3)) if self.gap == "mean" else torch.flatten(self.pool(h), 1)
        return self.fc(h)


def cnn_bn(seed=0, act=nn.ReLU):
    """Conv-BN-ReLU-MaxPool x 2, nn.Flatten, Linear-ReLU-Linear (flatten conv -> linear)."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 4, 3), bn1=nn.BatchNorm2d(4), relu1=act(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(4, 6, 3), bn2=nn.BatchNorm2d(6), relu2=act(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(6 * 2 * 2, 10), relu3=act(), fc2=nn.Linear(10, 3))).to(D)


class ViewCNN(nn.Module):
    """Functional style: F.relu / F.max_pool2d, a depthwise conv, x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.c2 = nn.Conv2d(4, 6, 5)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.dw(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.view(x.size(0), -1))


class TokenMLP(nn.Module):
    """(B, T, F) tokens -> Linear -> LayerNorm -> GELU -> per-unit scale/shift parameters ->
    flatten(1) -> Linear: the group sits on the inner factor of the flattened axis."""

    def __init__(self, T=4):
        super().__init__()
        self.emb = nn.Linear(5, 6)
        self.ln = nn.LayerNorm(6)
        self.scale = nn.Parameter(torch.rand(6) + 0.5)
        self.shift = nn.Parameter(torch.randn(6))
        self.fc = nn.Linear(T * 6, 3)

    def forward(self, x):
        h = F.gelu(self.ln(self.emb(x))) * self.scale + self.shift
        return self.fc(torch.flatten(h, 1))


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g, dtype=D) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g, dtype=D) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g, dtype=D) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g, dtype=D) * 2 - 1)
    return model.eval()


def close_models(a, b, tol=1e-12):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k].double(), sb[k].double(), atol=tol, rtol=0) for k in sa)


def cases():
    torch.manual_seed(0)
    return {
        "mlp": (mlp(), torch.randn(64, 8, dtype=D)),
        "cnn_bn": (randomize_bn(cnn_bn()), torch.randn(8, 1, 14, 14, dtype=D)),
        "res_mlp": (ResMLP().to(D), torch.randn(64, 6, dtype=D)),
        "res_cnn_mean": (randomize_bn(ResCNN().to(D)), torch.randn(4, 2, 9, 9, dtype=D)),
        "res_cnn_pool": (randomize_bn(ResCNN(gap="pool").to(D)), torch.randn(4, 2, 9, 9, dtype=D)),
        "view_cnn": (ViewCNN().to(D), torch.randn(3, 1, 28, 28, dtype=D)),
        "token_mlp": (TokenMLP().to(D).eval(), torch.randn(16, 4, 5, dtype=D)),
    }


CASES = cases()


# --------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------


def test_mlp_spec_equals_the_hand_written_git_rebasin_spec():
    spec = permutation_spec(mlp())
    assert spec.groups == {"fc1": 16, "fc2": 12}
    assert spec.pinned == ("out",)  # the output layer's units are the model's outputs
    assert spec.axes == {
        "fc1.weight": (Axis("fc1"), None), "fc1.bias": (Axis("fc1"),),
        "fc2.weight": (Axis("fc2"), Axis("fc1")), "fc2.bias": (Axis("fc2"),),
        "out.weight": (None, Axis("fc2")),
    }


def test_residual_stream_is_one_group():
    spec = permutation_spec(ResMLP())
    assert spec.groups == {"stem": 10, "blocks.0.0": 7, "blocks.1.0": 7}
    assert spec.members["stem"] == ("stem", "blocks.0.2", "blocks.1.2")
    assert spec.axes["blocks.0.2.weight"] == (Axis("stem"), Axis("blocks.0.0"))
    assert spec.axes["blocks.1.0.weight"] == (Axis("blocks.1.0"), Axis("stem"))
    assert spec.axes["head.weight"] == (None, Axis("stem"))
    cnn = permutation_spec(ResCNN())
    assert set(cnn.groups) == {"stem", "layer1.conv1", "layer2.conv1", "down"}
    assert cnn.members["stem"] == ("stem", "layer1.conv2", "layer2.conv2")
    assert cnn.axes["layer1.bn2.running_var"] == (Axis("stem"),)


def test_flatten_reads_channel_blocks():
    spec = permutation_spec(cnn_bn())
    assert spec.axes["fc1.weight"] == (Axis("fc1"), Axis("conv2", 1, 4))  # 6 channels x (2 x 2)
    assert permutation_spec(ViewCNN()).axes["fc.weight"] == (None, Axis("c2", 1, 16))
    tok = permutation_spec(TokenMLP())
    assert tok.axes["fc.weight"] == (None, Axis("emb", 4, 1))  # 4 tokens x 6 units
    assert tok.axes["scale"] == (Axis("emb"),) and tok.axes["ln.weight"] == (Axis("emb"),)


@pytest.mark.parametrize("name", list(CASES))
def test_permuting_hidden_units_leaves_the_function_unchanged(name):
    model, x = CASES[name]
    perms = random_perms(model, seed=3)
    assert any(not np.array_equal(p, np.arange(len(p))) for p in perms.values())
    permuted = permute_hidden(model, perms)
    with torch.no_grad():
        assert torch.allclose(model(x), permuted(x), atol=1e-10, rtol=0)
    assert weight_distance(model, permuted) > 0.1  # the weights did move
    assert not close_models(model, permuted, 1e-6)


def test_permute_hidden_matches_explicit_indexing():
    model = mlp()
    perms = random_perms(model, seed=1)
    p1, p2 = perms["fc1"], perms["fc2"]
    new = permute_hidden(model, perms)
    assert torch.equal(new.fc1.weight, model.fc1.weight[p1])
    assert torch.equal(new.fc1.bias, model.fc1.bias[p1])
    assert torch.equal(new.fc2.weight, model.fc2.weight[p2][:, p1])
    assert torch.equal(new.out.weight, model.out.weight[:, p2])
    assert torch.equal(new.out.bias, model.out.bias)


def test_a_group_that_reaches_the_input_is_pinned():
    class InputResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 9), nn.Linear(9, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.c(x + self.b(F.relu(self.a(x))))

    spec = permutation_spec(InputResidual())
    assert spec.groups == {"a": 9} and set(spec.pinned) == {"b", "c"}
    with pytest.raises(ValueError, match="pinned"):
        permute_hidden(InputResidual(), {"b": np.arange(5)})


# --------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------


def leaky_res_cnn():
    return randomize_bn(ResCNN(act=lambda t: F.leaky_relu(t, 0.1)).to(D))


# Leaky ReLU where activation matching must recover the exact permutation: ReLU units that are
# dead on every sample have identical (zero) activations, so no statistic tells them apart.
ALIGN_CASES = {
    "mlp": (lambda: mlp(), lambda: torch.randn(256, 8, dtype=D)),
    "res_mlp": (lambda: ResMLP(act=lambda t: F.leaky_relu(t, 0.1)).to(D), lambda: torch.randn(256, 6, dtype=D)),
    "res_cnn": (leaky_res_cnn, lambda: torch.randn(16, 2, 9, 9, dtype=D)),
    "cnn_bn": (lambda: randomize_bn(cnn_bn(act=lambda: nn.LeakyReLU(0.1))), lambda: torch.randn(32, 1, 14, 14, dtype=D)),
}


@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("name", list(ALIGN_CASES))
def test_align_recovers_an_exact_permutation(name, method):
    torch.manual_seed(1)
    make, data = ALIGN_CASES[name]
    a = make()
    x = data()
    perms = random_perms(a, seed=7)
    b = permute_hidden(a, perms)
    res = align(a, b, method, data=x if method == "activations" else None)
    for g, p in perms.items():
        np.testing.assert_array_equal(res.perms[g], np.argsort(p))  # the inverse permutation
    assert close_models(res.model, a, 1e-12)
    assert res.distance_before > 0.1 and res.distance_after < 1e-12
    with torch.no_grad():  # still model_b's function
        assert torch.allclose(res.model(x), b(x), atol=1e-10, rtol=0)
    d = res.to_dict()
    assert "model" not in d and d["method"] == method


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_never_increases_the_distance(seed):
    """Also where a group sits on both axes of one weight (the linear assignment then only
    maximises a linearisation, and a step is kept only if it improves the exact objective)."""
    for make in (lambda s: mlp(seed=s), lambda s: (torch.manual_seed(s), ResMLP().to(D))[1],
                 lambda s: (torch.manual_seed(s), ResMLP(d=12, n_blocks=4, one_layer=True).to(D))[1]):
        a, b = make(100 + seed), make(200 + seed)
        res = align(a, b, "weights", seed=seed)
        assert res.distance_after <= res.distance_before + 1e-12
        assert np.all(np.diff(res.history) <= 1e-9) and len(res.history) == res.iterations + 1
        assert res.history[0] == pytest.approx(res.distance_before) and res.history[-1] == pytest.approx(res.distance_after)
        assert res.distance_after == pytest.approx(weight_distance(a, res.model), rel=1e-12)
        x = torch.randn(20, 8 if isinstance(a, nn.Sequential) else 6, dtype=D)
        with torch.no_grad():
            assert torch.allclose(res.model(x), b(x), atol=1e-10, rtol=0)


def test_weight_matching_is_optimal_for_one_hidden_layer():
    """With a single group Algorithm 1 is one linear assignment: compare with all 6! perms."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(D)
    b = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(D)
    Wa, ba, Va = (t.detach().numpy() for t in (a[0].weight, a[0].bias, a[2].weight))
    Wb, bb, Vb = (t.detach().numpy() for t in (b[0].weight, b[0].bias, b[2].weight))
    fixed = float(((a[2].bias - b[2].bias) ** 2).sum().detach())

    def dist(p):
        p = list(p)
        return np.sqrt(((Wa - Wb[p]) ** 2).sum() + ((ba - bb[p]) ** 2).sum() + ((Va - Vb[:, p]) ** 2).sum() + fixed)

    best = min(itertools.permutations(range(6)), key=dist)
    res = align(a, b, "weights")
    assert res.distance_after == pytest.approx(dist(best), rel=1e-12)
    assert weight_distance(a, permute_hidden(b, {"0": np.array(best)})) == pytest.approx(dist(best), rel=1e-12)


def test_activation_matching_is_optimal_for_one_hidden_layer():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(D)
    b = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(D)
    x = torch.randn(300, 4, dtype=D)
    with torch.no_grad():
        za, zb = F.relu(a[0](x)), F.relu(b[0](x))
    inner = (za.T @ zb / len(x)).numpy()
    score = lambda p: inner[np.arange(6), list(p)].sum()  # noqa: E731
    best = max(itertools.permutations(range(6)), key=score)
    res = align(a, b, "activations", data=(x, torch.zeros(300, dtype=torch.long)), batch_size=64)
    assert score(res.perms["0"]) == pytest.approx(score(best), rel=1e-12)
    corr = np.corrcoef(za.numpy().T, zb.numpy().T)[:6, 6:]
    best_c = max(itertools.permutations(range(6)), key=lambda p: corr[np.arange(6), list(p)].sum())
    res_c = align(a, b, "activations", data=x, statistic="correlation")
    assert corr[np.arange(6), res_c.perms["0"]].sum() == pytest.approx(corr[np.arange(6), list(best_c)].sum(), rel=1e-9)


# --------------------------------------------------------------------------------------
# interpolation
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_classifier():
    """A small classifier trained to > 95% accuracy on ten Gaussian clusters in 64 dimensions."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 64, generator=g)
    y = torch.arange(10).repeat_interleave(150)
    X = centers[y] + 3.0 * torch.randn(len(y), 64, generator=g)
    torch.manual_seed(0)
    m = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 32), act1=nn.ReLU(), fc2=nn.Linear(32, 32), act2=nn.ReLU(),
                                  out=nn.Linear(32, 10)))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    with single_thread():
        for _ in range(120):
            idx = torch.randint(0, len(X), (128,), generator=g)
            opt.zero_grad()
            F.cross_entropy(m(X[idx]), y[idx]).backward()
            opt.step()
    return m.eval(), X, y


def test_barrier_is_large_before_and_zero_after_alignment(trained_classifier):
    a, X, y = trained_classifier
    b = permute_hidden(a, random_perms(a, seed=5))
    alphas = np.linspace(0, 1, 11)
    naive = interpolation_barrier(a, b, (X, y), alphas, batch_size=500)
    assert naive.loss[0] == pytest.approx(naive.loss[-1], rel=1e-5)  # same function at both ends
    assert naive.accuracy[0] > 0.95
    assert naive.loss_barrier > 0.5 and naive.error_barrier > 0.2
    aligned = interpolation_barrier(a, align(a, b).model, (X, y), alphas, batch_size=500)
    assert abs(aligned.loss_barrier) < 1e-5 and aligned.error_barrier < 1e-9
    assert aligned.loss.max() - aligned.loss.min() < 1e-5


def test_barrier_definitions_and_path(trained_classifier):
    a, X, y = trained_classifier
    torch.manual_seed(3)
    b = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 32), act1=nn.ReLU(), fc2=nn.Linear(32, 32), act2=nn.ReLU(),
                                  out=nn.Linear(32, 10))).eval()
    res = interpolation_barrier(a, b, (X, y), [0.3, 0.6], batch_size=400)
    np.testing.assert_allclose(res.alphas, [0.0, 0.3, 0.6, 1.0])
    mid = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 32), act1=nn.ReLU(), fc2=nn.Linear(32, 32), act2=nn.ReLU(),
                                    out=nn.Linear(32, 10)))
    sa, sb = a.state_dict(), b.state_dict()
    mid.load_state_dict({k: 0.7 * sa[k] + 0.3 * sb[k] for k in sa})
    with torch.no_grad():
        out = mid(X)
    assert res.loss[1] == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5)
    assert res.accuracy[1] == pytest.approx(float((out.argmax(1) == y).double().mean()))
    L, E, al = res.loss, 1 - res.accuracy, res.alphas
    assert res.loss_barrier == pytest.approx(np.max(L - ((1 - al) * L[0] + al * L[-1])))
    assert res.loss_barrier_frankle == pytest.approx(L.max() - (L[0] + L[-1]) / 2)
    assert res.error_barrier == pytest.approx(np.max(E - ((1 - al) * E[0] + al * E[-1])))
    assert res.to_dict()["type"] == "Barrier"
    ax = res.plot(metric="accuracy", label="naive")
    assert len(ax.lines) == 2


def test_barrier_recomputes_batchnorm_statistics():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(D)
    randomize_bn(m, seed=1)  # stale running statistics
    X, y = torch.randn(64, 4, dtype=D), torch.randint(0, 3, (64,))
    kept = interpolation_barrier(m, m, (X, y), [0.5], batch_size=64, reset_bn=False)
    with torch.no_grad():
        assert kept.loss[0] == pytest.approx(float(F.cross_entropy(m(X), y)), rel=1e-10)
    res = interpolation_barrier(m, m, (X, y), [0.5], batch_size=64)  # auto: recompute
    assert res.bn_recomputed and not kept.bn_recomputed
    ref = randomize_bn(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(D), seed=1)
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():  # one batch of all 64 examples: mean and unbiased variance of it
        z = ref[0](X)
        ref[1].running_mean.copy_(z.mean(0))
        ref[1].running_var.copy_(z.var(0, unbiased=True))
        expected = float(F.cross_entropy(ref(X), y))
    np.testing.assert_allclose(res.loss, expected, rtol=1e-10)
    assert abs(res.loss_barrier) < 1e-12
    assert res.loss[0] != pytest.approx(kept.loss[0], rel=1e-3)
    assert torch.equal(m[1].running_mean, randomize_bn(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).to(D),
                                                       seed=1)[1].running_mean)  # the input model is untouched


# --------------------------------------------------------------------------------------
# ReLU rescaling
# --------------------------------------------------------------------------------------


SCALE_CASES = {
    "mlp": (lambda: mlp(), lambda: torch.randn(32, 8, dtype=D)),
    "leaky_mlp": (lambda: mlp(act=lambda: nn.LeakyReLU(0.2)), lambda: torch.randn(32, 8, dtype=D)),
    "cnn_bn": (lambda: randomize_bn(cnn_bn()), lambda: torch.randn(4, 1, 14, 14, dtype=D)),
    "res_mlp": (lambda: ResMLP().to(D), lambda: torch.randn(32, 6, dtype=D)),
    "res_cnn": (lambda: randomize_bn(ResCNN().to(D)), lambda: torch.randn(4, 2, 9, 9, dtype=D)),
    "view_cnn": (lambda: ViewCNN().to(D), lambda: torch.randn(2, 1, 28, 28, dtype=D)),
}


def random_scales(model, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0.2, 5.0, n) for k, n in permutation_spec(model).scalings.items()}


@pytest.mark.parametrize("name", list(SCALE_CASES))
def test_rescaling_leaves_the_function_unchanged_and_canonical_form_removes_it(name):
    torch.manual_seed(2)
    make, data = SCALE_CASES[name]
    model, x = make(), data()
    scales = random_scales(model, seed=4)
    assert scales
    rescaled = rescale_hidden(model, scales)
    assert not close_models(model, rescaled, 1e-3)
    c1, c2 = canonical_form(model), canonical_form(rescaled)
    with torch.no_grad():
        assert torch.allclose(rescaled(x), model(x), atol=1e-10, rtol=0)
        assert torch.allclose(c1(x), model(x), atol=1e-10, rtol=0)
    assert close_models(c1, c2, 1e-9)  # the same representative of the orbit


def test_canonical_form_has_unit_incoming_norms():
    model = mlp()
    c = canonical_form(model)
    for layer in (c.fc1, c.fc2):
        rows = torch.cat([layer.weight, layer.bias[:, None]], 1)
        assert torch.allclose(rows.norm(dim=1), torch.ones(rows.shape[0], dtype=D), atol=1e-12)
    res = canonical_form(ResMLP().to(D))  # the stream: rows of stem and of every block's last layer together
    rows = torch.cat([res.stem.weight, res.stem.bias[:, None]] + [torch.cat([b[2].weight, b[2].bias[:, None]], 1)
                                                                  for b in res.blocks], 1)
    assert torch.allclose(rows.norm(dim=1), torch.ones(10, dtype=D), atol=1e-10)
    bn = canonical_form(randomize_bn(cnn_bn()))  # BatchNorm's affine parameters carry the scale
    v = torch.stack([bn.bn1.weight, bn.bn1.bias], 1)
    assert torch.allclose(v.norm(dim=1), torch.ones(4, dtype=D), atol=1e-12)


def test_rescaling_refuses_non_homogeneous_activations():
    model = mlp(act=nn.Tanh)
    assert permutation_spec(model).scalings == {}
    with pytest.raises(ValueError, match=r"'act1' \(Tanh\).*positively homogeneous"):
        rescale_hidden(model, {"fc1": np.ones(16)})
    with pytest.raises(ValueError, match="LayerNorm"):
        rescale_hidden(TokenMLP(), {"emb": np.ones(6)})
    with pytest.raises(ValueError, match="positive"):
        rescale_hidden(mlp(), {"fc1": -np.ones(16)})
    with pytest.warns(ShapelensWarning, match="no rescalable"):
        canonical_form(model)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


class WithAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        h = self.fc(x)
        return self.blocks[0].attn(h, h, h)[0]


class WithCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


class WithChunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Linear(4, 6), nn.Linear(3, 2)

    def forward(self, x):
        u, v = self.a(x).chunk(2, dim=1)
        return self.c(u * v)


class WithSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Linear(4, 6), nn.Linear(3, 2)

    def forward(self, x):
        return self.c(self.a(x)[:, :3])


class WithBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else x


@pytest.mark.parametrize("model, pattern", [
    (WithAttention(), r"blocks\.0\.attn.*MultiheadAttention"),
    (WithCat(), r"node 'cat'.*concatenat"),
    (WithChunk(), r"node 'chunk'"),
    (WithSlice(), r"node 'getitem'.*slices"),
    (WithBranch(), r"torch\.fx could not trace WithBranch"),
    (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 2, 1)), r"module '0'.*grouped convolution"),
    (nn.Sequential(nn.Conv2d(1, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 2, 1)), r"module '1'.*GroupNorm"),
    (nn.Sequential(nn.Linear(4, 6), nn.Embedding(6, 2)), r"module '1' \(Embedding"),
])
def test_unsupported_models_are_refused_by_name(model, pattern):
    with pytest.raises(ValueError, match=pattern):
        permutation_spec(model)


def test_bad_alignment_inputs():
    a = mlp()
    with pytest.raises(ValueError, match=r"differ at 'fc1\.weight': shape \(16, 8\) vs \(20, 8\)"):
        align(a, mlp(width=20))
    with pytest.raises(ValueError, match="differ at 'fc2.weight'"):
        interpolation_barrier(a, mlp(second=5), (torch.randn(4, 8, dtype=D), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="needs data"):
        align(a, mlp(seed=1), "activations")
    with pytest.raises(ValueError, match="method must be"):
        align(a, mlp(seed=1), "weight")
    with pytest.raises(ValueError, match="unknown permutation group 'fc3'"):
        permute_hidden(a, {"fc3": np.arange(4)})
    with pytest.raises(ValueError, match=r"permutation of range\(16\)"):
        permute_hidden(a, {"fc1": np.zeros(16, dtype=int)})
    with pytest.raises(ValueError, match="labels"):
        interpolation_barrier(a, a, torch.randn(4, 8, dtype=D))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolation_barrier(a, a, (torch.randn(4, 8, dtype=D), torch.zeros(4, dtype=torch.long)), [0.5, 1.5])
