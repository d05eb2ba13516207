"""Objects of the category of architectures: typed spaces and their (monoidal) products.

A :class:`Space` is an object in the sense of Fong & Spivak (*An Invitation to Applied Category
Theory*, 2019, ch. 3): a per-example tensor shape (no batch axis), optionally carrying a group
representation from :mod:`shapelens.symmetry` that acts on its last axis, as in the typed
feature spaces of Cohen & Welling (2016, "Group Equivariant Convolutional Networks") and Finzi,
Welling & Wilson (2021, EMLP). :class:`Product` is the monoidal product of spaces (values are
tuples of tensors), strict in the sense of Fong & Spivak (2019, sec. 4.4): nested products
flatten, so ``(A @ B) @ C == A @ (B @ C)``. Architectures are then morphisms between these objects
(Gavranovic et al., "Categorical Deep Learning is an Algebraic Theory of All Architectures",
ICML 2024), see :mod:`shapelens.structure.morphisms`.

The three build-time errors of :mod:`shapelens.structure` live here: :class:`StructureError`,
:class:`TypeMismatchError` and :class:`CycleError`.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any

import numpy as np

__all__ = ["StructureError", "TypeMismatchError", "CycleError", "Space", "Product", "as_space"]


class StructureError(ValueError):
    """A diagram, morphism or space was declared inconsistently (the base of every build-time
    error of :mod:`shapelens.structure`; a ``ValueError``)."""


class TypeMismatchError(StructureError, TypeError):
    """Two things whose types (spaces) must agree do not: composing ``f >> g`` with
    ``f.cod != g.dom``, a module whose output is not its declared codomain, data of the wrong
    shape (a :class:`StructureError` and a ``TypeError``)."""


class CycleError(StructureError):
    """A cycle in a diagram makes a request for a path ill-defined (infinitely many paths)."""


def _is_rep(a: Any) -> bool:
    return hasattr(a, "rho") and hasattr(a, "dim") and hasattr(a, "group")


def _shape_of(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, bool):
        raise StructureError(f"{what} must be an int or a tuple of ints, got {shape!r}.")
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        out = tuple(shape)
    except TypeError:
        raise StructureError(f"{what} must be an int or a tuple of positive ints (a per-example shape, no batch "
                             f"axis), got {shape!r} ({type(shape).__name__}).") from None
    for s in out:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise StructureError(f"{what} must be a tuple of positive ints (a per-example shape, no batch axis), got "
                                 f"{shape!r}; every axis needs at least one entry.")
    return tuple(int(s) for s in out)


def _group_name(rep: Any) -> str:
    return str(getattr(getattr(rep, "group", None), "name", "?"))


def _rep_label(rep: Any) -> str:
    return f"{getattr(rep, 'name', 'rep')} of {_group_name(rep)}"


def same_rep(a: Any, b: Any, atol: float = 1e-9) -> bool:
    """Whether two representations are the same: the same object, or representations of the
    same group (the same object or the same generators) with the same dimension whose matrices
    agree on the discrete generators and on three seeded samples of the group."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if int(a.dim) != int(b.dim):
        return False
    from ..symmetry.reps import _same_group

    G = a.group
    if not _same_group(G, b.group):
        return False
    elements = list(getattr(G, "discrete_generators", ())) + list(G.sample(3, seed=0))
    return all(np.allclose(a.rho(g), b.rho(g), atol=atol, rtol=0) for g in elements)


class Space:
    """An object of the category: a per-example tensor shape, optionally named and optionally
    carrying a representation ``rep`` of a group acting on the last axis.

    ``Space("Latent", 64)`` is the space of 64-vectors named Latent (``str`` gives
    ``"Latent[64]"``); ``Space(None, (3, 4))`` is anonymous (``"R[3, 4]"``); ``Space("X", 5,
    rep=standard(symmetric(5)))`` is a set of 5 numbers on which S_5 acts by permutation
    (Cohen & Welling 2016; Finzi et al. 2021). Values of a space are batches ``(B, *shape)``.

    Two spaces are equal (``==``, :meth:`matches`) when they have the same shape, the same name
    where both are named (an anonymous space matches any name; this is what an ``int`` or
    ``tuple`` given as a morphism's domain means), and the same representation: the same object,
    or the same group and dimension with equal matrices on sampled elements. An anonymous space
    without a representation is a plain ``R^shape`` and matches a space of that shape whatever its
    representation. Objects in the sense of Fong & Spivak (2019, ch. 3).

    Raises :class:`StructureError` for a shape that is not a tuple of positive ints, a name that is
    not a non-empty string, and a representation whose dimension differs from the last axis.
    """

    __slots__ = ("_name", "_shape", "_rep")

    def __init__(self, name: str | None, shape: int | tuple[int, ...], rep: Any = None):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise StructureError(f"a space's name must be a non-empty string or None (anonymous), got {name!r}.")
        shape = _shape_of(shape, f"the shape of space {name!r}" if name else "a space's shape")
        if rep is not None:
            if not _is_rep(rep):
                raise StructureError(f"rep of space {name or 'R' + str(list(shape))} must be a shapelens.symmetry Rep "
                                     f"(with .group, .dim, .rho), got {type(rep).__name__}.")
            if not shape:
                raise StructureError(f"space {name!r} has scalar shape () but a representation; a representation acts "
                                     "on the last axis, so give the space at least one axis.")
            if int(rep.dim) != shape[-1]:
                raise StructureError(f"space {name or 'R' + str(list(shape))} has {shape[-1]} entries on its last axis "
                                     f"but its representation {_rep_label(rep)} has dimension {rep.dim}; a "
                                     f"representation acts on the last axis, so give one of dimension {shape[-1]} or "
                                     f"change the shape.")
        self._name, self._shape, self._rep = name, shape, rep

    # -- attributes ---------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The object's name (None for an anonymous space)."""
        return self._name

    @property
    def shape(self) -> tuple:
        """The per-example shape (no batch axis)."""
        return self._shape

    @property
    def rep(self) -> Any:
        """The group representation acting on the last axis, or None."""
        return self._rep

    @property
    def size(self) -> int:
        """Number of entries of one example (the product of the shape)."""
        return int(math.prod(self._shape))

    @property
    def factors(self) -> tuple["Space", ...]:
        """``(self,)``: a plain space is a product of one factor."""
        return (self,)

    @property
    def is_product(self) -> bool:
        return False

    # -- comparison ---------------------------------------------------------------------
    def matches(self, other: Any) -> bool:
        """Whether ``other`` (a Space, or an int/tuple meaning an anonymous space) is the same
        object of the category; see the class docstring. Same as ``==``."""
        try:
            other = as_space(other)
        except StructureError:
            return False
        if other.is_product:
            return False
        if self._shape != other._shape:
            return False
        if self._name is not None and other._name is not None and self._name != other._name:
            return False
        if self._rep is None and other._rep is None:
            return True
        # an anonymous space without a representation is a plain R^shape (a wildcard)
        if (self._rep is None and self._name is None) or (other._rep is None and other._name is None):
            return True
        return same_rep(self._rep, other._rep)

    def mismatch(self, other: "Space") -> str:
        """Why ``self`` and ``other`` differ, in words ("" when they match)."""
        if self.matches(other):
            return ""
        if self.is_product != other.is_product or len(self.factors) != len(other.factors):
            return f"{_kind(self)} vs {_kind(other)}"
        if self.is_product:
            for i, (a, b) in enumerate(zip(self.factors, other.factors)):
                if not a.matches(b):
                    return f"factor {i}: {a.mismatch(b)}"
            return "different factors"
        if self.shape != other.shape:
            return f"shapes {self.shape} vs {other.shape}"
        if self.name is not None and other.name is not None and self.name != other.name:
            return f"names {self.name!r} vs {other.name!r}"
        ra = _rep_label(self.rep) if self.rep is not None else "no representation"
        rb = _rep_label(other.rep) if other.rep is not None else "no representation"
        return f"representations {ra} vs {rb}"

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Space):
            return NotImplemented
        return self.matches(other)

    def __ne__(self, other: Any) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        # equal spaces must hash equal, and an anonymous space equals a named one of its shape: the
        # hash uses the shape only (a named and an anonymous space may collide, never disagree)
        return hash(("Space", self._shape))

    def same_declaration(self, other: "Space") -> bool:
        """Strict identity of declarations: same name, shape and representation (used by a
        diagram, where a name stands for one object)."""
        if not isinstance(other, Space) or self.is_product != other.is_product:
            return False
        if self.is_product:
            return len(self.factors) == len(other.factors) and all(
                a.same_declaration(b) for a, b in zip(self.factors, other.factors))
        if self._name != other._name or self._shape != other._shape:
            return False
        if (self._rep is None) != (other._rep is None):
            return False
        return self._rep is None or same_rep(self._rep, other._rep)

    # -- monoidal product ---------------------------------------------------------------
    def __matmul__(self, other: Any) -> "Product":
        if isinstance(other, (Space, int, tuple)) and not isinstance(other, bool):
            return Product(self, other)
        return NotImplemented

    def __rmatmul__(self, other: Any) -> "Product":
        if isinstance(other, (int, tuple)) and not isinstance(other, bool):
            return Product(other, self)
        return NotImplemented

    # -- text ---------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self._name or 'R'}[{', '.join(str(s) for s in self._shape)}]"

    def __repr__(self) -> str:
        rep = "" if self._rep is None else f", rep={_rep_label(self._rep)}"
        return f"Space({self._name!r}, {self._shape}{rep})"


def _kind(s: Space) -> str:
    return f"a product of {len(s.factors)} factors" if s.is_product else "a single space"


class Product(Space):
    """The monoidal product ``A x B x ...`` of spaces (also ``A @ B``): a value is a tuple of
    batches, one per factor, in order.

    Strict monoidal (Fong & Spivak 2019, sec. 4.4): nested products flatten, so
    ``Product(Product(A, B), C) == Product(A, Product(B, C)) == A @ B @ C`` with factors
    ``(A, B, C)``. ``name`` is ``"A x B"`` when every factor is named (None otherwise), ``str`` is
    ``"A x B"`` (anonymous factors written ``R[...]``), ``shape`` is the tuple of the factors'
    shapes and ``size`` the total number of entries. When every factor carries a representation
    of one group, ``rep`` is their direct sum, acting componentwise (each factor by its own
    representation); otherwise ``rep`` is None.

    Two products are equal when they have the same number of factors and the factors are equal
    pairwise; a product never equals a plain space. Needs at least two factors.
    """

    __slots__ = ("_factors",)

    def __init__(self, *factors: Any):
        flat: list[Space] = []
        for i, f in enumerate(factors):
            try:
                s = as_space(f)
            except StructureError as exc:
                raise StructureError(f"factor {i} of a product: {exc}") from None
            flat.extend(s.factors)
        if len(flat) < 2:
            raise StructureError(f"a product needs at least two factors, got {len(flat)} ({', '.join(map(str, flat))}); "
                                 "use the space itself for one factor.")
        self._factors = tuple(flat)
        names = [f.name for f in flat]
        self._name = " x ".join(names) if all(n is not None for n in names) else None
        self._shape = tuple(f.shape for f in flat)
        self._rep = _direct_sum([f.rep for f in flat])

    @property
    def factors(self) -> tuple[Space, ...]:
        """The factors, flattened, in order."""
        return self._factors

    @property
    def is_product(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return int(sum(f.size for f in self._factors))

    def matches(self, other: Any) -> bool:
        if not isinstance(other, Product) or len(other.factors) != len(self._factors):
            return False
        return all(a.matches(b) for a, b in zip(self._factors, other.factors))

    def __hash__(self) -> int:
        return hash(("Product", tuple(hash(f) for f in self._factors)))

    def __str__(self) -> str:
        return " x ".join(str(f) if f.name is None else f.name for f in self._factors)

    def __repr__(self) -> str:
        return f"Product({', '.join(repr(f) for f in self._factors)})"


def _direct_sum(reps: list) -> Any:
    if not reps or any(r is None for r in reps):
        return None
    from ..symmetry.reps import _same_group

    G = reps[0].group
    if not all(_same_group(G, r.group) for r in reps[1:]):
        return None
    try:
        return reduce(lambda a, b: a + b, reps)
    except (ValueError, TypeError):
        return None


def as_space(x: Any) -> Space:
    """A :class:`Space` as is; an int or a tuple of ints as the anonymous space of that shape."""
    if isinstance(x, Space):
        return x
    if isinstance(x, (int, np.integer, tuple, list)) and not isinstance(x, bool):
        return Space(None, tuple(x) if isinstance(x, list) else x)
    raise StructureError(f"expected a Space (or an int / tuple of ints for an anonymous space), got "
                         f"{type(x).__name__} {x!r}.")
