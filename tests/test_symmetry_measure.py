"""Equivariance measurement against exact ground truth: group actions that are exact
permutations, closed-form Lie derivatives of image moments, F.grid_sample as the reference
bilinear warp, and finite differences (only here, to check that the jvp is wired right)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapelens._checks import ShapelensWarning, single_thread
from shapelens.probe import UnknownLayerError
from shapelens.symmetry.groups import cyclic, symmetric
from shapelens.symmetry.layers import EquivariantLinear
from shapelens.symmetry.measure import (
    EquivarianceError,
    LieDerivative,
    equivariance_error,
    lie_derivative,
)
from shapelens.symmetry.reps import standard
from shapelens.symmetry.transforms import (
    IMAGE_TRANSFORMS,
    flip,
    rot90,
    rotate,
    scale,
    shift,
    translate,
)

D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors in loops: a thread pool only spin-waits on a busy 2-core machine."""
    with single_thread(True):
        yield


def _rng_image(shape, seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _blob(H=31, W=31, cx=4.0, cy=-3.0, sigma=1.2, dtype=D64):
    """A Gaussian blob centred at (cx, cy) from the image centre, ~0 (< 1e-17) at the border."""
    r = torch.arange(H, dtype=dtype) - (H - 1) / 2
    c = torch.arange(W, dtype=dtype) - (W - 1) / 2
    img = torch.exp(-((c[None, :] - cx) ** 2 + (r[:, None] - cy) ** 2) / (2 * sigma**2))
    return img.reshape(1, 1, H, W)


def _centred_coords(H, W, dtype=D64):
    r = (torch.arange(H, dtype=dtype) - (H - 1) / 2)[:, None].expand(H, W)
    c = (torch.arange(W, dtype=dtype) - (W - 1) / 2)[None, :].expand(H, W)
    return c, r


# ======================================================================================
# transforms
# ======================================================================================


def _grid_sample_reference(x, u, v, padding):
    """F.grid_sample (bilinear, align_corners=False) at pixel coordinates (u, v)."""
    _, _, H, W = x.shape
    grid = torch.stack([(2 * u + 1) / W - 1, (2 * v + 1) / H - 1], dim=-1).expand(x.shape[0], H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_warp_equals_grid_sample(padding):
    x = _rng_image((2, 3, 7, 9))
    H, W = 7, 9
    c, r = _centred_coords(H, W)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    t = 0.4
    # rotation: source = R(-t) p
    u = math.cos(t) * c - math.sin(t) * r + cx
    v = math.sin(t) * c + math.cos(t) * r + cy
    assert torch.allclose(rotate(x, t, padding=padding), _grid_sample_reference(x, u, v, padding), atol=1e-12)
    # scaling by exp(0.3): source = exp(-0.3) p
    s = math.exp(-0.3)
    ref = _grid_sample_reference(x, s * c + cx, s * r + cy, padding)
    assert torch.allclose(scale(x, 0.3, padding=padding), ref, atol=1e-12)
    # fractional translation
    ref = _grid_sample_reference(x, c + cx - 1.3, r + cy, padding)
    assert torch.allclose(translate(x, 1.3, "x", padding=padding), ref, atol=1e-12)
    ref = _grid_sample_reference(x, c + cx, r + cy + 0.6, padding)
    assert torch.allclose(translate(x, -0.6, "y", padding=padding), ref, atol=1e-12)


def test_identity_at_zero_and_integer_translations_are_exact_shifts():
    x = _rng_image((2, 3, 6, 8))
    for interp in ("bilinear", "bicubic"):
        assert torch.equal(translate(x, 0.0, interpolation=interp), x)
        assert torch.equal(rotate(x, 0.0, interpolation=interp), x)
        assert torch.equal(scale(x, 0.0, interpolation=interp), x)
        assert torch.equal(translate(x, 3, "x", interpolation=interp), torch.roll(x, 3, dims=-1))
        assert torch.equal(translate(x, -2, "y", interpolation=interp), torch.roll(x, -2, dims=-2))
        assert torch.equal(translate(x, 3, "x", interpolation=interp), shift(x, 3, "x"))
        assert torch.equal(translate(x, 2, "y", padding="zeros", interpolation=interp), shift(x, 2, "y", padding="zeros"))
    z = shift(x, 2, "x", padding="zeros")
    assert torch.equal(z[..., :2], torch.zeros_like(z[..., :2])) and torch.equal(z[..., 2:], x[..., :-2])
    z = shift(x, -3, "y", padding="zeros")
    assert torch.equal(z[..., -3:, :], torch.zeros_like(z[..., -3:, :])) and torch.equal(z[..., :-3, :], x[..., 3:, :])
    # one amount per example
    y = translate(x, torch.tensor([1.0, -2.0], dtype=D64), "x")
    assert torch.equal(y[0], torch.roll(x[0], 1, dims=-1)) and torch.equal(y[1], torch.roll(x[1], -2, dims=-1))


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_rotation_quarter_turns_match_rot90_and_direction(interp):
    for n in (8, 7):
        x = _rng_image((2, 2, n, n), seed=n)
        assert torch.allclose(rotate(x, math.pi / 2, interpolation=interp), rot90(x, 1), atol=1e-12)
        assert torch.allclose(rotate(x, -math.pi / 2, interpolation=interp), rot90(x, -1), atol=1e-12)
    x = _rng_image((1, 1, 6, 9), seed=3)  # non-square: a half turn maps the grid onto itself
    assert torch.allclose(rotate(x, math.pi, interpolation=interp), rot90(x, 2), atol=1e-12)
    # counter-clockwise as displayed (numpy's rot90 convention): the top-right entry goes top-left
    m = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    assert rot90(m, 1).flatten().tolist() == [2.0, 4.0, 1.0, 3.0]
    assert torch.equal(rot90(rot90(rot90(rot90(x, 1), 1), 1), 1), x)
    assert torch.equal(flip(flip(x, "x"), "x"), x)
    assert torch.equal(flip(x, "y"), torch.flip(x, dims=(-2,)))


def test_rotation_and_scaling_are_isotropic_in_pixels_on_non_square_images():
    H, W = 25, 41
    blob = _blob(H, W, cx=0.0, cy=0.0, sigma=3.0)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert rel(rotate(blob, 0.7, interpolation="bicubic"), blob) < 5e-3
    # scaling by exp(t) is the blob with sigma * exp(t) (closed form)
    wider = _blob(H, W, cx=0.0, cy=0.0, sigma=3.0 * math.exp(0.2))
    assert rel(scale(blob, 0.2, interpolation="bicubic"), wider) < 5e-3
    # moving blob off centre: a quarter turn moves (4, 0) to (0, -4) (up, as displayed)
    moved = _blob(H, W, cx=4.0, cy=0.0, sigma=1.5)
    target = _blob(H, W, cx=0.0, cy=-4.0, sigma=1.5)
    assert rel(rotate(moved, math.pi / 2, interpolation="bicubic"), target) < 1e-12


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_fractional_circular_translation_commutes_with_circular_convolution(interp):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=True).double()
    x = _rng_image((2, 2, 9, 11))
    with torch.no_grad():
        for axis in ("x", "y"):
            a = conv(translate(x, 0.37, axis, interpolation=interp))
            b = translate(conv(x), 0.37, axis, interpolation=interp)
            assert torch.allclose(a, b, atol=1e-12)
        # zero padding breaks it at the border
        a = conv(translate(x, 0.37, padding="zeros", interpolation=interp))
        b = translate(conv(x), 0.37, padding="zeros", interpolation=interp)
        assert (a - b).abs().max() > 1e-3


def test_jvp_of_translation_is_the_documented_difference_stencil():
    x = _rng_image((2, 1, 5, 6))
    zero, one = torch.zeros((), dtype=D64), torch.ones((), dtype=D64)
    _, d_lin = torch.func.jvp(lambda t: translate(x, t, interpolation="bilinear"), (zero,), (one,))
    _, d_cub = torch.func.jvp(lambda t: translate(x, t, interpolation="bicubic"), (zero,), (one,))
    fwd = torch.roll(x, -1, -1) - x
    cen = (torch.roll(x, -1, -1) - torch.roll(x, 1, -1)) / 2
    assert torch.allclose(d_lin, -fwd, atol=1e-14)
    assert torch.allclose(d_cub, -cen, atol=1e-14)


def test_transform_bad_inputs():
    x = _rng_image((2, 1, 5, 6))
    with pytest.raises(ValueError, match="unsqueeze"):
        translate(x[:, 0], 1.0)
    with pytest.raises(ValueError, match="axis must be"):
        translate(x, 1.0, axis="z")
    with pytest.raises(ValueError, match="padding must be one of"):
        rotate(x, 0.1, padding="reflect")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        scale(x, 0.1, interpolation="nearest")
    with pytest.raises(TypeError, match="integer"):
        shift(x, 1.5)
    with pytest.raises(ValueError, match="one value per example"):
        translate(x, torch.zeros(3, dtype=D64))
    with pytest.raises(TypeError, match="floating-point"):
        rotate(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 0.1)
    assert set(IMAGE_TRANSFORMS) == {"translate_x", "translate_y", "rotate", "scale"}


# ======================================================================================
# equivariance_error
# ======================================================================================


def _deepsets(V, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(EquivariantLinear(V, V), nn.Tanh(), EquivariantLinear(V, V)).to(dtype)


def test_deepsets_is_equivariant_and_a_dense_layer_is_not():
    G = symmetric(4)
    V = standard(G)
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    r32 = equivariance_error(_deepsets(V), G, V, V, x, samples=32)
    assert isinstance(r32, EquivarianceError)
    assert r32.exhaustive and r32.n_elements == 24 and r32.n_examples == 40
    assert r32.mean < 1e-6 and r32.max < 1e-5
    r64 = equivariance_error(_deepsets(V, D64), G, V, V, x.double(), samples=32)
    assert r64.max < 1e-12
    torch.manual_seed(0)
    dense = nn.Linear(4, 4)
    rd = equivariance_error(dense, G, V, V, x, samples=32)
    assert rd.mean > 0.1
    # the identity permutation is among the elements and has zero error even for the dense layer
    k = [tuple(g) for g in rd.elements].index(tuple(range(4)))
    assert rd.per_element[k] == 0.0
    # sampling: fewer samples than the order draws a seeded sample
    a = equivariance_error(dense, G, V, V, x, samples=5, seed=3)
    b = equivariance_error(dense, G, V, V, x, samples=5, seed=3)
    assert not a.exhaustive and a.n_elements == 5 and a.elements == b.elements and np.array_equal(a.per_element, b.per_element)
    json.dumps(rd.to_dict())


def test_invariant_function_has_zero_invariance_error():
    G = symmetric(5)
    V = standard(G)
    x = torch.randn(30, 3, 5, dtype=D64, generator=torch.Generator().manual_seed(2))  # a Rep acts on the last axis
    f = lambda z: torch.tanh(z).sum(-1) + z.max(-1).values  # noqa: E731 - symmetric in the 5 set elements
    r = equivariance_error(f, G, V, None, x, samples=20)
    assert r.invariance and r.max < 1e-14
    r_bad = equivariance_error(lambda z: z[..., :2] * 1.0, G, V, None, x, samples=20)
    assert r_bad.mean > 0.1


def test_per_layer_errors_equal_the_submodels_by_hand():
    G = symmetric(4)
    V = standard(G)
    torch.manual_seed(0)
    model = nn.Sequential(EquivariantLinear(V, V), nn.Tanh(), nn.Linear(4, 4), EquivariantLinear(V, V)).double()
    x = torch.randn(25, 4, dtype=D64, generator=torch.Generator().manual_seed(4))
    r = equivariance_error(model, G, V, V, x, samples=10, seed=1, model_layers=["0", "1", "2"],
                           layer_act_out={"0": V, "1": V})  # "2" measured for invariance
    assert list(r.layers) == ["0", "1", "2"]
    assert not r.layers["0"].invariance and r.layers["2"].invariance
    assert r.layers["0"].max < 1e-13 and r.layers["1"].max < 1e-13
    assert r.layers["2"].mean > 0.05 and r.mean > 0.05

    def by_hand(sub, g, act_out_is_rep):
        P = torch.as_tensor(V.rho(g), dtype=D64)
        with torch.no_grad():
            a = sub(x @ P.T)
            b = sub(x)
        if act_out_is_rep:
            b = b @ P.T
        return float(((a - b).norm(dim=1) / b.norm(dim=1)).mean())

    for k, g in enumerate(r.elements):
        assert r.layers["0"].per_element[k] == pytest.approx(by_hand(model[:1], g, True), rel=1e-9, abs=1e-15)
        assert r.layers["1"].per_element[k] == pytest.approx(by_hand(model[:2], g, True), rel=1e-9, abs=1e-15)
        assert r.layers["2"].per_element[k] == pytest.approx(by_hand(model[:3], g, False), rel=1e-9, abs=1e-15)
        assert r.per_element[k] == pytest.approx(by_hand(model, g, True), rel=1e-9, abs=1e-15)
    ax = r.plot()
    assert len(ax.patches) == 4
    json.dumps(r.to_dict())


def test_callable_actions_on_images_and_eval_mode():
    C4 = cyclic(4)
    act = lambda g, z: rot90(z, g[0])  # noqa: E731 - element g maps 0 -> g[0]: g[0] quarter turns
    x = torch.randn(6, 2, 7, 7, dtype=D64, generator=torch.Generator().manual_seed(5))
    r = equivariance_error(lambda z: z.sum((-1, -2)), C4, act, None, x)
    assert r.exhaustive and r.n_elements == 4 and r.max < 1e-14
    r = equivariance_error(lambda z: torch.tanh(z), C4, act, act, x)  # pointwise maps are equivariant
    assert r.max == 0.0
    r = equivariance_error(lambda z: z[..., 0, :], C4, act, None, x)  # the first row is not invariant
    assert r.mean > 0.1
    # a module in train mode with dropout is measured in eval mode, and its flags are restored
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1)).double()
    with torch.no_grad():  # a rotation-symmetric kernel makes the pooled output C4-invariant
        w = model[0].weight
        w.copy_((w + w.rot90(1, (-2, -1)) + w.rot90(2, (-2, -1)) + w.rot90(3, (-2, -1))) / 4)
    model.train()
    r = equivariance_error(model, C4, act, None, x)
    assert r.max < 1e-12
    assert model.training and model[1].training


def test_matrix_group_and_sampled_large_group():
    from shapelens.symmetry.groups import SO3

    G = SO3()
    V = standard(G)  # rho(g) = g on R^3
    x = torch.randn(20, 6, 3, dtype=D64, generator=torch.Generator().manual_seed(6))  # 6 points in R^3
    assert equivariance_error(lambda z: z.norm(dim=-1), G, V, None, x, samples=8).max < 1e-14
    r = equivariance_error(lambda z: z * z.norm(dim=-1, keepdim=True), G, V, V, x, samples=8)
    assert r.max < 1e-14 and not r.exhaustive and r.n_elements == 8
    assert equivariance_error(lambda z: z**2, G, V, V, x, samples=8).mean > 0.1
    json.dumps(r.to_dict())
    S12 = symmetric(12)  # 479,001,600 elements: sampled, never enumerated
    W = standard(S12)
    r = equivariance_error(lambda z: z.sum(-1, keepdim=True), S12, W, None, torch.randn(5, 12, dtype=D64), samples=4)
    assert r.n_elements == 4 and r.max < 1e-14


class _EmptyGroup:
    name = "empty"
    is_finite = False

    def sample(self, n, *, seed=0):
        return ()


def test_equivariance_error_bad_inputs():
    G = symmetric(4)
    V = standard(G)
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="dimension 4.*5 features"):
        equivariance_error(lambda z: z, G, V, V, torch.randn(5, 5))
    with pytest.raises(ValueError, match="act_out has dimension 4.*3 features"):
        equivariance_error(nn.Linear(4, 3), G, V, V, x)
    with pytest.raises(ValueError, match="no elements"):
        equivariance_error(lambda z: z, _EmptyGroup(), lambda g, z: z, None, x)
    with pytest.raises(ValueError, match="keep its shape"):
        equivariance_error(lambda z: z, G, lambda g, z: z[..., :-1], None, x)
    with pytest.raises(ValueError, match="NaN/infinite"):
        equivariance_error(lambda z: torch.log(z), G, V, V, x - 10)
    with pytest.raises(TypeError, match="nn.Module"):
        equivariance_error(lambda z: z, G, V, V, x, model_layers=["0"])
    with pytest.raises(UnknownLayerError, match="not a submodule"):
        equivariance_error(nn.Sequential(nn.Linear(4, 4)), G, V, V, x, model_layers=["nope"])
    with pytest.raises(ValueError, match="same group object"):
        equivariance_error(lambda z: z, symmetric(4), V, V, x)
    with pytest.raises(ValueError, match="act_in is None"):
        equivariance_error(lambda z: z, G, None, None, x)
    with pytest.raises(ValueError, match="not in model_layers"):
        equivariance_error(nn.Sequential(nn.Linear(4, 4)), G, V, V, x, model_layers=["0"], layer_act_out={"1": V})
    with pytest.raises(ValueError, match="at least one example"):
        equivariance_error(lambda z: z, G, V, V, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="samples must be at least 1"):
        equivariance_error(lambda z: z, G, V, V, x, samples=0)


# ======================================================================================
# lie_derivative
# ======================================================================================


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_circular_convolution_has_zero_translation_lie_derivative(interp):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular")
    x32 = torch.randn(6, 2, 12, 10)
    with torch.no_grad():
        scale32 = conv(x32).flatten(1).norm(dim=1).numpy()
    for tr in ("translate_x", "translate_y"):
        r = lie_derivative(conv, tr, x32, output="equivariant", interpolation=interp)
        assert isinstance(r, LieDerivative) and r.transform == tr and r.padding == "circular"
        assert np.all(r.values / scale32 < 1e-6)
    conv64 = nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular").double()
    for tr in ("translate_x", "translate_y"):
        assert lie_derivative(conv64, tr, x32.double(), output="equivariant", interpolation=interp).max < 1e-10
    # followed by global pooling the output is invariant: zero as well
    inv = nn.Sequential(conv64, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert lie_derivative(inv, "translate_x", x32.double(), interpolation=interp).max < 1e-10
    # a random MLP on the flattened image is not translation invariant
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(240, 32), nn.Tanh(), nn.Linear(32, 5))
    with torch.no_grad():
        out_scale = mlp(x32).norm(dim=1).numpy()
    r = lie_derivative(mlp, "translate_x", x32, interpolation=interp)
    assert np.all(r.values / out_scale > 1e-2)


def test_lie_derivatives_of_image_moments_match_closed_forms():
    x = _blob(31, 31, cx=4.0, cy=-3.0) + 0.5 * _blob(31, 31, cx=-2.0, cy=5.0, sigma=1.0)
    c, r = _centred_coords(31, 31)
    mass = float(x.sum())
    m_x, m_y = float((x[0, 0] * c).sum()), float((x[0, 0] * r).sum())
    first_x = lambda z: (z[:, 0] * c).sum((-1, -2)).unsqueeze(-1)  # noqa: E731
    first_y = lambda z: (z[:, 0] * r).sum((-1, -2)).unsqueeze(-1)  # noqa: E731
    total = lambda z: z.sum((1, 2, 3)).unsqueeze(-1)  # noqa: E731
    for interp in ("bilinear", "bicubic"):
        def L(f, tr):
            return float(lie_derivative(f, tr, x, interpolation=interp, keep_derivative=True).derivative.item())

        assert L(first_x, "translate_x") == pytest.approx(mass, rel=1e-10)  # content moves right by t
        assert L(first_y, "translate_y") == pytest.approx(mass, rel=1e-10)  # down by t
        assert L(first_x, "rotate") == pytest.approx(m_y, rel=1e-10)  # d/dt (x cos t + y sin t)
        assert L(first_y, "rotate") == pytest.approx(-m_x, rel=1e-10)
        assert L(total, "scale") == pytest.approx(2 * mass, rel=1e-10)  # area grows like exp(2t)
    assert m_y != 0 and m_x != 0


def test_rotation_invariant_functions_have_small_rotation_lie_derivative():
    x = _blob(31, 31, cx=4.0, cy=-3.0) + 0.5 * _blob(31, 31, cx=-2.0, cy=5.0, sigma=1.0)
    c, r = _centred_coords(31, 31)
    norm2 = lambda z: (z**2).sum((1, 2, 3)).unsqueeze(-1)  # noqa: E731
    radial = lambda z: (z[:, 0] * (c**2 + r**2)).sum((-1, -2)).unsqueeze(-1)  # noqa: E731
    first_x = lambda z: (z[:, 0] * c).sum((-1, -2)).unsqueeze(-1)  # noqa: E731
    big = lie_derivative(first_x, "rotate", x).max / float(first_x(x).abs().max())
    for f in (norm2, radial):
        small = lie_derivative(f, "rotate", x).max / float(f(x).abs().max())
        assert small < 1e-12 and big > 0.1
    # the central-difference generator (bicubic) is skew, so ||x||^2 is exactly invariant even for
    # noise images; the bilinear warp's one-sided derivative is not
    noise = _rng_image((2, 1, 9, 9))
    assert lie_derivative(norm2, "rotate", noise).max < 1e-12
    assert lie_derivative(norm2, "rotate", noise, interpolation="bilinear").max > 1e-2


def _fd(g, h):
    with torch.no_grad():
        return (g(h) - g(-h)) / (2 * h)


@pytest.mark.parametrize("tr", ["translate_x", "translate_y", "rotate", "scale"])
def test_lie_derivative_equals_central_finite_difference(tr):
    torch.manual_seed(0)
    x = _rng_image((3, 2, 9, 8), seed=7)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, padding=1)).double()
    T = IMAGE_TRANSFORMS[tr]
    pad = "circular" if tr.startswith("translate") else "zeros"
    warp = lambda z, t: T(z, t, padding=pad, interpolation="bicubic")  # noqa: E731
    h = 1e-6
    r = lie_derivative(mlp, tr, x, keep_derivative=True)
    fd = _fd(lambda t: mlp(warp(x, t)), h)
    assert np.allclose(r.derivative, fd.numpy(), rtol=1e-4, atol=1e-6 * float(fd.abs().max()))
    r = lie_derivative(cnn, tr, x, output="equivariant", keep_derivative=True)
    fd = _fd(lambda t: warp(cnn(warp(x, t)), -t), h)
    assert float(fd.abs().max()) > 1e-2  # not equivariant: a non-trivial check
    assert np.allclose(r.derivative, fd.numpy(), rtol=1e-4, atol=1e-6 * float(fd.abs().max()))
    # the norms are the documented summaries of the derivative
    d = r.derivative.reshape(3, -1)
    assert np.allclose(r.values, np.linalg.norm(d, axis=1), rtol=1e-12)
    sq = lie_derivative(cnn, tr, x, output="equivariant", norm="l2_squared")
    ma = lie_derivative(cnn, tr, x, output="equivariant", norm="mean_abs")
    assert np.allclose(sq.values, r.values**2, rtol=1e-10)
    assert np.allclose(ma.values, np.abs(d).mean(axis=1), rtol=1e-10)


def test_bilinear_lie_derivative_is_the_one_sided_derivative():
    torch.manual_seed(0)
    x = _rng_image((2, 1, 8, 8), seed=9)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    r = lie_derivative(mlp, "translate_x", x, interpolation="bilinear", keep_derivative=True)
    g = lambda t: mlp(translate(x, t, interpolation="bilinear"))  # noqa: E731
    h = 1e-6
    with torch.no_grad():
        left = ((g(0.0) - g(-h)) / h).numpy()
    assert np.allclose(r.derivative, left, rtol=1e-4, atol=1e-8)
    assert not np.allclose(r.derivative, _fd(g, h).numpy(), rtol=1e-2)  # the kink at t = 0


def test_downsampled_outputs_move_by_the_same_fraction_of_the_image():
    H = 32
    j = torch.arange(H, dtype=D64)
    x = (torch.cos(2 * math.pi * j / H)[None, :] + torch.sin(4 * math.pi * j / H)[:, None]).reshape(1, 1, H, H)
    pool = nn.AvgPool2d(2)
    ref = lie_derivative(lambda z: z, "translate_x", x).values / 2  # what half-size outputs should see
    rescaled = lie_derivative(pool, "translate_x", x, output="equivariant").values
    same_t = lie_derivative(pool, lambda z, t: translate(z, t, interpolation="bicubic"), x, output="equivariant")
    assert rescaled[0] / ref[0] < 0.05 and same_t.values[0] / ref[0] > 0.5


def test_lie_derivative_eval_mode_callable_transform_and_fallback():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Dropout(0.5),
                          nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")).double()
    model.train()
    x = _rng_image((3, 1, 8, 8), seed=11)
    r = lie_derivative(model, "translate_x", x, output="equivariant")
    assert r.max < 1e-10 and model.training and model[1].training
    # a callable transform gives the same as the named one with the same options
    named = lie_derivative(model, "rotate", x, output="equivariant", padding="zeros")
    call = lie_derivative(model, lambda z, t: rotate(z, t, interpolation="bicubic"), x, output="equivariant")
    assert np.allclose(named.values, call.values, rtol=1e-12)

    class Square(torch.autograd.Function):  # no forward-mode rule: torch.func.jvp refuses it
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return z * z

        @staticmethod
        def backward(ctx, grad):
            (z,) = ctx.saved_tensors
            return 2 * z * grad

    lin = nn.Linear(64, 3).double()
    plain = lie_derivative(lambda z: lin((z * z).flatten(1)), "rotate", x, keep_derivative=True)
    with pytest.warns(ShapelensWarning, match="double backward"):
        custom = lie_derivative(lambda z: lin(Square.apply(z).flatten(1)), "rotate", x, keep_derivative=True)
    assert np.allclose(custom.derivative, plain.derivative, rtol=1e-10, atol=1e-14)
    ax = plain.plot()
    assert ax.get_xlabel().startswith("l2")
    json.dumps(plain.to_dict())


def test_lie_derivative_bad_inputs():
    x = _rng_image((2, 1, 6, 6))
    with pytest.raises(ValueError, match="unknown transform 'shear'.*translate_x"):
        lie_derivative(lambda z: z, "shear", x)
    with pytest.raises(ValueError, match="needs image outputs"):
        lie_derivative(lambda z: z.flatten(1), "rotate", x, output="equivariant")
    with pytest.raises(ValueError, match="norm must be one of"):
        lie_derivative(lambda z: z, "rotate", x, norm="l1")
    with pytest.raises(ValueError, match="output must be"):
        lie_derivative(lambda z: z, "rotate", x, output="both")
    with pytest.raises(ValueError, match="unsqueeze"):
        lie_derivative(lambda z: z, "rotate", x[:, 0])
    with pytest.raises(TypeError, match="floating-point"):
        lie_derivative(lambda z: z, "rotate", torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="padding must be one of"):
        lie_derivative(lambda z: z, "rotate", x, padding="reflect")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        lie_derivative(lambda z: z, "rotate", x, interpolation="nearest")
    with pytest.raises(ValueError, match="NaN/infinite"):
        lie_derivative(lambda z: z, "rotate", x * float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain forward-mode run warns nothing
        lie_derivative(lambda z: z.sum((1, 2, 3)), "scale", x)
