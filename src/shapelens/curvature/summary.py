"""One call for the standard curvature numbers of a trained model: what ``shapelens curvature``
prints and the atlas shows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn

from .._checks import check_int
from .._results import Result
from .operators import OPERATORS
from .spectra import SpectralDensity, eigenvalues, spectral_density, trace

__all__ = ["curvature_summary", "CurvatureSummary"]


@dataclass(frozen=True)
class CurvatureSummary(Result):
    """Top eigenvalues (descending) with their Lanczos residuals, the trace with its standard
    error, the spectral density, and optionally the top eigenvalue of each layer's diagonal
    block, of one curvature operator at the current weights."""

    operator: str
    n_params: int
    n_samples: int
    loss: float
    top_eigenvalues: np.ndarray
    residuals: np.ndarray
    trace: float
    trace_std_error: float
    trace_method: str
    density: SpectralDensity | None
    blocks: tuple[str, ...]
    block_sizes: np.ndarray
    block_top_eigenvalues: np.ndarray
    n_matvec: int
    notes: tuple = ()

    @property
    def sharpness(self) -> float:
        """The largest eigenvalue (see :func:`~shapelens.curvature.max_eigenvalue_sharpness`)."""
        return float(self.top_eigenvalues[0])

    def plot(self, ax=None):
        """The spectral density (log scale) with the Lanczos top eigenvalues marked."""
        ax = self._axes(ax, (6, 3.8))
        if self.density is not None:
            self.density.plot(ax=ax)
        for i, lam in enumerate(self.top_eigenvalues):
            ax.axvline(lam, color="#d62728", linewidth=1, alpha=0.7, linestyle="--",
                       label="top eigenvalues (Lanczos)" if i == 0 else None)
        ax.set_xlabel("eigenvalue")
        name = {"hessian": "Hessian", "ggn": "GGN", "fisher": "Empirical Fisher"}.get(self.operator, self.operator)
        ax.set_title(f"{name} spectrum: {self.n_params:,} parameters, {self.n_samples:,} samples")
        ax.legend(loc="upper right", fontsize=8)
        return ax


def _blocks(names: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(n.rsplit(".", 1)[0] if "." in n else n, []).append(n)
    return out


def curvature_summary(model: nn.Module, loss_fn, data, *, operator: str = "hessian", k: int = 5,
                      trace_samples: int = 60, density: bool = True, density_vectors: int = 3,
                      density_iter: int = 60, per_layer: bool = False, params=None, tol: float = 1e-5,
                      seed: int = 0) -> CurvatureSummary:
    """The standard curvature numbers of ``model`` on ``data`` at its current weights:

    * the ``k`` largest eigenvalues of the operator (Lanczos with full reorthogonalization,
      :func:`~shapelens.curvature.eigenvalues`) with their residuals;
    * its trace by Hutch++ (Meyer et al. 2021) with ``trace_samples`` products and a
      standard error (skipped when ``trace_samples == 0``);
    * its spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019);
    * with ``per_layer``, the top eigenvalue of each module's diagonal block (its weight and
      bias together), the per-layer view PyHessian does not give.

    ``operator`` is ``"hessian"``, ``"ggn"`` (Schraudolph 2002) or ``"fisher"`` (empirical
    Fisher). The model is evaluated in eval mode and restored.
    """
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, got {operator!r}.")
    k = check_int(k, "k", 1)
    trace_samples = check_int(trace_samples, "trace_samples", 0)
    if 0 < trace_samples < 6:
        raise ValueError("trace_samples must be 0 (no trace) or at least 6 (Hutch++).")
    cls = OPERATORS[operator]
    op = cls(model, loss_fn, data, params)
    top = eigenvalues(op, k=k, which="largest", tol=tol, seed=seed)
    n_mv = top.n_matvec
    tr, tr_se = math.nan, math.nan
    if trace_samples:
        t = trace(op, "hutch++", samples=trace_samples, seed=seed)
        tr, tr_se, n_mv = t.trace, t.std_error, n_mv + t.n_matvec
    dens = None
    if density:
        dens = spectral_density(op, n_vectors=density_vectors, n_iter=density_iter, seed=seed)
        n_mv += dens.n_matvec
    blocks, sizes, block_top = (), np.zeros(0, dtype=np.int64), np.zeros(0)
    if per_layer:
        groups = _blocks(op.param_names)
        blocks = tuple(groups)
        vals, szs = [], []
        for names in groups.values():
            b = cls(model, loss_fn, op.batches, names)
            e = eigenvalues(b, k=1, which="largest", tol=tol, seed=seed)
            vals.append(float(e.eigenvalues[-1]))
            szs.append(b.dim)
            n_mv += e.n_matvec
        sizes, block_top = np.array(szs, dtype=np.int64), np.array(vals)
    return CurvatureSummary(
        operator=operator, n_params=op.dim, n_samples=op.n_samples, loss=op.loss,
        top_eigenvalues=top.eigenvalues[::-1].copy(), residuals=top.residuals[::-1].copy(),
        trace=float(tr), trace_std_error=float(tr_se), trace_method="hutch++" if trace_samples else "none",
        density=dens, blocks=blocks, block_sizes=sizes, block_top_eigenvalues=block_top, n_matvec=int(n_mv),
        notes=op.notes,
    )
