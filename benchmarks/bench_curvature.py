"""Top-5 Hessian eigenvalues of a 1.07M-parameter MLP on MNIST: shapelens vs PyHessian vs curvlinops + eigsh.

The problem (the same for everyone): an MLP 784-1024-256-10 (ReLU, 1,068,810 float32
parameters) trained briefly with Adam (3 epochs on the first 20,000 MNIST training images,
seed 0; the weights are cached as safetensors in ``benchmarks/cache/``), and the Hessian of its
mean cross-entropy loss over the first ``--n-data`` (default 2,000) MNIST training images, one
batch.

The reference top-5 eigenvalues come from a float64 copy of the model: scipy ``eigsh`` (ARPACK,
``which="LA"``, ``tol=1e-10``) over a plain double-backward Hessian-vector product written in
this file (independent of all three contestants), cross-checked against shapelens
``eigenvalues(Hessian(model64, ...), k=5, tol=1e-10)``; both are cached in ``benchmarks/cache/``.

The contestants run on the float32 model, each in a fresh subprocess (its wall time, its number
of Hessian-vector products, its peak extra resident memory):

* shapelens ``eigenvalues(Hessian(model, loss, (x, y)), k=5, tol=tol)`` (Lanczos with full
  reorthogonalization); HVPs counted by wrapping ``op.matvec`` (and checked against the
  result's ``n_matvec``);
* PyHessian 0.1 ``hessian(model, loss, data=(x, y), cuda=...).eigenvalues(top_n=5, tol=tol,
  maxIter=1000)`` (power iteration with deflation); HVPs counted by wrapping
  ``pyhessian.hessian.hessian_vector_product``;
* curvlinops 3.0.1 ``HessianLinearOperator(model, loss, params, [(x, y)]).to_scipy()`` with
  scipy ``eigsh(k=5, which="LA", tol=tol)``; HVPs counted by wrapping the operator's
  ``_matmat`` (one per column).

"At equal accuracy": every contestant walks the same ladder of tolerances, loosest first
(1e-1, 3e-2, 1e-2, ..., 1e-6), and the row reported is the loosest one whose five eigenvalues are
all within relative error 1e-3 of the reference (the issue's acceptance). Every step of the
ladder is shown too. The chosen tolerance is then re-run with ``--check-seeds`` (2) other
start vectors (does the choice hold beyond seed 0?), each library's single HVP is timed in its
own process (best of 5), and the chosen runs are repeated ``--repeats`` (3) times in all, the
libraries taking turns, the best time kept. A full run takes about 7 minutes on the 2-core
machine (the first one also trains the MLP, about a minute, and computes the reference, about
half a minute; both are cached). The Markdown goes to ``benchmarks/results/curvature_cpu.md``.

Install (a separate venv, so no peer can replace torch; ``make bench-curvature`` does this):

    python3 -m venv .venv-curvature
    .venv-curvature/bin/python -m pip install --upgrade pip
    .venv-curvature/bin/pip install torch==2.13.0
    .venv-curvature/bin/pip install -e .
    .venv-curvature/bin/pip install -r benchmarks/requirements-curvature.txt

Run:

    .venv-curvature/bin/python benchmarks/bench_curvature.py                  # full: 2,000 images
    .venv-curvature/bin/python benchmarks/bench_curvature.py --quick          # smoke: 256 images, prints only
    .venv-curvature/bin/python benchmarks/bench_curvature.py --device cuda    # -> results/curvature_cuda.md
    .venv-curvature/bin/python benchmarks/bench_curvature.py --tol shapelens=1e-2 pyhessian=1e-4  # no ladder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    PeakMemory,
    fmt_bytes,
    fmt_seconds,
    machine_info,
    machine_table,
    markdown_table,
    run_worker,
    sync,
)

K = 5
TARGET_ERR = 1e-3
TARGET_RATIO = 3.0
ARCH = (784, 1024, 256, 10)
TRAIN_N, TRAIN_EPOCHS, TRAIN_BATCH, TRAIN_LR, SEED = 20_000, 3, 128, 1e-3, 0
REF_TOL = 1e-10
LADDER = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6]
PYHESSIAN_MAX_ITER = 1000
CACHE = HERE / "cache"
LOADS: list[float] = []  # 1-minute load average sampled before every worker process
WEIGHTS = CACHE / f"curvature_mlp_{'-'.join(map(str, ARCH))}_seed{SEED}.safetensors"

# key -> (library, distribution, import name, call shown in the table)
METHODS = {
    "shapelens": ("shapelens", "shapelens", "shapelens", "eigenvalues(Hessian(model, loss, (x, y)), k=5, tol=tol)"),
    "shapelens-cached": ("shapelens, cached graph", "shapelens", "shapelens",
                         "eigenvalues(Hessian(model, loss, (x, y), hvp='cached-graph'), k=5, tol=tol)"),
    "pyhessian": ("PyHessian", "pyhessian", "pyhessian",
                  f"hessian(model, loss, data=(x, y)).eigenvalues(top_n=5, tol=tol, maxIter={PYHESSIAN_MAX_ITER})"),
    "curvlinops": ("curvlinops + scipy", "curvlinops-for-pytorch", "curvlinops",
                   "eigsh(HessianLinearOperator(model, loss, params, [(x, y)]).to_scipy(), k=5, which='LA', tol=tol)"),
}
INSTALL = ("python3 -m venv .venv-curvature && .venv-curvature/bin/pip install torch==2.13.0 && "
           ".venv-curvature/bin/pip install -e . && "
           ".venv-curvature/bin/pip install -r benchmarks/requirements-curvature.txt "
           "(or simply `make bench-curvature`); then run this script with .venv-curvature/bin/python")


# --------------------------------------------------------------------------------------
# the problem: model, data, reference
# --------------------------------------------------------------------------------------


def check_peers(keys) -> None:
    """Exit with a clear message when a peer library of the selected contestants is missing."""
    import importlib.util

    missing = [(METHODS[k][1], METHODS[k][2]) for k in keys
               if not k.startswith("shapelens") and importlib.util.find_spec(METHODS[k][2]) is None]
    if missing:
        names = ", ".join(f"{dist} (import {mod})" for dist, mod in missing)
        sys.exit(f"bench_curvature: missing peer package(s) {names} in {sys.executable}.\n"
                 f"Install them in a separate venv so torch is not replaced: {INSTALL}.\n"
                 f"Or leave them out with --only shapelens ...")


def make_model():
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    layers = []
    for i, (a, b) in enumerate(zip(ARCH[:-1], ARCH[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(ARCH) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def trained_model(threads: int, log=print):
    """The MLP with its trained weights: from the safetensors cache, else trained now (seconds)."""
    import torch
    from safetensors.torch import load_file, save_file

    from shapelens.data import mnist

    model = make_model()
    if WEIGHTS.is_file():
        model.load_state_dict(load_file(str(WEIGHTS)))
        return model
    log(f"training the MLP {ARCH} ({TRAIN_EPOCHS} epochs of Adam on {TRAIN_N} MNIST images) ...")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        X, y = mnist("train", limit=TRAIN_N)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        g = torch.Generator().manual_seed(SEED)
        opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
        loss_fn = torch.nn.CrossEntropyLoss()
        t0 = time.perf_counter()
        for _ in range(TRAIN_EPOCHS):
            perm = torch.randperm(len(X), generator=g)
            for i in range(0, len(X), TRAIN_BATCH):
                idx = perm[i:i + TRAIN_BATCH]
                opt.zero_grad()
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
        secs = time.perf_counter() - t0
        with torch.no_grad():
            Xt, yt = mnist("test")
            train_acc = float((model(X).argmax(1) == y).float().mean())
            test_acc = float((model(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
    finally:
        torch.set_num_threads(old)
    CACHE.mkdir(parents=True, exist_ok=True)
    meta = {"arch": "-".join(map(str, ARCH)), "train_n": str(TRAIN_N), "epochs": str(TRAIN_EPOCHS),
            "lr": str(TRAIN_LR), "batch": str(TRAIN_BATCH), "seed": str(SEED), "train_acc": f"{train_acc:.4f}",
            "test_acc": f"{test_acc:.4f}", "train_seconds": f"{secs:.1f}"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS), metadata=meta)
    log(f"trained in {secs:.1f} s: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}; cached {WEIGHTS}")
    return model


def weights_meta() -> dict:
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), framework="pt") as f:
        return dict(f.metadata() or {})


def weights_hash() -> str:
    return hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:16]


def shapelens_fingerprint() -> str:
    """sha256 of shapelens' curvature sources (operators and spectra): names the code that ran, and
    keys the reference cache so a changed Lanczos or HVP is cross-checked again."""
    import shapelens.curvature.operators as o
    import shapelens.curvature.spectra as s

    h = hashlib.sha256()
    for mod in (o, s):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:12]


def problem(n_data: int, device: str, threads: int, dtype=None):
    """(model, x, y) on ``device``: the trained MLP and the first ``n_data`` MNIST training images."""
    import torch

    from shapelens.data import mnist

    model = trained_model(threads)
    X, y = mnist("train", limit=n_data)
    x, y = torch.from_numpy(X), torch.from_numpy(y)
    if dtype is not None:
        model = model.to(dtype)
        x = x.to(dtype)
    return model.to(device), x.to(device), y.to(device)


def reference(n_data: int, device: str, threads: int, log=print) -> dict:
    """Top-5 eigenvalues of the float64 Hessian by ARPACK over an independent double-backward HVP,
    cross-checked by shapelens Lanczos; cached in ``benchmarks/cache`` (keyed by weights and data)."""
    import numpy as np
    import torch
    from scipy.sparse.linalg import LinearOperator, eigsh

    from shapelens.curvature import Hessian, eigenvalues

    path = CACHE / f"curvature_reference_{weights_hash()}_{shapelens_fingerprint()}_n{n_data}.json"
    if path.is_file():
        return json.loads(path.read_text())
    torch.set_num_threads(threads)
    model, x, y = problem(n_data, device, threads, dtype=torch.float64)
    loss_fn = torch.nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)

    # (1) plain double-backward HVP (Pearlmutter 1994) + ARPACK: independent of every contestant
    log(f"reference (1/2): scipy eigsh on a float64 double-backward HVP, n = {n}, {n_data} images, tol {REF_TOL} ...")
    t0 = time.perf_counter()
    grads = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
    count = [0]

    def mv(v):
        count[0] += 1
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(device)
        parts = list(torch.split(vt, [p.numel() for p in params]))
        hv = torch.autograd.grad(grads, params, grad_outputs=[u.view_as(p) for u, p in zip(parts, params)],
                                 retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).cpu().numpy()

    A = LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(12345).standard_normal(n)
    vals_a = np.sort(eigsh(A, k=K, which="LA", tol=REF_TOL, v0=v0, return_eigenvectors=False))[::-1]
    t_a, n_a = time.perf_counter() - t0, count[0]
    grads = A = None  # free the float64 graph before the second reference

    # (2) shapelens Lanczos on the float64 model: different HVP (forward-over-reverse), different solver
    log(f"reference (2/2): shapelens Lanczos on the float64 Hessian, tol {REF_TOL} ...")
    t0 = time.perf_counter()
    e = eigenvalues(Hessian(model, loss_fn, (x, y)), k=K, tol=REF_TOL, seed=1)
    vals_b = np.sort(e.eigenvalues)[::-1]
    t_b = time.perf_counter() - t0
    agree = float(np.max(np.abs(vals_a - vals_b) / np.abs(vals_a)))
    ref = {"eigenvalues": vals_a.tolist(), "eigsh_hvp": n_a, "eigsh_seconds": t_a,
           "shapelens_eigenvalues": vals_b.tolist(), "shapelens_hvp": int(e.n_matvec), "shapelens_seconds": t_b,
           "shapelens_residuals": [float(r) for r in e.residuals], "agreement": agree, "n_params": n,
           "n_data": n_data, "tol": REF_TOL, "device": device}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=1))
    log(f"reference: {vals_a}; shapelens agrees to {agree:.1e} (eigsh {n_a} HVPs {t_a:.0f} s, "
        f"shapelens {e.n_matvec} HVPs {t_b:.0f} s)")
    return ref


# --------------------------------------------------------------------------------------
# one contestant in a fresh process
# --------------------------------------------------------------------------------------


def make_call(key: str, model, x, y, tol: float, device: str, counter: list, seed: int = SEED):
    """A zero-argument callable: build the contestant's Hessian, return its top-5 eigenvalues
    (descending) and extra info; every HVP it makes adds to ``counter[0]``. Also returns a
    ``bare()`` callable doing exactly one HVP (for the time per product)."""
    import numpy as np
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    if key in ("shapelens", "shapelens-cached"):
        from shapelens.curvature import Hessian, eigenvalues

        mode = "cached-graph" if key == "shapelens-cached" else "forward-over-reverse"

        def build():
            op = Hessian(model, loss_fn, (x, y), hvp=mode)
            mv = op.matvec

            def counted(v):
                counter[0] += 1
                return mv(v)

            op.matvec = counted
            return op

        def call():
            e = eigenvalues(build(), k=K, tol=tol, seed=seed)
            return sorted(map(float, e.eigenvalues), reverse=True), {"n_matvec_reported": int(e.n_matvec)}

        def bare():
            op = build()
            v = torch.randn(op.dim, device=op.device)

            def once():
                return op.matvec(v)
            return once
        return call, bare

    if key == "pyhessian":
        import importlib

        ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class `hessian`)

        if not getattr(ph, "_bench_counted", False):
            orig = ph.hessian_vector_product

            def counted(gradsH, params, v):
                counter[0] += 1
                return orig(gradsH, params, v)

            ph.hessian_vector_product = counted
            ph._bench_counted = True
        cuda = str(device).startswith("cuda")

        def call():
            torch.manual_seed(seed)  # PyHessian draws its start vectors from torch's global generator
            H = ph.hessian(model, loss_fn, data=(x, y), cuda=cuda)
            vals, _ = H.eigenvalues(maxIter=PYHESSIAN_MAX_ITER, tol=tol, top_n=K)
            model.zero_grad(set_to_none=True)
            return sorted(map(float, vals), reverse=True), {}

        def bare():
            H = ph.hessian(model, loss_fn, data=(x, y), cuda=cuda)
            v = [torch.randn_like(p) for p in H.params]

            def once():
                return ph.hessian_vector_product(H.gradsH, H.params, v)
            return once
        return call, bare

    if key == "curvlinops":
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh

        def build_op():
            params = [p for p in model.parameters() if p.requires_grad]
            # check_deterministic=False: its default True spends 2 gradient passes + 2 HVPs on a self-test
            H = HessianLinearOperator(model, loss_fn, params, [(x, y)], check_deterministic=False, num_data=len(y))
            mm = H._matmat

            def counted(M):
                counter[0] += int(M[0].shape[-1])
                return mm(M)

            H._matmat = counted
            return H

        def call():
            A = build_op().to_scipy()
            v0 = np.random.default_rng(seed).standard_normal(A.shape[0])
            vals = eigsh(A, k=K, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
            return sorted(map(float, vals), reverse=True), {}

        def bare():
            H = build_op()
            v = torch.randn(H.shape[1], device=x.device)

            def once():
                return H @ v
            return once
        return call, bare
    raise KeyError(key)


def warm_up(model, x, y) -> float:
    """The warm-up every contestant's process gets before it is measured; returns its seconds.

    One forward/backward of the model on 64 images (thread pools, autograd, allocator) and one
    ``torch.func`` forward-over-reverse product on a throw-away 3-4-2 MLP: the first
    ``torch.func`` transform in a process pays a one-off initialisation (about 1.4 s of CPU here),
    a per-process cost like an import, which would otherwise land on whichever library uses
    ``torch.func`` (shapelens and curvlinops do, PyHessian does not)."""
    import torch
    from torch.func import functional_call, grad, jvp

    t0 = time.perf_counter()
    torch.nn.CrossEntropyLoss()(model(x[:64]), y[:64]).backward()
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    p = {k: v.detach() for k, v in tiny.named_parameters()}
    xt, yt = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 0, 1, 0])

    def f(q):
        return torch.nn.functional.cross_entropy(functional_call(tiny, q, (xt,)), yt)

    jvp(grad(f), (p,), ({k: torch.ones_like(v) for k, v in p.items()},))
    return time.perf_counter() - t0


def worker(key: str, tol: float | None, n_data: int, device: str, threads: int, seed: int = SEED,
           bare_repeats: int = 5) -> None:
    """Fresh process: load the problem and warm up; then, with a ``tol``, run the contestant once
    under PeakMemory; without one (``tol`` None), build its Hessian and do one HVP under PeakMemory,
    then time ``bare_repeats`` more single HVPs. Prints one JSON line."""
    import statistics

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    model, x, y = problem(n_data, device, threads)
    warm = warm_up(model, x, y)
    counter = [0]
    call, bare = make_call(key, model, x, y, tol, device, counter, seed)
    out = {"key": key, "tol": tol, "seed": seed, "threads": torch.get_num_threads(), "warmup_seconds": warm}
    if tol is not None:
        with PeakMemory(device) as pm:
            t0 = time.perf_counter()
            vals, extra = call()
            sync(device)
            secs = time.perf_counter() - t0
        out.update({"eigenvalues": vals, "n_hvp": counter[0], "seconds": secs, **extra})
    else:
        with PeakMemory(device) as pm:
            once = bare()
            once()
            sync(device)
        times = []
        for _ in range(bare_repeats):
            sync(device)
            t = time.perf_counter()
            once()
            sync(device)
            times.append(time.perf_counter() - t)
        out.update({"hvp_seconds": min(times), "hvp_median_seconds": statistics.median(times), "hvp_times": times})
    out.update({"extra": pm.extra, "peak": pm.peak, "baseline": pm.base, "method": pm.method})
    if getattr(pm, "cuda", False):
        out["cuda_extra"] = pm.cuda_extra
    print(json.dumps(out))


# --------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------


def max_rel_err(vals, ref) -> float:
    return max(abs(a - b) / abs(b) for a, b in zip(vals, ref))


def run_one(key, tol, args, seed: int = SEED) -> dict:
    """One fresh worker process; ``tol`` None measures one bare HVP instead of the eigenvalues."""
    import subprocess

    LOADS.append(os.getloadavg()[0])
    cmd = [str(Path(__file__).resolve()), "--worker", key, "--n-data", str(args.n_data), "--device", args.device,
           "--threads", str(args.threads), "--seed", str(seed)] + ([] if tol is None else ["--worker-tol", repr(tol)])
    try:
        return run_worker(cmd, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:g} s (raise --timeout)"}


def contest(key, args, ref, log) -> dict:
    """Walk the tolerance ladder (or the fixed tol) for one contestant (the chosen run is the
    loosest tol within TARGET_ERR), re-run it with other start-vector seeds, time one bare HVP.
    The timed repeats of the chosen runs are done afterwards by :func:`repeat_round_robin`."""
    fixed = args.tol.get(key)
    ladder = [fixed] if fixed is not None else LADDER
    steps, chosen = [], None
    for tol in ladder:
        log(f"{key}: tol {tol:g} ...")
        r = run_one(key, tol, args)
        if "error" in r:
            r["tol"] = tol
            steps.append(r)
            log(f"  error: {r['error'][-400:]}")
            break
        r["err"] = max_rel_err(r["eigenvalues"], ref)
        steps.append(r)
        log(f"  {r['n_hvp']} HVPs, {r['seconds']:.1f} s, max rel. error {r['err']:.1e}, "
            f"peak extra {fmt_bytes(r['extra'])}")
        if r["err"] <= TARGET_ERR:
            chosen = dict(r)
            break
    seeds = []
    if chosen is not None:
        for sd in range(SEED + 1, SEED + 1 + args.check_seeds):
            log(f"{key}: tol {chosen['tol']:g}, start-vector seed {sd} (robustness check) ...")
            r = run_one(key, chosen["tol"], args, seed=sd)
            if "error" not in r:
                r["err"] = max_rel_err(r["eigenvalues"], ref)
                log(f"  {r['n_hvp']} HVPs, {r['seconds']:.1f} s, max rel. error {r['err']:.1e}")
            seeds.append(r)
    log(f"{key}: one bare HVP (fresh process) ...")
    bare = run_one(key, None, args)
    if "error" in bare:
        log(f"  error: {bare['error'][-400:]}")
    else:
        log(f"  {bare['hvp_seconds']:.3f} s per HVP, peak extra {fmt_bytes(bare['extra'])} (build + one HVP)")
    if chosen is not None:
        chosen["times"] = [chosen["seconds"]]
    return {"steps": steps, "chosen": chosen, "fixed": fixed is not None, "bare": bare, "seeds": seeds}


def repeat_round_robin(res, args, log) -> None:
    """``--repeats - 1`` more timed runs of every chosen tolerance, in turns (A, B, C, A, B, C, ...)
    so that a change in the machine's load hits every contestant alike; the best time is kept."""
    for i in range(args.repeats - 1):
        for key, r in res.items():
            c = r["chosen"]
            if c is None:
                continue
            log(f"{key}: timed repeat {i + 2} of {args.repeats} (tol {c['tol']:g}) ...")
            again = run_one(key, c["tol"], args)
            if "error" not in again:
                c["times"].append(again["seconds"])
                log(f"  {again['seconds']:.1f} s")
    for r in res.values():
        if r["chosen"] is not None:
            r["chosen"]["seconds"] = min(r["chosen"]["times"])


def fmt_err(e) -> str:
    return "n/a" if e is None else f"{e:.1e}"


def report(args, info, ref, res, meta, log) -> str:
    keys = list(res)
    ph = res.get("pyhessian", {}).get("chosen")
    rows = []
    for key in keys:
        lib, _, _, call = METHODS[key]
        c = res[key]["chosen"]
        if c is None:
            last = res[key]["steps"][-1] if res[key]["steps"] else {}
            rows.append([lib, f"`{call}`", "none reached 1e-3", fmt_err(last.get("err")), "", "", "", "", "", ""])
            continue
        b = res[key].get("bare") or {}
        hvp_s = b.get("hvp_seconds")
        over = "n/a" if hvp_s is None else f"{max(c['seconds'] - c['n_hvp'] * hvp_s, 0.0):.1f}"
        vs = ""
        if ph is not None and key != "pyhessian":
            vs = f"{ph['n_hvp'] / c['n_hvp']:.1f}x fewer HVPs, {ph['seconds'] / c['seconds']:.1f}x faster"

        def mem(d):
            if not d or "extra" not in d:
                return "n/a"
            return fmt_bytes(d["extra"]) + (f" (+{fmt_bytes(d['cuda_extra'])} GPU)" if "cuda_extra" in d else "")

        rows.append([lib, f"`{call}`", f"{c['tol']:g}", fmt_err(c["err"]), c["n_hvp"], fmt_seconds(c["seconds"]),
                     f"{c['seconds'] / c['n_hvp']:.3f}", "n/a" if hvp_s is None else f"{hvp_s:.3f}", over, mem(c),
                     mem(b), vs])
    header = ["library", "call", "tol used", "max rel. error", "HVPs", "time (s)", "time / HVP (s)",
              "one bare HVP (s)", "solver overhead (s)", "peak extra RSS", "peak extra RSS, build + one HVP",
              "vs PyHessian"]
    rows = [r + [""] * (len(header) - len(r)) for r in rows]

    ladder_rows = []
    for key in keys:
        for s in res[key]["steps"]:
            if "error" in s:
                ladder_rows.append([METHODS[key][0], f"{s['tol']:g}", "error", "", "", "", s["error"][-120:].replace("|", "/")])
                continue
            ok = "yes" if s["err"] <= TARGET_ERR else "no"
            ladder_rows.append([METHODS[key][0], f"{s['tol']:g}", s["n_hvp"], fmt_seconds(s["seconds"]),
                                fmt_err(s["err"]), ok, " ".join(f"{v:.5g}" for v in s["eigenvalues"])])

    verdict = []
    sl = res.get("shapelens", {}).get("chosen")
    if sl is not None and ph is not None:
        hr, tr = ph["n_hvp"] / sl["n_hvp"], ph["seconds"] / sl["seconds"]
        verdict = [
            f"**Against the issue's target** (at least {TARGET_RATIO:g}x fewer HVPs and at least {TARGET_RATIO:g}x "
            f"faster than PyHessian, both within relative error {TARGET_ERR:g} on all five eigenvalues): "
            f"shapelens needs **{hr:.1f}x fewer HVPs** ({sl['n_hvp']} vs {ph['n_hvp']}; "
            f"{'met' if hr >= TARGET_RATIO else 'NOT met'}) and is **{tr:.1f}x faster** "
            f"({fmt_seconds(sl['seconds'])} s vs {fmt_seconds(ph['seconds'])} s; "
            f"{'met' if tr >= TARGET_RATIO else 'NOT met'}).",
            "",
        ]
        bs = (res["shapelens"].get("bare") or {}).get("hvp_seconds")
        bp = (res["pyhessian"].get("bare") or {}).get("hvp_seconds")
        if bs and bp:
            verdict += [
                f"Where the time goes: one shapelens HVP costs {bs / bp:.1f}x one PyHessian HVP here "
                f"({bs:.3f} s vs {bp:.3f} s: `torch.func` forward-over-reverse recomputes the forward pass, PyHessian "
                f"differentiates a retained graph), so the HVPs alone would give {hr * bp / bs:.1f}x; the rest is the "
                "solver overhead column below.",
                "",
            ]
    slc = res.get("shapelens-cached", {}).get("chosen")
    if slc is not None and ph is not None:
        verdict += [
            f"With `hvp='cached-graph'` (each batch's gradient graph kept between products, as PyHessian does): "
            f"**{ph['n_hvp'] / slc['n_hvp']:.1f}x fewer HVPs** and **{ph['seconds'] / slc['seconds']:.1f}x faster** "
            f"({fmt_seconds(slc['seconds'])} s).",
            "",
        ]
    if sl is None and "shapelens" in res and "pyhessian" in res:
        verdict = ["**Against the issue's target**: cannot be judged, a contestant reached no tolerance within "
                   f"{TARGET_ERR:g} (see the ladder).", ""]

    ref_vals = ref["eigenvalues"]
    ref_tab = markdown_table(
        ["", *[f"λ{i + 1}" for i in range(K)]],
        [["eigsh (ARPACK) on a plain double-backward HVP, float64", *[f"{v:.8g}" for v in ref_vals]],
         ["shapelens Lanczos, float64", *[f"{v:.8g}" for v in ref["shapelens_eigenvalues"]]]])
    quick = args.quick or args.label
    label = f" — {args.label or 'quick smoke run'}" if quick else ""
    cmd = "benchmarks/bench_curvature.py" + (" --quick" if args.quick else "") + \
        (f" --n-data {args.n_data}" if not args.quick and args.n_data != 2000 else "") + \
        (f" --device {args.device}" if args.device != "cpu" else "") + \
        (f" --repeats {args.repeats}" if args.repeats != 3 else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "") + \
        (f" --check-seeds {args.check_seeds}" if args.check_seeds != 2 else "") + \
        (" --busy-note" if args.busy_note else "") + \
        ("" if not args.tol else " --tol " + " ".join(f"{k}={v:g}" for k, v in args.tol.items()))
    head = [f"# Top-5 Hessian eigenvalues of a 1.07M-parameter MLP on MNIST: shapelens vs PyHessian vs curvlinops{label}",
            "",
            f"Written by `.venv-curvature/bin/python {cmd}` (one run; every contestant in a fresh subprocess, one "
            "after the other). Re-run on a quiet machine with `make bench-curvature`.",
            ""]
    loads = LOADS + [os.getloadavg()[0]]
    if args.busy_note or max(loads) > 0.75 * (os.cpu_count() or 1) or quick:
        head += [f"> **Timings may be perturbed:** {'this was a reduced run; ' if quick else ''}the machine was shared "
                 f"with other jobs while it ran (1-minute load average between {min(loads):.1f} and "
                 f"{max(loads):.1f} on {os.cpu_count()} cores, sampled before each process). HVP counts and errors "
                 "are deterministic; times and ratios of times are not. Re-run `make bench-curvature` on a quiet "
                 "machine for the reference table.", ""]
    if getattr(args, "changed_sources", None):
        head += [f"> **Warning:** {args.changed_sources}", ""]
    head += verdict
    problem_lines = [
        "### Problem",
        "",
        f"* Model: MLP {'-'.join(map(str, ARCH))} with ReLU, **{ref['n_params']:,} parameters**, float32, trained "
        f"with Adam (lr {TRAIN_LR:g}, batch {TRAIN_BATCH}, {TRAIN_EPOCHS} epochs on the first {TRAIN_N:,} MNIST "
        f"training images, seed {SEED}; train accuracy {meta.get('train_acc', '?')}, test accuracy "
        f"{meta.get('test_acc', '?')}; weights cached in `benchmarks/cache/{WEIGHTS.name}`).",
        f"* Hessian: of the mean cross-entropy over the first **{args.n_data:,} MNIST training images** (one batch, "
        "the same tensors for every library), with respect to all parameters, evaluated in eval mode.",
        f"* Wanted: the {K} largest (algebraic) eigenvalues, each within relative error {TARGET_ERR:g} of the reference.",
        "",
        "### Reference eigenvalues",
        "",
        ref_tab,
        "",
        f"The two references use different HVP code (double backward vs `torch.func` forward-over-reverse) and different "
        f"solvers (implicitly restarted Lanczos vs Lanczos with full reorthogonalization); they agree to "
        f"**{ref['agreement']:.1e}** (max relative difference). The first row is the reference. Cost: eigsh "
        f"{ref['eigsh_hvp']} HVPs in {fmt_seconds(ref['eigsh_seconds'])} s, shapelens {ref['shapelens_hvp']} HVPs in "
        f"{fmt_seconds(ref['shapelens_seconds'])} s (both tol {ref['tol']:g}, float64, computed once and cached).",
        "",
    ]
    if ref["agreement"] > 1e-6:
        problem_lines += [f"> **Warning:** the two references differ by {ref['agreement']:.1e} > 1e-6.", ""]
    table = [
        "### Result at equal accuracy (the loosest tolerance reaching 1e-3 on all five)",
        "",
        markdown_table(header, rows),
        "",
    ]
    if any(res[k]["chosen"] and len(res[k]["chosen"].get("times", [])) > 1 for k in keys):
        table += ["Timed runs of the chosen tolerance (s, best kept): " + "; ".join(
            f"{METHODS[k][0]}: " + ", ".join(fmt_seconds(t) for t in res[k]["chosen"]["times"])
            for k in keys if res[k]["chosen"]), ""]
    seed_rows = []
    for key in keys:
        c = res[key]["chosen"]
        if c is None or not res[key].get("seeds"):
            continue
        runs = [c] + [r for r in res[key]["seeds"] if "error" not in r]
        errs = [r["err"] for r in runs]
        hv = [r["n_hvp"] for r in runs]
        seed_rows.append([METHODS[key][0], f"{c['tol']:g}", ", ".join(str(r.get("seed", SEED)) for r in runs),
                          ", ".join(str(h) for h in hv), ", ".join(fmt_err(e) for e in errs),
                          "yes" if max(errs) <= TARGET_ERR else f"no ({sum(e > TARGET_ERR for e in errs)} of {len(errs)})"])
    if seed_rows:
        table += [
            "### Robustness: the chosen tolerance with other start vectors",
            "",
            "The ladder is walked with seed 0; the chosen tolerance is then re-run with other seeds of the random "
            "start vector (times not shown: same order as above).",
            "",
            markdown_table(["library", "tol", "seeds", "HVPs", "max rel. error", "all ≤ 1e-3"], seed_rows),
            "",
        ]
    table += [
        "### Every tolerance tried (loosest first; the ladder stops at the first that reaches 1e-3)",
        "",
        markdown_table(["library", "tol", "HVPs", "time (s)", "max rel. error", "≤ 1e-3", "eigenvalues found"],
                       ladder_rows),
        "",
    ]
    warms = [s["warmup_seconds"] for k in keys for s in res[k]["steps"] if "warmup_seconds" in s]
    warm_s = f"{min(warms):.1f}–{max(warms):.1f}" if warms else "n/a"
    notes = [
        "### Notes",
        "",
        "* **Tolerances.** Each library's `tol` means something different: shapelens stops when every wanted Ritz "
        "pair has residual ≤ tol · max|θ|; PyHessian stops each power iteration when the Rayleigh quotient changes "
        f"by less than tol (relative) between two iterations (maxIter raised from its default 100 to "
        f"{PYHESSIAN_MAX_ITER} so that tol, not the cap, decides); ARPACK stops when the Ritz residuals are ≤ tol · |θ|. "
        "So every library walks the same ladder of tolerances, loosest first, and is reported at the first one "
        "whose five eigenvalues are all within 1e-3 of the reference. The start vector is seeded (seed 0) for all "
        "three; the chosen tolerance is re-run with other seeds (table above), which shows whether the choice "
        "depended on a lucky start.",
        "* **HVPs** are counted by wrapping each library's own product: shapelens `op.matvec` (equal to the "
        "result's `n_matvec`), PyHessian's `pyhessian.hessian.hessian_vector_product`, curvlinops' "
        "`HessianLinearOperator._matmat` (columns). PyHessian builds the gradient graph once (one forward and "
        "`backward(create_graph=True)` over the batch, inside the timed call) and then each HVP is one "
        "double-backward pass; shapelens and curvlinops recompute the forward pass in every product "
        "(`torch.func`, forward-over-reverse), which is what lets them stream many batches in bounded memory.",
        "* **Time** is the wall time of one call: building the library's Hessian object plus the eigenvalue "
        "computation (one fresh process per run), after a shared warm-up in the same process (one forward/backward of the model on 64 images, "
        "and one `torch.func` product on a throw-away 3-4-2 MLP, because the first `torch.func` transform in a "
        f"process costs a one-off initialisation: the whole warm-up took {warm_s} s per process here). "
        "**One bare HVP** is the "
        "best of 5 single products of that library, timed in another fresh process after building its Hessian "
        "object and one untimed product; **solver overhead** = time − HVPs × bare HVP (the eigensolver's own "
        "work: orthogonalization, Ritz values, numpy/torch transfers; for PyHessian also its one "
        "`backward(create_graph=True)`).",
        "* **Peak extra RSS**: the resident-set high-water mark during the call minus the resident set just "
        "before it, in the contestant's own fresh process (`/proc/self/clear_refs` reset; see "
        "`benchmarks/_common.py`). It includes the Krylov basis (shapelens keeps all Lanczos vectors in float64, "
        "8.6 MB each here; ARPACK keeps ncv = 20 of them; PyHessian keeps its converged eigenvectors in float32) "
        "and the autograd graph. The second memory column is the same measurement around building the library's "
        "Hessian object and doing one product (the HVP's own footprint; for PyHessian the retained "
        "`create_graph` graph).",
        f"* Threads: `torch.set_num_threads({args.threads})` in every process; scipy's ARPACK and numpy use their "
        "default BLAS threads. curvlinops is built with `check_deterministic=False` (its default self-test costs two "
        "extra gradient passes and two HVPs) and `num_data` given.",
        f"* Times are the best of {args.repeats} runs of the chosen tolerance, each in a fresh process (all runs listed "
        "under the table; the first is the ladder's run, the others come after all ladders, the contestants taking "
        "turns so that a change in the machine's load hits all alike); the ladder and the seed checks are single runs.",
        "* Peers are installed in their own venv (`benchmarks/requirements-curvature.txt`) with torch pinned, so the "
        "very same torch build runs all three.",
    ]
    mach = ["### Machine", "", machine_table(info), ""]
    return "\n".join(head + mach + problem_lines + table + notes) + "\n"


def run(args, log) -> str:
    import torch

    from importlib.metadata import PackageNotFoundError, version

    keys = [k for k in METHODS if args.only is None or k in args.only]
    check_peers(keys)
    fingerprint = shapelens_fingerprint()
    torch.set_num_threads(args.threads)
    trained_model(args.threads, log=log)
    meta = weights_meta()
    ref = reference(args.n_data, args.device, args.threads, log=log)
    log(f"reference top-{K}: {ref['eigenvalues']} (cross-check {ref['agreement']:.1e})")
    res = {key: contest(key, args, ref["eigenvalues"], log) for key in keys}
    repeat_round_robin(res, args, log)
    info = machine_info(args.device)
    for k in ("sklearn", "skdim", "dadapy"):
        info.pop(k, None)
    for dist in ("pyhessian", "curvlinops-for-pytorch", "backpack-for-pytorch"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = "not installed"
    info["torch threads"] = args.threads
    info["shapelens curvature sources (sha256)"] = fingerprint
    if shapelens_fingerprint() != fingerprint:
        args.changed_sources = (f"shapelens' curvature sources changed while this benchmark ran ({fingerprint} at "
                                f"the start, {shapelens_fingerprint()} at the end): later shapelens runs may have used "
                                "the new code. Re-run.")
        log("WARNING: " + args.changed_sources)
    return report(args, info, ref, res, meta, log)


def parse_tols(items) -> dict:
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        if k not in METHODS or not v:
            raise SystemExit(f"--tol takes KEY=VALUE with KEY in {', '.join(METHODS)}; got {it!r}.")
        out[k] = float(v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-data", type=int, default=None, help="MNIST training images in the Hessian (default 2000; 256 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 images, prints the table (writes only with --out)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every process (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs of each chosen tolerance in fresh processes, best kept (default 3)")
    p.add_argument("--only", nargs="+", choices=list(METHODS), help="run only these contestants")
    p.add_argument("--tol", nargs="+", metavar="KEY=TOL", help="fixed tolerance per contestant (skips its ladder)")
    p.add_argument("--check-seeds", type=int, default=2,
                   help="re-run each chosen tolerance with this many other start-vector seeds (default 2)")
    p.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per contestant run (default 3600)")
    p.add_argument("--out", default=None, help="Markdown file (default benchmarks/results/curvature_<cpu|cuda>.md)")
    p.add_argument("--label", default="", help="label written at the top, e.g. 'smoke run'")
    p.add_argument("--busy-note", action="store_true", help="mark the timings as taken on a busy machine")
    p.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--worker-tol", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n_data is None:
        args.n_data = 256 if args.quick else 2000
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda was asked for but CUDA is not available here; use --device cpu (or auto).")
    if args.worker:
        worker(args.worker, args.worker_tol, args.n_data, args.device, args.threads, args.seed)
        return 0
    args.tol = parse_tols(args.tol)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    warnings.simplefilter("ignore")
    text = run(args, log)
    out = args.out or (None if args.quick else str(HERE / "results" / f"curvature_{args.device.split(':')[0]}.md"))
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
