"""Layer ID profile: probe once, estimate per layer, and agree with doing it by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from shapelens import data
from shapelens import dimension as dm
from shapelens.probe import capture


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 10))


def test_profile_equals_estimator_on_captured_layers():
    X, _ = data.digits()
    model = _mlp()
    prof = dm.layer_profile(model, X, layers="auto", estimator="twonn")
    assert prof.layers == ("0", "2", "4")
    acts = capture(model, X, ["0", "2", "4"])
    for name, d in zip(prof.layers, prof.dimensions):
        assert d == pytest.approx(dm.TwoNN().fit(acts[name]).dimension_, rel=1e-12)
    np.testing.assert_array_equal(prof.ambient_dims, [96, 48, 10])
    assert prof.n_points == len(X)
    d = prof.to_dict()
    assert d["type"] == "LayerProfile" and len(d["dimensions"]) == 3
    ax = prof.plot()
    assert ax.get_ylabel() == "intrinsic dimension"


def test_profile_accepts_estimator_instances_and_parameters():
    X, _ = data.digits()
    model = _mlp(1)
    a = dm.layer_profile(model, X, layers=["2"], estimator="mle", k=10)
    b = dm.layer_profile(model, X, layers=["2"], estimator=dm.MLE(k=10))
    assert a.dimensions[0] == pytest.approx(b.dimensions[0], rel=1e-12)
    assert a.estimator == "mle" and b.estimator == "MLE"


def test_profile_on_a_linear_bottleneck_reads_the_bottleneck_width():
    """Ground truth: after a rank-3 linear map, every later linear layer's image lies in a
    3-dimensional affine subspace, whatever the width."""
    torch.manual_seed(0)
    m = data.sphere(3000, 5, ambient=20, seed=0)
    model = nn.Sequential(nn.Linear(20, 3), nn.Linear(3, 40), nn.Linear(40, 30))
    prof = dm.layer_profile(model, m.X.astype(np.float32), estimator="lpca", k=30)
    np.testing.assert_allclose(prof.dimensions, [3, 3, 3])


def test_profile_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="available"):
        dm.layer_profile(_mlp(), np.zeros((10, 64), np.float32), estimator="bogus")
