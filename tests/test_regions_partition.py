"""Exact linear regions (shapelens.regions.partition) against brute force.

Ground truth: activation patterns and outputs from plain forward passes at dense grids of the
slice (patterns from hooks written here, independently of the library), the face count of a
line arrangement from Euler's formula, the tie of the top-2 logits on decision boundaries.
"""

from __future__ import annotations

import json
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from shapelens._checks import single_thread
from shapelens.regions.partition import (
    NotPiecewiseLinearError,
    Partition,
    PartitionTooLarge,
    Plane,
    partition,
)

@pytest.fixture(autouse=True)
def _one_thread():
    # tiny float64 models: a thread pool only spin-waits on a loaded machine
    with single_thread(True):
        yield


# ------------------------------------------------------------------------------------------
# helpers (independent of the library)
# ------------------------------------------------------------------------------------------


def mlp(sizes, act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(act())
    return nn.Sequential(*mods).double().eval()


def grid(bounds, n):
    s = np.linspace(bounds[0], bounds[1], n + 2)[1:-1]
    t = np.linspace(bounds[2], bounds[3], n + 2)[1:-1]
    S, T = np.meshgrid(s, t, indexing="ij")
    return np.stack([S.ravel(), T.ravel()], 1)


def forward_patterns(net, modules, x):
    """Patterns and pre-activations of the given PL modules at inputs x, by forward hooks.
    ReLU/LeakyReLU: 1 where the input is > 0. MaxPool2d(2): index of the (first) maximum
    of each 2x2 window via unfold. Returns (patterns (N, n), margin (N,)) where margin is the
    smallest distance of any decision quantity to its switching value (for excluding points
    on region edges)."""
    calls: dict[int, list] = {}
    uniq = {id(m): m for m in modules}
    hooks = [m.register_forward_pre_hook(lambda mod, a: calls.setdefault(id(mod), []).append(a[0].detach()))
             for m in uniq.values()]
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for h in hooks:
            h.remove()
    pats, margins = [], []
    seen: dict[int, int] = {}
    for m in modules:  # the i-th occurrence of a module is its i-th call
        z = calls[id(m)][seen.get(id(m), 0)]
        seen[id(m)] = seen.get(id(m), 0) + 1
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            z = z.flatten(1)
            pats.append((z > 0).to(torch.int64))
            margins.append(z.abs().amin(1) / (z.abs().amax() + 1e-300))
        elif isinstance(m, nn.MaxPool2d):
            N, C, H, W = z.shape
            u = F.unfold(z.reshape(N * C, 1, H, W), kernel_size=2, stride=2)  # (N*C, 4, L)
            u = u.reshape(N, C, 4, -1).permute(0, 1, 3, 2).reshape(N, -1, 4)
            top = u.amax(2, keepdim=True)
            scale = z.abs().amax() + 1e-300
            tied = (u >= top - 1e-12 * scale)
            pats.append(tied.to(torch.int8).argmax(2).to(torch.int64))
            # margin: gap between the max and the best other value, unless exact ties
            srt = u.sort(2, descending=True).values
            gap = srt[..., 0] - srt[..., 1]
            gap = torch.where(gap <= 1e-12 * scale, torch.full_like(gap, math.inf), gap)
            margins.append(gap.amin(1) / scale)
        else:
            raise AssertionError(type(m))
    return torch.cat(pats, 1).numpy(), torch.stack(margins, 1).amin(1).numpy(), out


def check_partition(p: Partition, net, pl_modules, n_grid=90, seed=0):
    """The acceptance checks on a grid and random points."""
    b = p.bounds
    area = (b[1] - b[0]) * (b[3] - b[2])
    # areas sum to the slice area; polygons convex, counter-clockwise
    assert abs(p.areas.sum() - area) <= 1e-9 * area
    assert (p.areas > 0).all()
    for r in range(p.n_regions):
        poly = p.polygon(r)
        e = np.roll(poly, -1, 0) - poly
        cross = e[:, 0] * np.roll(e, -1, 0)[:, 1] - e[:, 1] * np.roll(e, -1, 0)[:, 0]
        assert (cross > -1e-12 * area).all(), f"region {r} is not convex/CCW"
        assert poly[:, 0].min() >= b[0] - 1e-9 and poly[:, 0].max() <= b[1] + 1e-9
    # every grid point lies in the region whose pattern equals the forward pattern there
    g = grid(b, n_grid)
    r = p.region_of(g)
    assert (r >= 0).all()
    x = torch.as_tensor(p.plane.lift(g))
    pat, margin, out = forward_patterns(net, pl_modules, x)
    assert pat.shape[1] == p.patterns.shape[1]
    clear = margin > 1e-9
    assert clear.mean() > 0.9
    bad = (p.patterns[r] != pat).any(1) & clear
    assert not bad.any(), f"{bad.sum()} grid points have a different pattern than their region"
    # outputs = the region's affine map (also near edges: the map is continuous)
    out = out.reshape(len(g), -1).numpy()
    pred = np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r]
    scale = np.abs(out).max() + 1e-300
    assert np.abs(pred - out).max() <= 1e-9 * scale
    # random points, each checked against its own region
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(b[0], b[1], 500), rng.uniform(b[2], b[3], 500)], 1)
    rr = p.region_of(pts)
    with torch.no_grad():
        o = net(torch.as_tensor(p.plane.lift(pts))).reshape(len(pts), -1).numpy()
    pred = np.einsum("nij,nj->ni", p.out_A[rr], pts) + p.out_c[rr]
    assert np.abs(pred - o).max() <= 1e-9 * scale
    return g, r


def random_plane(d, seed):
    rng = np.random.default_rng(seed)
    return Plane(rng.normal(size=d), rng.normal(size=d), rng.normal(size=d))


# ------------------------------------------------------------------------------------------
# MLPs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes,act,seed",
    [
        ([2, 6, 3], nn.ReLU, 0),
        ([2, 16, 16, 3], nn.ReLU, 1),
        ([5, 12, 12, 12, 4], nn.ReLU, 2),
        ([3, 10, 10, 2], lambda: nn.LeakyReLU(0.2), 3),
        ([4, 24, 1], nn.ReLU, 4),
    ],
)
def test_mlp_grid_patterns_outputs_areas(sizes, act, seed):
    net = mlp(sizes, act, seed)
    d = sizes[0]
    if d == 2:
        plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    else:
        plane = random_plane(d, seed)
    bounds = (-2.0, 2.5, -1.5, 2.0)
    p = partition(net, plane, bounds, device="cpu")
    pl = [m for m in net if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert p.layers == tuple(str(i) for i, m in enumerate(net) if isinstance(m, (nn.ReLU, nn.LeakyReLU)))
    assert p.patterns.shape == (p.n_regions, sum(sizes[1:-1]))
    assert p.n_regions > 3
    # every region's pattern is distinct (exact partition, no over-refinement)
    assert len({row.tobytes() for row in p.patterns}) == p.n_regions
    check_partition(p, net, pl, seed=seed)
    # the output is class scores: predicted = argmax at the centroid
    cen = np.stack([p.polygon(r).mean(0) for r in range(p.n_regions)])
    with torch.no_grad():
        o = net(torch.as_tensor(plane.lift(cen))).numpy()
    expect = (o[:, 0] > 0).astype(int) if o.shape[1] == 1 else o.argmax(1)
    assert (p.predicted == expect).all()


def _arrangement_faces(W, b, box):
    """Faces of the arrangement of lines w.x + b = 0 inside the box, by Euler's formula
    F = E - V + 1 on the planar graph of the clipped lines and the box boundary."""
    s0, s1, t0, t1 = box
    corners = np.array([[s0, t0], [s1, t0], [s1, t1], [s0, t1]])
    lines = []
    for (w1, w2), c in zip(W, b):
        # intersections with the box edges
        pts = []
        for k in range(4):
            P, Q = corners[k], corners[(k + 1) % 4]
            fp, fq = w1 * P[0] + w2 * P[1] + c, w1 * Q[0] + w2 * Q[1] + c
            if fp * fq < 0:
                lam = fp / (fp - fq)
                pts.append(P + lam * (Q - P))
        if len(pts) == 2:
            lines.append(((w1, w2, c), pts))
    V = 4 + 2 * len(lines)
    E_box = 4 + 2 * len(lines)
    on_line = [0] * len(lines)
    for i, j in itertools.combinations(range(len(lines)), 2):
        (a1, b1, c1), _ = lines[i]
        (a2, b2, c2), _ = lines[j]
        det = a1 * b2 - a2 * b1
        x = (-c1 * b2 + c2 * b1) / det
        y = (-a1 * c2 + a2 * c1) / det
        if s0 < x < s1 and t0 < y < t1:
            V += 1
            on_line[i] += 1
            on_line[j] += 1
    E = E_box + sum(k + 1 for k in on_line)
    return E - V + 1, len(lines)


@pytest.mark.parametrize("m,seed", [(1, 0), (7, 1), (20, 2), (45, 3)])
def test_one_hidden_layer_counts_arrangement(m, seed):
    net = mlp([2, m, 2], seed=seed)
    box = (-1.7, 2.1, -1.9, 1.3)
    plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    p = partition(net, plane, box, device="cpu")
    W = net[0].weight.detach().numpy()
    bb = net[0].bias.detach().numpy()
    faces, crossing = _arrangement_faces(W, bb, box)
    assert p.n_regions == faces
    # independent lower bound: distinct patterns on a fine grid
    g = grid(box, 400)
    z = g @ W.T + bb
    distinct = len(np.unique(z > 0, axis=0))
    assert distinct <= faces
    assert distinct >= 0.8 * faces
    # a plane with scaled, non-orthogonal directions gives the same count
    plane2 = Plane(np.array([0.3, -0.2]), np.array([2.0, 0.0]), np.array([1.0, 1.0]))
    # the box (s, t) in plane2 maps to a parallelogram; compare with its own arrangement
    A = np.stack([plane2.u, plane2.v], 1)
    W2 = W @ A
    b2 = bb + W @ plane2.origin
    p2 = partition(net, plane2, (-1.0, 1.0, -0.8, 0.7), device="cpu")
    assert p2.n_regions == _arrangement_faces(W2, b2, (-1.0, 1.0, -0.8, 0.7))[0]


# ------------------------------------------------------------------------------------------
# CNNs
# ------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x):
        return self.act2(x + self.conv2(self.act(self.bn(self.conv1(x)))))


def small_cnn(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        ResBlock(2),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(8, 6),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 3),
    ).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


def test_cnn_conv_bn_pool_residual():
    net = small_cnn()
    gen = torch.Generator().manual_seed(1)
    x0, x1, x2 = torch.rand(3, 1, 10, 10, generator=gen, dtype=torch.float64)
    plane, bounds = Plane.from_points(x0, x1, x2, margin=0.1)
    p = partition(net, plane, bounds, device="cpu")
    pl = [net[2], net[3], net[4].act, net[4].act2, net[9]]
    assert p.layers == ("2", "3", "4.act", "4.act2", "9")
    assert p.layer_slices["3"] == slice(2 * 8 * 8, 2 * 8 * 8 + 2 * 16)
    # max-pool cells are merged: every region's pattern is distinct
    assert len({row.tobytes() for row in p.patterns}) == p.n_regions
    check_partition(p, net, pl, n_grid=70)


def test_maxpool_only_regions_are_argmax_cells():
    """A max-pool of affine functions: the regions are exactly the argmax cells (no
    over-refinement by the pairs that never tie at the maximum)."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2), nn.Flatten()).double().eval()
    gen = torch.Generator().manual_seed(2)
    u, v, o = torch.randn(3, 1, 2, 2, generator=gen, dtype=torch.float64)
    plane = Plane(o, u, v)
    p = partition(net, plane, (-3, 3, -3, 3), device="cpu")
    g = grid((-3, 3, -3, 3), 300)
    with torch.no_grad():
        x = torch.as_tensor(plane.lift(g))
        vals = net[0](x).flatten(1)
    distinct = len(np.unique(vals.argmax(1).numpy()))
    # the upper envelope of 4 affine functions in the plane: each argmax cell is convex, one region each
    assert p.n_regions == distinct
    assert p.predicted.tolist() == [-1] * p.n_regions or p.output == "model output"
    check_partition(p, net, [net[1]], n_grid=60)


# ------------------------------------------------------------------------------------------
# decision boundary
# ------------------------------------------------------------------------------------------


def test_decision_boundary_is_the_top2_tie_and_separates_classes():
    net = mlp([2, 12, 12, 4], seed=7)
    plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    box = (-3.0, 3.0, -3.0, 3.0)
    p = partition(net, plane, box, device="cpu")
    seg = p.boundary
    assert seg.ndim == 3 and seg.shape[1:] == (2, 2) and len(seg) > 3
    assert len(np.unique(p.predicted)) >= 2
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.05, 0.95, len(seg))[:, None]
    pts = seg[:, 0] * (1 - lam) + seg[:, 1] * lam
    with torch.no_grad():
        o = net(torch.as_tensor(pts)).numpy()
    top2 = np.sort(o, 1)[:, -2:]
    scale = np.abs(o).max()
    assert np.abs(top2[:, 1] - top2[:, 0]).max() <= 1e-9 * scale
    # the two sides of each segment have different predicted classes
    d = seg[:, 1] - seg[:, 0]
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
    eps = 1e-6 * (box[1] - box[0])
    with torch.no_grad():
        c1 = net(torch.as_tensor(pts + eps * nrm)).argmax(1).numpy()
        c2 = net(torch.as_tensor(pts - eps * nrm)).argmax(1).numpy()
    assert (c1 != c2).all()
    # completeness: between grid neighbours of different class there is a boundary segment
    g = grid(box, 60).reshape(60, 60, 2)
    with torch.no_grad():
        cls = net(torch.as_tensor(g.reshape(-1, 2))).argmax(1).numpy().reshape(60, 60)
    i, j = np.nonzero(cls[1:] != cls[:-1])
    A, B = g[i, j], g[i + 1, j]
    for a_pt, b_pt in zip(A[:40], B[:40]):
        assert _segment_hits(a_pt, b_pt, seg), "a class change without a boundary segment"


def _segment_hits(a, b, seg):
    p, r = a, b - a
    q, s = seg[:, 0], seg[:, 1] - seg[:, 0]
    rxs = r[0] * s[:, 1] - r[1] * s[:, 0]
    qp = q - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qp[:, 0] * s[:, 1] - qp[:, 1] * s[:, 0]) / rxs
        u = (qp[:, 0] * r[1] - qp[:, 1] * r[0]) / rxs
    tol = 1e-9
    return bool(((rxs != 0) & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)).any())


def test_binary_output_boundary_is_zero_level():
    net = mlp([2, 10, 1], seed=3)
    plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    p = partition(net, plane, (-2, 2, -2, 2), device="cpu")
    assert set(np.unique(p.predicted)) <= {0, 1}
    if len(p.boundary):
        mid = p.boundary.mean(1)
        with torch.no_grad():
            o = net(torch.as_tensor(mid)).numpy()[:, 0]
        assert np.abs(o).max() <= 1e-9 * (1 + np.abs(p.out_c).max())


# ------------------------------------------------------------------------------------------
# the plane, results
# ------------------------------------------------------------------------------------------


def test_plane_from_points_and_coords():
    rng = np.random.default_rng(0)
    x0, x1, x2 = rng.normal(size=(3, 7))
    plane, b = Plane.from_points(x0, x1, x2, margin=0.2)
    st = plane.coords(np.stack([x0, x1, x2]))
    assert np.allclose(plane.lift(st), np.stack([x0, x1, x2]))
    assert np.allclose(st[0], 0) and abs(st[1, 1]) < 1e-12
    assert np.isclose(np.linalg.norm(plane.u), 1) and np.isclose(np.linalg.norm(plane.v), 1)
    assert abs(np.dot(plane.u, plane.v)) < 1e-12
    assert (st[:, 0] > b[0]).all() and (st[:, 0] < b[1]).all() and (st[:, 1] > b[2]).all() and (st[:, 1] < b[3]).all()
    t = plane.lift(torch.tensor([[0.5, -1.0]], dtype=torch.float64))
    assert isinstance(t, torch.Tensor) and t.shape == (1, 7)


def test_to_dict_and_region_of_outside():
    net = mlp([2, 5, 2], seed=0)
    plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    p = partition(net, plane, (-1, 1, -1, 1), device="cpu")
    d = p.to_dict()
    json.dumps(d)
    assert d["type"] == "Partition" and d["n_regions"] == p.n_regions
    assert p.region_of(np.array([[5.0, 0.0], [0.0, 0.0]]))[0] == -1
    with pytest.raises(IndexError):
        p.polygon(p.n_regions)


def test_batchnorm_training_mode_is_evaluated_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.train()
    plane = Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    with pytest.warns(UserWarning, match="eval mode"):
        p = partition(net, plane, (-2, 2, -2, 2), device="cpu")
    assert net.training and net[1].training  # the model is left as it was
    net.eval()
    check_partition(p, net, [net[2]], n_grid=40)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x))


class GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(2, 4)
        self.relu = nn.ReLU()
        self.blocks = nn.ModuleList([Block()])
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.inp(x))
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _plane2():
    return Plane(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))


def test_not_piecewise_linear_is_named_and_stop_at_works():
    net = GeluNet().double().eval()
    with pytest.raises(NotPiecewiseLinearError, match=r"module 'blocks\.0\.act' \(GELU\) is not piecewise-linear"):
        partition(net, _plane2(), (-1, 1, -1, 1), device="cpu")
    # stop at the last piecewise-linear layer: the output is the GELU's input
    p = partition(net, _plane2(), (-1, 1, -1, 1), stop_at="last_pl", device="cpu")
    assert p.layers == ("relu",) and "blocks.0.act" in p.output
    assert (p.predicted == -1).all() and len(p.boundary) == 0
    g = grid((-1, 1, -1, 1), 30)
    r = p.region_of(g)
    with torch.no_grad():
        ref = net.blocks[0].fc(net.relu(net.inp(torch.as_tensor(g)))).numpy()
    pred = np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r]
    assert np.abs(pred - ref).max() < 1e-12
    # stop after a named module
    p2 = partition(net, _plane2(), (-1, 1, -1, 1), stop_at="relu", device="cpu")
    with torch.no_grad():
        ref2 = net.relu(net.inp(torch.as_tensor(g))).numpy()
    r2 = p2.region_of(g)
    assert np.abs(np.einsum("nij,nj->ni", p2.out_A[r2], g) + p2.out_c[r2] - ref2).max() < 1e-12
    assert p2.n_regions == p.n_regions
    with pytest.raises(ValueError, match="did you mean"):
        partition(net, _plane2(), (-1, 1, -1, 1), stop_at="rleu", device="cpu")
    with pytest.raises(NotPiecewiseLinearError, match="blocks.0.act"):
        partition(net, _plane2(), (-1, 1, -1, 1), stop_at="head", device="cpu")


class FunctionalNet(nn.Module):
    def __init__(self, fn):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(2, 5)
        self.b = nn.Linear(5, 2)
        self.fn = fn

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


@pytest.mark.parametrize("fn,match", [(torch.tanh, r"module 'tanh' \(Tanh\).*functional"), (lambda z: z * z, "mul"),
                                      (lambda z: torch.maximum(z, 0.5 * z), "maximum")])
def test_functional_nonlinearities_are_refused(fn, match):
    net = FunctionalNet(fn).double().eval()
    with pytest.raises(NotPiecewiseLinearError, match=match):
        partition(net, _plane2(), (-1, 1, -1, 1), device="cpu")


class FunctionalCNN(nn.Module):
    """The PyTorch MNIST example's style: functional relu, max-pool and log-softmax."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(2 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.leaky_relu(self.fc1(x), 0.1)
        return F.log_softmax(self.fc2(x), dim=1)


def test_functional_relu_maxpool_are_rewritten_with_fx():
    net = FunctionalCNN().double().eval()
    seq = nn.Sequential(net.conv1, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), net.fc1, nn.LeakyReLU(0.1), net.fc2).eval()
    gen = torch.Generator().manual_seed(4)
    x0, x1, x2 = torch.rand(3, 1, 10, 10, generator=gen, dtype=torch.float64)
    plane, bounds = Plane.from_points(x0, x1, x2)
    with pytest.raises(NotPiecewiseLinearError, match="log_softmax"):
        partition(net, plane, bounds, device="cpu")
    p = partition(net, plane, bounds, stop_at="last_pl", device="cpu")
    q = partition(seq, plane, bounds, device="cpu")
    assert p.layers == ("relu", "max_pool2d", "leaky_relu")
    assert p.n_regions == q.n_regions
    assert np.array_equal(p.patterns, q.patterns) and np.allclose(p.vertices, q.vertices)
    assert np.allclose(p.out_A, q.out_A) and np.allclose(p.out_c, q.out_c)
    # log-softmax is monotone: the class scores (and the boundary) are those of the logits
    assert np.array_equal(p.predicted, q.predicted) and len(p.boundary) == len(q.boundary)
    check_partition(q, seq, [seq[1], seq[2], seq[5]], n_grid=50)


def test_attention_and_softmax_named():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=1)).double()
    with pytest.raises(NotPiecewiseLinearError, match=r"module '3' \(Softmax\)"):
        partition(net, _plane2(), (-1, 1, -1, 1), device="cpu")
    # stopping before a final softmax keeps the class scores
    p = partition(net, _plane2(), (-1, 1, -1, 1), stop_at="last_pl", device="cpu")
    assert (p.predicted >= 0).all()


def test_bad_planes_and_bounds():
    x = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="collinear"):
        Plane.from_points(x, 2 * x, 3 * x)
    with pytest.raises(ValueError, match="coincide"):
        Plane.from_points(x, x, 3 * x)
    with pytest.raises(ValueError, match="linearly dependent"):
        Plane(np.zeros(3), x, -2 * x)
    with pytest.raises(ValueError, match="non-zero"):
        Plane(np.zeros(3), np.zeros(3), x)
    with pytest.raises(ValueError, match="same shape"):
        Plane(np.zeros(3), x, np.ones(4))
    net = mlp([2, 4, 2])
    for bad in [(-1, math.inf, 0, 1), (0, 1, float("nan"), 1)]:
        with pytest.raises(ValueError, match="finite"):
            partition(net, _plane2(), bad)
    with pytest.raises(ValueError, match="empty"):
        partition(net, _plane2(), (1, 1, 0, 1))
    with pytest.raises(ValueError, match="four numbers"):
        partition(net, _plane2(), (0, 1, 0))
    with pytest.raises(ValueError, match="shape"):
        partition(net, Plane(np.zeros(3), np.eye(3)[0], np.eye(3)[1]), (0, 1, 0, 1))
    with pytest.raises(TypeError):
        partition(net, "plane", (0, 1, 0, 1))


def test_too_large_is_refused_before_and_during():
    net = mlp([2, 64, 64, 2], seed=0)
    with pytest.raises(PartitionTooLarge, match="max_regions=20") as info:
        partition(net, _plane2(), (-3, 3, -3, 3), max_regions=20, device="cpu")
    assert info.value.estimate > 20


def test_too_large_is_refused_while_cutting(monkeypatch):
    """When the estimate misses, the count reached while cutting is refused too."""
    import sys

    mod = sys.modules["shapelens.regions.partition"]
    monkeypatch.setattr(mod, "_estimate", lambda *a, **k: 1)
    net = mlp([2, 64, 64, 2], seed=0)
    with pytest.raises(PartitionTooLarge, match="while cutting") as info:
        partition(net, _plane2(), (-3, 3, -3, 3), max_regions=50, device="cpu")
    assert info.value.estimate > 50


def test_estimate_regions_is_close():
    from shapelens.regions.partition import estimate_regions

    net = mlp([3, 40, 40, 2], seed=2)
    plane = random_plane(3, 2)
    p = partition(net, plane, (-2, 2, -2, 2), device="cpu")
    est = estimate_regions(net, plane, (-2, 2, -2, 2), device="cpu")
    assert 0.5 * p.n_regions <= est <= 2.0 * p.n_regions


def test_hardtanh_relu6_prelu_patterns():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 6), nn.Hardtanh(-0.5, 0.7), nn.Linear(6, 6), nn.ReLU6(), nn.Linear(6, 5),
                        nn.PReLU(5, init=0.2), nn.Linear(5, 2)).double().eval()
    with torch.no_grad():
        net[2].weight.mul_(6.0)
    plane = _plane2()
    box = (-2.0, 2.0, -2.0, 2.0)
    p = partition(net, plane, box, device="cpu")
    assert p.layers == ("1", "3", "5")
    g = grid(box, 80)
    x = torch.as_tensor(g)
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[2](net[1](z1))
        z3 = net[4](net[3](z2))
        out = net(x).numpy()
    pat = np.concatenate([
        ((z1 > -0.5).int() + (z1 > 0.7).int()).numpy(),
        ((z2 > 0).int() + (z2 > 6).int()).numpy(),
        (z3 > 0).int().numpy(),
    ], 1)
    margin = np.concatenate([(z1 + 0.5).abs(), (z1 - 0.7).abs(), z2.abs(), (z2 - 6).abs(), z3.abs()], 1).min(1)
    r = p.region_of(g)
    clear = margin > 1e-9
    assert (p.patterns[r][clear] == pat[clear]).all()
    assert set(np.unique(p.patterns[:, p.layer_slices["1"]])) == {0, 1, 2}
    pred = np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r]
    assert np.abs(pred - out).max() <= 1e-9 * np.abs(out).max()
    assert abs(p.areas.sum() - 16.0) < 1e-9


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
                                  nn.AdaptiveMaxPool2d((2, 1))])
def test_maxpool_variants_argmax_constant_per_region(pool):
    """Within each region the argmax of every pooling window (torch's return_indices) is
    constant, and different regions have different patterns."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 2)
    net = nn.Sequential(conv, pool, nn.Flatten()).double().eval()
    gen = torch.Generator().manual_seed(7)
    o, u, v = torch.randn(3, 1, 6, 5, generator=gen, dtype=torch.float64)
    plane = Plane(o, u, v)
    box = (-2.0, 2.0, -2.0, 2.0)
    p = partition(net, plane, box, device="cpu")
    assert len({row.tobytes() for row in p.patterns}) == p.n_regions
    g = grid(box, 90)
    x = torch.as_tensor(plane.lift(g))
    with torch.no_grad():
        z = conv(x)
        if isinstance(pool, nn.AdaptiveMaxPool2d):
            _, idx = F.adaptive_max_pool2d(z, pool.output_size, return_indices=True)
        else:
            _, idx = F.max_pool2d(z, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                                  return_indices=True)
        out = net(x).numpy()
    idx = idx.flatten(1).numpy()
    r = p.region_of(g)
    checked = 0
    for reg in np.unique(r):
        sel = np.nonzero(r == reg)[0]
        deep = _depth(g[sel], p.polygon(reg)) > 1e-7
        rows = idx[sel[deep]]
        if len(rows):
            assert (rows == rows[0]).all(), f"the argmax changes inside region {reg}"
            checked += len(rows)
    assert checked > 0.95 * len(g)
    pred = np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r]
    assert np.abs(pred - out).max() <= 1e-9 * np.abs(out).max()


def _depth(pts, poly):
    """Distance of points inside a CCW convex polygon to its boundary (negative outside)."""
    a = poly
    e = np.roll(poly, -1, 0) - poly
    n = np.hypot(e[:, 0], e[:, 1])
    cross = (e[None, :, 0] * (pts[:, None, 1] - a[None, :, 1]) - e[None, :, 1] * (pts[:, None, 0] - a[None, :, 0])) / n
    return cross.min(1)


def test_affine_model_is_one_region_with_boundary():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Linear(3, 3)).double().eval()
    p = partition(net, _plane2(), (-5, 5, -5, 5), device="cpu")
    assert p.n_regions == 1 and p.patterns.shape == (1, 0) and p.layers == ()
    W = (net[2].weight @ net[0].weight).detach().numpy()
    assert np.allclose(p.out_A[0], W)
    # the boundary cuts the box into the argmax cells of three affine functions
    if len(np.unique(net(torch.as_tensor(grid((-5, 5, -5, 5), 50))).argmax(1).numpy())) > 1:
        assert len(p.boundary) > 0


def test_float32_inputs_and_float32_run():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))  # float32 weights
    rng = np.random.default_rng(0)
    x0, x1, x2 = rng.random((3, 6)).astype(np.float32)
    plane, b = Plane.from_points(x0, x1, x2)
    p64 = partition(net, plane, b, device="cpu")
    assert net[0].weight.dtype == torch.float32  # the model is not changed
    p32 = partition(net, plane, b, device="cpu", dtype=torch.float32)
    assert abs(p32.n_regions - p64.n_regions) <= 2
    assert abs(p32.areas.sum() - p64.areas.sum()) <= 1e-5 * p64.areas.sum()
    # vertices of the partition are located in a region touching them
    r = p64.region_of(p64.vertices)
    assert (r >= 0).all()


def test_memory_refusal_and_plot_smoke(monkeypatch):
    import sys

    mod = sys.modules["shapelens.regions.partition"]
    net = mlp([2, 16, 16, 3], seed=0)
    p = partition(net, _plane2(), (-2, 2, -2, 2), device="cpu")
    ax = p.plot()
    assert ax is not None
    monkeypatch.setattr(mod, "_available_bytes", lambda device: 1000)
    with pytest.raises(PartitionTooLarge, match="GiB"):
        partition(net, _plane2(), (-2, 2, -2, 2), device="cpu")


class SharedAct(nn.Module):
    """One ReLU module used twice, and a skip connection from the input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.a = nn.Linear(3, 8)
        self.b = nn.Linear(8, 3)
        self.act = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = x + self.b(self.act(self.a(x)))
        return self.head(self.act(h))


def test_shared_module_and_input_skip_connection():
    net = SharedAct().double().eval()
    plane = random_plane(3, 5)
    p = partition(net, plane, (-2, 2, -2, 2), device="cpu")
    assert p.layers == ("act", "act#2")
    assert p.layer_slices == {"act": slice(0, 8), "act#2": slice(8, 11)}
    check_partition(p, net, [net.act, net.act], n_grid=60)
    # stop after a block-free prefix: the output of the first call of 'b'
    q = partition(net, plane, (-2, 2, -2, 2), stop_at="b", device="cpu")
    assert q.layers == ("act",) and (q.predicted == -1).all()
    g = grid((-2, 2, -2, 2), 20)
    with torch.no_grad():
        ref = net.b(net.act(net.a(torch.as_tensor(plane.lift(g))))).numpy()
    r = q.region_of(g)
    assert np.abs(np.einsum("nij,nj->ni", q.out_A[r], g) + q.out_c[r] - ref).max() < 1e-10


def test_stop_at_a_block():
    net = small_cnn()
    gen = torch.Generator().manual_seed(1)
    x0, x1, x2 = torch.rand(3, 1, 10, 10, generator=gen, dtype=torch.float64)
    plane, bounds = Plane.from_points(x0, x1, x2, margin=0.1)
    p = partition(net, plane, bounds, stop_at="4", device="cpu")
    assert p.layers == ("2", "3", "4.act", "4.act2") and "'4'" in p.output
    g = grid(bounds, 25)
    with torch.no_grad():
        ref = net[:5](torch.as_tensor(plane.lift(g))).flatten(1).numpy()
    r = p.region_of(g)
    assert np.abs(np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r] - ref).max() < 1e-10 * np.abs(ref).max()


def test_conv1d_maxpool1d_avgpool():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(3, 2, 2),
                        nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(4, 3)).double().eval()
    gen = torch.Generator().manual_seed(3)
    o, u, v = torch.randn(3, 2, 8, generator=gen, dtype=torch.float64)
    plane = Plane(o, u, v)
    p = partition(net, plane, (-1.5, 1.5, -1.5, 1.5), device="cpu")
    assert p.layers == ("1", "2") and p.layer_slices["2"] == slice(24, 36)
    g = grid((-1.5, 1.5, -1.5, 1.5), 60)
    x = torch.as_tensor(plane.lift(g))
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[1](z1)
        out = net(x).numpy()
    w = z2.reshape(len(g), 3, 4, 2)
    top = w.amax(3, keepdim=True)
    pat = np.concatenate([(z1 > 0).flatten(1).int().numpy(),
                          (w >= top - 1e-12).to(torch.int8).argmax(3).flatten(1).numpy()], 1)
    margin = z1.abs().flatten(1).amin(1)
    gap = (w[..., 0] - w[..., 1]).abs()
    gap = torch.where(gap < 1e-12, torch.full_like(gap, math.inf), gap).flatten(1).amin(1)
    clear = (torch.minimum(margin, gap) > 1e-9).numpy()
    r = p.region_of(g)
    assert (p.patterns[r][clear] == pat[clear]).all()
    pred = np.einsum("nij,nj->ni", p.out_A[r], g) + p.out_c[r]
    assert np.abs(pred - out).max() <= 1e-9 * np.abs(out).max()
