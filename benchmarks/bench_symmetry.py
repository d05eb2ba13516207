"""Equivariant bases: shapelens vs EMLP (parity of dimensions, solve times), and GroupConv2d vs Conv2d.

Three sections, one Markdown report (``benchmarks/results/symmetry.md``, figure ``symmetry.png``):

* **Parity.** For about twenty pairs ``rep_in -> rep_out`` of SO(2), O(2), SO(3), O(3) and S_n
  (tensor powers, duals, direct sums with trivial summands) the dimension of the space of
  equivariant linear maps computed by ``shapelens.symmetry.reps.equivariant_basis`` is compared
  with EMLP's (Finzi, Welling & Wilson 2021, ``pip install emlp``) and with the closed form where
  one is known (Schur's lemma on the decomposition into irreducibles; Bell numbers for S_n,
  Maron et al. 2019). Beyond the dimension, the two bases are compared as subspaces (largest
  principal-angle sine between them) and both are checked against the same judge: the
  equivariance residual ``max |rho_out(g) W - W rho_in(g)|`` on 5 group elements sampled by
  shapelens (Haar for the compact groups, uniform for S_n).
* **Solve times.** O(3) and SO(3) tensor representations ``V**a -> V**b`` up to rank 4 on each
  side (``V**4 -> V**4``: 6,561 unknowns), and S_n for n = 4, 8, 12, 16 (``V -> V``,
  ``V**2 -> V``, ``V**2 -> V**2``: up to 65,536 unknowns). Every case runs in a **fresh process**
  per library with a wall-clock cap (``--cap``, default 120 s; a case that does not finish is
  recorded as a timeout): the *first* call (shapelens: basis cache bypassed; EMLP: its solution
  cache ``Rep.solcache`` emptied, so the time includes JAX tracing and XLA compilation) and the
  best of up to 3 *warm* calls (same process, caches emptied again, compiled code kept).
* **GroupConv2d.** ``shapelens.symmetry.gconv.GroupConv2d(C, C, 3, group, padding=1)`` (input
  ``(B, C, |G|, 28, 28)``, p4 and p4m, Cohen & Welling 2016) against ``nn.Conv2d`` with the same
  output size (``C|G| -> C|G|`` channels, |G| times the parameters) and against ``nn.Conv2d`` with
  about the same parameter count (``C' = round(C sqrt|G|)`` channels in and out): forward
  (``torch.no_grad``) and forward + backward (``out.sum().backward()``, input requiring grad as
  for an inner layer), median of repeats, one process, the torch thread count reported.

EMLP needs an old JAX stack and lives in its own virtual environment; this script (main venv)
calls ``benchmarks/emlp_side.py`` with that environment's interpreter:

    python3.11 -m venv .venv-emlp
    .venv-emlp/bin/python -m pip install --upgrade pip
    .venv-emlp/bin/pip install -r benchmarks/requirements-emlp.txt
    .venv/bin/python benchmarks/bench_symmetry.py                      # full (~13 min on 2 cores)
    .venv/bin/python benchmarks/bench_symmetry.py --quick --label smoke  # ~2 min, small cases
    .venv/bin/python benchmarks/bench_symmetry.py --only parity gconv   # sections

``--emlp-python`` points at another interpreter; ``--no-emlp`` runs the shapelens side alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import fmt_seconds, machine_info, machine_table, markdown_table  # noqa: E402
from emlp_side import group_spec, parse_rep  # noqa: E402

DEFAULT_EMLP_PYTHON = ROOT / ".venv-emlp" / "bin" / "python"
SECTIONS = ("parity", "timing", "gconv")

# (group, in, out, closed-form dimension or None, where the closed form comes from)
PARITY = [
    ("SO2", "V", "V", 2, "R^2 = rho_1 of SO(2) is of complex type: End = C"),
    ("O2", "V", "V", 1, "Schur: V irreducible of real type"),
    ("SO2", "V**2", "V**2", 6, "V x V = 2 x 1 + rho_2: 2^2 + 2"),
    ("O2", "V**2", "V**2", 3, "V x V = 1 + det + rho_2: 1 + 1 + 1"),
    ("SO3", "V", "V", 1, "Schur"),
    ("O3", "V", "V", 1, "Schur"),
    ("SO3", "dual(V)", "V", 1, "V* = V (orthogonal)"),
    ("SO3", "V**2", "V", 1, "the Levi-Civita symbol (cross product)"),
    ("O3", "V**2", "V", 0, "odd rank: -I acts as -1"),
    ("SO3", "V**2", "V**2", 3, "V x V = D0 + D1 + D2"),
    ("O3", "V**2", "V**2", 3, "three pairings (Brauer)"),
    ("O3", "V**3", "V", 3, "three pairings (Brauer)"),
    ("SO3", "V**3", "V**2", 6, "V^3 = D0 + 3 D1 + 2 D2 + D3 against D0 + D1 + D2"),
    ("O3", "V**3", "V**2", 0, "odd rank: -I acts as -1"),
    ("O3", "V**3", "V**3", 15, "15 pairings of 6 points (Brauer, d = 3 >= 3)"),
    ("SO3", "V+V**2", "1+V", 3, "V->V, V^2->1, V^2->V"),
    ("O3", "V+V**2", "1+V", 2, "V->V, V^2->1"),
    ("S5", "V", "V", 2, "DeepSets: a I + b 11^T (Bell(2))"),
    ("S5", "V**2", "V", 5, "Bell(3)"),
    ("S5", "V**2", "V**2", 15, "Bell(4) (Maron et al. 2019)"),
    ("S3", "V**2", "V**2", 14, "partitions of 4 points into at most 3 blocks"),
    ("S4", "1+V", "1+V**2", 1 + 2 + 1 + 5, "1->1 (1), 1->V^2 (2), V->1 (1), V->V^2 (5)"),
]
PARITY = [dict(zip(("group", "in", "out", "expected", "why"), c)) for c in PARITY]


def timing_cases(quick: bool) -> list[dict]:
    """The timed cases: O(3)/SO(3) tensor maps up to rank 4 each side, S_n maps for n up to 16."""
    if quick:
        tensor = [(1, 1), (2, 1), (2, 2)]
        ns = (4, 8)
    else:
        tensor = [(1, 1), (2, 1), (2, 2), (3, 1), (3, 3), (4, 2), (4, 4)]
        ns = (4, 8, 12, 16)
    cases = []
    for G in ("O3", "SO3"):
        for a, b in tensor:
            cases.append({"group": G, "in": f"V**{a}" if a > 1 else "V", "out": f"V**{b}" if b > 1 else "V"})
    for n in ns:
        for a, b in ((1, 1), (2, 1), (2, 2)):
            cases.append({"group": f"S{n}", "in": f"V**{a}" if a > 1 else "V", "out": f"V**{b}" if b > 1 else "V"})
    for i, c in enumerate(cases):
        c["id"] = f"t{i}"
    return cases


def gconv_configs(quick: bool) -> list[dict]:
    if quick:
        return [{"group": "p4", "C": 8, "B": 8, "H": 28}]
    return [{"group": "p4", "C": 16, "B": 64, "H": 28}, {"group": "p4m", "C": 16, "B": 64, "H": 28},
            {"group": "p4", "C": 32, "B": 64, "H": 28}]


# --------------------------------------------------------------------------------------
# the shapelens side
# --------------------------------------------------------------------------------------


def shapelens_group(name: str):
    from shapelens.symmetry import groups

    kind, n = group_spec(name)
    if kind == "S":
        return groups.symmetric(n)
    for attr in (f"{kind}{n}", kind):  # SO3() as written today; SO(3) if that is the spelling
        fn = getattr(groups, attr, None)
        if fn is not None:
            return fn() if attr != kind else fn(n)
    raise ValueError(f"shapelens.symmetry.groups has no constructor for {name}")


def shapelens_reps(case: dict):
    from shapelens.symmetry.reps import standard, trivial

    G = shapelens_group(case["group"])
    ops = {"V": standard(G), "trivial": lambda k: trivial(G, k), "add": lambda a, b: a + b,
           "mul": lambda a, b: a * b, "pow": lambda a, k: a ** k, "dual": lambda a: a.dual()}
    return G, parse_rep(case["in"], ops), parse_rep(case["out"], ops)


# shapelens' internal solvers, by the private function each one runs (the worker wraps them to record
# which path ``equivariant_basis(method="auto")`` took; a name missing in a later version is skipped)
SOLVER_FUNCS = {"_orbit_basis": "orbit", "_reduced_null": "reduced", "_dense_null": "dense"}
SOLVER_TEXT = {
    "orbit": "one indicator per orbit of signed-permutation generators on the entries of W (exact, no linear algebra)",
    "dense": "null space of the normal matrix of the stacked constraints by a dense symmetric eigensolver",
    "reduced": "unknowns first restricted to the null space of one pivot constraint (eigenvectors of rho_in, rho_out; "
               "for a Lie group a random algebra element), the rest solved densely there",
}


def _instrument_solvers() -> list[str]:
    from shapelens.symmetry import reps as R

    used: list[str] = []
    for fname, label in SOLVER_FUNCS.items():
        fn = getattr(R, fname, None)
        if fn is None:
            continue

        def wrapped(*a, _fn=fn, _label=label, **k):
            out = _fn(*a, **k)
            used.append(_label if out is not None else f"{_label} (declined)")
            return out

        setattr(R, fname, wrapped)
    return used


def shapelens_worker(case: dict) -> None:
    """One timed case in this (fresh) process: first call, then warm calls; JSON lines on stdout."""
    from shapelens.symmetry.reps import clear_basis_cache, equivariant_basis

    out = {"id": case.get("id")}
    t0 = time.perf_counter()
    G, rin, rout = shapelens_reps(case)
    out["build_s"] = time.perf_counter() - t0
    out["size"] = rin.dim * rout.dim
    used = _instrument_solvers()
    clear_basis_cache()
    t0 = time.perf_counter()
    B = equivariant_basis(rin, rout, cache=False)
    out["first_s"] = time.perf_counter() - t0
    out["solver"] = " -> ".join(used) if used else "?"
    out["dim"] = int(B.shape[0])
    print(json.dumps({**out, "partial": True}), flush=True)
    warm, budget = [], case.get("warm_budget_s")
    for _ in range(int(case.get("warm", 1))):
        if budget is not None and out["first_s"] + sum(warm) > budget:
            break
        clear_basis_cache()
        t0 = time.perf_counter()
        B2 = equivariant_basis(rin, rout, cache=False)
        warm.append(time.perf_counter() - t0)
        if B2.shape[0] != out["dim"]:
            out["warm_dim_differs"] = int(B2.shape[0])
    out["warm_s"] = min(warm) if warm else None
    out["warm_all"] = warm
    print(json.dumps(out), flush=True)


def run_capped(cmd: list[str], stdin: str, timeout: float, env: dict | None = None) -> list[dict]:
    """Run ``cmd`` with ``stdin``; return its JSON lines (those that arrived before the cap too).
    A process stopped at the cap adds ``{"timeout": timeout}``; one that failed adds ``{"error": ...}``."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
        text, extra = proc.stdout, []
        if proc.returncode != 0:
            extra = [{"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:].strip()}"}]
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        extra = [{"timeout": timeout}]
    lines = []
    for ln in text.splitlines():
        if ln.startswith("{"):
            try:
                lines.append(json.loads(ln))
            except json.JSONDecodeError:
                pass
    return lines + extra


def merge_case(lines: list[dict], cap: float) -> dict:
    """The result of one case from its JSON lines: the final line, else the partial one (first
    call done, warm calls cut by the cap), else the timeout or error."""
    res = [ln for ln in lines if "first_s" in ln or ("error" in ln and "id" in ln)]
    final = [ln for ln in res if not ln.get("partial")]
    out = dict(final[-1] if final else res[-1]) if res else {}
    if not final and res:
        out["warm_note"] = "cut by the cap"
    stop = [ln for ln in lines if "timeout" in ln or ("error" in ln and "id" not in ln)]
    if not res:
        out = {"timeout": cap} if stop and "timeout" in stop[-1] else {"error": (stop[-1]["error"] if stop else "no output")}
    return out


# --------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------


def run_parity(emlp_python: Path | None, folder: Path, cap: float) -> tuple[list[dict], dict]:
    import numpy as np

    from shapelens.symmetry.reps import equivariant_basis

    cases = []
    for i, c in enumerate(PARITY):
        cases.append({"id": f"p{i}", "group": c["group"], "in": c["in"], "out": c["out"], "warm": 0,
                      "save": str(folder / f"emlp_p{i}.npy")})
    emlp, meta = {}, {}
    if emlp_python is not None:
        print("parity: EMLP ...", file=sys.stderr, flush=True)
        lines = run_capped([str(emlp_python), str(HERE / "emlp_side.py"), "-"], json.dumps(cases), timeout=10 * cap)
        for ln in lines:
            if ln.get("done"):
                meta = ln
            elif "id" in ln and not ln.get("partial"):
                emlp[ln["id"]] = ln
        if not emlp:
            meta["error"] = next((ln.get("error") for ln in lines if "error" in ln), "no output")
    rows = []
    print("parity: shapelens ...", file=sys.stderr, flush=True)
    for spec, case in zip(PARITY, cases):
        row = {**spec, "id": case["id"]}
        try:
            G, rin, rout = shapelens_reps(case)
            B = equivariant_basis(rin, rout)
            row["N"] = rin.dim * rout.dim
            row["shapelens"] = int(B.shape[0])
            gs = G.sample(5, seed=1)
            row["res_shapelens"] = residual(B, rin, rout, gs)
            e = emlp.get(case["id"], {})
            if "dim" in e:
                row["emlp"] = e["dim"]
                if e.get("saved") and Path(e["saved"]).exists():
                    Q = np.load(e["saved"])  # (N, k), row-major vec of W (dim_out, dim_in)
                    BE = Q.T.reshape(-1, rout.dim, rin.dim)
                    row["res_emlp"] = residual(BE, rin, rout, gs)
                    row["angle"] = subspace_sine(B, BE)
            elif "error" in e:
                row["emlp_error"] = e["error"]
        except Exception as exc:
            row["shapelens_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
    return rows, meta


def residual(B, rin, rout, gs) -> float:
    """max over basis elements and elements g of |rho_out(g) W - W rho_in(g)|_max / |W|_max."""
    import numpy as np

    if len(B) == 0:
        return 0.0
    worst = 0.0
    for g in gs:
        Ro, Ri = np.asarray(rout.rho(g)), np.asarray(rin.rho(g))
        R = np.einsum("ij,kjl->kil", Ro, B) - np.einsum("kij,jl->kil", B, Ri)
        worst = max(worst, float(np.abs(R).max() / max(np.abs(B).max(), 1e-300)))
    return worst


def subspace_sine(A, B) -> float:
    """Largest principal-angle sine between span(A) and span(B) (bases stacked on axis 0)."""
    import numpy as np

    if len(A) != len(B):
        return float("nan")
    if len(A) == 0:
        return 0.0
    qa, _ = np.linalg.qr(A.reshape(len(A), -1).T)
    qb, _ = np.linalg.qr(B.reshape(len(B), -1).T.astype(np.float64))
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - float(s.min()) ** 2)))


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def run_timing(cases: list[dict], emlp_python: Path | None, cap: float, warm: int) -> dict:
    results = {}
    for c in cases:
        c = {**c, "warm": warm, "warm_budget_s": cap / 3}
        label = f"{c['group']} {c['in']} -> {c['out']}"
        results[c["id"]] = {}
        tools = [("shapelens", [sys.executable, str(Path(__file__).resolve()), "--worker"])]
        if emlp_python is not None:
            tools.append(("emlp", [str(emlp_python), str(HERE / "emlp_side.py"), "-"]))
        for tool, cmd in tools:
            payload = json.dumps(c if tool == "shapelens" else [c])
            # the cap bounds the solve; a few seconds more cover the interpreter and library imports
            lines = run_capped(cmd, payload, timeout=cap + 20)
            r = merge_case(lines, cap)
            if "first_s" in r and r["first_s"] > cap:
                r = {"timeout": cap, "finished_s": r["first_s"], "dim": r.get("dim")}
            results[c["id"]][tool] = r
            msg = (f"{r['first_s']:.3f} s first, dim {r['dim']}" if "first_s" in r else
                   f"timeout (> {cap:.0f} s)" if "timeout" in r else f"error {r.get('error', '')[:200]}")
            print(f"  {label:28s} {tool:9s}: {msg}", file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------------------
# GroupConv2d
# --------------------------------------------------------------------------------------


def interleaved_medians(fns: list, repeats: int, warmup: int) -> list[tuple[float, list[float]]]:
    """Median seconds of each function, timed in rounds (one call of each per round, in turn), so
    that a change of machine load during the measurement hits every contestant alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [(statistics.median(ts), ts) for ts in times]


def run_gconv(configs: list[dict], repeats: int, seed: int) -> list[dict]:
    import torch
    from torch import nn

    from shapelens.symmetry.gconv import GroupConv2d, group_order

    torch.manual_seed(seed)
    rows = []
    for cfg in configs:
        n, C, B, H = group_order(cfg["group"]), cfg["C"], cfg["B"], cfg["H"]
        Cp = int(round(C * math.sqrt(n)))
        models = [
            (f"GroupConv2d({C}, {C}, 3, group={cfg['group']!r}, padding=1)",
             GroupConv2d(C, C, 3, group=cfg["group"], padding=1), (B, C, n, H, H)),
            (f"Conv2d({C * n}, {C * n}, 3, padding=1): same output size",
             nn.Conv2d(C * n, C * n, 3, padding=1), (B, C * n, H, H)),
            (f"Conv2d({Cp}, {Cp}, 3, padding=1): about the same parameters",
             nn.Conv2d(Cp, Cp, 3, padding=1), (B, Cp, H, H)),
        ]
        fwds, fbs, meta = [], [], []
        for name, mod, shape in models:
            x = torch.randn(*shape)
            with torch.no_grad():
                y = mod(x)
            xg = x.clone().requires_grad_(True)

            def fwd(mod=mod, x=x):
                with torch.no_grad():
                    mod(x)

            def fwd_bwd(mod=mod, xg=xg):
                mod.zero_grad(set_to_none=True)
                xg.grad = None
                mod(xg).sum().backward()

            fwds.append(fwd)
            fbs.append(fwd_bwd)
            meta.append({"group": cfg["group"], "model": name, "in": tuple(shape), "out": tuple(y.shape),
                         "params": sum(p.numel() for p in mod.parameters())})
        f_res = interleaved_medians(fwds, repeats, 2)
        b_res = interleaved_medians(fbs, max(3, repeats // 2), 1)
        with torch.no_grad():
            expand = interleaved_medians([models[0][1].expanded_weight], repeats, 2)[0][0]
        for i, (row, (f_med, f_all), (b_med, b_all)) in enumerate(zip(meta, f_res, b_res)):
            row.update(fwd=f_med, fwd_bwd=b_med, fwd_all=f_all, fwd_bwd_all=b_all,
                       rel_fwd=f_med / f_res[0][0], rel_fwd_bwd=b_med / b_res[0][0])
            if i == 0:
                row["expand"] = expand
            rows.append(row)
            print(f"  gconv {row['model']}: fwd {f_med * 1e3:.1f} ms, fwd+bwd {b_med * 1e3:.1f} ms", file=sys.stderr,
                  flush=True)
    return rows


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _pair(case: dict) -> str:
    return f"{case['in']} -> {case['out']}"


def _t(r: dict, key: str, cap: float) -> str:
    if key in r and r[key] is not None:
        return fmt_seconds(r[key])
    if "timeout" in r:
        return f"timeout (> {cap:.0f})" + (f" [took {fmt_seconds(r['finished_s'])}]" if r.get("finished_s") else "")
    if "error" in r:
        return "error"
    if key == "warm_s" and "first_s" in r:
        return "cut by cap" if r.get("warm_note") else "skipped"
    return "n/a"


def _ratio(e: dict, s: dict, key: str, cap: float) -> str:
    if e.get(key) and s.get(key):
        return f"{e[key] / s[key]:.3g}x"
    if "timeout" in e and s.get(key):
        return f"> {cap / s[key]:.3g}x"
    if "timeout" in s and e.get(key):
        return f"< {e[key] / cap:.3g}x"
    return "n/a"


def report(args, info, parity, parity_meta, timing, tcases, gconv, load_before, load_after, wall) -> str:
    lines = ["## Equivariant bases and group convolutions: shapelens vs EMLP, GroupConv2d vs Conv2d", ""]
    if args.label:
        lines += [f"**{args.label}**", ""]
    cmd = " ".join([".venv/bin/python benchmarks/bench_symmetry.py", *args.argv])
    lines += [f"Command: `{cmd}`", "",
              f"Wall time {wall / 60:.1f} min; load average before {' / '.join(f'{x:.2f}' for x in load_before)}, "
              f"after {' / '.join(f'{x:.2f}' for x in load_after)} (1/5/15 min; the machine is shared).", "",
              "### Machine", "", machine_table(info), ""]
    if parity is not None:
        lines += ["### Parity: dimension of the space of equivariant maps", "",
                  "`k` = number of basis elements of `{W : rho_out(g) W = W rho_in(g)}`. *closed form*: from the "
                  "decomposition into irreducibles (Schur) or the partition counts for S_n. *sin angle*: largest "
                  "principal-angle sine between the two bases as subspaces (both written as row-major `vec(W)`). "
                  "*residual*: `max_g max|rho_out(g) W - W rho_in(g)| / max|W|` over each basis, on 5 elements "
                  "sampled by shapelens (Haar for the compact groups); EMLP works in float32.", ""]
        rows, agree, n_cmp = [], 0, 0
        for r in parity:
            e = r.get("emlp", "error" if "emlp_error" in r else "n/a")
            s = r.get("shapelens", "error")
            ok = []
            if isinstance(e, int) and isinstance(s, int):
                n_cmp += 1
                agree += e == s
                ok.append("same" if e == s else "**DIFFER**")
            if isinstance(s, int):
                ok.append("= closed form" if s == r["expected"] else "**shapelens != closed form**")
            if isinstance(e, int) and e != r["expected"]:
                ok.append("EMLP != closed form")
            rows.append([r["group"], f"`{_pair(r)}`", r.get("N", "?"), r["expected"], e, s, ", ".join(ok),
                         f"{r['angle']:.1e}" if "angle" in r else "n/a",
                         f"{r['res_shapelens']:.0e}" if "res_shapelens" in r else "n/a",
                         f"{r['res_emlp']:.0e}" if "res_emlp" in r else "n/a", r["why"]])
        lines += [markdown_table(["group", "in -> out", "unknowns", "closed form", "k EMLP", "k shapelens", "verdict",
                                  "sin angle", "residual shapelens", "residual EMLP", "closed form from"], rows), "",
                  (f"**{agree} of {n_cmp} pairs agree with EMLP**" + (
                      f" ({len(parity)} pairs; EMLP unavailable for the others: {parity_meta.get('error')})"
                      if n_cmp < len(parity) else "") + ".") if not args.no_emlp else "EMLP not run (`--no-emlp`).",
                  ""]
        for r in parity:
            for k in ("shapelens_error", "emlp_error"):
                if k in r:
                    lines.append(f"* {r['group']} `{_pair(r)}` {k.split('_')[0]}: {r[k]}")
        lines.append("")
    if timing is not None:
        cap = args.cap
        lines += ["### Basis solve times (seconds)", "",
                  f"Each case in a fresh process per library, capped at {cap:.0f} s. *first*: the first call in the "
                  "process (shapelens `equivariant_basis(rin, rout, cache=False)`; EMLP `(rin >> rout)(G)"
                  ".equivariant_basis()` with `Rep.solcache` emptied, including JAX tracing and XLA compilation). "
                  f"*warm*: best of up to {args.warm} more calls in the same process, caches emptied again (EMLP keeps "
                  "its compiled XLA code; its Krylov solver re-traces a fresh `jit` every call). Ratio = EMLP time / "
                  "shapelens time (> 1: shapelens faster). *solver*: the path each library took, shapelens: "
                  + "; ".join(f"`{k}` {v}" for k, v in SOLVER_TEXT.items()
                              if any(k in str(timing.get(c["id"], {}).get("shapelens", {}).get("solver", ""))
                                     for c in tcases))
                  + "; EMLP: `SVD` (dense SVD of the stacked constraint matrix, at most 3e7 entries) or `Krylov` (its "
                  "iterative SGD-with-momentum solver above that).", ""]
        rows = []
        for c in tcases:
            res = timing.get(c["id"], {})
            s, e = res.get("shapelens", {}), res.get("emlp", {})
            ks, ke = s.get("dim"), e.get("dim")
            kcell = (f"{ks}" if ke is None or ks is None or ks == ke else f"**{ks} vs {ke}**") if ks is not None or ke is not None else "?"
            if ks is None and ke is not None:
                kcell = f"{ke} (EMLP)"
            rows.append([c["group"], f"`{_pair(c)}`", s.get("size", e.get("size", "?")), kcell,
                         _t(s, "first_s", cap), _t(s, "warm_s", cap), s.get("solver", ""),
                         _t(e, "first_s", cap), _t(e, "warm_s", cap), e.get("solver", ""),
                         _ratio(e, s, "first_s", cap), _ratio(e, s, "warm_s", cap)])
        lines += [markdown_table(["group", "in -> out", "unknowns", "k", "shapelens first", "shapelens warm", "solver",
                                  "EMLP first", "EMLP warm", "EMLP solver", "ratio first", "ratio warm"], rows), "",
                  f"*skipped*: no warm call because the first took more than a third of the cap "
                  f"({cap / 3:.0f} s).", ""]
        summ = []
        for fam, pick in (("O(3), SO(3)", lambda g: g in ("O3", "SO3")), ("S_n", lambda g: g.startswith("S") and g[1:].isdigit())):
            cs = [c for c in tcases if pick(c["group"])]
            if not cs:
                continue
            both = [timing[c["id"]] for c in cs if all("first_s" in timing[c["id"]].get(t, {}) for t in ("shapelens", "emlp"))]
            rf = [r["emlp"]["first_s"] / r["shapelens"]["first_s"] for r in both]
            rw = [r["emlp"]["warm_s"] / r["shapelens"]["warm_s"] for r in both
                  if r["emlp"].get("warm_s") and r["shapelens"].get("warm_s")]
            to = {t: sum("timeout" in timing[c["id"]].get(t, {}) for c in cs) for t in ("shapelens", "emlp")}
            summ.append([fam, len(cs), len(both), f"{statistics.median(rf):.3g}x" if rf else "n/a",
                         f"{min(rf):.3g}x - {max(rf):.3g}x" if rf else "n/a",
                         f"{statistics.median(rw):.3g}x ({len(rw)})" if rw else "n/a", to["shapelens"], to["emlp"]])
        if summ and any(timing[c["id"]].get("emlp") for c in tcases):
            lines += [markdown_table(["family", "cases", "both finished", "median ratio first", "range",
                                      "median ratio warm (cases)", f"shapelens timeouts (> {cap:.0f} s)",
                                      f"EMLP timeouts (> {cap:.0f} s)"], summ), ""]
        bad = [(c, timing[c["id"]]) for c in tcases
               if all("dim" in timing[c["id"]].get(t, {}) for t in ("shapelens", "emlp"))
               and timing[c["id"]]["shapelens"]["dim"] != timing[c["id"]]["emlp"]["dim"]]
        for c, r in bad:
            lines.append(f"* **dimension mismatch** {c['group']} `{_pair(c)}`: shapelens {r['shapelens']['dim']}, "
                         f"EMLP {r['emlp']['dim']}")
        errs = [(c, t, timing[c["id"]][t]["error"]) for c in tcases for t in timing[c["id"]]
                if "error" in timing[c["id"]][t]]
        for c, t, msg in errs:
            lines.append(f"* {t} error on {c['group']} `{_pair(c)}`: {msg[-400:]}")
        lines.append("")
    if gconv is not None:
        import torch

        lines += ["### GroupConv2d vs Conv2d (CPU)", "",
                  f"Median of {args.repeats} forward passes (`torch.no_grad`) and of {max(3, args.repeats // 2)} forward + "
                  "backward passes (`out.sum().backward()`, input requiring grad), after warm-up, the three layers of a "
                  "group timed in turn round by round (so a change of load hits all alike); float32, "
                  f"{torch.get_num_threads()} torch threads, one process. *expand*: the GroupConv2d filter expansion "
                  "alone (its part of every forward pass). Relative = time / GroupConv2d time.", ""]
        rows = []
        for r in gconv:
            rows.append([r["group"], r["model"], "x".join(map(str, r["in"])), "x".join(map(str, r["out"])),
                         f"{r['params']:,}", f"{r['fwd'] * 1e3:.1f}", f"{r['rel_fwd']:.2f}",
                         f"{r['fwd_bwd'] * 1e3:.1f}", f"{r['rel_fwd_bwd']:.2f}",
                         f"{r['expand'] * 1e3:.2f}" if "expand" in r else ""])
        lines += [markdown_table(["group", "layer", "input", "output", "parameters", "forward (ms)", "relative",
                                  "fwd + bwd (ms)", "relative", "expand (ms)"], rows), ""]
    return "\n".join(lines) + "\n"


def make_figure(timing, tcases, path: Path, cap: float) -> bool:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    styles = {("shapelens", "Lie"): ("C0", "o"), ("emlp", "Lie"): ("C3", "o"),
              ("shapelens", "S"): ("C0", "s"), ("emlp", "S"): ("C3", "s")}
    plotted = False
    for tool, fam in styles:
        xs, ys, xt = [], [], []
        for c in tcases:
            if (group_spec(c["group"])[0] == "S") != (fam == "S"):
                continue
            r = timing.get(c["id"], {}).get(tool, {})
            N = r.get("size") or timing.get(c["id"], {}).get("shapelens", {}).get("size")
            if "first_s" in r:
                xs.append(N)
                ys.append(r["first_s"])
            elif "timeout" in r and N:
                xt.append(N)
        color, marker = styles[(tool, fam)]
        name = {"shapelens": "shapelens", "emlp": "EMLP"}[tool]
        fam_name = "O(3)/SO(3)" if fam == "Lie" else "S_n"
        if xs:
            ax.scatter(xs, ys, c=color, marker=marker, label=f"{name}, {fam_name}", alpha=0.8,
                       facecolors=color if tool == "emlp" else "none")
            plotted = True
        if xt:
            ax.scatter(xt, [cap] * len(xt), c=color, marker="x", label=f"{name}, {fam_name}: timeout")
    if not plotted:
        return False
    ax.axhline(cap, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("unknowns dim_in x dim_out")
    ax.set_ylabel("first call (s)")
    ax.set_title("Equivariant basis: time of the first call per case")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small cases, short cap, small conv (a smoke test, ~2 min)")
    p.add_argument("--only", nargs="*", choices=SECTIONS, default=None, help="sections to run (default: all)")
    p.add_argument("--cap", type=float, default=None, help="seconds per case and library (default 120; --quick 30)")
    p.add_argument("--warm", type=int, default=3, help="warm calls per timed case (within a third of the cap)")
    p.add_argument("--repeats", type=int, default=10, help="GroupConv2d forward repeats (fwd+bwd: half, at least 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--emlp-python", default=str(DEFAULT_EMLP_PYTHON), help="interpreter of the EMLP venv")
    p.add_argument("--no-emlp", action="store_true", help="shapelens only (no EMLP columns)")
    p.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/symmetry.md; "
                                               "--quick prints only unless given)")
    p.add_argument("--label", default="", help="label written at the top, e.g. 'smoke run'")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.worker:
        warnings.simplefilter("ignore")
        shapelens_worker(json.load(sys.stdin))
        return 0
    if args.cap is None:
        args.cap = 30.0 if args.quick else 120.0
    sections = args.only or list(SECTIONS)
    emlp_python = None if args.no_emlp else Path(args.emlp_python)
    if emlp_python is not None and not emlp_python.exists():
        print(f"EMLP interpreter {emlp_python} not found. Install the EMLP environment first:\n"
              "    python3.11 -m venv .venv-emlp\n    .venv-emlp/bin/python -m pip install --upgrade pip\n"
              "    .venv-emlp/bin/pip install -r benchmarks/requirements-emlp.txt\n"
              "or run the shapelens side alone with --no-emlp.", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    info = machine_info("cpu")
    for k in ("skdim", "dadapy", "sklearn"):
        info.pop(k, None)
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["shapelens commit"] = (rev + (" (src modified)" if dirty else "")) if rev else "n/a"
    except (OSError, subprocess.SubprocessError):
        info["shapelens commit"] = "n/a"
    emlp_versions = None
    if emlp_python is not None:
        lines = run_capped([str(emlp_python), str(HERE / "emlp_side.py"), "-"], "[]", timeout=120)
        emlp_versions = next((ln.get("versions") for ln in lines if ln.get("done")), None)
        if emlp_versions:
            for k, v in emlp_versions.items():
                info[f"EMLP venv: {k}"] = v
            info["JAX threads"] = "XLA CPU default (one intra-op pool over all usable cores)"
        else:
            print(f"EMLP side did not start: {lines[-1:]}", file=sys.stderr)
            info["EMLP venv"] = f"failed to start: {str(lines[-1:])[:300]}"
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    parity = parity_meta = timing = gconv = None
    tcases = timing_cases(args.quick)
    with tempfile.TemporaryDirectory(prefix="bench_symmetry_") as tmp:
        if "parity" in sections:
            parity, parity_meta = run_parity(emlp_python, Path(tmp), args.cap)
        if "timing" in sections:
            print("timing ...", file=sys.stderr, flush=True)
            timing = run_timing(tcases, emlp_python, args.cap, args.warm)
        if "gconv" in sections:
            print("GroupConv2d ...", file=sys.stderr, flush=True)
            gconv = run_gconv(gconv_configs(args.quick), args.repeats, args.seed)
    wall = time.perf_counter() - t_start
    load_after = os.getloadavg()
    text = report(args, info, parity, parity_meta or {}, timing, tcases, gconv, load_before, load_after, wall)
    if args.quick and args.out is None:
        print(text)
        return 0
    out = Path(args.out) if args.out else HERE / "results" / "symmetry.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    if timing is not None:
        fig_path = out.with_suffix(".png")
        try:
            if make_figure(timing, tcases, fig_path, args.cap):
                text += f"\n![first-call solve times]({fig_path.name})\n"
        except Exception as exc:  # the figure is optional
            print(f"figure skipped: {exc}", file=sys.stderr)
    out.write_text(text + NOTES)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


NOTES = """
### Notes

* **What is compared.** shapelens `equivariant_basis(rep_in, rep_out)` returns `(k, dim_out, dim_in)`, EMLP
  `(rep_in >> rep_out)(G).equivariant_basis()` an `(dim_out * dim_in, k)` matrix (a lazy operator for direct
  sums); `k` is compared, and for the parity cases the bases themselves (EMLP's columns are row-major `vec(W)`).
  Both solve the same stacked constraints, `rho(h) - I` for the discrete generators and `drho(A)` for the
  Lie-algebra generators (Finzi, Welling & Wilson 2021). The groups are generated differently (EMLP's S(n) by
  the n - 1 transpositions (0 i), shapelens' by (0 1) and the n-cycle; O(3): EMLP adds the reflection
  diag(-1, 1, 1), shapelens the inversion -I), which changes the constraint matrices but not the solution space.
* **Precision.** shapelens works in float64 (null space: eigenvalues of the normal matrix below 1e-9 of the
  largest); EMLP in float32 (singular values below 1e-5; Krylov solver tolerance 1e-5), hence residuals ~1e-7.
* **Limits of each side.** shapelens (`method="auto"`, the version measured): `orbit` whenever every generator
  acts on `W` as a signed permutation (S_n tensor maps: no linear algebra, memory ~ the basis itself, refused
  above 2 GiB), else `dense` up to 400 unknowns, else `reduced` (the pivot-constraint restriction, e.g. the
  1,107-dimensional zero-weight space of the 6,561 unknowns of O(3) `V**4 -> V**4`, then dense), falling back to
  `dense` (up to 20,000 unknowns) when the pivot is not safely diagonalizable. EMLP: dense SVD of the
  stacked constraint matrix while it has at most 3e7 entries, else its iterative solver: SGD with momentum on
  `|C Q|^2` for a basis of r = 10, 20, 40, ... columns (up to 20,000 steps each, doubling r until the rank found
  is below r); refused when `rows(C) * 10 > 2e9`, and once `rows(C) * r > 2e9` it stops doubling and returns
  the (possibly incomplete) basis found so far, logging an error.
* **Fresh processes.** Interpreter start and library imports (JAX, objax for EMLP; torch and shapelens) are
  outside the timed calls; the cap covers the solve (the process gets 20 s more for its imports).
* **EMLP environment.** EMLP 1.0.3 (2021) with JAX/jaxlib 0.4.20 (CPU), objax 1.8.0, optax 0.1.7,
  plum-dispatch 1.7.4, numpy 1.26, scipy 1.11 (JAX 0.4.20 does not import with scipy >= 1.13), plus `six` (objax
  imports it without declaring it); all pinned in `benchmarks/requirements-emlp.txt`. EMLP's `jax.ops.index_update` (removed
  from JAX in 0.3) sits only in its `SwapMatrix` operator, which no group used here touches.
* **GroupConv2d.** The layer expands its `(C_out, C_in, |G|, k, k)` filter bank into the `|G|` rotated/flipped
  copies on every forward pass and then runs one `F.conv2d` with `C|G| -> C|G|` channels: the same convolution as
  the "same output size" Conv2d, plus the expansion and a reshape, with |G| times fewer parameters.
"""


if __name__ == "__main__":
    sys.exit(main())
