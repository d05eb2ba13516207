"""Layers that are equivariant by construction: linear maps parameterized in the basis of
intertwiners (Finzi, Welling & Wilson 2021; for S_n, Zaheer et al. 2017 and Maron et al. 2019)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .reps import Rep, equivariant_basis, trivial

__all__ = ["EquivariantLinear"]


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with ``W = sum_k c_k B_k`` over an orthonormal basis ``B`` of the maps
    ``rho_out(g) W = W rho_in(g)`` and ``b`` in the invariant subspace of ``rep_out``
    (``rho_out(g) b = b``), so ``f(rho_in(g) x) = rho_out(g) f(x)`` for every weight value.

    The weight is materialized once per forward from the coefficients (``k`` of them instead of
    ``dim_out * dim_in``). Inputs have ``rep_in.dim`` features on the last axis. Raises
    ValueError when no non-zero equivariant map exists (an empty basis) instead of building a
    layer that always outputs its bias.
    """

    def __init__(self, rep_in: Rep, rep_out: Rep, bias: bool = True):
        super().__init__()
        B = equivariant_basis(rep_in, rep_out)
        if B.shape[0] == 0:
            raise ValueError(f"no non-zero linear map from {rep_in.name} to {rep_out.name} is equivariant under "
                             f"{rep_in.group.name} (the intertwiner basis is empty); choose other representations, "
                             "e.g. add a copy of the trivial or permutation representation to rep_out.")
        self.rep_in, self.rep_out = rep_in, rep_out
        self.register_buffer("basis", torch.as_tensor(B, dtype=torch.get_default_dtype()))
        # each basis element has unit Frobenius norm: scale like a dense layer's fan-in init
        self.coef = nn.Parameter(torch.randn(B.shape[0]) * math.sqrt(rep_out.dim / B.shape[0]) / math.sqrt(rep_in.dim))
        if bias:
            Bb = equivariant_basis(trivial(rep_in.group), rep_out)[:, :, 0]
            self.register_buffer("bias_basis", torch.as_tensor(Bb, dtype=torch.get_default_dtype()))
            self.bias_coef = nn.Parameter(torch.zeros(Bb.shape[0])) if Bb.shape[0] else None
        else:
            self.bias_basis, self.bias_coef = None, None

    @property
    def weight(self) -> torch.Tensor:
        """The materialized ``(dim_out, dim_in)`` weight."""
        return torch.einsum("k,koi->oi", self.coef, self.basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.rep_in.dim:
            raise ValueError(f"input has {x.shape[-1]} features on its last axis but rep_in {self.rep_in.name} has "
                             f"dimension {self.rep_in.dim}; give inputs of shape (..., {self.rep_in.dim}).")
        y = x @ self.weight.to(x.dtype).T
        if self.bias_coef is not None:
            y = y + (self.bias_coef @ self.bias_basis).to(x.dtype)
        return y

    def extra_repr(self) -> str:
        return (f"{self.rep_in.name} -> {self.rep_out.name} of {self.rep_in.group.name}, {self.coef.numel()} weight "
                f"coefficients, {0 if self.bias_coef is None else self.bias_coef.numel()} bias coefficients")
