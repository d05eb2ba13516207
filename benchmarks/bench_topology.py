"""Vietoris-Rips persistent homology: shapelens vs ripser.py vs GUDHI, side by side in one run.

Configurations (the issue's acceptance benchmark, plus two checks of the cost model):

* ``h0``: H0 of N = 10,000 points in D = 768. shapelens ``persistence(X, 0)`` (the exact torch
  MST engine) vs ``ripser.ripser(X, maxdim=0)`` vs GUDHI ``RipsComplex(points=X)
  .create_simplex_tree(max_dimension=1)`` + ``compute_persistence()``. Target: shapelens at
  least 10x faster than ripser.py.
* ``h1``: H1 of N = 2,000 points in D = 50. shapelens ``persistence(X, 1)`` vs
  ``ripser(X, maxdim=1)``. Target: no slower than the fastest peer. GUDHI's full Rips complex
  at this N has C(2000, 3) = 1.3e9 triangles (about 120 GB at ~90 bytes a simplex), so GUDHI
  runs in ``h1-gudhi`` instead:
* ``h1-gudhi``: the same data, first N = 1,000 points: all three, GUDHI with its fastest exact
  path for flag complexes (``create_simplex_tree(max_dimension=1)``, ``collapse_edges(5)``,
  ``expansion(2)``, ``compute_persistence()``; edge collapse preserves the diagrams, Glisse &
  Pritam 2022).
* ``landmarks``: N = 50,000 points in D = 50 through 1,000 landmarks: shapelens
  ``persistence(X, 1, max_points=1000, landmarks="maxmin")`` (covering radius) vs ripser.py's
  greedy permutation ``ripser(X, maxdim=1, n_perm=1000)`` (``r_cover``).
* ``circle``: H1 of N = 800 points on the unit circle vs 800 Gaussian points (D = 2 and 50),
  to check the claim of ``estimate_cost`` that a circle costs ripser ~20x the time of a
  Gaussian cloud.

Data: the first N MNIST training images (``shapelens.data.mnist``, D = 784, [0, 1]) times a
seeded Gaussian random projection (784 x D, entries N(0, 1/D)), float32; the same array (saved
once by the parent process) goes to every tool.

Every measured call runs in a **fresh subprocess** (``_common.run_worker``) that loads the
data, runs the tool once untimed on the first 200 points (imports, lazy initialisation), then
times the call under ``_common.PeakMemory`` (RSS high-water mark reset just before the call:
peak extra RSS = VmHWM - VmRSS before). A configuration whose first run took under a minute is
run ``--repeats`` times (best time kept; memory: the largest of the runs). Peer workers get an
address-space limit so that an oversized run fails alone instead of invoking the OOM killer.

    .venv/bin/python benchmarks/bench_topology.py                 # the full run (~12 min on 2 cores)
    .venv/bin/python benchmarks/bench_topology.py --quick --label smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    PeakMemory,
    fmt_bytes,
    fmt_seconds,
    machine_info,
    markdown_table,
    run_worker,
    report_header,
)

TOOLS = {
    "shapelens": "shapelens",
    "ripser": "ripser.py",
    "gudhi": "GUDHI",
}
GUDHI_BYTES_PER_SIMPLEX = 90.0  # measured: 381 MiB for the 4.5e6 edges of N = 3000 (H0 path, with persistence)
COLLAPSE_ITERATIONS = 5


# --------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------


def configs(quick: bool) -> list[dict]:
    """The measured configurations; ``data`` names an array saved by :func:`make_data`."""
    s = (lambda full, small: small if quick else full)
    n_lm = s(50_000, 5_000)
    m_lm = s(1000, 200)
    return [
        {"key": "h0", "data": "mnist768", "n": s(10_000, 2_000), "d": 768, "maxdim": 0,
         "tools": ["shapelens", "ripser", "gudhi"], "title": "H0"},
        {"key": "h1", "data": "mnist50", "n": s(2_000, 600), "d": 50, "maxdim": 1,
         "tools": ["shapelens", "ripser"], "title": "H1"},
        {"key": "h1-gudhi", "data": "mnist50", "n": s(1_000, 300), "d": 50, "maxdim": 1,
         "tools": ["shapelens", "ripser", "gudhi"], "title": "H1 (N small enough for GUDHI)"},
        {"key": "landmarks", "data": "mnist50", "n": n_lm, "d": 50, "maxdim": 1, "max_points": m_lm,
         "tools": ["shapelens", "ripser"], "title": f"H1 through {m_lm} landmarks"},
        {"key": "circle", "data": "circle", "n": s(800, 300), "d": 2, "maxdim": 1,
         "tools": ["shapelens", "ripser"], "title": "H1, points on the unit circle"},
        {"key": "gauss2", "data": "gauss2", "n": s(800, 300), "d": 2, "maxdim": 1,
         "tools": ["shapelens", "ripser"], "title": "H1, Gaussian cloud"},
        {"key": "gauss50", "data": "gauss50", "n": s(800, 300), "d": 50, "maxdim": 1,
         "tools": ["shapelens", "ripser"], "title": "H1, Gaussian cloud"},
    ]


def make_data(cfgs: list[dict], folder: Path, seed: int) -> dict:
    """Build every input once and save it as ``.npy`` in ``folder``; returns name -> path."""
    import numpy as np

    from shapelens.data import mnist

    need = {}
    for c in cfgs:
        need[c["data"]] = max(need.get(c["data"], 0), c["n"])
    paths = {}
    rng = np.random.default_rng(seed)
    for name, n in need.items():
        if name.startswith("mnist"):
            d = int(name[5:])
            Xm, _ = mnist("train", limit=n)
            R = np.random.default_rng([seed, d]).standard_normal((Xm.shape[1], d)) / np.sqrt(d)
            X = (Xm.astype(np.float64) @ R).astype(np.float32)
        elif name == "circle":
            th = rng.uniform(0.0, 2.0 * np.pi, n)
            X = np.c_[np.cos(th), np.sin(th)].astype(np.float32)
        else:
            X = np.random.default_rng([seed, int(name[5:])]).standard_normal((n, int(name[5:]))).astype(np.float32)
        p = folder / f"{name}.npy"
        np.save(p, np.ascontiguousarray(X))
        paths[name] = str(p)
    return paths


# --------------------------------------------------------------------------------------
# the worker (fresh process per measured call)
# --------------------------------------------------------------------------------------


def _limit_address_space() -> None:
    """Peers (no torch in their process): cap the address space at 80% of the available memory,
    so an oversized run raises MemoryError / std::bad_alloc instead of waking the OOM killer."""
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable:"))
        resource.setrlimit(resource.RLIMIT_AS, (int(0.8 * avail), resource.RLIM_INFINITY))
    except (OSError, StopIteration, ValueError):
        pass


def _call(tool: str, X, maxdim: int, max_points: int | None):
    """Zero-argument callable running ``tool``; returns (list of (n, 2) arrays, extras dict)."""
    import numpy as np

    if tool == "shapelens":
        from shapelens.topology import persistence

        def run():
            if max_points is None:
                d = persistence(X, maxdim)
            else:
                d = persistence(X, maxdim, max_points=max_points, landmarks="maxmin")
            return list(d.dgms), {"covering_radius": float(d.covering_radius), "n_used": int(d.n_used)}
        return run
    if tool == "ripser":
        from ripser import ripser

        def run():
            if max_points is None:
                r = ripser(X, maxdim=maxdim)
            else:
                r = ripser(X, maxdim=maxdim, n_perm=max_points)
            return [np.asarray(g, dtype=np.float64) for g in r["dgms"]], {"r_cover": float(r.get("r_cover", 0.0))}
        return run
    if tool == "gudhi":
        import gudhi

        def run():
            st = gudhi.RipsComplex(points=X).create_simplex_tree(max_dimension=1)
            if maxdim >= 1:
                st.collapse_edges(nb_iterations=COLLAPSE_ITERATIONS)
                st.expansion(maxdim + 1)
            n_simplices = st.num_simplices()
            st.compute_persistence(min_persistence=0.0)
            dg = [np.asarray(st.persistence_intervals_in_dimension(k), dtype=np.float64).reshape(-1, 2)
                  for k in range(maxdim + 1)]
            return dg, {"n_simplices": int(n_simplices)}
        return run
    raise KeyError(tool)


def worker(tool: str, data: str, n: int, maxdim: int, max_points: int | None, dgm_out: str) -> None:
    import numpy as np

    warnings.simplefilter("ignore")
    if tool != "shapelens":
        _limit_address_space()
    X = np.load(data)[:n]
    _call(tool, X[:200].copy(), maxdim, None if max_points is None else min(max_points, 100))()  # warm-up
    call = _call(tool, X, maxdim, max_points)
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        dgms, extra = call()
        secs = time.perf_counter() - t0
    np.savez(dgm_out, *[np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in dgms])
    print(json.dumps({"seconds": secs, "extra": pm.extra, "peak": pm.peak, "baseline": pm.base,
                      "method": pm.method, **extra}))


# --------------------------------------------------------------------------------------
# agreement of diagrams
# --------------------------------------------------------------------------------------


def _finite_clean(g):
    import numpy as np

    g = np.asarray(g, dtype=np.float64).reshape(-1, 2)
    return g[g[:, 1] > g[:, 0]]


def compare(a: list, b: list, maxdim: int) -> dict:
    """Per dimension: bar counts and the bottleneck distance (GUDHI's exact algorithm, finite
    bars; essential bars compared by count and birth), relative to the largest finite death."""
    import gudhi
    import numpy as np

    out = {}
    for k in range(maxdim + 1):
        ga, gb = _finite_clean(a[k]), _finite_clean(b[k])
        fa, fb = ga[np.isfinite(ga[:, 1])], gb[np.isfinite(gb[:, 1])]
        ea, eb = np.sort(ga[~np.isfinite(ga[:, 1]), 0]), np.sort(gb[~np.isfinite(gb[:, 1]), 0])
        scale = max([1e-300] + [float(f[:, 1].max()) for f in (fa, fb) if len(f)])
        if k == 0 and len(fa) == len(fb):  # all births 0: the sorted deaths are the optimal matching
            bott = float(np.abs(np.sort(fa[:, 1]) - np.sort(fb[:, 1])).max()) if len(fa) else 0.0
        else:
            bott = float(gudhi.bottleneck_distance(fa, fb))
        out[k] = {"n": (len(ga), len(gb)), "essential": (len(ea), len(eb)), "bottleneck": bott, "rel": bott / scale,
                  "ess_birth": float(np.abs(ea - eb).max()) if len(ea) == len(eb) and len(ea) else 0.0}
    return out


def fmt_agree(c: dict, maxdim: int) -> str:
    parts = []
    for k in range(maxdim + 1):
        e = c[k]
        same = e["n"][0] == e["n"][1] and e["essential"][0] == e["essential"][1]
        counts = f"{e['n'][0]} bars" if same else f"**{e['n'][0]} vs {e['n'][1]} bars**"
        parts.append(f"H{k}: {counts}, d_B = 0" if e["bottleneck"] < 1e-300 else
                     f"H{k}: {counts}, d_B = {e['bottleneck']:.1e} ({e['rel']:.1e} rel.)")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------
# the parent: run everything, write the report
# --------------------------------------------------------------------------------------


def gudhi_forecast_bytes(n: int, maxdim: int) -> float:
    """Full Vietoris-Rips simplex tree up to dimension maxdim + 1, ~90 bytes a simplex."""
    from math import comb

    return GUDHI_BYTES_PER_SIMPLEX * sum(comb(n, j) for j in range(2, maxdim + 3))


def available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable:"))


def measure(cfg: dict, tool: str, paths: dict, folder: Path, repeats: int) -> dict:
    runs = []
    dgm_file = folder / f"{cfg['key']}-{tool}.npz"
    args = [str(Path(__file__).resolve()), "--worker", tool, "--data", paths[cfg["data"]], "--n", str(cfg["n"]),
            "--maxdim", str(cfg["maxdim"]), "--dgm-out", str(dgm_file)]
    if cfg.get("max_points"):
        args += ["--max-points", str(cfg["max_points"])]
    for i in range(max(1, repeats)):
        print(f"  {cfg['key']}: {tool} run {i + 1} ...", file=sys.stderr, flush=True)
        try:
            r = run_worker(args, timeout=900)
        except Exception as exc:  # subprocess.TimeoutExpired
            r = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in r:
            return {"error": r["error"][-400:], "runs": runs}
        runs.append(r)
        if r["seconds"] >= 60:  # long runs: once
            break
    import numpy as np

    z = np.load(dgm_file)
    best = min(runs, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "times": [r["seconds"] for r in runs],
            "extra": max(r["extra"] for r in runs), "method": best["method"],
            "dgms": [z[f"arr_{k}"] for k in range(len(z.files))],
            **{k: v for k, v in best.items() if k in ("covering_radius", "r_cover", "n_used", "n_simplices")}}


def make_figure(results: dict, cfgs: list[dict], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2)
    keys = [c["key"] for c in cfgs]
    w = 0.27
    for j, (tool, colour) in enumerate((("shapelens", "C0"), ("ripser", "C1"), ("gudhi", "C2"))):
        t = [results[k].get(tool, {}).get("seconds", np.nan) for k in keys]
        m = [results[k].get(tool, {}).get("extra", np.nan) / 2**20 for k in keys]
        x = np.arange(len(keys)) + (j - 1) * w
        axes[0].bar(x, t, w, color=colour, label=TOOLS[tool])
        axes[1].bar(x, m, w, color=colour, label=TOOLS[tool])
    for ax, lab in ((axes[0], "wall time (s)"), (axes[1], "peak extra RSS (MiB)")):
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(keys)))
        ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(lab)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Vietoris-Rips persistence: shapelens vs ripser.py vs GUDHI (2 shared CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(args, cfgs, results, info, load_before, load_after, wall, gudhi_notes) -> str:
    from shapelens.topology import estimate_cost

    lines = report_header(
        "Vietoris-Rips persistence: shapelens vs ripser.py vs GUDHI",
        f"benchmarks/bench_topology.py --repeats {args.repeats}{' --quick' if args.quick else ''}", args.label, info,
        load_before, load_after, wall,
        "The machine has 2 cores and was shared with other jobs during the run (a load above 2 means the benchmark got "
        "less than the whole machine); all tools of one configuration ran back to back under the same load, so ratios "
        "are fairer than absolute times.")
    # main table
    rows = []
    for c in cfgs:
        res = results[c["key"]]
        ours = res.get("shapelens", {})
        for tool in c["tools"]:
            r = res.get(tool)
            if r is None:
                continue
            conf = f"{c['key']}: {c['title']}, N = {c['n']:,}, D = {c['d']}"
            if "error" in r:
                rows.append([conf, TOOLS[tool], "failed", "", "", r["error"][-200:].replace("|", "/").replace("\n", " ")])
                continue
            times = ", ".join(fmt_seconds(t) for t in r["times"])
            if tool == "shapelens":
                ratio = "1 (ours)"
            elif "seconds" in ours:
                ratio = f"{r['seconds'] / ours['seconds']:.2f}x time, {r['extra'] / max(ours['extra'], 1):.2f}x memory"
            else:
                ratio = "n/a"
            agree = ""
            if tool != "shapelens" and "dgms" in ours:
                if c["key"] == "landmarks":
                    agree = landmark_agreement(ours, r)
                else:
                    agree = fmt_agree(compare(ours["dgms"], r["dgms"], c["maxdim"]), c["maxdim"])
            extra = ""
            if "covering_radius" in r and c.get("max_points"):
                extra = f"; covering radius {r['covering_radius']:.4f}"
            if "r_cover" in r and c.get("max_points"):
                extra = f"; r_cover {r['r_cover']:.4f}"
            if "n_simplices" in r:
                extra = f"; {r['n_simplices']:,} simplices"
            rows.append([conf, TOOLS[tool], f"**{fmt_seconds(r['seconds'])}** ({times})", fmt_bytes(r["extra"]) + extra,
                         ratio, agree])
        if c["key"] in gudhi_notes:
            note = gudhi_notes[c["key"]]
            g = results.get("h1-gudhi", {}).get("gudhi", {})
            if c["key"] == "h1" and "seconds" in g:
                n_small = next(x["n"] for x in cfgs if x["key"] == "h1-gudhi")
                note += (f" (measured {fmt_seconds(g['seconds'])} s at N = {n_small:,}; at ~N^3.5 that is about "
                         f"{g['seconds'] * (c['n'] / n_small) ** 3.5 / 60:.0f} min at N = {c['n']:,}, beyond the budget of "
                         "this benchmark)")
            rows.append([f"{c['key']}: {c['title']}, N = {c['n']:,}, D = {c['d']}", "GUDHI", "not run", "", "",
                         note])
    lines += ["### Results", "",
              "Time: best wall time in seconds (all runs in brackets); memory: peak extra resident memory of the call "
              "(the largest over the runs); ratio: peer / shapelens (above 1: shapelens is faster / smaller); agreement: "
              "the peer's diagram against shapelens' (bar counts, bottleneck distance d_B of the finite bars, absolute "
              "and relative to the largest finite death; essential bars compared by count).", "",
              markdown_table(["configuration", "tool", "time (s)", "peak extra RSS", "peer / shapelens", "agreement"],
                             rows), ""]
    # targets
    t = []
    n_of = {c["key"]: c["n"] for c in cfgs}
    h0 = results.get("h0", {})
    if all("seconds" in h0.get(k, {}) for k in ("shapelens", "ripser")):
        ratio = h0["ripser"]["seconds"] / h0["shapelens"]["seconds"]
        t.append([f"H0, N = {n_of['h0']:,}, D = 768: shapelens >= 10x faster than ripser.py (maxdim=0)", f"{ratio:.1f}x",
                  "met" if ratio >= 10 else "**NOT met**"])
    h1 = results.get("h1", {})
    if all("seconds" in h1.get(k, {}) for k in ("shapelens", "ripser")):
        ratio = h1["ripser"]["seconds"] / h1["shapelens"]["seconds"]
        t.append([f"H1, N = {n_of['h1']:,}, D = 50: shapelens no slower than the fastest peer that runs (ripser.py)",
                  f"{ratio:.2f}x", "met" if ratio >= 1 else f"**NOT met** (shapelens {100 * (1 / ratio - 1):.0f}% slower)"])
    hg = results.get("h1-gudhi", {})
    if all("seconds" in hg.get(k, {}) for k in ("shapelens", "ripser", "gudhi")):
        fastest = min(hg["ripser"]["seconds"], hg["gudhi"]["seconds"])
        ratio = fastest / hg["shapelens"]["seconds"]
        t.append([f"H1, N = {n_of['h1-gudhi']:,}, D = 50: shapelens no slower than the fastest of ripser.py and GUDHI", f"{ratio:.2f}x",
                  "met" if ratio >= 1 else f"**NOT met** (shapelens {100 * (1 / ratio - 1):.0f}% slower)"])
    if t:
        lines += ["### Targets of the issue", "", markdown_table(["target", "fastest peer / shapelens", "verdict"], t), ""]
    # forecast
    f = []
    for c in cfgs:
        res = results[c["key"]]
        n_used = c.get("max_points") or c["n"]
        est = estimate_cost(n_used, c["maxdim"], c["d"])
        cells = [f"{c['key']} (N used = {n_used:,}, maxdim = {c['maxdim']})", fmt_bytes(est["bytes"]),
                 f"{fmt_seconds(est['seconds'])} / {fmt_seconds(est['seconds_upper'])}"]
        for tool in ("shapelens", "ripser"):
            r = res.get(tool, {})
            if "seconds" in r:
                cells.append(f"{fmt_seconds(r['seconds'])} s ({r['seconds'] / est['seconds']:.2g}x typ.), "
                             f"{fmt_bytes(r['extra'])} ({r['extra'] / est['bytes']:.2g}x)")
            else:
                cells.append("n/a")
        f.append(cells)
    lines += ["### Cost forecast (`estimate_cost`) vs measured", "",
              "`estimate_cost(n_used, maxdim, d)` is what `persistence` checks against its budget before a run. "
              "Measured / forecast ratios in brackets (time against the typical forecast). For `landmarks` the "
              "forecast covers the persistence of the 1,000 landmarks only, not their selection among 50,000 points.",
              "", markdown_table(["run", "forecast memory", "forecast time typ. / upper (s)",
                                  "measured shapelens: time, memory", "measured ripser.py: time, memory"], f), ""]
    # circle check
    circ = {k: results.get(k, {}).get("ripser", {}) for k in ("circle", "gauss2", "gauss50")}
    if all("seconds" in v for v in circ.values()):
        c0 = circ["circle"]
        lines += [f"### Circle worst case (ripser.py, H1, N = {n_of['circle']})", "",
                  "The `estimate_cost` docstring says a circle costs ripser.py ~20x the time and 5x the memory of a "
                  "Gaussian cloud at N = 800. Measured here (same run, ripser.py rows above):", "",
                  markdown_table(["cloud", "ripser.py time (s)", "peak extra RSS", "circle / this cloud"],
                                 [[k, fmt_seconds(v["seconds"]), fmt_bytes(v["extra"]),
                                   f"{c0['seconds'] / v['seconds']:.1f}x time, {c0['extra'] / max(v['extra'], 1):.1f}x memory"]
                                  for k, v in circ.items()]), ""]
    return "\n".join(lines) + "\n"


def landmark_agreement(ours: dict, peer: dict) -> str:
    """Different landmark sets: both H1 diagrams lie within 2 r of the full cloud's, so their
    bottleneck distance is at most 2 (r_ours + r_peer)."""
    import gudhi
    import numpy as np

    a, b = _finite_clean(ours["dgms"][1]), _finite_clean(peer["dgms"][1])
    a, b = a[np.isfinite(a[:, 1])], b[np.isfinite(b[:, 1])]
    d = float(gudhi.bottleneck_distance(a, b))
    bound = 2.0 * (ours.get("covering_radius", 0.0) + peer.get("r_cover", 0.0))
    return (f"different landmarks: H1 {len(a)} vs {len(b)} bars, d_B = {d:.3f} "
            f"{'<=' if d <= bound else '>'} 2 (r + r') = {bound:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2, help="runs of a configuration taking under a minute (best kept)")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the script, ~1 min)")
    p.add_argument("--only", nargs="*", default=None, help="configuration keys to run (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/topology.md)")
    p.add_argument("--figure", default=None, help="figure output (default: next to --out, .png)")
    p.add_argument("--label", default="", help="label written at the top, e.g. 'smoke run'")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--maxdim", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-points", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--dgm-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.data, args.n, args.maxdim, args.max_points, args.dgm_out)
        return 0

    warnings.simplefilter("ignore")
    cfgs = [c for c in configs(args.quick) if args.only is None or c["key"] in args.only]
    info = machine_info("cpu")
    from importlib.metadata import version

    for mod in ("ripser", "gudhi", "persim"):
        try:
            info[mod] = version(mod)
        except Exception:
            info[mod] = "not installed"
    for k in ("skdim", "dadapy"):
        info.pop(k, None)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    results, gudhi_notes = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_topology_") as tmp:
        folder = Path(tmp)
        print("building the inputs ...", file=sys.stderr, flush=True)
        paths = make_data(cfgs, folder, args.seed)
        for c in cfgs:
            results[c["key"]] = {}
            tools = list(c["tools"])
            if c["key"] == "h1":
                need = gudhi_forecast_bytes(c["n"], c["maxdim"])
                gudhi_notes["h1"] = (f"full Rips complex to dimension 2: {need / 1e9:.0f} GB forecast "
                                     f"(C(N,2) + C(N,3) simplices x ~{GUDHI_BYTES_PER_SIMPLEX:.0f} B)"
                                     + (f", beyond this {fmt_bytes(_mem())} machine" if need > (_mem() or 0) else "")
                                     + "; the edge-collapse path: see h1-gudhi")
            if "gudhi" in tools and c["maxdim"] == 0:
                need = gudhi_forecast_bytes(c["n"], 0) * 1.0
                if need > 0.5 * available_bytes():
                    tools.remove("gudhi")
                    gudhi_notes[c["key"]] = f"forecast {need / 1e9:.1f} GB over half the available memory"
            for tool in tools:
                results[c["key"]][tool] = measure(c, tool, paths, folder, args.repeats)
                r = results[c["key"]][tool]
                msg = r.get("error") or f"{r['seconds']:.2f} s, {fmt_bytes(r['extra'])}"
                print(f"  -> {c['key']} {tool}: {msg}", file=sys.stderr, flush=True)
        wall = time.perf_counter() - t_start
        load_after = os.getloadavg()
        text = report(args, cfgs, results, info, load_before, load_after, wall, gudhi_notes)
    out = Path(args.out) if args.out else HERE / "results" / "topology.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_path = Path(args.figure) if args.figure else out.with_suffix(".png")
    try:
        make_figure(results, cfgs, fig_path)
        text += f"\n![times and memory]({fig_path.name})\n"
    except Exception as exc:  # the figure is optional
        print(f"figure skipped: {exc}", file=sys.stderr)
    out.write_text(text + NOTES)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _mem() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None


NOTES = """
### Notes

* **Data**: the first N MNIST training images (`shapelens.data.mnist`, 784 pixels in [0, 1]) times a seeded
  Gaussian random projection (784 x D, entries N(0, 1/D)), float32: real data with a low intrinsic dimension
  in the asked ambient dimension (D = 768 for H0, D = 50 for H1 and the landmarks; `h1` and `h1-gudhi` use the
  first 2,000 and 1,000 rows of the 50,000-row array of `landmarks`). The circle check uses uniform random
  angles on the unit circle (no noise) and standard Gaussian clouds. The parent process builds every array
  once and saves it; every tool reads the same file.
* **Calls**: shapelens `persistence(X, maxdim)` (H0: the exact torch MST in float64; H1: a float64 distance
  matrix, Prim for H0, ripser.py on the matrix for H1) and `persistence(X, 1, max_points=1000,
  landmarks="maxmin")`; ripser.py `ripser(X, maxdim=maxdim)` and `ripser(X, maxdim=1, n_perm=1000)`; GUDHI
  `RipsComplex(points=X).create_simplex_tree(max_dimension=1)` then (H1) `collapse_edges(nb_iterations=5)` and
  `expansion(2)`, then `compute_persistence()`. All on the CPU with their default threads (torch: 2).
* **Measurement**: each run is a fresh subprocess (`_common.run_worker`): load the data, one untimed warm-up
  on 200 points, then the timed call under `_common.PeakMemory` (peak extra RSS = high-water mark minus the RSS
  just before the call, reset through `/proc/self/clear_refs`). Runs under a minute are repeated (`--repeats`).
* **Agreement**: ripser.py works in float32 distances, GUDHI and shapelens' MST in float64, so agreement is up
  to float32 rounding (~1e-7 relative) against ripser.py and ~1e-15 against GUDHI for H0. For H1 shapelens
  calls ripser.py, so the H1 bars are ripser's own up to the float32 cast of the matrix.
* **Landmarks**: the two tools pick different landmark sets (shapelens starts max-min from a seeded random
  point, ripser.py from point 0), so their diagrams differ; each lies within 2 r (its covering radius) of
  the full cloud's diagram in bottleneck distance, hence the bound 2 (r + r') on their distance.
"""


if __name__ == "__main__":
    sys.exit(main())
