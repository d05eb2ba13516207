"""Intrinsic dimension of MNIST and the layer ID profile ("hunchback") of MNIST-trained networks.

Reproduces, on the real MNIST images (``../shared/data/mnist.npz``):

(a) the ID of MNIST from every shapelens estimator, next to the published values:
    * Facco, d'Errico, Rodriguez & Laio (2017), Sci. Rep. 7:12140 -- TwoNN, about 14.9 on MNIST;
    * Pope, Zhu, Abdelkader, Goldblum & Goldstein (2021), "The intrinsic dimension of images
      and its impact on learning", ICLR -- MLE (Levina-Bickel, MacKay-Ghahramani averaging)
      with k = 3..20 gives roughly 7 to 13 for MNIST;
    plus GRIDE (Denti et al. 2022) across scales, local PCA and the correlation dimension,
    on a 10,000-image subset and (TwoNN, MLE) on all 70,000 images, and per digit class.

(b) the layer ID profile (TwoNN and MLE) of the MNIST CNN of Ansuini, Laio, Macke & Zoccolan
    (2019), "Intrinsic dimension of data representations in deep neural networks", NeurIPS
    (conv 32 - pool - conv 64 - pool - fc 128 - fc 10; ``validation/_models.small_cnn`` is that
    architecture), trained and untrained, and of an MLP 784-512-512-256-128-10, on MNIST test
    images: input, every hidden layer, logits; with test accuracy. Ansuini et al. report that in
    trained networks the ID first rises then falls ("hunchback"), that the last hidden layer's ID
    is far below the input's and tracks accuracy, and that the hunchback is absent before
    training.

Writes ``validation/results/mnist_dimension.md`` (+ ``.json`` and the figures
``mnist_dimension_estimators.png``, ``mnist_layer_profiles.png``). Model weights are trained
once on CPU and cached under ``validation/cache/`` (safetensors).

    .venv/bin/python validation/mnist_dimension.py            # full run, ~10 min on 2 cores
    .venv/bin/python validation/mnist_dimension.py --quick    # ~1 min smoke run, *_quick files
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _models import accuracy, load_or_train, small_cnn  # noqa: E402

from shapelens._results import jsonable  # noqa: E402
from shapelens.data import mnist  # noqa: E402
from shapelens.dimension import GRIDE, MLE, CorrelationDimension, LocalPCA, TwoNN, layer_profile  # noqa: E402
from shapelens.dimension._base import distinct_points  # noqa: E402
from shapelens.dimension.estimators import twonn_from_distances  # noqa: E402
from shapelens.neighbors import knn  # noqa: E402

RESULTS = HERE / "results"
MLE_KS = (3, 5, 10, 20)

# --------------------------------------------------------------------------------------
# published values
# --------------------------------------------------------------------------------------

FACCO_TWONN = 14.9  # Facco et al. 2017, MNIST, as cited in the project issue
POPE_MLE_RANGE = (7.0, 13.0)  # Pope et al. 2021, MLE k = 3..20, MNIST, as cited in the project issue


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# (a) ID of MNIST
# --------------------------------------------------------------------------------------


def mle_from_distances(dist: np.ndarray, k: int) -> float:
    """Levina-Bickel MLE at ``k`` with MacKay-Ghahramani inverse averaging, from sorted kNN distances.

    The same formula as :class:`shapelens.dimension.MLE` (the script checks equality on the
    subset): ``1 / mean_x [ 1/(k-1) sum_{j<k} log(T_k(x)/T_j(x)) ]``. Used to get every ``k``
    from one kNN pass over all 70,000 images.
    """
    logd = np.log(dist[:, :k])
    inv = (logd[:, k - 1:k] - logd[:, : k - 1]).sum(axis=1) / (k - 1)
    return float(1.0 / inv.mean())


def pope_normalisation(d_shapelens: float, k: int) -> float:
    """The same MLE with Pope et al.'s normaliser ``k-2`` instead of ``k-1`` (their released code,
    ``estimators/mle.py``, ``intrinsic_dim_sample_wise_double_mle``): ``d * (k-2)/(k-1)``."""
    return d_shapelens * (k - 2) / (k - 1)


def fit(est, X):
    t0 = time.perf_counter()
    est.fit(X)
    return est, time.perf_counter() - t0


def dataset_id(X: np.ndarray, full: np.ndarray | None, X_train: np.ndarray, y_train: np.ndarray, per_digit_n: int) -> dict:
    out: dict = {"n_subset": int(X.shape[0]), "rows": []}
    rows = out["rows"]

    def add(name, params, est, secs, published="", note=""):
        rows.append({"estimator": name, "params": params, "dimension": float(est.dimension_),
                     "std": float(getattr(est, "dimension_std_", float("nan"))), "seconds": secs,
                     "published": published, "note": note})
        log(f"  {name} {params}: {est.dimension_:.2f} ({secs:.1f} s)")

    log(f"(a) ID of MNIST, N = {X.shape[0]}")
    est, s = fit(TwoNN(), X)
    add("TwoNN", "discard 10 %", est, s, f"≈ {FACCO_TWONN} (Facco et al. 2017)")
    mle_sub = {}
    for k in MLE_KS:
        est, s = fit(MLE(k=k), X)
        mle_sub[k] = float(est.dimension_)
        add("MLE", f"k = {k}", est, s, "7 – 13 over k = 3..20 (Pope et al. 2021)",
            f"Pope normaliser (k−2): {pope_normalisation(est.dimension_, k):.2f}")
    est, s = fit(MLE(k=(3, 20)), X)
    add("MLE", "k = 3..20 averaged", est, s, "7 – 13 (Pope et al. 2021)")
    g, s = fit(GRIDE(range_max=64), X)
    add("GRIDE", "n1 = 1, n2 = 2", g, s)
    out["gride_scale"] = {"n1": g.scale_n1_.tolist(), "distance": g.scale_distances_.tolist(),
                          "dimension": g.scale_dimensions_.tolist(), "std": g.scale_dimension_std_.tolist()}
    for n1, d in zip(g.scale_n1_, g.scale_dimensions_):
        if n1 > 1:
            rows.append({"estimator": "GRIDE", "params": f"n1 = {n1}, n2 = {2 * n1}", "dimension": float(d),
                         "std": float(g.scale_dimension_std_[list(g.scale_n1_).index(n1)]), "seconds": float("nan"),
                         "published": "", "note": f"mean r_n2 = {g.scale_distances_[list(g.scale_n1_).index(n1)]:.2f}"})
    est, s = fit(LocalPCA(k=50, threshold=0.95, n_centers=1000, seed=0), X)
    add("LocalPCA", "k = 50, 95 % variance, 1000 centres", est, s, "", "linear, scale-dependent")
    est, s = fit(LocalPCA(k=50, criterion="fo", alpha=0.05, n_centers=1000, seed=0), X)
    add("LocalPCA", "k = 50, Fukunaga–Olsen α = 0.05", est, s)
    est, s = fit(CorrelationDimension(k1=10, k2=20), X)
    add("CorrelationDimension", "radii r_10 .. r_20", est, s)
    # check: the formula used for the full set equals the estimator on the subset
    Xt, _ = distinct_points(torch.from_numpy(X))
    dist = knn(Xt, max(MLE_KS)).distances.numpy()
    for k in MLE_KS:
        assert abs(mle_from_distances(dist, k) - mle_sub[k]) < 1e-6 * mle_sub[k], "MLE formula mismatch"
    out["mle_k_subset"] = {int(k): mle_from_distances(dist, k) for k in range(3, 21)}

    if full is not None:
        log(f"(a) TwoNN and MLE on all {full.shape[0]} images (one kNN pass, k = 20)")
        t0 = time.perf_counter()
        Ft, n_dup = distinct_points(torch.from_numpy(full))
        res = knn(Ft, 20)
        secs = time.perf_counter() - t0
        dist = res.distances.numpy()
        d2, s2, *_ = twonn_from_distances(dist[:, 0], dist[:, 1])
        out["full"] = {"n": int(full.shape[0]), "n_distinct": int(Ft.shape[0]), "n_duplicates": int(n_dup),
                       "knn_seconds": secs, "twonn": d2, "twonn_std": s2,
                       "mle": {int(k): mle_from_distances(dist, k) for k in range(3, 21)}}
        log(f"  full: TwoNN {d2:.2f}, MLE k=20 {out['full']['mle'][20]:.2f} ({secs:.0f} s)")

    log(f"(a) per digit class ({per_digit_n} training images each)")
    per = []
    for c in range(10):
        Xc = X_train[y_train == c][:per_digit_n]
        t, _ = fit(TwoNN(), Xc)
        m, _ = fit(MLE(k=20), Xc)
        per.append({"digit": c, "n": int(Xc.shape[0]), "twonn": float(t.dimension_), "twonn_std": float(t.dimension_std_),
                    "mle20": float(m.dimension_)})
    out["per_digit"] = per
    return out


# --------------------------------------------------------------------------------------
# (b) layer profiles
# --------------------------------------------------------------------------------------


def mlp() -> nn.Sequential:
    """784-512-512-256-128-10 ReLU MLP (the fully connected networks of Ansuini et al. 2019 are of this kind)."""
    sizes = [784, 512, 512, 256, 128]
    items: list = [("flatten", nn.Flatten())]
    for i in range(len(sizes) - 1):
        items += [(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1])), (f"relu{i + 1}", nn.ReLU())]
    items.append(("fc5", nn.Linear(sizes[-1], 10)))
    return nn.Sequential(OrderedDict(items))


def with_log_softmax(model: nn.Module) -> nn.Sequential:
    """``model`` followed by log-softmax (Ansuini et al.'s "output" layer)."""
    return nn.Sequential(OrderedDict([("net", model), ("output", nn.LogSoftmax(dim=1))]))


CNN_LAYERS = OrderedDict([  # Ansuini et al.'s MNIST layers: input, conv1, pool1, conv2, pool2, d1, output
    ("net.conv1", "conv1"), ("net.pool1", "pool1"), ("net.conv2", "conv2"), ("net.pool2", "pool2"),
    ("net.relu3", "d1 (fc1+ReLU)"), ("net.fc2", "logits"), ("output", "output (log-softmax)"),
])
MLP_LAYERS = OrderedDict([
    ("net.relu1", "hidden 1 (512)"), ("net.relu2", "hidden 2 (512)"), ("net.relu3", "hidden 3 (256)"),
    ("net.relu4", "hidden 4 (128)"), ("net.fc5", "logits"), ("output", "output (log-softmax)"),
])


def profile(model, Xin, names: OrderedDict, X_flat: np.ndarray, estimators: dict) -> dict:
    """Input ID plus ``layer_profile`` for each estimator; returns plain lists."""
    out = {"layers": ["input"] + list(names.values()), "ambient": None}
    for label, (name, kw) in estimators.items():
        t0 = time.perf_counter()
        inp = (TwoNN() if name == "twonn" else MLE(**kw)).fit(X_flat)
        prof = layer_profile(model, Xin, layers=list(names), estimator=name, pool="flatten", device="cpu", **kw)
        secs = time.perf_counter() - t0
        out[label] = [float(inp.dimension_)] + [float(v) for v in prof.dimensions]
        out[label + "_std"] = [float(inp.dimension_std_)] + [float(v) for v in prof.dimension_std]
        out["ambient"] = [int(X_flat.shape[1])] + [int(v) for v in prof.ambient_dims]
        log(f"  {label}: " + ", ".join(f"{v:.1f}" for v in out[label]) + f" ({secs:.0f} s)")
    return out


def layer_profiles(args) -> dict:
    Xtr, ytr = mnist("train", limit=args.train_n, flatten=False)
    Xte, yte = mnist("test", flatten=False)
    Xp = Xte[: args.profile_n]
    Xp_flat = Xp.reshape(len(Xp), -1)
    est = OrderedDict([("TwoNN", ("twonn", {})), ("MLE k=20", ("mle", {"k": 20}))])
    out = {"n_points": int(len(Xp)), "train_n": int(len(Xtr))}

    log(f"(b) CNN: train/load ({args.cnn_epochs} epochs on {len(Xtr)} images)")
    torch.manual_seed(0)
    untrained = small_cnn()
    torch.manual_seed(0)
    cnn, cached = load_or_train(small_cnn(), Xtr, ytr, name="small_cnn", epochs=args.cnn_epochs, seed=0)
    out["cnn"] = {"cached": cached, "epochs": args.cnn_epochs, "accuracy": accuracy(cnn, Xte, yte),
                  "untrained_accuracy": accuracy(untrained, Xte, yte)}
    log(f"  CNN test accuracy {out['cnn']['accuracy']:.4f} (weights from cache: {cached})")
    out["cnn"].update(profile(with_log_softmax(cnn), Xp, CNN_LAYERS, Xp_flat, est))
    log("(b) CNN before training (same initialisation), TwoNN")
    u = profile(with_log_softmax(untrained), Xp, CNN_LAYERS, Xp_flat, OrderedDict([("TwoNN", ("twonn", {}))]))
    out["cnn"]["untrained_TwoNN"] = u["TwoNN"]

    log(f"(b) MLP: train/load ({args.mlp_epochs} epochs)")
    torch.manual_seed(0)
    net, cached = load_or_train(mlp(), Xtr.reshape(len(Xtr), -1), ytr, name="mlp_784_512_512_256_128_10",
                                epochs=args.mlp_epochs, seed=0)
    out["mlp"] = {"cached": cached, "epochs": args.mlp_epochs,
                  "accuracy": accuracy(net, Xte.reshape(len(Xte), -1), yte)}
    log(f"  MLP test accuracy {out['mlp']['accuracy']:.4f} (weights from cache: {cached})")
    out["mlp"].update(profile(with_log_softmax(net), Xp_flat, MLP_LAYERS, Xp_flat, est))
    return out


# --------------------------------------------------------------------------------------
# figures and report
# --------------------------------------------------------------------------------------


def figure_estimators(a: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ks = sorted(int(k) for k in a["mle_k_subset"])
    sub = [a["mle_k_subset"][k] for k in ks]
    ax1.plot(ks, sub, "o-", ms=3, label=f"shapelens MLE, N = {a['n_subset']:,}")
    ax1.plot(ks, [pope_normalisation(v, k) for v, k in zip(sub, ks)], "s--", ms=3,
             label="same, Pope's (k−2) normaliser")
    if "full" in a:
        full = [a["full"]["mle"][k] for k in ks]
        ax1.plot(ks, full, "o-", ms=3, label=f"shapelens MLE, N = {a['full']['n_distinct']:,}")
        ax1.plot(ks, [pope_normalisation(v, k) for v, k in zip(full, ks)], "s--", ms=3,
                 label="same, Pope's (k−2) normaliser")
    ax1.axhspan(*POPE_MLE_RANGE, color="C7", alpha=0.2, label="Pope et al. 2021: 7 – 13")
    ax1.axhline(FACCO_TWONN, color="k", ls=":", label="Facco et al. 2017 TwoNN ≈ 14.9")
    ax1.set_xlabel("k (neighbours)")
    ax1.set_ylabel("intrinsic dimension")
    ax1.set_title("MLE of MNIST against k")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)

    gs = a["gride_scale"]
    ax2.errorbar(gs["distance"], gs["dimension"], yerr=gs["std"], marker="o", capsize=3)
    for n1, x, yv in zip(gs["n1"], gs["distance"], gs["dimension"]):
        ax2.annotate(f"{n1}→{2 * n1}", (x, yv), textcoords="offset points", xytext=(0, 7), fontsize=7, ha="center")
    ax2.axhline(FACCO_TWONN, color="k", ls=":")
    ax2.set_xlabel("mean distance to the n2-th neighbour")
    ax2.set_ylabel("GRIDE dimension")
    ax2.set_title("ID against scale (GRIDE)")
    ax2.grid(alpha=0.3)

    per = a["per_digit"]
    x = np.arange(10)
    ax3.bar(x - 0.2, [p["twonn"] for p in per], 0.4, label="TwoNN")
    ax3.bar(x + 0.2, [p["mle20"] for p in per], 0.4, label="MLE k = 20")
    ax3.set_xticks(x)
    ax3.set_xlabel("digit")
    ax3.set_ylabel("intrinsic dimension")
    ax3.set_title(f"Per digit class ({per[0]['n']:,} training images each)")
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def figure_profiles(b: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "cnn", "CNN (Ansuini et al.'s MNIST architecture)"), (axes[1], "mlp", "MLP 784-512-512-256-128-10")):
        r = b[key]
        x = np.arange(len(r["layers"]))
        ax.errorbar(x, r["TwoNN"], yerr=r["TwoNN_std"], marker="o", capsize=3, label=f"TwoNN (test acc {r['accuracy']:.3f})")
        ax.plot(x, r["MLE k=20"], "s-", label="MLE k = 20")
        if "untrained_TwoNN" in r:
            ax.plot(x, r["untrained_TwoNN"], "^--", color="0.5", label="TwoNN, untrained")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{n}\nD={amb}" for n, amb in zip(r["layers"], r["ambient"])], rotation=30, ha="right",
                           fontsize=8)
        ax.set_ylabel("intrinsic dimension")
        ax.set_title(f"{title}, N = {b['n_points']:,} test images", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def fmt(v, nd=2):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def reading(a: dict) -> list[str]:
    """Data-driven comments on part (a)."""
    out = []
    tw = next(r["dimension"] for r in a["rows"] if r["estimator"] == "TwoNN")
    line = (f"* TwoNN: {tw:.2f} on {a['n_subset']:,} images ({100 * (tw - FACCO_TWONN) / FACCO_TWONN:+.0f} % against "
            f"Facco et al.'s ≈ {FACCO_TWONN})")
    if "full" in a:
        f = a["full"]
        line += (f", {f['twonn']:.2f} on all {f['n_distinct']:,} ({100 * (f['twonn'] - FACCO_TWONN) / FACCO_TWONN:+.0f} %)"
                 ". TwoNN on real data depends on N (it probes the scale of the nearest-neighbour distances, which "
                 "shrinks as N grows)")
    out.append(line + ".")
    src = a["full"]["mle"] if "full" in a else a["mle_k_subset"]
    ks = sorted(int(k) for k in src)
    ours = [src[k] for k in ks]
    pope = [pope_normalisation(src[k], k) for k in ks]
    lo, hi = POPE_MLE_RANGE
    trend = "falls" if ours[-1] < ours[0] else "rises"
    out.append(
        f"* MLE (shapelens, 1/(k−1) normaliser as in Levina & Bickel and scikit-dimension): {min(ours):.2f} – "
        f"{max(ours):.2f} over k = 3..20; it {trend} slowly with k. Pope et al.'s released code "
        "(`estimators/mle.py` in github.com/ppope/dimensions, `intrinsic_dim_sample_wise_double_mle`) divides the "
        "per-point log-ratio sum by k−2 instead, which multiplies the estimate by (k−2)/(k−1): ×0.5 at k = 3, ×0.95 at "
        f"k = 20. With that normaliser the same distances give {pope[0]:.2f} (k = 3) to {pope[-1]:.2f} (k = 20), rising "
        f"with k as in their table; {'inside' if lo - 0.5 <= min(pope) and max(pope) <= hi + 0.5 else 'compare with'} "
        f"the published {lo:.0f} – {hi:.0f}. (Sample size and preprocessing may differ from theirs.)")
    gs = a["gride_scale"]["dimension"]
    lpca = [r["dimension"] for r in a["rows"] if r["estimator"] == "LocalPCA"]
    corr = next(r["dimension"] for r in a["rows"] if r["estimator"] == "CorrelationDimension")
    out.append(f"* GRIDE goes from {gs[0]:.2f} (n1 = 1, the TwoNN scale) to {gs[-1]:.2f} (n1 = 32): ID is "
               f"scale-dependent. Local PCA, a linear estimate, gives {', '.join(f'{v:.1f}' for v in lpca)} (95 % "
               f"variance / Fukunaga–Olsen): a curved manifold needs more linear directions than its dimension. The "
               f"correlation dimension over r_10..r_20 is {corr:.2f}, below the others: with N = "
               f"{a['n_subset']:,} points a correlation-sum slope cannot exceed about 2 log10 N = "
               f"{2 * math.log10(a['n_subset']):.0f} (Eckmann & Ruelle 1992), so it under-counts at this ID.")
    per = a["per_digit"]
    lo_d = min(per, key=lambda p: p["twonn"])
    hi_d = max(per, key=lambda p: p["twonn"])
    out.append(f"* Per class, digit {lo_d['digit']} has the lowest TwoNN ID ({lo_d['twonn']:.1f}) and digit "
               f"{hi_d['digit']} the highest ({hi_d['twonn']:.1f}).")
    return out


def reading_profiles(b: dict) -> list[str]:
    """Data-driven comments on part (b)."""
    out = []
    for key, name, last in (("cnn", "CNN", "d1 (fc1+ReLU)"), ("mlp", "MLP", "hidden 4 (128)")):
        r = b[key]
        tw = r["TwoNN"]
        i_last = r["layers"].index(last)
        i_peak = int(np.argmax(tw[1:i_last + 1])) + 1
        hunch = tw[i_peak] > tw[0] + 2 * max(r["TwoNN_std"][0], 1e-9)
        out.append(
            f"* {name} (test accuracy {r['accuracy']:.4f}): input {tw[0]:.1f}; largest hidden-layer ID {tw[i_peak]:.1f} "
            f"at {r['layers'][i_peak]} ("
            + ("above the input's by more than two standard errors" if hunch else
               "above the input's but within two standard errors" if tw[i_peak] > tw[0] else "below the input's")
            + f"); last hidden layer {tw[i_last]:.1f} ({tw[i_last] / tw[0]:.2f} × the input's); output "
            f"{tw[-1]:.1f}. " + ("A hunchback: the ID rises, then falls." if hunch else
                                 "The rising part of the hunchback is not reproduced in this run: "
                                 + ("the rise over the input is within two standard errors"
                                    if tw[i_peak] > tw[0] else "no hidden layer's ID exceeds the input's")
                                 + "; the ID falls from input to output."))
    if "untrained_TwoNN" in b["cnn"]:
        u, t = b["cnn"]["untrained_TwoNN"], b["cnn"]["TwoNN"]
        i_last = b["cnn"]["layers"].index("d1 (fc1+ReLU)")
        out.append(f"* Untrained CNN (same initial weights): last hidden layer {u[i_last]:.1f} against {t[i_last]:.1f} "
                   f"after training; training is what compresses the representation, as Ansuini et al. found.")
    return out


def report(a: dict, b: dict, args, total_s: float, suffix: str) -> str:
    L = []
    title = "MNIST intrinsic dimension and layer ID profiles" + (" — QUICK SMOKE RUN" if args.quick else "")
    L += [f"# {title}", "",
          f"Written by `validation/mnist_dimension.py{' --quick' if args.quick else ''}` on "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads); total run time {total_s / 60:.1f} min "
          f"({'weights loaded from validation/cache' if b['cnn']['cached'] and b['mlp']['cached'] else 'including training the models'}"
          f"; the time depends on other load on the machine).", ""]
    if args.quick:
        L += ["> Quick smoke run on reduced sizes; the reference numbers come from the full run.", ""]
    L += ["## (a) Intrinsic dimension of MNIST", "",
          f"Data: the first {a['n_subset']:,} MNIST training images, pixels / 255, D = 784 (exact duplicates would be "
          "dropped with a warning; there are none). Published values as cited in the project issue: Facco et al. "
          "(2017) TwoNN ≈ 14.9; Pope et al. (2021) MLE with k = 3..20 roughly 7 to 13.", "",
          "| estimator | parameters | shapelens | ± (s.e.) | published | note | time (s) |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in a["rows"]:
        L.append(f"| {r['estimator']} | {r['params']} | **{fmt(r['dimension'])}** | {fmt(r['std'])} | {r['published']} | "
                 f"{r['note']} | {fmt(r['seconds'], 1)} |")
    L.append("")
    if "full" in a:
        f = a["full"]
        L += [f"All {f['n']:,} MNIST images (train + test; {f['n_duplicates']} exact duplicates dropped), one exact "
              f"kNN pass (k = 20, {f['knn_seconds']:.0f} s), TwoNN and the MLE at every k from the same distances:", "",
              "| N | TwoNN | MLE k=3 | k=5 | k=10 | k=20 | MLE k=3 with Pope's (k−2) | k=5 | k=10 | k=20 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        sub = a["mle_k_subset"]
        twonn_sub = next(r["dimension"] for r in a["rows"] if r["estimator"] == "TwoNN")
        for n, tw, m in ((a["n_subset"], twonn_sub, sub), (f["n_distinct"], f["twonn"], f["mle"])):
            L.append(f"| {n:,} | {fmt(tw)} | " + " | ".join(fmt(m[k]) for k in MLE_KS) + " | "
                     + " | ".join(fmt(pope_normalisation(m[k], k)) for k in MLE_KS) + " |")
        L.append("")
    L += ["**Reading.**", ""] + reading(a) + [""]
    L += ["Per digit class (TwoNN and MLE k = 20; no published per-class values are reproduced here):", "",
          "| digit | " + " | ".join(str(p["digit"]) for p in a["per_digit"]) + " |",
          "| --- |" + " --- |" * 10,
          "| N | " + " | ".join(f"{p['n']:,}" for p in a["per_digit"]) + " |",
          "| TwoNN | " + " | ".join(fmt(p["twonn"], 1) for p in a["per_digit"]) + " |",
          "| MLE k=20 | " + " | ".join(fmt(p["mle20"], 1) for p in a["per_digit"]) + " |", "",
          f"![estimators](mnist_dimension_estimators{suffix}.png)", ""]

    L += ["## (b) Layer ID profiles (the hunchback)", "",
          f"Representations of the first {b['n_points']:,} MNIST test images (flattened feature maps, "
          "`layer_profile(..., pool=\"flatten\")`), TwoNN (10 % discarded) and MLE k = 20. Models trained with Adam "
          f"(lr 1e-3, batch 128, seed 0) on {b['train_n']:,} training images; accuracy on the 10,000 test images.", ""]
    for key, title in (("cnn", "CNN (conv32-pool-conv64-pool-fc128-fc10, the MNIST network of Ansuini et al. 2019)"),
                       ("mlp", "MLP 784-512-512-256-128-10")):
        r = b[key]
        acc = f"test accuracy **{r['accuracy']:.4f}** after {r['epochs']} epochs"
        if key == "cnn":
            acc += f" (untrained: {r['untrained_accuracy']:.4f})"
        L += [f"**{title}** — {acc}.", "",
              "| layer | " + " | ".join(r["layers"]) + " |",
              "| --- |" + " --- |" * len(r["layers"]),
              "| ambient D | " + " | ".join(str(v) for v in r["ambient"]) + " |",
              "| TwoNN | " + " | ".join(fmt(v, 1) for v in r["TwoNN"]) + " |",
              "| MLE k=20 | " + " | ".join(fmt(v, 1) for v in r["MLE k=20"]) + " |"]
        if "untrained_TwoNN" in r:
            L.append("| TwoNN, untrained | " + " | ".join(fmt(v, 1) for v in r["untrained_TwoNN"]) + " |")
        L.append("")
    L += ["**Published (Ansuini et al. 2019, as summarised in the project issue and brief, not re-read from the paper's "
          "figures):** for MNIST-like data the input ID is "
          "about 13; in a trained network the ID rises in the early layers and then falls, to about 10 or less at the "
          "last hidden layers (the \"hunchback\"); the last hidden layer's ID tracks test accuracy; untrained networks "
          "show no hunchback. Their MNIST protocol (released code, `scripts/mnist/analyze.py` and "
          "`create_mnist_sample.py`): samples of 2,000 images, TwoNN with 90 % resampling, layers input, conv1 (before "
          "ReLU), pool1, conv2, pool2, d1, output (log-softmax) — the layers used here, on the same architecture "
          "(`mnist_archs.py`).", "",
          "**Measured:**", ""] + reading_profiles(b) + ["",
          f"![profiles](mnist_layer_profiles{suffix}.png)", ""]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 training epoch (smoke run, ~1-2 min)")
    p.add_argument("--n", type=int, default=None, help="MNIST subset for (a) (default 10000; quick 2000)")
    p.add_argument("--no-full", action="store_true", help="skip TwoNN/MLE on all 70,000 images")
    p.add_argument("--per-digit-n", type=int, default=None, help="training images per digit (default 5000; quick 500)")
    p.add_argument("--profile-n", type=int, default=None, help="test images for the layer profiles (default 5000; quick 1000)")
    p.add_argument("--train-n", type=int, default=None, help="training images for the models (default 60000; quick 10000)")
    p.add_argument("--cnn-epochs", type=int, default=None, help="CNN epochs (default 3; quick 1)")
    p.add_argument("--mlp-epochs", type=int, default=None, help="MLP epochs (default 5; quick 1)")
    p.add_argument("--from-json", default=None, help="re-render the report and figures from a saved .json (no computation)")
    p.add_argument("--out", default=None, help="Markdown output (default validation/results/mnist_dimension[_quick].md)")
    args = p.parse_args(argv)
    q = args.quick
    args.n = args.n or (2000 if q else 10000)
    args.per_digit_n = args.per_digit_n or (500 if q else 5000)
    args.profile_n = args.profile_n or (1000 if q else 5000)
    args.train_n = args.train_n or (10000 if q else 60000)
    args.cnn_epochs = args.cnn_epochs or (1 if q else 3)
    args.mlp_epochs = args.mlp_epochs or (1 if q else 5)
    full_on = not (args.no_full or q)
    warnings.filterwarnings("ignore", message=".*duplicate.*")

    suffix = "_quick" if q else ""
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        a, b, total = saved["dataset"], saved["layers"], saved["seconds"]
        a["mle_k_subset"] = {int(k): v for k, v in a["mle_k_subset"].items()}
        if "full" in a:
            a["full"]["mle"] = {int(k): v for k, v in a["full"]["mle"].items()}
        for r in a["rows"]:
            r["std"] = float("nan") if r["std"] is None else r["std"]
            r["seconds"] = float("nan") if r["seconds"] is None else r["seconds"]
        write(a, b, args, total, suffix, save_json=False)
        return 0

    t_start = time.perf_counter()
    X_all_train, y_all_train = mnist("train")
    X = np.ascontiguousarray(X_all_train[: args.n])
    full = np.concatenate([X_all_train, mnist("test")[0]]) if full_on else None
    a = dataset_id(X, full, X_all_train, y_all_train, args.per_digit_n)
    b = layer_profiles(args)
    total = time.perf_counter() - t_start

    write(a, b, args, total, suffix, save_json=True)
    return 0


def write(a: dict, b: dict, args, total: float, suffix: str, save_json: bool) -> None:
    out = Path(args.out) if args.out else RESULTS / f"mnist_dimension{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure_estimators(a, out.parent / f"mnist_dimension_estimators{suffix}.png")
    figure_profiles(b, out.parent / f"mnist_layer_profiles{suffix}.png")
    out.write_text(report(a, b, args, total, suffix))
    if save_json:
        out.with_suffix(".json").write_text(json.dumps(jsonable({"dataset": a, "layers": b, "seconds": total,
                                                                 "args": vars(args)}), indent=1))
    log(f"wrote {out} ({total / 60:.1f} min)")


if __name__ == "__main__":
    sys.exit(main())
