"""Drawing a :class:`~shapelens.structure.diagram.Diagram`: objects as boxes, morphisms as
labelled arrows, declared equations as numbered markers with a legend (coloured by the result of
:meth:`Diagram.check` when one is given).

The picture follows the conventions of commutative diagrams in applied category theory (Fong &
Spivak, *An Invitation to Applied Category Theory*, 2019, ch. 3): an equation between two parallel
paths is marked inside the face the two paths bound; an equivariance constraint
``act_in(g) >> f == f >> act_out(g)`` is the square with the group actions drawn as dashed loops
on the domain and codomain (Cohen & Welling 2016; Finzi, Welling & Wilson 2021).

The layout is layered (Sugiyama, Tagawa & Toda 1981): objects are placed in columns by the
longest path from a source (ignoring the back edges of any cycle), and ordered within a column
by the barycentre of their neighbours so that arrows cross little.
"""

from __future__ import annotations

from pathlib import Path as _FsPath
from typing import Any

import numpy as np

_GOOD, _BAD, _PLAIN = "#1a7f37", "#c0392b", "#333333"


# --------------------------------------------------------------------------------------
# reading a diagram (duck-typed, so the drawing depends only on the public attributes)
# --------------------------------------------------------------------------------------


def _obj_name(space: Any) -> str:
    name = getattr(space, "name", None)
    return str(name) if name is not None else str(space)


def _edges(diagram: Any) -> list[tuple[str, str, str]]:
    """(morphism name, dom name, cod name) of every registered morphism."""
    return [(name, _obj_name(m.dom), _obj_name(m.cod)) for name, m in diagram.morphisms.items()]


def _path_names(path: Any) -> list[str]:
    """Names of the morphisms along a path (identity paths give [])."""
    ms = getattr(path, "morphisms", None)
    if ms is None:
        return []
    return [getattr(m, "name", str(m)) for m in ms]


def _path_objects(path: Any) -> list[str]:
    """Objects visited by a path, domain first."""
    objs = [_obj_name(path.dom)]
    for m in getattr(path, "morphisms", ()):
        objs.append(_obj_name(m.cod))
    return objs


def _act_label(a: Any) -> str | None:
    """How a group action is labelled on its loop: the representation's name, or the callable's."""
    if a is None:
        return None
    if hasattr(a, "rho") and hasattr(a, "dim"):
        return f"{getattr(a, 'name', 'rho')}(g)"
    return f"{getattr(a, '__name__', 'act')}(g)"


def _equation_info(eq: Any) -> dict:
    """What the drawing needs from an Equation: its kind, the objects it involves, the
    morphism it constrains (equivariance) and a one-line description."""
    kind = getattr(eq, "kind", "equation")
    info = {"kind": kind, "name": getattr(eq, "name", "") or ""}
    if kind == "equivariance":
        m = getattr(eq, "morphism", None)
        dom = _obj_name(m.dom) if m is not None else _obj_name(eq.lhs.dom)
        cod = _obj_name(m.cod) if m is not None else _obj_name(eq.lhs.cod)
        info.update(objects=[dom, cod], dom=dom, cod=cod, morphism=getattr(m, "name", None),
                    text=getattr(eq, "description", None) or str(eq),
                    act_in=_act_label(getattr(eq, "act_in", None)), act_out=_act_label(getattr(eq, "act_out", None)))
        group = getattr(eq, "group", None)
        info["group"] = getattr(group, "name", None) or (str(group) if group is not None else "G")
        return info
    lhs, rhs = eq.lhs, eq.rhs
    objs = list(dict.fromkeys(_path_objects(lhs) + _path_objects(rhs)))
    info.update(objects=objs, morphisms=_path_names(lhs) + _path_names(rhs), lhs=_path_names(lhs),
                rhs=_path_names(rhs), dom=_obj_name(lhs.dom),
                cod=_obj_name(lhs.cod),
                text=getattr(eq, "description", None) or f"{lhs} == {rhs}")
    return info


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------


def _layers(nodes: list[str], edges: list[tuple[str, str, str]]) -> dict[str, int]:
    """Longest-path layering of the graph with the back edges of a depth-first search removed."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for _, a, b in edges:
        if a != b:
            succ[a].append(b)
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()

    def dfs(u: str) -> None:  # iterative, to stay safe on long chains
        stack = [(u, iter(succ[u]))]
        state[u] = 1
        while stack:
            v, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[v] = 2
                stack.pop()
            elif state.get(nxt, 0) == 1:
                back.add((v, nxt))
            elif state.get(nxt, 0) == 0:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))

    indeg = {n: 0 for n in nodes}
    for _, a, b in edges:
        if a != b:
            indeg[b] += 1
    for n in sorted(nodes, key=lambda n: (indeg[n] > 0, nodes.index(n))):
        if state.get(n, 0) == 0:
            dfs(n)
    dag = [(a, b) for _, a, b in edges if a != b and (a, b) not in back]
    layer = {n: 0 for n in nodes}
    for _ in range(len(nodes)):  # Bellman-Ford style relaxation on a DAG: at most |V| rounds
        changed = False
        for a, b in dag:
            if layer[b] < layer[a] + 1:
                layer[b] = layer[a] + 1
                changed = True
        if not changed:
            break
    return layer


def _positions(nodes: list[str], edges: list[tuple[str, str, str]]) -> dict[str, np.ndarray]:
    layer = _layers(nodes, edges)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(layer[n], []).append(n)
    nbrs: dict[str, list[str]] = {n: [] for n in nodes}
    for _, a, b in edges:
        if a != b:
            nbrs[a].append(b)
            nbrs[b].append(a)
    y: dict[str, float] = {}
    for c in sorted(columns):
        for i, n in enumerate(columns[c]):
            y[n] = -(i - (len(columns[c]) - 1) / 2)
    for _ in range(4):  # barycentre sweeps
        for c in sorted(columns):
            col = columns[c]
            bary = {n: np.mean([y[m] for m in nbrs[n]]) if nbrs[n] else y[n] for n in col}
            col.sort(key=lambda n: (-bary[n], nodes.index(n)))
            for i, n in enumerate(col):
                y[n] = -(i - (len(col) - 1) / 2)
    return {n: np.array([2.6 * layer[n], 1.6 * y[n]]) for n in nodes}


# --------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------


def _shape_text(shape: Any) -> str:
    return "R[" + ", ".join(str(int(s)) for s in shape) + "]"


def _node_label(space: Any) -> str:
    """Name, shape (``R[...]``, one per factor of a product) and representation of an object."""
    name = _obj_name(space)
    if getattr(space, "is_product", False):
        return name + "\n" + " x ".join(_shape_text(f.shape) for f in space.factors)
    text = name
    shape = getattr(space, "shape", None)
    if shape is not None:
        text += "\n" + _shape_text(shape)
    rep = getattr(space, "rep", None)
    if rep is not None:
        text += f"\n{getattr(rep, 'name', 'rep')} of {getattr(getattr(rep, 'group', None), 'name', 'G')}"
    return text


def _fmt_err(value: float) -> str:
    if value is None or not np.isfinite(value):
        return str(value)
    return "0" if value == 0 else f"{value:.2g}"


def draw_diagram(diagram: Any, *, ax=None, path: str | _FsPath | None = None, check: Any = None,
                 figsize: tuple[float, float] | None = None, dpi: int = 150):
    """Draw a diagram: objects as boxes, morphisms as labelled arrows, equations as numbered
    markers inside the faces they constrain, and a legend listing each equation.

    Parameters
    ----------
    diagram : a :class:`~shapelens.structure.diagram.Diagram`.
    ax : matplotlib axes to draw on; a new ``Figure`` (no pyplot state) when None.
    path : where to save the picture; the suffix picks the format (``.png``, ``.svg``, ``.pdf``).
    check : a :class:`~shapelens.structure.diagram.DiagramCheck` from ``diagram.check(data)``; when
        given, each equation's marker and legend line are green when it commutes within its
        tolerance and red otherwise, with the measured relative error.
    figsize, dpi : size of a new figure; resolution of a saved PNG.

    Returns the matplotlib ``Figure``. The layout is layered (Sugiyama et al. 1981); see the
    module docstring for the conventions (Fong & Spivak 2019).
    """
    from matplotlib.patches import FancyArrowPatch

    nodes = list(diagram.objects)
    if not nodes:
        raise ValueError(f"diagram {getattr(diagram, 'name', '')!r} has no objects to draw; add morphisms with "
                         "diagram.add(...) first.")
    edges = _edges(diagram)
    pos = _positions(nodes, edges)
    eqs = [_equation_info(eq) for eq in diagram.equations]
    results = {}
    if check is not None:
        for k, ec in enumerate(getattr(check, "equations", ())):
            results[k] = ec

    n_cols = 1 + int(round(max(p[0] for p in pos.values()) / 2.6))
    n_rows = max(sum(1 for p in pos.values() if abs(p[0] - x) < 1e-9) for x in {p[0] for p in pos.values()})
    if ax is None:
        from matplotlib.figure import Figure

        w = figsize[0] if figsize else max(5.0, 2.6 * n_cols + 1.5)
        h = figsize[1] if figsize else max(3.0, 1.5 * n_rows + 1.2) + 0.32 * len(eqs)
        fig = Figure(figsize=(w, h))
        ax = fig.add_subplot()
    fig = ax.figure
    ax.set_axis_off()
    ax.set_aspect("equal")

    for n in nodes:
        x, y = pos[n]
        ax.text(x, y, _node_label(diagram.objects[n]), ha="center", va="center", fontsize=9, zorder=4,
                bbox=dict(boxstyle="round,pad=0.45", fc="#eef3fb", ec="#4a6fa5", lw=1.2))

    # arrows: bundle parallel edges (either direction) and bend them apart
    groups: dict[tuple[str, str], list[int]] = {}
    mids: dict[str, np.ndarray] = {}  # where each arrow's curve passes half-way
    for i, (_, a, b) in enumerate(edges):
        groups.setdefault(tuple(sorted((a, b))), []).append(i)
    for (a0, b0), idx in groups.items():
        for k, i in enumerate(idx):
            name, a, b = edges[i]
            if a == b:
                _loop(ax, pos[a], name, 2 * k, color=_PLAIN, dashed=False)
                mids[name] = pos[a] + np.array([0.0, 0.6 + 0.3 * k])
                continue
            off = k - (len(idx) - 1) / 2
            if len(idx) > 1:
                rad = 0.3 * off if (a, b) == (a0, b0) else -0.3 * off
            else:  # a long arrow bends away from the objects between its ends
                between = [pos[n] for n in nodes if n not in (a, b)
                           and min(pos[a][0], pos[b][0]) < pos[n][0] < max(pos[a][0], pos[b][0])]
                rad = 0.0
                if between:
                    d = pos[b] - pos[a]
                    right = np.array([d[1], -d[0]])
                    away = (pos[a] + pos[b]) / 2 - np.mean(between, axis=0)
                    rad = 0.3 if float(right @ away) >= 0 else -0.3
            mids[name] = _arrow(ax, FancyArrowPatch, pos[a], pos[b], rad, name)

    # equations: markers and legend
    xs = np.array([p[0] for p in pos.values()])
    ys = np.array([p[1] for p in pos.values()])
    lines = []
    n_loops: dict[str, int] = {}
    for _, a, b in edges:
        if a == b:
            n_loops[a] = n_loops.get(a, 0) + 1
    placed: list[np.ndarray] = []
    order = sorted(range(len(eqs)), key=lambda k: (len(eqs[k].get("morphisms", ())), k))
    lines: list = [None] * len(eqs)
    for k in order:
        info = eqs[k]
        res = results.get(k)
        color = _PLAIN if res is None else (_GOOD if getattr(res, "commutes", False) else _BAD)
        label = f"({k + 1})"
        if info["kind"] == "equivariance":
            for j, (obj, act) in enumerate(((info["dom"], info["act_in"]), (info["cod"], info["act_out"]))):
                if act is not None:  # act_out None: invariance, the action on the codomain is the identity
                    _loop(ax, pos[obj], f"{label} {act}", 2 * (n_loops.get(obj, 0)), color=color, dashed=True)
                    n_loops[obj] = n_loops.get(obj, 0) + 1
            p = mids.get(info["morphism"], (pos[info["dom"]] + pos[info["cod"]]) / 2) + np.array([0.0, 0.5])
        else:
            # inside the face the two paths bound: the mean of their arrows' half-way points
            # (the midpoint between the two paths' mean half-way points; an identity path adds nothing)
            sides = [np.mean([mids[m] for m in side], axis=0) for side in (info["lhs"], info["rhs"])
                     if side and all(m in mids for m in side)]
            p = np.mean(sides, axis=0) if sides else np.mean([pos[o] for o in info["objects"]], axis=0)
        for _ in range(12):  # step clear of objects and earlier markers, away from the nearest
            near = [q for q in list(pos.values()) + placed if np.linalg.norm(p - q) < 0.45]
            if not near:
                break
            q = min(near, key=lambda q: np.linalg.norm(p - q))
            step = p - q
            p = p + (0.4 * step / np.linalg.norm(step) if np.linalg.norm(step) > 1e-9 else np.array([0.0, 0.4]))
        placed.append(p)
        ax.text(p[0], p[1], label, ha="center", va="center", fontsize=8, color=color, zorder=5,
                bbox=dict(boxstyle="circle,pad=0.2", fc="white", ec=color, lw=1.0))
        line = f"{label} {info['name'] + ': ' if info['name'] else ''}{info['text']}"
        if res is not None:
            verdict = "commutes" if res.commutes else "does not commute"
            line += f"  [{verdict}: relative error mean {_fmt_err(res.mean)}, max {_fmt_err(res.max)}]"
        else:
            line += "  [not checked]"
        lines[k] = (line, color)

    x_lo, x_hi = xs.min() - 1.4, xs.max() + 1.4
    y_lo, y_hi = ys.min() - 1.0, ys.max() + 1.3
    for j, (line, color) in enumerate(lines):
        ax.text(x_lo, y_lo - 0.32 * (j + 1), line, ha="left", va="center", fontsize=7.5, color=color)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo - 0.32 * (len(lines) + 0.8), y_hi + 0.3 * max(n_loops.values(), default=0))
    title = getattr(diagram, "name", "") or "diagram"
    ax.set_title(title, fontsize=10)
    if path is not None:
        p = _FsPath(path)
        fmt = p.suffix.lower().lstrip(".")
        if fmt not in ("png", "svg", "pdf"):
            raise ValueError(f"cannot save a diagram as {p.name!r}: the file name must end in .png, .svg or .pdf.")
        fig.tight_layout()
        fig.savefig(p, dpi=dpi, format=fmt)
    return fig


def _arrow(ax, FancyArrowPatch, a: np.ndarray, b: np.ndarray, rad: float, label: str) -> np.ndarray:
    arrow = FancyArrowPatch(tuple(a), tuple(b), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                            mutation_scale=12, shrinkA=30, shrinkB=30, lw=1.2, color="#222222", zorder=3)
    ax.add_patch(arrow)
    d = b - a
    mid = (a + b) / 2 + 0.5 * rad * np.array([d[1], -d[0]])  # midpoint of arc3's quadratic Bezier
    right = np.array([d[1], -d[0]]) / (np.linalg.norm(d) + 1e-12)  # arc3 bulges along rad * right
    if rad != 0:
        normal = np.sign(rad) * right
    else:  # a straight arrow: the label goes above it (left of a vertical one)
        normal = -right if (-right[1] > 1e-9 or (abs(right[1]) <= 1e-9 and -right[0] < 0)) else right
    lp = mid + 0.18 * normal
    ax.text(lp[0], lp[1], label, ha="center", va="center", fontsize=8.5, style="italic", zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    return mid


def _loop(ax, p: np.ndarray, label: str, k: int, *, color: str, dashed: bool) -> None:
    """A loop above (even k) or below (odd k) the node at p, for endomorphisms and group actions."""
    from matplotlib.patches import FancyArrowPatch

    side = 1.0 if k % 2 == 0 else -1.0
    lift = 0.38 + 0.3 * (k // 2)
    a = p + np.array([-0.22, side * lift])
    b = p + np.array([0.22, side * lift])
    arrow = FancyArrowPatch(tuple(a), tuple(b), connectionstyle=f"arc3,rad={-2.2 * side}", arrowstyle="-|>",
                            mutation_scale=10, lw=1.0, color=color, ls="--" if dashed else "-", zorder=3)
    ax.add_patch(arrow)
    ax.text(p[0], p[1] + side * (lift + 0.62), label, ha="center", va="center", fontsize=7.5, color=color,
            style="italic", zorder=5)
