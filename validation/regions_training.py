"""Linear regions over training: region count, local complexity and line crossings of a small ReLU MLP on MNIST.

Two published findings are checked on a network trained on the CPU:

* Humayun, Balestriero & Baraniuk (2024), "Deep networks always grok and here is why" (ICML):
  the *local complexity* (LC, the density of linear regions around data points) goes through three
  phases during long training: a first descent, an ascent, and a second descent late in training
  in which the regions *migrate* away from the training points (the map becomes smoother there)
  towards the decision boundary.
* Hanin & Rolnick (2019), "Complexity of linear regions in deep networks" (ICML): the number of
  regions a 1D line through input space crosses grows roughly linearly with the number of neurons
  (not exponentially with depth), per unit length of order (#neurons) at initialization, and stays
  of that order during training.

Protocol:

1. Data: the first 1,000 MNIST training images (784 pixels in [0, 1]; the small training set of
   the grokking studies on MNIST, Liu et al. 2022 and Humayun et al. 2024) and the 10,000 test
   images for the test accuracy.
2. Model: a ReLU MLP 784-64-64-64-10 (192 hidden neurons), PyTorch's default initialisation, seed
   0; AdamW (lr 1e-3, weight decay ``--weight-decay``), mini-batches of 200 (reshuffled every epoch
   of 5 steps), cross-entropy, ``--steps`` steps (default 100,000, about 4 minutes on one core).
   Checkpoints at step 0 and at 1, 2 and 5 times every power of ten (cached with safetensors in
   ``validation/cache/``).
3. At every checkpoint, on FIXED inputs:

   (a) the exact partition (``shapelens.regions.partition``) of the plane through three training
       digits of different classes (``Plane.from_points``, default margin): region count and area
       statistics (``region_statistics``), the number of regions the decision boundary passes
       through, and the number of regions within radius ``r`` of each of the three digits in that
       plane (exact, from the polygons);
   (b) the local complexity (``local_complexity``: regions meeting the square ``[-r, r]^2`` of one
       random plane through the point, exactly) around the first 100 training images and the
       first 50 test images, with ``r`` = 0.2 x the median nearest-neighbour distance of the 1,000
       training images (stated in the results), and the number of neurons whose zero set crosses
       the square (Humayun et al.'s count, exact on the square);
   (c) the number of regions crossed (``crossings``) along the segments between 50 fixed random
       pairs of training images, per unit length and per neuron;
   (d) training loss and train / test accuracy.

4. Hanin & Rolnick's depth/width claim at initialization: mean breakpoints per unit length along
   the same 50 segments for MLPs of depth 1 to 6 and width 32 to 128 (PyTorch's default and He
   initialisation), against the number of neurons.

Run: ``python validation/regions_training.py`` (about 10 minutes on 2 CPU cores: ~4 minutes of
training, cached, then the measurements); ``--quick`` for a ~1 minute smoke run (1,000 steps,
fewer points) that writes nothing unless ``--out`` is given; ``--init-scale 8`` repeats it from an
initialization scaled up 8x (the grokking setup of Liu et al. 2022, "Omnigrok"), written to
``regions_training_init8.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / "cache"

import shapelens  # noqa: E402
from shapelens._checks import single_thread  # noqa: E402
from shapelens.data import mnist  # noqa: E402

N_TRAIN = 1000
SLICE_CLASSES = (3, 5, 8)  # the first training image of each class spans the slice
WIDTH, DEPTH = 64, 3
BATCH = 200
LR = 1e-3
SEED = 0
N_SLICES = 8  # slices (a): the main one and 7 through random triplets of training digits of different classes
SWEEP_PAIRS = 20
CHECK_SEGMENTS = 2  # segments whose exact piece count is checked against dense sampling at every checkpoint  # segments of the depth/width sweep (the first of the fixed pairs)
RADIUS_FRACTION = 0.2  # LC radius as a fraction of the median nearest-neighbour distance


# --------------------------------------------------------------------------------------
# model and training (cached checkpoints)
# --------------------------------------------------------------------------------------


def mlp(width: int = WIDTH, depth: int = DEPTH, d_in: int = 784, n_out: int = 10) -> nn.Sequential:
    """784-width x depth-10 ReLU MLP with named layers fc1, relu1, ..., out."""
    mods, d = [], d_in
    for i in range(depth):
        mods += [(f"fc{i + 1}", nn.Linear(d, width)), (f"relu{i + 1}", nn.ReLU())]
        d = width
    mods.append(("out", nn.Linear(d, n_out)))
    return nn.Sequential(OrderedDict(mods))


def checkpoint_steps(total: int) -> list[int]:
    """0 and 1, 2, 5 x 10^k (from 10) up to ``total``, and ``total`` itself."""
    out = {0, int(total)}
    k = 1
    while 10**k <= total:
        for m in (1, 2, 5):
            if m * 10**k <= total:
                out.add(m * 10**k)
        k += 1
    return sorted(out)


def _key(steps: list[int], wd: float, X: np.ndarray, init_scale: float = 1.0) -> str:
    h = hashlib.sha256()
    key = (WIDTH, DEPTH, BATCH, LR, SEED, wd, steps, "adamw-epochperm-v1")
    if init_scale != 1.0:
        key = key + (("init_scale", init_scale),)
    h.update(repr(key).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def train_checkpoints(X: np.ndarray, y: np.ndarray, steps: list[int], wd: float,
                      init_scale: float = 1.0) -> tuple[list[dict], dict]:
    """Train the MLP with AdamW and return the state dicts at ``steps`` (cached in validation/cache/).
    ``init_scale`` multiplies every initial parameter (Liu et al. 2022's large initialization)."""
    from safetensors.torch import load_file, save_file

    folder = CACHE / f"regions_training-{_key(steps, wd, X, init_scale)}"
    files = [folder / f"step{s:07d}.safetensors" for s in steps]
    log_path = folder / "log.json"
    if all(f.exists() for f in files) and log_path.exists():
        log = json.loads(log_path.read_text())
        log["cached"] = True
        return [load_file(str(f)) for f in files], log
    torch.manual_seed(SEED)
    model = mlp()
    if init_scale != 1.0:
        with torch.no_grad():
            for prm in model.parameters():
                prm.mul_(init_scale)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=wd)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED + 1)
    states, losses = [], {}
    n = Xt.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    t0 = time.time()
    with single_thread(True):
        model.train()
        for step in range(steps[-1] + 1):
            if step in steps:
                states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            if step == steps[-1]:
                break
            if pos + BATCH > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + BATCH]
            pos += BATCH
            loss = nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    log = {"train_seconds": time.time() - t0, "cached": False}
    folder.mkdir(parents=True, exist_ok=True)
    for f, s in zip(files, states):
        save_file({k: v.contiguous() for k, v in s.items()}, str(f))
    log_path.write_text(json.dumps(log))
    return states, log


# --------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------


def regions_near(P, st: np.ndarray, radius: float) -> np.ndarray:
    """Number of regions of ``P`` within Euclidean distance ``radius`` of each plane point ``st``
    (exact: distance from the point to each convex polygon)."""
    V = np.asarray(P.vertices, dtype=float)
    off = np.asarray(P.offsets, dtype=np.int64)
    R = len(off) - 1
    nxt = np.arange(len(V)) + 1
    ends = off[1:] - 1
    nxt[ends] = off[:-1]  # close every polygon
    A, B = V, V[nxt]
    out = np.zeros(len(st), dtype=np.int64)
    for i, p in enumerate(np.asarray(st, dtype=float)):
        AB, AP = B - A, p - A
        cross = AB[:, 0] * AP[:, 1] - AB[:, 1] * AP[:, 0]
        inside = np.minimum.reduceat(cross, off[:-1]) >= -1e-12  # counter-clockwise polygons
        tt = np.clip((AP * AB).sum(1) / np.maximum((AB * AB).sum(1), 1e-300), 0.0, 1.0)
        d = np.linalg.norm(AP - tt[:, None] * AB, axis=1)
        dmin = np.minimum.reduceat(d, off[:-1])
        out[i] = int(np.sum(inside | (dmin <= radius)))
    assert len(out) == len(st) and R >= 1
    return out


def boundary_regions(P) -> int:
    """Number of distinct regions the decision boundary passes through (the region holding the
    midpoint of each boundary segment; every segment lies inside one region)."""
    seg = np.asarray(P.boundary, dtype=float).reshape(-1, 2, 2)
    if not len(seg):
        return 0
    r = np.asarray(P.region_of(seg.mean(axis=1)))
    return int(len(np.unique(r[r >= 0])))


def boundary_concentration(P, delta: float, grid: int = 200) -> float:
    """Density of regions within ``delta`` of the decision boundary, relative to the density in
    the whole slice: (share of region centroids within ``delta`` of a boundary segment) / (share of
    the slice's area within ``delta``, from a ``grid x grid`` lattice). Above 1: regions crowd
    the boundary (Humayun et al.'s "migration towards the decision boundary"). NaN without boundary."""
    seg = np.asarray(P.boundary, dtype=float).reshape(-1, 2, 2)
    if not len(seg):
        return float("nan")

    def dist(pts):
        out = np.full(len(pts), np.inf)
        A, B = seg[:, 0], seg[:, 1]
        AB = B - A
        L2 = np.maximum((AB * AB).sum(1), 1e-300)
        for s in range(0, len(pts), 4096):
            p = pts[s:s + 4096, None, :]
            t = np.clip(((p - A[None]) * AB[None]).sum(2) / L2[None], 0.0, 1.0)
            d = np.linalg.norm(p - (A[None] + t[..., None] * AB[None]), axis=2)
            out[s:s + 4096] = d.min(1)
        return out

    V = np.asarray(P.vertices, dtype=float)
    off = np.asarray(P.offsets, dtype=np.int64)
    cent = np.add.reduceat(V, off[:-1], axis=0) / np.diff(off)[:, None]
    s0, s1, t0, t1 = (float(b) for b in P.bounds)
    g = np.stack(np.meshgrid(s0 + (np.arange(grid) + 0.5) * (s1 - s0) / grid,
                             t0 + (np.arange(grid) + 0.5) * (t1 - t0) / grid), -1).reshape(-1, 2)
    band = float(np.mean(dist(g) <= delta))
    return float(np.mean(dist(cent) <= delta) / band) if band > 0 else float("nan")


@torch.no_grad()
def sampled_pieces(model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, n: int = 200_001, chunk: int = 20_000) -> int:
    """Linear pieces of ``model`` along ``x0 -> x1`` seen by ``n`` evenly spaced samples: 1 + the number of
    consecutive samples whose activation patterns differ (a lower bound of the exact count)."""
    changes, last = 0, None
    for s in range(0, n, chunk):
        t = torch.arange(s, min(s + chunk, n), dtype=torch.float64)[:, None] / (n - 1)
        h = x0[None] + t * (x1 - x0)[None]
        pats = []
        for mod in model:
            h = mod(h)
            if isinstance(mod, nn.ReLU):
                pats.append(h > 0)
        P = torch.cat(pats, 1)
        if last is not None:
            P = torch.cat([last, P])
        changes += int((P[1:] != P[:-1]).any(1).sum())
        last = P[-1:]
    return changes + 1


def measure(model: nn.Module, ctx: dict, quick: bool) -> dict:
    from shapelens.regions.partition import partition
    from shapelens.regions.stats import crossings, local_complexity, region_statistics

    out: dict = {}
    t0 = time.time()
    model = model.double().eval()
    with torch.no_grad():
        for name in ("train", "test"):
            Xd, yd = ctx[f"X_{name}"], ctx[f"y_{name}"]
            logits = model(Xd)
            out[f"{name}_acc"] = float((logits.argmax(1) == yd).double().mean())
            out[f"{name}_loss"] = float(nn.functional.cross_entropy(logits, yd))
    # (a) the slice through three training digits
    P = partition(model, ctx["plane"], ctx["bounds"])
    rs = region_statistics(P)
    out.update({"slice_regions": rs.n_regions, "slice_median_area": rs.median_area, "slice_top10": rs.top10_fraction,
                "slice_boundary_length": rs.boundary_length, "slice_boundary_regions": boundary_regions(P),
                "slice_near_points": regions_near(P, ctx["slice_st"], ctx["radius"]).tolist(),
                "slice_boundary_density": boundary_concentration(P, ctx["radius"])})
    # the same on the further slices (averages over all of them, the main one included)
    regs, dens, near = [rs.n_regions], [out["slice_boundary_density"]], list(out["slice_near_points"])
    for sl in ctx["extra_slices"]:
        Q = partition(model, sl["plane"], sl["bounds"])
        regs.append(int(Q.n_regions))
        dens.append(boundary_concentration(Q, ctx["radius"]))
        near += regions_near(Q, sl["st"], ctx["radius"]).tolist()
    out.update({"slices_regions": regs, "slices_boundary_density": dens, "slices_near_points": near})
    out["_partition"] = P
    # (b) local complexity around training and test points
    for name in ("train", "test"):
        lc = local_complexity(model, ctx[f"lc_{name}"], ctx["radius"], n_planes=1, seed=0, progress=False)
        out[f"lc_{name}"] = lc.regions
        out[f"lc_{name}_neurons"] = lc.neurons
        out[f"lc_{name}_vertex"] = lc.vertex_neurons
    # (c) crossings along segments between training points
    pieces, dens, per_layer = [], [], []
    for a, b in ctx["pairs"]:
        sr = crossings(model, ctx["X_train"][a], ctx["X_train"][b])
        pieces.append(sr.n_pieces)
        dens.append(sr.density)
        per_layer.append([sr.per_layer[k] for k in sr.layers])
    # cross-check: pieces seen by 200,001 evenly spaced samples of the first segments (can only miss pieces)
    checks = []
    for a, b in ctx["pairs"][:CHECK_SEGMENTS]:
        checks.append((sampled_pieces(model, ctx["X_train"][a], ctx["X_train"][b]), pieces[len(checks)]))
    out["cross_check"] = checks
    out["cross_pieces"] = np.asarray(pieces, dtype=float)
    out["cross_density"] = np.asarray(dens, dtype=float)
    out["cross_per_layer"] = np.asarray(per_layer, dtype=float).mean(0).tolist()
    out["seconds"] = time.time() - t0
    return out


def hanin_rolnick_sweep(ctx: dict, quick: bool) -> list[dict]:
    """Breakpoints per unit length along the fixed segments, at initialization, against depth and width."""
    from shapelens.regions.stats import crossings

    depths = (1, 2, 3, 4, 6) if not quick else (1, 3)
    widths = (32, 64, 128) if not quick else (32,)
    pairs = ctx["pairs"][: (8 if quick else SWEEP_PAIRS)]
    rows = []
    for init in ("pytorch", "he"):
        for d in depths:
            for w in widths:
                torch.manual_seed(SEED)
                m = mlp(w, d).double().eval()
                if init == "he":
                    for mod in m.modules():
                        if isinstance(mod, nn.Linear):
                            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                            nn.init.zeros_(mod.bias)
                dens = [crossings(m, ctx["X_train"][a], ctx["X_train"][b]).density for a, b in pairs]
                rows.append({"init": init, "depth": d, "width": w, "neurons": d * w, "density": float(np.mean(dens)),
                             "density_sd": float(np.std(dens))})
    return rows


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _f(x, nd=2):
    return f"{x:.{nd}f}"


def make_curves(steps, ms, ctx, path: Path) -> None:
    from matplotlib.figure import Figure

    x = np.asarray(steps, dtype=float)
    fig = Figure(figsize=(11, 7.5))
    ax = fig.subplots(2, 2).ravel()

    def setx(a):
        a.set_xscale("symlog", linthresh=10)
        a.set_xlim(0, x.max() * 1.2)
        a.set_xlabel("training step (symlog: linear below 10)")
        a.grid(alpha=0.3)

    ax[0].plot(x, [m["train_acc"] for m in ms], "o-", label="train accuracy")
    ax[0].plot(x, [m["test_acc"] for m in ms], "s-", label="test accuracy")
    a2 = ax[0].twinx()
    a2.plot(x, [m["train_loss"] for m in ms], "k:", label="train loss")
    a2.set_yscale("log")
    a2.set_ylabel("train loss (dotted)")
    ax[0].set_ylabel("accuracy")
    ax[0].legend(fontsize=8, loc="center right")
    ax[0].set_title("(d) accuracy", fontsize=9)
    setx(ax[0])

    for name, mk in (("train", "o-"), ("test", "s-")):
        v = np.array([m[f"lc_{name}"] for m in ms])
        ax[1].plot(x, v.mean(1), mk, label=f"{name} points: regions")
        ax[1].fill_between(x, np.quantile(v, 0.25, 1), np.quantile(v, 0.75, 1), alpha=0.15)
        nv = np.array([m[f"lc_{name}_neurons"] for m in ms])
        ax[1].plot(x, nv.mean(1), mk.replace("-", "--"), alpha=0.6, label=f"{name} points: neurons crossing")
    ax[1].set_ylabel(f"local complexity, r = {ctx['radius']:.2f}")
    ax[1].set_yscale("log")
    ax[1].set_title(f"(b) LC: regions meeting a {2 * ctx['radius']:.2f}-square around the point (mean, IQR)", fontsize=9)
    ax[1].legend(fontsize=7)
    setx(ax[1])

    ns = len(ms[0]["slices_regions"])
    ax[2].plot(x, [np.mean(m["slices_regions"]) for m in ms], "o-", label=f"regions per slice (mean of {ns})")
    ax[2].plot(x, [m["slice_boundary_regions"] for m in ms], "s-", label="regions on the decision boundary (main slice)")
    ax[2].plot(x, [np.mean(m["slices_near_points"]) for m in ms], "^-",
               label=f"regions within r of the {3 * ns} digits (mean)")
    ax[2].set_yscale("log")
    ax[2].set_ylabel("regions")
    a3 = ax[2].twinx()
    a3.plot(x, [_nanmean(m["slices_boundary_density"]) for m in ms], "k--", label="boundary crowding")
    a3.axhline(1.0, color="k", lw=0.5, ls=":")
    a3.set_ylabel("density within r of the boundary / overall (dashed)", fontsize=8)
    ax[2].set_title(f"(a) {ns} slices, each through three training digits of different classes", fontsize=9)
    ax[2].legend(fontsize=7, loc="lower left")
    setx(ax[2])

    n_neurons = WIDTH * DEPTH
    d = np.array([m["cross_density"] for m in ms])
    ax[3].plot(x, d.mean(1) / n_neurons, "o-", label="all layers")
    pl = np.array([m["cross_per_layer"] for m in ms])  # mean breakpoints per layer
    L = np.mean([float(np.linalg.norm(ctx["X_train"][a] - ctx["X_train"][b])) for a, b in ctx["pairs"]])
    for j in range(pl.shape[1]):
        ax[3].plot(x, pl[:, j] / L / WIDTH, "--", alpha=0.7, label=f"layer {j + 1} (per its {WIDTH} neurons)")
    ax[3].set_ylabel("breakpoints per unit length per neuron")
    ax[3].set_title(f"(c) regions crossed along {len(ctx['pairs'])} segments between training digits", fontsize=9)
    ax[3].legend(fontsize=7)
    setx(ax[3])
    fig.suptitle(f"ReLU MLP 784-{WIDTH}x{DEPTH}-10 on {N_TRAIN} MNIST images, AdamW (wd {ctx['wd']:g})"
                 + (f", initial parameters x {ctx['init_scale']:g}" if ctx["init_scale"] != 1 else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def make_slices(steps, ms, ctx, path: Path, picks: list[int]) -> None:
    from matplotlib.figure import Figure

    from shapelens.regions.plots import plot_partition

    fig = Figure(figsize=(4.2 * len(picks), 4.6))
    axes = fig.subplots(1, len(picks))
    for a, i in zip(np.atleast_1d(axes), picks):
        m = ms[i]
        plot_partition(m["_partition"], ax=a, color_by="class", boundary=True, points=ctx["slice_st"],
                       labels=ctx["slice_labels"], linewidth=0.15, boundary_width=1.6,
                       title=f"step {steps[i]:,}: {m['slice_regions']:,} regions, test acc. {m['test_acc']:.3f}")
    fig.suptitle(f"The plane through training digits {', '.join(map(str, ctx['slice_labels']))} (colour: predicted "
                 "class; bold: decision boundary)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def make_sweep_figure(rows, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for a, init in zip(axes, ("pytorch", "he")):
        rs = [r for r in rows if r["init"] == init]
        for j, d in enumerate(sorted({r["depth"] for r in rs})):
            q = [r for r in rs if r["depth"] == d]
            a.plot([r["neurons"] for r in q], [r["density"] for r in q], "o-", color=f"C{j}", label=f"depth {d}")
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("hidden neurons (depth x width)")
        a.set_ylabel("breakpoints per unit length")
        a.set_title({"pytorch": "PyTorch default init", "he": "He-normal weights, zero biases"}[init], fontsize=9)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.suptitle("Regions crossed along segments between MNIST training digits, at initialization", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _phases(v: np.ndarray, steps: list[int]) -> dict:
    """Locate the three phases of a curve over checkpoints: the early minimum (end of the first
    descent), the later maximum (end of the ascent) and the last value (second descent)."""
    i_min = 1 + int(np.argmin(v[1:])) if len(v) > 1 else 0
    # the early minimum: the lowest point before the highest point after it
    best = None
    for i in range(1, len(v)):
        j = i + int(np.argmax(v[i:]))
        if best is None or (v[j] - v[i]) > best[2]:
            best = (i, j, v[j] - v[i])
    if best is not None:
        i_min, i_peak = best[0], best[1]
    else:
        i_peak = i_min
    return {"i_min": i_min, "i_peak": i_peak, "v0": float(v[0]), "vmin": float(v[i_min]), "vpeak": float(v[i_peak]),
            "vlast": float(v[-1]), "s_min": steps[i_min], "s_peak": steps[i_peak]}


def report(args, steps, ms, sweep, ctx, log, wall) -> str:

    n_neurons = WIDTH * DEPTH
    L = ctx["seg_lengths"]
    lines = ["# Linear regions over training: region count, local complexity and line crossings", "",
             f"Written by `validation/regions_training.py{' --quick' if args.quick else ''}"
             f"{f' --init-scale {args.init_scale:g}' if args.init_scale != 1 else ''}"
             f"{f' --steps {args.steps}' if args.steps_given else ''}` (shapelens {shapelens.__version__}, torch "
             f"{torch.__version__}, Python {platform.python_version()}) in {wall / 60:.1f} min on 2 shared CPU cores; "
             f"training {log['train_seconds']:.0f} s{' (checkpoints from the cache)' if log.get('cached') else ''}, "
             f"measurements {sum(m['seconds'] for m in ms):.0f} s.", "",
             "## Setup", "",
             f"* **Data**: the first {N_TRAIN:,} MNIST training images (pixels in [0, 1]); accuracy on them and on the "
             f"{len(ctx['y_test']):,} test images.",
             f"* **Model**: ReLU MLP 784-{WIDTH}-{WIDTH}-{WIDTH}-10 ({n_neurons} hidden neurons), PyTorch default "
             f"initialisation (seed {SEED})"
             + (f" with every parameter multiplied by {ctx['init_scale']:g} (Liu et al. 2022)" if ctx["init_scale"] != 1 else "")
             + f"; AdamW, lr {LR:g}, weight decay {ctx['wd']:g}, batch {BATCH}, "
             f"{steps[-1]:,} steps ({steps[-1] * BATCH // N_TRAIN:,} epochs), constant learning rate. Checkpoints at "
             f"step 0 and 1, 2, 5 x 10^k from 10 on.",
             f"* **(a) Slice**: `Plane.from_points` through training images {list(ctx['slice_idx'])} (classes "
             f"{', '.join(map(str, ctx['slice_labels']))}), default margin, bounds "
             f"({', '.join(f'{b:.2f}' for b in ctx['bounds'])}) (area {ctx['slice_area']:.1f}), partitioned exactly "
             "(float64) at every checkpoint: regions, median region area, regions the decision boundary passes "
             "through, the density of regions within distance r of the decision boundary relative to the whole slice "
             "(region centroids; the band's area from a 200 x 200 lattice), and regions within distance r of each of "
             f"the three digits (exact, from the polygons). The same on {len(ctx['extra_slices'])} further slices through "
             "random triplets of training digits of different classes (averages over all the slices in brackets).",
             f"* **Radius r**: the median nearest-neighbour distance among the {N_TRAIN:,} training images is "
             f"{ctx['nn_median']:.2f} (quartiles {ctx['nn_q'][0]:.2f} and {ctx['nn_q'][1]:.2f}); r = {RADIUS_FRACTION:g} x that = "
             f"**{ctx['radius']:.3f}**.",
             f"* **(b) LC**: `local_complexity(model, X, r, n_planes=1, seed=0)`: the regions meeting the square "
             f"[-r, r]^2 of one random plane through the point (the same planes at every checkpoint), for the first "
             f"{len(ctx['lc_train'])} training and the first {len(ctx['lc_test'])} test images; \"neurons\" = hidden "
             "units whose zero set crosses the square, the quantity Humayun et al. count (they estimate it from the "
             "vertices of a random cross-polytope; exact here, on the square).",
             f"* **(c) Segments**: {len(ctx['pairs'])} fixed random pairs of training images, mean length {L.mean():.2f} "
             f"(range {L.min():.2f} to {L.max():.2f}); `crossings` gives the exact number of linear pieces along each; "
             "density = breakpoints per unit length (Hanin & Rolnick's quantity).", "",
             "## Per checkpoint", "",
             "LC: mean over the points (median in brackets) of the regions meeting the square, then the mean number of "
             "neurons crossing it. Crossings: mean pieces per segment, breakpoints per unit length, and that divided by "
             f"the {n_neurons} hidden neurons.", ""]
    head = ["step", "train acc.", "test acc.", "train loss", "slice regions (all slices: mean)", "median area",
            "on the boundary", "density within r of the boundary / overall (all slices: mean)",
            "within r of the 3 digits", "LC train: regions (median); neurons", "LC test: regions (median); neurons",
            "pieces / segment", "per unit length", "per length per neuron"]
    rows = []
    for s, m in zip(steps, ms):
        rows.append([f"{s:,}", _f(m["train_acc"], 3), _f(m["test_acc"], 3), f"{m['train_loss']:.2e}",
                     f"{m['slice_regions']:,} ({np.mean(m['slices_regions']):,.0f})", f"{m['slice_median_area']:.2e}",
                     f"{m['slice_boundary_regions']:,} ({100 * m['slice_boundary_regions'] / m['slice_regions']:.0f}%)",
                     _fin(m["slice_boundary_density"]) + f" ({_fin(_nanmean(m['slices_boundary_density']))})",
                     " / ".join(str(v) for v in m["slice_near_points"]) + f" ({np.mean(m['slices_near_points']):.1f})",
                     f"{m['lc_train'].mean():.2f} ({np.median(m['lc_train']):.0f}); {m['lc_train_neurons'].mean():.2f}",
                     f"{m['lc_test'].mean():.2f} ({np.median(m['lc_test']):.0f}); {m['lc_test_neurons'].mean():.2f}",
                     _f(m["cross_pieces"].mean(), 1), _f(m["cross_density"].mean(), 2),
                     _f(m["cross_density"].mean() / n_neurons, 4)])
    lines += [_table(head, rows), "", "![curves](regions_training.png)", "",
              "![the slice at four checkpoints](regions_training_slices.png)", ""]

    # ---------------- comparison with Humayun et al. 2024
    lt = np.array([m["lc_train"].mean() for m in ms])
    le = np.array([m["lc_test"].mean() for m in ms])
    ph = _phases(lt, steps)
    near = np.array([np.mean(m["slices_near_points"]) for m in ms])
    bden = np.array([_nanmean(m["slices_boundary_density"]) for m in ms])
    nreg = np.array([np.mean(m["slices_regions"]) for m in ms])
    ip, il = ph["i_peak"], len(ms) - 1
    first = ph["vmin"] < 0.9 * ph["v0"]
    ascent = ph["vpeak"] > 1.1 * ph["vmin"] and ph["i_peak"] > ph["i_min"]
    second = ph["vlast"] < 0.9 * ph["vpeak"] and ph["i_peak"] < il
    par = [
        "## Comparison with Humayun et al. (2024)", "",
        "**Published**: the local complexity around training points has three phases during long training: a first "
        "descent, an ascent, and a late second descent (\"region migration\"), in which the linear regions leave the "
        "training points (the map becomes locally affine around them) and concentrate near the decision boundary; "
        "it coincides with delayed generalization and robustness (grokking).", "",
        f"**Measured** (mean LC around the {len(ctx['lc_train'])} training points): {ph['v0']:.2f} at step 0, "
        f"{ph['vmin']:.2f} at step {ph['s_min']:,} (first descent {'seen' if first else 'not seen'}), "
        f"{ph['vpeak']:.2f} at step {ph['s_peak']:,} (ascent {'seen' if ascent else 'not seen'}), "
        f"{ph['vlast']:.2f} at the last step {steps[-1]:,} "
        f"({100 * (ph['vlast'] / ph['vpeak'] - 1):+.0f}% from the peak: second descent "
        f"{'seen' if second else 'not seen'}). Around the {len(ctx['lc_test'])} test points: {le[0]:.2f}, "
        f"{le[ph['i_min']]:.2f}, {le[ip]:.2f}, {le[-1]:.2f} at the same checkpoints; the ratio train / test LC "
        f"goes from {lt[ip] / le[ip]:.2f} at the peak to {lt[-1] / le[-1]:.2f} at the end "
        f"({'the regions thin out faster around the training points than around unseen points' if lt[-1] / le[-1] < lt[ip] / le[ip] else 'no specific thinning around the training points'}).",
        "",
        f"In the {len(ms[0]['slices_regions'])} slices (a) (means): {nreg[ip]:,.0f} regions at the LC peak and "
        f"{nreg[-1]:,.0f} at the end; regions within r of the {len(ms[0]['slices_near_points'])} digits spanning them "
        f"{near[ip]:.1f} -> {near[-1]:.1f}; the density of regions within r of the decision boundary relative to the "
        f"whole slice {bden[ip]:.2f} -> {bden[-1]:.2f} (largest {np.nanmax(bden):.2f} at step "
        f"{steps[int(np.nanargmax(bden))]:,}; "
        f"{_trend(bden[ip], bden[-1], 'regions crowd the boundary more at the end', 'regions crowd the boundary less at the end')}). "
        f"Test accuracy {ms[ip]['test_acc']:.3f} at the peak and {ms[-1]['test_acc']:.3f} at the end.", ""]
    lines += par

    # ---------------- Hanin & Rolnick
    d = np.array([m["cross_density"].mean() for m in ms])
    lines += ["## Comparison with Hanin & Rolnick (2019)", "",
              "**Published**: along a 1D line through input space the number of regions per unit length is, at "
              "initialization, about (number of neurons) x (a constant set by the gradient norm and the bias "
              "distribution): linear in the number of neurons, not exponential in depth; it stays of that order "
              "during training (their MNIST experiments: it changes by a small factor and does not explode).", "",
              f"**Measured over training** (the {n_neurons}-neuron MLP, segments between training digits): "
              f"{d[0]:.2f} breakpoints per unit length at step 0 ({d[0] / n_neurons:.4f} per neuron), between "
              f"{d.min():.2f} and {d.max():.2f} during training (max / min = {d.max() / d.min():.1f}), {d[-1]:.2f} at "
              f"the end ({d[-1] / d[0]:.2f}x the value at initialization). Mean breakpoints per segment by layer "
              f"(layers 1 to {DEPTH}): "
              + "; ".join(f"step {steps[i]:,}: " + " / ".join(f"{v:.1f}" for v in ms[i]["cross_per_layer"])
                          for i in sorted({0, ph["i_min"], ip, il}))
              + ".", ""]
    chk = [c for m in ms for c in m["cross_check"]]
    lines += [f"Check of `crossings` against dense sampling (200,001 evenly spaced points on each of the first "
              f"{CHECK_SEGMENTS} segments, at every checkpoint; sampling can only miss pieces): "
              f"{sum(a == b for a, b in chk)} of {len(chk)} counts equal, "
              f"{sum(a > b for a, b in chk)} with more sampled than exact pieces (would be an error), largest shortfall of "
              f"the sampling {max(b - a for a, b in chk)} pieces.", ""]
    slope = {}
    if sweep:
        srows = []
        for r in sweep:
            srows.append([r["init"], r["depth"], r["width"], r["neurons"], f"{r['density']:.2f} +- {r['density_sd']:.2f}",
                          f"{r['density'] / r['neurons']:.4f}"])
        for init in ("pytorch", "he"):
            q = [r for r in sweep if r["init"] == init and r["density"] > 0]
            if len(q) >= 2:
                slope[init] = float(np.polyfit(np.log([r["neurons"] for r in q]), np.log([r["density"] for r in q]), 1)[0])
        lines += [f"**At initialization, depth and width** (the same {len(ctx['sweep_pairs'])} segments; "
                  "`crossings` on a fresh network of each shape; PyTorch default init = Kaiming-uniform weights and "
                  "uniform biases as `nn.Linear` draws them; He = normal weights of variance 2/fan_in, zero biases). "
                  "Fitted exponent of breakpoints per unit length against the number of neurons (log-log): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in slope.items())
                  + " (1 = linear in the number of neurons). Breakpoints per unit length per neuron, mean over the "
                  "widths, by depth: "
                  + "; ".join(f"{init}: " + ", ".join(
                      f"depth {dd} {np.mean([r['density'] / r['neurons'] for r in sweep if r['init'] == init and r['depth'] == dd]):.4f}"
                      for dd in sorted({r['depth'] for r in sweep})) for init in ("pytorch", "he"))
                  + ".", "",
                  _table(["init", "depth", "width", "neurons", "breakpoints per unit length (mean +- sd)", "per neuron"],
                         srows), "", "![depth and width at initialization](regions_training_depth.png)", ""]
    # ---------------- verdict
    specific = lt[-1] / le[-1] < 0.8 * (lt[ip] / le[ip])
    crowd = np.isfinite(bden[-1]) and np.isfinite(bden[ip]) and bden[-1] > 1.2 * bden[ip]
    same_order = d.max() / d.min() < 4
    yes, no = [], []
    (yes if first and ascent and second else no).append(
        f"the three phases of the local complexity around training points (first descent {ph['v0']:.1f} -> "
        f"{ph['vmin']:.1f} by step {ph['s_min']:,}, ascent to {ph['vpeak']:.1f} at step {ph['s_peak']:,}, second "
        f"descent to {ph['vlast']:.1f} at step {steps[-1]:,})"
        + ("" if first and ascent and second else
           f" (first descent {'yes' if first else 'no'}, ascent {'yes' if ascent else 'no'}, second descent "
           f"{'yes' if second else 'no'})"))
    other = [("a second descent stronger around the training points than around test points: "
              + ("yes" if specific else "no, the test points' neighbourhoods thin out just as much")
              + f" (train / test LC {lt[ip] / le[ip]:.2f} at the peak, {lt[-1] / le[-1]:.2f} at the end)")]
    other.append("breakpoints per segment by hidden layer (1 / 2 / 3) at the LC peak: "
                 + " / ".join(f"{v:.1f}" for v in ms[ip]["cross_per_layer"]) + "; at the end: "
                 + " / ".join(f"{v:.1f}" for v in ms[-1]["cross_per_layer"]))
    (yes if crowd else no).append(
        f"regions migrating to the decision boundary (density within r of the boundary relative to the slice, "
        f"mean of {len(ms[0]['slices_regions'])} slices: {bden[ip]:.2f} at the LC peak, {bden[-1]:.2f} at the end)")
    acc_jump = ms[-1]["test_acc"] - ms[ip]["test_acc"]
    (yes if acc_jump > 0.02 else no).append(
        f"delayed generalization with the second descent (test accuracy {ms[ip]['test_acc']:.3f} at the LC peak, "
        f"{ms[-1]['test_acc']:.3f} at the end)")
    if "he" in slope:
        (yes if 0.8 <= slope["he"] <= 1.2 else no).append(
            f"breakpoints per unit length linear in the number of neurons at He initialization (log-log exponent "
            f"{slope['he']:.2f})")
    if sweep:
        grow = {}
        for init in ("pytorch", "he"):
            q = [r for r in sweep if r["init"] == init]
            dmin, dmax = min(r["depth"] for r in q), max(r["depth"] for r in q)
            pn = lambda dd: np.mean([r["density"] / r["neurons"] for r in q if r["depth"] == dd])  # noqa: E731
            grow[init] = pn(dmax) / pn(dmin)
        (yes if all(g < 2 for g in grow.values()) else no).append(
            "no exponential growth with depth at a fixed number of neurons (per-neuron density, deepest / shallowest: "
            + ", ".join(f"{k} {v:.2f}" for k, v in grow.items()) + ")")
    (yes if same_order else no).append(
        f"the density along lines staying of the same order during training (max / min over the checkpoints "
        f"{d.max() / d.min():.1f})")
    lines += ["## Verdict", "", "**Reproduced**:", ""] + [f"* {x}" for x in yes] + [""]
    lines += ["**Not reproduced**:", ""] + ([f"* {x}" for x in no] if no else ["* nothing of the above"]) + [""]
    lines += ["**Also measured** (not claims of the papers):", ""] + [f"* {x}" for x in other] + [""]
    if ctx.get("init_scale", 1.0) == 1.0:
        lines += ["The network here starts from PyTorch's default initialisation, and its test accuracy plateaus "
                  "once the training set is fitted: this run does not grok. The MNIST grokking runs in the "
                  "literature (Liu et al. 2022, \"Omnigrok\") scale the initial weights up to delay generalization; "
                  "`--init-scale 8` repeats this protocol that way.", ""]
    return "\n".join(lines) + "\n"


def _fin(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "n/a"


def _nanmean(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _trend(a: float, b: float, up: str, down: str) -> str:
    """Words for a change from a to b: beyond +-20% it is a change, otherwise "little change"."""
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return "n/a"
    if b > 1.2 * a:
        return up
    if b < a / 1.2:
        return down
    return "little change"


def _table(header, rows) -> str:
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def jsonable(steps, ms, sweep, ctx) -> dict:
    keep = []
    for s, m in zip(steps, ms):
        keep.append({"step": s, **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()
                                   if not k.startswith("_")}})
    return {"radius": ctx["radius"], "slice_idx": list(ctx["slice_idx"]), "checkpoints": keep, "sweep": sweep}


def main(argv=None) -> int:
    from shapelens.regions.partition import Plane

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 steps and fewer points (~1 min); writes nothing unless --out is given")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 100,000; quick 1,000)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--no-sweep", action="store_true", help="skip the depth/width sweep at initialization")
    p.add_argument("--init-scale", type=float, default=1.0,
                   help="multiply the initial parameters (Liu et al. 2022 use 8 for grokking on MNIST); default 1; the "
                        "default output becomes regions_training_init<scale>.md")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown output (default validation/results/regions_training.md; none with --quick)")
    args = p.parse_args(argv)
    args.steps_given = args.steps is not None
    total = args.steps if args.steps is not None else (1_000 if args.quick else 100_000)
    default_name = "regions_training.md" if args.init_scale == 1.0 else f"regions_training_init{args.init_scale:g}.md"
    md = args.out if args.out is not None else (None if args.quick else RESULTS / default_name)
    t_start = time.time()

    X, y = mnist("train", limit=N_TRAIN)
    Xte, yte = mnist("test", limit=2_000 if args.quick else None)
    steps = checkpoint_steps(total)
    print(f"training {total:,} steps, checkpoints {steps} ...", file=sys.stderr, flush=True)
    states, log = train_checkpoints(X, y, steps, args.weight_decay, args.init_scale)
    print(f"  training: {log['train_seconds']:.0f} s{' (cached)' if log.get('cached') else ''}", file=sys.stderr, flush=True)

    Xd = torch.from_numpy(X).double()
    D = torch.cdist(Xd, Xd)
    D.fill_diagonal_(float("inf"))
    nn_d = D.min(1).values.numpy()
    radius = RADIUS_FRACTION * float(np.median(nn_d))
    slice_idx = tuple(int(np.flatnonzero(y == c)[0]) for c in SLICE_CLASSES)
    plane, bounds = Plane.from_points(*(Xd[i] for i in slice_idx))
    bounds = tuple(float(b) for b in bounds)
    rng = np.random.default_rng(SEED)
    extra = []
    while len(extra) < (1 if args.quick else N_SLICES - 1):
        tri = [int(v) for v in rng.choice(N_TRAIN, 3, replace=False)]
        if len({int(y[i]) for i in tri}) == 3:
            pl, bd = Plane.from_points(*(Xd[i] for i in tri))
            extra.append({"idx": tri, "plane": pl, "bounds": tuple(float(b) for b in bd),
                          "st": np.asarray(pl.coords(torch.stack([Xd[i] for i in tri])), dtype=float)})
    n_pairs = 8 if args.quick else 50
    pairs = []
    while len(pairs) < n_pairs:
        a, b = (int(v) for v in rng.choice(N_TRAIN, 2, replace=False))
        pairs.append((a, b))
    ctx = {
        "X_train": Xd, "y_train": torch.from_numpy(y), "X_test": torch.from_numpy(Xte).double(), "y_test": torch.from_numpy(yte),
        "radius": radius, "nn_median": float(np.median(nn_d)), "nn_q": np.quantile(nn_d, [0.25, 0.75]).tolist(),
        "slice_idx": slice_idx, "slice_labels": [int(y[i]) for i in slice_idx], "plane": plane, "bounds": bounds,
        "slice_area": (bounds[1] - bounds[0]) * (bounds[3] - bounds[2]),
        "slice_st": np.asarray(plane.coords(torch.stack([Xd[i] for i in slice_idx])), dtype=float),
        "lc_train": Xd[: (8 if args.quick else 100)], "lc_test": torch.from_numpy(Xte[: (8 if args.quick else 50)]).double(),
        "pairs": pairs, "seg_lengths": np.array([float(torch.linalg.vector_norm(Xd[a] - Xd[b])) for a, b in pairs]),
        "wd": args.weight_decay, "extra_slices": extra, "init_scale": args.init_scale,
    }
    ms = []
    for s, st in zip(steps, states):
        model = mlp()
        model.load_state_dict(st)
        m = measure(model, ctx, args.quick)
        ms.append(m)
        print(f"  step {s:>7,}: acc {m['train_acc']:.3f}/{m['test_acc']:.3f}, slice {m['slice_regions']:,} regions "
              f"({m['slice_boundary_regions']} on the boundary), LC train {m['lc_train'].mean():.2f} test "
              f"{m['lc_test'].mean():.2f}, crossings {m['cross_density'].mean():.2f}/unit length [{m['seconds']:.1f} s]",
              file=sys.stderr, flush=True)
    sweep = [] if args.no_sweep else hanin_rolnick_sweep(ctx, args.quick)
    ctx["sweep_pairs"] = ctx["pairs"][: (8 if args.quick else SWEEP_PAIRS)]
    wall = time.time() - t_start
    text = report(args, steps, ms, sweep, ctx, log, wall)
    print(text)
    if md is None:
        return 0
    md = Path(md)
    md.parent.mkdir(parents=True, exist_ok=True)
    stem = md.with_suffix("")
    make_curves(steps, ms, ctx, Path(f"{stem}.png"))
    ph = _phases(np.array([m["lc_train"].mean() for m in ms]), steps)
    picks = sorted({0, ph["i_min"], ph["i_peak"], len(steps) - 1})
    for extra in np.linspace(0, len(steps) - 1, 6).round().astype(int)[1:-1]:
        if len(picks) >= 4:
            break
        picks = sorted(set(picks) | {int(extra)})
    make_slices(steps, ms, ctx, Path(f"{stem}_slices.png"), picks)
    if sweep:
        make_sweep_figure(sweep, Path(f"{stem}_depth.png"))
    name = stem.name
    text = text.replace("(regions_training.png)", f"({name}.png)").replace("(regions_training_slices.png)", f"({name}_slices.png)")
    text = text.replace("(regions_training_depth.png)", f"({name}_depth.png)")
    md.write_text(text + NOTES)
    Path(f"{stem}.json").write_text(json.dumps(jsonable(steps, ms, sweep, ctx)))
    print(f"wrote {md}", file=sys.stderr)
    return 0


NOTES = """
## Notes

* The counts are exact up to float64 rounding: the slice partitions (`partition`), the LC squares (`partition` on
  each square) and the segment crossings (`crossings`, checked against dense sampling above). Sampled are only the
  choice of points, planes and segments, fixed (seeded) across checkpoints so that the curves follow the same
  neighbourhoods, and the area of the band within r of the decision boundary (a 200 x 200 lattice per slice).
* LC here counts regions (and crossing neurons) on a 2D section of the neighbourhood; Humayun et al. count the
  neurons whose hyperplanes meet a random cross-polytope of dimension P around the point (estimated from its
  vertices). A 2D section meets fewer hyperplanes than a P-dimensional neighbourhood of the same radius, so the
  absolute values are not comparable with theirs; the trend over training is what is compared.
* The depth/width sweep uses the same segments as (c); a fresh network per shape (seed 0).
"""


if __name__ == "__main__":
    sys.exit(main())
