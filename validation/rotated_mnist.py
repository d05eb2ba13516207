"""Rotated MNIST: a p4 group-convolutional network against a plain CNN of about the same size
(Cohen & Welling 2016, "Group Equivariant Convolutional Networks", ICML, section 8.1).

What the paper reports: on MNIST-rot (Larochelle et al. 2007: 12,000 training digits (10k train +
2k validation) and 50,000 test digits, each rotated by a random angle) the P4CNN reached
2.28% test error against 5.03% for the Z2CNN baseline of the same depth and about the same
number of parameters (their Table 1). Direction: the p4 network beats the plain CNN on rotated
digits.

Protocol here (differences stated in the results file):

1. Networks (C&W's Z2CNN / P4CNN layout): 7 convolution layers, 3x3 filters and a 4x4 last layer,
   batch normalisation and ReLU after every layer but the last, 2x2 max-pooling after layer 2,
   no padding (28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 6 -> 4 -> 1). P4CNN: a p4 lifting layer, five
   p4 group convolutions and a last p4 layer with 10 output channels, followed by a max over the
   4 rotations (group pooling), with 10 channels per layer (C&W divided the 20 channels of the
   Z2CNN by sqrt(4)); the plain CNN has the same layers as ``nn.Conv2d`` with its width chosen so
   the parameter counts are as close as possible (both counts printed). BatchNorm3d on the p4
   features pools its statistics over the group axis, so the P4CNN is exactly invariant to
   rotations by multiples of 90 degrees (every size here keeps the grid centred).
2. Training sets (both the first 12,000 MNIST training digits, MNIST-rot's training size):
   "upright" (the digits as they are: testing on rotated digits is then an out-of-distribution
   test, harder than C&W's) and "rotated" (each digit rotated once by an angle drawn uniformly in
   [0, 360) degrees, bilinear, fixed for the run: an MNIST-rot-like training set, C&W's setting).
   Adam (lr 1e-3), mini-batches of 128, cross-entropy, the same number of epochs for both models,
   one seed (validation/_models.py ``load_or_train``; weights cached in validation/cache/).
3. Test sets, from the 10,000 MNIST test digits: upright; each digit rotated by a multiple of 90
   degrees (1, 2 or 3 quarter turns drawn at random per digit; exact, ``torch.rot90``); each digit
   rotated by one random angle (uniform in [0, 360), bilinear rotation with
   ``affine_grid``/``grid_sample``, zeros outside); and a sweep of 24 angles (every 15 degrees,
   bilinear) on the first 500 test digits for the figure.
4. Invariance error of each model under the rotation of the same input: the mean relative change
   of the logit vector, ``|f(g x) - f(x)| / |f(x)|``, and the agreement of the predicted classes.

Run: ``python validation/rotated_mnist.py`` (about 12-15 minutes on 2 shared CPU cores, one torch
thread); ``--quick`` for a ~1 minute smoke run that writes nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import shapelens  # noqa: E402
from shapelens import data as sdata  # noqa: E402
from shapelens._checks import single_thread  # noqa: E402
from shapelens.symmetry.gconv import GroupConv2d, GroupPool, act_on_image  # noqa: E402

from _models import CACHE_DIR, load_or_train  # noqa: E402

PAPER = {"P4CNN": 2.28, "Z2CNN": 5.03}  # % test error on MNIST-rot, Cohen & Welling 2016, Table 1
SWEEP = np.arange(0, 360, 15)


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def p4cnn(width: int = 10, n_classes: int = 10) -> nn.Sequential:
    """C&W's P4CNN layout: p4 lifting + 5 p4 convolutions (3x3) + a 4x4 p4 layer, then a max
    over the rotations (exactly invariant to rotations by multiples of 90 degrees)."""
    layers: list[tuple[str, nn.Module]] = []
    c_in = 1
    for i in range(6):
        layers += [(f"conv{i + 1}", GroupConv2d(c_in, width, 3, group="p4", lifting=(i == 0))),
                   (f"bn{i + 1}", nn.BatchNorm3d(width)), (f"relu{i + 1}", nn.ReLU())]
        if i == 1:
            layers.append(("pool", nn.MaxPool3d((1, 2, 2))))
        c_in = width
    layers += [("conv7", GroupConv2d(width, n_classes, 4, group="p4")), ("rotpool", GroupPool("max")),
               ("flatten", nn.Flatten())]
    return nn.Sequential(OrderedDict(layers))


def z2cnn(width: int = 20, n_classes: int = 10) -> nn.Sequential:
    """C&W's Z2CNN layout: 6 plain 3x3 convolutions and a 4x4 last layer."""
    layers: list[tuple[str, nn.Module]] = []
    c_in = 1
    for i in range(6):
        layers += [(f"conv{i + 1}", nn.Conv2d(c_in, width, 3)), (f"bn{i + 1}", nn.BatchNorm2d(width)),
                   (f"relu{i + 1}", nn.ReLU())]
        if i == 1:
            layers.append(("pool", nn.MaxPool2d(2)))
        c_in = width
    layers += [("conv7", nn.Conv2d(width, n_classes, 4)), ("flatten", nn.Flatten())]
    return nn.Sequential(OrderedDict(layers))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_cnn_width(target: int) -> int:
    """The plain-CNN width whose parameter count is closest to ``target``."""
    return min(range(8, 48), key=lambda w: abs(n_params(z2cnn(w)) - target))


# --------------------------------------------------------------------------------------
# rotations
# --------------------------------------------------------------------------------------


def rotate_bilinear(X: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate images ``(n, C, H, W)`` about their centre by ``degrees`` (one angle per image, or
    one for all), counter-clockwise as displayed (the direction of ``torch.rot90``), by bilinear
    interpolation (``affine_grid`` + ``grid_sample``, ``align_corners=False``, zeros outside)."""
    n = X.shape[0]
    a = torch.as_tensor(np.broadcast_to(np.deg2rad(np.asarray(degrees, dtype=np.float64)), (n,)).copy())
    c, s = torch.cos(a), torch.sin(a)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    grid = F.affine_grid(theta.to(X.dtype), list(X.shape), align_corners=False)
    return F.grid_sample(X, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def logits(model: nn.Module, X: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model(X[i : i + batch]) for i in range(0, X.shape[0], batch)])


def invariance(l0: torch.Tensor, l1: torch.Tensor) -> tuple[float, float]:
    """Mean relative change of the logits and the agreement of the predictions."""
    rel = ((l1 - l0).norm(dim=1) / l0.norm(dim=1).clamp_min(1e-12)).mean()
    return float(rel), float((l1.argmax(1) == l0.argmax(1)).float().mean())


def err(l: torch.Tensor, y: torch.Tensor) -> float:
    return float((l.argmax(1) != y).float().mean())


def six_nine(l: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the errors that confuse a 6 with a 9 or a 9 with a 6 (digits related by a 180
    degree rotation, which a rotation-invariant network cannot tell apart)."""
    p = l.argmax(1)
    wrong = p != y
    sn = wrong & (((y == 6) & (p == 9)) | ((y == 9) & (p == 6)))
    return float(sn.sum() / wrong.sum().clamp_min(1))


# --------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------


def evaluate(model: nn.Module, tests: dict, y: torch.Tensor, sweep_X: torch.Tensor, sweep_y: torch.Tensor) -> dict:
    up = logits(model, tests["upright"])
    out = {"error_upright": err(up, y), "six_nine_share_upright": six_nine(up, y)}
    l90 = logits(model, tests["rot90k"])
    out["error_rot90"] = err(l90, y)
    out["inv_rel_rot90"], out["agree_rot90"] = invariance(up, l90)
    lr = logits(model, tests["random"])
    out["error_random"] = err(lr, y)
    out["six_nine_share_random"] = six_nine(lr, y)
    out["inv_rel_random"], out["agree_random"] = invariance(up, lr)
    out["sweep_error"] = [err(logits(model, rotate_bilinear(sweep_X, a)), sweep_y) for a in SWEEP]
    return out


def run(args) -> dict:
    t_start = time.time()
    n_train = 3000 if args.quick else args.n_train
    epochs = 2 if args.quick else args.epochs
    n_test = 500 if args.quick else None
    Xtr, ytr = sdata.mnist("train", limit=n_train, flatten=False)
    Xte, yte = sdata.mnist("test", limit=n_test, flatten=False)
    Xtr, ytr, Xte, yte = map(torch.from_numpy, (Xtr, ytr, Xte, yte))
    rng = np.random.default_rng(args.seed)
    train_angles = rng.uniform(0, 360, size=len(Xtr))
    test_angles = rng.uniform(0, 360, size=len(Xte))
    train_sets = {"upright": Xtr, "rotated": rotate_bilinear(Xtr, train_angles)}
    tests = {"upright": Xte, "random": rotate_bilinear(Xte, test_angles)}
    # every test digit rotated by one multiple of 90 degrees (1, 2 or 3 quarter turns, at random), exact
    quarter = rng.integers(1, 4, size=len(Xte))
    tests["rot90k"] = torch.stack([act_on_image(x, int(k), "p4") for x, k in zip(Xte, quarter)])
    # the bilinear rotation turns the same way as rot90 (and is exact at 90 degrees)
    assert torch.allclose(rotate_bilinear(Xte[:8], 90.0), act_on_image(Xte[:8], 1, "p4"), atol=1e-5)
    n_sweep = min(200 if args.quick else 500, len(Xte))
    sweep_X, sweep_y = Xte[:n_sweep], yte[:n_sweep]

    target = n_params(p4cnn(args.width))
    cnn_width = matched_cnn_width(target)
    builders = {"P4CNN": lambda: p4cnn(args.width), "CNN": lambda: z2cnn(cnn_width)}
    counts = {name: n_params(b()) for name, b in builders.items()}
    print(f"parameters: P4CNN (width {args.width}) {counts['P4CNN']:,}; plain CNN (width {cnn_width}) {counts['CNN']:,}")

    results: dict = {}
    for setting, Xs in train_sets.items():
        for name, build in builders.items():
            torch.manual_seed(args.seed)
            model = build()
            model, info = load_or_train(model, Xs, ytr, name=f"rotmnist-{name}-{setting}", epochs=epochs,
                                        batch_size=128, lr=1e-3, seed=args.seed, return_info=True)
            t0 = time.time()
            ev = evaluate(model, tests, yte, sweep_X, sweep_y)
            ev.update(train_seconds=info["train_seconds"], cached=info["cached"], eval_seconds=time.time() - t0)
            results[(setting, name)] = ev
            print(f"[{setting:8s}] {name:5s} error upright {100 * ev['error_upright']:.2f}%  90-multiples "
                  f"{100 * ev['error_rot90']:.2f}%  random {100 * ev['error_random']:.2f}%  | invariance 90: "
                  f"rel {ev['inv_rel_rot90']:.1e}, agree {100 * ev['agree_rot90']:.2f}%  random: rel "
                  f"{ev['inv_rel_random']:.2f}, agree {100 * ev['agree_random']:.2f}%  (train "
                  f"{ev['train_seconds']:.0f} s{' cached' if ev['cached'] else ''}, eval {ev['eval_seconds']:.0f} s)",
                  flush=True)
    meta = {"shapelens": shapelens.__version__, "torch": torch.__version__, "machine": platform.machine(),
            "seconds": time.time() - t_start, "n_train": len(Xtr), "n_test": len(Xte), "n_sweep": n_sweep,
            "epochs": epochs, "seed": args.seed, "params": counts, "p4_width": args.width, "cnn_width": cnn_width,
            "threads": torch.get_num_threads()}
    return {"meta": meta, "results": results}


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def plot(out: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    res = out["results"]
    settings = ["upright", "rotated"]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, setting in zip(axes, settings):
        for name, style in (("P4CNN", "-o"), ("CNN", "--s")):
            e = 100 * np.asarray(res[(setting, name)]["sweep_error"])
            ax.plot(SWEEP, e, style, ms=3, label=f"{name} ({out['meta']['params'][name]:,} params)")
        for a in (90, 180, 270):
            ax.axvline(a, color="0.85", lw=0.8, zorder=0)
        ax.set_xticks(range(0, 361, 45))
        ax.set_xlabel("rotation of the test digits (degrees, bilinear)")
        ax.set_title(f"trained on {setting} digits" + (" (MNIST-rot-like)" if setting == "rotated" else ""))
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_ylabel(f"test error (%), first {out['meta']['n_sweep']} MNIST test digits")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def write_markdown(out: dict, path: Path, fig_name: str) -> None:
    m, res = out["meta"], out["results"]
    L = ["# Rotated MNIST: p4 group convolutions vs a plain CNN (Cohen & Welling 2016)\n"]
    L.append(f"Produced by `python validation/rotated_mnist.py` (shapelens {m['shapelens']}, torch {m['torch']}, "
             f"{m['machine']}, {m['threads']} torch thread, total {m['seconds'] / 60:.1f} min on a shared 2-core machine; "
             "trained weights cached in validation/cache/). Every number below is generated by the script from this "
             "run.\n")
    L.append("## What the paper reports\n")
    L.append("Cohen & Welling 2016, Table 1: on MNIST-rot (12,000 training digits, each rotated by a random angle; "
             f"50,000 rotated test digits) the P4CNN has {PAPER['P4CNN']}% test error and the Z2CNN baseline "
             f"{PAPER['Z2CNN']}%, with about the same number of parameters (the P4CNN divides the Z2CNN's 20 channels "
             "by sqrt(4)). Direction: the p4 network is better on rotated digits.\n")
    L.append("## Setup\n")
    L.append(f"- Models: C&W's 7-layer layout (six 3x3 convolutions and a 4x4 one, batch norm + ReLU, 2x2 max-pool after "
             f"layer 2, no padding). **P4CNN**: p4 lifting + p4 group convolutions (`shapelens.symmetry.gconv."
             f"GroupConv2d`), {m['p4_width']} channels per layer, max over the 4 rotations at the end (`GroupPool`): "
             f"{m['params']['P4CNN']:,} parameters. **CNN**: the same with `nn.Conv2d`, width {m['cnn_width']} (chosen "
             f"for the closest parameter count): {m['params']['CNN']:,} parameters.")
    L.append(f"- Training: the first {m['n_train']:,} MNIST training digits (MNIST-rot's training-set size), either "
             "**upright** (as they are) or **rotated** (each digit rotated once by an angle uniform in [0, 360) degrees, "
             "bilinear; an MNIST-rot-like set, C&W's setting). Adam lr 1e-3, batch 128, cross-entropy, "
             f"{m['epochs']} epochs for every model, seed {m['seed']}, one run per cell.")
    L.append(f"- Test: the {m['n_test']:,} MNIST test digits upright; each rotated by 90, 180 or 270 degrees (drawn at random "
             "per digit) with `torch.rot90` (exact); each rotated by one random angle, uniform in [0, 360), with a "
             "bilinear rotation (`F.affine_grid` + `F.grid_sample`, zeros outside the image).")
    L.append("- Invariance error: mean over test digits of |f(g x) - f(x)| / |f(x)| for the logit vector f, and the "
             "share of digits whose predicted class is unchanged, for g = the 90-degree multiples and the random angles "
             "of the test sets above.\n")
    L.append("## Results\n")
    L.append("| trained on | model | params | error upright | error 90-multiples | error random angles | "
             "logit change 90-multiples | same prediction 90-multiples | logit change random angles | "
             "same prediction random angles | 6<->9 share of errors (upright / random) |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (setting, name), r in res.items():
        L.append(f"| {setting} | {name} | {m['params'][name]:,} | {100 * r['error_upright']:.2f}% | "
                 f"{100 * r['error_rot90']:.2f}% | {100 * r['error_random']:.2f}% | {r['inv_rel_rot90']:.1e} | "
                 f"{100 * r['agree_rot90']:.2f}% | {r['inv_rel_random']:.3f} | {100 * r['agree_random']:.2f}% | "
                 f"{100 * r['six_nine_share_upright']:.0f}% / {100 * r['six_nine_share_random']:.0f}% |")
    L.append(f"| C&W 2016 (MNIST-rot) | P4CNN / Z2CNN | about equal | | | {PAPER['P4CNN']}% / {PAPER['Z2CNN']}% "
             "| | | | | |")
    L.append("")
    L.append(f"![test error against the rotation angle]({fig_name})\n")
    L.append("## Reading the results against the paper\n")
    rot_p4, rot_cnn = res[("rotated", "P4CNN")], res[("rotated", "CNN")]
    up_p4, up_cnn = res[("upright", "P4CNN")], res[("upright", "CNN")]
    same = rot_p4["error_random"] < rot_cnn["error_random"]
    sw = np.asarray(up_p4["sweep_error"]).reshape(4, -1)  # the sweep cut into quarter turns
    peaks = ", ".join(str(int(90 * q + SWEEP[np.argmax(row)])) for q, row in enumerate(sw))
    L.append(f"- **C&W's setting (trained and tested on randomly rotated digits)**: P4CNN {100 * rot_p4['error_random']:.2f}% "
             f"vs CNN {100 * rot_cnn['error_random']:.2f}% test error "
             + (f"(ratio {rot_cnn['error_random'] / max(rot_p4['error_random'], 1e-9):.2f}; C&W: "
                f"{PAPER['Z2CNN'] / PAPER['P4CNN']:.2f}): the p4 network is better, the paper's direction."
                if same else "- the p4 network is not better here, unlike the paper.")
             + f" Our absolute errors differ from theirs: {m['epochs']} epochs on a CPU budget, one seed, MNIST test "
             "digits rotated by us instead of their 50,000 MNIST-rot test digits.")
    L.append(f"- **Trained upright, tested rotated (out of distribution)**: by 90-degree multiples the P4CNN keeps its "
             f"upright error ({100 * up_p4['error_upright']:.2f}% upright, {100 * up_p4['error_rot90']:.2f}% rotated) "
             f"while the CNN goes from {100 * up_cnn['error_upright']:.2f}% to {100 * up_cnn['error_rot90']:.2f}%; by "
             f"random angles the P4CNN has {100 * up_p4['error_random']:.2f}% and the CNN {100 * up_cnn['error_random']:.2f}%: "
             "the p4 network's invariance is exact only at the four grid rotations, in between it must interpolate "
             f"(the figure: in each quarter turn of the sweep its error is largest at {peaks} degrees).")
    L.append(f"- **Invariance**: under 90-degree rotations the P4CNN's logits change by {up_p4['inv_rel_rot90']:.1e} "
             f"(trained upright) and {rot_p4['inv_rel_rot90']:.1e} (trained rotated), float32 rounding, with "
             f"{100 * up_p4['agree_rot90']:.2f}% / {100 * rot_p4['agree_rot90']:.2f}% unchanged predictions: invariant by "
             f"construction. The CNN's change by {up_cnn['inv_rel_rot90']:.2f} / {rot_cnn['inv_rel_rot90']:.2f} "
             f"({100 * up_cnn['agree_rot90']:.1f}% / {100 * rot_cnn['agree_rot90']:.1f}% unchanged): augmentation makes it "
             "more invariant but not exactly. Under random angles neither is invariant (P4CNN "
             f"{up_p4['inv_rel_random']:.2f} / {rot_p4['inv_rel_random']:.2f}, CNN {up_cnn['inv_rel_random']:.2f} / "
             f"{rot_cnn['inv_rel_random']:.2f}).")
    L.append(f"- **Price of exact invariance on upright digits**: a network invariant to 180-degree rotations cannot tell "
             f"a 6 from a rotated 9; 6<->9 confusions are {100 * up_p4['six_nine_share_upright']:.0f}% of the P4CNN's "
             f"upright errors (trained upright) against {100 * up_cnn['six_nine_share_upright']:.0f}% of the CNN's. "
             "(On MNIST-rot every digit is rotated, so the ambiguity is in the data for both models.)")
    L.append("")
    L.append("Differences from the paper's protocol: MNIST digits rotated by us (bilinear) instead of the MNIST-rot "
             "files; the 10,000 MNIST test digits instead of 50,000; a short fixed training budget with Adam and no "
             "dropout or weight decay instead of their tuned training; one seed; widths 10 (P4CNN) and the parameter-"
             "matched plain width instead of exactly 20. The exact 90-degree invariance of the P4CNN holds for these "
             "sizes because every layer keeps a centred grid (stride 1, 2x2 pooling of an even 24x24 map; "
             "`GroupConv2d.is_exact`).\n")
    path.write_text("\n".join(L))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3000 training digits, 2 epochs, 500 test digits; writes nothing")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--width", type=int, default=10, help="channels per p4 layer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with single_thread(True):
        out = run(args)
    if args.quick:
        print(f"quick run done in {out['meta']['seconds']:.0f} s (nothing written)")
        return
    RESULTS.mkdir(exist_ok=True)
    fig_name = "rotated_mnist.png"
    plot(out, RESULTS / fig_name)
    write_markdown(out, RESULTS / "rotated_mnist.md", fig_name)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    raw = {"meta": out["meta"], "results": {f"{s}/{n}": r for (s, n), r in out["results"].items()}}
    (CACHE_DIR / "rotated_mnist.json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {RESULTS / 'rotated_mnist.md'} and {RESULTS / fig_name} in {out['meta']['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
