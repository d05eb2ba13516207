"""The built-in demo atlas: a small MLP trained on scikit-learn's handwritten digits.

``run_demo`` is what ``shapelens atlas --demo`` runs. It needs no download: the digits (1797
real 8x8 images, Alpaydin & Kaynak 1998) ship with scikit-learn. It trains a
64-128-64-32-10 ReLU MLP with Adam on CPU (a few seconds on 2 cores), then assembles:

1. the layer intrinsic-dimension profile (TwoNN and MLE), the curve whose rise-then-fall
   ("hunchback") Ansuini et al. (2019) found in trained networks;
2. the intrinsic dimension of the digits themselves by every estimator;
3. the Hessian spectrum of the training loss at the trained weights (Lanczos top
   eigenvalues, Hutch++ trace, SLQ density, per-layer top eigenvalues);
4. the 2D loss landscape around the trained weights along filter-normalized random
   directions (Li et al. 2018);
5. the Betti numbers of every class at every hidden layer (Naitzat et al. 2020) and the
   persistence diagram of the last hidden layer;
6. how the model's output changes under shifts, flips and rotations of the input images, and
   its Lie derivatives along continuous transformations (Gruver et al. 2023);
7. the exact linear regions and decision boundary of the MLP on the plane through three
   training digits (Humayun et al. 2023);
8. a second model built from a :class:`~shapelens.structure.Diagram`: a bundle network
   (Courts & Kvinge 2022) on the torus over its core circle, its diagram drawn with each
   equation's commutativity error, and the fibers it generates against the true ones.

The atlas computes nothing of its own: the numbers come from :mod:`shapelens.dimension`,
:mod:`shapelens.curvature`, :mod:`shapelens.topology`, :mod:`shapelens.symmetry`,
:mod:`shapelens.regions` and :mod:`shapelens.structure`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._checks import single_thread
from ..dimension.compare import DEFAULT_METHODS, DimensionEstimates, compare_estimators
from .report import AtlasPaths, Section, Table, write_atlas

__all__ = ["run_demo", "make_mlp", "demo_model"]

# demo training: few, large steps (fast even when the 2 cores are shared), ~97% test accuracy
_BATCH = 256
_LR = 5e-3


# --------------------------------------------------------------------------- demo

def make_mlp(widths: Sequence[int] = (64, 128, 64, 32, 10)) -> nn.Sequential:
    """A plain ReLU MLP ``widths[0] -> ... -> widths[-1]`` with named layers fc1, relu1, ..., out."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    n = len(widths) - 1
    for i in range(n):
        name = "out" if i == n - 1 else f"fc{i + 1}"
        layers[name] = nn.Linear(widths[i], widths[i + 1])
        if i < n - 1:
            layers[f"relu{i + 1}"] = nn.ReLU()
    return nn.Sequential(layers)


def _train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    with single_thread():  # a model this small gains nothing from a thread pool
        _epochs(model, X, y, epochs, batch_size, g, opt, loss_fn, losses)
    model.eval()
    return losses


def _epochs(model, X, y, epochs, batch_size, g, opt, loss_fn, losses):
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=g)
        total = 0.0
        for s in range(0, X.shape[0], batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / X.shape[0])


def _curvature_sections(model: nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int, timings: dict) -> list[Section]:
    """The Hessian spectrum and the 2D loss landscape of the training loss at the trained weights."""
    from ..curvature import curvature_summary
    from ..curvature.landscape import landscape_2d

    loss_fn = nn.CrossEntropyLoss()
    batches = [(X[i:i + 512], y[i:i + 512]) for i in range(0, len(X), 512)]
    t0 = time.perf_counter()
    summ = curvature_summary(model, loss_fn, batches, k=5, trace_samples=60, per_layer=True, seed=seed)
    timings["curvature_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    land = landscape_2d(model, loss_fn, batches, "filter", span=1.0, steps=21, seed=seed)
    timings["landscape_s"] = time.perf_counter() - t0
    top = summ.top_eigenvalues
    rows = tuple((f"lambda_{i + 1}", "all", summ.n_params, float(lam), float(r)) for i, (lam, r) in
                 enumerate(zip(top, summ.residuals)))
    rows += (("trace (Hutch++)", "all", summ.n_params, summ.trace, summ.trace_std_error),)
    rows += tuple(("top eigenvalue", b, int(n), float(lam), float("nan")) for b, n, lam in
                  zip(summ.blocks, summ.block_sizes, summ.block_top_eigenvalues))
    grid = land.losses[np.isfinite(land.losses)]
    edge = np.concatenate([land.losses[0], land.losses[-1], land.losses[:, 0], land.losses[:, -1]])
    return [
        Section(
            id="curvature-spectrum",
            title="Curvature of the training loss (Hessian spectrum)",
            text=(
                f"Eigenvalues of the Hessian of the training loss over all {summ.n_params:,} weights at the trained "
                f"weights, on the {summ.n_samples} training digits: the spectral density by stochastic Lanczos "
                "quadrature (Ghorbani et al. 2019) with the top eigenvalues by Lanczos marked. Trained networks show "
                "a bulk near zero and a few outliers, about one per class (Sagun et al. 2017; Papyan 2019); the "
                "largest eigenvalue is the sharpness that gradient descent with learning rate lr keeps near 2/lr "
                "(Cohen et al. 2021). The table also gives the trace (total curvature) and each layer's own top "
                "eigenvalue (its diagonal block)."
            ),
            result=summ,
            summary=(f"lambda_max {top[0]:.4g}, top-5 " + ", ".join(f"{v:.3g}" for v in top) +
                     f"; trace {summ.trace:.4g} ± {summ.trace_std_error:.2g}; {summ.n_matvec} Hessian-vector products"),
            table=Table(columns=("quantity", "block", "parameters", "value", "residual / ± se"), rows=rows, digits=4),
            figure_alt="Hessian spectral density of the digits MLP with its top eigenvalues",
        ),
        Section(
            id="loss-landscape",
            title="Loss landscape around the trained weights",
            text=(
                "The training loss on the plane through the trained weights (star) spanned by two random "
                "filter-normalized directions (Li et al. 2018): each filter of a direction is scaled to the norm of "
                "the weights' filter, biases are left fixed, so the picture is comparable across networks and "
                "layers of different scale. Coordinates +-1 move every filter by its own norm. Wide, round basins "
                "go with flat minima; contours are log-spaced above the minimum."
            ),
            result=land,
            summary=(f"loss {land.center_loss:.4g} at the weights, {float(grid.min()):.4g} to {float(grid.max()):.4g} "
                     f"on the 21x21 grid (mean {float(np.nanmean(edge)):.4g} on its border)"),
            figure_alt="Contour plot of the training loss on a filter-normalized random plane",
        ),
    ]


def _topology_sections(model: nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int, timings: dict) -> list[Section]:
    """Betti numbers of every class at every layer (Naitzat et al. 2020) and the persistence
    diagram of the last hidden layer."""
    from ..probe import capture
    from ..topology import layer_profile, persistence

    hidden = [name for name, m in model.named_children() if isinstance(m, nn.ReLU)]
    t0 = time.perf_counter()
    prof = layer_profile(model, X, y, layers=hidden, maxdim=1, max_points=150, seed=seed, device="cpu")
    timings["betti_profile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts = capture(model, X, layers=[hidden[-1]], device="cpu")[hidden[-1]]
    dg = persistence(acts, maxdim=1, max_points=500, seed=seed, device="cpu")
    timings["last_layer_persistence_s"] = time.perf_counter() - t0
    n_cls = len(prof.classes)
    rows = tuple(
        (name, int(prof.n_points[i].sum()), float(prof.betti[i, :, 0].mean()), float(prof.betti[i, :, 1].mean()),
         f"{int(prof.trivial[i].sum())} / {n_cls}")
        for i, name in enumerate(prof.layers)
    )
    h0, h1 = dg.lifetimes(0), dg.lifetimes(1)
    top1 = dg.most_persistent(1, 1)
    return [
        Section(
            id="topology-betti",
            title="Topology of each class, layer by layer (Betti numbers)",
            text=(
                f"For each of the {n_cls} digit classes (up to 150 examples each), the Betti numbers of its "
                "representation at every layer: b0 counts connected pieces, b1 loops, read from the Vietoris-Rips "
                f"complex of the k={prof.k} nearest-neighbour graph at {prof.scale:g} hops, as Naitzat, Zhitnikov & "
                "Lim (2020) measure them. Trained networks simplify each class layer by layer until it is one "
                "contractible blob (b0 = 1, b1 = 0), faster with ReLU than with tanh; the last column counts the "
                "classes already there." + (
                    " Here every class is one blob already at the first layer: at this scale the digits have no "
                    "holes or separate pieces to untangle (validation/topology_layers.py shows the untangling on "
                    "linked rings)." if bool(prof.trivial[0].all()) else "")
            ),
            result=prof,
            summary=("mean b0 per class: " + ", ".join(f"{r[0]} {r[2]:.2g}" for r in rows) +
                     "; classes at (1, 0): " + ", ".join(f"{r[0]} {r[4]}" for r in rows)),
            table=Table(columns=("layer", "points", "mean b0", "mean b1", "classes at (1, 0)"), rows=rows, digits=3),
            figure_alt="Betti numbers of each digit class at each layer",
        ),
        Section(
            id="topology-diagram",
            title=f"Persistence diagram of the last hidden layer ({hidden[-1]})",
            text=(
                f"The Vietoris-Rips persistence diagram (H0 and H1) of all {dg.n_points} digits at the last hidden "
                f"layer, on {dg.n_used} max-min landmarks (covering radius {dg.covering_radius:.3g}: the diagram is "
                f"within {dg.error_bound:.3g} of the full one in bottleneck distance). Points far above the diagonal "
                "are features that persist over many scales: long-lived H0 classes are well separated clusters (the "
                "classes, when the network has separated them), long-lived H1 classes are loops."
            ),
            result=dg,
            summary=(f"{len(h0)} H0 bars (longest finite {np.max(h0[np.isfinite(h0)]):.3g}), {len(h1)} H1 bars"
                     + (f", longest H1 ({top1[0, 0]:.3g}, {top1[0, 1]:.3g})" if len(h1) else "")
                     + f"; {dg.n_used} landmarks, covering radius {dg.covering_radius:.3g}"),
            figure_alt="Persistence diagram of the last hidden layer of the digits MLP",
        ),
    ]


def _symmetry_sections(model: nn.Module, X: torch.Tensor, seed: int, timings: dict) -> list[Section]:
    """The demo MLP against the symmetries of its 8x8 images (shifts, flips, rotations) and its
    Lie derivatives (Gruver et al. 2023)."""
    from ..symmetry.survey import symmetry_survey

    t0 = time.perf_counter()
    s = symmetry_survey(model, X, image_shape=(1, 8, 8), seed=seed)
    timings["symmetry_survey_s"] = time.perf_counter() - t0
    rows = tuple((t, c, 100 * a) for t, c, a in s.rows())
    i_small = [i for i, t in enumerate(s.transforms) if t.startswith("rotate +")][0]
    lie = ", ".join(f"{t} {v:.2g} {u}" for t, v, u in zip(s.lie_transforms, s.lie_relative, s.units))
    return [
        Section(
            id="symmetry-input",
            title="Equivariance to the symmetries of the images (shifts, flips, rotations)",
            text=(
                f"How much the logits of the MLP change when each of the {s.n_examples} test digits is shifted, "
                "flipped or rotated (relative L2 change; 0 = invariant), and how often the predicted digit stays "
                "the same. A plain MLP has no built-in symmetry, so all of this is learned or not: digits are not "
                "flip- or quarter-turn-invariant (a 6 turned is a 9), but a good digit classifier should shrug off "
                "a 1-pixel shift or a small rotation. Below the table, the Lie derivatives (Gruver et al. 2023): "
                "the rate of change of the logits along continuous translation, rotation and scaling, relative to "
                f"the logits' norm: {lie}. Group-convolutional layers (shapelens.symmetry.GroupConv2d) make a "
                "network exactly invariant to quarter turns and flips by construction."
            ),
            result=s,
            summary=(f"1-px shift changes the prediction of {100 * (1 - s.agreement[0]):.0f}% of digits, "
                     f"a {s.transforms[i_small].split('+')[1]} rotation {100 * (1 - s.agreement[i_small]):.0f}%; "
                     f"relative Lie derivatives: {lie}"),
            table=Table(columns=("transformation", "relative change", "same class (%)"), rows=rows, digits=3),
            figure_alt="Relative change of the logits under shifts, flips and rotations of the input digits",
        )
    ]


def _three_of_different_classes(y: torch.Tensor, seed: int) -> list[int]:
    """Indices of three examples of three different classes (the first classes in a seeded order)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y.numpy()))[:3]
    return [int(rng.choice(np.flatnonzero(y.numpy() == c))) for c in classes]


def _regions_sections(model: nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int, timings: dict) -> list[Section]:
    """The exact linear regions of the demo MLP on the plane through three training digits of
    different classes (SplineCam's picture, Humayun et al. 2023)."""
    from ..regions import NotPiecewiseLinearError, Plane, partition

    idx = _three_of_different_classes(y, seed)
    plane, bounds = Plane.from_points(X[idx[0]], X[idx[1]], X[idx[2]])
    t0 = time.perf_counter()
    try:
        part = partition(model, plane, bounds)
    except NotPiecewiseLinearError as exc:
        return [Section(id="regions", title="Linear regions", text=f"Not shown: {exc}")]
    timings["regions_partition_s"] = time.perf_counter() - t0
    areas = np.sort(part.areas)
    total = float(areas.sum())
    labels = [int(y[i]) for i in idx]
    rows = (
        ("regions in the slice", part.n_regions),
        ("median region area (share of the slice)", float(np.median(areas)) / total),
        ("largest region (share of the slice)", float(areas[-1]) / total),
        ("decision-boundary segments", len(part.boundary)),
        ("decision-boundary length (plane units)",
         float(np.linalg.norm(part.boundary[:, 1] - part.boundary[:, 0], axis=1).sum()) if len(part.boundary) else 0.0),
    )
    return [
        Section(
            id="regions",
            title="Linear regions on a slice through three digits",
            text=(
                f"A ReLU network is affine on each of the convex polygons it cuts its input space into. This is the "
                f"exact partition of the plane through three training digits (classes {labels[0]}, {labels[1]} and "
                f"{labels[2]}, the white dots), computed by successive cuts layer by layer: every region is a polygon "
                "coloured by the class the network predicts there, the decision boundary is drawn in black (the "
                "picture of SplineCam, Humayun et al. 2023). Regions crowd where the network bends the most; their "
                "density near data (local complexity) is tracked over training in validation/regions_training.py."
            ),
            result=part,
            summary=(f"{part.n_regions} regions in the slice (median area {rows[1][1]:.2g} of it), "
                     f"{len(part.boundary)} decision-boundary segments"),
            table=Table(columns=("quantity", "value"), rows=rows, digits=3),
            plot=lambda ax: part.plot(ax=ax, color_by="class", points=X[idx], labels=y[idx]),
            figure_alt="Exact linear regions of the demo MLP on the plane through three digits, coloured by class",
        )
    ]


@torch.no_grad()
def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(X).argmax(dim=1) == y).float().mean())


def _estimates_table(est: DimensionEstimates) -> Table:
    rows = tuple(
        (est.label(i), float(est.dimensions[i]), float(est.dimension_std[i]), int(est.n_points[i]), float(est.times[i]))
        for i in range(len(est.methods))
    )
    return Table(columns=("method", "dimension", "± std", "N used", "time (s)"), rows=rows, digits=2)


def _profile_line(profile) -> str:
    return ", ".join(f"{name} {d:.1f}" for name, d in zip(profile.layers, profile.dimensions))


def _prepare(seed: int, epochs: int = 25, test_fraction: float = 0.2) -> dict:
    """The digits, the seeded train/test split and the MLP trained on the train part."""
    from ..data import digits

    X_np, y_np = digits()
    n = X_np.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    X = torch.from_numpy(X_np)
    y = torch.from_numpy(y_np)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_mlp()
        losses = _train(model, X[train_idx], y[train_idx], epochs=epochs, batch_size=_BATCH, lr=_LR, seed=seed)
    return dict(X_np=X_np, X=X, y=y, model=model, losses=losses, train_idx=train_idx, test_idx=test_idx, n=n,
                n_test=n_test)


def demo_model(seed: int = 0, *, epochs: int = 25) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The demo's MLP trained on its share of the digits (deterministic for ``seed``), with
    that training split ``(model, X_train, y_train)``: what ``shapelens curvature --demo``
    measures."""
    d = _prepare(seed, epochs)
    return d["model"], d["X"][d["train_idx"]], d["y"][d["train_idx"]]


def run_demo(out_dir: str | Path = "atlas", seed: int = 0, *, epochs: int = 25, test_fraction: float = 0.2) -> AtlasPaths:
    """Train a small MLP on scikit-learn's digits and write the demo atlas into ``out_dir``.

    Deterministic for a given ``seed`` on a given machine: the data split, the weight
    initialisation and the batch order are all seeded (the global torch RNG is forked, so
    the caller's random state is left untouched); training runs on the CPU.

    Returns the :class:`AtlasPaths` of ``index.html``, ``atlas.json`` and the figures, with
    a one-line summary per section. Train/test accuracy, timings and the seed are in
    ``atlas.json``'s ``meta``.
    """
    from .. import dimension

    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    d = _prepare(seed, epochs, test_fraction)
    X_np, X, y, model, losses = d["X_np"], d["X"], d["y"], d["model"], d["losses"]
    train_idx, test_idx, n, n_test = d["train_idx"], d["test_idx"], d["n"], d["n_test"]
    train_acc = _accuracy(model, X[train_idx], y[train_idx])
    test_acc = _accuracy(model, X[test_idx], y[test_idx])
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prof_twonn = dimension.layer_profile(model, X, layers="auto", estimator="twonn", device="cpu")
    timings["profile_twonn_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prof_mle = dimension.layer_profile(model, X, layers="auto", estimator="mle", device="cpu", k=20)
    timings["profile_mle_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data_ids = compare_estimators(X_np, DEFAULT_METHODS, seed=seed, device="cpu")
    timings["data_id_s"] = time.perf_counter() - t0

    # the input (pixel) space's ID from the data section, as the profile's starting point
    def _data_id(method: str) -> tuple[float, float]:
        i = data_ids.methods.index(method)
        return float(data_ids.dimensions[i]), float(data_ids.dimension_std[i])

    in_t, in_t_std = _data_id("twonn")
    in_m, in_m_std = _data_id("mle")
    profile_rows = (("input (pixels)", int(X_np.shape[1]), in_t, in_t_std, in_m, in_m_std),) + tuple(
        (name, int(amb), float(d_t), float(s_t), float(d_m), float(s_m))
        for name, amb, d_t, s_t, d_m, s_m in zip(
            prof_twonn.layers,
            prof_twonn.ambient_dims,
            prof_twonn.dimensions,
            prof_twonn.dimension_std,
            prof_mle.dimensions,
            prof_mle.dimension_std,
        )
    )

    def plot_profiles(ax):
        for prof, value, label in ((prof_twonn, in_t, "TwoNN"), (prof_mle, in_m, "MLE")):
            prof.plot(ax=ax)
            color = ax.containers[-1][0].get_color() if ax.containers else None
            ax.axhline(value, linestyle="--", linewidth=1, color=color, alpha=0.7, label=f"{label} ID of the input pixels")
        ax.set_title(f"Layer intrinsic dimension of an MLP on {n} digits (test accuracy {100 * test_acc:.1f}%)")
        ax.legend(loc="best", fontsize=8)

    sections = [
        Section(
            id="layer-id-profile",
            title="Layer intrinsic-dimension profile",
            text=(
                f"How many independent directions each layer's representation of all {n} digits really uses, "
                "estimated by TwoNN (Facco et al. 2017) and MLE with k=20 (Levina & Bickel 2005), against the "
                "layer's width; dashed lines mark the dimension of the input pixels. Across the layers of deep trained networks the intrinsic dimension typically first "
                "rises, then falls towards the output (the 'hunchback' of Ansuini et al. 2019), and a low "
                "last-hidden-layer dimension goes with good generalisation; compare the first layer with the "
                "dashed lines to see whether it expands or compresses the data."
            ),
            result={"twonn": prof_twonn, "mle": prof_mle},
            summary=(
                f"TwoNN: input {in_t:.1f} -> {_profile_line(prof_twonn)} | "
                f"MLE(k=20): input {in_m:.1f} -> {_profile_line(prof_mle)}"
            ),
            table=Table(
                columns=("layer", "width", "TwoNN ID", "± std", "MLE ID (k=20)", "± std"),
                rows=profile_rows,
            ),
            plot=plot_profiles,
            figure_alt="Layer intrinsic-dimension profile (TwoNN and MLE) of the digits MLP",
        ),
        Section(
            id="data-id",
            title="Intrinsic dimension of the digits",
            text=(
                f"The intrinsic dimension of the {n} input images ({data_ids.ambient_dim} pixels each) by every "
                "estimator. The estimators look at different scales (nearest-neighbour ratios, k-neighbourhoods, "
                "local PCA, pair counts), so they disagree on real data; their spread is part of the answer, "
                "not an error."
            ),
            result=data_ids,
            summary=", ".join(f"{data_ids.label(i)} {d:.2f}" for i, d in enumerate(data_ids.dimensions)),
            table=_estimates_table(data_ids),
            figure_alt="Intrinsic dimension of the digits by every estimator",
        ),
    ]
    sections += _curvature_sections(model, X[train_idx], y[train_idx], seed, timings)
    sections += _topology_sections(model, X, y, seed, timings)
    sections += _symmetry_sections(model, X[test_idx], seed, timings)
    sections += _regions_sections(model, X[train_idx], y[train_idx], seed, timings)
    sections += _structure_sections(seed, timings)
    timings["analyses_total_s"] = time.perf_counter() - t_all
    meta = {
        "seed": seed,
        "dataset": f"scikit-learn digits ({n} images, 8x8 = 64 pixels, scaled to [0, 1])",
        "model": "MLP 64-128-64-32-10, ReLU",
        "training": f"Adam lr={_LR:g}, batch {_BATCH}, {epochs} epochs, {len(train_idx)} train / {n_test} test images, CPU",
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "final_train_loss": losses[-1] if losses else float("nan"),
        "torch_threads": torch.get_num_threads(),
        "timings": timings,
    }
    intro = (
        f"Demo atlas: a 64-128-64-32-10 ReLU MLP trained for {epochs} epochs on {len(train_idx)} of scikit-learn's "
        f"{n} handwritten digits reaches {100 * train_acc:.1f}% train and {100 * test_acc:.1f}% test accuracy "
        f"(seed {seed}). Below: the intrinsic dimension of its layers and of the data, the curvature of its "
        "training loss and the loss landscape around the trained weights, the topology of each class layer by "
        "layer, how far the model is from the symmetries of its input images, its exact linear regions on a "
        "slice through three digits, and, for a second model built from a diagram (a bundle network on a torus), "
        "the diagram with its commutativity errors and the fibers it generates."
    )
    return write_atlas(
        sections,
        out_dir,
        title="shapelens atlas: MLP on handwritten digits",
        meta=meta,
        intro=intro,
    )


# --------------------------------------------------------------------------- structure

def torus_over_circle(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of the torus (major radius 2, minor 1, area-uniform; :func:`shapelens.data.torus`)
    zero-padded to R^4 as Courts & Kvinge pad their torus, and their base points: the projection
    ``pi(x) = (x_1, x_2) / ||(x_1, x_2)||`` onto the core circle, whose fibers are the tube's circles."""
    from ..data import torus

    X = torus(n, seed=seed).X
    y = X[:, :2] / np.linalg.norm(X[:, :2], axis=1, keepdims=True)
    x = np.concatenate([X, np.zeros((n, 1))], axis=1)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def demo_bundle(seed: int = 0, *, n_train: int = 2000, n_test: int = 500, epochs: int = 100):
    """A :class:`~shapelens.structure.bundle.BundleNetwork` (Courts & Kvinge, ICLR 2022) trained
    for a few seconds on the torus over its core circle (:func:`torus_over_circle`), with held-out
    points and their base points: ``(net, x_test, y_test)``. What ``shapelens structure --demo``
    checks and the demo atlas's structure sections show."""
    from ..structure.bundle import BundleNetwork

    x, y = torus_over_circle(n_train, seed=seed)
    x_test, y_test = torus_over_circle(n_test, seed=seed + 1)
    # small and short for a demo (the validation's networks train 120 epochs of 25 neighbourhoods); the mse
    # weight 30 (the paper's 10) buys an accurate projection in 100 short epochs
    net = BundleNetwork(4, 2, 2, n_neighborhoods=10, hidden=64, n_blocks=3, weights={"mse": 30.0}, seed=seed)
    with single_thread(True):
        net.fit(x, y, epochs=epochs, points_per_nbhd=32, lr=5e-3, seed=seed, progress=False)
    net.eval()
    return net, x_test, y_test


def _torus_fiber(angle: float, n: int, seed: int) -> np.ndarray:
    """``n`` area-uniform points of the torus's tube circle over the base angle ``angle`` (the true
    fiber of :func:`torus_over_circle`), zero-padded to R^4: the tube angle has density
    proportional to ``2 + cos(theta)``, drawn by rejection as in :func:`shapelens.data.torus`."""
    rng = np.random.default_rng(seed)
    th = np.empty(0)
    while th.size < n:
        t = 2.0 * np.pi * rng.random(4 * n)
        th = np.concatenate([th, t[rng.random(4 * n) * 3.0 < 2.0 + np.cos(t)]])
    th = th[:n]
    rho = 2.0 + np.cos(th)
    return np.column_stack([rho * np.cos(angle), rho * np.sin(angle), np.sin(th), np.zeros(n)])


def _structure_sections(seed: int, timings: dict) -> list[Section]:
    """A model built from a diagram: a bundle network on the torus over a circle (Courts & Kvinge
    2022), its diagram with the commutativity errors, and generated against true fibers."""
    from ..structure.bundle import wasserstein1
    from .structure import structure_sections

    t0 = time.perf_counter()
    net, x_test, y_test = demo_bundle(seed)
    timings["bundle_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with single_thread(True):
        sections = structure_sections(net, {net.labelled_space.name: (x_test, y_test)}, seed=seed,
                                      section_id="structure-diagram")
    angles = (0.0, 2.0 * np.pi / 3.0, 4.0 * np.pi / 3.0)
    n_fib = 300
    true = [_torus_fiber(a, n_fib, seed + 10 + i) for i, a in enumerate(angles)]
    gen = net.sample_fiber(np.array([[np.cos(a), np.sin(a)] for a in angles]), n_fib, seed=seed).numpy()
    w1 = [wasserstein1(g, t) for g, t in zip(gen, true)]
    timings["structure_check_s"] = time.perf_counter() - t0

    def plot_fibers(ax):
        colors = ("tab:blue", "tab:orange", "tab:green")
        for i, a in enumerate(angles):
            u = np.array([np.cos(a), np.sin(a), 0.0, 0.0])
            for pts, style in ((true[i], dict(s=4, color="0.6")), (gen[i], dict(s=6, color=colors[i], alpha=0.7))):
                ax.scatter(pts @ u + 7.0 * i, pts[:, 2], **style)
            ax.text(2.0 + 7.0 * i, 1.45, f"base angle {np.degrees(a):.0f} deg\nW1 {w1[i]:.3f}", ha="center",
                    fontsize=8)
        ax.set_aspect("equal")
        ax.set_ylim(-1.6, 2.0)
        ax.set_xticks([])
        ax.set_xlabel("distance from the axis along the base direction (each fiber shifted right by 7)")
        ax.set_ylabel("height z")
        ax.set_title("Fibers of the torus over three base points: true (grey) and generated by the bundle network",
                     fontsize=9)

    sections.append(Section(
        id="structure-fibers",
        title="Structure: sampling the fiber over a base point",
        text=(
            "What the bundle network is for: given a base point (here an angle on the core circle of a torus), "
            "it generates points of the whole fiber over it (the tube's circle) by sampling fiber coordinates in "
            "the local trivialization and inverting it, instead of one answer per input. Shown: generated points "
            "against true ones over three base points, with the Wasserstein-1 distance between them (exact optimal "
            f"assignment of {n_fib} points each; 0 = the true fiber). validation/bundle_networks.py compares this "
            "with a conditional baseline on the datasets of Courts & Kvinge."
        ),
        result=None,
        summary="W1 between generated and true fibers: " + ", ".join(
            f"{np.degrees(a):.0f} deg {w:.3f}" for a, w in zip(angles, w1)),
        table=Table(columns=("base angle (deg)", "W1 generated vs true fiber"),
                    rows=tuple((float(np.degrees(a)), w) for a, w in zip(angles, w1)), digits=3),
        plot=plot_fibers,
        figure_alt="True and generated fibers of the torus over three base points",
    ))
    return sections
