"""Exact linear regions of a 2D slice: time and memory of ``shapelens.regions.partition`` vs a dense grid.

What is measured (the issue's benchmark):

* **Models**: ReLU MLPs ``784-w-...-w-10`` with ``depth`` hidden layers of width ``w`` for depth in
  (3, 4, 6, 8) and width in (64, 128, 256, 512), and a small CNN
  ``conv(1->16, 3)-ReLU-maxpool(2)-conv(16->32, 3)-ReLU-flatten-linear(3872->10)``. Every model is
  *trained briefly* (Adam, lr 1e-3, batch 128, one epoch over the first 10,000 MNIST training
  images, seed 0; weights cached in ``benchmarks/cache/`` with safetensors): a trained network near
  its data is the realistic case (regions concentrate near the data during training; PyTorch's
  initialisation gives fewer, larger regions).
* **Slice**: ``Plane.from_points`` through the first three MNIST training images (labels 5, 0, 4),
  default margin, the same for every model.
* **Exact partition**: ``partition(model, plane, bounds)`` (float64, CPU, default threads), one
  untimed warm-up on a small box of the slice, then three timed calls: median (all three listed).
  Peak extra RSS of the first timed call (``_common.PeakMemory``: high-water mark reset through
  ``/proc/self/clear_refs`` just before the call, minus the RSS before the call), each model in a
  fresh process (``_common.run_worker``).
* **Dense grids at matched resolution**: regular grids over the same bounds whose spacing is the
  square root of the median region area (``h = sqrt(a_50%)``: as many cells as typical regions) and
  of the 1st-percentile region area (``h = sqrt(a_1%)``) of the exact partition; every grid point is
  lifted to input space and forwarded through the model in chunks of 16,384 (float32, the model as
  given), the activation pattern of every ReLU unit (and the argmax of every max-pool window)
  hashed, and the distinct patterns counted (the practice of the sampling tools); time and peak
  extra RSS measured the same way (one call). A grid that would exceed ``--grid-max-points`` points
  or ``--grid-max-macs`` multiply-adds is coarsened to fit (marked "capped"), and its time at the
  matched resolution is extrapolated linearly in the number of points. The count is checked against
  the number of exact regions that contain a grid point (``Partition.region_of``): an activation
  pattern's region is convex, hence one polygon, so the two agree up to float32 rounding.
* **Memory safety**: each worker runs under an address-space cap (``--mem-limit``), so a slice too
  large for the machine fails alone instead of waking the OOM killer.

    .venv/bin/python benchmarks/bench_regions.py                 # the full run (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_regions.py --quick --label smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = HERE / "cache"

from _common import (  # noqa: E402
    PeakMemory,
    fmt_bytes,
    fmt_seconds,
    machine_info,
    markdown_table,
    run_worker,
    report_header,
)

SLICE_INDICES = (0, 1, 2)  # first three MNIST training images: labels 5, 0, 4
TRAIN_N = 10_000
TARGET = {"key": "mlp-d3-w256", "seconds": 2.0}
CHUNK = 16_384


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def configs(quick: bool) -> list[dict]:
    if quick:
        mlps = [(3, 64), (4, 64)]
    else:
        mlps = [(d, w) for d in (3, 4, 6, 8) for w in (64, 128, 256, 512)]
    out = [{"key": f"mlp-d{d}-w{w}", "kind": "mlp", "depth": d, "width": w} for d, w in mlps]
    # quick: a 4-channel CNN on the central box of the slice with sides 1/16 as long (a smoke test)
    out.append({"key": "cnn", "kind": "cnn", "depth": 2, "width": 4 if quick else 16, "zoom": 1 / 16 if quick else 1.0})
    return out


def build(cfg: dict):
    """The model of a configuration (``nn.Sequential`` with named children), seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if cfg["kind"] == "mlp":
        mods, d_in = [], 784
        for i in range(cfg["depth"]):
            mods += [(f"fc{i + 1}", nn.Linear(d_in, cfg["width"])), (f"relu{i + 1}", nn.ReLU())]
            d_in = cfg["width"]
        mods.append(("out", nn.Linear(d_in, 10)))
        return nn.Sequential(OrderedDict(mods))
    c = cfg["width"]
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, c, 3)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(c, 2 * c, 3)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
        ("out", nn.Linear(2 * c * 11 * 11, 10)),
    ]))


def _inputs(cfg: dict, split: str = "train", limit: int | None = None):
    import numpy as np

    from shapelens.data import mnist

    X, y = mnist(split, limit=limit, flatten=cfg["kind"] == "mlp")
    return np.ascontiguousarray(X), y


def trained(cfg: dict, epochs: int, quick: bool) -> tuple[Path, dict]:
    """Train the model of ``cfg`` briefly (cached); returns the weights file and a log."""
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn

    n = 2_000 if quick else TRAIN_N
    path = CACHE / f"regions-{cfg['kind']}-d{cfg['depth']}-w{cfg['width']}-n{n}-e{epochs}-adam1e-3-b128-s0.safetensors"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        load_file(str(path))  # readable
        return path, json.loads(meta.read_text())
    model = build(cfg)
    X, y = _inputs(cfg, "train", n)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, 128):
            idx = perm[s:s + 128]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    Xt, yt = _inputs(cfg, "test", 10_000)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
    log = {"train_seconds": time.perf_counter() - t0, "test_accuracy": acc, "train_images": n, "epochs": epochs,
           "params": sum(p.numel() for p in model.parameters())}
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    meta.write_text(json.dumps(log))
    return path, log


# --------------------------------------------------------------------------------------
# the dense-grid baseline
# --------------------------------------------------------------------------------------


def pattern_keys(model, x):
    """128-bit hash (N, 2) uint64 of the activation pattern of every input row of ``x``: the sign
    of every ReLU unit and the argmax of every max-pool window, packed into bits."""
    import numpy as np
    import torch
    from torch import nn

    parts = []
    h = x
    for mod in model:
        if isinstance(mod, nn.MaxPool2d):
            h, idx = nn.functional.max_pool2d(h, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                                              ceil_mode=mod.ceil_mode, return_indices=True)
            # the flat input index of every window's maximum (which input wins the window)
            parts.append(idx.reshape(idx.shape[0], -1).to(torch.int32).numpy().view(np.uint8))
            continue
        h = mod(h)
        if isinstance(mod, nn.ReLU):
            parts.append(np.packbits((h > 0).reshape(h.shape[0], -1).numpy(), axis=1))
    packed = np.concatenate(parts, 1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    words = packed.view(np.uint64)
    rng = np.random.default_rng(12345)
    keys = np.empty((words.shape[0], 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(2):
            a = rng.integers(1, 2**63, size=words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
            acc = np.zeros(words.shape[0], dtype=np.uint64)
            for k in range(words.shape[1]):
                acc = (acc ^ (words[:, k] * a[k])) * np.uint64(0x9E3779B97F4A7C15)
            keys[:, j] = acc
    return keys


def grid_count(model, plane, bounds, nx: int, ny: int, chunk: int = CHUNK):
    """Distinct activation patterns on an ``nx`` x ``ny`` grid of cell centres; also returns the
    cell-centre coordinates' generator arguments."""
    import numpy as np
    import torch

    s0, s1, t0, t1 = bounds
    ss = s0 + (np.arange(nx) + 0.5) * (s1 - s0) / nx
    ts = t0 + (np.arange(ny) + 0.5) * (t1 - t0) / ny
    seen = set()
    n = nx * ny
    shape = tuple(np.shape(plane.origin))
    o = torch.as_tensor(np.asarray(plane.origin), dtype=torch.float32).reshape(1, -1)
    B = torch.as_tensor(np.stack([np.asarray(plane.u).ravel(), np.asarray(plane.v).ravel()]), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, chunk):
            k = np.arange(start, min(start + chunk, n))
            st = torch.from_numpy(np.stack([ss[k % nx], ts[k // nx]], 1)).to(torch.float32)
            x = torch.addmm(o, st, B).reshape(-1, *shape)  # = plane.lift(st), in float32
            keys = pattern_keys(model, x)
            seen.update(map(bytes, keys.view(np.uint8).reshape(-1, 16)))
    return len(seen)


def grid_points(nx: int, ny: int, bounds):
    import numpy as np

    s0, s1, t0, t1 = bounds
    ss = s0 + (np.arange(nx) + 0.5) * (s1 - s0) / nx
    ts = t0 + (np.arange(ny) + 0.5) * (t1 - t0) / ny
    S, T = np.meshgrid(ss, ts)
    return np.stack([S.ravel(), T.ravel()], 1)


def macs_per_point(model) -> int:
    import torch
    from torch import nn

    total = 0
    shape = None
    for mod in model:
        if isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv2d):
            shape = shape or 28
            shape = shape - mod.kernel_size[0] + 1
            total += mod.in_channels * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1] * shape * shape
        elif isinstance(mod, nn.MaxPool2d):
            shape = (shape or 28) // 2
    del torch
    return int(total + 784)  # + the lift


# --------------------------------------------------------------------------------------
# the worker (fresh process per model)
# --------------------------------------------------------------------------------------


def _limit_address_space(gib: float) -> None:
    """Cap this worker's address space, so that a slice too large for the machine fails alone
    (MemoryError / RuntimeError) instead of waking the kernel's OOM killer for everyone."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (int(gib * 2**30), resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass


def _load(cfg: dict, weights: str):
    """The trained model and the slice (plane, full bounds) of a configuration."""
    import torch
    from safetensors.torch import load_file

    from shapelens.regions.partition import Plane

    model = build(cfg)
    model.load_state_dict(load_file(weights))
    model.eval()
    X, _ = _inputs(cfg, "train", max(SLICE_INDICES) + 1)
    plane, bounds = Plane.from_points(*(torch.from_numpy(X[i]) for i in SLICE_INDICES))
    return model, plane, tuple(float(b) for b in bounds)


def _zoom(bounds, z: float):
    """The central box of ``bounds`` with sides ``z`` times as long."""
    s0, s1, t0, t1 = bounds
    cs, ct, hs, ht = 0.5 * (s0 + s1), 0.5 * (t0 + t1), 0.5 * z * (s1 - s0), 0.5 * z * (t1 - t0)
    return (cs - hs, cs + hs, ct - ht, ct + ht)


def worker_partition(cfg: dict, weights: str, repeats: int, grid_max_points: int, grid_max_macs: float, device: str,
                     mem_limit_gib: float, max_regions: int) -> None:
    """Time the exact partition (fresh process), then size the two dense grids and count the exact
    regions their points fall in (untimed). A slice refused as too large is retried on its central
    box with sides 1/4, 1/16, ... as long (``zoom``), so that every model gets a measurement."""
    _limit_address_space(mem_limit_gib)
    import numpy as np

    from shapelens.regions.partition import PartitionTooLarge, partition

    warnings.simplefilter("ignore")
    model, plane, full = _load(cfg, weights)
    refusals = []
    zoom = float(cfg.get("zoom", 1.0))
    while True:
        bounds = _zoom(full, zoom)
        try:
            partition(model, plane, _zoom(bounds, 0.02), device=device, max_regions=max_regions)  # warm-up
            times, P, mem = [], None, None
            for _ in range(max(1, repeats)):
                P = None
                with PeakMemory(device) as pm:
                    t = time.perf_counter()
                    P = partition(model, plane, bounds, device=device, max_regions=max_regions)
                    times.append(time.perf_counter() - t)
                if mem is None:
                    mem = pm
                if times[-1] > 60:  # long runs: once
                    break
            break
        except (PartitionTooLarge, MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "alloc" not in str(exc):
                raise
            kind = "refused" if isinstance(exc, PartitionTooLarge) else f"out of memory (cap {mem_limit_gib:.0f} GiB)"
            refusals.append({"zoom": zoom, "kind": kind, "estimate": getattr(exc, "estimate", None),
                             "message": str(exc)[:400]})
            P = None
            zoom /= 4.0
            if zoom < 1e-3:
                print(json.dumps({"refused": refusals}))
                return
    s0, s1, t0, t1 = bounds
    areas = np.asarray(P.areas, dtype=np.float64)
    out = {"regions": int(P.n_regions), "times": times, "seconds": statistics.median(times), "extra": mem.extra,
           "method": mem.method, "zoom": zoom, "bounds": list(bounds), "refusals": refusals,
           "slice_area": (s1 - s0) * (t1 - t0), "area_min": float(areas.min()),
           "area_p1": float(np.percentile(areas, 1)), "area_median": float(np.median(areas)),
           "area_sum": float(areas.sum()), "boundary_segments": int(len(P.boundary)),
           "n_units": int(P.patterns.shape[1])}
    # dense grids matched to the median and to the 1st-percentile region area, coarsened to the caps
    mpp = macs_per_point(model)
    cap = int(min(grid_max_points, grid_max_macs / mpp))
    out["macs_per_point"] = mpp
    for tag, area in (("median", out["area_median"]), ("p1", out["area_p1"])):
        h = math.sqrt(area)
        nx, ny = max(1, math.ceil((s1 - s0) / h)), max(1, math.ceil((t1 - t0) / h))
        matched = nx * ny
        capped = matched > cap
        if capped:
            f = math.sqrt(cap / matched)
            nx, ny = max(1, int(nx * f)), max(1, int(ny * f))
        seen = set()
        G = grid_points(nx, ny, bounds)
        for start in range(0, len(G), 1 << 18):
            seen.update(np.unique(np.asarray(P.region_of(G[start:start + (1 << 18)]))).tolist())
        seen.discard(-1)
        out[tag] = {"nx": nx, "ny": ny, "points": nx * ny, "matched_points": matched, "capped": capped,
                    "regions_hit": len(seen)}
    print(json.dumps(out))


def worker_grid(cfg: dict, weights: str, spec: dict, device: str, mem_limit_gib: float) -> None:
    """Time the dense-grid count for the grids sized by :func:`worker_partition` (fresh process,
    so that its memory is not hidden by the partition's freed heap)."""
    _limit_address_space(mem_limit_gib)
    warnings.simplefilter("ignore")
    model, plane, _ = _load(cfg, weights)
    bounds = tuple(spec["bounds"])
    grid_count(model, plane, bounds, 8, 8)  # warm-up
    out = {}
    for tag in ("median", "p1"):
        nx, ny = spec[tag]["nx"], spec[tag]["ny"]
        with PeakMemory(device) as pm:
            t = time.perf_counter()
            count = grid_count(model, plane, bounds, nx, ny)
            gsec = time.perf_counter() - t
        out[tag] = {"seconds": gsec, "extra": pm.extra, "count": count,
                    "seconds_matched": gsec * spec[tag]["matched_points"] / (nx * ny)}
    print(json.dumps(out))


# --------------------------------------------------------------------------------------
# the parent: run everything, write the report
# --------------------------------------------------------------------------------------


def make_figure(cfgs, results, path: Path) -> None:
    """Time, region count and memory against width, one colour per depth; whole slices only."""
    from matplotlib.lines import Line2D
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 3)
    depths = sorted({c["depth"] for c in cfgs if c["kind"] == "mlp"})
    for j, d in enumerate(depths):
        cs = [c for c in cfgs if c["kind"] == "mlp" and c["depth"] == d and "regions" in results.get(c["key"], {})
              and results[c["key"]].get("zoom", 1.0) == 1.0 and "seconds_matched" in results[c["key"]]["median"]]
        if not cs:
            continue
        w = [c["width"] for c in cs]
        r = [results[c["key"]] for c in cs]
        col = f"C{j}"
        axes[0].plot(w, [x["seconds"] for x in r], "o-", color=col)
        axes[0].plot(w, [x["median"]["seconds_matched"] for x in r], "s--", color=col, alpha=0.6)
        axes[1].plot(w, [x["regions"] for x in r], "o-", color=col)
        axes[1].plot(w, [x["median"]["count"] for x in r], "s--", color=col, alpha=0.6)
        axes[2].plot(w, [x["extra"] / 2**20 for x in r], "o-", color=col)
        axes[2].plot(w, [x["median"]["extra"] / 2**20 for x in r], "s--", color=col, alpha=0.6)
    axes[0].axhline(TARGET["seconds"], color="k", lw=0.8, ls=":")
    titles = ("time (s)", "regions found", "peak extra RSS (MiB)")
    for ax, lab in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_title(lab, fontsize=9)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=f"C{j}", marker="o", label=f"depth {d}") for j, d in enumerate(depths)]
    handles += [Line2D([], [], color="gray", marker="o", ls="-", label="exact partition"),
                Line2D([], [], color="gray", marker="s", ls="--", label="dense grid, spacing sqrt(median area)"),
                Line2D([], [], color="k", ls=":", lw=0.8, label=f"target {TARGET['seconds']:g} s (depth 3, width 256)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle("Exact linear regions of a 2D MNIST slice vs a dense grid (MLPs, whole slices, 2 shared CPU cores)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)


def report(args, cfgs, results, logs, info, load_before, load_after, wall) -> str:
    import numpy as np

    lines = report_header(
        "Exact linear regions of a 2D slice: partition vs dense grid",
        f"benchmarks/bench_regions.py{' --quick' if args.quick else ''}", args.label, info, load_before, load_after,
        wall, "The machine has 2 cores shared with other jobs (a load above 2 means the benchmark got less than the "
        "whole machine).")
    rows, grows = [], []
    for c in cfgs:
        r, lg = results.get(c["key"], {}), logs.get(c["key"], {})
        name = (f"MLP 784-{c['width']}x{c['depth']}-10" if c["kind"] == "mlp" else
                f"CNN conv{c['width']}-pool-conv{2 * c['width']}-fc")
        base = [name, f"{lg.get('params', 0):,}", f"{lg.get('test_accuracy', float('nan')):.3f}"]
        if "error" in r or "refused" in r:
            if "refused" in r:
                what = "refused or out of memory down to sides x {:.2g}: {}".format(
                    r["refused"][-1]["zoom"], "; ".join(x.get("kind", "refused") + (f" (estimate {x['estimate']:,})"
                                                        if x["estimate"] else "") for x in r["refused"]))
            else:
                what = "failed: " + r["error"][-240:].replace("|", "/").replace("\n", " ")
            rows.append(base + ["", "", "", what, "", ""])
            continue
        rel = r["slice_area"]
        where = "whole slice" if r["zoom"] == 1 else f"central box, sides x {r['zoom']:.2g} (area x {r['zoom'] ** 2:.2g})"
        for x in r["refusals"]:
            where += f"; {x.get('kind', 'refused')} at x {x['zoom']:.2g}" + (
                f" (estimate {x['estimate']:,} regions)" if x["estimate"] else "")
        rows.append(base + [f"{r['n_units']:,}", where, f"{r['regions']:,}",
                            f"**{fmt_seconds(r['seconds'])}** ({', '.join(fmt_seconds(t) for t in r['times'])})",
                            fmt_bytes(r["extra"]),
                            f"{r['area_min'] / rel:.1e} / {r['area_p1'] / rel:.1e} / {r['area_median'] / rel:.1e}"])
        if "grid_error" in r:
            grows.append([name, f"{r['regions']:,}", "", "", "failed: " + r["grid_error"][-200:].replace("|", "/")
                          .replace("\n", " "), "", "", "", "", "", ""])
            continue
        for tag, what in (("median", "sqrt(median area)"), ("p1", "sqrt(1% area)")):
            g = r[tag]
            gp = f"{g['nx']} x {g['ny']} = {g['points']:,}"
            if g["capped"]:
                gp += f" (capped; matched: {g['matched_points']:,})"
            hit = g.get("regions_hit")
            t_m = fmt_seconds(g["seconds_matched"]) + (" (extrapolated)" if g["capped"] else "")
            grows.append([name, f"{r['regions']:,}", what, gp, fmt_seconds(g["seconds"]), t_m, fmt_bytes(g["extra"]),
                          f"{g['count']:,}", f"{g['count'] / r['regions']:.2f}", "n/a" if hit is None else f"{hit:,}",
                          f"{g['seconds_matched'] / r['seconds']:.2g}x"])
    lines += ["### Exact partition", "",
              "Regions in the slice through three MNIST training digits; time: median of the timed calls in seconds "
              "(all in brackets; a call over a minute is not repeated); memory: peak extra resident memory of the first "
              "timed call; areas: smallest / 1st percentile / median region area as a fraction of the slice area; "
              "slice: the whole slice, or, where `partition` refused it as too large (`PartitionTooLarge`, from its "
              "estimate of the region count or of the memory) or ran out of the worker's address-space cap, its "
              "central box with sides 1/4, 1/16, ... as long; "
              "units: ReLU units plus max-pool windows (the columns of `Partition.patterns`). Test accuracy of the "
              "briefly trained model on the 10,000 MNIST test images.", "",
              markdown_table(["model", "params", "test acc.", "units", "slice", "regions", "time (s)", "peak extra RSS",
                              "area min / 1% / median"], rows), ""]
    lines += ["### Dense grid at matched resolution", "",
              "Two grids per model over the same bounds: spacing = sqrt(median region area) of the exact partition "
              "(as many grid cells as regions of typical size) and spacing = sqrt(1st-percentile region area) (fine "
              f"enough for all but the smallest 1% of regions). A grid over {args.grid_max_points:,} points or "
              f"{args.grid_max_macs:.0e} multiply-adds is coarsened to fit (\"capped\") and its time at the matched "
              "resolution extrapolated linearly in the number of points. Count: distinct activation patterns among "
              "the grid points; ratio: count / exact regions (below 1: regions the grid misses); regions hit: exact "
              "regions containing a grid point (`Partition.region_of`), which the count should equal up to float32 "
              "rounding of grid points lying within ~1e-7 of an edge; time ratio: grid at matched resolution / exact.",
              "", markdown_table(["model", "exact regions", "spacing", "grid points", "grid time (s)",
                                  "at matched resolution (s)", "grid peak extra RSS", "grid count", "grid / exact",
                                  "regions hit", "time grid / exact"], grows), ""]
    r = results.get(TARGET["key"], {})
    if "regions" in r:
        ok = r["seconds"] < TARGET["seconds"]
        lines += ["### Target of the issue", "",
                  markdown_table(["target", "measured (median of 3)", "verdict"],
                                 [[f"depth-3 width-256 MLP slice in under {TARGET['seconds']:.0f} s on 2 CPU cores",
                                   f"{fmt_seconds(r['seconds'])} s ({r['regions']:,} regions)",
                                   "met" if ok else "**NOT met**"]]), ""]
    # summary over the MLPs measured on their whole slice
    whole = [results[c["key"]] for c in cfgs if c["kind"] == "mlp" and "regions" in results.get(c["key"], {})
             and results[c["key"]].get("zoom", 1.0) == 1.0 and "count" in results[c["key"]]["median"]]
    if whole:
        rate = [x["regions"] / x["seconds"] for x in whole]
        per_region = [x["extra"] / x["regions"] for x in whole if x["regions"] >= 10_000]
        unc = [x for x in whole if not x["median"]["capped"]]
        ratio_m = [x["median"]["count"] / x["regions"] for x in unc] or [float("nan")]
        t_m = [x["median"]["seconds_matched"] / x["seconds"] for x in unc] or [float("nan")]
        ratio_p = [x["p1"]["count"] / x["regions"] for x in whole]
        t_p = [x["p1"]["seconds_matched"] / x["seconds"] for x in whole]
        spread = [x["area_median"] / x["area_p1"] for x in whole]
        lines += ["### Summary", "",
                  f"* Exact partition, MLPs on the whole slice ({len(whole)} models): {min(rate):,.0f} to "
                  f"{max(rate):,.0f} regions per second"
                  + (f"; about {np.median(per_region) / 1024:.0f} KiB of peak extra memory per region for slices of "
                     f"10,000 regions or more" if per_region else "") + ".",
                  f"* Dense grid with spacing sqrt(median region area), {len(unc)} models where it fits the caps: "
                  f"{min(t_m):.2g}x to {max(t_m):.2g}x the exact method's time, and it finds {100 * min(ratio_m):.0f}% "
                  f"to {100 * max(ratio_m):.0f}% of the regions (where it had to be coarsened, far fewer: "
                  + (", ".join(f"{100 * x['median']['count'] / x['regions']:.0f}%" for x in whole
                               if x["median"]["capped"]) or "none") + ").",
                  f"* Dense grid with spacing sqrt(1st-percentile area): {min(t_p):.2g}x to {max(t_p):.2g}x the exact "
                  f"method's time at that resolution (extrapolated where capped); the largest grid run found "
                  f"{100 * min(ratio_p):.0f}% to {100 * max(ratio_p):.0f}% of the regions. Within one slice the median region "
                  f"is {min(spread):.0e} to {max(spread):.0e} times the 1st-percentile one, and the smallest regions "
                  "are slivers far smaller still (area column), so no affordable grid resolves them all.",
                  ""]
    return "\n".join(lines) + "\n"


NOTES = """
### Notes

* **Models**: `784-w-...-w-10` with `depth` hidden ReLU layers (depth 3 = three hidden layers), PyTorch's
  default initialisation, then one epoch of Adam (lr 1e-3, batch 128, seed 0) on the first 10,000 MNIST training
  images (2,000 in `--quick`); the CNN is `Conv2d(1, 16, 3)-ReLU-MaxPool2d(2)-Conv2d(16, 32, 3)-ReLU-Flatten-
  Linear(3872, 10)` trained the same way. Weights are cached in `benchmarks/cache/` (git-ignored).
* **Slice**: `Plane.from_points(x0, x1, x2)` through MNIST training images 0, 1, 2 (labels 5, 0, 4), default
  margin; plane coordinates are Euclidean (orthonormal u, v), so areas are in squared pixel-intensity units.
* **Exact partition**: `shapelens.regions.partition.partition(model, plane, bounds, max_regions=1_000_000)`,
  otherwise its defaults (float64, `device="auto"`, i.e. the CPU here), torch's default 2 threads; a slice
  estimated to hold more regions (or to need more memory than is free) is refused before it starts
  (`PartitionTooLarge`); the benchmark then measures the central box of the slice with sides 1/4 (1/16, ...) as
  long and says so. One untimed warm-up on a box of 0.04% of the slice; then three timed calls (one if it takes
  over a minute), the median reported.
* **Dense grids**: the practice of the sampling tools (count the distinct activation patterns met by a dense set
  of points): grid cell centres lifted to the 784 pixels (`plane.lift`), forwarded through the model in float32 in
  chunks of 16,384 points, patterns hashed to 128 bits (collisions have probability ~1e-29 at these counts). A grid
  can only undercount: a region with no grid point inside is missed. Its time grows with the number of points
  (1 / spacing^2), the exact method's with the number of regions; region areas span many orders of magnitude
  (thin slivers where two bent hyperplanes nearly meet), which is why the spacing matched to the 1st percentile is
  out of reach of a grid.
* **Memory**: the partition and the grids of each model run in two fresh processes (the grids separately, so that
  the partition's freed heap does not hide their memory); peak extra RSS = RSS high-water mark during the call minus the
  RSS just before it (`/proc/self/clear_refs` reset), so the model, the data and the interpreter are not counted.
"""


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            return next(int(ln.split()[1]) for ln in fh if ln.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration):
        return 8.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two width-64 MLPs and a 4-channel CNN trained on 2,000 images (a smoke test, < 1 min)")
    p.add_argument("--repeats", type=int, default=3, help="timed partition calls per model (median reported)")
    p.add_argument("--only", nargs="*", default=None, help="configuration keys to run, e.g. mlp-d3-w256 cnn")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--grid-max-points", type=int, default=None, help="largest dense grid (default 2,097,152; quick 65,536)")
    p.add_argument("--grid-max-macs", type=float, default=None, help="largest grid forward in multiply-adds (default 1e11; quick 2e10)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-regions", type=int, default=1_000_000,
                   help="partition's max_regions (refuse a slice estimated to hold more; default 1,000,000)")
    p.add_argument("--mem-limit", type=float, default=None,
                   help="address-space cap of each worker in GiB (default: 60%% of the available memory, at most 16)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per model before it is reported as failed")
    p.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/regions.md)")
    p.add_argument("--label", default="", help="label written at the top, e.g. 'smoke run'")
    p.add_argument("--from-json", default=None, help="re-write the report and figure from a saved results JSON (no measuring)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    p.add_argument("--grid-spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.grid_max_points is None:
        args.grid_max_points = 65_536 if args.quick else 2_097_152
    if args.grid_max_macs is None:
        args.grid_max_macs = 2e10 if args.quick else 1e11
    if args.mem_limit is None:
        args.mem_limit = min(16.0, 0.6 * _available_gib())
    if args.worker:
        if args.grid_spec:
            worker_grid(json.loads(args.worker), args.weights, json.loads(args.grid_spec), args.device, args.mem_limit)
        else:
            worker_partition(json.loads(args.worker), args.weights, args.repeats, args.grid_max_points,
                             args.grid_max_macs, args.device, args.mem_limit, args.max_regions)
        return 0

    warnings.simplefilter("ignore")
    out = Path(args.out) if args.out else HERE / "results" / "regions.md"
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        args.quick, args.label = saved["quick"], saved["label"]
        args.grid_max_points, args.grid_max_macs = saved["grid_max_points"], saved["grid_max_macs"]
        return _write(args, saved["cfgs"], saved["results"], saved["logs"], saved["info"], saved["load_before"],
                      saved["load_after"], saved["wall"], out)
    cfgs = [c for c in configs(args.quick) if args.only is None or c["key"] in args.only]
    info = machine_info(args.device)
    for k in ("skdim", "dadapy", "sklearn", "scipy"):
        info.pop(k, None)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    results, logs = {}, {}
    for c in cfgs:
        print(f"{c['key']}: training / loading ...", file=sys.stderr, flush=True)
        path, logs[c["key"]] = trained(c, args.epochs, args.quick)
        wargs = [str(Path(__file__).resolve()), "--worker", json.dumps(c), "--weights", str(path),
                 "--repeats", str(args.repeats), "--grid-max-points", str(args.grid_max_points),
                 "--grid-max-macs", str(args.grid_max_macs), "--device", args.device, "--mem-limit", str(args.mem_limit),
                 "--max-regions", str(args.max_regions)]
        try:
            r = run_worker(wargs, timeout=args.timeout)
            if "regions" in r:
                spec = {"bounds": r["bounds"], **{t: {k: r[t][k] for k in ("nx", "ny", "matched_points")}
                                                  for t in ("median", "p1")}}
                g = run_worker(wargs + ["--grid-spec", json.dumps(spec)], timeout=args.timeout)
                if "error" in g:
                    r["grid_error"] = g["error"]
                else:
                    for t in ("median", "p1"):
                        r[t].update(g[t])
        except Exception as exc:  # subprocess.TimeoutExpired
            r = {"error": f"{type(exc).__name__}: {exc}"}
        results[c["key"]] = r
        msg = r.get("error") or r.get("grid_error") or (r["refused"][-1]["message"] if "refused" in r else None) or (
            f"{r['regions']:,} regions, {r['seconds']:.2f} s, {fmt_bytes(r['extra'])}; grids "
            f"{r['median']['count']:,} in {r['median']['seconds']:.2f} s, {r['p1']['count']:,} in {r['p1']['seconds']:.2f} s")
        print(f"  -> {c['key']}: {msg}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_start
    load_after = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"quick": args.quick, "label": args.label, "grid_max_points": args.grid_max_points,
         "grid_max_macs": args.grid_max_macs, "cfgs": cfgs, "results": results, "logs": logs, "info": info,
         "load_before": load_before, "load_after": load_after, "wall": wall}, indent=1))
    return _write(args, cfgs, results, logs, info, load_before, load_after, wall, out)


def _write(args, cfgs, results, logs, info, load_before, load_after, wall, out: Path) -> int:
    text = report(args, cfgs, results, logs, info, load_before, load_after, wall)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        make_figure(cfgs, results, out.with_suffix(".png"))
        text += f"\n![time, regions and memory]({out.with_suffix('.png').name})\n"
    except Exception as exc:  # the figure is optional
        print(f"figure skipped: {exc}", file=sys.stderr)
    out.write_text(text + NOTES)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
