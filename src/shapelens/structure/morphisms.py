"""Morphisms: typed maps between spaces, composed and tensored with their types checked at build
time.

A :class:`Morphism` wraps an ``nn.Module`` (or any callable) with a domain and a codomain
:class:`~shapelens.structure.objects.Space`; ``f >> g`` composes (first ``f``, then ``g``) and
``f @ g`` is the parallel (monoidal) product acting on tuples, the two operations of a symmetric
monoidal category (Fong & Spivak, *An Invitation to Applied Category Theory*, 2019, ch. 4). Every
composite is itself an ``nn.Module`` whose parameters are its parts', so an architecture is a
morphism built from smaller ones, as in Gavranovic et al. ("Categorical Deep Learning is an
Algebraic Theory of All Architectures", ICML 2024). Types are checked when a composite is built,
not deep inside a forward pass: a mismatch names both morphisms and both spaces.

The structural morphisms of a cartesian monoidal category are provided: :func:`identity`,
:func:`projection`, :func:`diagonal` (copy), :func:`pair` (``<f, g>``), and the reshaping maps
:func:`concat` / :func:`split` between a product of vectors and one vector; :func:`action` is the
map ``x -> rho(g) x`` of a space's group representation (Cohen & Welling 2016; Finzi, Welling &
Wilson 2021), the vertical arrows of an equivariance square.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..probe import eval_mode
from .objects import Product, Space, StructureError, TypeMismatchError, as_space

__all__ = ["Morphism", "Compose", "Parallel", "identity", "projection", "diagonal", "pair", "concat", "split",
           "action"]

#: Batch size of the zero batch :meth:`Morphism.verify` runs.
VERIFY_BATCH = 2


# --------------------------------------------------------------------------------------
# values of spaces
# --------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"


def _expected(space: Space) -> str:
    if space.is_product:
        return "a tuple of " + ", ".join(f"(B, {', '.join(map(str, f.shape))})" if f.shape else "(B,)"
                                         for f in space.factors)
    return f"a tensor of shape (B, {', '.join(map(str, space.shape))})" if space.shape else "a tensor of shape (B,)"


def _value_problem(value: Any, space: Space, batch: int | None = None) -> str:
    """"" when ``value`` is a batch of ``space`` (with ``batch`` examples if given), else why not."""
    if space.is_product:
        if not isinstance(value, (tuple, list)):
            return f"got {_describe(value)}, not a tuple (the space is a product of {len(space.factors)})"
        if len(value) != len(space.factors):
            return f"got {_describe(value)}, but the product has {len(space.factors)} factors"
        for i, (v, f) in enumerate(zip(value, space.factors)):
            p = _value_problem(v, f, batch)
            if p:
                return f"factor {i} ({f}): {p}"
            if batch is None:
                batch = v.shape[0]
        return ""
    if not isinstance(value, torch.Tensor):
        return f"got {_describe(value)}"
    if value.ndim != len(space.shape) + 1 or tuple(value.shape[1:]) != space.shape:
        return f"got {_describe(value)}"
    if batch is not None and value.shape[0] != batch:
        return f"got {value.shape[0]} examples for a batch of {batch}"
    return ""


def _batch_size(value: Any) -> int:
    return int(value[0].shape[0] if isinstance(value, (tuple, list)) else value.shape[0])


def _zeros(space: Space, batch: int, dtype: torch.dtype, device: torch.device) -> Any:
    if space.is_product:
        return tuple(_zeros(f, batch, dtype, device) for f in space.factors)
    return torch.zeros((batch, *space.shape), dtype=dtype, device=device)


def _dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device, bool]:
    """(dtype, device, whether the dtype is the module's own): the first floating parameter or
    buffer's, else torch's default dtype."""
    dev = None
    for t in list(module.parameters()) + list(module.buffers()):
        if dev is None:
            dev = t.device
        if t.is_floating_point():
            return t.dtype, t.device, True
    return torch.get_default_dtype(), dev if dev is not None else torch.device("cpu"), False


def _default_name(fn: Any) -> str:
    if isinstance(fn, nn.Module):
        return type(fn).__name__
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "f" if name == "<lambda>" else name


def _label(m: "Morphism", inside: str) -> str:
    """A part's name inside a composite name, parenthesized when it is a composite of the other
    kind (``(f @ g) >> h``, ``(f >> g) @ h``)."""
    other = " @ " if inside == ">>" else " >> "
    return f"({m.name})" if other in m.name else m.name


# --------------------------------------------------------------------------------------
# the morphism
# --------------------------------------------------------------------------------------


class Morphism(nn.Module):
    """A typed map ``fn: dom -> cod`` between spaces, itself an ``nn.Module``.

    An arrow of the category whose objects are :class:`~shapelens.structure.objects.Space` s
    (Fong & Spivak 2019, ch. 3); architectures are built as composites of such arrows
    (Gavranovic et al. 2024). ``f >> g`` is :class:`Compose` (first ``f``, then ``g``; the types
    must agree, checked at build time) and ``f @ g`` is :class:`Parallel` (the monoidal product on
    tuples).

    Parameters
    ----------
    fn : an ``nn.Module`` (registered as the submodule ``fn``, so its parameters are this
        morphism's), a bound method of an ``nn.Module`` (its module is registered as ``owner``) or
        any callable mapping a batch of ``dom`` to a batch of ``cod``.
    dom, cod : :class:`Space` s (a :class:`Product` for tuple-valued inputs or outputs); an int or
        a tuple of ints means the anonymous space of that shape.
    name : the morphism's name (default: the module's class name or the function's name).
    verify : run ``fn`` once now on a zero batch of 2 examples of ``dom`` (eval mode via
        :func:`shapelens.probe.eval_mode`, under ``torch.no_grad()``, in the module's dtype and on
        its device; training flags and BatchNorm statistics are left as they were) and raise
        :class:`TypeMismatchError` naming the morphism and both shapes if the output is not a batch
        of ``cod`` (or if ``fn`` fails on a batch of ``dom``). Pass ``verify=False`` for a map that
        cannot take zeros (e.g. integer token ids).
    inverse : optional morphism ``cod -> dom`` (also settable later as ``f.inverse = g``; its
        domain and codomain are checked). It is registered as the submodule ``inverse`` (so its
        parameters follow ``.to()`` and optimizers) unless it contains this morphism already.

    ``forward(x)`` checks that ``x`` is a batch of ``dom`` and that the output is a batch of
    ``cod`` with as many examples, raising :class:`TypeMismatchError` naming the morphism and the
    expected shape otherwise.
    """

    def __init__(self, fn: Callable | None, dom: Any, cod: Any, name: str | None = None, *, verify: bool = True,
                 inverse: "Morphism | None" = None):
        super().__init__()
        label = name if name is not None else (_default_name(fn) if fn is not None else "morphism")
        if not isinstance(label, str) or not label:
            raise StructureError(f"a morphism's name must be a non-empty string, got {name!r}.")
        try:
            dom, cod = as_space(dom), as_space(cod)
        except StructureError as exc:
            raise StructureError(f"morphism {label!r}: {exc}") from None
        if fn is None and type(self) is Morphism:
            raise TypeMismatchError(f"morphism {label!r} has no function; give an nn.Module or a callable.")
        if fn is not None and not callable(fn):
            raise TypeMismatchError(f"morphism {label!r} wraps {type(fn).__name__}, which is not callable; give an "
                                    "nn.Module or a function mapping a batch of the domain to a batch of the codomain.")
        if isinstance(fn, nn.Module):
            self.fn = fn
        else:
            object.__setattr__(self, "fn", fn)
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, nn.Module):
                self.owner = owner  # a bound method: register its module so parameters and modes follow
        self.name, self.dom, self.cod = label, dom, cod
        object.__setattr__(self, "inverse", None)
        if verify:
            self.verify()
        if inverse is not None:
            self.inverse = inverse

    # -- inverse: registered as a submodule unless that would make a module cycle ---------
    def __setattr__(self, key: str, value: Any) -> None:
        if key == "inverse":
            self._set_inverse(value)
            return
        super().__setattr__(key, value)

    def _set_inverse(self, inv: Any, register: bool = True) -> None:
        if inv is not None:
            if not isinstance(inv, Morphism):
                raise TypeMismatchError(f"the inverse of morphism {self.name!r} must be a Morphism {self.cod} -> "
                                        f"{self.dom}, got {type(inv).__name__}.")
            if not (inv.dom.matches(self.cod) and inv.cod.matches(self.dom)):
                raise TypeMismatchError(f"the inverse of morphism {self.name!r}: {self.dom} -> {self.cod} must map "
                                        f"{self.cod} -> {self.dom}, but {inv.name!r} maps {inv.dom} -> {inv.cod}.")
        self._modules.pop("inverse", None)
        self.__dict__.pop("inverse", None)
        if register and inv is not None and not any(m is self for m in inv.modules()):
            self._modules["inverse"] = inv
        else:  # None, an inverse that contains this morphism (f.inverse.inverse = f), or a composite's inverse
            object.__setattr__(self, "inverse", inv)

    # -- checking ----------------------------------------------------------------------
    def verify(self) -> None:
        """Run the morphism once on a zero batch of its domain and raise
        :class:`TypeMismatchError` if the output is not a batch of its codomain.

        Side-effect free: eval mode (restored after), ``torch.no_grad()``, so dropout, BatchNorm
        running statistics and gradients are untouched."""
        dtype, device, own = _dtype_device(self)
        # a function without parameters may close over tensors of either float dtype: try both
        dtypes = [dtype] if own else list(dict.fromkeys([dtype, torch.float64, torch.float32]))
        first: Exception | None = None
        with eval_mode(self), torch.no_grad():
            for dt in dtypes:
                x = _zeros(self.dom, VERIFY_BATCH, dt, device)
                try:
                    y = self._call(x)
                    break
                except TypeMismatchError:
                    raise
                except Exception as exc:
                    first = first or exc
            else:
                x = _zeros(self.dom, VERIFY_BATCH, dtypes[0], device)
                raise TypeMismatchError(
                    f"morphism {self.name!r} failed on a zero batch of its declared domain {self.dom} ({_describe(x)}): "
                    f"{type(first).__name__}: {first}. Check the declared domain, or pass verify=False if the map needs "
                    "other input (e.g. integer ids).") from first
        problem = _value_problem(y, self.cod, VERIFY_BATCH)
        if problem:
            raise TypeMismatchError(
                f"morphism {self.name!r} declares codomain {self.cod} ({_expected(self.cod)}) but on a batch of "
                f"{VERIFY_BATCH} from its domain {self.dom} it returns {_describe(y)}; fix the declared codomain or the "
                "module.")

    def _call(self, x: Any) -> Any:
        y = self.fn(x)
        return tuple(y) if isinstance(y, list) else y

    def forward(self, x: Any) -> Any:
        problem = _value_problem(x, self.dom)
        if problem:
            raise TypeMismatchError(f"morphism {self.name!r} expects a batch of its domain {self.dom}, "
                                    f"{_expected(self.dom)}; {problem}.")
        y = self._call(x)
        problem = _value_problem(y, self.cod, _batch_size(x))
        if problem:
            raise TypeMismatchError(f"morphism {self.name!r} must return a batch of its codomain {self.cod}, "
                                    f"{_expected(self.cod)}; {problem}.")
        return y

    # -- operations --------------------------------------------------------------------
    def __rshift__(self, other: Any) -> "Compose":
        if not isinstance(other, Morphism):
            raise TypeMismatchError(f"cannot compose morphism {self.name!r} with {type(other).__name__}; wrap it "
                                    "first: Morphism(module, dom, cod).")
        return Compose(self, other)

    def __rrshift__(self, other: Any) -> "Compose":
        raise TypeMismatchError(f"cannot compose {type(other).__name__} with morphism {self.name!r}; wrap it first: "
                                "Morphism(module, dom, cod).")

    def __matmul__(self, other: Any) -> "Parallel":
        if not isinstance(other, Morphism):
            raise TypeMismatchError(f"cannot form the parallel product of morphism {self.name!r} with "
                                    f"{type(other).__name__}; wrap it first: Morphism(module, dom, cod).")
        return Parallel(self, other)

    def __rmatmul__(self, other: Any) -> "Parallel":
        raise TypeMismatchError(f"cannot form the parallel product of {type(other).__name__} with morphism "
                                f"{self.name!r}; wrap it first: Morphism(module, dom, cod).")

    @property
    def parts(self) -> tuple["Morphism", ...]:
        """``(self,)`` for a plain morphism; the flat tuple of parts for a composite."""
        return (self,)

    @property
    def signature(self) -> str:
        """``"name: dom -> cod"``."""
        return f"{self.name}: {self.dom} -> {self.cod}"

    def extra_repr(self) -> str:
        return self.signature


def _flatten(parts: tuple, kind: type, what: str) -> list["Morphism"]:
    """The parts of a composite or product, with nested ones of the same ``kind`` opened
    (composition and the monoidal product are associative); anything but a Morphism is refused."""
    flat: list[Morphism] = []
    for i, p in enumerate(parts):
        if not isinstance(p, Morphism):
            raise TypeMismatchError(f"part {i} of {what} is a {type(p).__name__}, not a Morphism; wrap it first: "
                                    "Morphism(module, dom, cod).")
        flat.extend(p.parts if isinstance(p, kind) else (p,))
    return flat


class Compose(Morphism):
    """The composite ``f1 >> f2 >> ... >> fn`` (first ``f1``): composition in the category of
    spaces (Fong & Spivak 2019, ch. 3), an ``nn.Module`` whose parameters are its parts'.

    Built by ``f >> g`` or ``Compose(f, g, ..., name=None)``. Each part's codomain must equal the
    next part's domain, checked here: :class:`TypeMismatchError` names both morphisms and both
    spaces. Nested composites flatten (composition is associative), so ``parts`` is the flat tuple
    of morphisms. A single part is allowed (a renamed view of it). When every part has an
    ``inverse``, the composite's is ``f_n^-1 >> ... >> f_1^-1`` (built from the parts' inverses,
    not registered again).
    """

    def __init__(self, *parts: Morphism, name: str | None = None, _invert: bool = True):
        flat = _flatten(parts, Compose, "a composite")
        if not flat:
            raise StructureError("a composite needs at least one morphism.")
        for f, g in zip(flat, flat[1:]):
            if not f.cod.matches(g.dom):
                raise TypeMismatchError(
                    f"cannot compose {f.name!r} >> {g.name!r}: {f.name!r} maps {f.dom} -> {f.cod} but {g.name!r} maps "
                    f"{g.dom} -> {g.cod}; the codomain {f.cod} of {f.name!r} is not the domain {g.dom} of {g.name!r} "
                    f"({f.cod.mismatch(g.dom)}). Insert a morphism {f.cod} -> {g.dom} or fix the declared spaces.")
        super().__init__(None, flat[0].dom, flat[-1].cod,
                         name if name is not None else " >> ".join(_label(p, ">>") for p in flat), verify=False)
        self.steps = nn.ModuleList(flat)
        if _invert and all(p.inverse is not None for p in flat):  # (f >> g)^-1 = g^-1 >> f^-1
            inv = Compose(*[p.inverse for p in reversed(flat)], name=f"({self.name})^-1", _invert=False)
            self._set_inverse(inv, register=False)

    @property
    def parts(self) -> tuple[Morphism, ...]:
        return tuple(self.steps)

    def _call(self, x: Any) -> Any:
        for p in self.steps:
            x = p(x)
        return x

    def forward(self, x: Any) -> Any:
        return self._call(x)  # every part checks its own domain and codomain


class Parallel(Morphism):
    """The parallel (monoidal) product ``f1 @ f2 @ ...``: domain ``f1.dom x f2.dom x ...``,
    codomain ``f1.cod x f2.cod x ...``, acting on tuples componentwise (Fong & Spivak 2019,
    sec. 4.4, the tensor product of a monoidal category); an ``nn.Module`` whose parameters are its
    parts'.

    Built by ``f @ g`` or ``Parallel(f, g, ..., name=None)`` (at least two parts, each a
    :class:`Morphism`, else :class:`TypeMismatchError`). Nested products flatten, both the parts
    (``parts``) and the spaces: a part whose domain is itself a product takes its factors' worth
    of consecutive tuple entries, and a part whose codomain is a product contributes its factors'
    worth of outputs. When every part has an ``inverse``, the product's is ``f1^-1 @ f2^-1 @ ...``.
    """

    def __init__(self, *parts: Morphism, name: str | None = None, _invert: bool = True):
        flat = _flatten(parts, Parallel, "a parallel product")
        if len(flat) < 2:
            raise StructureError(f"a parallel product needs at least two morphisms, got {len(flat)}.")
        super().__init__(None, Product(*[p.dom for p in flat]), Product(*[p.cod for p in flat]),
                         name if name is not None else " @ ".join(_label(p, "@") for p in flat), verify=False)
        self.branches = nn.ModuleList(flat)
        if _invert and all(p.inverse is not None for p in flat):  # (f @ g)^-1 = f^-1 @ g^-1
            inv = Parallel(*[p.inverse for p in flat], name=f"({self.name})^-1", _invert=False)
            self._set_inverse(inv, register=False)

    @property
    def parts(self) -> tuple[Morphism, ...]:
        return tuple(self.branches)

    def _call(self, x: Any) -> Any:
        out: list = []
        i = 0
        for p in self.branches:
            k = len(p.dom.factors)
            xi = tuple(x[i:i + k]) if p.dom.is_product else x[i]
            i += k
            y = p(xi)
            out.extend(y if p.cod.is_product else (y,))
        return tuple(out)

    def forward(self, x: Any) -> Any:
        problem = _value_problem(x, self.dom)
        if problem:
            raise TypeMismatchError(f"morphism {self.name!r} expects a batch of its domain {self.dom}, "
                                    f"{_expected(self.dom)}; {problem}.")
        return self._call(x)


# --------------------------------------------------------------------------------------
# structural morphisms
# --------------------------------------------------------------------------------------


class _Identity(nn.Module):
    def forward(self, x):
        return x


class _Projection(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class _Diagonal(nn.Module):
    def __init__(self, n: int, product: bool):
        super().__init__()
        self.n, self.product = n, product

    def forward(self, x):
        return tuple(x) * self.n if self.product else (x,) * self.n

    def extra_repr(self) -> str:
        return f"copies={self.n}"


class _Concat(nn.Module):
    def forward(self, x):
        return torch.cat(tuple(x), dim=-1)


class _Split(nn.Module):
    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        self.sizes = tuple(sizes)

    def forward(self, x):
        return tuple(torch.split(x, self.sizes, dim=-1))

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class _GroupAction(nn.Module):
    """``x -> x @ rho(g)^T`` per factor; the float64 matrices are cast to the input's dtype at
    each call (as :func:`shapelens.symmetry.equivariance_error` does), so the action is exact in
    float64 whatever dtype the module was moved to."""

    def __init__(self, mats: list[np.ndarray], product: bool):
        super().__init__()
        self.mats = [np.asarray(m, dtype=np.float64) for m in mats]
        self.product = product
        self._cache: dict = {}

    def _act(self, x: torch.Tensor, k: int) -> torch.Tensor:
        key = (k, x.dtype, x.device)
        R = self._cache.get(key)
        if R is None:
            R = self._cache[key] = torch.as_tensor(self.mats[k], dtype=x.dtype, device=x.device)
        return x @ R.T

    def forward(self, x):
        if self.product:
            return tuple(self._act(xi, k) for k, xi in enumerate(x))
        return self._act(x, 0)


def _space_arg(space: Any, what: str) -> Space:
    try:
        return as_space(space)
    except StructureError as exc:
        raise StructureError(f"{what}: {exc}") from None


def identity(space: Any, *, name: str | None = None) -> Morphism:
    """The identity morphism ``id_A: A -> A`` (Fong & Spivak 2019, ch. 3); named ``"id_A"``."""
    space = _space_arg(space, "identity")
    m = Morphism(_Identity(), space, space, name or f"id_{space.name or 'R'}", verify=False)
    m.inverse = Morphism(_Identity(), space, space, m.name, verify=False)
    return m


def projection(product: Any, i: int, *, name: str | None = None) -> Morphism:
    """The projection ``pi_i: A_0 x ... x A_{n-1} -> A_i`` of a :class:`Product` (a cartesian
    monoidal category's structure map, Fong & Spivak 2019, sec. 4.4). ``i`` may be negative.
    Named ``"pi_<factor name>"`` (``"pi_<i>"`` for an anonymous factor)."""
    product = _space_arg(product, "projection")
    if not product.is_product:
        raise StructureError(f"projection needs a Product space (A @ B), got the single space {product}; a single space "
                             "projects to itself: use identity(space).")
    n = len(product.factors)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
        raise StructureError(f"projection index {i!r} is out of range for the product {product} of {n} factors; give an "
                             f"int in [{-n}, {n - 1}].")
    i = int(i) % n
    factor = product.factors[i]
    return Morphism(_Projection(i), product, factor, name or f"pi_{factor.name or i}", verify=False)


def diagonal(space: Any, n: int = 2, *, name: str | None = None) -> Morphism:
    """The copy (diagonal) map ``A -> A x ... x A`` (``n`` copies), ``x -> (x, ..., x)``;
    the comultiplication of a cartesian category (Fong & Spivak 2019, sec. 4.4). Named
    ``"copy_A"``."""
    space = _space_arg(space, "diagonal")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise StructureError(f"diagonal needs n >= 2 copies, got {n!r}; one copy is identity(space).")
    cod = Product(*([space] * int(n)))
    return Morphism(_Diagonal(int(n), space.is_product), space, cod, name or f"copy_{space.name or 'R'}", verify=False)


def pair(f: Morphism, g: Morphism, *, name: str | None = None) -> Morphism:
    """The pairing ``<f, g> = diagonal(A) >> (f @ g): A -> B x C`` of two morphisms with the same
    domain ``A`` (the universal map into a product, Fong & Spivak 2019, sec. 4.4). Raises
    :class:`TypeMismatchError` when the domains differ."""
    for what, m in (("first", f), ("second", g)):
        if not isinstance(m, Morphism):
            raise TypeMismatchError(f"pair: the {what} argument is a {type(m).__name__}, not a Morphism; wrap it "
                                    "first: Morphism(module, dom, cod).")
    if not f.dom.matches(g.dom):
        raise TypeMismatchError(f"pair needs two morphisms with one domain, but {f.name!r} maps {f.dom} -> {f.cod} and "
                                f"{g.name!r} maps {g.dom} -> {g.cod} ({f.dom.mismatch(g.dom)}).")
    dom = f.dom if f.dom.name is not None or g.dom.name is None else g.dom
    return Compose(diagonal(dom), Parallel(f, g), name=name or f"<{f.name}, {g.name}>")


def _vector_factors(product: Space, what: str) -> tuple[tuple[int, ...], list[int]]:
    lead = None
    sizes = []
    for i, fac in enumerate(product.factors):
        if not fac.shape:
            raise StructureError(f"{what}: factor {i} ({fac}) is a scalar space; concatenation is along the last axis.")
        if lead is None:
            lead = fac.shape[:-1]
        elif fac.shape[:-1] != lead:
            raise StructureError(f"{what}: factor {i} ({fac}) has leading shape {fac.shape[:-1]} but factor 0 has "
                                 f"{lead}; concatenation along the last axis needs equal leading axes (1-D factors "
                                 "always qualify).")
        sizes.append(fac.shape[-1])
    return lead or (), sizes


def _split_into(space: Space, product: Product, name: str) -> Morphism:
    _, sizes = _vector_factors(product, "split")
    return Morphism(_Split(tuple(sizes)), space, product, name, verify=False)


def concat(product: Any, cod: Any = None, *, name: str | None = None) -> Morphism:
    """``A_1 x ... x A_n -> R^(d_1 + ... + d_n)``: concatenate a product of vector spaces into one
    vector (along the last axis; factors with more axes must agree on the leading ones). The
    codomain is ``cod`` (a name, or a Space of the right shape) or an anonymous space; it carries
    the direct sum of the factors' representations when they all have one of the same group, so
    ``concat`` is equivariant (Finzi et al. 2021). ``.inverse`` is the matching :func:`split`.
    Named ``"concat"``."""
    product = _space_arg(product, "concat")
    if not product.is_product:
        raise StructureError(f"concat needs a Product space (A @ B), got the single space {product}.")
    lead, sizes = _vector_factors(product, "concat")
    shape = lead + (sum(sizes),)
    if cod is None or isinstance(cod, str):
        cod = Space(cod, shape, product.rep)
    else:
        cod = _space_arg(cod, "concat codomain")
        if cod.is_product or cod.shape != shape:
            raise TypeMismatchError(f"concat of {product} gives shape {shape} but the codomain given is {cod} "
                                    f"(shape {cod.shape}); give a space of shape {shape}.")
    m = Morphism(_Concat(), product, cod, name or "concat", verify=False)
    m.inverse = _split_into(cod, product, "split")
    return m


def _factor_reps(rep: Any, sizes: list[int]) -> list:
    """The representation of each block of ``sizes`` when the direct-sum summands of ``rep`` tile
    the blocks exactly, else Nones."""
    none = [None] * len(sizes)
    if rep is None:
        return none
    summands = list(getattr(rep, "summands", (rep,)))
    out, k = [], 0
    for s in sizes:
        acc, group = 0, []
        while acc < s and k < len(summands):
            group.append(summands[k])
            acc += int(summands[k].dim)
            k += 1
        if acc != s:
            return none
        r = group[0]
        for h in group[1:]:
            r = r + h
        out.append(r)
    return out if k == len(summands) else none


def split(space: Any, sizes: Any, names: Any = None, *, name: str | None = None) -> Morphism:
    """``R^(d_1 + ... + d_n) -> A_1 x ... x A_n``: split the last axis into blocks of ``sizes``
    (the inverse of :func:`concat`). ``names`` optionally names the factors. A factor carries a
    representation when the space's representation is a direct sum whose summands tile the blocks.
    ``.inverse`` is the matching :func:`concat`. Named ``"split"``."""
    space = _space_arg(space, "split")
    if space.is_product or not space.shape:
        raise StructureError(f"split needs a single space with at least one axis, got {space}.")
    try:
        sizes = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise StructureError(f"split sizes must be a list of positive ints, got {sizes!r}.") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise StructureError(f"split needs at least two positive block sizes, got {sizes}.")
    if sum(sizes) != space.shape[-1]:
        raise StructureError(f"split sizes {sizes} add up to {sum(sizes)} but the last axis of {space} has "
                             f"{space.shape[-1]} entries; give sizes that add up to {space.shape[-1]}.")
    if names is None:
        names = [None] * len(sizes)
    names = list(names)
    if len(names) != len(sizes):
        raise StructureError(f"split got {len(names)} names for {len(sizes)} blocks; give one name per block.")
    reps = _factor_reps(space.rep, sizes)
    lead = space.shape[:-1]
    product = Product(*[Space(nm, lead + (s,), r) for nm, s, r in zip(names, sizes, reps)])
    m = _split_into(space, product, name or "split")
    m.inverse = Morphism(_Concat(), product, space, "concat", verify=False)
    return m


def action(space: Any, g: Any, *, name: str | None = None) -> Morphism:
    """The action of the group element ``g`` on ``space`` through its representation,
    ``x -> x @ rho(g)^T`` on the last axis (componentwise on a :class:`Product`): the vertical
    arrows of the equivariance square ``act(g) >> f == f >> act(g)`` (Cohen & Welling 2016;
    Finzi, Welling & Wilson 2021). ``.inverse`` is the action of ``g^-1``. Named ``"act_A"``.

    Raises :class:`StructureError` if the space has no representation or ``g`` is not an element
    of its group."""
    space = _space_arg(space, "action")
    rep = space.rep
    if rep is None:
        what = ("every factor needs a representation of one group" if space.is_product
                else "give it one: Space(name, shape, rep=...)")
        raise StructureError(f"action: the space {space} has no group representation; {what}.")
    G = rep.group
    reps = [f.rep for f in space.factors] if space.is_product else [rep]

    def mats(elem):
        try:
            return [r.rho(elem) for r in reps]
        except Exception as exc:
            raise StructureError(f"action on {space}: {elem!r} is not an element of {getattr(G, 'name', G)} ({exc}).") \
                from None

    label = name or f"act_{space.name or 'R'}"
    m = Morphism(_GroupAction(mats(g), space.is_product), space, space, label, verify=False)
    inv = getattr(G, "inverse", None)
    if inv is not None:
        m.inverse = Morphism(_GroupAction(mats(inv(g)), space.is_product), space, space, label + "^-1", verify=False)
    return m
