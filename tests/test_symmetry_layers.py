"""Group convolutions (p4, p4m), equivariant nonlinearities and invariant pooling: exact
equivariance under every group element, a brute-force reference of Cohen & Welling's group
correlation, and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from shapelens._checks import ShapelensWarning, single_thread
from shapelens.symmetry.gconv import (
    GroupConv2d,
    GroupPool,
    act_on_features,
    act_on_image,
    element_matrix,
    element_name,
    element_permutation,
    group_order,
    inverse_table,
    multiplication_table,
)
from shapelens.symmetry.groups import FiniteGroup, cyclic, dihedral, symmetric
from shapelens.symmetry.nonlinear import (
    GatedNonlinearity,
    InvariantPool,
    NormNonlinearity,
    PointwiseNonlinearity,
    SetPool,
)
from shapelens.symmetry.reps import Rep, regular, sign, standard, trivial

GROUPS = ["p4", "p4m"]
D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a thread pool only spin-waits on a busy 2-core machine
    with single_thread(True):
        yield


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# the definition in the module docstring, written out independently: r and m on centred (row, col)
R_MAT = np.array([[0, -1], [1, 0]])
M_MAT = np.array([[1, 0], [0, -1]])


def mat(g: int) -> np.ndarray:
    j, k = divmod(g, 4)
    return np.linalg.matrix_power(M_MAT, j) @ np.linalg.matrix_power(R_MAT, k)


def index_of(A: np.ndarray, n: int) -> int:
    return next(g for g in range(n) if np.array_equal(mat(g), A))


def inv_mat(A: np.ndarray) -> np.ndarray:
    return np.rint(np.linalg.inv(A)).astype(np.int64)


# --------------------------------------------------------------------------------------
# the group: multiplication table, matrices, permutations, actions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_group_table_matches_matrices_and_finite_group(group):
    n = group_order(group)
    T, inv = multiplication_table(group), inverse_table(group)
    G = cyclic(4) if group == "p4" else dihedral(4)
    perms = [element_permutation(g, group) for g in range(n)]
    assert sorted(perms) == sorted(G.elements)  # a bijection onto C_4 / D_4
    assert len({tuple(mat(g).ravel()) for g in range(n)}) == n
    for a, b in itertools.product(range(n), repeat=2):
        assert np.array_equal(mat(a) @ mat(b), mat(T[a, b]))
        assert np.array_equal(element_matrix(a, group), mat(a))
        assert FiniteGroup.compose(perms[a], perms[b]) == perms[T[a, b]]
    assert all(T[a, inv[a]] == 0 == T[inv[a], a] for a in range(n))
    assert element_name(0, group) == "e" and element_name(1, group) == "r"
    if group == "p4m":
        assert element_name(7, group) == "m r^3"
        assert T[4, 1] != T[1, 4]  # D_4 is not abelian: m r != r m


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("size", [5, 4])
def test_act_on_image_is_the_coordinate_action(group, size):
    # (L_g f)(p) = f(g^-1 p) with p in doubled centred coordinates (so even sizes work too)
    n = group_order(group)
    x = torch.randn(2, 3, size, size, dtype=D)
    for g in range(n):
        y = act_on_image(x, g, group)
        ginv = inv_mat(mat(g))
        want = torch.empty_like(x)
        for i, j in itertools.product(range(size), repeat=2):
            p = np.array([2 * i - (size - 1), 2 * j - (size - 1)])
            q = ginv @ p
            want[..., i, j] = x[..., (q[0] + size - 1) // 2, (q[1] + size - 1) // 2]
        assert torch.equal(y, want)
    # homomorphism: acting with b, then a, equals acting with a * b
    T = multiplication_table(group)
    for a, b in itertools.product(range(n), repeat=2):
        assert torch.equal(act_on_image(act_on_image(x, b, group), a, group), act_on_image(x, T[a, b], group))


@pytest.mark.parametrize("group", GROUPS)
def test_act_on_features_definition_and_homomorphism(group):
    n = group_order(group)
    T = multiplication_table(group)
    y = torch.randn(2, 3, n, 5, 5, dtype=D)
    for g in range(n):
        out = act_on_features(y, g, group)
        ginv = inv_mat(mat(g))
        for h in range(n):  # plane h of L_g y is plane g^-1 h of y, transformed spatially by g
            src = index_of(ginv @ mat(h), n)
            assert torch.equal(out[:, :, h], act_on_image(y[:, :, src], g, group))
    for a, b in itertools.product(range(n), repeat=2):
        assert torch.equal(act_on_features(act_on_features(y, b, group), a, group), act_on_features(y, T[a, b], group))


# --------------------------------------------------------------------------------------
# brute-force reference of Cohen & Welling 2016 eq. 10 / 11
# --------------------------------------------------------------------------------------


def brute_force(x, weight, bias, group, lifting, padding, stride=1):
    """[f * psi](s, t) = sum_{c, u, y} f_c(u, y) psi_c(s^-1 u, s^-1 (y - t)): every term from the
    matrices of the group elements, no table, no rot90 (doubled coordinates, any kernel size)."""
    n = group_order(group)
    k = weight.shape[-1]
    if lifting:
        x, weight = x[:, :, None], weight[:, :, None]
    B, C, Gin, H, W = x.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    out = torch.zeros(B, weight.shape[0], n, Ho, Wo, dtype=x.dtype)
    for s in range(n):
        sinv = inv_mat(mat(s))
        for u in range(Gin):
            v = 0 if lifting else index_of(sinv @ mat(u), n)
            ya, yb = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
            ya, yb = ya.ravel(), yb.ravel()  # every input pixel y
            for i, j in itertools.product(range(Ho), range(Wo)):
                t2 = np.array([2 * (i * stride - padding) + k - 1, 2 * (j * stride - padding) + k - 1])
                d2 = sinv @ (np.stack([2 * ya, 2 * yb]) - t2[:, None])  # s^-1 (y - t), doubled, from the filter centre
                fa, fb = (d2[0] + k - 1) // 2, (d2[1] + k - 1) // 2
                ok = (fa >= 0) & (fa < k) & (fb >= 0) & (fb < k)
                out[:, :, s, i, j] += torch.einsum("bcn,ocn->bo", x[:, :, u, ya[ok], yb[ok]],
                                                   weight[:, :, v, fa[ok], fb[ok]])
    if bias is not None:
        out += bias[None, :, None, None, None]
    return out


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("lifting", [True, False])
@pytest.mark.parametrize("k, padding, stride", [(3, 1, 1), (2, 0, 1), (3, 1, 2)])
def test_group_correlation_matches_brute_force(group, lifting, k, padding, stride):
    torch.manual_seed(0)
    n = group_order(group)
    layer = GroupConv2d(2, 3, k, group=group, lifting=lifting, padding=padding, stride=stride).double()
    x = torch.randn(2, 2, 5, 5, dtype=D) if lifting else torch.randn(2, 2, n, 5, 5, dtype=D)
    with torch.no_grad():
        layer.bias.normal_()
        got = layer(x)
    want = brute_force(x, layer.weight.detach(), layer.bias.detach(), group, lifting, padding, stride)
    assert got.shape == want.shape
    assert rel(got, want) < 1e-12


def test_group_axis_permutation_is_needed():
    # the group axis must be permuted: transforming only the planes spatially is not equivariant
    torch.manual_seed(1)
    layer = GroupConv2d(2, 2, 3, group="p4m").double()
    y = torch.randn(1, 2, 8, 7, 7, dtype=D)
    for g in range(1, 8):
        spatial_only = act_on_image(y, g, "p4m")
        assert rel(layer(spatial_only), act_on_features(layer(y), g, "p4m")) > 0.1
        assert rel(layer(act_on_features(y, g, "p4m")), act_on_features(layer(y), g, "p4m")) < 1e-12


# --------------------------------------------------------------------------------------
# equivariance of stacked layers, invariance after pooling
# --------------------------------------------------------------------------------------


def stack(group, padding, stride):
    return nn.Sequential(
        GroupConv2d(1, 3, 3, group=group, lifting=True, padding=padding), nn.ReLU(),
        GroupConv2d(3, 4, 3, group=group, padding=padding, stride=stride), nn.ReLU(),
        GroupConv2d(4, 2, 2, group=group), nn.Tanh(),
    ).double()


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("size, padding, stride", [(9, 0, 1), (8, 1, 1), (11, 0, 2), (9, 1, 2)])
def test_stacked_layers_equivariant_for_every_element(group, size, padding, stride):
    torch.manual_seed(2)
    net = stack(group, padding, stride)
    x = torch.randn(3, 1, size, size, dtype=D)
    y = net(x)
    for g in range(group_order(group)):
        assert rel(net(act_on_image(x, g, group)), act_on_features(y, g, group)) < 1e-12


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_lift_gconv_pool_invariant(group, reduce):
    torch.manual_seed(3)
    body = nn.Sequential(
        GroupConv2d(1, 4, 3, group=group, lifting=True), nn.ReLU(),
        GroupConv2d(4, 4, 3, group=group), nn.ReLU(),
        GroupPool(reduce),
    )
    x = torch.randn(4, 1, 12, 12)
    feat = body(x)  # (B, C, H, W), transforms like an image
    inv = feat.mean(dim=(-2, -1))  # + global spatial pool: invariant
    for g in range(group_order(group)):
        xg = act_on_image(x, g, group)
        assert rel(body(xg), act_on_image(feat, g, group)) < 1e-5  # float32
        assert rel(body(xg).mean(dim=(-2, -1)), inv) < 1e-5


def test_spatial_max_pool_between_layers_even_size_exact():
    torch.manual_seed(4)
    net = nn.Sequential(GroupConv2d(1, 2, 3, group="p4", lifting=True), nn.ReLU())
    pool = nn.MaxPool2d(2)
    after = GroupConv2d(2, 2, 3, group="p4").double()
    x = torch.randn(2, 1, 10, 10, dtype=D)
    net = net.double()

    def f(z):
        h = net(z)
        B, C, G, H, W = h.shape
        return after(pool(h.reshape(B, C * G, H, W)).reshape(B, C, G, H // 2, W // 2))

    y = f(x)
    for g in range(4):
        assert rel(f(act_on_image(x, g, "p4")), act_on_features(y, g, "p4")) < 1e-12


def test_off_centre_grid_warns_and_is_not_exact():
    torch.manual_seed(5)
    layer = GroupConv2d(1, 2, 3, group="p4", lifting=True, stride=2).double()
    assert layer.is_exact(9) and not layer.is_exact(8) and not layer.is_exact(9, 8)
    x = torch.randn(1, 1, 8, 8, dtype=D)
    with pytest.warns(ShapelensWarning, match="off-centre"):
        y = layer(x)
    assert rel(layer(act_on_image(x, 1, "p4")), act_on_features(y, 1, "p4")) > 0.1


def test_init_parameter_count_and_gradients():
    torch.manual_seed(6)
    lift = GroupConv2d(3, 5, 3, group="p4m", lifting=True)
    gc = GroupConv2d(5, 7, 3, group="p4m")
    assert lift.weight.shape == (5, 3, 3, 3) and gc.weight.shape == (7, 5, 8, 3, 3)
    assert sum(p.numel() for p in gc.parameters()) == 7 * 5 * 8 * 9 + 7
    assert gc.expanded_weight().shape == (7 * 8, 5 * 8, 3, 3)
    bound = 1 / math.sqrt(5 * 8 * 9)  # kaiming_uniform(a=sqrt(5)) = nn.Conv2d's, fan-in C_in |G| k^2
    assert gc.weight.abs().max() <= bound and gc.weight.abs().max() > 0.9 * bound
    assert gc.bias.abs().max() <= bound
    out = gc(lift(torch.randn(2, 3, 9, 9)))
    assert out.shape == (2, 7, 8, 5, 5)
    out.square().mean().backward()
    assert gc.weight.grad is not None and torch.isfinite(gc.weight.grad).all() and gc.weight.grad.abs().sum() > 0
    no_bias = GroupConv2d(2, 2, 3, bias=False)
    assert no_bias.bias is None and sum(p.numel() for p in no_bias.parameters()) == 2 * 2 * 4 * 9


def test_gconv_bad_input():
    with pytest.raises(ValueError, match="unknown group"):
        GroupConv2d(1, 1, 3, group="p6")
    with pytest.raises(ValueError, match="square filters"):
        GroupConv2d(1, 1, (3, 5))
    with pytest.raises(ValueError, match="one int"):
        GroupConv2d(1, 1, 3, padding=(1, 2))
    with pytest.raises(ValueError, match="at least 1"):
        GroupConv2d(0, 1, 3)
    lift = GroupConv2d(2, 3, 3, lifting=True)
    with pytest.raises(ValueError, match="lifting=False"):
        lift(torch.randn(1, 2, 4, 6, 6))
    with pytest.raises(ValueError, match="C_in=2"):
        lift(torch.randn(1, 1, 6, 6))
    gc = GroupConv2d(3, 3, 3, group="p4m")
    with pytest.raises(ValueError, match=r"\|G\|=8"):
        gc(torch.randn(1, 3, 4, 6, 6))
    with pytest.raises(ValueError, match="lifting layer first"):
        gc(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="not an element"):
        act_on_image(torch.randn(1, 1, 3, 3), 4, "p4")
    with pytest.raises(ValueError, match="group axis"):
        act_on_features(torch.randn(1, 1, 4, 3, 3), 1, "p4m")
    with pytest.raises(ValueError, match="unknown group"):
        act_on_image(torch.randn(1, 1, 3, 3), 0, "c4")
    with pytest.raises(ValueError, match="reduce"):
        GroupPool("sum")
    with pytest.raises(ValueError, match="group axis"):
        GroupPool()(torch.randn(1, 2, 3, 3))


# --------------------------------------------------------------------------------------
# nonlinearities and pooling on representations
# --------------------------------------------------------------------------------------


def rotation_rep(G: FiniteGroup, angle: float, name: str = "rot") -> Rep:
    c, s = math.cos(angle), math.sin(angle)
    return Rep(G, [[[c, -s], [s, c]]], name)


def act(rep: Rep, g, x: torch.Tensor) -> torch.Tensor:
    return x @ torch.as_tensor(rep.rho(g), dtype=x.dtype).T


def test_pointwise_equivariant_on_permutation_reps_and_refused_otherwise():
    G = symmetric(4)
    V = standard(G)
    x = torch.randn(6, 4, dtype=D)
    for fn in (torch.relu, torch.tanh, lambda t: t ** 3 - t):
        layer = PointwiseNonlinearity(V, fn)
        for g in G.elements:
            assert rel(layer(act(V, g, x)), act(V, g, layer(x))) < 1e-12
    Rg = regular(cyclic(5))
    layer = PointwiseNonlinearity(Rg)
    xr = torch.randn(3, 5, dtype=D)
    for g in cyclic(5).elements:
        assert rel(layer(act(Rg, g, xr)), act(Rg, g, layer(xr))) < 1e-12
    with pytest.raises(ValueError, match="NormNonlinearity"):
        PointwiseNonlinearity(rotation_rep(cyclic(8), math.pi / 4))
    with pytest.raises(ValueError, match="not a permutation"):
        PointwiseNonlinearity(sign(G))
    with pytest.raises(ValueError, match="dimension 4"):
        PointwiseNonlinearity(V)(torch.randn(2, 3))
    # the test can fail: relu is not equivariant for the rotation representation
    rot = rotation_rep(cyclic(8), math.pi / 4)
    xr2 = torch.randn(5, 2, dtype=D)
    assert rel(torch.relu(act(rot, cyclic(8).elements[1], xr2)), act(rot, cyclic(8).elements[1], torch.relu(xr2))) > 0.05


def test_norm_nonlinearity_equivariant_per_block():
    G = cyclic(8)
    rot, rot3 = rotation_rep(G, math.pi / 4), rotation_rep(G, 3 * math.pi / 4, "rot3")
    rep = rot + trivial(G) + rot3 + standard(G)
    layer = NormNonlinearity(rep).double()
    assert len(layer.blocks) == 4 and [b.dim for b in layer.blocks] == [2, 1, 2, 8]
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([-0.5, 0.3, 0.1, -1.0]))
    x = torch.randn(7, rep.dim, dtype=D)
    for g in G.elements:
        assert rel(layer(act(rep, g, x)), act(rep, g, layer(x))) < 1e-12
    # the formula, block by block
    y, b = layer(x), layer.bias
    for (lo, hi), bb in zip([(0, 2), (2, 3), (3, 5), (5, 13)], b):
        xb = x[:, lo:hi]
        nrm = xb.norm(dim=1, keepdim=True)
        assert torch.allclose(y[:, lo:hi], xb * torch.relu(nrm + bb) / nrm, atol=1e-14)
    # safe at zero: a zero block stays zero with finite gradients
    x0 = x.clone()
    x0[0, :2] = 0
    x0.requires_grad_(True)
    out = layer(x0)
    assert torch.equal(out[0, :2], torch.zeros(2, dtype=D))
    out.sum().backward()
    assert torch.isfinite(x0.grad).all()
    with pytest.raises(ValueError, match="not orthogonal"):
        A = np.array([[2.0, 1.0], [0.0, 1.0]])
        skew = Rep(cyclic(4), [A @ np.array([[0.0, -1.0], [1.0, 0.0]]) @ np.linalg.inv(A)], "skew")
        NormNonlinearity(skew)


def test_gated_nonlinearity_equivariant_and_counts():
    G = cyclic(8)
    rot, one = rotation_rep(G, math.pi / 4), trivial(G)
    rep = one + rot + rot + one + one  # scalar, two gated blocks, two gates
    layer = GatedNonlinearity(rep, gates=2)
    assert layer.rep_out.dim == 5
    x = torch.randn(9, rep.dim, dtype=D)
    y = layer(x)
    for g in G.elements:
        assert rel(layer(act(rep, g, x)), act(layer.rep_out, g, y)) < 1e-12
    # the formula: relu on the scalar, sigmoid(gate_j) times block j
    assert torch.allclose(y[:, 0], torch.relu(x[:, 0]))
    assert torch.allclose(y[:, 1:3], torch.sigmoid(x[:, 5:6]) * x[:, 1:3])
    assert torch.allclose(y[:, 3:5], torch.sigmoid(x[:, 6:7]) * x[:, 3:5])
    # explicit indices: second block gated by the first gate
    swapped = GatedNonlinearity(rep, gates=[4, 3])
    assert torch.allclose(swapped(x)[:, 1:3], torch.sigmoid(x[:, 6:7]) * x[:, 1:3])
    with pytest.raises(ValueError, match="2 non-scalar"):
        GatedNonlinearity(one + rot + rot + one, gates=1)
    with pytest.raises(ValueError, match="cannot be a gate"):
        GatedNonlinearity(rep, gates=[1, 2])
    with pytest.raises(ValueError, match="twice"):
        GatedNonlinearity(rep, gates=[3, 3])
    with pytest.raises(ValueError, match="between 1 and"):
        GatedNonlinearity(rep, gates=5)


def test_invariant_pool_counts_and_invariance():
    G = symmetric(4)
    V = standard(G)
    for rep, count in [(V, 1), (V * V, 2), (V + trivial(G), 2)]:
        pool = InvariantPool(rep)
        assert pool.out_features == count
        x = torch.randn(5, rep.dim, dtype=D)
        for g in G.sample(6, seed=1):
            assert rel(pool(act(rep, g, x)), pool(x)) < 1e-6  # float32 basis
    # V: the invariant is the (normalized) sum
    p = InvariantPool(V)
    x = torch.randn(3, 4)
    assert torch.allclose(p(x).abs()[:, 0], x.sum(1).abs() / 2, atol=1e-6)
    with pytest.raises(ValueError, match="no invariant"):
        InvariantPool(sign(G))
    with pytest.raises(ValueError, match="no invariant"):
        InvariantPool(rotation_rep(cyclic(8), math.pi / 4))


def test_set_pool():
    x = torch.randn(3, 6, 4, dtype=D)
    perm = torch.randperm(6)
    for reduce in ("sum", "mean", "max"):
        pool = SetPool(reduce)
        assert torch.allclose(pool(x[:, perm]), pool(x), atol=1e-14)
        assert pool(x).shape == (3, 4)
    assert torch.allclose(SetPool("sum", dim=1)(x), x.sum(1))
    with pytest.raises(ValueError, match="reduce"):
        SetPool("median")
    with pytest.raises(ValueError, match="axis"):
        SetPool(dim=3)(x)


def test_o3_nonlinearities_and_pooling():
    from shapelens.symmetry.groups import O3, SO3

    G = O3()
    V, one = standard(G), trivial(G)
    elements = G.sample(6, seed=3)
    assert any(np.linalg.det(g) < 0 for g in elements)  # reflections included
    with pytest.raises(ValueError, match="not a permutation"):
        PointwiseNonlinearity(V)
    rep = V + one + V * V
    norm = NormNonlinearity(rep).double()
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.2, -0.1, 0.3]))
    x = torch.randn(5, rep.dim, dtype=D)
    for g in elements:
        assert rel(norm(act(rep, g, x)), act(rep, g, norm(x))) < 1e-12
    # relu on the whole concatenation is not equivariant: the test can fail
    assert max(rel(torch.relu(act(rep, g, x)), act(rep, g, torch.relu(x))) for g in elements) > 0.05
    grep = one + V + V * V + one + one
    gate = GatedNonlinearity(grep, gates=2)
    assert gate.rep_out.dim == 1 + 3 + 9
    xg = torch.randn(5, grep.dim, dtype=D)
    for g in elements:
        assert rel(gate(act(grep, g, xg)), act(gate.rep_out, g, gate(xg))) < 1e-12
    pool = InvariantPool(V * V)  # the one invariant of V x V: the trace / inner product
    assert pool.out_features == 1
    xp = torch.randn(4, 9, dtype=D)
    for g in elements:
        assert rel(pool(act(V * V, g, xp)), pool(xp)) < 1e-6
    assert torch.allclose(pool(xp)[:, 0].abs(), (xp[:, 0] + xp[:, 4] + xp[:, 8]).abs() / math.sqrt(3), atol=1e-5)
    with pytest.raises(ValueError, match="no invariant"):
        InvariantPool(V)
    S = SO3()
    assert InvariantPool(standard(S) ** 3).out_features == 1  # det (Levi-Civita): SO(3) only
    with pytest.raises(ValueError, match="no invariant"):
        InvariantPool(V ** 3)
