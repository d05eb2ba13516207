"""Spaces and morphisms of shapelens.structure against ground truth: composites and monoidal
products equal calling the modules by hand (bit for bit in float64), every type error is raised
when the composite is built (before any forward pass) and names both ends, the structural maps
(identity, projections, copy, pairing, concat/split, group actions) are the exact maps of the
definitions, and build-time verification leaves the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shapelens.structure.morphisms import (
    Compose,
    Morphism,
    Parallel,
    action,
    concat,
    diagonal,
    identity,
    pair,
    projection,
    split,
)
from shapelens.structure.objects import (
    CycleError,
    Product,
    Space,
    StructureError,
    TypeMismatchError,
)
from shapelens.symmetry.groups import SO3, cyclic, symmetric
from shapelens.symmetry.reps import sign, standard, trivial

from structure_common import D64, _one_thread, _x  # noqa: F401 - _one_thread is an autouse fixture


def _linear(i, o, seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Linear(i, o, bias=bias).double()


class _Counting(nn.Module):
    """A linear map that counts its forward calls."""

    def __init__(self, i, o, seed=0):
        super().__init__()
        self.lin = _linear(i, o, seed)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_error_hierarchy():
    assert issubclass(StructureError, ValueError)
    assert issubclass(TypeMismatchError, StructureError) and issubclass(TypeMismatchError, TypeError)
    assert issubclass(CycleError, StructureError)


# --------------------------------------------------------------------------------------
# spaces
# --------------------------------------------------------------------------------------


def test_space_basics_and_text():
    s = Space("Latent", 64)
    assert s.name == "Latent" and s.shape == (64,) and s.rep is None and s.size == 64
    assert str(s) == "Latent[64]"
    a = Space(None, (3, 4))
    assert str(a) == "R[3, 4]" and a.size == 12 and a.shape == (3, 4)
    assert "Latent" in repr(s)


@pytest.mark.parametrize("shape", [0, -1, (3, 0), 2.5, "3", True, (2, None)])
def test_space_rejects_bad_shapes(shape):
    with pytest.raises(StructureError, match="shape"):
        Space("X", shape)


def test_space_rep_must_match_last_axis():
    G = symmetric(4)
    V = standard(G)
    assert Space("X", (7, 4), V).rep is V  # acts on the last axis
    with pytest.raises(StructureError, match=r"dimension 4.*last axis|last axis.*dimension 4"):
        Space("X", 5, V)
    with pytest.raises(StructureError, match="Rep"):
        Space("X", 4, rep=np.eye(4))


def test_space_equality_rules():
    G = symmetric(4)
    V, V2 = standard(G), standard(G)  # two Rep objects of one group: equal matrices
    assert Space("A", 3) == Space("A", 3)
    assert Space("A", 3) != Space("B", 3)  # both named, different names
    assert Space("A", 3) == Space(None, 3)  # an anonymous space matches any name
    assert Space("A", 3) != Space("A", 4)
    assert Space("X", 4, V) == Space("X", 4, V2)
    assert Space("X", 4, V) == Space("X", 4, standard(symmetric(4)))  # same generators, another group object
    assert Space("X", 4, V) != Space("X", 4)  # a named space with a rep vs one without
    assert Space("X", 4, V) == Space(None, 4)  # a plain R^4 is a wildcard
    assert Space("X", 4, V) != Space("X", 4, trivial(G, 4))  # different matrices
    assert Space("X", 1, sign(G)) != Space("X", 1, trivial(G))
    assert Space("X", 4, V) != Space("X", 4, standard(cyclic(4)))  # different group
    assert Space("A", 3).matches(3) and not Space("A", 3).matches(4)
    # equal spaces hash equal (a dict keyed by spaces works)
    pairs = [(Space("A", 3), Space(None, 3)), (Space("X", 4, V), Space("X", 4, V2))]
    for a, b in pairs:
        assert a == b and hash(a) == hash(b)


def test_product_is_strict_monoidal():
    A, B, C = Space("A", 3), Space("B", 4), Space("C", (2, 2))
    left, right = (A @ B) @ C, A @ (B @ C)
    assert isinstance(left, Product) and left == right == Product(A, B, C)
    assert left.factors == (A, B, C) and str(left) == "A x B x C" and left.name == "A x B x C"
    assert left.size == 3 + 4 + 4 and left.shape == ((3,), (4,), (2, 2))
    assert left != A and A != left
    assert Product(A, B) != Product(B, A) and Product(A, B) != Product(A, B, C)
    anon = Product(A, 5)
    assert anon.name is None and str(anon) == "A x R[5]" and anon == Product(A, Space("B", 5))
    with pytest.raises(StructureError, match="two factors"):
        Product(A)
    with pytest.raises(StructureError, match="factor 1"):
        Product(A, "nope")


def test_product_rep_is_the_direct_sum():
    G = symmetric(3)
    V = standard(G)
    X, Y = Space("X", 3, V), Space("Y", 1, sign(G))
    P = X @ Y
    assert P.rep is not None and P.rep.dim == 4
    g = (1, 2, 0)
    R = np.zeros((4, 4))
    R[:3, :3], R[3:, 3:] = V.rho(g), sign(G).rho(g)
    np.testing.assert_array_equal(P.rep.rho(g), R)
    assert (X @ Space("Z", 2)).rep is None  # a factor without a rep
    assert (X @ Space("W", 3, standard(SO3()))).rep is None  # two different groups


# --------------------------------------------------------------------------------------
# composition and parallel products equal calling the modules by hand
# --------------------------------------------------------------------------------------


def test_composition_equals_calling_by_hand():
    A, B, C, E = Space("A", 5), Space("B", 7), Space("C", 3), Space("E", 2)
    m1, m2, m3 = _linear(5, 7, 1), nn.Sequential(nn.Tanh(), _linear(7, 3, 2)), _linear(3, 2, 3)
    f, g, h = Morphism(m1, A, B, "f"), Morphism(m2, B, C, "g"), Morphism(m3, C, E, "h")
    x = _x(11, 5)
    comp = f >> g >> h
    assert isinstance(comp, Compose) and isinstance(comp, nn.Module)
    assert comp.dom == A and comp.cod == E and comp.name == "f >> g >> h"
    assert torch.equal(comp(x), m3(m2(m1(x))))
    # associativity: nested composites flatten to the same parts and the same function
    assert (f >> (g >> h)).parts == ((f >> g) >> h).parts == (f, g, h)
    assert torch.equal((f >> (g >> h))(x), comp(x))
    # the composite's parameters are exactly the parts'
    assert {id(p) for p in comp.parameters()} == {id(p) for m in (m1, m2, m3) for p in m.parameters()}
    # gradients flow to every part
    comp(x).sum().backward()
    assert all(p.grad is not None for p in comp.parameters())


def test_parallel_equals_calling_by_hand():
    A, B, C, E = Space("A", 5), Space("B", 7), Space("C", 3), Space("E", 2)
    m1, m2, m3 = _linear(5, 7, 1), _linear(3, 2, 2), _linear(7, 4, 3)
    f, g = Morphism(m1, A, B, "f"), Morphism(m2, C, E, "g")
    par = f @ g
    assert isinstance(par, Parallel) and par.dom == A @ C and par.cod == B @ E and par.name == "f @ g"
    x, y = _x(6, 5, seed=1), _x(6, 3, seed=2)
    out = par((x, y))
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[0], m1(x)) and torch.equal(out[1], m2(y))
    # nested parallel products flatten, parts and spaces alike
    k = Morphism(m3, B, Space("F", 4), "k")
    three = (f @ g) @ identity(A)
    assert three.parts[:2] == (f, g) and three.dom == A @ C @ A
    o3 = three((x, y, x))
    assert torch.equal(o3[0], m1(x)) and torch.equal(o3[1], m2(y)) and torch.equal(o3[2], x)
    # a part with a product domain takes its factors' worth of entries
    inner = Compose(f @ g, k @ identity(E))
    assert inner.dom == A @ C and inner.cod == Space("F", 4) @ E
    outer = inner @ identity(A)
    o = outer((x, y, x))
    assert len(o) == 3 and torch.equal(o[0], m3(m1(x))) and torch.equal(o[1], m2(y)) and torch.equal(o[2], x)
    # interchange law: (f @ g) >> (k @ id) == (f >> k) @ (g >> id)
    other = (f >> k) @ (g >> identity(E))
    for a, b in zip(inner((x, y)), other((x, y))):
        assert torch.equal(a, b)


def test_structural_maps_are_exact():
    A, B = Space("A", 3), Space("B", (2, 2))
    x, y = _x(4, 3), _x(4, 2, 2, seed=1)
    assert torch.equal(identity(A)(x), x) and identity(A).name == "id_A"
    P = A @ B
    p0, p1 = projection(P, 0), projection(P, -1)
    assert p0.cod == A and p1.cod == B and p0.name == "pi_A"
    assert p0((x, y)) is x and p1((x, y)) is y
    d = diagonal(A, 3)
    assert d.cod == A @ A @ A and all(t is x for t in d(x))
    dp = diagonal(P)  # copying a product copies every factor
    assert dp.cod == P @ P and [t is s for t, s in zip(dp((x, y)), (x, y, x, y))] == [True] * 4
    m1, m2 = _linear(3, 5, 1), _linear(3, 2, 2)
    f, g = Morphism(m1, A, Space("F", 5), "f"), Morphism(m2, A, Space("G", 2), "g")
    pr = pair(f, g)
    assert pr.dom == A and pr.cod == Space("F", 5) @ Space("G", 2) and pr.name == "<f, g>"
    a, b = pr(x)
    assert torch.equal(a, m1(x)) and torch.equal(b, m2(x))
    # projections after a pairing give the parts back (the universal property of the product)
    assert torch.equal((pr >> projection(pr.cod, 1))(x), m2(x))


def test_concat_and_split_are_inverse():
    A, B = Space("A", 3), Space("B", 4)
    c = concat(A @ B, "AB")
    assert c.cod == Space("AB", 7) and c.inverse.dom == c.cod and c.inverse.cod == A @ B
    x, y = _x(5, 3), _x(5, 4, seed=1)
    z = c((x, y))
    assert torch.equal(z, torch.cat([x, y], dim=1))
    xs, ys = c.inverse(z)
    assert torch.equal(xs, x) and torch.equal(ys, y)
    s = split(Space("Z", 7), [3, 4], names=["A", "B"])
    assert s.cod == A @ B and s.inverse.cod == Space("Z", 7)
    assert torch.equal(s.inverse(s(z)), z)
    with pytest.raises(StructureError, match="add up to 6"):
        split(Space("Z", 7), [2, 4])
    with pytest.raises(StructureError, match="two positive"):
        split(Space("Z", 7), [7])
    with pytest.raises(TypeMismatchError, match="shape"):
        concat(A @ B, Space("AB", 8))
    with pytest.raises(StructureError, match="leading"):
        concat(Space("M", (2, 3)) @ Space("N", (3, 3)))
    # concat of spaces with reps of one group carries the direct sum: it is equivariant
    G = symmetric(3)
    V = standard(G)
    cv = concat(Space("X", 3, V) @ Space("S", 1, sign(G)))
    assert cv.cod.rep is not None and cv.cod.rep.dim == 4
    back = split(cv.cod, [3, 1])
    assert back.cod.factors[0].rep is not None and back.cod.factors[0].rep.dim == 3


def test_action_is_the_representation():
    G = symmetric(4)
    V = standard(G)
    X = Space("X", 4, V)
    x = _x(6, 4)
    for g in G.elements[:7]:
        a = action(X, g)
        R = torch.as_tensor(V.rho(g), dtype=D64)
        assert torch.equal(a(x), x @ R.T)
        assert torch.equal(a.inverse(a(x)), x)  # exact: a permutation
    # rotations: the SO(3) standard action, inverse up to rounding
    H = SO3()
    g = H.sample(1, seed=3)[0]
    Y = Space("Y", 3, standard(H))
    y = _x(5, 3, seed=2)
    ay = action(Y, g)
    assert torch.allclose(ay(y), y @ torch.as_tensor(g).T, atol=0, rtol=0)
    assert torch.allclose(ay.inverse(ay(y)), y, atol=1e-14)
    # on a product: componentwise
    P = X @ Space("S", 1, sign(G))
    g = (1, 0, 2, 3)  # a transposition: sign -1
    out = action(P, g)((x, torch.ones(6, 1, dtype=D64)))
    assert torch.equal(out[0], x @ torch.as_tensor(V.rho(g)).T) and torch.equal(out[1], -torch.ones(6, 1, dtype=D64))
    with pytest.raises(StructureError, match="no group representation"):
        action(Space("Z", 4), g)
    with pytest.raises(StructureError, match="not an element"):
        action(X, (0, 0, 1, 2))


def test_callables_and_bound_methods():
    A, B = Space("A", 3), Space("B", 3)
    W = _x(3, 3)
    f = Morphism(lambda x: x @ W.T, A, B)  # closes over a float64 tensor: verified in float64
    assert f.name == "f"
    x = _x(4, 3, seed=1)
    assert torch.equal(f(x), x @ W.T)

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear(3, 3)

        def forward(self, x):
            return self.lin(x)

        def reverse(self, y):
            return torch.linalg.solve(self.lin.weight, (y - self.lin.bias).T).T

    flow = Flow()
    fwd, rev = Morphism(flow, A, B, "flow"), Morphism(flow.reverse, B, A, "reverse")
    assert {id(p) for p in rev.parameters()} == {id(p) for p in flow.parameters()}  # the owner is registered
    fwd.inverse = rev
    assert fwd.inverse is rev
    assert torch.allclose(fwd.inverse(fwd(x)), x, atol=1e-12)
    rev.inverse = fwd  # a mutual pair must not make a module cycle
    repr(fwd), fwd.to(D64), list(fwd.modules())
    with pytest.raises(TypeMismatchError, match="inverse"):
        fwd.inverse = Morphism(_linear(3, 4), A, Space("C", 4), "wrong")
    # composites of invertible morphisms are invertible: (f >> g)^-1 = g^-1 >> f^-1, (f @ g)^-1 = f^-1 @ g^-1
    sp = split(B, [1, 2])
    chain = fwd >> sp
    assert chain.inverse.parts == (sp.inverse, rev) and chain.inverse.dom == sp.cod
    assert torch.allclose(chain.inverse(chain(x)), x, atol=1e-12)
    par = fwd @ sp
    u, v = par.inverse(par((x, x)))
    assert torch.allclose(u, x, atol=1e-12) and torch.equal(v, x)
    assert (fwd >> Morphism(nn.Identity(), B, B, "noinv")).inverse is None
    assert {id(p) for p in chain.parameters()} == {id(p) for p in flow.parameters()}


# --------------------------------------------------------------------------------------
# type errors at build time
# --------------------------------------------------------------------------------------


def test_composition_type_error_is_raised_at_build_time():
    A, B, C = Space("A", 3), Space("B", 4), Space("C", 4)
    m1, m2 = _Counting(3, 4), _Counting(4, 2)
    f = Morphism(m1, A, B, "encoder", verify=False)
    g = Morphism(m2, C, Space("E", 2), "decoder", verify=False)
    with pytest.raises(TypeMismatchError) as info:
        f >> g  # same shape, different names: still a type error
    msg = str(info.value)
    for part in ("'encoder'", "'decoder'", "B[4]", "C[4]"):
        assert part in msg
    assert m1.calls == 0 and m2.calls == 0  # nothing ran
    g2 = Morphism(m2, Space("B", 5), Space("E", 2), "decoder", verify=False)
    with pytest.raises(TypeMismatchError, match=r"shapes \(4,\) vs \(5,\)"):
        Compose(f, g2)
    # representations are part of the type
    G = symmetric(4)
    X, Xt = Space("X", 4, standard(G)), Space("X", 4, trivial(G, 4))
    with pytest.raises(TypeMismatchError, match="representations"):
        Morphism(nn.Identity(), X, X, "a") >> Morphism(nn.Identity(), Xt, Xt, "b")
    with pytest.raises(TypeMismatchError, match="domain"):
        pair(f, Morphism(m2, C, Space("E", 2), "other", verify=False))


def test_verify_catches_a_wrong_codomain_and_domain():
    A = Space("A", 3)
    m = _Counting(3, 5)
    with pytest.raises(TypeMismatchError) as info:
        Morphism(m, A, Space("B", 4), "enc")
    msg = str(info.value)
    assert "'enc'" in msg and "B[4]" in msg and "(2, 5)" in msg
    assert m.calls == 1  # exactly the one verification pass
    with pytest.raises(TypeMismatchError, match=r"'enc'.*A\[3\]"):
        Morphism(_linear(4, 5), A, Space("B", 5), "enc")  # the module cannot take the declared domain
    with pytest.raises(TypeMismatchError, match="tuple"):
        Morphism(_linear(3, 5), A, Space("B", 5) @ Space("C", 5), "enc")
    # verify=False defers the check to the forward pass, which names the morphism
    lying = Morphism(_linear(3, 5), A, Space("B", 4), "lying", verify=False)
    with pytest.raises(TypeMismatchError, match=r"'lying'.*B\[4\]"):
        lying(_x(2, 3))


def test_forward_checks_the_domain():
    f = Morphism(_linear(3, 4), Space("A", 3), Space("B", 4), "f")
    with pytest.raises(TypeMismatchError, match=r"'f'.*A\[3\].*\(B, 3\)"):
        f(_x(2, 5))
    with pytest.raises(TypeMismatchError, match="'f'"):
        f(_x(5))  # no batch axis
    par = f @ f
    with pytest.raises(TypeMismatchError, match="tuple"):
        par(_x(2, 3))
    with pytest.raises(TypeMismatchError, match="2 factors"):
        par((_x(2, 3),))


def test_products_of_non_morphisms_are_refused():
    f = Morphism(_linear(3, 4), Space("A", 3), Space("B", 4), "f")
    lin = _linear(3, 4)
    for bad in (lambda: f @ lin, lambda: lin @ f, lambda: f @ 3, lambda: Parallel(f, "g"), lambda: Parallel(f)):
        with pytest.raises(StructureError):
            bad()
    with pytest.raises(TypeMismatchError, match="wrap it"):
        f @ lin
    with pytest.raises(TypeMismatchError, match="wrap it"):
        f >> lin
    with pytest.raises(TypeMismatchError, match="wrap it"):
        lin >> f
    with pytest.raises(TypeMismatchError, match="not callable"):
        Morphism(42, 3, 3)
    with pytest.raises(StructureError, match="Space"):
        Morphism(lin, "A", 4)


def test_verify_is_side_effect_free():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)).double()
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m = Morphism(net, Space("A", 3), Space("B", 2), "net")
    assert net.training and all(mod.training for mod in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # running mean/var and num_batches_tracked untouched
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    Morphism(net, Space("A", 3), Space("B", 2), "net2")
    assert not any(mod.training for mod in net.modules())
    m.verify()  # also callable later, equally cheap and silent
    assert not net.training
