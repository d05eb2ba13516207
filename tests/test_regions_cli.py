"""`shapelens regions`: the numbers it prints are the library's, and bad input exits cleanly."""

import json

import numpy as np
import torch
from typer.testing import CliRunner

from shapelens.cli import app
from shapelens.regions import Plane, partition

runner = CliRunner()


def _model_file(tmp_path, body):
    mod = tmp_path / "netdef.py"
    mod.write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n" + body)
    return mod


def _load(mod):
    import importlib.util

    spec = importlib.util.spec_from_file_location("netdef_ref", mod)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.build()


def test_regions_cli_matches_the_library(tmp_path):
    mod = _model_file(tmp_path, "    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),"
                                " nn.Linear(12, 3))\n")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = np.arange(20) % 4
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    png = tmp_path / "p.png"
    r = runner.invoke(app, ["regions", "--model", f"{mod}:build", "--data", str(data), "--x-key", "x", "--y-key", "y",
                            "--points", "0,1,2", "--json", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    net = _load(mod)
    X = torch.from_numpy(x)
    plane, bounds = Plane.from_points(X[0], X[1], X[2], margin=0.2)
    ref = partition(net, plane, bounds)
    assert doc["n_regions"] == ref.n_regions > 1 and doc["boundary_segments"] == len(ref.boundary)
    np.testing.assert_allclose(doc["areas"], np.sort(ref.areas), rtol=1e-9)
    assert png.read_bytes().startswith(b"\x89PNG")
    r = runner.invoke(app, ["regions", "--model", f"{mod}:build", "--data", str(data), "--x-key", "x", "--y-key", "y"])
    assert r.exit_code == 0 and "linear regions" in r.output and "decision boundary" in r.output


def test_regions_cli_bad_input(tmp_path):
    mod = _model_file(tmp_path, "    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))\n")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    r = runner.invoke(app, ["regions", "--model", f"{mod}:build", "--data", str(data)])
    assert r.exit_code == 2 and "GELU" in r.output
    r = runner.invoke(app, ["regions", "--model", f"{mod}:build", "--data", str(data), "--points", "0,1"])
    assert r.exit_code == 2 and "three indices" in r.output
    np.save(data, np.ones((5, 4), dtype=np.float32))  # identical points: no plane
    mod2 = _model_file(tmp_path, "    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n")
    r = runner.invoke(app, ["regions", "--model", f"{mod2}:build", "--data", str(data)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["regions"])
    assert r.exit_code == 2 and "either --demo or --model" in r.output
