"""Curvature along a training run: top Hessian eigenvalues, trace and loss at chosen steps.

Gradient descent with step size ``lr`` on a quadratic diverges along any direction whose
curvature exceeds ``2 / lr``. Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent
on neural networks typically occurs at the edge of stability" (ICLR 2021), found that
full-batch gradient descent on neural networks drives the top Hessian eigenvalue up
("progressive sharpening") until it reaches ``2 / lr`` and then keeps it hovering just above
that value while the loss keeps falling, non-monotonically. :class:`CurvatureTracker` records
that picture from any training loop; :meth:`CurvatureTrajectory.plot` draws it with the
``2 / lr`` line.

Measuring never changes training: parameters, ``.grad`` fields, train/eval flags and the
torch random number generators are exactly as they were before each measurement, so a run
with the tracker attached is bit-identical to one without.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_int, show_progress, warn
from .._results import Result
from .operators import OPERATORS, _batches, loss_reduction
from .sharpness import _Loss
from .spectra import eigenvalues, trace

__all__ = ["CurvatureTracker", "CurvatureTrajectory", "lightning_callback"]

_CITATION = "Cohen et al. 2021"


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvatureTrajectory(Result):
    """Curvature measured at a sequence of training steps (one row per measurement).

    Attributes
    ----------
    steps : ``(n,)`` int, the training steps measured, in the order they were measured.
    top_eigenvalues : ``(n, k)``, the ``k`` largest eigenvalues of the operator over the
        measurement data, **largest first** (column 0 is ``lambda_max``, the sharpness).
    residuals : ``(n, k)``, Lanczos residual norms ``|A u - lambda u|`` certifying each value.
    traces, trace_std_errors : ``(n,)`` stochastic trace estimates and their standard
        errors, or ``None`` when the trace was not asked for (``trace_samples=0``).
    losses : ``(n,)`` the loss over the measurement data (eval mode) at each measured step.
    train_losses : ``(n,)`` the training loss passed to ``tracker.step`` at the measured
        steps (NaN where none was passed).
    loss_history : ``(m, 2)`` ``(step, training loss)`` of *every* call that passed a loss,
        measured or not: the full training curve.
    lr : the learning rate, if known (the ``2 / lr`` line is drawn from it).
    n_matvec : ``(n,)`` operator products per measurement (eigenvalues + trace).
    lanczos_matvec : ``(n,)`` of those, the products spent by Lanczos.
    seconds : ``(n,)`` wall time of each measurement.
    operator, k, trace_method : what was measured.
    """

    steps: np.ndarray
    top_eigenvalues: np.ndarray
    residuals: np.ndarray
    traces: np.ndarray | None
    trace_std_errors: np.ndarray | None
    losses: np.ndarray
    train_losses: np.ndarray
    loss_history: np.ndarray
    lr: float | None
    n_matvec: np.ndarray
    lanczos_matvec: np.ndarray
    seconds: np.ndarray
    operator: str
    k: int
    trace_method: str | None

    @property
    def lambda_max(self) -> np.ndarray:
        """``(n,)`` the top eigenvalue at each measured step."""
        return self.top_eigenvalues[:, 0]

    @property
    def threshold(self) -> float | None:
        """``2 / lr``: the stability limit of gradient descent on a quadratic (Cohen et al. 2021),
        or ``None`` when ``lr`` is unknown. With heavy-ball momentum ``beta`` the limit is
        ``(2 + 2 beta) / lr`` instead."""
        return None if self.lr is None else 2.0 / self.lr

    def plot(self, ax=None):
        """Top eigenvalue over steps (further eigenvalues thinner), the horizontal ``2/lr`` line
        of Cohen et al. (2021) when ``lr`` is known, and the loss on a twin axis (log scale when
        positive). Returns the eigenvalue axes; the loss axes are ``ax.loss_axes``."""
        own = ax is None
        ax = self._axes(ax, (6, 3.8))
        name = "GGN" if self.operator == "ggn" else "Hessian"
        ax.plot(self.steps, self.lambda_max, "o-", ms=2.5, lw=1.5, color="C0", label=r"$\lambda_{max}$")
        for j in range(1, self.k):
            ax.plot(self.steps, self.top_eigenvalues[:, j], "-", lw=0.8, alpha=0.6, color="C0",
                    label=r"$\lambda_2 \ldots \lambda_k$" if j == 1 else None)
        if self.threshold is not None:
            ax.axhline(self.threshold, ls="--", color="C3", lw=1.2,
                       label=f"2/lr = {self.threshold:.4g} ({_CITATION})")
        ax.set_xlabel("step")
        ax.set_ylabel(f"top {name} eigenvalue")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        if len(self.loss_history):
            ax2.plot(self.loss_history[:, 0], self.loss_history[:, 1], "-", lw=0.8, color="0.45", label="train loss")
        ax2.plot(self.steps, self.losses, ".", ms=3, color="0.2", label="loss on measurement data")
        losses = np.r_[self.losses, self.loss_history[:, 1] if len(self.loss_history) else []]
        losses = losses[np.isfinite(losses)]
        if len(losses) and losses.min() > 0:
            from matplotlib.ticker import FormatStrFormatter

            ax2.set_yscale("log")
            ax2.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax2.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax2.set_ylabel("loss")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, loc="best", fontsize=7, framealpha=0.9)  # on the twin: drawn on top
        ax.set_title(f"Curvature during training ({name})")
        ax.loss_axes = ax2
        if own:
            ax.figure.tight_layout()
        return ax


# ---------------------------------------------------------------------------------------------
# state that a measurement must leave untouched
# ---------------------------------------------------------------------------------------------
class _Untouched:
    """Context manager: snapshot and restore the torch RNG states (CPU and every initialized
    CUDA device), each parameter's ``.grad`` (the same tensor object) and every submodule's
    train/eval flag."""

    def __init__(self, model: nn.Module | None = None):
        self.model = model

    def __enter__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        if self.model is not None:
            self.grads = [(p, p.grad) for p in self.model.parameters()]
            self.flags = [(m, m.training) for m in self.model.modules()]
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.model is not None:
            for p, g in self.grads:
                if p.grad is not g:
                    p.grad = g
            for m, flag in self.flags:
                m.training = flag
        return False


# ---------------------------------------------------------------------------------------------
# tracker
# ---------------------------------------------------------------------------------------------
class CurvatureTracker:
    """Record the top Hessian (or GGN) eigenvalues, optionally the trace, and the loss at
    chosen steps of a training loop, to watch progressive sharpening and the edge of stability
    (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of
    stability"; the top-eigenvalue "sharpness" is that of Keskar et al. 2017 and Jastrzebski
    et al. 2020).

    Use it as a callback in a plain PyTorch loop::

        tracker = CurvatureTracker(loss_fn, (X_fixed, y_fixed), every=10, lr=0.05)
        for step in range(n_steps):
            tracker.step(model, step, loss)     # or tracker(model, step, loss)
            ...                                  # forward, backward, optimizer.step()
        tracker.result().plot()

    At each due ``step`` it builds the operator over ``data`` at the model's current weights
    and runs Lanczos (:func:`~shapelens.curvature.eigenvalues`) for the ``k`` largest
    eigenvalues, Hutch++ / Hutchinson (:func:`~shapelens.curvature.trace`) for the trace when
    ``trace_samples > 0``, and evaluates the loss on ``data`` (a non-finite loss, e.g. after
    divergence, is recorded with NaN curvature and a warning instead of stopping training). Measuring changes nothing the
    training sees: parameters, ``.grad`` fields, every submodule's train/eval flag and the
    torch RNG states are restored, so training is bit-identical with and without the tracker.
    The model is measured in eval mode (dropout off, BatchNorm running statistics).

    Parameters
    ----------
    loss_fn : ``loss_fn(outputs, targets)`` with ``reduction="mean"`` or ``"sum"``.
    data : the fixed measurement set: a DataLoader, a list of ``(x, y)`` batches, or one
        ``(x, y)``. A DataLoader is read once, at construction (a shuffled one is frozen then),
        without disturbing the global RNG, and its batches are kept. Cohen et al. measure on
        (at most) the first 5,000 training examples of their full-batch training set.
    every : measure when ``step % every == 0`` (default 10 when ``steps`` is not given).
    steps : an explicit list of steps to measure instead of ``every``.
    k : how many top eigenvalues.
    trace_samples : operator products for the trace estimate (0: no trace; Hutch++ needs >= 6).
    trace_method : ``"hutch++"`` (default) or ``"hutchinson"``.
    lr : the learning rate, for the ``2 / lr`` line in the plot (plain gradient descent;
        with heavy-ball momentum ``beta`` the edge is ``(2 + 2 beta) / lr``).
    operator : ``"hessian"`` (default) or ``"ggn"`` (Gauss-Newton: positive semi-definite;
        its top eigenvalue tracks the Hessian's at the edge of stability, Cohen et al. sec. 3).
    params : ``None`` (all trainable parameters) or a subset, as for the operators.
    seed : seed of the random start and trace vectors (the same every measurement, so
        successive measurements share their random numbers and differences are not noise).
    tol : Lanczos stops when every wanted Ritz pair has residual ``<= tol * |lambda_max|``;
        eigenvalue errors are then about ``tol**2 * |lambda_max|`` times the spectral gap ratio.
    warm_start : start Lanczos from the previous measurement's top eigenvectors mixed with an
        equal share of a random vector (the random part keeps new directions reachable, as a
        cold start does): fewer products when the eigenvectors move slowly between steps.
    max_iter : cap on Lanczos iterations (default: the parameter count).
    progress : ``True`` prints one line per measurement to stderr; ``None`` does so only on a
        terminal; ``False`` (default) stays quiet (a callback should not write into the user's
        own progress bars).
    """

    def __init__(self, loss_fn, data, *, every: int | None = None, steps=None, k: int = 1, trace_samples: int = 0,
                 trace_method: str = "hutch++", lr: float | None = None, operator: str = "hessian", params=None,
                 seed: int = 0, tol: float = 1e-3, warm_start: bool = True, max_iter: int | None = None,
                 progress: bool | None = False):
        if every is not None and steps is not None:
            raise ValueError("pass either every=N (measure each N steps) or steps=[...] (these steps), not both.")
        if steps is None:
            self.every = check_int(10 if every is None else every, "every", 1)
            self.schedule = None
        else:
            self.every = None
            if isinstance(steps, (int, np.integer)):
                raise TypeError(f"steps must be a list of step numbers, got the single number {steps}; "
                                f"use steps=[{steps}] or every={steps}.")
            try:
                sched = [int(check_int(s, "each entry of steps", 0)) for s in steps]
            except ValueError as exc:
                raise ValueError(f"{exc} Steps count from 0; pass non-negative step numbers.") from None
            if not sched:
                raise ValueError("steps is empty; pass the step numbers to measure, or every=N.")
            self.schedule = frozenset(sched)
        self.k = check_int(k, "k", 1)
        self.trace_samples = check_int(trace_samples, "trace_samples", 0)
        if trace_method not in ("hutch++", "hutchinson"):
            raise ValueError(f"trace_method must be 'hutch++' or 'hutchinson', got {trace_method!r}.")
        if self.trace_samples:
            low = 6 if trace_method == "hutch++" else 2
            if self.trace_samples < low:
                raise ValueError(f"trace_samples={self.trace_samples} is too few for {trace_method} (it needs >= {low}); "
                                 "pass 0 for no trace, or e.g. 30.")
        self.trace_method = trace_method
        if lr is not None:
            if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
                raise TypeError(f"lr must be a number (the learning rate) or None, got {lr!r}.")
            if not (math.isfinite(float(lr)) and float(lr) > 0):
                raise ValueError(f"lr must be a positive finite learning rate, got {lr}; pass None if it is unknown.")
            lr = float(lr)
        self.lr = lr
        key = str(operator).lower()
        if key not in ("hessian", "ggn"):  # the curvature gradient descent feels; the empirical Fisher is not it
            raise ValueError(f"operator must be 'hessian' or 'ggn', got {operator!r}.")
        self.operator = key
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}.")
        self.tol = float(tol)
        loss_reduction(loss_fn)  # refuses a per-example loss now, not at the first measurement
        self.loss_fn = loss_fn
        with _Untouched():  # reading a shuffled DataLoader draws from the global RNG
            self.batches = _batches(data)
        self.params = None if params is None else list(params)
        self.seed = int(seed)
        self.warm_start = bool(warm_start)
        self.max_iter = max_iter
        self.progress = progress
        self._rows: list[dict] = []
        self._history: list[tuple[int, float]] = []
        self._measured: set[int] = set()
        self._vectors: np.ndarray | None = None

    # -- schedule ------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether ``step`` is on the schedule and not measured yet."""
        step = _as_step(step)
        if step in self._measured:
            return False
        return step % self.every == 0 if self.schedule is None else step in self.schedule

    # -- the callback ----------------------------------------------------------------------
    def __call__(self, model: nn.Module, step: int, loss=None) -> dict | None:
        return self.step(model, step, loss)

    def step(self, model: nn.Module, step: int, loss=None) -> dict | None:
        """Call once per training step (before or after the update, consistently). Records
        ``loss`` (the training loss, a number or a scalar tensor; optional) and, when ``step``
        is due, measures the curvature of ``model`` over the measurement data. Returns the
        measurement as a dict, or ``None`` when the step was not due. A step already measured
        is not measured again (e.g. Lightning's ``global_step`` under gradient accumulation)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"tracker.step expects the model (an nn.Module) first, got {type(model).__name__}.")
        step = _as_step(step)
        train_loss = _as_loss(loss)
        if not math.isnan(train_loss):
            self._history.append((step, train_loss))
        if not self.due(step):
            return None
        row = self._measure(model)
        row.update(step=step, train_loss=train_loss)
        self._rows.append(row)
        self._measured.add(step)
        if show_progress(self.progress):
            extra = "" if self.lr is None else f" ({row['top'][0] * self.lr / 2:.2f} x 2/lr)"
            print(f"step {step}: lambda_max {row['top'][0]:.5g}{extra}, loss {row['loss']:.4g}, "
                  f"{row['n_matvec']} products, {row['seconds']:.1f} s", file=sys.stderr, flush=True)
        return {"step": step, "top_eigenvalues": row["top"].copy(), "trace": row["trace"], "loss": row["loss"]}

    def _measure(self, model: nn.Module) -> dict:
        t0 = time.perf_counter()
        with _Untouched(model), torch.enable_grad():
            with torch.no_grad():
                L = _Loss(model, self.loss_fn, self.batches)
                loss = float(L(L.params))
            if not math.isfinite(loss):  # diverged: keep the training loop alive, say so
                warn(f"the loss on the measurement data is {loss} (training diverged?); recording NaN curvature "
                     "for this step.")
                nan = np.full(self.k, np.nan)
                return {"top": nan, "res": nan.copy(), "trace": np.nan if self.trace_samples else None,
                        "se": np.nan if self.trace_samples else None, "loss": loss, "n_matvec": 0, "lanczos": 0,
                        "seconds": time.perf_counter() - t0}
            op = OPERATORS[self.operator](model, self.loss_fn, self.batches, params=self.params)
            k = min(self.k, op.dim)
            warm = self.warm_start and self._vectors is not None and self._vectors.shape[0] == op.dim
            if warm:
                prev = torch.from_numpy(self._vectors)
                g = torch.Generator().manual_seed(self.seed + 1 + len(self._rows))
                z = torch.randn(op.dim, generator=g, dtype=torch.float64)
                u = prev.sum(1)
                target = u / u.norm() + z / z.norm()  # equal shares (a smaller random share saved nothing)
                eig = eigenvalues(op, k=k, tol=self.tol, seed=self.seed, max_iter=self.max_iter,
                                  return_eigenvectors=True, v0=target)
                vecs = eig.eigenvectors
            else:
                eig = eigenvalues(op, k=k, tol=self.tol, seed=self.seed, max_iter=self.max_iter,
                                  return_eigenvectors=True)
                vecs = eig.eigenvectors
            order = np.argsort(eig.eigenvalues)[::-1]  # largest first
            top = np.full(self.k, np.nan)
            res = np.full(self.k, np.nan)
            top[: len(order)] = eig.eigenvalues[order]
            res[: len(order)] = eig.residuals[order]
            self._vectors = np.ascontiguousarray(vecs[:, order])
            tr = se = None
            n_mv = int(eig.n_matvec)
            if self.trace_samples:
                est = trace(op, method=self.trace_method, samples=self.trace_samples, seed=self.seed)
                tr, se, n_mv = float(est.trace), float(est.std_error), n_mv + int(est.n_matvec)
        return {"top": top, "res": res, "trace": tr, "se": se, "loss": float(loss), "n_matvec": n_mv,
                "lanczos": int(eig.n_matvec), "seconds": time.perf_counter() - t0}

    # -- result --------------------------------------------------------------------------
    def result(self) -> CurvatureTrajectory:
        """The measurements so far as a :class:`CurvatureTrajectory` (a snapshot; the tracker
        keeps recording)."""
        rows = self._rows
        n = len(rows)
        with_trace = self.trace_samples > 0
        return CurvatureTrajectory(
            steps=np.array([r["step"] for r in rows], dtype=np.int64),
            top_eigenvalues=np.array([r["top"] for r in rows], dtype=np.float64).reshape(n, self.k),
            residuals=np.array([r["res"] for r in rows], dtype=np.float64).reshape(n, self.k),
            traces=np.array([r["trace"] for r in rows], dtype=np.float64) if with_trace else None,
            trace_std_errors=np.array([r["se"] for r in rows], dtype=np.float64) if with_trace else None,
            losses=np.array([r["loss"] for r in rows], dtype=np.float64),
            train_losses=np.array([r["train_loss"] for r in rows], dtype=np.float64),
            loss_history=np.array(self._history, dtype=np.float64).reshape(-1, 2),
            lr=self.lr,
            n_matvec=np.array([r["n_matvec"] for r in rows], dtype=np.int64),
            lanczos_matvec=np.array([r["lanczos"] for r in rows], dtype=np.int64),
            seconds=np.array([r["seconds"] for r in rows], dtype=np.float64),
            operator=self.operator,
            k=self.k,
            trace_method=self.trace_method if with_trace else None,
        )


def _as_step(step) -> int:
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
        step = int(step.item())
    try:
        return check_int(step, "step", 0)
    except ValueError:
        raise ValueError(f"step must be a non-negative training step number, got {step}.") from None


def _as_loss(loss) -> float:
    if loss is None:
        return float("nan")
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar (the training loss of this step), got a tensor of shape {tuple(loss.shape)}.")
        return float(loss.detach().reshape(()).item())
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise TypeError(f"loss must be a number or a scalar tensor, got {type(loss).__name__}.") from None


# ---------------------------------------------------------------------------------------------
# PyTorch Lightning, lazily
# ---------------------------------------------------------------------------------------------
_CLASSES: dict[str, type] = {}


def _lightning_base(flavor: str | None = None):
    """``(Callback base class, package name)``: the flavour asked for, else whichever Lightning
    the user already imported (a Trainer only accepts its own package's callbacks), else
    ``lightning.pytorch``, else ``pytorch_lightning``."""
    import importlib

    names = ["lightning.pytorch", "pytorch_lightning"]
    if flavor is not None:
        if flavor not in names:
            raise ValueError(f"flavor must be 'lightning.pytorch' or 'pytorch_lightning', got {flavor!r}.")
        names = [flavor]
    else:
        names.sort(key=lambda m: sys.modules.get(m) is None)  # already imported first (stable)
    errors = []
    for name in names:
        try:
            mod = importlib.import_module(name)
            return mod.Callback, name
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError(
        "the PyTorch Lightning callback needs Lightning, which is not installed ("
        + "; ".join(errors)
        + "). Install it with `pip install lightning` (or `pytorch-lightning`), or call "
        "tracker.step(model, step, loss) from your own training loop instead."
    )


def _callback_class(flavor: str | None = None) -> type:
    base, name = _lightning_base(flavor)
    if name in _CLASSES and issubclass(_CLASSES[name], base):
        return _CLASSES[name]

    class CurvatureCallback(base):
        """PyTorch Lightning callback around a :class:`CurvatureTracker`: measures at the
        start of training (``global_step`` 0) and after each training batch, at
        ``trainer.global_step`` (the number of optimizer steps taken so far), recording the
        batch's training loss. Under gradient accumulation a step is measured once."""

        def __init__(self, tracker: CurvatureTracker):
            super().__init__()
            if not isinstance(tracker, CurvatureTracker):
                raise TypeError(f"CurvatureCallback wraps a CurvatureTracker, got {type(tracker).__name__}.")
            self.tracker = tracker

        def on_train_start(self, trainer, pl_module):
            self.tracker.step(pl_module, trainer.global_step)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                loss = None
            self.tracker.step(pl_module, trainer.global_step, loss)

        def result(self) -> CurvatureTrajectory:
            return self.tracker.result()

    CurvatureCallback.__qualname__ = "CurvatureCallback"
    CurvatureCallback.__module__ = __name__
    _CLASSES[name] = CurvatureCallback
    return CurvatureCallback


def lightning_callback(tracker: CurvatureTracker, *, flavor: str | None = None):
    """A PyTorch Lightning ``Callback`` that drives ``tracker`` (``Trainer(callbacks=[...])``).

    Lightning is imported only here, never when shapelens is imported. ``flavor`` picks
    ``"lightning.pytorch"`` or ``"pytorch_lightning"``; by default the one already imported
    (a Trainer accepts only callbacks of its own package), else whichever is installed.
    Raises ImportError, saying what to install, when neither is. The class itself is
    ``shapelens.curvature.trajectory.CurvatureCallback`` (built on first access)."""
    return _callback_class(flavor)(tracker)


def __getattr__(name: str):
    if name == "CurvatureCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
