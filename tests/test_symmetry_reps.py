"""Representations of finite groups and equivariant bases against known dimensions:
DeepSets (2 maps V -> V for S_n), Maron et al. 2019 (Bell numbers for S_n tensor maps), the
commutant of the regular representation (|G|), Schur (no map sgn -> V)."""

import numpy as np
import pytest

from shapelens.symmetry import (
    Rep,
    cyclic,
    dihedral,
    direct_product,
    equivariant_basis,
    regular,
    sign,
    standard,
    symmetric,
    trivial,
)


def _check_intertwiners(B, rin, rout):
    G = rin.group
    for g in G.elements:
        for W in B:
            np.testing.assert_allclose(rout.rho(g) @ W, W @ rin.rho(g), atol=1e-9)
    flat = B.reshape(len(B), -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(len(B)), atol=1e-9)  # orthonormal


@pytest.mark.parametrize("n", [4, 5])
def test_symmetric_group_counts_are_bell_numbers(n):
    G = symmetric(n)
    V = standard(G)
    cases = [(V, V, 2), (trivial(G), V, 1), (V, trivial(G), 1), (V ** 2, V, 5), (V ** 2, V ** 2, 15)]
    for rin, rout, k in cases:
        B = equivariant_basis(rin, rout)
        assert B.shape == (k, rout.dim, rin.dim), (rin, rout, B.shape)
        if rin.dim * rout.dim <= 400:
            _check_intertwiners(B, rin, rout)
    # the two V -> V maps span identity and all-ones (DeepSets)
    B = equivariant_basis(V, V).reshape(2, -1)
    for M in (np.eye(n), np.ones((n, n))):
        coef = B @ M.ravel()
        np.testing.assert_allclose(coef @ B, M.ravel(), atol=1e-9)


@pytest.mark.parametrize("G", [cyclic(5), dihedral(4), direct_product(cyclic(2), cyclic(3))])
def test_commutant_of_the_regular_representation_has_dimension_order(G):
    R = regular(G)
    B = equivariant_basis(R, R)
    assert B.shape[0] == G.order
    _check_intertwiners(B, R, R)


def test_no_map_from_sign_to_the_permutation_rep_and_operations():
    G = symmetric(3)
    V, s = standard(G), sign(G)
    assert equivariant_basis(s, V).shape == (0, 3, 1)
    assert equivariant_basis(s, s).shape[0] == 1 and equivariant_basis(s, trivial(G)).shape[0] == 0
    W = V + s
    assert W.dim == 4 and W.is_homomorphism() and (V * s).dim == 3 and (V ** 3).dim == 27
    g = G.elements[4]
    np.testing.assert_allclose(V.dual().rho(g), V.rho(g))  # permutation matrices are orthogonal
    np.testing.assert_allclose((V * s).rho(g), np.kron(V.rho(g), s.rho(g)))
    np.testing.assert_allclose(W.rho(g)[:3, :3], V.rho(g))
    # the sign of each element is the determinant of its permutation matrix
    for h in G.elements:
        assert s.rho(h)[0, 0] == pytest.approx(np.linalg.det(V.rho(h)))


def test_bad_representations():
    G = cyclic(4)
    with pytest.raises(ValueError, match="one per generator"):
        Rep(G, [np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match="singular"):
        Rep(G, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="relations"):
        Rep(G, [[[2.0]]])  # 2^4 != 1
    with pytest.raises(ValueError, match="same group"):
        standard(G) + standard(dihedral(4))
    with pytest.raises(ValueError, match="not an element"):
        standard(G).rho([1, 0, 2, 3])
    with pytest.raises(TypeError, match="Rep objects"):
        equivariant_basis(np.eye(3), standard(G))


def test_equivariant_linear_is_equivariant_for_every_element():
    import torch

    from shapelens.symmetry import EquivariantLinear

    torch.manual_seed(0)
    G = symmetric(4)
    V = standard(G)
    layer = EquivariantLinear(V ** 2, V + trivial(G))
    assert layer.coef.numel() == 5 + 2  # V^2 -> V: Bell(3) = 5 maps; V^2 -> 1: trace and total sum
    assert layer.bias_coef.numel() == 2  # invariant vectors of V + 1: all-ones and the trivial line
    x = torch.randn(7, 16)
    with torch.no_grad():
        layer.bias_coef.normal_()
        y = layer(x)
        for g in G.elements:
            Pin = torch.as_tensor((V ** 2).rho(g), dtype=torch.float32)
            Pout = torch.as_tensor((V + trivial(G)).rho(g), dtype=torch.float32)
            torch.testing.assert_close(layer(x @ Pin.T), y @ Pout.T, atol=1e-5, rtol=1e-5)
    # the layer trains: gradients reach the coefficients
    layer(x).pow(2).sum().backward()
    assert layer.coef.grad is not None and layer.coef.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="last axis"):
        layer(torch.randn(3, 4))


def test_equivariant_linear_refuses_an_empty_basis():
    from shapelens.symmetry import EquivariantLinear

    G = symmetric(3)
    with pytest.raises(ValueError, match="no non-zero linear map"):
        EquivariantLinear(sign(G), standard(G))
