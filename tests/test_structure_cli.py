"""`shapelens structure`: the errors it prints are the library's Diagram.check, the drawing is
written, and bad input exits with status 2 and one line."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shapelens.cli import app

runner = CliRunner()

FACTORY = '''
import torch
from torch import nn
from shapelens.structure import Diagram, Morphism, Space
from shapelens.symmetry import EquivariantLinear, standard, symmetric


def build():
    torch.manual_seed(0)
    G = symmetric(4)
    V = standard(G)
    X, H, Y = Space("X", 4, V), Space("H", 4, V), Space("Y", 1)
    enc = Morphism(EquivariantLinear(V, V), X, H, "enc")
    pool = Morphism(lambda h: h.sum(-1, keepdim=True), H, Y, "pool")
    mlp = Morphism(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), X, Y, "mlp")
    d = Diagram("deepsets")
    d.add(enc, pool, mlp)
    d.equivariant(enc, G, name="enc is S4-equivariant")
    d.commutes(["enc", "pool"], "mlp", name="mlp agrees")
    return d.path("enc", "pool").as_morphism()


def plain():
    return nn.Linear(4, 1)
'''


@pytest.fixture()
def model_file(tmp_path):
    mod = tmp_path / "netdef.py"
    mod.write_text(FACTORY)
    return mod


def _reference(mod, x):
    spec = importlib.util.spec_from_file_location("netdef_ref", mod)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.build().diagram.check({"X": torch.from_numpy(x)})


def test_structure_cli_prints_the_library_check_and_draws(model_file, tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    data = tmp_path / "d.npz"
    np.savez(data, X=x)
    svg = tmp_path / "d.svg"
    r = runner.invoke(app, ["structure", "--model", f"{model_file}:build", "--data", str(data), "--plot", str(svg)])
    assert r.exit_code == 0, r.output
    ref = _reference(model_file, x)
    assert "Diagram('deepsets': 3 objects, 3 morphisms, 2 equations)" in r.output
    assert "enc: X[4] -> H[4]" in r.output
    for e in ref.equations:
        line = next(ln for ln in r.output.splitlines() if ln.startswith(e.name))
        assert f"{e.mean:.3g}" in line and f"{e.max:.3g}" in line
    assert ref["enc is S4-equivariant"].commutes and not ref["mlp agrees"].commutes
    assert "1 of 2 equations commute" in r.output
    assert "<svg" in svg.read_text()

    j = runner.invoke(app, ["structure", "--model", f"{model_file}:build", "--data", str(data), "--json"])
    assert j.exit_code == 0, j.output
    doc = json.loads(j.output)
    assert doc["diagram"]["name"] == "deepsets"
    assert [e["max"] for e in doc["equations"]] == pytest.approx([e.max for e in ref.equations], rel=1e-12)


def test_structure_cli_bad_input(model_file, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, X=np.zeros((8, 4), np.float32))
    other = tmp_path / "o.npz"
    np.savez(other, Q=np.zeros((8, 4), np.float32))
    cases = [
        (["structure"], "exactly one of --demo or --model"),
        (["structure", "--demo", "--model", f"{model_file}:build"], "exactly one of --demo or --model"),
        (["structure", "--model", f"{model_file}:build"], "--model needs --data"),
        (["structure", "--model", f"{model_file}:plain", "--data", str(data)], "not built from a Diagram"),
        (["structure", "--model", f"{model_file}:build", "--data", str(other)], "named after an object"),
        (["structure", "--model", f"{model_file}:build", "--data", str(data), "--plot", str(tmp_path / "d.gif")],
         ".png, .svg or .pdf"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output, (args, r.output)
        assert "Traceback" not in r.output
