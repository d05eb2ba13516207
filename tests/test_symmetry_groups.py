"""Finite groups by generators: orders, closure, inverses, the permutation representation, and
the dihedral group against the brute-force isometries of a regular polygon."""

import itertools
from math import factorial

import numpy as np
import pytest

from shapelens.symmetry import FiniteGroup, cyclic, dihedral, direct_product, symmetric


@pytest.mark.parametrize("G, order", [
    (cyclic(1), 1), (cyclic(7), 7), (dihedral(3), 6), (dihedral(8), 16),
    (symmetric(3), 6), (symmetric(5), 120), (direct_product(cyclic(4), dihedral(4)), 32),
    (direct_product(symmetric(3), cyclic(2), cyclic(3)), 36),
])
def test_orders_closure_and_inverses(G, order):
    assert G.order == order == len(set(G.elements))
    assert G.elements[0] == G.identity
    E = set(G.elements)
    rng = np.random.default_rng(0)
    for _ in range(50):
        g, h = G.elements[rng.integers(order)], G.elements[rng.integers(order)]
        assert G.compose(g, h) in E
        assert G.compose(g, G.inverse(g)) == G.identity
    assert all(s in G for s in G.generators)


def test_permutation_matrices_are_a_representation():
    G = dihedral(5)
    M = G.matrices()
    index = {g: k for k, g in enumerate(G.elements)}
    for a, g in enumerate(G.elements):
        for b, h in enumerate(G.elements):
            np.testing.assert_array_equal(M[a] @ M[b], M[index[G.compose(g, h)]])
    x = np.arange(5.0)
    g = G.elements[3]
    np.testing.assert_array_equal((M[3] @ x)[list(g)], x)  # P moves the value at i to g[i]


def test_dihedral_is_the_isometry_group_of_the_polygon_and_symmetric_is_everything():
    n = 6
    t = 2 * np.pi * np.arange(n) / n
    V = np.column_stack([np.cos(t), np.sin(t)])
    D = np.linalg.norm(V[:, None] - V[None], axis=-1)
    isometries = {p for p in itertools.permutations(range(n)) if np.allclose(D[np.ix_(p, p)], D)}
    assert set(dihedral(n).elements) == isometries and len(isometries) == 2 * n
    assert set(symmetric(4).elements) == set(itertools.permutations(range(4)))
    assert set(cyclic(5).elements) == {tuple((i + k) % 5 for i in range(5)) for k in range(5)}


def test_sampling_is_seeded_and_uniform_enough():
    G = symmetric(3)
    a, b = G.sample(600, seed=1), G.sample(600, seed=1)
    assert a == b and all(g in G for g in a)
    counts = np.array([a.count(g) for g in G.elements])
    assert counts.min() > 60  # 100 expected each


def test_bad_input():
    with pytest.raises(ValueError, match="no generators"):
        FiniteGroup([])
    with pytest.raises(ValueError, match="not a permutation"):
        FiniteGroup([[0, 0, 1]])
    with pytest.raises(ValueError, match="same points"):
        FiniteGroup([[1, 0], [0, 2, 1]])
    with pytest.raises(ValueError, match="n >= 3|at least 3"):
        dihedral(2)
    with pytest.raises(ValueError, match="too large to enumerate"):
        symmetric(10).elements  # S_10 is sampled, never listed
    assert symmetric(10).order == factorial(10)
    with pytest.raises(ValueError, match="at least one group"):
        direct_product()
    assert symmetric(1).order == 1 and factorial(4) == symmetric(4).order
