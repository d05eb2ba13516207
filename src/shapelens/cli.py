"""The ``shapelens`` command line (Typer).

Every subcommand is a thin layer over a library call:

* ``shapelens dimension FILE`` -> :func:`shapelens.io.load_points` +
  :func:`shapelens.dimension.compare_estimators` (estimators of :mod:`shapelens.dimension`);
* ``shapelens curvature`` -> :func:`shapelens.io.load_model` +
  :func:`shapelens.curvature.curvature_summary` (Lanczos, Hutch++, SLQ);
* ``shapelens topology FILE`` -> :func:`shapelens.io.load_points` +
  :func:`shapelens.topology.persistence` (MST engine for H0, ripser.py above);
* ``shapelens structure`` -> :meth:`shapelens.structure.Diagram.check` and
  :func:`shapelens.structure.draw_diagram` on a model built from a diagram;
* ``shapelens detect-text FILE`` -> :class:`shapelens.detect.TextPHDDetector` (pretrained);
* ``shapelens atlas --demo`` -> :func:`shapelens.atlas.demo.run_demo`.

Bad input (a missing or unreadable file, an unknown estimator, data an estimator cannot
use) ends with exit status 2 and one line on stderr saying what to do, never a traceback.
"""

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, List, NoReturn, Optional

import numpy as np
import typer

from . import __version__

app = typer.Typer(
    name="shapelens",
    help="Measure the shape of neural networks and their data: intrinsic dimension, layer profiles, the atlas report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: exit status for bad input (file, estimator name, data), as for usage errors
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``shapelens: error: ...`` on one line to stderr and exit with ``code``."""
    typer.echo(f"shapelens: error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _echo_warnings(caught: List[warnings.WarningMessage]) -> None:
    seen = set()
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            continue  # library internals (e.g. torch.func's first use scripts a decomposition), not about the data
        text = _one_line(w.message)
        if text not in seen:
            seen.add(text)
            typer.echo(f"shapelens: warning: {text}", err=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shapelens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the shapelens version and exit."
    ),
) -> None:
    """shapelens: measure the shape, symmetry and structure of neural networks."""


# --------------------------------------------------------------------------- dimension

def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run an analysis with its warnings echoed once and bad input turned into a one-line exit."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = fn()
        except (ValueError, TypeError) as exc:
            _fail(str(exc))
    _echo_warnings(caught)
    return res, time.perf_counter() - t0


def _save_plot(res: Any, plot: Optional[Path]) -> None:
    if plot is not None:
        ax = res.plot()
        ax.figure.tight_layout()
        ax.figure.savefig(plot, dpi=120)


def _echo_model_json(label: str, seed: int, elapsed: float, res: Any) -> None:
    from ._results import jsonable

    doc = {"model": label, "seed": seed, "time_s": elapsed, "shapelens_version": __version__, **res.to_dict()}
    typer.echo(json.dumps(jsonable(doc), indent=2))


#: the options every model-taking subcommand shares (typer reads them as metadata, so one object serves all)
_MODEL_OPTION = typer.Option(
    None, "--model", help="'package.module:factory' or 'file.py:factory' building your nn.Module.", show_default=False
)
_WEIGHTS_OPTION = typer.Option(
    None, "--weights", help="Its weights: .safetensors, or .pt/.pth state dict (read without executing code).",
    show_default=False,
)


def _load_model_and_arrays(model: str, weights: Optional[Path], data: Optional[Path], *keys: Optional[str]):
    """The user's model (built by its factory, weights read without executing code) and arrays of --data."""
    import torch

    from .io import LoadError, load_model, load_points

    if data is None:
        _fail("--model needs --data FILE holding the inputs.")
    try:
        net = load_model(model, weights)
        arrays = [torch.from_numpy(np.ascontiguousarray(load_points(data, key=k))) for k in keys]
    except (FileNotFoundError, LoadError) as exc:
        _fail(str(exc))
    return net, arrays


@app.command()
def dimension(
    file: Path = typer.Argument(
        ...,
        help="Point cloud of shape (N, D): .npy, .npz, .pt/.pth, .safetensors, .csv, .tsv or .txt.",
        show_default=False,
    ),
    method: Optional[List[str]] = typer.Option(
        None,
        "--method",
        "-m",
        help="Estimator(s): twonn, mle, gride, lpca, corr, or 'all'. Repeat the option or separate with commas. "
        "Default: twonn, mle, gride, lpca, corr.",
        show_default=False,
    ),
    k: Optional[int] = typer.Option(
        None,
        "--k",
        "-k",
        min=2,
        help="Neighbours for the k-based estimators (mle, lpca). Default: each estimator's own (mle 20, lpca 50).",
        show_default=False,
    ),
    key: Optional[str] = typer.Option(
        None, "--key", help="Array to read from a file holding several (.npz, .pt dict, .safetensors).", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1, ... or auto (CUDA when available)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the estimators that sample (lpca centres, corr subsets)."),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Allow pickled .npy/.npz/.pt content. Unpickling can execute arbitrary code: only for files you trust.",
    ),
) -> None:
    """Estimate the intrinsic dimension of the point cloud in FILE with one or several estimators.

    Prints a table (method, dimension, uncertainty, N, D, time) or, with --json, a JSON object.
    """
    from ._checks import as_points, resolve_device
    from .dimension.compare import compare_estimators, resolve_methods
    from .io import LoadError, load_points

    try:
        methods = resolve_methods(method)
    except ValueError as exc:
        _fail(str(exc))
    try:
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        msg = str(exc) if isinstance(exc, ValueError) else f"unknown device {device!r}"
        _fail(f"{msg}; use --device cpu, cuda or auto.")

    try:
        X = load_points(file, key=key, allow_pickle=allow_pickle)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except LoadError as exc:
        _fail(str(exc))
    label = f"{file}" + (f" [{key}]" if key else "")
    try:
        Xt = as_points(X, name=label)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            res = compare_estimators(Xt, methods, k=k, seed=seed, device=str(dev), on_error="record")
        except ValueError as exc:
            _fail(str(exc))
        total = time.perf_counter() - t0
    _echo_warnings(caught)

    if as_json:
        from ._results import jsonable

        doc = {
            "file": str(file),
            "key": key,
            "n_samples": res.n_samples,
            "ambient_dim": res.ambient_dim,
            "device": str(dev),
            "seed": seed,
            "shapelens_version": __version__,
            "results": [
                {
                    "method": res.methods[i],
                    "estimator": res.estimators[i],
                    "params": res.params[i],
                    "dimension": float(res.dimensions[i]),
                    "dimension_std": float(res.dimension_std[i]),
                    "n_points": int(res.n_points[i]),
                    "ambient_dim": res.ambient_dim,
                    "time_s": float(res.times[i]),
                    "error": res.errors[i] if res.errors else None,
                }
                for i in range(len(res.methods))
            ],
            "total_time_s": total,
        }
        typer.echo(json.dumps(jsonable(doc), indent=2))
    else:
        header = ("method", "dimension", "uncertainty", "N", "D", "time")
        rows = []
        for i in range(len(res.methods)):
            failed = bool(res.errors and res.errors[i])
            std = float(res.dimension_std[i])
            rows.append(
                (
                    res.label(i),
                    "failed" if failed else _fmt(float(res.dimensions[i])),
                    "" if failed else ("-" if std != std else f"± {std:.2f}"),
                    str(res.n_samples if failed else int(res.n_points[i])),
                    str(res.ambient_dim),
                    f"{res.times[i]:.2f} s",
                )
            )
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
        typer.echo(f"{label}: {res.n_samples} points in {res.ambient_dim} dimensions (device {dev})")

        def line(cells):
            return "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

        typer.echo(line(header))
        typer.echo("  ".join("-" * w for w in widths))
        for r in rows:
            typer.echo(line(r))

    failed = [(m, e) for m, e in zip(res.methods, res.errors or ()) if e]
    if failed:
        ok = [m for m, e in zip(res.methods, res.errors) if not e]
        hint = f" (or leave it out: --method {','.join(ok)})" if ok else ""
        for m, e in failed:
            typer.echo(f"shapelens: error: {m}: {_one_line(e).rstrip('.')}{hint}.", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)


# --------------------------------------------------------------------------- atlas

@app.command()
def atlas(
    demo: bool = typer.Option(
        False, "--demo", help="Train a small MLP on scikit-learn's digits (seconds, CPU) and write its atlas."
    ),
    out: Path = typer.Option(Path("atlas"), "--out", "-o", help="Folder to write index.html, atlas.json and figures/ into."),
    seed: int = typer.Option(0, "--seed", help="Seed for the data split, initialisation and batch order."),
) -> None:
    """Write the atlas: a self-contained index.html (figures embedded) and atlas.json."""
    if not demo:
        _fail(
            "only the built-in demo atlas is supported in this version: run `shapelens atlas --demo` "
            "(atlases of your own model and data will come with a later version)."
        )
    from .atlas.demo import run_demo

    typer.echo("training a 64-128-64-32-10 MLP on scikit-learn's digits and measuring its layers ...", err=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            paths = run_demo(out, seed)
        except OSError as exc:
            _fail(f"could not write the atlas into {out} ({exc}); pass a writable folder with --out.")
    _echo_warnings(caught)
    elapsed = time.perf_counter() - t0
    meta = paths.meta
    typer.echo(f"wrote {paths.html}")
    typer.echo(f"      {paths.json}")
    for fig in paths.figures:
        typer.echo(f"      {fig}")
    acc = ""
    if "train_accuracy" in meta and "test_accuracy" in meta:
        acc = f"train accuracy {100 * meta['train_accuracy']:.1f}%, test accuracy {100 * meta['test_accuracy']:.1f}%, "
    typer.echo(f"model: {acc}seed {seed}, {elapsed:.1f} s in all")
    for sid, title, summary in paths.summaries:
        typer.echo(f"[{sid}] {title}: {summary}")
    typer.echo(f"open {paths.html} in a browser.")

# --------------------------------------------------------------------------- curvature

_LOSSES = ("cross-entropy", "mse")


@app.command()
def curvature(
    demo: bool = typer.Option(False, "--demo", help="Train the demo MLP on scikit-learn's digits (seconds) and measure it."),
    model: Optional[str] = _MODEL_OPTION,
    weights: Optional[Path] = _WEIGHTS_OPTION,
    data: Optional[Path] = typer.Option(
        None, "--data", help="Inputs and targets: .npz/.pt/.safetensors holding both (see --x-key/--y-key).",
        show_default=False,
    ),
    x_key: str = typer.Option("x", "--x-key", help="Name of the inputs in --data."),
    y_key: str = typer.Option("y", "--y-key", help="Name of the targets in --data."),
    loss: str = typer.Option("cross-entropy", "--loss", help="cross-entropy (integer class targets) or mse."),
    operator: str = typer.Option("hessian", "--operator", help="hessian, ggn or fisher (empirical Fisher)."),
    k: int = typer.Option(5, "--k", "-k", min=1, help="Number of top eigenvalues."),
    trace_samples: int = typer.Option(60, "--trace-samples", min=0, help="Hutch++ products for the trace (0: skip)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Also the top eigenvalue of each layer's block."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N examples.", show_default=False),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Examples per forward pass."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the spectral density figure (PNG) here.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the text."),
    seed: int = typer.Option(0, "--seed", help="Seed for Lanczos start vectors, Hutch++ and SLQ (and the demo)."),
) -> None:
    """Curvature of a model's loss at its weights: top eigenvalues (Lanczos), trace (Hutch++),
    spectral density (SLQ) and, with --per-layer, each layer's top eigenvalue.

    Either --demo, or --model with --data (and usually --weights).
    """
    from torch import nn

    from .curvature.operators import OPERATORS
    from .curvature.summary import curvature_summary

    if operator not in OPERATORS:
        _fail(f"unknown operator {operator!r}; use --operator hessian, ggn or fisher.")
    if loss not in _LOSSES:
        _fail(f"unknown loss {loss!r}; use --loss cross-entropy or --loss mse.")
    if demo == (model is not None):
        _fail("pass either --demo or --model (with --data); see shapelens curvature --help.")
    if demo:
        from .atlas.demo import demo_model

        net, X, y = demo_model(seed)
        label = "demo MLP 64-128-64-32-10 on scikit-learn digits"
    else:
        net, (X, y) = _load_model_and_arrays(model, weights, data, x_key, y_key)
        if X.is_floating_point():
            X = X.to(next(net.parameters()).dtype)
        label = f"{model} on {data}"
    if limit is not None:
        X, y = X[:limit], y[:limit]
    if loss == "cross-entropy":
        if y.is_floating_point():
            _fail("cross-entropy needs integer class targets; pass --loss mse for real-valued targets.")
        loss_fn = nn.CrossEntropyLoss()
        y = y.long()
    else:
        loss_fn = nn.MSELoss()
        y = y.to(next(net.parameters()).dtype)
    batches = [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    res, elapsed = _timed(lambda: curvature_summary(net, loss_fn, batches, operator=operator, k=k,
                                                    trace_samples=trace_samples, per_layer=per_layer, seed=seed))
    _save_plot(res, plot)
    if as_json:
        _echo_model_json(label, seed, elapsed, res)
        return
    typer.echo(f"{label}: {res.n_params:,} parameters, {res.n_samples:,} examples, loss {res.loss:.4g}")
    typer.echo(f"{res.operator} top-{len(res.top_eigenvalues)} eigenvalues (Lanczos):")
    for i, (lam, r) in enumerate(zip(res.top_eigenvalues, res.residuals)):
        typer.echo(f"  lambda_{i + 1} = {lam:12.6g}   residual {r:.1e}")
    if res.trace_method != "none":
        typer.echo(f"trace (hutch++, {trace_samples} products) = {res.trace:.6g} ± {res.trace_std_error:.2g}")
    if per_layer:
        typer.echo("per-layer top eigenvalue:")
        w = max(len(b) for b in res.blocks)
        for b, n, lam in zip(res.blocks, res.block_sizes, res.block_top_eigenvalues):
            typer.echo(f"  {b.ljust(w)}  {int(n):>9,} params   {lam:12.6g}")
    for note in res.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{res.n_matvec} {res.operator}-vector products, {elapsed:.1f} s" + (f"; wrote {plot}" if plot else ""))


# --------------------------------------------------------------------------- topology


def _bars(dgm: np.ndarray, top: int) -> str:
    if len(dgm) == 0:
        return "-"
    order = np.argsort(-(dgm[:, 1] - dgm[:, 0]), kind="stable")[:top]
    return ", ".join(f"({b:.3g}, {'inf' if np.isinf(d) else f'{d:.3g}'})" for b, d in dgm[order])


@app.command()
def topology(
    file: Path = typer.Argument(
        ..., help="Point cloud (N, D) or, with --metric precomputed, a distance matrix (N, N): .npy, .npz, .pt, "
        ".safetensors, .csv, .tsv or .txt.", show_default=False,
    ),
    maxdim: int = typer.Option(1, "--maxdim", min=0, help="Highest homology dimension (0 to 3)."),
    metric: str = typer.Option("euclidean", "--metric", help="euclidean, precomputed, cosine, cityblock, chebyshev."),
    max_points: Optional[int] = typer.Option(
        None, "--max-points", min=2, help="Compute on this many landmarks when N is larger.", show_default=False
    ),
    landmarks: str = typer.Option("maxmin", "--landmarks", help="maxmin (greedy farthest point) or random."),
    scale: Optional[float] = typer.Option(
        None, "--scale", help="Also print the Betti numbers at this filtration value.", show_default=False
    ),
    top: int = typer.Option(3, "--top", min=1, help="How many of the longest bars to print per dimension."),
    key: Optional[str] = typer.Option(None, "--key", help="Array to read from a file holding several.", show_default=False),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the persistence diagram (PNG) here.", show_default=False),
    barcode: bool = typer.Option(False, "--barcode", help="With --plot: draw the barcode instead of the diagram."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the diagrams) instead of the text."),
    device: str = typer.Option("auto", "--device", help="Where the MST and landmarks run: cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Seed for the landmark choice."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle",
        help="Allow pickled .npy/.npz/.pt content. Unpickling can execute arbitrary code: only for files you trust.",
    ),
) -> None:
    """Vietoris-Rips persistent homology of the point cloud (or distance matrix) in FILE.

    Prints, per homology dimension, the number of bars, the essential ones, total persistence,
    persistence entropy and the longest bars; with --scale the Betti numbers there. A run
    forecast to exceed memory is refused with a --max-points that fits.
    """
    from .io import LoadError, load_points
    from .topology import PersistenceTooLarge, persistence

    try:
        X = load_points(file, key=key, allow_pickle=allow_pickle)
    except (FileNotFoundError, LoadError) as exc:
        _fail(str(exc))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dg = persistence(X, maxdim, metric=metric, max_points=max_points, landmarks=landmarks, seed=seed,
                             device=device)
        except PersistenceTooLarge as exc:
            _fail(str(exc).replace("Pass max_points=", "Pass --max-points ").replace("max_points", "--max-points"))
        except (ValueError, TypeError, ImportError) as exc:
            _fail(str(exc))
    _echo_warnings(caught)
    elapsed = time.perf_counter() - t0
    if plot is not None:
        ax = dg.plot(kind="barcode" if barcode else "diagram")
        ax.figure.tight_layout()
        ax.figure.savefig(plot, dpi=120)
    if as_json:
        doc = {"file": str(file), "key": key, "time_s": elapsed, "shapelens_version": __version__, **dg.to_dict()}
        if scale is not None:
            doc["betti_at_scale"] = {"scale": scale, "betti": dg.betti(scale).tolist()}
        typer.echo(json.dumps(doc, indent=2))
        return
    shape = f"{dg.n_points} points" + ("" if metric == "precomputed" else f" in {np.shape(X)[1]} dimensions")
    typer.echo(f"{file}: {shape} (metric {metric}, H0 by the MST engine, H1+ by {dg.backend}, {elapsed:.2f} s)")
    if dg.landmarks is not None:
        typer.echo(f"landmarks: {dg.n_used} of {dg.n_points} ({landmarks}), covering radius {dg.covering_radius:.4g}: "
                   f"diagrams within {dg.error_bound:.4g} of the full cloud's (bottleneck)")
    typer.echo(f"{'dim':<3}  {'bars':>6}  {'essential':>9}  {'total persistence':>17}  {'entropy':>7}  "
               f"longest {top} (birth, death)")
    for k in range(maxdim + 1):
        d = dg[k]
        typer.echo(f"H{k:<2}  {len(d):>6}  {int(np.isinf(d[:, 1]).sum()):>9}  {dg.total_persistence(k):>17.4g}  "
                   f"{dg.entropy(k):>7.3f}  {_bars(d, top)}")
    if scale is not None:
        typer.echo(f"Betti numbers at scale {scale:g}: " + " ".join(f"b{k}={b}" for k, b in enumerate(dg.betti(scale))))
    if plot is not None:
        typer.echo(f"wrote {plot}")


# --------------------------------------------------------------------------- symmetry


@app.command()
def symmetry(
    demo: bool = typer.Option(False, "--demo", help="Survey the demo MLP trained on scikit-learn's digits (seconds)."),
    model: Optional[str] = _MODEL_OPTION,
    weights: Optional[Path] = _WEIGHTS_OPTION,
    data: Optional[Path] = typer.Option(
        None, "--data", help="Inputs: (N, C, H, W) images, (N, C*H*W) with --image-shape, or (N, n, d) sets.",
        show_default=False,
    ),
    x_key: Optional[str] = typer.Option(
        None, "--x-key", help="Name of the inputs in --data when it holds several arrays.", show_default=False
    ),
    image_shape: Optional[str] = typer.Option(
        None, "--image-shape", help="C,H,W of flattened image inputs, e.g. 1,28,28.", show_default=False
    ),
    input_kind: str = typer.Option("auto", "--input", help="auto, image or set."),
    limit: Optional[int] = typer.Option(1000, "--limit", min=1, help="Use only the first N examples."),
    group: Optional[str] = typer.Option(
        None, "--group", help="Instead of a model: count equivariant maps for this group (SO2, O2, SO3, O3, Sn, Cn, Dn).",
        show_default=False,
    ),
    rep_in: str = typer.Option("V", "--rep-in", help="With --group: input representation, e.g. 'V**2 + V'."),
    rep_out: str = typer.Option("V", "--rep-out", help="With --group: output representation, e.g. 'D2', '1', 'sgn'."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the survey's bar chart (PNG) here.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the text."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampled group elements (and the demo)."),
) -> None:
    """How equivariant a model is to the symmetries of its input (shifts, flips, rotations of images;
    permutations of sets) with its Lie derivatives; or, with --group, the equivariant linear maps
    between two representations.

    Either --demo, --model with --data, or --group with --rep-in/--rep-out.
    """
    if sum([demo, model is not None, group is not None]) != 1:
        _fail("pass exactly one of --demo, --model (with --data) or --group (with --rep-in/--rep-out); see "
              "shapelens symmetry --help.")
    if group is not None:
        from .symmetry.reps import equivariant_basis, group_by_name, parse_rep

        def solve():
            G = group_by_name(group)
            a, b = parse_rep(rep_in, G), parse_rep(rep_out, G)
            return G, a, b, equivariant_basis(a, b)

        (G, a, b, B), elapsed = _timed(solve)
        if as_json:
            typer.echo(json.dumps({"group": G.name, "rep_in": rep_in, "rep_out": rep_out, "dim_in": a.dim,
                                   "dim_out": b.dim, "n_maps": int(B.shape[0]), "time_s": elapsed}, indent=2))
            return
        typer.echo(f"{G.name}: {rep_in} (dim {a.dim}) -> {rep_out} (dim {b.dim}): {B.shape[0]} equivariant linear "
                   f"maps (of {a.dim * b.dim} unknowns), {elapsed:.2f} s")
        if B.shape[0] == 0:
            typer.echo("no non-zero equivariant map exists between these representations.")
        return
    from .symmetry.survey import symmetry_survey

    shape = None
    if image_shape is not None:
        try:
            shape = tuple(int(v) for v in image_shape.replace("x", ",").split(","))
        except ValueError:
            _fail(f"--image-shape {image_shape!r} is not C,H,W (e.g. 1,28,28).")
    if demo:
        from .atlas.demo import _prepare

        d = _prepare(seed)
        net, X = d["model"], d["X"][d["test_idx"]]
        shape = shape or (1, 8, 8)
        label = "demo MLP 64-128-64-32-10 on scikit-learn digits (test split)"
    else:
        net, (X,) = _load_model_and_arrays(model, weights, data, x_key)
        label = f"{model} on {data}"
    if limit is not None:
        X = X[:limit]
    res, elapsed = _timed(lambda: symmetry_survey(net, X, input_kind=input_kind, image_shape=shape, seed=seed))
    _save_plot(res, plot)
    if as_json:
        _echo_model_json(label, seed, elapsed, res)
        return
    typer.echo(f"{label}: {res.n_examples} examples, {res.input_kind} inputs, {elapsed:.1f} s")
    w = max(len(t) for t in res.transforms)
    typer.echo(f"{'transformation'.ljust(w)}  relative change  same class")
    for t, c, a in res.rows():
        typer.echo(f"{t.ljust(w)}  {c:15.3g}  {'-' if np.isnan(a) else f'{100 * a:9.1f}%'}")
    for t, v, u in zip(res.lie_transforms, res.lie_relative, res.units):
        typer.echo(f"Lie derivative {t}: {v:.3g} (relative, {u})")
    if plot is not None:
        typer.echo(f"wrote {plot}")


# --------------------------------------------------------------------------- regions


@app.command()
def regions(
    demo: bool = typer.Option(False, "--demo", help="The demo MLP trained on scikit-learn's digits (seconds)."),
    model: Optional[str] = _MODEL_OPTION,
    weights: Optional[Path] = _WEIGHTS_OPTION,
    data: Optional[Path] = typer.Option(
        None, "--data", help="Inputs (and optionally labels, --y-key) the slice passes through.", show_default=False
    ),
    x_key: Optional[str] = typer.Option(
        None, "--x-key", help="Name of the inputs in --data when it holds several arrays.", show_default=False
    ),
    y_key: Optional[str] = typer.Option(
        None, "--y-key", help="Name of the labels in --data (to pick three points of different classes).",
        show_default=False,
    ),
    points: Optional[str] = typer.Option(
        None, "--points", help="Indices i,j,k of the three inputs spanning the plane (default: three of different "
        "classes with --y-key, else 0,1,2).", show_default=False,
    ),
    margin: float = typer.Option(0.2, "--margin", min=0.0, help="Bounds around the three points, as a share of their extent."),
    stop_at: Optional[str] = typer.Option(
        None, "--stop-at", help="Partition only up to this module, or 'last_pl' for the piecewise-linear prefix.",
        show_default=False,
    ),
    max_regions: int = typer.Option(200_000, "--max-regions", min=1, help="Refuse slices forecast to have more regions."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the partition picture (PNG) here.", show_default=False),
    color_by: str = typer.Option("class", "--color-by", help="class or region."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, areas, boundary) instead."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Seed for the choice of the three points (and the demo)."),
) -> None:
    """Exact linear regions of a piecewise-linear network on the plane through three inputs:
    region count, region sizes, decision-boundary segments, and the SplineCam-style picture.

    Either --demo, or --model with --data (and usually --weights).
    """
    from .regions import PartitionTooLarge, Plane, partition

    if demo == (model is not None):
        _fail("pass either --demo or --model (with --data); see shapelens regions --help.")
    y = None
    if demo:
        from .atlas.demo import _prepare

        d = _prepare(seed)
        net, X, y = d["model"], d["X"][d["train_idx"]], d["y"][d["train_idx"]]
        label = "demo MLP 64-128-64-32-10 on scikit-learn digits"
    else:
        net, arrays = _load_model_and_arrays(model, weights, data, *([x_key, y_key] if y_key else [x_key]))
        X, y = arrays[0], (arrays[1] if y_key else None)
        label = f"{model} on {data}"
    if points is not None:
        try:
            idx = [int(v) for v in points.split(",")]
        except ValueError:
            _fail(f"--points {points!r} is not three comma-separated indices, e.g. 0,5,9.")
        if len(idx) != 3 or not all(-len(X) <= i < len(X) for i in idx):
            _fail(f"--points needs three indices into the {len(X)} inputs; got {points!r}.")
    elif y is not None:
        from .atlas.demo import _three_of_different_classes

        if len(np.unique(y.numpy())) < 3:
            _fail("the labels have fewer than 3 classes: pass --points i,j,k.")
        idx = _three_of_different_classes(y, seed)
    else:
        if len(X) < 3:
            _fail(f"--data holds {len(X)} inputs; three are needed to span a plane.")
        idx = [0, 1, 2]
    if X.is_floating_point():
        X = X.to(next(net.parameters()).dtype)

    def run():
        plane, bounds = Plane.from_points(X[idx[0]], X[idx[1]], X[idx[2]], margin=margin)
        try:
            return partition(net, plane, bounds, stop_at=stop_at, max_regions=max_regions, device=device)
        except PartitionTooLarge as exc:
            _fail(str(exc).replace("max_regions=", "--max-regions "))

    res, elapsed = _timed(run)
    areas = np.sort(res.areas)
    seg = res.boundary
    length = float(np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1).sum()) if len(seg) else 0.0
    if plot is not None:
        if color_by not in ("class", "region"):
            _fail(f"--color-by must be class or region, got {color_by!r}.")
        ax = res.plot(color_by=color_by, points=X[idx], labels=None if y is None else y[idx])
        ax.figure.tight_layout()
        ax.figure.savefig(plot, dpi=120)
    if as_json:
        doc = {"model": label, "points": idx, "seed": seed, "time_s": elapsed, "shapelens_version": __version__,
               "n_regions": res.n_regions, "bounds": list(res.bounds), "layers": list(res.layers),
               "areas": areas.tolist(), "boundary_segments": int(len(seg)), "boundary_length": length}
        typer.echo(json.dumps(doc, indent=2))
        return
    lab = "" if y is None else " (classes " + ", ".join(str(int(y[i])) for i in idx) + ")"
    typer.echo(f"{label}: plane through inputs {idx[0]}, {idx[1]}, {idx[2]}{lab}, {elapsed:.2f} s")
    typer.echo(f"piecewise-linear layers: {', '.join(res.layers)}")
    typer.echo(f"{res.n_regions} linear regions; area share of the slice: median {np.median(areas) / areas.sum():.2g}, "
               f"largest {areas[-1] / areas.sum():.2g}, smallest {areas[0] / areas.sum():.2g}")
    typer.echo(f"decision boundary: {len(seg)} segments, length {length:.4g} (plane units)")
    if plot is not None:
        typer.echo(f"wrote {plot}")


# --------------------------------------------------------------------------- structure


def _structure_data(diagram: Any, data: Path) -> dict:
    """Arrays of --data keyed by the diagram's object names: an array named after an object is that
    object's data; a product object whose factors all have arrays gets the tuple of them; a file
    holding one unnamed array gives the data of the first object."""
    import torch

    from .io import LoadError, load_arrays

    try:
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in load_arrays(data).items()}
    except (FileNotFoundError, LoadError) as exc:
        _fail(str(exc))
    if list(arrays) == [""]:
        return {next(iter(diagram.objects)): arrays[""]}
    out: dict[str, Any] = {}
    for obj, space in diagram.objects.items():
        if obj in arrays:
            out[obj] = arrays[obj]
        elif getattr(space, "is_product", False) and all(f.name in arrays for f in space.factors):
            out[obj] = tuple(arrays[f.name] for f in space.factors)
    if not out:
        _fail(f"none of the arrays in {data} ({', '.join(arrays)}) is named after an object of the diagram "
              f"({', '.join(diagram.objects)}); name each array after the object whose data it holds.")
    return out


@app.command()
def structure(
    demo: bool = typer.Option(
        False, "--demo", help="Train a bundle network (Courts & Kvinge 2022) on a torus over a circle (seconds) and "
        "check its diagram."),
    model: Optional[str] = typer.Option(
        None, "--model", help="'package.module:factory' or 'file.py:factory' returning a model built from a Diagram "
        "(diagram.model(...), path.as_morphism(), or a module with a diagram() method such as BundleNetwork).",
        show_default=False,
    ),
    weights: Optional[Path] = _WEIGHTS_OPTION,
    data: Optional[Path] = typer.Option(
        None, "--data", help="Data for the equations: arrays named after the diagram's objects (.npz, .pt, "
        ".safetensors), or one array for the first object.", show_default=False,
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write the drawing of the diagram here (.png, .svg or .pdf).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampled group elements (and the demo's training)."),
) -> None:
    """The diagram a model was built from (objects, morphisms, declared equations) and the
    commutativity error of each equation on data; --plot draws it.

    Either --demo, or --model with --data.
    """
    if demo == (model is not None):
        _fail("pass exactly one of --demo or --model (with --data); see shapelens structure --help.")
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        _fail(f"--plot {plot}: the file name must end in .png, .svg or .pdf.")
    from .atlas.structure import diagram_of

    if demo:
        from .atlas.demo import demo_bundle

        typer.echo("training a bundle network on a torus over a circle ...", err=True)
        (net, x, y), _ = _timed(lambda: demo_bundle(seed))
        label = "demo bundle network (torus over a circle)"
        d = net.diagram()
        feed = {net.labelled_space.name: (x, y)}
    else:
        net, _ = _load_model_and_arrays(model, weights, data)
        label = model
        try:
            d = diagram_of(net)
        except (ValueError, TypeError) as exc:
            _fail(f"{model}: could not build its diagram ({exc}).")
        if d is None:
            _fail(f"{model} returned a {type(net).__name__} that was not built from a Diagram: build it with "
                  "diagram.model(src, dst) or diagram.path(...).as_morphism() (or give it a diagram() method).")
        feed = _structure_data(d, data)
    if not d.equations:
        _fail(f"the diagram {d.name!r} declares no equations to check; declare them with diagram.commutes(...) or "
              "diagram.equivariant(...).")
    check, elapsed = _timed(lambda: d.check(feed, seed=seed))
    if plot is not None:
        try:
            d.draw(plot, check=check)
        except OSError as exc:
            _fail(f"could not write {plot} ({exc}); pass a writable path.")
    if as_json:
        doc = {"model": label, "seed": seed, "time_s": elapsed, "shapelens_version": __version__,
               **check.to_dict(),
               "diagram": {"name": d.name, "objects": {k: str(v) for k, v in d.objects.items()},
                           "morphisms": [m.signature for m in d.morphisms.values()],
                           "equations": [eq.description for eq in d.equations]}}
        from ._results import jsonable

        typer.echo(json.dumps(jsonable(doc), indent=2))
        return
    typer.echo(f"{label}: {d!r}")
    for m in d.morphisms.values():
        typer.echo(f"  {m.signature}")
    n_ex = check.equations[0].n_examples
    typer.echo(f"commutativity on {n_ex} examples (relative L2 error ||lhs - rhs|| / ||rhs||), {elapsed:.2f} s:")
    typer.echo(check.table())
    n_ok = sum(e.commutes for e in check.equations)
    typer.echo(f"{n_ok} of {len(check.equations)} equations commute within their tolerance.")
    if plot is not None:
        typer.echo(f"wrote {plot}")


# --------------------------------------------------------------------------- detect-text


@app.command("detect-text")
def detect_text(
    files: List[Path] = typer.Argument(..., help="Text file(s), UTF-8: each file is one text (or see --lines).",
                                       show_default=False),
    lines: bool = typer.Option(False, "--lines", help="Treat every non-empty line of each file as its own text."),
    model: Optional[Path] = typer.Option(
        None, "--model", help="A detector saved with TextPHDDetector.save() (JSON). Default: the packaged one.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the text."),
    device: str = typer.Option("auto", "--device", help="Where the encoder runs: cpu, cuda or auto."),
) -> None:
    """Is a text AI-generated? The PH dimension of its token embeddings (Tulchinskii et al. 2023)
    and the probability a logistic fit on the GPTID Reddit/GPT-3 data gives it.

    Needs the text extra: pip install "shapelens[text]". Texts shorter than the estimator needs
    are reported as too short, not classified.
    """
    try:
        from .detect.text import TextPHDDetector

        det = TextPHDDetector.load(model, on_short="nan", device=device) if model is not None \
            else TextPHDDetector.pretrained(on_short="nan", device=device)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        _fail(str(exc))
    labels, texts = [], []
    for f in files:
        try:
            content = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"could not read {f} as UTF-8 text ({exc}); pass a readable text file.")
        if lines:
            for i, line in enumerate(content.splitlines(), 1):
                if line.strip():
                    labels.append(f"{f}:{i}")
                    texts.append(line)
        else:
            labels.append(str(f))
            texts.append(content)
    if not texts:
        _fail("no text to classify: the file(s) are empty; pass a file with text in it.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            n_tok = det.n_tokens(texts)
            phd = det.phd(texts)
            proba = det.predict_proba(phd=phd)[:, 1]
            pred = det.predict(phd=phd)
        except (ValueError, TypeError, ImportError) as exc:
            _fail(str(exc))
    _echo_warnings(caught)
    ev = getattr(det, "evaluation_", None) or {}
    if as_json:
        doc = {"detector": repr(det), "evaluation": ev, "texts": [
            {"text": lab, "tokens": int(n), "phd": float(p), "p_ai": float(q), "prediction": int(c)}
            for lab, n, p, q, c in zip(labels, n_tok, phd, proba, pred)]}
        from ._results import jsonable

        typer.echo(json.dumps(jsonable(doc), indent=2))
        return
    scores = f"; GPTID test accuracy {ev['accuracy']:.3f}, AUROC {ev['auroc']:.3f}" if "accuracy" in ev else ""
    name = "all-MiniLM-L6-v2" if det._encoder_id() == "default" else det._encoder_id()
    typer.echo(f"detector: {name} hidden state {det.layer}, "
               f"{det.classifier} on PHD (Tulchinskii et al. 2023){scores}")
    for lab, n, p, q, c in zip(labels, n_tok, phd, proba, pred):
        if c < 0 or not np.isfinite(q):
            typer.echo(f"{lab}: {int(n)} tokens, too short (a PHD needs at least {det.min_tokens})")
        else:
            typer.echo(f"{lab}: {int(n)} tokens, PHD {p:.2f}, P(AI-generated) {q:.2f} -> "
                       f"{'AI-generated' if c == 1 else 'human'}")
    typer.echo("a statistical signal (weak on short texts): do not judge a text by it alone.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
