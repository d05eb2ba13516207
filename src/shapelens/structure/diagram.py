"""Diagrams: objects, morphisms and the equations between paths that an architecture must satisfy.

A :class:`Diagram` is a finite presentation of a category in the sense of Fong & Spivak (*An
Invitation to Applied Category Theory*, 2019, ch. 3): named objects (spaces), generating
morphisms between them, and declared equations between parallel paths ("this square commutes").
Building an architecture from a diagram follows Gavranovic et al. ("Categorical Deep Learning is
an Algebraic Theory of All Architectures", ICML 2024): the model is the composite along a path,
and what the composition cannot build in is enforced by a loss that is zero exactly when the
declared squares commute. Equivariance is the square ``act_in(g) >> f == f >> act_out(g)`` for
every group element ``g`` (Cohen & Welling 2016, "Group Equivariant Convolutional Networks";
Finzi, Welling & Wilson 2021, EMLP), checked with the same numbers as
:func:`shapelens.symmetry.equivariance_error`.

* :meth:`Diagram.check` measures each equation on data: the per-example relative L2 error
  ``||lhs(x) - rhs(x)|| / ||rhs(x)||`` (0/0 counts as 0), mean and max over examples (and group
  elements);
* :meth:`Diagram.loss` is the differentiable penalty ``sum_e weight_e * mean_x ||lhs(x) -
  rhs(x)||^2 / size(cod)`` to train towards commutation;
* :meth:`Diagram.model` turns the unique path between two objects into one ``nn.Module``.
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .._checks import check_int, single_thread, warn
from .._results import Result
from ..probe import eval_mode
from ..symmetry.measure import _Action, _check_action, _group_elements, _relative_errors
from .morphisms import Compose, Morphism, _describe, _expected, _value_problem, identity
from .objects import CycleError, Space, StructureError, TypeMismatchError

__all__ = ["Diagram", "Path", "Equation", "EquationCheck", "DiagramCheck"]


# --------------------------------------------------------------------------------------
# paths and equations
# --------------------------------------------------------------------------------------


class Path:
    """A path ``f_1 >> f_2 >> ... >> f_n`` of composable morphisms of a diagram, or the identity
    path ``id_A`` of an object (no morphisms): a morphism of the category the diagram presents
    (Fong & Spivak 2019, sec. 3.2). ``dom``, ``cod`` (Spaces), ``morphisms`` (tuple); calling it
    evaluates the morphisms in order; ``str`` gives ``"f >> g"`` or ``"id_A"``. Build with
    :meth:`Diagram.path`."""

    def __init__(self, morphisms: tuple[Morphism, ...], dom: Space, cod: Space, diagram: "Diagram | None" = None):
        self.morphisms = tuple(morphisms)
        self.dom, self.cod = dom, cod
        self.diagram = diagram

    def __call__(self, x: Any) -> Any:
        for m in self.morphisms:
            x = m(x)
        return x

    def __len__(self) -> int:
        return len(self.morphisms)

    def __iter__(self) -> Iterator[Morphism]:
        return iter(self.morphisms)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Path):
            return NotImplemented
        return (len(self.morphisms) == len(other.morphisms) and all(a is b for a, b in zip(self.morphisms, other.morphisms))
                and self.dom.name == other.dom.name and self.cod.name == other.cod.name)

    def __hash__(self) -> int:
        return hash((tuple(id(m) for m in self.morphisms), self.dom.name, self.cod.name))

    def __str__(self) -> str:
        return " >> ".join(m.name for m in self.morphisms) if self.morphisms else f"id_{self.dom.name}"

    def __repr__(self) -> str:
        return f"Path({self}: {self.dom} -> {self.cod})"

    @property
    def objects(self) -> tuple[str, ...]:
        """Names of the objects the path visits, domain first."""
        return (self.dom.name,) + tuple(m.cod.name for m in self.morphisms)

    def as_morphism(self, name: str | None = None) -> Morphism:
        """The composite along the path as one :class:`Morphism` (an ``nn.Module`` sharing the
        parts' parameters; the identity for an identity path), with ``.diagram`` set to the
        diagram the path came from."""
        if self.morphisms:
            m = Compose(*self.morphisms, name=name or str(self))
        else:
            m = identity(self.dom, name=name)
        m.diagram = self.diagram
        return m


def _action_label(a: Any, space: Space, side: str) -> str:
    if a is None:
        return ""
    rep = a if hasattr(a, "rho") and hasattr(a, "dim") else None
    if rep is not None:
        return f"{rep.name}(g)"
    return f"{getattr(a, '__name__', side)}(g)"


@dataclass(eq=False)
class Equation:
    """A declared equation between two parallel paths of a diagram (Fong & Spivak 2019,
    sec. 3.3: a commuting diagram), or, for ``kind == "equivariance"``, the square
    ``act_in(g) >> f == f >> act_out(g)`` for every ``g`` in ``group`` (Cohen & Welling 2016;
    Finzi et al. 2021). Built by :meth:`Diagram.commutes` and :meth:`Diagram.equivariant`.

    ``lhs``/``rhs`` are :class:`Path` s (for an equivariance equation both are the one-morphism
    path of ``morphism``); ``weight`` scales the equation in :meth:`Diagram.loss`, ``tol`` is the
    largest relative error :meth:`Diagram.check` still counts as commuting. ``act_out`` None means
    invariance. ``description`` is a one-line statement of the equation.
    """

    name: str
    kind: str
    lhs: Path
    rhs: Path
    weight: float = 1.0
    tol: float = 1e-6
    morphism: Morphism | None = None
    group: Any = None
    act_in: Any = None
    act_out: Any = None
    samples: int = 16
    seed: int = 0

    @property
    def dom(self) -> Space:
        return self.lhs.dom

    @property
    def cod(self) -> Space:
        return self.lhs.cod

    @property
    def lhs_label(self) -> str:
        if self.kind == "equivariance":
            return f"{_action_label(self.act_in, self.dom, 'act_in')} >> {self.morphism.name}"
        return str(self.lhs)

    @property
    def rhs_label(self) -> str:
        if self.kind == "equivariance":
            if self.act_out is None:
                return self.morphism.name
            return f"{self.morphism.name} >> {_action_label(self.act_out, self.cod, 'act_out')}"
        return str(self.rhs)

    @property
    def description(self) -> str:
        text = f"{self.lhs_label} == {self.rhs_label}"
        if self.kind == "equivariance":
            text += f" for g in {getattr(self.group, 'name', self.group)}"
        return text

    def __str__(self) -> str:
        return f"{self.name}: {self.description}"


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EquationCheck(Result):
    """How far one equation is from holding on data: the per-example relative L2 error
    ``||lhs(x) - rhs(x)|| / ||rhs(x)||`` (0/0 = 0), ``mean`` and ``max`` over examples (and over
    group elements for an equivariance equation, where they equal
    :func:`shapelens.symmetry.equivariance_error`'s). ``commutes`` is ``max <= tol``.
    ``n_elements`` is the number of group elements used (0 for a plain equation); ``source`` says
    where the data came from (``"given"``, or the path it was pushed along)."""

    name: str
    kind: str
    lhs: str
    rhs: str
    dom: str
    cod: str
    mean: float
    max: float
    tol: float
    commutes: bool
    n_examples: int
    n_elements: int
    source: str = "given"


@dataclass(frozen=True)
class DiagramCheck(Result):
    """The commutativity errors of every equation of a diagram (:meth:`Diagram.check`), in the
    order they were declared. ``commutes`` is True when every equation holds within its
    tolerance; ``check["name"]`` (or an index) gives one :class:`EquationCheck`."""

    equations: tuple
    diagram: str = ""

    @property
    def commutes(self) -> bool:
        return all(e.commutes for e in self.equations)

    def __getitem__(self, key: Any) -> EquationCheck:
        if isinstance(key, (int, np.integer)):
            return self.equations[key]
        for e in self.equations:
            if e.name == key:
                return e
        raise KeyError(f"no equation named {key!r}; the equations are {[e.name for e in self.equations]}.")

    def __len__(self) -> int:
        return len(self.equations)

    def table(self) -> str:
        """A plain-text table: one row per equation with its mean and max relative error, its
        tolerance and whether it commutes."""
        head = ("equation", "kind", "statement", "mean", "max", "tol", "commutes")
        rows = [(e.name, e.kind, f"{e.lhs} == {e.rhs}", f"{e.mean:.3g}", f"{e.max:.3g}", f"{e.tol:.3g}",
                 "yes" if e.commutes else "NO") for e in self.equations]
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax=None, figsize=(6, 3.5)):
        """Bar chart of each equation's mean relative error with its max marked and its tolerance
        drawn; green bars commute, red ones do not; log scale when every value is positive."""
        ax = self._axes(ax, figsize)
        names = [e.name for e in self.equations]
        pos = np.arange(len(names))
        means = np.array([e.mean for e in self.equations], dtype=float)
        maxes = np.array([e.max for e in self.equations], dtype=float)
        colors = ["tab:green" if e.commutes else "tab:red" for e in self.equations]
        ax.bar(pos, means, color=colors, label="mean")
        ax.scatter(pos, maxes, color="black", marker="_", s=200, zorder=3, label="max")
        for k, e in enumerate(self.equations):
            ax.hlines(e.tol, k - 0.4, k + 0.4, colors="gray", linestyles="dashed", label="tol" if k == 0 else None)
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=30 if len(names) > 2 else 0, ha="right" if len(names) > 2 else "center",
                           fontsize=8)
        vals = np.concatenate([means, maxes])
        if len(vals) and np.all(np.isfinite(vals)) and np.all(vals > 0):
            ax.set_yscale("log")
        ax.set_ylabel("relative error ||lhs - rhs|| / ||rhs||")
        ax.set_title(f"commutativity of {self.diagram or 'diagram'}", fontsize=9)
        ax.legend(fontsize=8)
        return ax


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _flat(value: Any) -> torch.Tensor:
    """A batch of a space as one (B, n) tensor (factors of a product concatenated)."""
    if isinstance(value, (tuple, list)):
        return torch.cat([v.reshape(v.shape[0], -1) for v in value], dim=1)
    return value.reshape(value.shape[0], -1)


def _nonfinite(value: Any) -> int:
    parts = value if isinstance(value, (tuple, list)) else (value,)
    return sum(int((~torch.isfinite(v)).sum()) for v in parts if v.is_floating_point() or v.is_complex())


def _slice(value: Any, sl: slice) -> Any:
    return tuple(v[sl] for v in value) if isinstance(value, (tuple, list)) else value[sl]


def _cat(values: list) -> Any:
    if isinstance(values[0], tuple):
        return tuple(torch.cat([v[i] for v in values]) for i in range(len(values[0])))
    return torch.cat(values)


def _n(value: Any) -> int:
    return int(value[0].shape[0] if isinstance(value, (tuple, list)) else value.shape[0])


def _dtype_device(modules: list) -> tuple[torch.dtype | None, torch.device | None]:
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return None, None


def _to_modules(value: Any, modules: list) -> Any:
    """Floating data cast to the first floating parameter's dtype and moved to its device (as
    :func:`shapelens.symmetry.equivariance_error` does)."""
    dtype, device = _dtype_device(modules)
    if dtype is None:
        return value

    def conv(v):
        if v.is_floating_point() and v.dtype != dtype:
            v = v.to(dtype)
        return v.to(device)

    return tuple(conv(v) for v in value) if isinstance(value, tuple) else conv(value)


class _Act:
    """The action of a group element on a batch of a space: a Rep on the last axis, a callable
    ``(g, x) -> x'``, or None (trivial); componentwise on a product (each factor's Rep).
    Single tensors go through :class:`shapelens.symmetry.measure._Action`, so the arithmetic is
    that of :func:`~shapelens.symmetry.equivariance_error`."""

    def __init__(self, a: Any, space: Space, name: str, memo: dict | None = None):
        self.a, self.space, self.name = a, space, name
        self.parts = [_Action(r, f"{name}[{i}]") for i, r in enumerate(a.reps)] if isinstance(a, _ProductRep) else None
        self.single = _Action(a, name) if self.parts is None and not (space.is_product and a is not None) else None
        # matrices of hashable (finite-group) elements kept across calls of Diagram.loss
        self.memo = memo

    def _run(self, act: _Action, slot: int, k: int, g: Any, x: Any, where: str) -> Any:
        key = (slot, g) if self.memo is not None and act.is_rep and isinstance(g, tuple) else None
        if key is not None and k not in act.cache and key in self.memo:
            act.cache[k] = self.memo[key]
        out = act(k, g, x, where)
        if key is not None and key not in self.memo:
            if len(self.memo) > 20_000:
                self.memo.clear()
            self.memo[key] = act.cache[k]
        return out

    def __call__(self, k: int, g: Any, x: Any, where: str) -> Any:
        if self.parts is not None:
            return tuple(self._run(p, i, k, g, xi, f"{where}[{i}]") for i, (p, xi) in enumerate(zip(self.parts, x)))
        if self.single is not None:
            return self._run(self.single, 0, k, g, x, where)
        out = self.a(g, x)  # a callable on a product space
        problem = _value_problem(tuple(out) if isinstance(out, list) else out, self.space, _n(x))
        if problem:
            raise TypeMismatchError(f"{self.name}(g, x) on {where} must return a batch of {self.space}, "
                                    f"{_expected(self.space)}; {problem}.")
        return tuple(out)


class _ProductRep:
    """Marker for the componentwise action of a product space's factor representations."""

    def __init__(self, space: Space):
        self.reps = [f.rep for f in space.factors]
        self.group = space.rep.group
        self.name = str(getattr(space.rep, "name", "rep"))


def _small_cpu(modules: nn.Module) -> bool:
    """True for models small enough that one CPU thread is fastest (under a million parameters,
    all on the CPU): torch's thread pool costs more than it gains on tiny matrices, and on a busy
    machine whose cores are taken it waits for them."""
    params = list(modules.parameters())
    return all(p.device.type == "cpu" for p in params) and sum(p.numel() for p in params) < 1_000_000


def _finite_float(value: Any, what: str, minimum: float, strict: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise StructureError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        rel = ">" if strict else ">="
        raise StructureError(f"{what} must be a finite number {rel} {minimum}, got {value!r}.")
    return v


# --------------------------------------------------------------------------------------
# the diagram
# --------------------------------------------------------------------------------------


class Diagram:
    """Objects, morphisms and declared equations between paths: a finitely presented category
    (Fong & Spivak 2019, ch. 3) describing an architecture (Gavranovic et al. 2024).

    * :meth:`add` registers morphisms; their domains and codomains become the objects
      (``objects``: name -> Space, in insertion order; ``morphisms``: name -> Morphism).
    * :meth:`path`, :meth:`paths` and :meth:`model` turn composable morphisms into paths and
      composite ``nn.Module`` s (build-time type checks; :class:`CycleError` where a cycle makes
      "all paths" infinite).
    * :meth:`commutes` declares that two parallel paths agree; :meth:`equivariant` that a
      morphism commutes with a group's action (Cohen & Welling 2016; Finzi et al. 2021).
      ``equations`` lists them.
    * :meth:`check` measures them on data; :meth:`loss` penalizes their failure
      differentiably; :meth:`draw` renders the diagram.
    """

    def __init__(self, name: str = "diagram"):
        if not isinstance(name, str) or not name:
            raise StructureError(f"a diagram's name must be a non-empty string, got {name!r}.")
        self.name = name
        self.objects: dict[str, Space] = {}
        self.morphisms: dict[str, Morphism] = {}
        self.equations: list[Equation] = []
        self._named: dict[str, Space] = {}  # every named space seen, factors of products included

    # -- building ----------------------------------------------------------------------
    def add(self, *morphisms: Morphism) -> Morphism:
        """Register morphisms (each a :class:`Morphism` whose domain and codomain are named
        spaces; products need every factor named) and return the last one. Adding a morphism
        twice is a no-op. Raises :class:`StructureError` for an anonymous space, two different
        spaces with one name, two different morphisms with one name, or a morphism named like an
        object."""
        if not morphisms:
            raise StructureError("add() needs at least one morphism.")
        objects, named, mors = dict(self.objects), dict(self._named), dict(self.morphisms)
        for m in morphisms:
            if not isinstance(m, Morphism):
                raise StructureError(f"diagram {self.name!r}: add() takes Morphisms, got {type(m).__name__}; wrap it "
                                     "first: Morphism(module, dom, cod, name).")
            if mors.get(m.name) is m:
                continue
            if m.name in mors:
                other = mors[m.name]
                raise StructureError(f"diagram {self.name!r} already has a different morphism named {m.name!r} "
                                     f"({other.dom} -> {other.cod}); give this one ({m.dom} -> {m.cod}) another name.")
            for role, space in (("domain", m.dom), ("codomain", m.cod)):
                self._register(space, role, m, objects, named)
            if m.name in objects:
                raise StructureError(f"diagram {self.name!r}: morphism {m.name!r} has the name of an object; names "
                                     "of objects and morphisms must differ (a lone object name in a path means its "
                                     "identity).")
            mors[m.name] = m
        clash = [n for n in objects if n in mors]
        if clash:
            raise StructureError(f"diagram {self.name!r}: {clash} name both an object and a morphism; rename one.")
        self.objects, self._named, self.morphisms = objects, named, mors
        return morphisms[-1]

    def _register(self, space: Space, role: str, m: Morphism, objects: dict, named: dict) -> None:
        if space.name is None:
            hint = ("name every factor of the product" if space.is_product
                    else f"declare it as Space('Name', {space.shape})")
            raise StructureError(f"diagram {self.name!r}: morphism {m.name!r} has the anonymous {role} {space}; objects "
                                 f"of a diagram are named: {hint}.")
        for s in ((space,) + (space.factors if space.is_product else ())):
            if s.name is None:
                continue
            old = named.get(s.name)
            if old is None:
                named[s.name] = s
            elif not old.same_declaration(s):
                raise StructureError(f"diagram {self.name!r}: two different spaces are named {s.name!r}: {old!r} and "
                                     f"{s!r} (the {role} of morphism {m.name!r}); one name is one object: rename one "
                                     "or declare them alike.")
        if space.name not in objects:
            objects[space.name] = named[space.name]

    def _object(self, obj: Any, what: str = "object") -> str:
        name = obj.name if isinstance(obj, Space) else obj
        if not isinstance(name, str) or name not in self.objects:
            raise StructureError(f"diagram {self.name!r} has no {what} {name!r}; its objects are "
                                 f"{list(self.objects)}.")
        return name

    def _morphism(self, item: Any) -> Morphism:
        if isinstance(item, Morphism):
            if self.morphisms.get(item.name) is not item:
                raise StructureError(f"morphism {item.name!r} is not in diagram {self.name!r}; add it first with "
                                     f"diagram.add(...). Its morphisms are {list(self.morphisms)}.")
            return item
        if isinstance(item, str):
            if item in self.morphisms:
                return self.morphisms[item]
            if item in self.objects:
                raise StructureError(f"{item!r} is an object of diagram {self.name!r}, not a morphism; an object name "
                                     "alone gives its identity path.")
            raise StructureError(f"diagram {self.name!r} has no morphism named {item!r}; its morphisms are "
                                 f"{list(self.morphisms)}.")
        raise StructureError(f"a path is made of morphisms of the diagram or their names, got {type(item).__name__}.")

    # -- paths -------------------------------------------------------------------------
    def path(self, *items: Any) -> Path:
        """The path through the given morphisms (registered :class:`Morphism` s, their names, or
        :class:`Path` s), in order; an object name alone gives its identity path. Consecutive
        morphisms must compose (the codomain of one is the domain of the next), else
        :class:`TypeMismatchError` naming both; unknown names raise :class:`StructureError` listing
        the names that exist."""
        if len(items) == 1 and isinstance(items[0], (list, tuple)):
            items = tuple(items[0])
        if not items:
            raise StructureError("a path needs at least one morphism (or one object name for its identity).")
        segments: list[tuple[str, str, tuple]] = []
        for it in items:
            if isinstance(it, Path):
                for m in it.morphisms:
                    self._morphism(m)
                segments.append((self._object(it.dom.name), self._object(it.cod.name), it.morphisms))
            elif isinstance(it, str) and it in self.objects and it not in self.morphisms:
                segments.append((it, it, ()))
            else:
                m = self._morphism(it)
                segments.append((m.dom.name, m.cod.name, (m,)))
        for (_, c, ma), (d, _, mb) in zip(segments, segments[1:]):
            if c != d:
                a = ma[-1].signature if ma else f"id_{c}"
                b = mb[0].signature if mb else f"id_{d}"
                raise TypeMismatchError(f"diagram {self.name!r}: the path does not compose: {a} ends at {c!r} but the "
                                        f"next step {b} starts at {d!r}.")
        ms = tuple(m for s in segments for m in s[2])
        return Path(ms, self.objects[segments[0][0]], self.objects[segments[-1][1]], self)

    def _edges(self) -> list[tuple[str, str, Morphism]]:
        return [(m.dom.name, m.cod.name, m) for m in self.morphisms.values()]

    @staticmethod
    def _inverse_pair(m: Morphism, k: Morphism) -> bool:
        return m is not k and (m.inverse is k or k.inverse is m)

    def _inverse_edges(self) -> list[tuple[Morphism, Morphism]]:
        """(f, e) for every registered morphism e declared the inverse of an earlier registered f."""
        out, seen = [], []
        for m in self.morphisms.values():
            partner = next((k for k in seen if self._inverse_pair(m, k)), None)
            if partner is not None:
                out.append((partner, m))
            seen.append(m)
        return out

    def _reach(self, start: str, reverse: bool = False) -> set:
        adj: dict[str, list[str]] = {}
        for a, b, _ in self._edges():
            if reverse:
                a, b = b, a
            adj.setdefault(a, []).append(b)
        seen, queue = {start}, deque([start])
        while queue:
            for n in adj.get(queue.popleft(), ()):
                if n not in seen:
                    seen.add(n)
                    queue.append(n)
        return seen

    def _find_cycle(self, nodes: set) -> list | None:
        """A cycle within ``nodes`` as a list of (from, morphism, to), or None. An isomorphism
        followed straight back by its declared inverse is the identity, not a cycle: cycles are
        sought among the other edges, then through each inverse edge ``e: b -> a`` (of ``f: a -> b``)
        by a path from ``a`` back to ``b`` that does not use ``f`` or ``e``."""
        inv = self._inverse_edges()
        skip = {id(e) for _, e in inv}
        found = self._dfs_cycle(nodes, [(a, b, m) for a, b, m in self._edges() if id(m) not in skip])
        if found:
            return found
        for f, e in inv:
            a, b = e.cod.name, e.dom.name
            if a not in nodes or b not in nodes:
                continue
            rest = [(x, y, m) for x, y, m in self._edges() if m is not f and m is not e and x in nodes and y in nodes]
            back = self._route_edges(a, b, rest)
            if back is not None:
                return [(b, e, a)] + back
        return None

    @staticmethod
    def _route_edges(src: str, dst: str, edges: list) -> list | None:
        """A shortest path src -> dst over ``edges`` as (from, morphism, to) triples, or None."""
        prev: dict[str, tuple] = {src: None}
        queue = deque([src])
        while queue:
            u = queue.popleft()
            if u == dst:
                out = []
                while prev[u] is not None:
                    out.append(prev[u])
                    u = prev[u][0]
                return out[::-1]
            for a, b, m in edges:
                if a == u and b not in prev:
                    prev[b] = (a, m, b)
                    queue.append(b)
        return None

    def _dfs_cycle(self, nodes: set, all_edges: list) -> list | None:
        adj: dict[str, list] = {n: [] for n in nodes}
        for a, b, m in all_edges:
            if a in nodes and b in nodes:
                adj[a].append((b, m))
        color = {n: 0 for n in nodes}
        stack: list = []

        def visit(u):
            color[u] = 1
            for v, m in adj[u]:
                stack.append((u, m, v))
                if color[v] == 1:
                    start = next(i for i, (a, _, _) in enumerate(stack) if a == v)
                    return stack[start:]
                if color[v] == 0:
                    found = visit(v)
                    if found:
                        return found
                stack.pop()
            color[u] = 2
            return None

        for n in self.objects:
            if n in nodes and color[n] == 0:
                found = visit(n)
                if found:
                    return found
        return None

    def paths(self, src: Any, dst: Any) -> list[Path]:
        """All paths from object ``src`` to object ``dst`` (names or Spaces), in the order the
        morphisms were added (an object to itself: its identity path). Raises :class:`CycleError`
        naming the cycle when a cycle lies on a path between them (there would be infinitely
        many). A morphism registered as the ``inverse`` of an earlier one is not followed: an
        isomorphism and its inverse count as one arrow, so they make no cycle."""
        src, dst = self._object(src, "source object"), self._object(dst, "target object")
        between = self._reach(src) & self._reach(dst, reverse=True)
        cycle = self._find_cycle(between)
        if cycle:
            text = cycle[0][0] + "".join(f" -{m.name}-> {b}" for _, m, b in cycle)
            raise CycleError(f"diagram {self.name!r}: the cycle {text} lies between {src!r} and {dst!r}, so there are "
                             "infinitely many paths; name the path you mean with diagram.path(...).")
        out: list[Path] = []
        edges = [(a, b, m) for a, b, m in self._edges() if a in between and b in between]

        def walk(node, acc):
            if node == dst:
                out.append(Path(tuple(acc), self.objects[src], self.objects[dst], self))
                return
            for a, b, m in edges:
                if a == node and not (acc and self._inverse_pair(acc[-1], m)):  # f >> f^-1 is the identity
                    walk(b, acc + [m])

        if src in between:
            walk(src, [])
        return out

    def model(self, src: Any, dst: Any) -> Morphism:
        """The composite :class:`Morphism` (an ``nn.Module`` sharing the registered morphisms'
        parameters) along the unique path from ``src`` to ``dst``, with ``.diagram`` pointing back
        to this diagram. Raises :class:`StructureError` when there is no path or several (naming
        them: pick one with ``diagram.path(...).as_morphism()``), :class:`CycleError` on a cycle."""
        ps = self.paths(src, dst)
        s, d = self._object(src), self._object(dst)
        if not ps:
            raise StructureError(f"diagram {self.name!r} has no path from {s!r} to {d!r}; its morphisms are "
                                 f"{[m.signature for m in self.morphisms.values()]}.")
        if len(ps) > 1:
            raise StructureError(f"diagram {self.name!r} has {len(ps)} paths from {s!r} to {d!r}: "
                                 f"{[str(p) for p in ps]}; the model is ambiguous: pick one with "
                                 "diagram.path(...).as_morphism().")
        return ps[0].as_morphism()

    def parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of every registered morphism, each once (for an optimizer training
        :meth:`loss`)."""
        seen: set = set()
        for m in self.morphisms.values():
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    # -- equations ---------------------------------------------------------------------
    def _as_path(self, side: Any, what: str) -> Path:
        if isinstance(side, Path):
            return self.path(side)
        if isinstance(side, (list, tuple)):
            return self.path(*side)
        if isinstance(side, (str, Morphism)):
            return self.path(side)
        raise StructureError(f"{what} of an equation must be a Path, a list of morphisms (or their names) or an "
                             f"object name, got {type(side).__name__}.")

    def _equation_name(self, name: Any, default: str) -> str:
        taken = {e.name for e in self.equations}
        if name is not None:
            if not isinstance(name, str) or not name:
                raise StructureError(f"an equation's name must be a non-empty string, got {name!r}.")
            if name in taken:
                raise StructureError(f"diagram {self.name!r} already has an equation named {name!r}; give another "
                                     "name.")
            return name
        out, k = default, 2
        while out in taken:
            out, k = f"{default} ({k})", k + 1
        return out

    def commutes(self, lhs: Any, rhs: Any, *, name: str | None = None, weight: float = 1.0,
                 tol: float = 1e-6) -> Equation:
        """Declare that two parallel paths agree: ``lhs(x) == rhs(x)`` for every ``x`` in their
        domain (a commuting diagram, Fong & Spivak 2019, sec. 3.3). ``lhs``/``rhs``: a
        :class:`Path`, a list of morphisms or their names, a morphism (name), or an object name
        (its identity). ``weight`` scales the equation in :meth:`loss`; ``tol`` is the largest
        relative error :meth:`check` counts as commuting. Returns the :class:`Equation` (also
        appended to ``equations``). Raises :class:`StructureError` naming both paths and their
        endpoints when they are not parallel."""
        L, R = self._as_path(lhs, "the left side"), self._as_path(rhs, "the right side")
        if L.dom.name != R.dom.name or L.cod.name != R.cod.name:
            raise StructureError(f"diagram {self.name!r}: an equation needs two paths with the same endpoints, but "
                                 f"the left side {L} goes {L.dom.name!r} -> {L.cod.name!r} and the right side {R} goes "
                                 f"{R.dom.name!r} -> {R.cod.name!r}.")
        weight = _finite_float(weight, "weight", 0.0, strict=False)
        tol = _finite_float(tol, "tol", 0.0, strict=True)
        if L == R:
            warn(f"diagram {self.name!r}: the equation {L} == {R} compares a path with itself; it always holds.")
        eq = Equation(self._equation_name(name, f"{L} = {R}"), "equation", L, R, weight, tol)
        self.equations.append(eq)
        return eq

    def _default_action(self, space: Space, role: str, f: Morphism, arg: str) -> Any:
        if space.rep is None:
            raise StructureError(f"diagram {self.name!r}: equivariant({f.name!r}) needs an action on the {role} "
                                 f"{space}, which has no representation; declare it with Space(name, shape, rep=...) "
                                 f"or give {arg}= (a Rep or a callable (g, x) -> x').")
        return _ProductRep(space) if space.is_product else space.rep

    def _explicit_action(self, a: Any, space: Space, arg: str, group: Any, f: Morphism) -> Any:
        role = "domain" if arg == "act_in" else "codomain"
        if hasattr(a, "rho") and hasattr(a, "dim"):
            if space.is_product:
                raise StructureError(f"{arg} is a Rep, but the {role} {space} of {f.name!r} is a product; a product is "
                                     "acted on componentwise: declare each factor's rep, or give a callable "
                                     "(g, x_tuple) -> tuple.")
            last = space.shape[-1] if space.shape else 1
            if int(a.dim) != last or not space.shape:
                raise StructureError(f"{arg} ({a.name} of {getattr(a.group, 'name', '?')}) has dimension {a.dim} but "
                                     f"the {role} {space} of {f.name!r} has {last} entries on its last axis; a Rep "
                                     "acts on the last axis.")
        elif not callable(a):
            raise StructureError(f"{arg} must be a Rep, a callable (g, x) -> x' or None, got {type(a).__name__}.")
        return a

    def equivariant(self, morphism: Any, group: Any, *, act_in: Any = None, act_out: Any = None, samples: int = 16,
                    seed: int = 0, name: str | None = None, weight: float = 1.0, tol: float = 1e-6) -> Equation:
        """Declare that ``morphism`` is equivariant under ``group``: the square
        ``act_in(g) >> f == f >> act_out(g)`` commutes for every ``g`` (Cohen & Welling 2016;
        Finzi, Welling & Wilson 2021), measured by :meth:`check` exactly as
        :func:`shapelens.symmetry.equivariance_error` measures it (same ``samples`` and ``seed``:
        the same numbers).

        ``act_in``/``act_out`` default to the representations of the morphism's domain and
        codomain (componentwise on products; :class:`StructureError` if absent); otherwise a Rep
        (of ``group``, with the dimension of the space's last axis) or a callable ``(g, x) -> x'``;
        ``act_out="trivial"`` declares invariance (``f(g x) == f(x)``). ``samples`` elements are
        drawn with ``seed`` (all of them for a finite group of order <= ``samples``); :meth:`loss`
        draws fresh ones each call. ``weight``, ``tol`` as in :meth:`commutes`."""
        f = self._morphism(morphism)
        if not (hasattr(group, "sample") or hasattr(group, "elements")):
            raise StructureError(f"equivariant({f.name!r}): group must be a shapelens.symmetry group (with sample() "
                                 f"or elements), got {type(group).__name__}.")
        samples = check_int(samples, "samples", 1)
        seed = check_int(seed, "seed", 0)
        a_in = (self._default_action(f.dom, "domain", f, "act_in") if act_in is None
                else self._explicit_action(act_in, f.dom, "act_in", group, f))
        if isinstance(act_out, str):
            if act_out != "trivial":
                raise StructureError(f"act_out={act_out!r} is not understood; give 'trivial' (invariance), a Rep or a "
                                     "callable (g, x) -> x'.")
            a_out = None
        elif act_out is None:
            a_out = self._default_action(f.cod, "codomain", f, "act_out")
        else:
            a_out = self._explicit_action(act_out, f.cod, "act_out", group, f)
        for arg, a in (("act_in", a_in), ("act_out", a_out)):
            for k, r in enumerate(a.reps if isinstance(a, _ProductRep) else [a]):
                try:
                    _check_action(r, arg if not isinstance(a, _ProductRep) else f"{arg} (factor {k})", group,
                                  allow_none=True)
                except (TypeError, ValueError) as exc:
                    raise StructureError(f"equivariant({f.name!r}): {exc}") from None
        weight = _finite_float(weight, "weight", 0.0, strict=False)
        tol = _finite_float(tol, "tol", 0.0, strict=True)
        kind = "invariant" if a_out is None else "equivariant"
        default = f"{f.name} {kind} under {getattr(group, 'name', type(group).__name__)}"
        p = Path((f,), f.dom, f.cod, self)
        eq = Equation(self._equation_name(name, default), "equivariance", p, p, weight, tol, morphism=f, group=group,
                      act_in=a_in, act_out=a_out, samples=samples, seed=seed)
        self.equations.append(eq)
        return eq

    # -- data --------------------------------------------------------------------------
    def _value(self, value: Any, space: Space, key: str) -> Any:
        def one(v, what):
            if isinstance(v, np.ndarray):
                if v.dtype == object:
                    raise TypeMismatchError(f"data for {what} is an object array; pass a numeric array or tensor.")
                v = torch.from_numpy(np.ascontiguousarray(v))
            if not isinstance(v, torch.Tensor):
                raise TypeMismatchError(f"data for {what} must be a tensor or numpy array with examples along axis 0, "
                                        f"got {type(v).__name__}.")
            return v

        if space.is_product:
            if not isinstance(value, (tuple, list)):
                raise TypeMismatchError(f"data for object {key!r} ({space}) must be a tuple of {len(space.factors)} "
                                        f"batches, got {_describe(value)}.")
            value = tuple(one(v, f"object {key!r} factor {i}") for i, v in enumerate(value))
        else:
            value = one(value, f"object {key!r}")
        problem = _value_problem(value, space)
        if problem:
            raise TypeMismatchError(f"data for object {key!r} must be a batch of {space}, {_expected(space)}; "
                                    f"{problem}.")
        if _n(value) == 0:
            raise StructureError(f"data for object {key!r} has no examples; pass at least one.")
        bad = _nonfinite(value)
        if bad:
            raise StructureError(f"data for object {key!r} contains {bad} NaN/infinite values; the commutativity "
                                 "error would be undefined: remove or impute them first.")
        return value

    def _data(self, data: Any) -> dict[str, Any]:
        if not self.equations:
            raise StructureError(f"diagram {self.name!r} declares no equations; add some with commutes(...) or "
                                 "equivariant(...) first.")
        if isinstance(data, dict):
            out = {}
            for key, value in data.items():
                name = self._object(key.name if isinstance(key, Space) else key, "object (a data key)")
                out[name] = self._value(value, self.objects[name], name)
            if not out:
                raise StructureError("data is an empty dict; give data for at least one object.")
            return out
        doms = list(dict.fromkeys(e.dom.name for e in self.equations))
        if len(doms) > 1:
            raise StructureError(f"diagram {self.name!r}: the equations start at several objects {doms}; pass data as a "
                                 "dict {object name: tensor}.")
        return {doms[0]: self._value(data, self.objects[doms[0]], doms[0])}

    def _route(self, target: str, given: dict) -> tuple[str, Path] | None:
        """The first object with data (in the order given) from which ``target`` is reachable and
        the shortest path from it (ties broken by the order morphisms were added)."""
        edges = self._edges()
        for src in given:
            prev: dict[str, tuple] = {src: None}
            queue = deque([src])
            while queue:
                u = queue.popleft()
                if u == target:
                    ms = []
                    while prev[u] is not None:
                        u, m = prev[u]
                        ms.append(m)
                    return src, Path(tuple(reversed(ms)), self.objects[src], self.objects[target], self)
                for a, b, m in edges:
                    if a == u and b not in prev:
                        prev[b] = (a, m)
                        queue.append(b)
        return None

    def _data_at(self, eq: Equation, given: dict, cache: dict, push) -> tuple[Any, str]:
        name = eq.dom.name
        if name in given:
            return given[name], "given"
        if name not in cache:
            route = self._route(name, given)
            if route is None:
                raise StructureError(f"diagram {self.name!r}: no data for object {name!r} (the domain of equation "
                                     f"{eq.name!r}) and no path to it from the objects with data {list(given)}; pass "
                                     f"data for {name!r}.")
            src, path = route
            cache[name] = (push(path, given[src]), f"{src} via {path}")
        return cache[name]

    # -- measuring ---------------------------------------------------------------------
    def check(self, data: Any, *, seed: int | None = None, batch_size: int = 256) -> DiagramCheck:
        """Measure every equation on data: the per-example relative L2 error
        ``||lhs(x) - rhs(x)|| / ||rhs(x)||`` (L2 over all entries of an example, a product's factors
        concatenated; 0/0 counts as 0), its mean and max over examples, and for an equivariance
        equation over the sampled group elements too (then equal to
        :func:`shapelens.symmetry.equivariance_error` with the same ``samples`` and ``seed``).

        Parameters
        ----------
        data : a tensor or array (the data of the one object every equation starts at), or a dict
            ``object name -> batch`` (a tuple of batches for a product object). An equation whose
            domain has no data gets the data of the first object in the dict from which its
            domain is reachable, pushed forward along the shortest such path (ties: the order the
            morphisms were added); ``source`` in the result names that path.
        seed : overrides the ``seed`` of every equivariance equation (None: each keeps its own).
        batch_size : examples per forward pass.

        Everything runs in eval mode (restored after) under ``torch.no_grad()``; floating data is
        cast to the dtype (and device) of the first parameter along the equation's paths.

        Raises
        ------
        :class:`StructureError` for unknown objects, NaN/infinite data or outputs and data that
        cannot reach an equation; :class:`TypeMismatchError` for data of the wrong shape.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        if seed is not None:
            seed = check_int(seed, "seed", 0)
        given = self._data(data)
        involved = nn.ModuleList(list(self.morphisms.values()))
        results = []
        with ExitStack() as stack:
            stack.enter_context(eval_mode(involved))
            stack.enter_context(torch.no_grad())
            stack.enter_context(single_thread(_small_cpu(involved)))

            def push(path, value):
                value = _to_modules(value, list(path.morphisms))
                return _cat([path(_slice(value, slice(s, s + batch_size))) for s in range(0, _n(value), batch_size)])

            cache: dict = {}
            for eq in self.equations:
                x, source = self._data_at(eq, given, cache, push)
                if eq.kind == "equivariance":
                    err = self._equivariance_errors(eq, x, eq.seed if seed is None else seed, batch_size)
                else:
                    err = self._equation_errors(eq, x, batch_size)
                mean, mx = float(err.mean()), float(err.max())
                results.append(EquationCheck(
                    name=eq.name, kind=eq.kind, lhs=eq.lhs_label, rhs=eq.rhs_label, dom=eq.dom.name,
                    cod=eq.cod.name, mean=mean, max=mx, tol=eq.tol, commutes=bool(mx <= eq.tol),
                    n_examples=int(err.shape[-1]), n_elements=int(err.shape[0]) if err.ndim == 2 else 0,
                    source=source))
        return DiagramCheck(equations=tuple(results), diagram=self.name)

    def _equation_errors(self, eq: Equation, x: Any, batch_size: int) -> np.ndarray:
        x = _to_modules(x, list(eq.lhs.morphisms) + list(eq.rhs.morphisms))
        N = _n(x)
        err = np.zeros(N)
        state: dict = {}
        for s in range(0, N, batch_size):
            xb = _slice(x, slice(s, s + batch_size))
            a, b = eq.lhs(xb), eq.rhs(xb)
            for side, v, p in (("left", a, eq.lhs), ("right", b, eq.rhs)):
                bad = _nonfinite(v)
                if bad:
                    raise StructureError(f"equation {eq.name!r}: the {side} side {p} returned {bad} NaN/infinite values; "
                                         "the commutativity error is undefined. Check the model and the input scale.")
            err[s:s + _n(xb)] = _relative_errors(_flat(a), _flat(b), f"equation {eq.name!r}", state)
        return err

    def _equivariance_errors(self, eq: Equation, x: Any, seed: int, batch_size: int) -> np.ndarray:
        # the loop of shapelens.symmetry.equivariance_error, with its helpers, so the numbers agree
        f = eq.morphism
        x = _to_modules(x, [f])
        elements, _ = _group_elements(eq.group, eq.samples, seed)
        a_in, a_out = _Act(eq.act_in, f.dom, "act_in"), _Act(eq.act_out, f.cod, "act_out")
        N, G = _n(x), len(elements)
        err = np.zeros((G, N))
        state: dict = {}
        for s in range(0, N, batch_size):
            xb = _slice(x, slice(s, s + batch_size))
            sl = slice(s, s + _n(xb))
            base = f(xb)
            if _nonfinite(base):
                raise StructureError(f"equation {eq.name!r}: {f.name}(x) has NaN/infinite values; the equivariance "
                                     "error is undefined. Check the model and the input scale.")
            for k, g in enumerate(elements):
                out = f(a_in(k, g, xb, "x"))
                if _nonfinite(out):
                    raise StructureError(f"equation {eq.name!r}: {f.name}(g x) has NaN/infinite values for group "
                                         f"element #{k}; the equivariance error is undefined.")
                target = a_out(k, g, base, "f(x)")
                err[k, sl] = _relative_errors(_flat(out) if isinstance(out, tuple) else out,
                                              _flat(target) if isinstance(target, tuple) else target,
                                              f"group element #{k}", state)
        return err

    def loss(self, data: Any, *, seed: int | None = None) -> torch.Tensor:
        """A differentiable penalty that is zero exactly when every declared equation holds on
        the data: ``sum_e weight_e * mean_x ||lhs_e(x) - rhs_e(x)||^2 / size(cod_e)`` (a mean
        squared error per equation; for an equivariance equation also averaged over ``samples``
        group elements, ``||f(act_in(g) x) - act_out(g) f(x)||^2``), in the spirit of training an
        architecture towards a commuting diagram (Gavranovic et al. 2024) and of soft equivariance
        penalties (Finzi et al. 2021).

        Runs in the modules' current train/eval mode with gradients; data is taken (and pushed
        along paths) as in :meth:`check`. Group elements are drawn with ``seed``, or when it is
        None with a seed taken from torch's global generator (fresh elements every call,
        reproducible under ``torch.manual_seed``); finite groups of order <= ``samples`` use all
        elements. Raises :class:`StructureError` when the loss is not finite, naming the
        equations responsible."""
        if seed is not None:
            seed = check_int(seed, "seed", 0)
        given = self._data(data)

        def push(path, value):
            return path(_to_modules(value, list(path.morphisms)))

        cache: dict = {}
        terms: list[tuple[Equation, torch.Tensor]] = []
        for eq in self.equations:
            x, _ = self._data_at(eq, given, cache, push)
            size = float(max(eq.cod.size, 1))
            if eq.kind == "equivariance":
                f = eq.morphism
                x = _to_modules(x, [f])
                s = seed if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
                elements, _ = _group_elements(eq.group, eq.samples, s)
                memo = eq.__dict__.setdefault("_rho_memo", ({}, {}))
                a_in = _Act(eq.act_in, f.dom, "act_in", memo[0])
                a_out = _Act(eq.act_out, f.cod, "act_out", memo[1])
                base = f(x)
                acc = 0.0
                for k, g in enumerate(elements):
                    d = _flat(f(a_in(k, g, x, "x"))) - _flat(a_out(k, g, base, "f(x)"))
                    acc = acc + (d * d).sum(dim=1).mean()
                term = acc / (len(elements) * size)
            else:
                x = _to_modules(x, list(eq.lhs.morphisms) + list(eq.rhs.morphisms))
                d = _flat(eq.lhs(x)) - _flat(eq.rhs(x))
                term = (d * d).sum(dim=1).mean() / size
            terms.append((eq, term))
        total = sum(eq.weight * t for eq, t in terms)
        if not bool(torch.isfinite(total)):
            bad = [eq.name for eq, t in terms if not bool(torch.isfinite(t))]
            raise StructureError(f"diagram {self.name!r}: the loss is not finite (equations {bad or 'all'} give "
                                 "NaN/infinite values); check the model and the input scale.")
        return total

    # -- output ------------------------------------------------------------------------
    def draw(self, path: Any = None, *, ax=None, check: DiagramCheck | None = None):
        """Render the diagram (objects as nodes, morphisms as labelled arrows, equations marked;
        coloured by ``check`` when given) with
        :func:`shapelens.structure.draw.draw_diagram`, saving it to ``path`` (PNG/SVG/PDF by
        suffix) when given. Returns the matplotlib Figure."""
        from .draw import draw_diagram

        return draw_diagram(self, ax=ax, path=path, check=check)

    def __repr__(self) -> str:
        return (f"Diagram({self.name!r}: {len(self.objects)} objects, {len(self.morphisms)} morphisms, "
                f"{len(self.equations)} equations)")

    def __str__(self) -> str:
        lines = [repr(self)]
        lines += [f"  {m.signature}" for m in self.morphisms.values()]
        lines += [f"  {eq}" for eq in self.equations]
        return "\n".join(lines)
