"""Matrix Lie groups, their representations and equivariant bases, against known counts:
the cross product (SO(3): V x V -> V, 1 map; O(3): none, it is a pseudovector), Schur's lemma
on the spin-l irreducibles, the Brauer counts of O(3) tensor invariants (3 for V^2 -> V^2, 15
for V^3 -> V^3, 91 for V^4 -> V^4), and agreement of the three solvers."""

import math

import numpy as np
import pytest
import torch

from shapelens.symmetry import (
    O2,
    O3,
    SO2,
    SO3,
    EquivariantLinear,
    MatrixGroup,
    Rep,
    clear_basis_cache,
    cyclic,
    dihedral,
    equivariant_basis,
    irrep,
    regular,
    sign,
    standard,
    symmetric,
    trivial,
)


def _check(B, rin, rout, n=4, atol=1e-9):
    G = rin.group
    for g in G.sample(n, seed=7):
        for W in B:
            np.testing.assert_allclose(rout.rho(g) @ W, W @ rin.rho(g), atol=atol)
    flat = B.reshape(len(B), -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(len(B)), atol=1e-9)


def _span_equal(B1, B2):
    P1 = B1.reshape(len(B1), -1)
    P2 = B2.reshape(len(B2), -1)
    assert P1.shape == P2.shape
    np.testing.assert_allclose(P1.T @ P1, P2.T @ P2, atol=1e-8)  # same orthogonal projector


@pytest.mark.parametrize("make", [SO2, O2, SO3, O3])
def test_haar_samples_are_group_elements(make):
    G = make()
    gs = G.sample(50, seed=0)
    for g in gs:
        np.testing.assert_allclose(g.T @ g, np.eye(G.d), atol=1e-12)
        if G.name.startswith("SO"):
            assert np.linalg.det(g) == pytest.approx(1.0)
    dets = np.array([np.linalg.det(g) for g in gs])
    if G.name.startswith("O"):
        assert (dets < 0).sum() > 10 and (dets > 0).sum() > 10  # both components
    # Haar on SO(3): the rotation angle has density (1 - cos t) / pi, mean pi/2 + 2/pi
    if G.name == "SO(3)":
        t = np.arccos(np.clip((np.trace(np.array(G.sample(4000, seed=1)), axis1=1, axis2=2) - 1) / 2, -1, 1))
        assert t.mean() == pytest.approx(np.pi / 2 + 2 / np.pi, abs=0.03)


@pytest.mark.parametrize("G, rin, rout, k", [
    ("SO3", "V*V", "V", 1),      # the cross product
    ("O3", "V*V", "V", 0),       # ... is a pseudovector under O(3)
    ("O3", "V", "V", 1),
    ("SO3", "V", "V", 1),
    ("SO2", "V", "V", 2),        # identity and the quarter turn
    ("O2", "V", "V", 1),
    ("O3", "V**2", "V**2", 3),   # Brauer: identity, swap, trace x trace
    ("SO3", "V**2", "V**2", 3),
    ("O3", "V**3", "one", 0),      # epsilon is a pseudoscalar
    ("SO3", "V**3", "one", 1),     # epsilon
    ("SO3", "V**3", "V", 3),
    ("O3", "V**3", "V**3", 15),  # perfect matchings of 6 points
    ("SO3", "V**4", "V**2", 15),
    ("O3", "V**4", "V**4", 91),  # matchings of 8 points (105) minus the 14 relations of 3D
])
def test_lie_group_basis_dimensions(G, rin, rout, k):
    grp = {"SO3": SO3, "O3": O3, "SO2": SO2, "O2": O2}[G]()
    V, one = standard(grp), trivial(grp)
    env = {"V": V, "one": one}
    a, b = eval(rin, {}, env), eval(rout, {}, env)
    B = equivariant_basis(a, b)
    assert B.shape == (k, b.dim, a.dim)
    if k:
        _check(B, a, b, n=2 if a.dim * b.dim > 1000 else 4)


def test_cross_product_is_the_so3_map():
    G = SO3()
    V = standard(G)
    (W,) = equivariant_basis(V * V, V)
    eps = np.zeros((3, 3, 3))
    for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        eps[i, j, k], eps[i, k, j] = 1, -1
    E = eps.reshape(3, 9)  # (u x v)_i = eps_ijk u_j v_k
    np.testing.assert_allclose(abs(np.sum(W * E)), np.linalg.norm(E), atol=1e-10)  # W is +-E / |E|


@pytest.mark.parametrize("make", [SO3, O3])
def test_spin_irreps_and_schur(make):
    G = make()
    D = [irrep(G, l) for l in range(4)]
    assert [d.dim for d in D] == [1, 3, 5, 7]
    g, h = G.sample(2, seed=3)
    for d in D:
        np.testing.assert_allclose(d.rho(G.compose(g, h)), d.rho(g) @ d.rho(h), atol=1e-10)
        np.testing.assert_allclose(d.rho(g) @ d.rho(g).T, np.eye(d.dim), atol=1e-10)
        A = G.lie_generators[1]
        from scipy.linalg import expm

        np.testing.assert_allclose(d.rho(expm(0.3 * A)), expm(0.3 * d.drho(A)), atol=1e-10)
    for l in range(4):
        for m in range(4):
            assert equivariant_basis(D[l], D[m]).shape[0] == (1 if l == m else 0)
    # V x V = D0 + D1 + D2 for SO(3); under O(3) the D1 part (antisymmetric) is a pseudovector
    V = standard(G)
    assert [equivariant_basis(V * V, D[l]).shape[0] for l in range(3)] == ([1, 1, 1] if make is SO3 else [1, 0, 1])


def test_so2_and_cyclic_irreps():
    G = SO2()
    r1, r2, r3 = (irrep(G, k) for k in (1, 2, 3))
    assert equivariant_basis(r1 * r2, r3).shape[0] == 2  # e^{i t} e^{2 i t} = e^{3 i t}
    assert equivariant_basis(r1 * r2, r1).shape[0] == 2  # ... and its conjugate part e^{-i t}
    assert equivariant_basis(r1 * r1, r3).shape[0] == 0
    C = cyclic(6)
    reg = regular(C)
    # the regular representation contains each complex character once: real irreps k=0 and 3
    # once (1-D), k=1, 2 once as 2-D real irreps
    assert [equivariant_basis(reg, irrep(C, k)).shape[0] for k in range(4)] == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="k = 0..3"):
        irrep(C, 4)


def test_solvers_agree_and_cache():
    G = O3()
    V = standard(G)
    for a, b in [(V ** 2, V ** 2), (V ** 3, V), (V * irrep(G, 2), V + trivial(G))]:
        Bd = equivariant_basis(a, b, method="dense", cache=False)
        Br = equivariant_basis(a, b, method="reduced", cache=False)
        _span_equal(Bd, Br)
    S = symmetric(5)
    W = standard(S)
    for a, b in [(W ** 2, W), (W ** 2, W ** 2), (W + sign(S), W * sign(S))]:
        _span_equal(equivariant_basis(a, b, method="orbit", cache=False) if (a is not None and "sgn" not in a.name)
                    else equivariant_basis(a, b, method="dense", cache=False),
                    equivariant_basis(a, b, method="dense", cache=False))
        _span_equal(equivariant_basis(a, b, cache=False), equivariant_basis(a, b, method="reduced", cache=False))
    clear_basis_cache()
    B1 = equivariant_basis(W ** 2, W)
    B1[:] = 0  # the cache hands out copies
    assert np.abs(equivariant_basis(W ** 2, W)).sum() > 0


def test_orbit_basis_is_exact_and_scales():
    # S_16 on (R^16)^2 -> (R^16)^2: 65,536 unknowns, Bell(4) = 15 maps (Maron et al. 2019)
    G = symmetric(16)
    V = standard(G)
    B = equivariant_basis(V ** 2, V ** 2)
    assert B.shape == (15, 256, 256)
    for g in G.sample(3, seed=0):
        P = (V ** 2).rho(g)
        for W in B[:5]:
            np.testing.assert_allclose(P @ W, W @ P, atol=1e-12)
    # signed orbits: maps from the sign representation to V * sgn (= the all-ones vector times sgn)
    S = symmetric(4)
    assert equivariant_basis(sign(S), standard(S) * sign(S)).shape[0] == 1
    assert equivariant_basis(sign(S), standard(S)).shape[0] == 0


def test_generic_matrix_group_and_user_representations():
    # SO(2) written by hand as a generic group, and the rotation rep of frequency 2 by functions
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    G = MatrixGroup(2, lie_algebra=[J], name="rot")
    g = G.sample(3, seed=0)
    for x in g:
        np.testing.assert_allclose(x.T @ x, np.eye(2), atol=1e-12)

    def rho2(x):
        t = 2 * math.atan2(x[1, 0], x[0, 0])
        return [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]

    R2 = Rep(G, rho=rho2, drho=lambda A: 2 * np.asarray(A), dim=2, name="R2")
    V = standard(G)
    assert equivariant_basis(V * V, R2).shape[0] == 2
    with pytest.raises(ValueError, match="derivative"):
        Rep(G, rho=rho2, drho=lambda A: np.asarray(A), dim=2)  # wrong drho
    with pytest.raises(ValueError, match="drho="):
        Rep(G, rho=rho2, dim=2)
    with pytest.raises(ValueError, match="no generators"):
        MatrixGroup(3)
    with pytest.raises(ValueError, match="3 x 3"):
        MatrixGroup(3, lie_algebra=[np.eye(2)])
    with pytest.raises(ValueError, match="functions"):
        Rep(SO3(), [np.eye(3)] * 3)
    with pytest.raises(ValueError, match="no Lie algebra"):
        standard(dihedral(4)).drho(np.eye(4))
    with pytest.raises(ValueError, match="same group"):
        equivariant_basis(standard(SO3()), standard(O3()))
    assert equivariant_basis(standard(SO3()), standard(SO3())).shape[0] == 1  # equal generators: same group


def test_equivariant_linear_for_o3_and_rep_properties():
    torch.manual_seed(0)
    G = O3()
    V, one = standard(G), trivial(G)
    rin, rout = V ** 2 + V, V + one + irrep(G, 2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the basis buffers are built in the default dtype
    try:
        layer = EquivariantLinear(rin, rout)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        layer.coef.normal_()
        if layer.bias_coef is not None:
            layer.bias_coef.normal_()
    x = torch.randn(5, rin.dim, dtype=torch.float64)
    for g in G.sample(5, seed=2):
        A = torch.as_tensor(rin.rho(g))
        Bm = torch.as_tensor(rout.rho(g))
        torch.testing.assert_close(layer(x @ A.T), layer(x) @ Bm.T, atol=1e-10, rtol=1e-10)
    assert [s.dim for s in rout.summands] == [3, 1, 5]
    assert rout.is_orthogonal and not rout.is_permutation
    assert standard(symmetric(5)).is_permutation and (standard(symmetric(5)) ** 2).is_permutation
    assert not (standard(symmetric(3)) * sign(symmetric(3))).is_permutation
    assert (V >> V).dim == 9 and equivariant_basis(trivial(G), V >> V).shape[0] == 1  # the identity map
