"""Drawing diagrams: every object, morphism and equation appears, colours follow the check,
files are written in the format their suffix names, and bad requests fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapelens.structure.diagram import Diagram
from shapelens.structure.draw import _layers, draw_diagram
from shapelens.structure.morphisms import Morphism
from shapelens.structure.objects import Space
from shapelens.symmetry.groups import symmetric
from shapelens.symmetry.layers import EquivariantLinear
from shapelens.symmetry.reps import standard


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _diagram():
    torch.manual_seed(0)
    A, B, C = Space("A", 4), Space("B", 3), Space("C", 2)
    d = Diagram("triangle and square")
    d.add(Morphism(nn.Linear(4, 3), A, B, name="f"), Morphism(nn.Linear(3, 2), B, C, name="g"),
          Morphism(nn.Linear(4, 2), A, C, name="h"))
    d.commutes(["f", "g"], ["h"], name="tri")
    G = symmetric(4)
    V = standard(G)
    X, Y = Space("X", 4, rep=V), Space("Y", 4, rep=V)
    d.add(Morphism(EquivariantLinear(V, V).double(), X, Y, name="e"))
    d.equivariant("e", G, name="sq")
    x = torch.randn(16, 4, dtype=torch.float64)
    return d, d.check({"A": x.float(), "X": x})


def test_every_object_morphism_and_equation_is_drawn():
    d, chk = _diagram()
    texts = _texts(draw_diagram(d, check=chk))
    for obj, shape in (("A", "R[4]"), ("B", "R[3]"), ("C", "R[2]"), ("X", "R[4]"), ("Y", "R[4]")):
        assert any(t.startswith(obj + "\n" + shape) for t in texts), (obj, texts)
    assert any("V of S4" in t for t in texts)
    for m in ("f", "g", "h", "e"):
        assert m in texts
    legend = [t for t in texts if t.startswith("(1)") or t.startswith("(2)")]
    assert any("tri: f >> g == h" in t and "does not commute" in t for t in legend)
    assert any("sq:" in t and "[commutes" in t for t in legend)


def test_colours_follow_the_check():
    d, chk = _diagram()
    fig = draw_diagram(d, check=chk)
    colour = {t.get_text().split(":")[0]: t.get_color() for t in fig.axes[0].texts if t.get_text().startswith("(")
              and ":" in t.get_text()}
    assert colour["(1) tri"] == "#c0392b" and colour["(2) sq"] == "#1a7f37"
    plain = draw_diagram(d)
    assert all("not checked" in t for t in _texts(plain) if t.startswith("(1) tri") or t.startswith("(2) sq"))


def test_saves_png_svg_and_refuses_other_suffixes(tmp_path):
    d, chk = _diagram()
    png, svg = tmp_path / "d.png", tmp_path / "d.svg"
    d.draw(png, check=chk)
    d.draw(svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        d.draw(tmp_path / "d.jpg")


def test_cycles_loops_and_parallel_arrows_are_laid_out():
    A, B = Space("A", 2), Space("B", 2)
    d = Diagram("cycle")
    d.add(Morphism(nn.Linear(2, 2), A, B, name="u"), Morphism(nn.Linear(2, 2), B, A, name="v"),
          Morphism(nn.Linear(2, 2), A, A, name="w"), Morphism(nn.Linear(2, 2), A, B, name="u2"))
    texts = _texts(draw_diagram(d))
    assert {"u", "v", "w", "u2"} <= set(texts)
    # layering ignores the back edge of the cycle: A in column 0, B in column 1
    edges = [(n, m.dom.name, m.cod.name) for n, m in d.morphisms.items()]
    assert _layers(list(d.objects), edges) == {"A": 0, "B": 1}


def test_layers_are_longest_paths():
    edges = [("a", "P", "Q"), ("b", "Q", "R"), ("c", "P", "R"), ("d", "R", "S")]
    assert _layers(["P", "Q", "R", "S"], edges) == {"P": 0, "Q": 1, "R": 2, "S": 3}


def test_empty_diagram_is_refused():
    with pytest.raises(ValueError, match="no objects"):
        draw_diagram(Diagram("empty"))
