"""The EMLP side of ``benchmarks/bench_symmetry.py``: equivariant-basis dimensions and solve times
computed by EMLP (Finzi, Welling & Wilson 2021, "A practical method for constructing equivariant
multilayer perceptrons for arbitrary matrix groups", ICML; ``pip install emlp``, JAX).

It runs in its own virtual environment (``.venv-emlp``, see ``benchmarks/requirements-emlp.txt``;
EMLP 1.0.3 needs an old JAX/objax stack that must not meet the main one) and is called by the
benchmark through ``subprocess``; it imports neither torch nor shapelens.

Input: a JSON list of cases, a file path or ``-`` for stdin, each case

    {"id": "so3-v2-v", "group": "SO3", "in": "V**2", "out": "V",
     "warm": 3, "warm_budget_s": 60, "save": "/tmp/q.npy"}    # the last three optional

Groups: ``SO2``, ``O2``, ``SO3``, ``O3`` (EMLP ``SO(n)``, ``O(n)``) and ``S<n>`` (EMLP ``S(n)``,
the symmetric group on n points). Representations, a small grammar shared with the shapelens side
(:func:`parse_rep`): ``V`` the standard representation (the matrices themselves; permutation
matrices for S_n), an integer ``k`` the trivial representation of dimension k, ``a + b`` direct
sum, ``a * b`` tensor product (``k * a`` = k copies of a), ``a ** k`` tensor power,
``dual(a)`` the dual, and parentheses. The basis solved is that of the linear maps ``in -> out``
(EMLP ``(rep_in >> rep_out)(G)``, i.e. ``rep_out x rep_in*``).

Output (stdout): one JSON line per case as soon as it is measured,
``{"id", "size", "dim", "build_s", "first_s", "warm_s", "warm_all", "solver", "saved"}``, or
``{"id", "error"}``; then a last line ``{"done": true, "versions": {...}}``. The parent reads the
lines that arrived even when it had to stop the process at its time cap.

Timing. ``build_s``: building the EMLP representation from the group (EMLP canonicalises tensor
products here). ``first_s``: the first ``equivariant_basis()`` call of this case in this process
with EMLP's solution cache (``Rep.solcache``) emptied before it: it includes JAX tracing and XLA
compilation of the shapes met for the first time (EMLP jit-compiles the lazy constraint operators,
the SVD and, for large problems, the whole Krylov loss/gradient). ``warm_s``: the best of ``warm``
(default 1) further calls, made while the case's calls so far took at most ``warm_budget_s``
(default: no limit), each after emptying ``Rep.solcache`` again, so XLA's compilation cache is warm
(EMLP's iterative solver builds a new ``jit`` closure per call, so it recompiles even then).
Every returned JAX array is waited for (``block_until_ready``). EMLP computes in float32 (JAX's
default; ``jax_enable_x64`` stays off, as EMLP ships).

    .venv-emlp/bin/python benchmarks/emlp_side.py cases.json
    echo '[{"id": "a", "group": "O3", "in": "V**2", "out": "V**2"}]' | .venv-emlp/bin/python benchmarks/emlp_side.py -
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time

__all__ = ["parse_rep", "group_spec"]


# --------------------------------------------------------------------------------------
# the representation grammar (shared with bench_symmetry.py, which imports these two functions)
# --------------------------------------------------------------------------------------


def group_spec(name: str) -> tuple[str, int]:
    """``"SO3"`` -> ``("SO", 3)``, ``"O2"`` -> ``("O", 2)``, ``"S16"`` -> ``("S", 16)``."""
    for kind in ("SO", "O", "S"):
        if name.startswith(kind) and name[len(kind):].isdigit():
            return kind, int(name[len(kind):])
    raise ValueError(f"unknown group {name!r}; use SO2, O2, SO3, O3 or S<n> (e.g. S8).")


def parse_rep(expr: str, ops: dict):
    """Evaluate a representation expression with the callbacks in ``ops``.

    ``ops``: ``"V"`` (the standard representation), ``"trivial"`` (k -> trivial rep of dim k),
    ``"add"``, ``"mul"`` (two reps), ``"pow"`` (rep, int), ``"dual"`` (rep). Only the grammar in
    the module docstring is accepted (no arbitrary Python is evaluated).
    """
    tree = ast.parse(expr.strip(), mode="eval").body

    def ev(node):
        if isinstance(node, ast.Name) and node.id == "V":
            return ops["V"]
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            if node.value < 1:
                raise ValueError(f"{expr!r}: a trivial representation needs a dimension >= 1")
            return int(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dual" \
                and len(node.args) == 1 and not node.keywords:
            return ops["dual"](rep(node.args[0]))
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                k = ev(node.right)
                if not isinstance(k, int):
                    raise ValueError(f"{expr!r}: the exponent of ** must be an integer")
                return ops["pow"](rep(node.left), k)
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return ops["add"](as_rep(a), as_rep(b))
            if isinstance(node.op, ast.Mult):
                if isinstance(a, int) and isinstance(b, int):
                    return a * b
                if isinstance(a, int) or isinstance(b, int):
                    k, r = (a, b) if isinstance(a, int) else (b, a)
                    out = r
                    for _ in range(k - 1):
                        out = ops["add"](out, r)
                    return out
                return ops["mul"](a, b)
        raise ValueError(f"{expr!r}: unsupported syntax {ast.dump(node)}; use V, integers, +, *, ** and dual(...)")

    def as_rep(x):
        return ops["trivial"](x) if isinstance(x, int) else x

    def rep(node):
        return as_rep(ev(node))

    return as_rep(ev(tree))


# --------------------------------------------------------------------------------------
# EMLP
# --------------------------------------------------------------------------------------


def _emlp_group(name: str):
    from emlp.groups import O, S, SO

    kind, n = group_spec(name)
    return {"SO": SO, "O": O, "S": S}[kind](n)


def _emlp_ops():
    from emlp.reps import Scalar, V

    def trivial(k):
        out = Scalar
        for _ in range(k - 1):
            out = out + Scalar
        return out

    return {"V": V, "trivial": trivial, "add": lambda a, b: a + b, "mul": lambda a, b: a * b,
            "pow": lambda a, k: a ** k, "dual": lambda a: a.T}


def _solver_note(rep) -> str:
    """Which of EMLP's two solvers its rule picks (dense SVD when the constraint matrix has at most
    3e7 entries, else the iterative Krylov/SGD solver), per summand of a direct sum."""
    from emlp.reps.product_sum_reps import SumRep

    canon, _ = rep.canonicalize()
    parts = list(canon.reps) if isinstance(canon, SumRep) else [canon]
    notes = []
    for r in parts:
        if getattr(r, "G", None) is None:  # a Scalar summand: EMLP returns ones((1, 1)) directly
            notes.append("scalar")
            continue
        rows, cols = r.constraint_matrix().shape
        notes.append("SVD" if rows * cols <= 3e7 else "Krylov")
    return "+".join(sorted(set(notes)))


def _block(Q):
    if hasattr(Q, "block_until_ready"):
        Q.block_until_ready()
    return Q


def run_case(case: dict) -> dict:
    import numpy as np
    from emlp.reps import Rep
    from emlp.reps.linear_operators import densify

    out = {"id": case.get("id")}
    G = _emlp_group(case["group"])
    ops = _emlp_ops()
    t0 = time.perf_counter()
    rin, rout = parse_rep(case["in"], ops), parse_rep(case["out"], ops)
    rep = (rin >> rout)(G)
    size = int(rep.size())
    out["build_s"] = time.perf_counter() - t0
    out["size"] = size
    try:
        out["solver"] = _solver_note(rep)
    except Exception as exc:  # informative only
        out["solver"] = f"? ({type(exc).__name__})"
    Rep.solcache.clear()
    np.random.seed(0)  # the Krylov solver starts from np.random.randn
    t0 = time.perf_counter()
    Q = _block(rep.equivariant_basis())
    out["first_s"] = time.perf_counter() - t0
    out["dim"] = int(Q.shape[-1])
    if case.get("save"):
        if size * out["dim"] <= 5_000_000:
            np.save(case["save"], np.asarray(densify(Q), dtype=np.float64).reshape(size, out["dim"]))
            out["saved"] = case["save"]
        else:
            out["saved"] = None
    # report the first call at once: a time cap may stop the warm calls
    print(json.dumps({**out, "partial": True}), flush=True)
    warm = []
    budget = case.get("warm_budget_s")
    for _ in range(int(case.get("warm", 1))):
        if budget is not None and out["first_s"] + sum(warm) > budget:
            break
        Rep.solcache.clear()
        np.random.seed(0)
        t0 = time.perf_counter()
        Q = _block(rep.equivariant_basis())
        warm.append(time.perf_counter() - t0)
        if int(Q.shape[-1]) != out["dim"]:
            out["warm_dim_differs"] = int(Q.shape[-1])
    out["warm_s"] = min(warm) if warm else None
    out["warm_all"] = warm
    return out


def versions() -> dict:
    from importlib.metadata import version

    import jax

    v = {}
    for mod in ("emlp", "jax", "jaxlib", "objax", "optax", "plum-dispatch", "numpy", "scipy"):
        try:
            v[mod] = version(mod)
        except Exception:
            v[mod] = "not installed"
    v["jax devices"] = ", ".join(str(d) for d in jax.devices())
    v["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
    v["python"] = sys.version.split()[0]
    return v


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    src = argv[0]
    cases = json.load(sys.stdin if src == "-" else open(src))
    # quiet: EMLP's Krylov solver draws a tqdm bar and logs at INFO; neither belongs in the JSON
    os.environ.setdefault("TQDM_DISABLE", "1")
    import logging

    logging.disable(logging.WARNING)
    import warnings

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    import emlp  # noqa: F401  (objax, optax, JAX)

    import_s = time.perf_counter() - t0
    for case in cases:
        try:
            res = run_case(case)
        except Exception as exc:
            res = {"id": case.get("id"), "error": f"{type(exc).__name__}: {exc}"[:800]}
        print(json.dumps(res), flush=True)
    print(json.dumps({"done": True, "import_s": import_s, "versions": versions()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
