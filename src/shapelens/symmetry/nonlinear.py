"""Equivariant nonlinearities and invariant pooling for features carrying a representation.

Features are tensors whose LAST axis carries a :class:`~shapelens.symmetry.reps.Rep` (``rep.dim``
entries), as for :class:`~shapelens.symmetry.layers.EquivariantLinear`; a group element acts by
``x -> x @ rho(g).T``. A linear layer alone is equivariant for any representation, a pointwise
nonlinearity only for permutation representations; for other (orthogonal) representations the
nonlinearity must act on the norms of the irreducible blocks (norm nonlinearities, Worrall et al.
2017; Weiler et al. 2018) or through invariant scalar gates (gated nonlinearities, Weiler et al.
2018). Invariant pooling projects on the trivial part of the representation; :class:`SetPool`
is the DeepSets sum/mean/max over a set axis (Zaheer et al. 2017).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .reps import Rep, equivariant_basis, trivial

__all__ = ["PointwiseNonlinearity", "NormNonlinearity", "GatedNonlinearity", "InvariantPool", "SetPool"]

# --------------------------------------------------------------------------------------
# helpers (Rep.is_permutation / is_orthogonal / is_trivial check on the generators, which
# settles them for the whole group)
# --------------------------------------------------------------------------------------


def _blocks(rep: Rep) -> list[Rep]:
    """The direct summands of ``rep``, nested sums flattened, in order."""
    subs = rep.summands
    if len(subs) == 1:
        return [rep]
    out: list[Rep] = []
    for s in subs:
        out += _blocks(s)
    if sum(b.dim for b in out) != rep.dim:  # pragma: no cover - a malformed Rep
        raise ValueError(f"the summands of {rep.name} have total dimension {sum(b.dim for b in out)} but the "
                         f"representation has dimension {rep.dim}.")
    return out


def _check_rep(rep) -> Rep:
    if not isinstance(rep, Rep):
        raise TypeError(f"expected a Rep (see shapelens.symmetry.standard, trivial, ...), got {type(rep).__name__}.")
    return rep


def _check_input(x: torch.Tensor, rep: Rep, who: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch tensor, got {type(x).__name__}.")
    if x.ndim == 0 or x.shape[-1] != rep.dim:
        raise ValueError(f"{who}: the input has {x.shape[-1] if x.ndim else 0} features on its last axis but "
                         f"{rep.name} has dimension {rep.dim}; give inputs of shape (..., {rep.dim}).")


def _block_index(blocks: list[Rep]) -> torch.Tensor:
    return torch.cat([torch.full((b.dim,), i, dtype=torch.long) for i, b in enumerate(blocks)])


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


class PointwiseNonlinearity(nn.Module):
    """``x -> fn(x)`` entrywise, for a permutation representation: ``fn(P x) = P fn(x)`` for
    every permutation matrix ``P``, so any pointwise function is equivariant (the ReLU of
    DeepSets, Zaheer et al. 2017, and of regular-representation G-CNNs, Cohen & Welling 2016).

    Raises ValueError for a representation with a ``rho(g)`` that is not a permutation matrix
    (a rotation or sign representation), where a pointwise function breaks equivariance; use
    :class:`NormNonlinearity` or :class:`GatedNonlinearity` there.
    """

    def __init__(self, rep: Rep, fn: Callable[[torch.Tensor], torch.Tensor] = torch.relu):
        super().__init__()
        self.rep = _check_rep(rep)
        if not rep.is_permutation:
            raise ValueError(f"{rep.name} of {rep.group.name} is not a permutation representation (some rho(g) is not "
                             "a permutation matrix), so a pointwise nonlinearity would not be equivariant; use "
                             "NormNonlinearity (orthogonal blocks) or GatedNonlinearity (scalar gates) instead.")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.rep, "PointwiseNonlinearity")
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"{self.rep.name} of {self.rep.group.name}, fn={getattr(self.fn, '__name__', self.fn)}"


class NormNonlinearity(nn.Module):
    """Norm nonlinearity (Worrall et al. 2017, "Harmonic Networks"; Weiler et al. 2018, "3D
    Steerable CNNs"): every direct summand ``x_b`` of the representation is rescaled by a function
    of its norm, ``x_b -> x_b * fn(|x_b| + b_b) / |x_b|`` (0 where ``x_b = 0``), with one learned
    bias ``b_b`` per summand (initialised to 0). For orthogonal summands ``|rho_b(g) x_b| = |x_b|``,
    so the map is equivariant.

    The blocks are ``rep.summands`` (nested sums flattened; the whole representation when it is
    not a sum). Raises ValueError when a summand is not orthogonal in the given basis (its norm is
    then not invariant).
    """

    def __init__(self, rep: Rep, fn: Callable[[torch.Tensor], torch.Tensor] = torch.relu, bias: bool = True):
        super().__init__()
        self.rep = _check_rep(rep)
        self.blocks = _blocks(rep)
        bad = [b.name for b in self.blocks if not b.is_orthogonal]
        if bad:
            raise ValueError(f"summand(s) {', '.join(bad)} of {rep.name} are not orthogonal representations (rho(g) "
                             "does not preserve the Euclidean norm), so a norm nonlinearity would not be equivariant; "
                             "change to an orthonormal basis of those summands first.")
        self.fn = fn
        self.register_buffer("index", _block_index(self.blocks), persistent=False)
        self.bias = nn.Parameter(torch.zeros(len(self.blocks))) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.rep, "NormNonlinearity")
        idx = self.index.to(x.device)
        sq = torch.zeros(*x.shape[:-1], len(self.blocks), dtype=x.dtype, device=x.device).index_add_(-1, idx, x * x)
        nz = sq > 0
        norm = torch.sqrt(torch.where(nz, sq, torch.ones_like(sq)))
        arg = norm if self.bias is None else norm + self.bias.to(x.dtype)
        scale = torch.where(nz, self.fn(arg) / norm, torch.zeros_like(sq))
        return x * scale.index_select(-1, idx)

    def extra_repr(self) -> str:
        return f"{self.rep.name} of {self.rep.group.name}, {len(self.blocks)} blocks, bias={self.bias is not None}"


class GatedNonlinearity(nn.Module):
    """Gated nonlinearity (Weiler et al. 2018, "3D Steerable CNNs", section 4.3): invariant
    scalar gate channels ``s_j`` multiply the non-scalar blocks, ``x_j -> sigmoid(s_j) * x_j``,
    and the other scalar (trivial) summands go through ``fn``. The gates are consumed: the output
    carries the representation :attr:`rep_out`, the summands of ``rep`` without the gates, in
    order. Equivariant because the gates are invariant and the blocks are scaled by a scalar.

    ``gates`` says which summands (of ``rep.summands``, nested sums flattened) are the gates:

    * an int ``n``: the last ``n`` summands, gating the non-trivial summands before them in
      order (``rep = scalars + V_1 + ... + V_n + trivial + ... + trivial``);
    * a sequence of summand indices, ``gates[j]`` gating the ``j``-th non-trivial summand.

    Every gate must be a one-dimensional trivial summand, used once, and there must be exactly
    one gate per non-trivial summand; otherwise ValueError says what is missing.
    """

    def __init__(self, rep: Rep, gates: int | Sequence[int],
                 fn: Callable[[torch.Tensor], torch.Tensor] | None = torch.relu):
        super().__init__()
        self.rep = _check_rep(rep)
        blocks = _blocks(rep)
        nb = len(blocks)
        if isinstance(gates, (int, np.integer)) and not isinstance(gates, bool):
            if not 0 < int(gates) < nb:
                raise ValueError(f"gates={gates}: {rep.name} has {nb} summands, so the number of trailing gate summands "
                                 f"must be between 1 and {nb - 1}.")
            gate_idx = list(range(nb - int(gates), nb))
        else:
            try:
                gate_idx = [int(i) for i in gates]
            except TypeError:
                raise TypeError(f"gates must be an int or a sequence of summand indices, got {gates!r}.") from None
            for i in gate_idx:
                if not -nb <= i < nb:
                    raise ValueError(f"gate index {i} is out of range: {rep.name} has {nb} summands.")
            gate_idx = [i % nb for i in gate_idx]
            if len(set(gate_idx)) != len(gate_idx):
                raise ValueError(f"gates={list(gates)} uses a summand twice; each gate gates exactly one block.")
        for i in gate_idx:
            if blocks[i].dim != 1 or not blocks[i].is_trivial:
                raise ValueError(f"summand {i} ({blocks[i].name}, dim {blocks[i].dim}) cannot be a gate: gates must be "
                                 "one-dimensional trivial (invariant) summands, e.g. rep + trivial(G) + trivial(G).")
        rest = [i for i in range(nb) if i not in set(gate_idx)]
        scalar = {i: blocks[i].is_trivial for i in rest}
        gated = [i for i in rest if not scalar[i]]
        if len(gated) != len(gate_idx):
            raise ValueError(f"{len(gate_idx)} gate(s) for {len(gated)} non-scalar summand(s) of {rep.name} "
                             f"({', '.join(blocks[i].name for i in gated) or 'none'}); give exactly one trivial gate "
                             "summand per non-scalar summand.")
        self.blocks, self.fn = blocks, fn
        offsets = np.cumsum([0] + [b.dim for b in blocks])
        # per output feature: where it comes from, which gate scales it (-1: none), whether fn applies
        src, gate_of, is_scalar = [], [], []
        gate_for = dict(zip(gated, gate_idx))
        for i in rest:
            for c in range(offsets[i], offsets[i + 1]):
                src.append(c)
                gate_of.append(int(offsets[gate_for[i]]) if i in gate_for else -1)
                is_scalar.append(scalar[i])
        self.register_buffer("src", torch.as_tensor(src, dtype=torch.long), persistent=False)
        self.register_buffer("gate_src", torch.as_tensor([max(g, 0) for g in gate_of], dtype=torch.long),
                             persistent=False)
        self.register_buffer("gated_mask", torch.as_tensor([g >= 0 for g in gate_of]), persistent=False)
        self.register_buffer("scalar_mask", torch.as_tensor(is_scalar), persistent=False)
        out_blocks = [blocks[i] for i in rest]
        rep_out = out_blocks[0]
        for b in out_blocks[1:]:
            rep_out = rep_out + b
        #: the representation of the output (``rep`` without the gate summands)
        self.rep_out = rep_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.rep, "GatedNonlinearity")
        dev = x.device
        v = x.index_select(-1, self.src.to(dev))
        g = torch.sigmoid(x.index_select(-1, self.gate_src.to(dev)))
        v_gated = torch.where(self.gated_mask.to(dev), v * g, v)
        if self.fn is None:
            return v_gated
        return torch.where(self.scalar_mask.to(dev), self.fn(v), v_gated)

    def extra_repr(self) -> str:
        return f"{self.rep.name} -> {self.rep_out.name} of {self.rep.group.name}, {int(self.gated_mask.sum())} gated features"


class InvariantPool(nn.Module):
    """Projection on the invariant subspace: ``x -> B x`` with the rows of ``B`` an orthonormal
    basis of the invariant vectors of ``rep`` (the equivariant maps ``rep -> trivial``,
    :func:`equivariant_basis` (rep, trivial(G)); Finzi, Welling & Wilson 2021), so
    ``(..., rep.dim) -> (..., k)`` with ``k`` the multiplicity of the trivial representation
    and ``pool(rho(g) x) = pool(x)``. Raises ValueError when ``rep`` has no invariant vector.
    """

    def __init__(self, rep: Rep):
        super().__init__()
        self.rep = _check_rep(rep)
        B = equivariant_basis(rep, trivial(rep.group))
        if B.shape[0] == 0:
            raise ValueError(f"{rep.name} of {rep.group.name} has no invariant vector (no non-zero equivariant map to "
                             "the trivial representation), so invariant pooling would return nothing; pool a "
                             "representation with a trivial part, e.g. a tensor product rep * rep.dual() or a "
                             "permutation representation.")
        self.register_buffer("basis", torch.as_tensor(B[:, 0, :], dtype=torch.float32))

    @property
    def out_features(self) -> int:
        return int(self.basis.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.rep, "InvariantPool")
        return x @ self.basis.to(x.dtype).T

    def extra_repr(self) -> str:
        return f"{self.rep.name} of {self.rep.group.name} -> {self.out_features} invariants"


class SetPool(nn.Module):
    """DeepSets pooling over a set axis (Zaheer et al. 2017, "Deep Sets"): sum, mean or max over
    ``dim`` (default ``-2``, i.e. inputs ``(..., n_elements, features)``), invariant to any
    permutation of the set elements."""

    def __init__(self, reduce: str = "sum", dim: int = -2):
        super().__init__()
        if reduce not in ("sum", "mean", "max"):
            raise ValueError(f"reduce={reduce!r}; use 'sum', 'mean' or 'max'.")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int (the set axis), got {dim!r}.")
        self.reduce, self.dim = reduce, int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"SetPool(dim={self.dim}) needs an input with that axis; got shape {tuple(x.shape)}.")
        if self.reduce == "sum":
            return x.sum(self.dim)
        if self.reduce == "mean":
            return x.mean(self.dim)
        return x.amax(self.dim)

    def extra_repr(self) -> str:
        return f"reduce={self.reduce!r}, dim={self.dim}"
