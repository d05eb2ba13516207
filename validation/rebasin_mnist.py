"""Reproduce Ainsworth, Hayase & Srinivasa (2023): after permutation alignment, two MNIST MLPs
trained from different seeds are linearly mode connected.

Ainsworth, Hayase and Srinivasa, "Git Re-Basin: Merging Models modulo Permutation Symmetries",
ICLR 2023. Their claims checked here: interpolating the weights of two independently trained
networks naively crosses a loss barrier; after permuting one network's hidden units to match the
other (weight matching, their Algorithm 1, or activation matching) the barrier is (nearly) zero
for an MNIST MLP with three hidden layers of 512 units; wider models are better connected.

Protocol:

1. MNIST from ``shapelens.data.mnist`` (60,000 training / 10,000 test images, flattened).
2. MLPs 784-w-w-w-10 with ReLU (their MNIST model for w = 512), for a width sweep
   w in {32, 64, 128, 256, 512}; two networks per width from different seeds (initialisation and
   data order), trained with Adam (lr 1e-3, batches of 128, cross-entropy) for ``--epochs``
   epochs (their runs: 100 epochs, batches of 500; the budget here is ~15 minutes on 2 shared
   cores). Weights are cached in validation/cache/ (safetensors).
3. ``shapelens.symmetry.weights.align(a, b, "weights")`` (no data) and
   ``align(a, b, "activations", data=...)`` (inner products E[a_i b_j] of the post-ReLU
   activations on 10,000 training images, as in the authors' code).
4. ``interpolation_barrier`` along theta(alpha) = (1 - alpha) theta_a + alpha theta_b for the
   naive pair and both aligned pairs: cross-entropy and accuracy on the same 10,000 training
   images and on the 10,000 test images (25 alphas at w = 512, 11 in the sweep).

Run: ``python validation/rebasin_mnist.py`` (about 10-15 minutes on 2 shared CPU cores; trained
weights cached); ``--quick`` for a one-width smoke run (about a minute) that writes nothing.
"""

from __future__ import annotations

import argparse
import os
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
sys.path.insert(0, str(HERE))

import shapelens  # noqa: E402
from shapelens import data as sdata  # noqa: E402
from shapelens._checks import single_thread  # noqa: E402
from shapelens.symmetry.weights import align, interpolation_barrier  # noqa: E402

from _models import accuracy, load_or_train  # noqa: E402

WIDTHS = (32, 64, 128, 256, 512)
MAIN = 512
SEEDS = (0, 1)
N_MATCH = 10_000  # training images for activation matching and for the training-set path


def mlp(width: int) -> nn.Sequential:
    """784-w-w-w-10 ReLU MLP with named layers (fc1, fc2, fc3, out)."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(784, width)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(width, width)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(width, width)), ("relu3", nn.ReLU()),
        ("out", nn.Linear(width, 10)),
    ]))


def trained(width: int, seed: int, X, y, epochs: int, quick: bool):
    torch.manual_seed(seed)
    model = mlp(width)
    name = f"rebasin-mlp{width}-s{seed}" + ("-quick" if quick else "")
    model, info = load_or_train(model, X, y, name=name, epochs=epochs, batch_size=128, lr=1e-3, seed=seed,
                                return_info=True)
    return model.eval(), info


def run_width(width: int, Xtr, ytr, Xte, yte, Xm, ym, epochs: int, alphas, quick: bool) -> dict:
    t0 = time.time()
    models, infos = [], []
    for s in SEEDS:
        m, info = trained(width, s, Xtr, ytr, epochs, quick)
        models.append(m)
        infos.append(info)
    a, b = models
    out = {"width": width, "params": sum(p.numel() for p in a.parameters()),
           "test_acc": [accuracy(m, Xte, yte) for m in models],
           "train_seconds": [i["train_seconds"] for i in infos], "cached": [i["cached"] for i in infos]}
    t = time.time()
    wm = align(a, b, "weights", seed=0)
    out["wm_seconds"] = time.time() - t
    t = time.time()
    am = align(a, b, "activations", data=Xm, batch_size=1000)
    out["am_seconds"] = time.time() - t
    with torch.no_grad():  # the aligned models compute model B's function
        ref = b(Xte[:2000])
        out["function_change"] = max(float((wm.model(Xte[:2000]) - ref).abs().max()),
                                     float((am.model(Xte[:2000]) - ref).abs().max()))
    out["wm_iterations"] = wm.iterations
    out["distance"] = {"naive": wm.distance_before, "weights": wm.distance_after, "activations": am.distance_after}
    out["moved"] = {"weights": float(np.mean(list(wm.moved.values()))),
                    "activations": float(np.mean(list(am.moved.values())))}
    out["agree"] = float(np.mean([np.mean(wm.perms[g] == am.perms[g]) for g in wm.perms]))
    out["paths"] = {}
    for label, other in (("naive", b), ("weights", wm.model), ("activations", am.model)):
        out["paths"][label] = {
            split: interpolation_barrier(a, other, (Xs, ys), alphas, batch_size=2000)
            for split, (Xs, ys) in (("train", (Xm, ym)), ("test", (Xte, yte)))
        }
    out["seconds"] = time.time() - t0
    p = out["paths"]
    print(f"[w={width}] test acc {out['test_acc'][0]:.4f}/{out['test_acc'][1]:.4f}; test loss barrier naive "
          f"{p['naive']['test'].loss_barrier:.3f}, weights {p['weights']['test'].loss_barrier:.3f}, activations "
          f"{p['activations']['test'].loss_barrier:.3f} ({out['seconds']:.0f} s)", flush=True)
    return out


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def figure_paths(res: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    styles = {"naive": ("--", "naive"), "weights": ("-", "weight matching"), "activations": (":", "activation matching")}
    colors = {"train": "C0", "test": "C1"}
    for metric, ax in zip(("loss", "accuracy"), axes):
        for label, (ls, name) in styles.items():
            for split in ("train", "test"):
                r = res["paths"][label][split]
                v = r.loss if metric == "loss" else r.accuracy
                ax.plot(r.alphas, v, ls=ls, color=colors[split], lw=1.8, label=f"{split}, {name}")
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xticklabels(["model A", "0.25", "0.5", "0.75", "model B"])
        ax.set_xlabel(r"$\alpha$ in $(1-\alpha)\,\theta_A + \alpha\,\pi(\theta_B)$")
        ax.set_ylabel("cross-entropy" if metric == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"MNIST MLP 784-{res['width']}x3-10: linear interpolation between two seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def figure_width(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    w = [r["width"] for r in results]
    for label, mk in (("naive", "o--"), ("weights", "s-"), ("activations", "^:")):
        for split, c in (("train", "C0"), ("test", "C1")):
            ax.plot(w, [r["paths"][label][split].loss_barrier for r in results], mk, color=c, label=f"{split}, {label}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(w)
    ax.set_xticklabels([str(v) for v in w])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("hidden width (3 hidden layers)")
    ax.set_ylabel("loss barrier (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Loss barrier vs width, MNIST MLP", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


PAPER = (
    "Ainsworth, Hayase & Srinivasa (2023) report, for an MLP with three hidden layers of 512 units trained on "
    "MNIST from two seeds: naive linear interpolation crosses a clear loss barrier, while after weight matching, "
    "activation matching or their straight-through estimator the loss along the path stays at the endpoints' "
    "level (barrier near zero, train and test; their interpolation figure). They also find that wider models "
    "are better connected after alignment (their width ablations) and that the aligned barrier shrinks with "
    "training time. The paper's text could not be retrieved in this environment, so its qualitative findings "
    "are compared, not digits read off its figures."
)


def _at_half(r) -> float:
    return float(np.interp(0.5, r.alphas, r.loss))


def write_markdown(results: list[dict], meta: dict, path: Path) -> None:
    L = ["# Git Re-Basin on MNIST MLPs (Ainsworth, Hayase & Srinivasa 2023)\n"]
    L.append(f"Produced by `python validation/rebasin_mnist.py` (shapelens {meta['shapelens']}, torch {meta['torch']}, "
             f"{meta['machine']}, total {meta['seconds'] / 60:.1f} min on a shared 2-core machine, one torch thread; "
             f"trained weights cached in validation/cache/, training all {2 * len(results)} networks took "
             f"{sum(v or 0 for r in results for v in r['train_seconds']) / 60:.1f} min in the run that produced them). "
             "Every number below comes from this run.\n")
    L.append("## What the paper reports\n")
    L.append(PAPER + "\n")
    L.append("## Setup\n")
    L.append(f"- MNIST via `shapelens.data.mnist` (60,000 training images for training, flattened, pixels in [0, 1]). "
             f"MLPs 784-w-w-w-10, ReLU, PyTorch default initialisation; two networks per width (seeds {SEEDS[0]} and "
             f"{SEEDS[1]}: initialisation and data order), Adam lr 1e-3, batches of 128, {meta['epochs']} epochs "
             "(the authors: 100 epochs, batches of 500; shorter here to fit the time budget).")
    L.append("- Alignment of model B to model A with `shapelens.symmetry.weights.align`: weight matching (Algorithm 1: "
             "coordinate descent over the three hidden-layer permutations in random order, one linear assignment per "
             "step, until no step improves) and activation matching (`statistic=\"inner\"`: E[a_i b_j] of the "
             f"post-ReLU activations on {N_MATCH:,} training images, one linear assignment per layer). The permutation "
             "structure is parsed from the model by `torch.fx`, not written by hand.")
    L.append(f"- Path: `interpolation_barrier` at {meta['alphas_main']} alphas (w = {MAIN}) / {meta['alphas_sweep']} "
             f"alphas (other widths) in [0, 1]; cross-entropy and accuracy on the same {N_MATCH:,} training images "
             "('train') and on the 10,000 test images ('test').")
    L.append("- Barrier: `loss_barrier` = max over alpha of L(theta(alpha)) - ((1 - alpha) L(theta_A) + alpha L(theta_B)) "
             "(height above the straight line between the endpoint losses); `frankle` = max L(theta(alpha)) - "
             "(L(theta_A) + L(theta_B)) / 2 (Frankle et al. 2020's form). The error barrier is the same on "
             "1 - accuracy, in percentage points.\n")
    L.append("## Results\n")
    L.append("| width | params | test acc. A / B | split | loss barrier naive | ... weight matching | ... activation "
             "matching | Frankle form (naive / WM / AM) | error barrier, pp (naive / WM / AM) | endpoint loss A / B | "
             "loss at alpha = 0.5 (naive / WM / AM) |")
    L.append("| ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |")
    for r in results:
        for split in ("train", "test"):
            p = {k: r["paths"][k][split] for k in ("naive", "weights", "activations")}
            main = f"**{r['width']}**" if r["width"] == MAIN else str(r["width"])
            L.append(
                f"| {main} | {r['params']:,} | {100 * r['test_acc'][0]:.2f}% / {100 * r['test_acc'][1]:.2f}% | {split} | "
                f"{p['naive'].loss_barrier:.4f} | {p['weights'].loss_barrier:.4f} | {p['activations'].loss_barrier:.4f} | "
                f"{p['naive'].loss_barrier_frankle:.4f} / {p['weights'].loss_barrier_frankle:.4f} / "
                f"{p['activations'].loss_barrier_frankle:.4f} | {100 * p['naive'].error_barrier:.2f} / "
                f"{100 * p['weights'].error_barrier:.2f} / {100 * p['activations'].error_barrier:.2f} | "
                f"{p['naive'].loss[0]:.4f} / {p['naive'].loss[-1]:.4f} | "
                + " / ".join(f"{_at_half(p[k]):.4f}" for k in ("naive", "weights", "activations")) + " |")
    L.append("")
    L.append("The barrier is >= 0 by construction (alpha = 0 and 1 give 0): 0.0000 means the whole path lies on or "
             "below the straight line between the endpoint losses.")
    L.append("")
    L.append("| width | training time A / B | weight distance naive -> WM / AM | WM passes | WM time | AM time | "
             "units moved (WM / AM) | WM and AM agree on | max logit change of aligned B (must be ~0) |")
    L.append("| ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        d = r["distance"]
        tt = " / ".join("%.0f s" % v if v is not None else "?" for v in r["train_seconds"])
        L.append(f"| {r['width']} | {tt} | {d['naive']:.1f} -> {d['weights']:.1f} / {d['activations']:.1f} | {r['wm_iterations']} | "
                 f"{r['wm_seconds']:.2f} s | {r['am_seconds']:.2f} s | {100 * r['moved']['weights']:.0f}% / "
                 f"{100 * r['moved']['activations']:.0f}% | {100 * r['agree']:.0f}% of units | {r['function_change']:.1e} |")
    L.append("")
    L.append("Training time: seconds for one network on one thread of the shared machine, from the run that produced "
             "the cached weights. WM / AM: weight / activation matching.\n")
    L.append(f"![loss and accuracy along the path, w = {MAIN}](rebasin_mnist.png)\n")
    L.append("![loss barrier vs width](rebasin_mnist_width.png)\n")
    L.append("## Reading the results against the paper\n")
    main = next(r for r in results if r["width"] == MAIN) if any(r["width"] == MAIN for r in results) else results[-1]
    for split in ("train", "test"):
        n, w, a = (main["paths"][k][split] for k in ("naive", "weights", "activations"))
        L.append(f"- **w = {main['width']}, {split}**: naive interpolation rises {n.loss_barrier:.3f} above the endpoints' "
                 f"line (accuracy at alpha = 0.5: {100 * n.accuracy[len(n.alphas) // 2]:.1f}%); after weight matching "
                 f"{w.loss_barrier:.4f} ({100 * w.accuracy[len(w.alphas) // 2]:.1f}%), after activation matching "
                 f"{a.loss_barrier:.4f} ({100 * a.accuracy[len(a.alphas) // 2]:.1f}%). Alignment removes "
                 f"{100 * (1 - w.loss_barrier / n.loss_barrier):.0f}% (weights) and "
                 f"{100 * (1 - a.loss_barrier / n.loss_barrier):.0f}% (activations) of the naive barrier.")
    test_w = [r["paths"]["weights"]["test"].loss_barrier for r in results]
    test_a = [r["paths"]["activations"]["test"].loss_barrier for r in results]
    test_n = [r["paths"]["naive"]["test"].loss_barrier for r in results]
    if len(results) > 1:
        mono = lambda v: all(x >= y - 1e-3 for x, y in zip(v, v[1:]))  # noqa: E731
        L.append(f"- **Width**: test loss barrier after weight matching {', '.join(f'{v:.4f}' for v in test_w)} and after "
                 f"activation matching {', '.join(f'{v:.4f}' for v in test_a)} for widths "
                 f"{', '.join(str(r['width']) for r in results)} (naive: {', '.join(f'{v:.3f}' for v in test_n)}); "
                 + ("the aligned barrier falls with width, as the paper reports."
                    if mono(test_w) and mono(test_a) else
                    "the aligned barrier does not fall monotonically with width in this run.")
                 + f" The aligned barrier at w = {results[-1]['width']} is "
                 f"{100 * test_w[-1] / max(test_n[-1], 1e-12):.1f}% (WM) / {100 * test_a[-1] / max(test_n[-1], 1e-12):.1f}% (AM) "
                 "of the naive one."
                 + ("" if mono(test_n) else " The naive barrier does not fall steadily with width."))
    L.append(f"- Differences from the paper's protocol: {meta['epochs']} epochs instead of 100 (the paper finds the aligned "
             "barrier shrinks with training time, so longer training is expected to lower it further); batches of 128 "
             "instead of 500; PyTorch's default initialisation instead of Flax's; activation statistics on 10,000 "
             "rather than all 60,000 training images; barriers measured on 10,000 training images.")
    L.append("")
    path.write_text("\n".join(L) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per network")
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), help="hidden widths to sweep")
    ap.add_argument("--quick", action="store_true", help="one width (64), 1 epoch on 10k images, nothing written")
    args = ap.parse_args()
    t0 = time.time()
    Xtr, ytr = sdata.mnist("train")
    Xte, yte = sdata.mnist("test")
    Xtr, ytr, Xte, yte = (torch.from_numpy(v) for v in (Xtr, ytr, Xte, yte))
    rng = np.random.default_rng(0)
    idx = torch.from_numpy(np.sort(rng.choice(len(Xtr), N_MATCH, replace=False)))
    Xm, ym = Xtr[idx], ytr[idx]
    widths, epochs = sorted(args.widths), args.epochs
    alphas_main, alphas_sweep = np.linspace(0, 1, 25), np.linspace(0, 1, 11)
    if args.quick:
        widths, epochs = [64], 1
        Xtr, ytr = Xtr[:10_000], ytr[:10_000]
        Xte, yte = Xte[:2000], yte[:2000]
        Xm, ym = Xm[:2000], ym[:2000]
        alphas_main = alphas_sweep = np.linspace(0, 1, 5)
    results = []
    with single_thread():
        for w in widths:
            results.append(run_width(w, Xtr, ytr, Xte, yte, Xm, ym, epochs,
                                     alphas_main if w == MAIN else alphas_sweep, args.quick))
    secs = time.time() - t0
    print(f"total {secs / 60:.1f} min")
    if args.quick:
        return
    meta = {"shapelens": shapelens.__version__, "torch": torch.__version__, "machine": platform.machine(),
            "seconds": secs, "epochs": epochs, "alphas_main": len(alphas_main), "alphas_sweep": len(alphas_sweep)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    main_res = next((r for r in results if r["width"] == MAIN), results[-1])
    figure_paths(main_res, RESULTS / "rebasin_mnist.png")
    if len(results) > 1:
        figure_width(results, RESULTS / "rebasin_mnist_width.png")
    write_markdown(results, meta, RESULTS / "rebasin_mnist.md")
    print(f"wrote {RESULTS / 'rebasin_mnist.md'}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
