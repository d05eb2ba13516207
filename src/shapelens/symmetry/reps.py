"""Representations of groups and the bases of equivariant linear maps between them.

A representation ``rho: G -> GL(V)`` of a finite group is determined by its matrices on the
generators; a representation of a matrix Lie group by ``rho`` on the discrete generators and its
derivative ``drho`` on a basis of the Lie algebra. Equivariant maps ``W`` with
``rho_out(g) W = W rho_in(g)`` for all ``g`` are therefore the solutions of finitely many linear
equations, ``rho_out(s) W = W rho_in(s)`` for the discrete generators and
``drho_out(A) W = W drho_in(A)`` for the algebra generators: one stacked null-space problem
(Finzi, Welling & Wilson 2021, "A practical method for constructing equivariant multilayer
perceptrons for arbitrary matrix groups"), which :func:`equivariant_basis` solves in one of three
ways: by orbits when every generator acts on ``W`` as a signed permutation (permutation
representations: exact, no linear algebra, millions of unknowns), densely for small systems, and
with a sparse shift-invert Lanczos solve (ARPACK) for large ones.

Matrices are kept sparse inside (tensor powers of permutation and rotation representations are
very sparse); :meth:`Rep.rho` and :meth:`Rep.drho` return dense arrays.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from itertools import permutations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import expm, null_space
from scipy.sparse.csgraph import connected_components

from .._checks import check_int
from .groups import FiniteGroup, Group

__all__ = ["Rep", "trivial", "standard", "regular", "sign", "irrep", "equivariant_basis", "clear_basis_cache"]

# representations of groups up to this order are checked to be homomorphisms when built
_CHECK_ORDER = 5000
# unknowns (dim_out * dim_in) up to which the null space is found by a dense eigensolver
DENSE_MAX = 400
# largest basis array (bytes) equivariant_basis returns
_MAX_BYTES = 2 * 1024**3


def _same_group(G: Group, H: Group) -> bool:
    """The same group object, or two groups built from the same generators."""
    if G is H:
        return True
    if type(G) is not type(H) or len(G.discrete_generators) != len(H.discrete_generators):
        return False
    return (all(np.array_equal(a, b) for a, b in zip(G.discrete_generators, H.discrete_generators))
            and np.array_equal(G.lie_generators, H.lie_generators))


def _csr(M) -> sp.csr_matrix:
    return sp.csr_matrix(M, dtype=np.float64)


class Rep:
    """A representation of ``group`` on ``R^dim``.

    Build it from one ``(dim, dim)`` matrix per generator of a :class:`FiniteGroup`
    (``Rep(G, [M_1, M_2, ...])``, checked to respect the group's relations when ``|G| <= 5000``),
    or from functions ``rho(g) -> (dim, dim)`` and, for a Lie group, ``drho(A) -> (dim, dim)``
    (``Rep(G, rho=..., drho=..., dim=...)``, spot-checked on sampled elements: ``rho(g h) =
    rho(g) rho(h)`` and ``rho(exp(tA)) = exp(t drho(A))``). Usually it is built from the
    constructors (:func:`trivial`, :func:`standard`, :func:`regular`, :func:`sign`,
    :func:`irrep`) and operations: ``V + W`` direct sum, ``V * W`` tensor product (Kronecker;
    ``drho = drho_V x I + I x drho_W``), ``V ** k`` tensor power, ``V.dual()``
    (``rho(g^-1)^T``, ``-drho(A)^T``), as in EMLP and e3nn.
    """

    def __init__(self, group: Group, generator_matrices=None, name: str = "V", *, rho=None, drho=None,
                 dim: int | None = None):
        if not isinstance(group, Group):
            raise TypeError(f"a representation needs a group (FiniteGroup or MatrixGroup), got {type(group).__name__}.")
        self.group, self.name = group, name
        self._summands: tuple | None = None
        self._cons: list | None = None
        if generator_matrices is not None:
            if not group.is_finite:
                raise ValueError(f"{group.name} is a Lie group: give the representation as functions, "
                                 "Rep(G, rho=..., drho=..., dim=...), not as generator matrices.")
            self._init_from_generators(group, generator_matrices, name)
        elif rho is not None:
            self._init_from_functions(group, rho, drho, dim, name)
        else:
            raise ValueError(f"representation {name}: give generator matrices (one per generator of a finite group) or "
                             "rho= (and drho= for a Lie group) with dim=.")

    # -- construction ------------------------------------------------------------------------------
    def _init_from_generators(self, group: FiniteGroup, generator_matrices, name: str) -> None:
        mats = [np.asarray(m, dtype=np.float64) for m in generator_matrices]
        if len(mats) != len(group.generators):
            raise ValueError(f"representation {name} gives {len(mats)} matrices for the {len(group.generators)} "
                             f"generators of {group.name}; give one per generator, in order.")
        dim = mats[0].shape[0] if mats and mats[0].ndim == 2 else 0
        for i, m in enumerate(mats):
            if m.ndim != 2 or m.shape != (dim, dim) or dim == 0:
                raise ValueError(f"generator matrix {i} of {name} has shape {m.shape}; every matrix must be square "
                                 f"with the same size.")
            if abs(np.linalg.det(m)) < 1e-12:
                raise ValueError(f"generator matrix {i} of {name} is singular; a representation maps into invertible "
                                 "matrices.")
        self.dim = dim
        gens = tuple(mats)
        table: dict = {}

        def rho_sp(g):
            if not table:  # the group's breadth-first closure, carrying each element's matrix along
                table[group.identity] = np.eye(dim)
                queue = deque([group.identity])
                while queue:
                    h = queue.popleft()
                    for s, S in zip(group.generators, gens):
                        k = group.compose(s, h)
                        if k not in table:
                            table[k] = S @ table[h]
                            queue.append(k)
            key = tuple(int(v) for v in np.asarray(g).ravel())
            if key not in table:
                raise ValueError(f"{list(key)} is not an element of {group.name}.")
            return _csr(table[key])

        self._rho_sp, self._drho_sp = rho_sp, None
        self._cons = [(_csr(m), False) for m in gens]
        if group.order <= _CHECK_ORDER and not self.is_homomorphism():
            raise ValueError(f"the matrices of {name} do not respect the relations of {group.name} (rho(g h) != "
                             "rho(g) rho(h) for some elements); they define no representation of it.")

    def _init_from_functions(self, group: Group, rho, drho, dim, name: str) -> None:
        self.dim = check_int(dim, "dim", 1)
        lie = len(group.lie_generators) > 0
        if lie and drho is None:
            raise ValueError(f"{group.name} has a Lie algebra: give drho= (the derivative of rho, a function of an "
                             "algebra element A) as well as rho=.")

        def wrap(fn, what):
            def out(x):
                M = np.asarray(fn(x), dtype=np.float64)
                if M.shape != (self.dim, self.dim) or not np.isfinite(M).all():
                    raise ValueError(f"{what} of {name} returned shape {M.shape} (or non-finite entries); it must "
                                     f"return a finite {self.dim} x {self.dim} matrix.")
                return _csr(M)
            return out

        self._rho_sp = wrap(rho, "rho")
        self._drho_sp = wrap(drho, "drho") if lie else None
        self._spot_check()

    @classmethod
    def _make(cls, group, dim, rho_sp, drho_sp, name, summands=None) -> "Rep":
        r = object.__new__(cls)
        r.group, r.dim, r.name = group, dim, name
        r._rho_sp, r._drho_sp = rho_sp, drho_sp
        r._summands, r._cons = summands, None
        return r

    def _spot_check(self, atol: float = 1e-6) -> None:
        G = self.group
        if G.is_finite and G.order <= _CHECK_ORDER:
            if not self.is_homomorphism(atol):
                raise ValueError(f"rho of {self.name} is not a homomorphism of {G.name} (rho(g h) != rho(g) rho(h)).")
            return
        g = G.sample(6, seed=12345)
        for a, b in zip(g[:3], g[3:]):
            if not np.allclose(self.rho(G.compose(a, b)), self.rho(a) @ self.rho(b), atol=atol):
                raise ValueError(f"rho of {self.name} is not a homomorphism of {G.name} (rho(g h) != rho(g) rho(h) on "
                                 "sampled elements).")
        for i, A in enumerate(G.lie_generators):
            if not np.allclose(self.rho(expm(0.37 * A)), expm(0.37 * self.drho(A)), atol=atol):
                raise ValueError(f"drho of {self.name} does not match rho on Lie-algebra generator {i}: "
                                 "rho(exp(tA)) != exp(t drho(A)); drho must be the derivative of rho at the identity.")

    # -- evaluation ----------------------------------------------------------------------------------
    def rho(self, g) -> np.ndarray:
        """The matrix of the group element ``g`` (a permutation tuple for a finite group, a
        ``(d, d)`` matrix for a matrix group)."""
        return self._rho_sp(g).toarray()

    def drho(self, A) -> np.ndarray:
        """The matrix of the Lie-algebra element ``A`` (``d rho(exp(tA)) / dt`` at ``t = 0``)."""
        if self._drho_sp is None:
            raise ValueError(f"{self.group.name} has no Lie algebra (it is discrete); use rho(g) for its elements.")
        return self._drho_sp(np.asarray(A, dtype=np.float64)).toarray()

    def _constraints(self) -> list:
        """``[(matrix, is_lie)]``: rho of each discrete generator, then drho of each algebra
        generator, sparse; what equivariance is solved against."""
        if self._cons is None:
            G = self.group
            cons = [(self._rho_sp(s), False) for s in G.discrete_generators]
            if len(G.lie_generators):
                cons += [(self._drho_sp(A), True) for A in G.lie_generators]
            for M, _ in cons:
                M.sum_duplicates()
                M.sort_indices()
            self._cons = cons
        return self._cons

    @property
    def generator_matrices(self) -> tuple:
        """Dense matrices of the discrete generators."""
        return tuple(M.toarray() for M, lie in self._constraints() if not lie)

    def is_homomorphism(self, atol: float = 1e-9) -> bool:
        """Whether ``rho(g h) = rho(g) rho(h)`` for every element ``g`` and generator ``h`` of an
        enumerable finite group (generator matrices may violate the group's relations)."""
        G = self.group
        gens = [(h, self.rho(h)) for h in G.generators]
        for g in G.elements:
            R = self.rho(g)
            if not all(np.allclose(self.rho(G.compose(g, h)), R @ H, atol=atol) for h, H in gens):
                return False
        return True

    @property
    def summands(self) -> tuple:
        """The representations this one is the direct sum of, in order (``(self,)`` if it was not
        built as a sum)."""
        return self._summands or (self,)

    @property
    def is_permutation(self) -> bool:
        """Every ``rho(g)`` is a permutation matrix (checked on the generators; Lie-algebra
        generators must act as zero), so pointwise functions commute with the group."""
        return all(_signed_perm(M, lie, unsigned=True) for M, lie in self._constraints())

    @property
    def is_trivial(self) -> bool:
        """Every ``rho(g)`` is the identity (checked on the generators; ``drho = 0``)."""
        eye = sp.identity(self.dim, format="csr")
        for M, lie in self._constraints():
            D = (M if lie else M - eye).tocsr()
            if D.nnz and abs(D).max() > 1e-9:
                return False
        return True

    @property
    def is_orthogonal(self) -> bool:
        """Every ``rho(g)`` is orthogonal (checked on the generators: ``rho(s)^T rho(s) = I`` and
        ``drho(A)`` antisymmetric), so norms of the features are invariant."""
        for M, lie in self._constraints():
            P = ((M + M.T) if lie else (M.T @ M - sp.identity(self.dim))).tocsr()
            if P.nnz and abs(P).max() > 1e-9:
                return False
        return True

    # -- operations ----------------------------------------------------------------------------------
    def _same_group(self, other: "Rep", op: str) -> None:
        if not isinstance(other, Rep) or not _same_group(self.group, other.group):
            raise ValueError(f"{op} needs two representations of the same group; got "
                             f"{getattr(getattr(other, 'group', None), 'name', type(other).__name__)} and "
                             f"{self.group.name} (build both from one group object).")

    def __add__(self, other: "Rep") -> "Rep":
        self._same_group(other, "a direct sum")
        a, b = self, other
        drho = None if a._drho_sp is None else (lambda A: sp.block_diag([a._drho_sp(A), b._drho_sp(A)], "csr"))
        return Rep._make(self.group, a.dim + b.dim, lambda g: sp.block_diag([a._rho_sp(g), b._rho_sp(g)], "csr"),
                         drho, f"({a.name} + {b.name})", a.summands + b.summands)

    def __mul__(self, other: "Rep") -> "Rep":
        self._same_group(other, "a tensor product")
        a, b = self, other
        Ia, Ib = sp.identity(a.dim, format="csr"), sp.identity(b.dim, format="csr")
        drho = None if a._drho_sp is None else (
            lambda A: (sp.kron(a._drho_sp(A), Ib) + sp.kron(Ia, b._drho_sp(A))).tocsr())
        return Rep._make(self.group, a.dim * b.dim, lambda g: sp.kron(a._rho_sp(g), b._rho_sp(g), "csr"), drho,
                         f"({a.name} x {b.name})")

    def __pow__(self, k: int) -> "Rep":
        k = check_int(k, "k", 1)
        out = self
        for _ in range(k - 1):
            out = out * self
        out.name = f"{self.name}^{k}"
        return out

    def __rshift__(self, other: "Rep") -> "Rep":
        """``V >> W``: the representation on linear maps ``V -> W`` (``W x V*``), as in EMLP."""
        return other * self.dual()

    def dual(self) -> "Rep":
        a, G = self, self.group
        drho = None if a._drho_sp is None else (lambda A: (-a._drho_sp(A).T).tocsr())
        return Rep._make(G, a.dim, lambda g: a._rho_sp(G.inverse(g)).T.tocsr(), drho, f"{a.name}*")

    def __repr__(self) -> str:
        return f"Rep({self.name} of {self.group.name}, dim={self.dim})"


# -- constructors ------------------------------------------------------------------------------------

def trivial(G: Group, dim: int = 1) -> Rep:
    """Every element acts as the identity on ``R^dim`` (``drho = 0``)."""
    dim = check_int(dim, "dim", 1)
    eye, zero = sp.identity(dim, format="csr"), sp.csr_matrix((dim, dim))
    return Rep._make(G, dim, lambda g: eye, (lambda A: zero) if len(G.lie_generators) else None,
                     "1" if dim == 1 else f"1^{dim}")


def _perm_sparse(p) -> sp.csr_matrix:
    p = np.asarray(p).ravel()
    return sp.csr_matrix((np.ones(len(p)), (p, np.arange(len(p)))), shape=(len(p), len(p)))


def standard(G: Group) -> Rep:
    """The defining representation: for a finite group the permutation representation on
    ``R^degree`` (``rho(g) e_i = e_{g(i)}``, the set/sequence action DeepSets and Maron et al.
    2019 build on); for a matrix group ``rho(g) = g``, ``drho(A) = A``."""
    if G.is_finite:
        r = Rep._make(G, G.degree, lambda g: _perm_sparse(_element(G, g)), None, "V")
    else:
        r = Rep._make(G, G.d, lambda g: _csr(g), lambda A: _csr(A), "V")
    return r


def _element(G: FiniteGroup, g) -> tuple:
    key = tuple(int(v) for v in np.asarray(g).ravel())
    if len(key) != G.degree or sorted(key) != list(range(G.degree)):
        raise ValueError(f"{list(key)} is not an element of {G.name} (a permutation of 0..{G.degree - 1}).")
    if G._sampler is None and G.order <= MAX_CHECK_MEMBERSHIP and key not in G:
        raise ValueError(f"{list(key)} is not an element of {G.name}.")
    return key


MAX_CHECK_MEMBERSHIP = 50_000


def regular(G: FiniteGroup) -> Rep:
    """The regular representation on ``R^|G|``: ``rho(g) e_h = e_{g h}`` (finite groups)."""
    if not G.is_finite:
        raise ValueError(f"{G.name} is infinite; the regular representation exists for finite groups only.")
    index = {h: k for k, h in enumerate(G.elements)}
    return Rep._make(G, G.order, lambda g: _perm_sparse([index[G.compose(_element(G, g), h)] for h in G.elements]),
                     None, "R")


def _parity(p) -> int:
    seen, cycles = [False] * len(p), 0
    for i in range(len(p)):
        if not seen[i]:
            cycles += 1
            while not seen[i]:
                seen[i] = True
                i = p[i]
    return 1 if (len(p) - cycles) % 2 == 0 else -1


def sign(G: Group) -> Rep:
    """The sign representation: ``sgn(g)`` of a permutation (finite groups), ``det(g)`` with
    ``drho(A) = tr(A)`` for a matrix group (the determinant representation)."""
    if G.is_finite:
        return Rep._make(G, 1, lambda g: _csr([[_parity(_element(G, g))]]), None, "sgn")
    return Rep._make(G, 1, lambda g: _csr([[np.linalg.det(g)]]), lambda A: _csr([[np.trace(A)]]), "det")


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _sym_traceless_basis(l: int) -> np.ndarray:
    """Orthonormal basis ``(3^l, 2l + 1)`` of the symmetric traceless rank-``l`` tensors in 3D,
    the carrier of the spin-``l`` irreducible representation of SO(3)."""
    n = 3 ** l
    if l == 0:
        return np.ones((1, 1))
    idx = np.arange(n).reshape((3,) * l)
    S = np.zeros((n, n))
    perms = list(permutations(range(l)))
    for p in perms:
        S[np.arange(n), idx.transpose(p).ravel()] += 1.0 / len(perms)
    w, U = np.linalg.eigh(S)
    U = U[:, w > 0.5]  # the symmetric subspace (S is a projector)
    if l >= 2:  # traceless: contracting the first two indices of each column gives zero
        T = np.einsum("kii...->k...", U.T.reshape((-1,) + (3,) * l)).reshape(U.shape[1], -1)
        U = U @ null_space(T.T)
    return U


def irrep(G: Group, k: int) -> Rep:
    """An irreducible representation, where it is straightforward to write down:

    - SO(2): frequency ``k >= 0``: ``k = 0`` trivial, else the 2D rotation by ``k theta``;
    - O(2): ``k = 0`` trivial, ``k >= 1`` rotation by ``k theta`` with the reflection acting as
      ``diag(1, -1)``;
    - SO(3) and O(3): spin ``k`` (dimension ``2k + 1``) on symmetric traceless rank-``k`` tensors
      (for O(3) with the natural parity ``(-1)^k`` under inversion);
    - C_n (:func:`cyclic`): ``k = 0`` trivial, ``k = n/2`` the sign character, else the 2D
      rotation by ``2 pi k / n`` per generator step (``0 < k < n/2``).
    """
    k = check_int(k, "k", 0)
    kind = getattr(G, "kind", "")
    if kind in ("SO2", "O2"):
        if k == 0:
            return trivial(G)

        def rho(g):
            g = np.asarray(g, dtype=np.float64)
            theta = math.atan2(g[1, 0], g[0, 0])
            R = _rotation(k * theta)
            return R if np.linalg.det(g) > 0 else R @ np.diag([1.0, -1.0])

        return Rep._make(G, 2, lambda g: _csr(rho(g)), lambda A: _csr(k * np.asarray(A)), f"rho_{k}")
    if kind in ("SO3", "O3"):
        Q = _sym_traceless_basis(k)
        Qs = _csr(Q)
        tensor = standard(G) ** k if k else trivial(G)
        return Rep._make(G, 2 * k + 1, lambda g: _csr(Qs.T @ tensor._rho_sp(g) @ Qs),
                         lambda A: _csr(Qs.T @ tensor._drho_sp(A) @ Qs), f"D{k}")
    if G.is_finite and G.name.startswith("C") and G.generators == (tuple((i + 1) % G.degree for i in range(G.degree)),):
        n = G.degree
        if k >= n or 2 * k > n:
            raise ValueError(f"the real irreducible representations of C_{n} are k = 0..{n // 2}; got k = {k}.")
        if k == 0:
            return trivial(G)
        M = np.array([[-1.0]]) if 2 * k == n else _rotation(2 * np.pi * k / n)
        return Rep(G, [M], f"rho_{k}")
    raise ValueError(f"irrep knows SO(2), O(2), SO(3), O(3) (shapelens.symmetry.SO2() ...) and cyclic groups; for "
                     f"{G.name} build representations from standard, trivial, sign and regular.")


# -- equivariant bases ---------------------------------------------------------------------------------

_CACHE: "OrderedDict[str, np.ndarray]" = OrderedDict()
_CACHE_SIZE = 64


def clear_basis_cache() -> None:
    """Forget every basis :func:`equivariant_basis` has cached."""
    _CACHE.clear()


def _signed_perm(M: sp.csr_matrix, lie: bool, unsigned: bool = False) -> bool:
    if lie:
        return M.nnz == 0 or abs(M).max() == 0
    if M.getnnz() != M.shape[0] or (M.getnnz(axis=1) != 1).any() or (M.getnnz(axis=0) != 1).any():
        return False
    return bool(np.all(M.data == 1.0)) if unsigned else bool(np.all(np.abs(M.data) == 1.0))


def _perm_of(M: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """For a signed permutation matrix, ``a`` and ``s`` with ``M e_j = s_j e_{a_j}``."""
    C = M.tocoo()
    a, s = np.empty(M.shape[1], dtype=np.int64), np.empty(M.shape[1])
    a[C.col], s[C.col] = C.row, C.data
    return a, s


def _orbit_basis(pairs, do: int, di: int) -> np.ndarray:
    """Invariants of signed-permutation actions on the entries of ``W`` (``W[a(p), b(q)] =
    s_p t_q W[p, q]``): one basis vector per orbit on which the signs are consistent, found as
    the connected components of a signed double cover of the orbit graph."""
    N = do * di
    src, dst, sgn = [], [], []
    j = np.arange(N)
    p, q = j // di, j % di
    for A, B in pairs:
        a, s = _perm_of(A)
        b, t = _perm_of(B)
        src.append(j)
        dst.append(a[p] * di + b[q])
        sgn.append(s[p] * t[q])
    src, dst, sgn = np.concatenate(src), np.concatenate(dst), np.concatenate(sgn)
    _, comp = connected_components(sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(N, N)), directed=True,
                                   connection="weak")
    # nodes (j, +) are 0..N-1 and (j, -) are N..2N-1; an edge with sign -1 crosses the sheets
    flip = (sgn < 0).astype(np.int64) * N
    u = np.concatenate([src, src + N])
    v = np.concatenate([dst + flip, (dst + N - flip)])
    _, lab = connected_components(sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(2 * N, 2 * N)), directed=True,
                                  connection="weak")
    lp, lm = lab[:N], lab[N:]
    n_comp = comp.max() + 1
    first = np.full(n_comp, N, dtype=np.int64)
    np.minimum.at(first, comp, j)
    alive = lp[first] != lm[first]  # (j, +) and (j, -) apart: the signs along the orbit agree
    keep = np.flatnonzero(alive)
    order = np.argsort(first[keep])
    keep = keep[order]
    k = len(keep)
    if k * N * 8 > _MAX_BYTES:
        raise ValueError(f"the basis has {k} elements of size {N}, {k * N * 8 / 1024**3:.1f} GiB; use smaller "
                         "representations.")
    row = np.full(n_comp, -1, dtype=np.int64)
    row[keep] = np.arange(k)
    r = row[comp]
    m = r >= 0
    sizes = np.bincount(r[m], minlength=k).astype(np.float64)
    vals = np.where(lp[m] == lp[first[comp[m]]], 1.0, -1.0) / np.sqrt(sizes[r[m]])
    out = np.zeros((k, N))
    out[r[m], j[m]] = vals
    return out


def _system(pairs, do: int, di: int) -> sp.csr_matrix:
    """``M = sum_i L_i^T L_i`` with ``L_i vec(W) = vec(A_i W - W B_i)`` (row-major vec)."""
    Io, Ii = sp.identity(do, format="csr"), sp.identity(di, format="csr")
    M = sp.csr_matrix((do * di, do * di))
    for A, B in pairs:
        L = (sp.kron(A, Ii) - sp.kron(Io, B.T)).tocsr()
        M = M + L.T @ L
    return M.tocsr()


def _scale(pairs) -> float:
    """A reference size for the normal matrix's eigenvalues, so that a system whose constraints
    all vanish (numerically) is not judged relative to its own rounding noise."""
    def size(M):
        return float(abs(M).max()) if M.nnz else 0.0

    return max((size(A) + size(B)) ** 2 for A, B, *_ in pairs) or 1.0


def _dense_null(M: sp.csr_matrix, ref: float) -> np.ndarray:
    w, U = np.linalg.eigh(M.toarray())
    return U[:, w <= 1e-9 * max(float(w[-1]), ref)].T


def _eigen(A: np.ndarray):
    """Eigenvalues and eigenvectors ``(w, P, Pinv)`` of a diagonalizable matrix: unitary ``P``
    (complex Schur form) when ``A`` is normal, else ``numpy.linalg.eig``; None when ``A`` is not
    safely diagonalizable (defective or ill-conditioned)."""
    from scipy.linalg import schur

    scale = max(1.0, float(np.abs(A).max()))
    if np.abs(A @ A.T - A.T @ A).max() <= 1e-10 * scale**2:
        T, P = schur(A.astype(np.complex128), output="complex")
        if np.abs(np.triu(T, 1)).max(initial=0.0) <= 1e-9 * scale:
            return np.diag(T), P, P.conj().T
    w, P = np.linalg.eig(A)
    if np.linalg.cond(P) > 1e8:
        return None
    Pinv = np.linalg.inv(P)
    if np.abs((P * w) @ Pinv - A).max() > 1e-9 * scale:
        return None
    return w, P, Pinv


def _reduced_null(pairs, do: int, di: int, lie: bool, seed: int = 0):
    """Null space through the eigenvectors of one pivot constraint (Finzi et al.'s system, solved
    faster): for ``A W - W B = 0`` with ``A = P_a diag(a) P_a^-1``, ``B = P_b diag(b) P_b^-1`` the
    solutions are ``P_a X P_b^-1`` with ``X_ij = 0`` unless ``a_i = b_j``. For a Lie group the
    pivot is a random combination of the algebra generators (its null space is the zero-weight
    space of a maximal torus, ~1/6 of the unknowns for SO(3) tensors of rank 8), for a finite
    group the first generator (finite order, so diagonalizable). The remaining constraints are
    then solved densely on that subspace and the complex solutions made real. Returns None when
    the pivot is not diagonalizable or the reduced system is too large."""
    rng = np.random.default_rng(seed)
    if lie:
        lies = [(A, B) for (A, B, is_lie) in pairs if is_lie]
        c = rng.standard_normal(len(lies))
        A = sum(ci * X.toarray() for ci, (X, _) in zip(c, lies))
        B = sum(ci * Y.toarray() for ci, (_, Y) in zip(c, lies))
    else:
        A, B = pairs[0][0].toarray(), pairs[0][1].toarray()
    ea, eb = _eigen(A), _eigen(B)
    if ea is None or eb is None:
        return None
    (wa, Pa, Painv), (wb, Pb, Pbinv) = ea, eb
    tol = 1e-7 * max(1.0, float(np.abs(wa).max(initial=0)), float(np.abs(wb).max(initial=0)))
    i, j = np.nonzero(np.abs(wa[:, None] - wb[None, :]) <= tol)
    R = len(i)
    if R == 0:
        return np.zeros((0, do * di))
    if R > 8000:
        return None
    # In pivot eigen-coordinates W = P_a X P_b^-1 the pivot is solved by X supported on the
    # matched pairs S = {(i, j)}; every other constraint A W - W B becomes A~ X - X B~ with
    # A~ = P_a^-1 A P_a, B~ = P_b^-1 B P_b, a sparse (do*di x R) operator on X_S with do + di
    # entries per column. Its Gram matrix is R x R.
    cols = np.arange(R)
    Gm = sp.csr_matrix((R, R), dtype=np.complex128)
    for X, Y, _ in pairs:
        At, Bt = Painv @ (X @ Pa), Pbinv @ (Y @ Pb)
        At[np.abs(At) < 1e-13 * max(1.0, np.abs(At).max())] = 0  # keep K sparse (exact zeros of structured reps)
        Bt[np.abs(Bt) < 1e-13 * max(1.0, np.abs(Bt).max())] = 0
        rows = np.concatenate([(np.arange(do)[:, None] * di + j[None, :]).ravel(),
                               (i[None, :] * di + np.arange(di)[:, None]).ravel()])
        vals = np.concatenate([At[:, i].ravel(), -Bt[j, :].T.ravel()])
        cc = np.concatenate([np.broadcast_to(cols, (do, R)).ravel(), np.broadcast_to(cols, (di, R)).ravel()])
        K = sp.csr_matrix((vals, (rows, cc)), shape=(do * di, R))
        Gm = Gm + K.conj().T @ K
    # the Gram matrix falls apart into blocks (for a torus pivot: the weight spaces the other
    # generators connect); each block's null space is found on its own
    thr = 1e-9 * max(float(abs(Gm).sum(axis=1).max()) if Gm.nnz else 0.0, _scale(pairs))
    n_blocks, block = connected_components(abs(Gm) > 0, directed=False)
    pieces = []
    for b in range(n_blocks):
        idx = np.flatnonzero(block == b)
        w, C = np.linalg.eigh(Gm[idx][:, idx].toarray())
        for col in C[:, w <= thr].T:
            v = np.zeros(R, dtype=np.complex128)
            v[idx] = col
            pieces.append(v)
    C = np.array(pieces).T if pieces else np.zeros((R, 0))
    k = C.shape[1]
    if k == 0:
        return np.zeros((0, do * di))
    Xs = np.zeros((k, do, di), dtype=np.complex128)
    Xs[:, i, j] = C.T
    Wc = (Pa[None] @ Xs @ Pbinv[None]).reshape(k, do * di).T
    U, sv, _ = np.linalg.svd(np.concatenate([Wc.real, Wc.imag], axis=1), full_matrices=False)
    if k < len(sv) and sv[k] > 1e-6 * sv[0]:
        return None  # the complex solutions do not come in conjugate pairs: numerically unsafe
    return U[:, :k].T


def equivariant_basis(rep_in: Rep, rep_out: Rep, *, method: str = "auto", cache: bool = True) -> np.ndarray:
    """Orthonormal basis of the intertwiners ``{W : rho_out(g) W = W rho_in(g) for all g}``,
    array ``(k, dim_out, dim_in)`` (orthonormal in the Frobenius inner product).

    Solves ``rho_out(s) W - W rho_in(s) = 0`` for the discrete generators ``s`` and
    ``drho_out(A) W - W drho_in(A) = 0`` for the Lie-algebra generators ``A``, stacked (Finzi,
    Welling & Wilson 2021). ``method``:

    - ``"orbit"`` (chosen automatically when every generator acts on ``W`` as a signed
      permutation, e.g. permutation representations of S_n and their tensor powers): the basis is
      one normalized indicator per orbit of matrix entries, exact and sparse; S_16 on
      ``(R^16)^2 -> (R^16)^2`` (65,536 unknowns) takes milliseconds;
    - ``"dense"`` (chosen up to 400 unknowns): the null space of the normal matrix
      ``sum_i L_i^T L_i`` by a symmetric eigensolver, eigenvalues below ``1e-9`` of the largest;
    - ``"reduced"`` (chosen above 400 unknowns): the unknowns are first restricted to the null
      space of one pivot constraint, read off the eigenvectors of ``rho_in`` and ``rho_out`` (for
      a Lie group a random element of the algebra: the zero-weight space of a maximal torus,
      1,107 of the 6,561 unknowns of O(3) on ``V^4 -> V^4``), then the remaining constraints are
      solved densely there. Falls back to ``"dense"`` (up to 20,000 unknowns) when the pivot is not
      safely diagonalizable.

    (Single-vector Lanczos, e.g. ARPACK, is not used: it misses multiplicities, and null
    spaces of intertwiners are highly degenerate.)

    ``k = 0`` (shape ``(0, dim_out, dim_in)``) means no non-zero equivariant map exists. Results
    are cached by the constraint matrices (``cache=False`` to bypass, :func:`clear_basis_cache`).
    """
    if not isinstance(rep_in, Rep) or not isinstance(rep_out, Rep):
        raise TypeError("equivariant_basis needs two Rep objects (see shapelens.symmetry.standard, trivial, ...).")
    rep_in._same_group(rep_out, "equivariant_basis")
    if method not in ("auto", "orbit", "dense", "reduced"):
        raise ValueError(f"method must be 'auto', 'orbit', 'dense' or 'reduced', got {method!r}.")
    di, do = rep_in.dim, rep_out.dim
    pairs = [(A, B) for (A, _), (B, _) in zip(rep_out._constraints(), rep_in._constraints())]
    permutation_like = all(_signed_perm(A, lie) and _signed_perm(B, lie)
                           for (A, lie), (B, _) in zip(rep_out._constraints(), rep_in._constraints()))
    if method == "auto":
        method = "orbit" if permutation_like and not any(lie for _, lie in rep_in._constraints()) else (
            "dense" if di * do <= DENSE_MAX else "reduced")
    if method == "orbit" and not (permutation_like and not any(lie for _, lie in rep_in._constraints())):
        raise ValueError("method='orbit' needs every generator to act as a signed permutation matrix (no Lie algebra); "
                         "use method='dense' or 'sparse'.")
    if method == "dense" and di * do > 20_000:
        raise ValueError(f"the constraint system has {di * do} unknowns (dim_out {do} x dim_in {di}); the dense solve "
                         "is limited to 20000: use method='reduced' (the default above 400), or smaller representations.")
    key = None
    if cache:
        h = hashlib.sha1(f"{method}|{do}|{di}".encode())
        for A, B in pairs:
            for M in (A, B):
                h.update(np.asarray(M.shape).tobytes() + M.indptr.tobytes() + M.indices.tobytes() + M.data.tobytes())
        key = h.hexdigest()
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key].copy()
    if not pairs:  # a group with no constraints acts trivially
        Q = np.eye(do * di)
    elif method == "orbit":
        Q = _orbit_basis(pairs, do, di)
    else:
        Q = None
        if method == "reduced":
            lie = any(is_lie for _, is_lie in rep_in._constraints())
            Q = _reduced_null([(A, B, is_lie) for (A, B), (_, is_lie) in zip(pairs, rep_in._constraints())], do, di, lie)
            if Q is None and di * do > 20_000:
                raise ValueError(f"the pivot constraint of this {di * do}-unknown system is not safely diagonalizable "
                                 "(a non-compact group?) and the dense fallback is limited to 20000 unknowns; use "
                                 "smaller representations.")
        if Q is None:
            Q = _dense_null(_system(pairs, do, di), _scale(pairs))
    B = Q.reshape(len(Q), do, di)
    if key is not None:
        _CACHE[key] = B
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return B.copy()
    return B


# -- names ---------------------------------------------------------------------------------------------

def group_by_name(name: str) -> Group:
    """``"SO2"``, ``"O2"``, ``"SO3"``, ``"O3"`` (also written ``"SO(3)"``), ``"S5"``, ``"C4"``,
    ``"D6"``: the group the CLI and benchmarks mean by that name."""
    from .groups import O2, O3, SO2, SO3, cyclic, dihedral

    key = str(name).replace("(", "").replace(")", "").replace("_", "").strip().upper()
    fixed = {"SO2": SO2, "O2": O2, "SO3": SO3, "O3": O3}
    if key in fixed:
        return fixed[key]()
    if len(key) > 1 and key[0] in "SCD" and key[1:].isdigit():
        from .groups import symmetric

        return {"S": symmetric, "C": cyclic, "D": dihedral}[key[0]](int(key[1:]))
    raise ValueError(f"unknown group {name!r}; use SO2, O2, SO3, O3, Sn, Cn or Dn (e.g. S5, C4, D6).")


def parse_rep(text: str, G: Group) -> Rep:
    """A representation of ``G`` from an expression such as ``"V**2 + V"``, ``"(V + 1) * sgn"``
    or ``"D2 + 2*V"`` (no ``eval``): ``V`` standard, ``1`` trivial, ``sgn`` sign/determinant,
    ``R`` regular, ``D<k>`` :func:`irrep` ``k``; ``+`` direct sum, ``*`` tensor product (an integer
    factor ``n*X`` means ``X + ... + X``), ``**`` power, ``>>`` maps (``A >> B`` is ``B x A*``),
    parentheses."""
    import re

    tokens = re.findall(r"\*\*|>>|[()+*]|D\d+|\d+|[A-Za-z_]+|\S", str(text))
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take(expected=None):
        nonlocal pos
        tok = peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"cannot parse representation {text!r}: expected {expected or 'more'} at token {pos + 1} "
                             f"(got {tok!r}); write e.g. 'V**2 + V', '(V + 1) * sgn', 'D2', 'V >> V'.")
        pos += 1
        return tok

    def atom():
        tok = take()
        if tok == "(":
            r = maps()
            take(")")
            return r
        if tok == "V":
            return standard(G)
        if tok == "1":
            return trivial(G)
        if tok in ("sgn", "det"):
            return sign(G)
        if tok == "R":
            return regular(G)
        if tok.startswith("D") and tok[1:].isdigit():
            return irrep(G, int(tok[1:]))
        if tok.isdigit():
            return int(tok)
        raise ValueError(f"unknown symbol {tok!r} in representation {text!r}; use V, 1, sgn, R, D<k>.")

    def power():
        base = atom()
        if peek() == "**":
            take()
            k = atom()
            if isinstance(base, int) or not isinstance(k, int):
                raise ValueError(f"in {text!r}: '**' needs a representation on the left and an integer on the right.")
            return base ** k
        return base

    def product():
        r = power()
        while peek() == "*":
            take()
            s = power()
            if isinstance(r, int) and isinstance(s, int):
                r = r * s
            elif isinstance(r, int) or isinstance(s, int):
                n, rep = (r, s) if isinstance(r, int) else (s, r)
                if n < 1:
                    raise ValueError(f"in {text!r}: a multiplicity must be at least 1.")
                out = rep
                for _ in range(n - 1):
                    out = out + rep
                r = out
            else:
                r = r * s
        return r

    def total():
        r = product()
        while peek() == "+":
            take()
            s = product()
            if isinstance(r, int) or isinstance(s, int):
                r = (trivial(G, r) if isinstance(r, int) else r) + (trivial(G, s) if isinstance(s, int) else s)
            else:
                r = r + s
        return trivial(G, r) if isinstance(r, int) else r

    def maps():
        r = total()
        while peek() == ">>":
            take()
            r = r >> total()
        return r

    rep = maps()
    if pos != len(tokens):
        raise ValueError(f"cannot parse representation {text!r}: unexpected {tokens[pos]!r}.")
    rep.name = str(text).strip()
    return rep
