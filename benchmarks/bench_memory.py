"""Peak memory and time of shapelens TwoNN on a large random point cloud.

Default (the issue's acceptance check): N = 200,000 Gaussian points in D = 768 (float32,
seeded), ``TwoNN(device="cpu")``; target: peak resident memory under 4 GB. The fit runs in a
fresh subprocess which generates the data itself, so the figure is the whole process's peak
RSS (interpreter, torch, the 0.6 GB input and everything the fit allocates), read as the
``VmHWM`` high-water mark (``ru_maxrss``) at the end; the extra memory of the fit alone (peak
minus the RSS just before it, see ``benchmarks/_common.py``) is reported too.

GPU mode (needs a CUDA device; not runnable on the 2-core CPU machines):

    .venv/bin/python benchmarks/bench_memory.py --n 1000000 --device cuda

generates N = 1,000,000 x 768 points on the GPU, times ``TwoNN(device="cuda")`` and the GPU's
matrix-multiply bound for the same work (the float32 products ``X @ X.T``, N x N x D
multiply-adds, timed on ``--bound-blocks`` evenly spread row blocks of 4096 and extrapolated
to all of them), and reports the ratio (the issue's target: within 1.5x) plus host peak RSS
and ``torch.cuda.max_memory_allocated``. Result to ``benchmarks/results/memory_cuda.md``.

    .venv/bin/python benchmarks/bench_memory.py                          # N = 200k, CPU
    .venv/bin/python benchmarks/bench_memory.py --n 20000 --label smoke  # quick check
"""

from __future__ import annotations

import argparse
import json
import sys
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
    machine_table,
    markdown_table,
    matmul_bound,
    peak_rss_bytes,
    rss_bytes,
    run_worker,
)

TARGET_RSS = 4 * 10**9  # 4 GB
TARGET_GPU_RATIO = 1.5


def worker(n: int, d: int, device: str, seed: int, bound: bool, bound_blocks: int | None, repeats: int) -> None:
    """Fresh process: generate the data, fit TwoNN once, (optionally) time the bound; print JSON."""
    import torch

    from shapelens.dimension import TwoNN

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    g = torch.Generator(device=device).manual_seed(seed)
    X = torch.randn((n, d), generator=g, dtype=torch.float32, device=device)
    gen_s = time.perf_counter() - t0
    rss_data = rss_bytes()
    est = TwoNN(device=device)
    with PeakMemory(device) as pm:
        t0 = time.perf_counter()
        est.fit(X)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        fit_s = time.perf_counter() - t0
    out = {
        "n": n, "d": d, "device": device, "seed": seed,
        "dimension": float(est.dimension_), "dimension_std": float(est.dimension_std_),
        "n_duplicates": int(est.n_duplicates_),
        "generate_seconds": gen_s, "fit_seconds": fit_s,
        "rss_before_fit": rss_data, "fit_extra": pm.extra, "peak_rss": peak_rss_bytes(), "method": pm.method,
    }
    if getattr(pm, "cuda", False):
        out["cuda_extra"] = pm.cuda_extra
        out["cuda_peak"] = pm.cuda_peak
    if bound:
        b = matmul_bound(X, repeats=repeats, device=device, sample_blocks=bound_blocks)
        out["bound"] = {k: v for k, v in b.items() if k != "times"}
    print(json.dumps(out))


def report(r: dict, args) -> str:
    device = args.device
    gpu = device.startswith("cuda")
    label = f" — {args.label}" if args.label else ""
    lines = [
        f"# Large-N memory and time: shapelens TwoNN, N = {r['n']:,}, D = {r['d']}{label}",
        "",
        f"Written by `benchmarks/bench_memory.py --n {r['n']} --d {r['d']} --device {device}"
        f"{(' --bound --bound-blocks ' + str(args.bound_blocks)) if args.bound else ''}"
        f"{(' --label ' + repr(args.label)) if args.label else ''}`.",
        "",
    ]
    if args.label:
        lines += [f"> **{args.label}.** Reduced or noisy run; re-run with the defaults on a quiet machine for the "
                  "reference numbers.", ""]
    lines += ["### Machine", "", machine_table(machine_info(device)), "", "### Result", ""]
    rows = [
        ["data", f"{r['n']:,} x {r['d']} standard Gaussian, float32, seed {r['seed']} "
                 f"({fmt_bytes(4 * r['n'] * r['d'])}), generated on `{device}`"],
        ["TwoNN estimate", f"{r['dimension']:.2f} ± {r['dimension_std']:.2f} (duplicates dropped: {r['n_duplicates']})"],
        ["TwoNN wall time", f"{fmt_seconds(r['fit_seconds'])} s"],
        ["peak RSS of the whole process", f"**{fmt_bytes(r['peak_rss'])}** ({r['peak_rss'] / 1e9:.2f} GB; target < 4 GB: "
                                          f"{'met' if r['peak_rss'] < TARGET_RSS else 'NOT met'})"],
        ["RSS before the fit (interpreter + torch + data)", fmt_bytes(r["rss_before_fit"])],
        ["extra RSS of the fit (peak - before)", f"{fmt_bytes(r['fit_extra'])} (method: {r['method']})"],
    ]
    if gpu:
        rows.append(["GPU memory: peak allocated (extra over the data)",
                     f"{fmt_bytes(r['cuda_peak'])} ({fmt_bytes(r['cuda_extra'])})"])
    if "bound" in r:
        b = r["bound"]
        ratio = r["fit_seconds"] / b["seconds"]
        how = (f"extrapolated from {args.bound_blocks} row blocks of {b['block']}" if b["extrapolated"]
               else f"all row blocks of {b['block']}")
        rows.append(["matrix-multiply bound (float32 X @ X.T, N x N x D)",
                     f"{fmt_seconds(b['seconds'])} s ({b['gflops']:.0f} GFLOP/s; {how}); upper triangle only: "
                     f"{fmt_seconds(b['half_seconds'])} s"])
        target = f"; target ≤ {TARGET_GPU_RATIO}" if gpu else ""
        rows.append(["TwoNN time / bound", f"**{ratio:.2f}**{target}"])
    lines += [markdown_table(["", ""], rows), ""]
    lines += [
        "### Notes",
        "",
        "* The fit runs in a fresh subprocess that generates its own data (`torch.randn`, float32, seeded), so "
        "the peak RSS is that of a process holding exactly one copy of the input. Peak RSS is the `VmHWM` "
        "high-water mark of that process (`ru_maxrss`). The fit's own extra memory is measured by resetting the "
        "mark just before it (`/proc/self/clear_refs`, see `benchmarks/_common.py`).",
        "* shapelens' kNN works in blocks sized to a memory budget (default: a quarter of the available memory, "
        "capped at 2 GiB on CPU; a quarter of the free GPU memory on CUDA) and never forms the N x N matrix.",
        "* The bound counts all N x N x D products; shapelens' symmetric kNN computes only the blocks on and "
        "above the diagonal (about half), so its ratio can be below 1.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="number of points (default 200000)")
    p.add_argument("--d", type=int, default=768, help="ambient dimension (default 768)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bound", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the matrix-multiply bound (default: on for cuda, off for cpu where it costs minutes)")
    p.add_argument("--bound-blocks", type=int, default=8,
                   help="row blocks of 4096 timed for the bound, extrapolated to all (default 8; 0 = all blocks)")
    p.add_argument("--repeats", type=int, default=2, help="repeats of the bound timing (best kept)")
    p.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/memory_<cpu|cuda>.md)")
    p.add_argument("--label", default="", help="label written at the top, e.g. 'smoke run'")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if args.bound is None:
        args.bound = gpu
    blocks = None if args.bound_blocks == 0 else args.bound_blocks
    if args.worker:
        worker(args.n, args.d, args.device, args.seed, args.bound, blocks, args.repeats)
        return 0
    if gpu:
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda was asked for but CUDA is not available on this machine; run it where a GPU is, "
                    "or use --device cpu.")
    cmd = [str(Path(__file__).resolve()), "--worker", "--n", str(args.n), "--d", str(args.d), "--device", args.device,
           "--seed", str(args.seed), "--bound-blocks", str(args.bound_blocks), "--repeats", str(args.repeats),
           "--bound" if args.bound else "--no-bound"]
    print(f"running TwoNN on N={args.n}, D={args.d}, device={args.device} in a subprocess ...", file=sys.stderr, flush=True)
    r = run_worker(cmd)
    if "error" in r:
        print(r["error"], file=sys.stderr)
        return 1
    text = report(r, args)
    out = Path(args.out) if args.out else HERE / "results" / f"memory_{'cuda' if gpu else 'cpu'}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
