"""The symmetry survey (atlas section and `shapelens symmetry`) against models whose symmetries
are exact by construction, and the representation parser the CLI uses."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from shapelens.cli import app
from shapelens.symmetry import equivariant_basis, standard
from shapelens.symmetry.reps import group_by_name, parse_rep
from shapelens.symmetry.survey import symmetry_survey

runner = CliRunner()


class Symmetrized(nn.Module):
    """f(x) = sum over a group's images of x of g(T x): exactly invariant to that group."""

    def __init__(self, transforms):
        super().__init__()
        torch.manual_seed(0)
        self.g = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 5)).double()
        self.transforms = transforms

    def forward(self, x):
        return sum(self.g(T(x)) for T in self.transforms)


@pytest.fixture(scope="module")
def images():
    x = torch.zeros(40, 1, 8, 8, dtype=torch.float64)
    x[:, :, 2:6, 2:6] = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x  # a zero border of 2 pixels: 1- and 2-pixel zero-filled shifts lose nothing


def test_flip_symmetrized_model_is_flip_invariant_only(images):
    f = Symmetrized([lambda x: x, lambda x: torch.flip(x, dims=[-1])])
    s = symmetry_survey(f, images)
    change = dict(zip(s.transforms, s.relative_change))
    assert change["flip left-right"] < 1e-14
    assert change["flip up-down"] > 1e-2 and change["shift right 1 px"] > 1e-2
    assert dict(zip(s.transforms, s.agreement))["flip left-right"] == 1.0


def test_rot90_symmetrized_model_is_invariant_to_quarter_turns(images):
    f = Symmetrized([lambda x, k=k: torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    s = symmetry_survey(f, images)
    change = dict(zip(s.transforms, s.relative_change))
    assert change["rotate 90 deg"] < 1e-14 and change["rotate 180 deg"] < 1e-14
    assert change["rotate +10 deg"] > 1e-3 and change["flip left-right"] > 1e-2


def test_shift_invariant_model_and_its_lie_derivative(images):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, padding_mode="circular"), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    s = symmetry_survey(conv, images)
    change = dict(zip(s.transforms, s.relative_change))
    assert change["shift right 1 px"] < 1e-12 and change["shift down 1 px"] < 1e-12
    assert change["shift right 2 px"] < 1e-12
    lie = dict(zip(s.lie_transforms, s.lie_relative))
    # integer shifts are exact, sub-pixel ones are not: the tanh between the convolution and
    # the pooling aliases (Azulay & Weiss 2019; what Gruver et al. 2023 measure)
    assert lie["translate_x"] > 1e-5 and lie["translate_y"] > 1e-5
    linear = nn.Sequential(conv[0], nn.Conv2d(6, 4, 3, padding=1, padding_mode="circular").double(), conv[2], conv[3])
    lin = dict(zip(s.lie_transforms, symmetry_survey(linear, images).lie_relative))
    assert lin["translate_x"] < 1e-12 and lin["translate_y"] < 1e-12  # a linear shift-equivariant map + mean
    assert lin["scale"] > 1e-2  # scaling changes the image's mass
    # the same model on flattened inputs, through image_shape
    flat = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), conv)
    s2 = symmetry_survey(flat, images.reshape(40, -1), image_shape=(1, 8, 8))
    np.testing.assert_allclose(s2.relative_change, s.relative_change, atol=1e-12)
    ax = s.plot()
    assert len(ax.patches) == len(s.transforms)


def test_sets_invariance_and_equivariance():
    torch.manual_seed(0)

    class DeepSets(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.phi, self.rho, self.pool = nn.Linear(3, 8), nn.Linear(8, 4), pool

        def forward(self, x):
            h = self.phi(x).relu()
            return self.rho(h.sum(1)) if self.pool else self.rho(h)  # invariant, or per-element (equivariant)

    x = torch.randn(30, 6, 3)
    inv = symmetry_survey(DeepSets(True), x)
    assert inv.input_kind == "set" and inv.relative_change[0] < 1e-6 and inv.agreement[0] == 1.0
    eqv = symmetry_survey(DeepSets(False), x)
    assert "output permuted too" in eqv.transforms[0] and eqv.relative_change[0] < 1e-6
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(18, 4))
    assert symmetry_survey(mlp, x).relative_change[0] > 0.1


def test_survey_bad_inputs(images):
    f = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    with pytest.raises(ValueError, match="image_shape"):
        symmetry_survey(f, images.reshape(40, -1))
    with pytest.raises(ValueError, match="does not hold 64"):
        symmetry_survey(f, images.reshape(40, -1), image_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="cannot tell"):
        symmetry_survey(f, torch.zeros(4, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="input_kind"):
        symmetry_survey(f, images, input_kind="graph")


def test_parse_rep_and_group_names():
    G = group_by_name("SO(3)")
    assert parse_rep("V**2 + V", G).dim == 12 and parse_rep("2*V + 1", G).dim == 7
    assert parse_rep("(V + 1) * V", G).dim == 12 and parse_rep("D2", G).dim == 5
    assert equivariant_basis(parse_rep("V >> V", G), parse_rep("1", G)).shape[0] == 1
    V = standard(G)
    np.testing.assert_allclose(parse_rep("V*V", G).rho(G.sample(1)[0]), (V * V).rho(G.sample(1)[0]))
    assert group_by_name("S5").order == 120 and group_by_name("d6").order == 12
    for bad, msg in [("V +", "cannot parse"), ("W", "unknown symbol"), ("V**V", "integer"), ("V)", "unexpected")]:
        with pytest.raises(ValueError, match=msg):
            parse_rep(bad, G)
    with pytest.raises(ValueError, match="unknown group"):
        group_by_name("E8")


def test_cli_symmetry_group_counts_and_errors():
    r = runner.invoke(app, ["symmetry", "--group", "SO3", "--rep-in", "V*V", "--rep-out", "V"])
    assert r.exit_code == 0, r.output
    assert "1 equivariant linear maps" in r.output
    r = runner.invoke(app, ["symmetry", "--group", "O3", "--rep-in", "V*V", "--rep-out", "V", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["n_maps"] == 0  # the cross product is a pseudovector
    r = runner.invoke(app, ["symmetry", "--group", "S6", "--rep-in", "V**2", "--rep-out", "V**2", "--json"])
    assert json.loads(r.output)["n_maps"] == 15
    r = runner.invoke(app, ["symmetry", "--group", "O3", "--rep-in", "V +", "--rep-out", "V"])
    assert r.exit_code == 2 and "cannot parse" in r.output
    r = runner.invoke(app, ["symmetry"])
    assert r.exit_code == 2 and "exactly one of" in r.output


def test_cli_symmetry_on_a_model_file(tmp_path, images):
    mod = tmp_path / "netdef.py"
    mod.write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
                   "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    data = tmp_path / "x.npy"
    np.save(data, images.float().reshape(40, -1).numpy())
    r = runner.invoke(app, ["symmetry", "--model", f"{mod}:build", "--data", str(data), "--image-shape", "1,8,8",
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    import importlib.util

    spec = importlib.util.spec_from_file_location("netdef", mod)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    ref = symmetry_survey(m.build(), torch.from_numpy(np.load(data)), image_shape=(1, 8, 8))
    np.testing.assert_allclose(doc["relative_change"], ref.relative_change, rtol=1e-6)
    r = runner.invoke(app, ["symmetry", "--model", f"{mod}:build", "--data", str(data)])
    assert r.exit_code == 2 and "image_shape" in r.output
