"""Region statistics: the exact 1D partition of a segment (crossings) agrees with a dense sampling
of the activation pattern and with the closed form of a one-hidden-layer net; region statistics
agree with the Partition; local complexity is 1 for an affine net, grows with width, equals the
line-arrangement count of a one-hidden-layer net and a brute-force count of distinct patterns on a
fine grid; the plots hold one polygon per region and the boundary."""

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from shapelens.regions.stats import (
    LocalComplexity,
    RegionStats,
    SegmentRegions,
    crossings,
    local_complexity,
    region_statistics,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mlp(widths, seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2 and act is not None:
            layers.append(act())
    return nn.Sequential(*layers).double().eval()


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.MaxPool2d(3, stride=1, padding=1),
        nn.Flatten(), nn.Linear(16, 3),
    ).double().eval()


# ---------------------------------------------------------------------------------------
# brute force: activation patterns by hand (no hooks, no shapelens code)
# ---------------------------------------------------------------------------------------


def patterns_by_hand(net, xs):
    """Concatenated activation pattern of every ReLU/LeakyReLU unit (1/0) and every max-pool
    window (argmax position) of a Sequential ``net`` at the inputs ``xs``."""
    cols = []
    h = xs
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                cols.append((h > 0).reshape(len(h), -1).long())
            elif isinstance(m, nn.MaxPool2d):
                _, idx = nn.functional.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation,
                                                  return_indices=True)
                cols.append(idx.reshape(len(h), -1).long())
            h = m(h)
    return torch.cat(cols, 1) if cols else torch.zeros(len(xs), 0, dtype=torch.long)


def pattern_changes(net, x0, x1, lo, hi, n):
    """Indices i of the n - 1 sampling intervals [t_i, t_i+1] of [lo, hi] where the pattern changes."""
    ts = torch.linspace(lo, hi, n, dtype=torch.float64)
    xs = x0[None] + ts.reshape(-1, *([1] * x0.ndim)) * (x1 - x0)[None]
    pat = patterns_by_hand(net, xs)
    return ts, (pat[1:] != pat[:-1]).any(1).nonzero().flatten().numpy()


def check_against_dense(net, x0, x1, res, n=200_001):
    """Every change of the pattern between two consecutive fine samples holds a breakpoint and
    every breakpoint sits in an interval where the pattern changes; sampling intervals holding
    several breakpoints are resampled more finely until each holds one. The output is the linear
    interpolation of the outputs at the piece ends."""
    ts, changed = pattern_changes(net, x0, x1, 0.0, 1.0, n)
    assert len(changed) > 5  # the test is not vacuous
    where = np.searchsorted(ts.numpy(), res.breakpoints) - 1
    assert set(where.tolist()) == set(changed.tolist())
    counts = np.bincount(where, minlength=n - 1)
    for i in np.nonzero(counts > 1)[0]:  # breakpoints closer than the sampling: zoom in
        lo, hi = float(ts[i]), float(ts[i + 1])
        inside = res.breakpoints[(res.breakpoints > lo) & (res.breakpoints < hi)]
        for _ in range(4):
            sub, ch = pattern_changes(net, x0, x1, lo, hi, 2001)
            w = np.searchsorted(sub.numpy(), inside) - 1
            if len(set(w.tolist())) == len(inside):
                break
            lo, hi = float(sub[w[0]]), float(sub[w[-1] + 1])
        assert set(w.tolist()) == set(ch.tolist()) and len(ch) == len(inside)
    with torch.no_grad():
        y = net(x0[None] + ts.reshape(-1, *([1] * x0.ndim)) * (x1 - x0)[None]).numpy()
    np.testing.assert_allclose(res.output_at(ts.numpy()), y, atol=1e-10, rtol=0)


def test_crossings_of_a_relu_mlp_match_dense_sampling():
    net = mlp([5, 32, 32, 3], seed=0)
    g = torch.Generator().manual_seed(1)
    x0, x1 = 2 * torch.randn(5, generator=g, dtype=torch.float64), 2 * torch.randn(5, generator=g, dtype=torch.float64)
    res = crossings(net, x0, x1)
    assert isinstance(res, SegmentRegions)
    check_against_dense(net, x0, x1, res)
    assert res.layers == ("1", "3")
    assert sum(res.per_layer.values()) == res.n_breakpoints
    assert np.all(np.diff(res.breakpoints) > 0) and res.breakpoints.min() > 0 and res.breakpoints.max() < 1
    # every breakpoint of layer "1" is a zero of one first-layer unit
    with torch.no_grad():
        z = net[0](x0[None] + torch.from_numpy(res.breakpoints[res.layer_index == 0])[:, None] * (x1 - x0)[None])
    assert np.abs(z.numpy()).min(axis=1).max() < 1e-10
    assert res.density == pytest.approx(res.n_breakpoints / float(torch.linalg.vector_norm(x1 - x0)))
    json.dumps(res.to_dict())


def cnn_segment():
    """A small CNN (ReLU -> 2x2 max-pool, LeakyReLU -> 3x3 max-pool) and a segment across the
    plane of three random images; along it some max-pool windows pass their maximum on through a
    third entry (a split at z_a = z_b that is not a breakpoint must be dropped again)."""
    from shapelens.regions.partition import Plane

    net = small_cnn(seed=4)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    plane, bounds = Plane.from_points(x[0], x[1], x[2])
    p, q = np.array([bounds[0] * 0.9, bounds[2] * 0.8]), np.array([bounds[1] * 0.95, bounds[3] * 0.9])
    return net, plane, p, q


def test_crossings_of_a_cnn_with_max_pooling_match_dense_sampling():
    net, plane, p, q = cnn_segment()
    x0, x1 = torch.from_numpy(plane.lift(p[None])[0]), torch.from_numpy(plane.lift(q[None])[0])
    res = crossings(net, x0, x1)
    assert res.layers == ("1", "2", "4", "5")
    assert res.per_layer["2"] > 0 and res.per_layer["5"] > 0  # max-pool windows switch too
    check_against_dense(net, x0, x1, res, n=20_001)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossings_of_one_hidden_layer_equal_the_closed_form(seed):
    """A line crosses the zero hyperplane of unit k at t_k = -(w_k x0 + b_k) / (w_k (x1 - x0));
    the segment holds exactly #{k : 0 < t_k < 1} + 1 pieces, with breakpoints at those t_k."""
    net = mlp([7, 50, 4], seed=seed)
    g = torch.Generator().manual_seed(10 + seed)
    x0, x1 = torch.randn(7, generator=g, dtype=torch.float64), 3 * torch.randn(7, generator=g, dtype=torch.float64)
    W, b = net[0].weight.detach(), net[0].bias.detach()
    tk = (-(W @ x0 + b) / (W @ (x1 - x0))).numpy()
    inside = np.sort(tk[(tk > 0) & (tk < 1)])
    res = crossings(net, x0, x1)
    assert 5 < len(inside) < 50
    assert res.n_pieces == len(inside) + 1
    np.testing.assert_allclose(res.breakpoints, inside, atol=1e-12, rtol=0)


def test_crossings_of_hardtanh_units_and_of_scalar_inputs_equal_the_closed_form():
    """Hardtanh switches where w x + b = -1 or +1; a net of one input variable switches at the
    knots -b_k / w_k between x0 and x1."""
    net = mlp([4, 40, 2], seed=5, act=nn.Hardtanh)
    x0 = torch.zeros(4, dtype=torch.float64)
    x1 = torch.tensor([2.0, -1.0, 1.5, 0.5], dtype=torch.float64)
    W, b = net[0].weight.detach(), net[0].bias.detach()
    knots = np.concatenate([((lvl - (W @ x0 + b)) / (W @ (x1 - x0))).numpy() for lvl in (-1.0, 1.0)])
    knots = np.sort(knots[(knots > 0) & (knots < 1)])
    res = crossings(net, x0, x1)
    assert len(knots) > 5 and res.n_pieces == len(knots) + 1
    np.testing.assert_allclose(res.breakpoints, knots, atol=1e-12, rtol=0)

    net = mlp([1, 30, 1], seed=6)
    w, b = net[0].weight.detach().reshape(-1).numpy(), net[0].bias.detach().numpy()
    res = crossings(net, torch.tensor([-2.0]), torch.tensor([3.0]))
    knots = np.sort(-b / w)
    knots = (knots[(knots > -2) & (knots < 3)] + 2) / 5
    assert len(knots) > 5
    np.testing.assert_allclose(res.breakpoints, knots, atol=1e-12, rtol=0)
    ax = res.plot()
    assert len(ax.lines) == 1 and ax.get_xlim() == (0.0, 1.0)


def test_crossings_leave_the_model_alone_and_work_in_float32():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))  # float32, train mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x0, x1 = torch.zeros(4), torch.ones(4) * 2
    r64 = crossings(net, x0, x1)
    r32 = crossings(net, x0, x1, dtype=torch.float32)
    assert net.training and next(net.parameters()).dtype == torch.float32
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert r64.n_pieces == r32.n_pieces
    np.testing.assert_allclose(r32.breakpoints, r64.breakpoints, atol=1e-5)


def test_crossings_refuse_bad_input():
    net = mlp([3, 8, 2])
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="same point"):
        crossings(net, x, x.clone())
    with pytest.raises(ValueError, match="same shape"):
        crossings(net, x, torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        crossings(net, x, torch.tensor([1.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match="without the batch axis"):
        crossings(net, torch.zeros(5), torch.ones(5))
    with pytest.raises(ValueError, match="stop_at"):
        crossings(net, x, torch.ones(3), stop_at="nope")
    from shapelens.regions.partition import NotPiecewiseLinearError

    smooth = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).double()
    with pytest.raises(NotPiecewiseLinearError, match="GELU"):
        crossings(smooth, x, torch.ones(3, dtype=torch.float64))
    head = crossings(smooth, x, torch.ones(3, dtype=torch.float64), stop_at="last_pl")
    assert head.layers == ("1",) and head.outputs.shape[1] == 8  # the input of the GELU


def test_crossings_stop_at_drops_later_layers():
    net = mlp([5, 16, 16, 2], seed=3)
    x0, x1 = -torch.ones(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64) * 2
    full = crossings(net, x0, x1)
    first = crossings(net, x0, x1, stop_at="1")
    assert first.layers == ("1",)
    assert first.n_breakpoints == full.per_layer["1"]
    assert set(first.breakpoints.tolist()) <= set(full.breakpoints.tolist())


def test_crossings_agree_with_the_2d_partition_along_a_segment_of_the_slice():
    """A segment inside a slice crosses exactly the polygons of the partition: the pieces' patterns
    are those of the regions their points fall in, and consecutive pieces differ."""
    from shapelens.regions.partition import partition

    net, plane, p0, q0 = cnn_segment()
    p, q = p0 + 0.35 * (q0 - p0), p0 + 0.6 * (q0 - p0)
    lo, hi = np.minimum(p, q) - 0.3, np.maximum(p, q) + 0.3
    P = partition(net, plane, (lo[0], hi[0], lo[1], hi[1]))
    res = crossings(net, torch.from_numpy(plane.lift(p[None])[0]), torch.from_numpy(plane.lift(q[None])[0]))
    assert res.n_pieces > 10
    e = res.edges
    pats = np.asarray(P.patterns)
    mids = (e[:-1] + e[1:]) / 2
    piece_pat = pats[P.region_of(p + mids[:, None] * (q - p))]
    assert np.all((piece_pat[1:] != piece_pat[:-1]).any(1))  # every breakpoint changes region
    ts = np.linspace(0, 1, 4001)
    ts = ts[np.abs(ts[:, None] - res.breakpoints[None]).min(1) > 1e-6]
    np.testing.assert_array_equal(pats[P.region_of(p + ts[:, None] * (q - p))], piece_pat[res.piece_of(ts)])


# ---------------------------------------------------------------------------------------
# region statistics
# ---------------------------------------------------------------------------------------


def two_unit_net():
    """relu(s), relu(t - 0.5) and class 0 iff relu(s) > 0.5: on [-1, 1]^2 four regions of areas
    0.5, 0.5, 1.5, 1.5 and a decision boundary along s = 0.5 of length 2 (two segments)."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.copy_(torch.tensor([0.0, -0.5]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([-0.5, 0.0]))
    return net


def three_classes(net, d, seed):
    """Three random inputs the net puts in three different classes (so the slice through them
    holds a decision boundary)."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(500, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        pred = net(x).argmax(1)
    idx = [int(torch.nonzero(pred == k)[0]) for k in range(3)]
    return x[idx]


def axis_plane(d=2):
    from shapelens.regions.partition import Plane

    e = torch.eye(d, dtype=torch.float64)
    return Plane(torch.zeros(d, dtype=torch.float64), e[0], e[1])


def test_region_statistics_of_a_known_partition():
    st = region_statistics(two_unit_net(), axis_plane(), (-1.0, 1.0, -1.0, 1.0))
    assert isinstance(st, RegionStats)
    assert st.n_regions == 4
    np.testing.assert_allclose(st.areas, [0.5, 0.5, 1.5, 1.5], atol=1e-12)
    assert st.total_area == pytest.approx(4.0)
    assert st.median_area == pytest.approx(1.0) and st.mean_area == pytest.approx(1.0)
    assert st.top10_fraction == pytest.approx(1.5 / 4)  # ceil(0.4) = 1 region
    assert st.density == pytest.approx(1.0)
    assert st.boundary_length == pytest.approx(2.0, abs=1e-12)
    assert st.n_boundary_segments == 2
    json.dumps(st.to_dict())


def test_region_statistics_agree_with_the_partition():
    from shapelens.regions.partition import Plane, partition

    net = mlp([6, 24, 24, 3], seed=2)
    x = three_classes(net, 6, seed=5)
    plane, bounds = Plane.from_points(x[0], x[1], x[2])
    P = partition(net, plane, bounds)
    st = region_statistics(net, plane, bounds)
    assert st.n_regions == P.n_regions > 20
    np.testing.assert_allclose(st.areas, np.sort(P.areas))
    s0, s1, t0, t1 = bounds
    assert st.total_area == pytest.approx((s1 - s0) * (t1 - t0), rel=1e-10)
    seg = np.asarray(P.boundary)
    assert st.n_boundary_segments == len(seg) > 0
    assert st.boundary_length == pytest.approx(np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1).sum())
    assert 0.1 <= st.top10_fraction <= 1
    np.testing.assert_allclose(st.quantiles, np.quantile(P.areas, st.quantile_levels))
    assert region_statistics(net, (plane, bounds)).n_regions == st.n_regions  # Plane.from_points' pair
    again = region_statistics(P)
    assert again.n_regions == st.n_regions and again.boundary_length == pytest.approx(st.boundary_length)
    with pytest.raises(ValueError, match="either a Partition"):
        region_statistics(P, plane, bounds)
    with pytest.raises(ValueError, match="needs the slice"):
        region_statistics(net)
    ax = st.plot()
    assert ax.get_xlabel().startswith("log10")


# ---------------------------------------------------------------------------------------
# local complexity
# ---------------------------------------------------------------------------------------


def test_local_complexity_of_an_affine_network_is_one():
    net = mlp([5, 16, 16, 3], seed=0, act=None)
    x = torch.randn(4, 5, dtype=torch.float64)
    lc = local_complexity(net, x, 0.5, n_planes=2)
    assert isinstance(lc, LocalComplexity)
    np.testing.assert_array_equal(lc.regions, np.ones(4))
    np.testing.assert_array_equal(lc.neurons, np.zeros(4))
    np.testing.assert_array_equal(lc.vertex_neurons, np.zeros(4))
    assert lc.mean == 1.0 and lc.per_plane.shape == (4, 2)


def test_local_complexity_grows_with_width():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 6, generator=g, dtype=torch.float64)
    means = [local_complexity(mlp([6, w, w, 2], seed=1), x, 0.5, seed=3).mean for w in (4, 16, 64)]
    assert means[0] < means[1] < means[2]
    assert means[2] > 10


def lines_in_square(net, P, r):
    """Closed form for one hidden layer: each unit's zero set is a line a s + b t + c = 0 of the
    plane; the square holds 1 + (#lines crossing it) + (#pairwise intersections inside) regions."""
    W, b = net[0].weight.detach(), net[0].bias.detach()
    pl = P.plane
    A = torch.stack([W @ torch.as_tensor(pl.u).reshape(-1), W @ torch.as_tensor(pl.v).reshape(-1)], 1).numpy()
    c = (W @ torch.as_tensor(pl.origin).reshape(-1) + b).numpy()
    corners = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    vals = corners @ A.T + c
    crossing = np.nonzero((vals.max(0) > 0) & (vals.min(0) < 0))[0]
    inter = 0
    for i, j in itertools.combinations(crossing, 2):
        M = A[[i, j]]
        if abs(np.linalg.det(M)) < 1e-12:
            continue
        p = np.linalg.solve(M, -c[[i, j]])
        inter += bool(np.all(np.abs(p) < r))
    return len(crossing), inter


def test_local_complexity_of_one_hidden_layer_is_the_line_arrangement_count():
    net = mlp([5, 30, 2], seed=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    r = 0.8
    lc = local_complexity(net, x, r, n_planes=2, seed=7, keep_partitions=True)
    assert len(lc.partitions) == 6
    assert len(json.loads(json.dumps(lc.to_dict()))["partitions"]) == 6
    for k, P in enumerate(lc.partitions):
        n_lines, n_inter = lines_in_square(net, P, r)
        i, j = divmod(k, 2)
        assert n_lines > 2
        assert lc.per_plane[i, j] == 1 + n_lines + n_inter
    for i in range(3):
        lines = [lines_in_square(net, lc.partitions[2 * i + j], r)[0] for j in range(2)]
        assert lc.neurons[i] == np.mean(lines)
        assert lc.vertex_neurons[i] == np.mean(lines)  # straight lines always separate two corners


def inside_convex(points, poly, tol):
    """Which points lie inside the counter-clockwise convex polygon, at least ``tol`` from its edges."""
    e = np.roll(poly, -1, axis=0) - poly
    rel = points[:, None, :] - poly[None]
    cross = e[None, :, 0] * rel[..., 1] - e[None, :, 1] * rel[..., 0]
    return np.all(cross / np.linalg.norm(e, axis=1)[None] > tol, axis=1)


def test_local_complexity_equals_the_patterns_seen_on_a_fine_grid():
    net = mlp([4, 12, 12, 12, 3], seed=6)
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = 1.0
    lc = local_complexity(net, x, r, seed=1, keep_partitions=True)
    P = lc.partitions[0]
    n = 301
    s = np.linspace(-r, r, n)
    st = np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2)
    pl = P.plane
    xs = (torch.as_tensor(pl.origin)[None] + torch.from_numpy(st[:, :1]) * torch.as_tensor(pl.u)[None]
          + torch.from_numpy(st[:, 1:]) * torch.as_tensor(pl.v)[None])
    pats = patterns_by_hand(net, xs).numpy()
    seen = {tuple(p) for p in pats}
    exact = {tuple(p) for p in np.asarray(P.patterns).astype(np.int64)}
    assert len(exact) == lc.regions[0] > 15  # one polygon per activation pattern
    assert seen <= exact  # the grid never sees a pattern the partition lacks
    # the regions the grid misses are exactly those that contain no grid point
    h = 2 * r / (n - 1)
    hit = sum(bool(inside_convex(st, P.polygon(k), 1e-9).any()) for k in range(P.n_regions))
    assert len(seen) == hit
    missed = [k for k in range(P.n_regions) if tuple(np.asarray(P.patterns)[k]) not in seen]
    assert all(P.areas[k] < 4 * r * h for k in missed)  # thin or tiny: below the grid's resolution
    assert len(missed) <= 0.2 * len(exact)


def test_local_complexity_is_seeded_and_refuses_bad_input():
    net = mlp([5, 16, 16, 2], seed=0)
    x = torch.randn(3, 5, dtype=torch.float64)
    a = local_complexity(net, x, 0.7, seed=4)
    b = local_complexity(net, x, 0.7, seed=4)
    c = local_complexity(net, x, 0.7, seed=5)
    np.testing.assert_array_equal(a.per_plane, b.per_plane)
    assert not np.array_equal(a.per_plane, c.per_plane) or not np.array_equal(a.neurons, c.neurons)
    assert np.all(a.vertex_neurons <= a.neurons)
    assert set(a.layer_neurons) == {"1", "3"}
    np.testing.assert_allclose(sum(a.layer_neurons.values()), a.neurons)
    json.dumps(a.to_dict())
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="radius"):
            local_complexity(net, x, bad)
    with pytest.raises(TypeError, match="radius"):
        local_complexity(net, x, "1")
    with pytest.raises(ValueError, match="could not be passed through the model"):
        local_complexity(net, torch.randn(3, 4, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="batch of points"):
        local_complexity(net, torch.randn(5, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="n_planes"):
        local_complexity(net, x, 0.5, n_planes=0)
    ax = a.plot()
    assert ax.get_ylabel() == "points"


# ---------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------


def test_plot_partition_draws_one_polygon_per_region_and_the_boundary():
    from matplotlib.collections import LineCollection, PolyCollection

    from shapelens.regions.partition import Plane, partition
    from shapelens.regions.plots import class_pieces, plot_partition, region_colors

    net = mlp([6, 20, 20, 3], seed=2)
    x = three_classes(net, 6, seed=9)
    plane, bounds = Plane.from_points(x[0], x[1], x[2])
    P = partition(net, plane, bounds)
    for color_by in ("region", "class", P.areas):
        ax = plot_partition(P, color_by=color_by, points=x, labels=[0, 1, 2])
        polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
        lines = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(polys[0].get_paths()) == P.n_regions
        assert len(polys[0].get_facecolors()) == P.n_regions
        assert len(lines) == 1 and len(lines[0].get_segments()) == len(P.boundary) > 0
        assert len(polys) == (3 if isinstance(color_by, str) and color_by == "class" else 1)
        assert ax.get_aspect() == 1.0
    # the three points sit at their plane coordinates
    offsets = ax.collections[-1].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), np.asarray(plane.coords(x)), atol=1e-9)
    # colour by class: every region of one class gets the same colour
    faces = region_colors(P, "class")
    pred = np.asarray(P.predicted)
    for k in np.unique(pred):
        assert len(np.unique(faces[pred == k], axis=0)) == 1
    # class cells of the regions the boundary crosses tile those regions exactly
    pieces, classes, regions = class_pieces(P)
    assert len(np.unique(regions)) > 3
    def area(q):
        return 0.5 * abs(np.dot(q[:, 0], np.roll(q[:, 1], -1)) - np.dot(q[:, 1], np.roll(q[:, 0], -1)))
    for r in np.unique(regions):
        got = sum(area(q) for q, rr in zip(pieces, regions) if rr == r)
        assert got == pytest.approx(P.areas[r], rel=1e-9)
    for q, k, r in zip(pieces, classes, regions):
        centre = q.mean(0)
        assert np.argmax(P.out_A[r] @ centre + P.out_c[r]) == k
        with torch.no_grad():  # and the network agrees at that point
            y = net(torch.from_numpy(np.asarray(plane.lift(centre[None]))))
        assert int(y.argmax()) == k
    # seeded region colours
    np.testing.assert_array_equal(region_colors(P, seed=1), region_colors(P, seed=1))
    ax = plot_partition(P, boundary=False, points=np.asarray(plane.coords(x)))
    assert not [c for c in ax.collections if isinstance(c, LineCollection)]
    with pytest.raises(ValueError, match="color_by"):
        plot_partition(P, color_by="nope")
    with pytest.raises(ValueError, match="one value per region"):
        plot_partition(P, color_by=np.ones(P.n_regions + 1))
    with pytest.raises(ValueError, match="labels"):
        plot_partition(P, points=x, labels=[0, 1])
