"""Diagrams of shapelens.structure against ground truth: squares that commute exactly (composed
linear maps, scaling, a permutation-equivariant DeepSets layer) measure 0 to float64 rounding and
non-commuting ones do not; equivariance declared on a diagram gives the numbers of
shapelens.symmetry.equivariance_error (finite and Lie groups); the loss is the stated mean squared
error, is differentiable, and training with it makes a declared square commute; every malformed
diagram or data set is refused with a clear error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from shapelens._checks import ShapelensWarning
from shapelens.structure.diagram import Diagram, DiagramCheck, Equation, EquationCheck, Path
from shapelens.structure.morphisms import Morphism, action, identity
from shapelens.structure.objects import CycleError, Space, StructureError, TypeMismatchError
from shapelens.symmetry.groups import SO3, cyclic, symmetric
from shapelens.symmetry.layers import EquivariantLinear
from shapelens.symmetry.measure import equivariance_error
from shapelens.symmetry.reps import standard, trivial

from structure_common import D64, _one_thread, _x  # noqa: F401 - _one_thread is an autouse fixture


def _mlp(i, o, hidden=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(i, hidden), nn.Tanh(), nn.Linear(hidden, o)).double()


def _linmap(W, name, dom, cod):
    return Morphism(lambda x: x @ W.T, dom, cod, name)


def _square(perturb=0.0):
    """A --f--> B --g--> C and A --h--> C with h = g o f (plus a perturbation)."""
    A, B, C = Space("A", 3), Space("B", 5), Space("C", 2)
    L, M = _x(5, 3, seed=1), _x(2, 5, seed=2)
    K = M @ L + perturb * _x(2, 3, seed=3)
    d = Diagram("square")
    d.add(_linmap(L, "f", A, B), _linmap(M, "g", B, C), _linmap(K, "h", A, C))
    return d


class DeepSetsLayer(nn.Module):
    """Zaheer et al. (2017): x -> a x + b mean(x) + c, permutation-equivariant on the set axis."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ab = nn.Parameter(torch.randn(3, generator=g, dtype=D64))

    def forward(self, x):
        a, b, c = self.ab
        return a * x + b * x.mean(dim=-1, keepdim=True) + c


# --------------------------------------------------------------------------------------
# commuting and non-commuting squares
# --------------------------------------------------------------------------------------


def test_composed_linear_maps_commute_exactly():
    d = _square()
    eq = d.commutes(["f", "g"], "h")
    assert isinstance(eq, Equation) and eq.kind == "equation" and eq.name == "f >> g = h"
    assert str(eq.lhs) == "f >> g" and str(eq.rhs) == "h" and eq.dom.name == "A" and eq.cod.name == "C"
    res = d.check(_x(200, 3, seed=4))
    e = res.equations[0]
    assert isinstance(res, DiagramCheck) and isinstance(e, EquationCheck)
    assert e.max < 1e-12 and e.commutes and res.commutes
    assert (e.lhs, e.rhs, e.dom, e.cod, e.n_examples, e.n_elements) == ("f >> g", "h", "A", "C", 200, 0)
    # the reported error is the per-example relative L2 error, computed by hand
    bad = _square(perturb=0.3)
    bad.commutes(["f", "g"], "h")
    x = _x(200, 3, seed=4)
    r = bad.check(x).equations[0]
    lhs, rhs = bad.path("f", "g")(x), bad.morphisms["h"](x)
    ref = (torch.linalg.vector_norm(lhs - rhs, dim=1) / torch.linalg.vector_norm(rhs, dim=1)).numpy()
    assert r.mean > 1e-2 and not r.commutes and not bad.check(x).commutes
    assert math.isclose(r.mean, ref.mean(), rel_tol=1e-12) and math.isclose(r.max, ref.max(), rel_tol=1e-12)


def test_scaling_commutes_with_a_linear_map():
    X = Space("X", 4)
    d = Diagram("scaling")
    d.add(Morphism(lambda x: 2 * x, X, Space("Y", 4), "double"), Morphism(lambda x: 3 * x, X, Space("X3", 4), "s_in"),
          Morphism(lambda x: 2 * x, Space("X3", 4), Space("Y3", 4), "double3"),
          Morphism(lambda x: 3 * x, Space("Y", 4), Space("Y3", 4), "s_out"),
          Morphism(lambda x: torch.tanh(x), Space("X3", 4), Space("Y3", 4), "tanh"))
    d.commutes(["s_in", "double3"], ["double", "s_out"], name="linear")
    d.commutes(["s_in", "tanh"], ["double", "s_out"], name="nonlinear")
    res = d.check(_x(100, 4))
    assert res["linear"].max < 1e-12 and res["linear"].commutes
    assert res["nonlinear"].mean > 1e-2 and not res["nonlinear"].commutes


def test_deepsets_layer_commutes_with_every_permutation():
    G = symmetric(5)
    V = standard(G)
    X, Y = Space("X", 5, V), Space("Y", 5, V)
    d = Diagram("deepsets")
    layer = Morphism(DeepSetsLayer(), X, Y, "layer")
    mlp = Morphism(_mlp(5, 5), X, Y, "mlp")
    d.add(layer, mlp)
    x = _x(50, 5)
    for k, g in enumerate(G.sample(6, seed=1)):
        ax, ay = action(X, g, name=f"gx{k}"), action(Y, g, name=f"gy{k}")
        d.add(ax, ay)
        d.commutes([ax, layer], [layer, ay], name=f"layer {k}")
        d.commutes([ax, mlp], [mlp, ay], name=f"mlp {k}")
    res = d.check(x)
    for k in range(6):
        assert res[f"layer {k}"].max < 1e-12
        if G.sample(6, seed=1)[k] != G.identity:
            assert res[f"mlp {k}"].mean > 1e-2


# --------------------------------------------------------------------------------------
# equivariance via a diagram == symmetry.equivariance_error
# --------------------------------------------------------------------------------------


def _equivariance_case(G, rep_in, rep_out, model, x, samples, seed=0, act_out=None, invariance=False):
    X, Y = Space("X", rep_in.dim, rep_in), Space("Y", model(x[:1]).shape[-1], None if invariance else rep_out)
    d = Diagram("eq")
    f = d.add(Morphism(model, X, Y, "f"))
    eq = d.equivariant(f, G, samples=samples, seed=seed, act_out="trivial" if invariance else act_out)
    assert eq.kind == "equivariance" and eq.morphism is f
    got = d.check(x).equations[0]
    ref = equivariance_error(model, G, rep_in, None if invariance else rep_out, x, samples=samples, seed=seed)
    assert got.n_elements == ref.n_elements and got.n_examples == ref.n_examples
    assert abs(got.mean - ref.mean) <= 1e-12 and abs(got.max - ref.max) <= 1e-12
    return got, ref


@pytest.mark.parametrize("G", [symmetric(5), cyclic(5)], ids=["S5", "C5"])
def test_equivariance_matches_equivariance_error_finite(G):
    V = standard(G)
    x = _x(40, 5)
    torch.manual_seed(0)
    good, _ = _equivariance_case(G, V, V, EquivariantLinear(V, V).double(), x, samples=10)
    assert good.max < 1e-12 and good.commutes
    bad, ref = _equivariance_case(G, V, V, _mlp(5, 5), x, samples=10)
    assert bad.mean > 1e-2 and not bad.commutes
    assert ref.exhaustive == (G.order <= 10)
    # invariance (act_out="trivial" == equivariance_error's act_out=None)
    inv = nn.Sequential(_mlp(5, 5), nn.Tanh()).double()
    pooled = lambda x: inv(x).sum(dim=-1, keepdim=True)  # noqa: E731 - not invariant
    bad_inv, _ = _equivariance_case(G, V, None, pooled, x, samples=10, invariance=True)
    assert bad_inv.mean > 1e-2
    sym = lambda x: torch.tanh(x).sum(dim=-1, keepdim=True)  # noqa: E731 - invariant
    good_inv, _ = _equivariance_case(G, V, None, sym, x, samples=10, invariance=True)
    assert good_inv.max < 1e-12


def test_equivariance_matches_equivariance_error_so3():
    G = SO3()
    V = standard(G)
    x = _x(30, 9)
    torch.manual_seed(0)
    good, ref = _equivariance_case(G, V * V, V, EquivariantLinear(V * V, V).double(), x, samples=8, seed=3)
    assert good.max < 1e-12 and not ref.exhaustive and good.n_elements == 8
    bad, _ = _equivariance_case(G, V * V, V, _mlp(9, 3), x, samples=8, seed=3)
    assert bad.mean > 1e-2
    # check(seed=...) overrides the equation's seed and still agrees
    d = Diagram("so3")
    f = d.add(Morphism(_mlp(9, 3), Space("X", 9, V * V), Space("Y", 3, V), "f"))
    d.equivariant(f, G, samples=8, seed=3)
    got = d.check(x, seed=11).equations[0]
    ref2 = equivariance_error(f.fn, G, V * V, V, x, samples=8, seed=11)
    assert abs(got.mean - ref2.mean) <= 1e-12 and abs(got.max - ref2.max) <= 1e-12
    assert abs(got.mean - bad.mean) > 1e-6  # other elements, other numbers


def test_equivariance_on_a_product_equals_the_direct_sum():
    """A map X x X -> Y under componentwise S_4 gives the numbers of the same map on the
    concatenation under the direct-sum representation V + V."""
    G = symmetric(4)
    V = standard(G)
    X, Y = Space("X", 4, V), Space("Y", 4, V)
    W1, W2 = _x(4, 4, seed=1), _x(4, 4, seed=2)
    d = Diagram("product")
    d.add(Morphism(lambda p: p[0] + p[1] * p[0].mean(-1, keepdim=True), X @ X, Y, "deepsets2"),
          Morphism(lambda p: p[0] @ W1.T + p[1] @ W2.T, X @ X, Space("Z", 4, V), "dense2"))
    d.equivariant("deepsets2", G, samples=8)
    d.equivariant("dense2", G, samples=8)
    a, b = _x(30, 4, seed=3), _x(30, 4, seed=4)
    res = d.check({"X x X": (a, b)})
    assert res[0].max < 1e-12
    ref = equivariance_error(lambda z: z[:, :4] @ W1.T + z[:, 4:] @ W2.T, G, V + V, V, torch.cat([a, b], 1),
                             samples=8)
    assert abs(res[1].mean - ref.mean) <= 1e-12 and abs(res[1].max - ref.max) <= 1e-12 and ref.mean > 1e-2


# --------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------


def test_loss_is_the_stated_mean_squared_error():
    d = _square(perturb=0.5)
    d.commutes(["f", "g"], "h", weight=2.0)
    G = cyclic(3)
    V = standard(G)
    X, Y = Space("X", 3, V), Space("Y", 2)
    f = d.add(Morphism(_mlp(3, 2), X, Y, "inv"))
    d.equivariant(f, G, act_out="trivial", weight=0.5, samples=3)  # all 3 elements: deterministic
    x, xs = _x(20, 3), _x(20, 3, seed=9)
    loss = d.loss({"A": x, "X": xs})
    lhs, rhs = d.path("f", "g")(x), d.morphisms["h"](x)
    t1 = ((lhs - rhs) ** 2).sum(1).mean() / 2
    base = f(xs)
    t2 = sum(((f(xs @ torch.as_tensor(V.rho(g)).T) - base) ** 2).sum(1).mean() for g in G.elements) / (3 * 2)
    assert torch.allclose(loss, 2.0 * t1 + 0.5 * t2, rtol=1e-13, atol=0)
    assert loss.requires_grad
    assert d.loss({"A": x, "X": xs}).item() == loss.item()  # again, with the group's matrices cached
    # zero exactly when the square commutes
    ok = _square()
    ok.commutes(["f", "g"], "h")
    assert float(ok.loss(x)) < 1e-25


def test_loss_trains_a_square_to_commute():
    """Learn g with f >> g == h for fixed f (injective) and h: the commutativity error falls by
    orders of magnitude."""
    A, B, C = Space("A", 3), Space("B", 6), Space("C", 2)
    L, K = _x(6, 3, seed=1), _x(2, 3, seed=2)
    torch.manual_seed(0)
    g_net = nn.Linear(6, 2, bias=False).double()
    d = Diagram("learn")
    d.add(_linmap(L, "f", A, B), Morphism(g_net, B, C, "g"), _linmap(K, "h", A, C))
    d.commutes(["f", "g"], "h")
    x_train, x_test = _x(64, 3, seed=3), _x(64, 3, seed=4)
    before = d.check(x_test).equations[0].mean
    opt = torch.optim.Adam(list(d.parameters()), lr=0.05)
    assert {id(p) for p in d.parameters()} == {id(g_net.weight)}
    for _ in range(300):
        opt.zero_grad()
        loss = d.loss(x_train)
        loss.backward()
        opt.step()
    after = d.check(x_test).equations[0].mean
    assert before > 0.1 and after < 1e-3 * before


def test_loss_draws_fresh_group_elements_reproducibly():
    G = SO3()
    V = standard(G)
    d = Diagram("fresh")
    d.add(Morphism(_mlp(3, 3), Space("X", 3, V), Space("Y", 3, V), "f"))
    d.equivariant("f", G, samples=4)
    x = _x(10, 3)
    torch.manual_seed(5)
    a, b = d.loss(x), d.loss(x)
    torch.manual_seed(5)
    assert a.item() != b.item() and d.loss(x).item() == a.item()
    assert d.loss(x, seed=1).item() == d.loss(x, seed=1).item()


# --------------------------------------------------------------------------------------
# paths, models, data pushed along paths
# --------------------------------------------------------------------------------------


def test_paths_model_and_identity():
    d = _square()
    ps = d.paths("A", "C")
    assert [str(p) for p in ps] == ["f >> g", "h"] and all(isinstance(p, Path) for p in ps)
    assert [str(p) for p in d.paths("A", "A")] == ["id_A"] and d.paths("C", "A") == []
    m = d.model("B", "C")
    x = _x(7, 5)
    assert m.diagram is d and torch.equal(m(x), d.morphisms["g"](x))
    assert m is not d.morphisms["g"]  # a fresh composite; the registered morphism is untouched
    assert str(d.path("A")) == "id_A" and torch.equal(d.path("A")(x[:, :3]), x[:, :3])
    assert d.model("A", "A").diagram is d
    p = d.path(d.morphisms["f"], "g")
    assert p.objects == ("A", "B", "C") and str(p) == "f >> g" and len(p) == 2
    # a composite built from a diagram shares its parameters
    lin = nn.Linear(5, 2).double()
    d2 = Diagram("shared")
    d2.add(Morphism(lin, Space("B", 5), Space("C", 2), "g"))
    assert next(d2.model("B", "C").parameters()) is lin.weight


def test_data_is_pushed_along_the_shortest_path():
    d = _square()
    with pytest.warns(ShapelensWarning, match="itself"):
        d.commutes(["g"], ["g"], name="trivial")  # an equation at B with only A's data
    x = _x(30, 3)
    res = d.check({"A": x})
    assert res["trivial"].source == "A via f" and res["trivial"].max == 0.0
    assert res["trivial"].n_examples == 30
    # same numbers as giving B's data directly
    bad = _square(perturb=0.2)
    C2 = Space("C2", 2)
    bad.add(Morphism(lambda y: torch.sin(y), Space("C", 2), C2, "sin"),
            _linmap(_x(2, 5, seed=5), "k", Space("B", 5), C2))
    bad.commutes(["g", "sin"], ["k"], name="at B")
    direct = bad.check({"B": bad.morphisms["f"](x)})["at B"]
    pushed = bad.check({"A": x})["at B"]
    assert pushed.mean == direct.mean and pushed.max == direct.max and direct.mean > 1e-2


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


def test_check_result_is_json_safe_and_plots(tmp_path):
    d = _square(perturb=0.1)
    d.commutes(["f", "g"], "h", name="sq")
    G = symmetric(3)
    d.add(Morphism(nn.Identity(), Space("P", 3, standard(G)), Space("Q", 3, standard(G)), "id_pq"))
    d.equivariant("id_pq", G)
    res = d.check({"A": _x(10, 3), "P": _x(10, 3, seed=1)})
    out = json.loads(json.dumps(res.to_dict()))
    assert out["type"] == "DiagramCheck" and out["equations"][0]["name"] == "sq" and out["diagram"] == "square"
    table = res.table()
    assert "sq" in table and "NO" in table and "yes" in table and "id_pq equivariant under S3" in table
    assert res["id_pq equivariant under S3"].n_elements == 6  # every element of S_3
    ax = res.plot()
    ax.figure.savefig(tmp_path / "check.png")
    assert (tmp_path / "check.png").stat().st_size > 0
    with pytest.raises(KeyError, match="sq"):
        res["nope"]


def test_draw_delegates_to_draw_diagram(monkeypatch):
    import shapelens.structure.draw as draw_mod

    seen = {}

    def fake(diagram, *, ax=None, path=None, check=None):
        seen.update(diagram=diagram, ax=ax, path=path, check=check)
        return "figure"

    monkeypatch.setattr(draw_mod, "draw_diagram", fake)
    d = _square()
    assert d.draw("out.svg", check="c") == "figure"
    assert seen == {"diagram": d, "ax": None, "path": "out.svg", "check": "c"}


def test_check_and_loss_leave_modules_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    net.train()
    d = Diagram("bn")
    d.add(Morphism(net, Space("A", 3), Space("B", 3), "net"), Morphism(nn.Identity(), Space("A", 3), Space("B", 3), "id"))
    d.commutes("net", "id")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    d.check(_x(10, 3))
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_add_refuses_anonymous_and_conflicting_spaces():
    d = Diagram("d")
    with pytest.raises(StructureError, match=r"anonymous domain R\[3\]"):
        d.add(Morphism(nn.Identity(), 3, Space("B", 3), "f"))
    with pytest.raises(StructureError, match="name every factor"):
        d.add(Morphism(nn.Identity(), Space("A", 3) @ Space(None, 3), Space("A", 3) @ Space(None, 3), "f"))
    d.add(Morphism(nn.Identity(), Space("A", 3), Space("B", 3), "f"))
    with pytest.raises(StructureError, match=r"two different spaces are named 'A'"):
        d.add(Morphism(nn.Identity(), Space("A", 4), Space("C", 4), "g"))
    G = symmetric(3)
    with pytest.raises(StructureError, match="two different spaces are named 'B'"):
        d.add(Morphism(nn.Identity(), Space("B", 3, standard(G)), Space("C", 3), "g"))
    with pytest.raises(StructureError, match="different morphism named 'f'"):
        d.add(Morphism(nn.Identity(), Space("B", 3), Space("C", 3), "f"))
    with pytest.raises(StructureError, match="name of an object"):
        d.add(Morphism(nn.Identity(), Space("B", 3), Space("C", 3), "A"))
    with pytest.raises(StructureError, match="Morphism"):
        d.add(nn.Identity())
    assert list(d.objects) == ["A", "B"] and list(d.morphisms) == ["f"]  # failed adds changed nothing
    f = d.morphisms["f"]
    assert d.add(f) is f and list(d.morphisms) == ["f"]  # adding twice is a no-op


def test_unknown_names_and_broken_paths():
    d = _square()
    with pytest.raises(StructureError, match=r"no morphism named 'q'.*\['f', 'g', 'h'\]"):
        d.path("f", "q")
    assert d.path("f", "B").morphisms == d.path("f").morphisms  # an object inside a path is its identity
    with pytest.raises(TypeMismatchError, match=r"does not compose.*ends at 'B'.*id_A starts at 'A'"):
        d.path("f", "A")
    with pytest.raises(StructureError, match="is an object"):
        d.equivariant("B", symmetric(3))
    with pytest.raises(TypeMismatchError, match=r"does not compose.*g: B\[5\] -> C\[2\].*'C'.*f: A\[3\] -> B\[5\]"):
        d.path("g", "f")
    with pytest.raises(StructureError, match="not in diagram"):
        d.path(Morphism(nn.Identity(), Space("A", 3), Space("B", 3), "stranger"))
    with pytest.raises(StructureError, match=r"no target object 'Z'.*\['A', 'B', 'C'\]"):
        d.paths("A", "Z")
    with pytest.raises(StructureError, match="no path from 'C' to 'A'"):
        d.model("C", "A")


def test_equations_need_parallel_paths():
    d = _square()
    with pytest.raises(StructureError, match=r"left side f goes 'A' -> 'B'.*right side h goes 'A' -> 'C'"):
        d.commutes(["f"], ["h"])
    with pytest.raises(StructureError, match="same endpoints"):
        d.commutes("A", ["h"])
    d.commutes(["f", "g"], "h", name="sq")
    with pytest.raises(StructureError, match="already has an equation named 'sq'"):
        d.commutes(["f", "g"], "h", name="sq")
    with pytest.raises(StructureError, match="tol"):
        d.commutes(["f", "g"], "h", tol=0)
    with pytest.raises(StructureError, match="weight"):
        d.commutes(["f", "g"], "h", weight=float("nan"))


def test_cycles_where_a_path_is_required():
    d = Diagram("cyc")
    A, B, C = Space("A", 2), Space("B", 2), Space("C", 2)
    d.add(Morphism(nn.Identity(), A, B, "f"), Morphism(nn.Identity(), B, A, "back"),
          Morphism(nn.Identity(), B, C, "g"), Morphism(nn.Identity(), C, C, "loop"))
    with pytest.raises(CycleError, match=r"A -f-> B -back-> A|B -back-> A -f-> B"):
        d.paths("A", "C")
    with pytest.raises(CycleError, match="cycle"):
        d.model("A", "B")
    with pytest.raises(CycleError, match=r"C -loop-> C"):
        d.paths("C", "C")
    assert [str(p) for p in d.path("f", "g", "loop").morphisms] == [str(m) for m in d.path("f", "g", "loop")]
    # an explicit path through a cycle is fine, and so is data pushed along the shortest path
    d.commutes(["f", "back"], "A", name="round trip")
    assert d.check(_x(5, 2)).commutes


def test_ambiguous_model_names_the_paths():
    d = _square()
    with pytest.raises(StructureError, match=r"2 paths from 'A' to 'C'.*'f >> g', 'h'"):
        d.model("A", "C")
    m = d.path("f", "g").as_morphism()  # the way out the message suggests
    assert m.diagram is d and str(m.name) == "f >> g"


def test_equivariance_declarations_are_checked():
    G = symmetric(4)
    V = standard(G)
    d = Diagram("eq")
    d.add(Morphism(nn.Identity(), Space("X", 4), Space("Y", 4), "plain"),
          Morphism(nn.Identity(), Space("P", 4, V), Space("Q", 4, V), "typed"))
    with pytest.raises(StructureError, match="no representation"):
        d.equivariant("plain", G)
    with pytest.raises(StructureError, match=r"dimension 3.*4 entries"):
        d.equivariant("plain", symmetric(3), act_in=standard(symmetric(3)), act_out=standard(symmetric(3)))
    with pytest.raises(StructureError, match="same group object|representation of"):
        d.equivariant("typed", cyclic(4))  # the spaces' reps belong to another group
    with pytest.raises(StructureError, match="'trivial'"):
        d.equivariant("typed", G, act_out="none")
    with pytest.raises(StructureError, match=r"no morphism named 'nope'.*\['plain', 'typed'\]"):
        d.equivariant("nope", G)
    eq = d.equivariant("plain", G, act_in=V, act_out=V)
    assert eq.description == "V(g) >> plain == plain >> V(g) for g in S4"
    inv = d.equivariant("plain", G, act_in=V, act_out="trivial", name="inv")
    assert inv.act_out is None and inv.description == "V(g) >> plain == plain for g in S4"
    assert d.check(_x(6, 4), seed=0)["inv"].mean > 0.1  # the identity is not invariant
    d.equivariant("typed", G)
    assert d.check({"X": _x(6, 4), "P": _x(6, 4)})["typed equivariant under S4"].max == 0.0
    d.equivariant("plain", G, act_in=V, act_out=trivial(G, 4), name="to trivial")


def test_bad_data_is_refused():
    d = _square()
    d.commutes(["f", "g"], "h")
    x = _x(10, 3)
    x[3, 1] = float("nan")
    with pytest.raises(StructureError, match="1 NaN"):
        d.check(x)
    with pytest.raises(StructureError, match="NaN"):
        d.loss(x)
    with pytest.raises(TypeMismatchError, match=r"object 'A'.*\(B, 3\)"):
        d.check(_x(10, 4))
    with pytest.raises(StructureError, match=r"no object \(a data key\) 'Z'"):
        d.check({"Z": _x(10, 3)})
    with pytest.raises(StructureError, match=r"no data for object 'A'.*\['B'\]"):
        d.check({"B": _x(10, 5)})
    d.add(Morphism(nn.Identity(), Space("P", 2), Space("Q", 2), "pq"), Morphism(lambda x: x, Space("P", 2),
                                                                              Space("Q", 2), "pq2"))
    d.commutes("pq", "pq2", name="pq")
    with pytest.raises(StructureError, match=r"several objects \['A', 'P'\].*dict"):
        d.check(_x(10, 3))
    assert d.check({"A": _x(10, 3), "P": np.ones((4, 2))}).commutes  # numpy data is fine
    with pytest.raises(StructureError, match="no equations"):
        Diagram("empty").check(_x(3, 3))
    # a model producing NaN is reported, not averaged into a NaN
    n = Diagram("nan")
    n.add(Morphism(lambda x: torch.log(x - 10), Space("A", 2), Space("B", 2), "log"),
          Morphism(lambda x: x, Space("A", 2), Space("B", 2), "id2"))
    n.commutes("log", "id2")
    with pytest.raises(StructureError, match="NaN"):
        n.check(_x(4, 2))
    with pytest.raises(StructureError, match="not finite"):
        n.loss(_x(4, 2))


def test_identity_and_actions_in_a_diagram():
    """Identity morphisms and group actions are ordinary morphisms of a diagram."""
    G = cyclic(4)
    V = standard(G)
    X = Space("X", 4, V)
    d = Diagram("acts")
    g = G.elements[1]
    a, b = action(X, g, name="g"), action(X, G.inverse(g), name="g_inv")
    d.add(a, b, identity(X, name="idX"))
    d.commutes(["g", "g_inv"], "idX", name="inverse")
    d.commutes(["g", "g", "g", "g"], "X", name="order 4")
    d.commutes(["g", "g"], "idX", name="not order 2")
    res = d.check(_x(8, 4))
    assert res["inverse"].max == 0.0 and res["order 4"].max == 0.0 and res["not order 2"].mean > 0.5


def test_an_isomorphism_and_its_inverse_make_no_cycle_but_real_cycles_through_them_are_found():
    """f >> f^-1 is the identity, so a declared inverse pair does not make paths infinite; a cycle
    that goes back through the inverse by another route still does."""
    torch.manual_seed(0)
    A, B, C = Space("A", 2), Space("B", 2), Space("C", 2)
    lin = nn.Linear(2, 2).double()
    f = Morphism(lin, A, B, "f")
    f_inv = Morphism(lambda y: torch.linalg.solve(lin.weight, (y - lin.bias).T).T, B, A, "f_inv")
    f.inverse = f_inv
    g = Morphism(nn.Linear(2, 2).double(), B, C, "g")
    d = Diagram("iso")
    d.add(f, f_inv, g)
    assert [str(p) for p in d.paths("A", "C")] == ["f >> g"]
    assert [str(p) for p in d.paths("B", "A")] == ["f_inv"]
    assert [str(p) for p in d.paths("A", "A")] == ["id_A"]
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(d.model("A", "C")(x), g(f(x)))
    d.commutes(d.path("f", "f_inv"), "A", name="iso")
    assert d.check(x)["iso"].max < 1e-12
    d.add(Morphism(nn.Linear(2, 2).double(), A, B, "u"))  # B -f_inv-> A -u-> B is a genuine cycle
    with pytest.raises(CycleError, match=r"B -f_inv-> A -u-> B"):
        d.paths("A", "C")
