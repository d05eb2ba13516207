"""Curvature of the loss as linear operators over a model's parameters.

``Hessian``, ``GGN`` and ``EmpiricalFisher`` are matrix-free: ``op @ v`` costs a few forward
and backward passes over the data, built with ``torch.func`` (forward-over-reverse for the
Hessian). The design follows curvlinops (Dangel et al., "Convolutions and more as einsum",
and the curvlinops library): an operator object with ``@``, ``shape`` and ``to_scipy()``;
algorithms are free functions over operators (:mod:`shapelens.curvature.spectra`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..probe import eval_mode

__all__ = ["Hessian", "GGN", "EmpiricalFisher", "CurvatureOperator", "OPERATORS"]


def _batches(data) -> list:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return [tuple(data)]  # a single (x, y) batch
    out = []
    for b in data:
        if not (isinstance(b, (tuple, list)) and len(b) >= 2):
            raise TypeError("each batch must be an (inputs, targets) pair; pass a DataLoader, a list of (x, y) batches or one (x, y).")
        out.append((b[0], b[1]))
    if not out:
        raise ValueError("data has no batches; pass at least one (inputs, targets) batch.")
    for i, (x, y) in enumerate(out):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"batch {i}: inputs and targets must be torch tensors, got {type(x).__name__} and "
                            f"{type(y).__name__}; convert with torch.as_tensor.")
        if x.ndim == 0 or len(x) == 0 or y.ndim == 0 or len(y) == 0:
            raise ValueError(f"batch {i} is empty (inputs {tuple(x.shape)}, targets {tuple(y.shape)}); "
                             "drop empty batches (e.g. DataLoader(drop_last=...)) or pass non-empty ones.")
        if len(x) != len(y):
            raise ValueError(f"batch {i} has {len(x)} inputs but {len(y)} targets; pass matching (x, y) pairs.")
    return out


def loss_reduction(loss_fn) -> str:
    """``"mean"`` or ``"sum"``: how ``loss_fn`` reduces over a batch (its ``reduction``
    attribute, ``"mean"`` when it has none), which sets how batches are weighted."""
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_fn reduction must be 'mean' or 'sum', got {reduction!r}; the curvature of a "
                         "per-example loss vector is not defined.")
    return reduction


def _distributed() -> bool:
    """True inside an initialized ``torch.distributed`` group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def second_order_attention():
    """Context in which ``F.scaled_dot_product_attention`` runs its "math" kernel, written in
    differentiable ops. The fused flash / memory-efficient kernels (the default in torch and
    in Hugging Face transformers) implement neither forward-mode AD nor a differentiable
    backward, so Hessian-vector products through attention fail without it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def select_params(model: nn.Module, params) -> list[str]:
    """Names of the chosen parameters, in the model's order: all trainable ones for ``None``,
    else the given names or parameter tensors (one or an iterable). Shared by the operators
    and the landscapes so that ``params=`` means the same everywhere."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        if isinstance(params, (str, torch.Tensor)):
            params = [params]
        by_id = {id(p): n for n, p in named.items()}
        chosen = set()
        for p in params:
            if isinstance(p, str):
                if p not in named:
                    raise ValueError(f"{p!r} is not a parameter of the model; choose from {', '.join(named)}.")
                chosen.add(p)
            elif id(p) in by_id:
                chosen.add(by_id[id(p)])
            else:
                raise ValueError("a tensor in params is not a parameter of the model; pass names or model parameters.")
        names = [n for n in named if n in chosen]
    if not names:
        raise ValueError("no parameters selected (none require grad); pass params explicitly.")
    bad = [n for n in names if not named[n].is_floating_point()]
    if bad:
        raise ValueError(f"parameters {bad} are not floating point and cannot be perturbed; leave them out of params.")
    return names


def _jvp_with_targets(f, primal, tangent, y):
    """``jvp`` of ``f(primal, y)`` in ``primal`` along ``tangent``. Floating-point targets are
    passed as primals with a zero tangent: closing over them hits a torch.func bug with
    ``nn.MSELoss`` (pytorch/pytorch#123996, "ZeroTensors are immutable")."""
    if y.is_floating_point():
        return jvp(f, (primal, y), (tangent, torch.zeros_like(y)))[1]
    return jvp(lambda p: f(p, y), (primal,), (tangent,))[1]


class CurvatureOperator:
    """Base: a symmetric ``n x n`` operator over the chosen parameters, ``n`` their total size.

    Parameters
    ----------
    model : the ``nn.Module``; evaluated in eval mode (dropout off, BatchNorm running
        statistics), its train/eval state restored after every product.
    loss_fn : ``loss_fn(outputs, targets)`` with ``reduction="mean"`` (default in torch) or
        ``"sum"``; the operator is the curvature of the loss over the *whole* data: batch
        means are weighted by batch size for ``"mean"``, summed for ``"sum"``.
    data : a DataLoader, a list of ``(x, y)`` batches, or one ``(x, y)`` pair.
    params : ``None`` (all trainable parameters), or an iterable of parameter names (as in
        ``model.named_parameters()``) or of parameters: a block, for per-layer curvature.

    Construction runs one forward and backward pass over the data (a third of one product's
    cost) to check it: a non-finite or non-scalar loss, empty batches, inputs the model cannot
    take are refused naming the batch; parameters that receive no gradient from the loss
    (an unused head, a frozen branch) are excluded, listed in ``excluded`` and ``notes``.
    ``loss`` holds the full-data loss at the current weights.

    Attention: products run with ``scaled_dot_product_attention`` on its differentiable
    "math" kernel (:func:`second_order_attention`), so transformers (Hugging Face models
    included) work; the fused kernels have no second derivatives.

    Distributed (data parallel): inside an initialized ``torch.distributed`` process group of
    several processes, each rank passes its own shard of the data; products are computed on
    the shard and summed across ranks (``all_reduce``), with mean losses weighted by the
    *global* sample count, so every rank holds the operator of the whole dataset. Spectra,
    traces and densities then agree on every rank (their random vectors come from ``seed``).
    """

    def __init__(self, model: nn.Module, loss_fn, data, params=None):
        self.model = model
        self.loss_fn = loss_fn
        self.batches = _batches(data)
        named = dict(model.named_parameters())
        names = select_params(model, params)
        self.reduction = loss_reduction(loss_fn)
        self.distributed = _distributed()
        n_local = sum(len(y) for _, y in self.batches)
        p0 = named[names[0]]
        self.device, self.dtype = p0.device, p0.dtype
        self.n_samples = int(_all_reduce(torch.tensor(float(n_local), device=self.device)).item()) \
            if self.distributed else int(n_local)
        self._fixed_all = {n: p.detach() for n, p in named.items()}
        self._buffers = {n: b for n, b in model.named_buffers()}
        used, self.loss = self._preflight(names)
        if not any(used):
            raise ValueError("none of the selected parameters gets a gradient from the loss; "
                             "check that they take part in the forward pass, or pass other params.")
        self.excluded = tuple(n for n, u in zip(names, used) if not u)
        self.notes: tuple[str, ...] = ()
        if self.excluded:
            self.notes = (f"excluded {len(self.excluded)} parameter(s) that get no gradient from the loss: "
                          f"{', '.join(self.excluded)}",)
            from .._checks import warn

            warn(self.notes[0] + "; their rows and columns would be zero.")
        names = [n for n, u in zip(names, used) if u]
        self.param_names = tuple(names)
        self._params = {n: named[n].detach() for n in names}
        self._fixed = {n: p for n, p in self._fixed_all.items() if n not in self._params}
        self._sizes = [self._params[n].numel() for n in names]
        self.dim = int(sum(self._sizes))

    def _preflight(self, names) -> tuple[list[bool], float]:
        """One checked forward/backward pass: returns which parameters get a gradient and the loss."""
        ps = {n: self._fixed_all[n].clone().requires_grad_(True) for n in names}
        used = torch.zeros(len(names), device=self.device)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        rank = ""
        if self.distributed:
            import torch.distributed as dist

            rank = f" on rank {dist.get_rank()}"
        with eval_mode(self.model), torch.enable_grad(), second_order_attention():
            for i, (x, y) in enumerate(self.batches):
                x, y = x.to(self.device), y.to(self.device)
                try:
                    out = functional_call(self.model, {**self._fixed_all, **self._buffers, **ps}, (x,))
                except RuntimeError as exc:
                    if not (x.is_floating_point() or x.is_complex()):
                        raise ValueError(
                            f"batch {i}{rank}: the model cannot take integer inputs of dtype {x.dtype} ({exc}); "
                            "convert them with x.float() (integer inputs are fine for models that embed token ids)."
                        ) from exc
                    raise
                loss = self.loss_fn(out, y)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                    raise ValueError(f"loss_fn returned {shape} on batch {i}{rank}, not a scalar; "
                                     "use a loss with reduction='mean' or 'sum'.")
                if not torch.isfinite(loss):
                    raise ValueError(f"the loss is {float(loss.detach())} on batch {i}{rank}; curvature of a non-finite loss "
                                     "is undefined: check that batch's inputs and targets, or the weights.")
                grads = torch.autograd.grad(loss.reshape(()), list(ps.values()), allow_unused=True) \
                    if loss.requires_grad else [None] * len(ps)
                used += torch.tensor([g is not None for g in grads], dtype=used.dtype, device=self.device)
                total += self._weight(y) * loss.detach().double().reshape(())
        if self.distributed:
            _all_reduce(used)
            _all_reduce(total)
        return [bool(u > 0) for u in used], float(total)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    # -- flattening helpers -------------------------------------------------------------
    def _unflatten(self, v: torch.Tensor) -> dict:
        out, i = {}, 0
        for n, s in zip(self.param_names, self._sizes):
            out[n] = v[i:i + s].view_as(self._params[n])
            i += s
        return out

    def _flatten(self, d: dict) -> torch.Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.param_names])

    def _forward(self, p: dict, x):
        return functional_call(self.model, {**self._fixed, **self._buffers, **p}, (x,))

    def _weight(self, y) -> float:
        return len(y) / self.n_samples if self.reduction == "mean" else 1.0

    def _batch_product(self, v: dict, x, y, i: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- products -----------------------------------------------------------------------
    def matvec(self, v) -> torch.Tensor:
        """``A @ v`` for a vector of length ``n`` (numpy or torch); returns a torch vector."""
        v = torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1)
        if v.numel() != self.dim:
            raise ValueError(f"vector has {v.numel()} entries but the operator acts on {self.dim} parameters.")
        vd = self._unflatten(v)
        total = torch.zeros_like(v)
        with eval_mode(self.model), second_order_attention():
            for i, (x, y) in enumerate(self.batches):
                x = x.to(self.device)
                y = y.to(self.device)
                total += self._weight(y) * self._flatten(self._batch_product(vd, x, y, i))
        if self.distributed:
            _all_reduce(total)
        return total

    def __matmul__(self, v):
        v = torch.as_tensor(v)
        if v.ndim == 1:
            return self.matvec(v)
        if v.ndim == 2 and v.shape[0] == self.dim:
            return torch.stack([self.matvec(v[:, j]) for j in range(v.shape[1])], dim=1)
        raise ValueError(f"expected a vector of length {self.dim} or a matrix with {self.dim} rows, got shape {tuple(v.shape)}.")

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            return self.matvec(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))).detach().cpu().double().numpy()

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, dtype=np.float64)

    def to_dense(self) -> torch.Tensor:
        """The dense ``n x n`` matrix (``n`` products): for small blocks and tests."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[:, j]) for j in range(self.dim)], dim=1)


class Hessian(CurvatureOperator):
    """Hessian of the loss with respect to the chosen parameters (Pearlmutter 1994, "Fast
    exact multiplication by the Hessian").

    ``hvp`` picks how a product is differentiated:

    * ``"forward-over-reverse"`` (default): a ``torch.func.jvp`` of the gradient; nothing is
      kept between products, the least memory.
    * ``"reverse-over-reverse"``: double backward; on CPU often a little faster for plain
      MLPs (forward-mode kernels are less tuned there); nothing kept between products.
    * ``"cached-graph"``: reverse-over-reverse keeping each batch's gradient graph between
      products (as PyHessian does for one batch), so a product is one backward pass, about
      half the cost; memory: every batch's double-backward graph at once, so use it when the
      data is a few batches that fit. If the weights change in place the graphs are rebuilt.

    All give the same matrix to rounding (tested); ``benchmarks/bench_curvature.py`` times them.
    """

    HVP_MODES = ("forward-over-reverse", "reverse-over-reverse", "cached-graph")

    def __init__(self, model: nn.Module, loss_fn, data, params=None, *, hvp: str = "forward-over-reverse"):
        if hvp not in self.HVP_MODES:
            raise ValueError(f"hvp must be one of {', '.join(self.HVP_MODES)}, got {hvp!r}.")
        self.hvp = hvp
        self._graphs: dict = {}
        super().__init__(model, loss_fn, data, params)

    def _batch_product(self, v, x, y, i):
        if self.hvp == "forward-over-reverse":
            def loss(p, t):
                return self.loss_fn(self._forward(p, x), t)

            return _jvp_with_targets(lambda p, t: grad(loss)(p, t), self._params, v, y)
        keep = self.hvp == "cached-graph"
        for attempt in (0, 1):
            entry = self._graphs.get(i) if keep else None
            if entry is None:
                entry = self._gradient_graph(x, y)
                if keep:
                    self._graphs[i] = entry
            ps, g = entry
            try:
                hv = torch.autograd.grad(g, list(ps.values()), grad_outputs=[v[n] for n in ps], retain_graph=keep,
                                         allow_unused=True)
                break
            except RuntimeError as exc:  # weights changed in place since the graph was built: rebuild once
                if not keep or attempt or "inplace" not in str(exc):
                    raise
                self._graphs.pop(i, None)
        return {n: (h if h is not None else torch.zeros_like(ps[n])) for n, h in zip(ps, hv)}

    def _gradient_graph(self, x, y):
        ps = {n: p.detach().requires_grad_(True) for n, p in self._params.items()}
        with torch.enable_grad():
            loss = self.loss_fn(self._forward(ps, x), y)
            g = torch.autograd.grad(loss, list(ps.values()), create_graph=True)
        return ps, g


class GGN(CurvatureOperator):
    """Generalized Gauss-Newton matrix ``J^T H_L J`` (Schraudolph 2002, "Fast curvature
    matrix-vector products for second-order gradient descent"): ``J`` the Jacobian of the
    model's outputs, ``H_L`` the Hessian of the loss in the outputs. Positive semi-definite
    for convex losses; equal to the Fisher for exponential-family likelihoods (Martens 2020)."""

    def _batch_product(self, v, x, y, i):
        def out(p):
            return self._forward(p, x)

        o, Jv = jvp(out, (self._params,), (v,))
        HJv = _jvp_with_targets(lambda z, t: grad(self.loss_fn)(z, t), o, Jv, y)
        _, pullback = vjp(out, self._params)
        return pullback(HJv)[0]


class EmpiricalFisher(CurvatureOperator):
    """Empirical Fisher ``sum_i w g_i g_i^T`` of the per-example gradients ``g_i`` (``w = 1/N``
    for a mean loss, 1 for a sum). Not the Fisher information (Kunstner, Balles & Hennig 2019,
    "Limitations of the empirical Fisher approximation"), but cheap and widely used."""

    def _batch_product(self, v, x, y, i):
        def one(p, xi, yi):
            return self.loss_fn(self._forward(p, xi.unsqueeze(0)), yi.unsqueeze(0))

        g = vmap(grad(one), in_dims=(None, 0, 0))(self._params, x, y)  # per-example gradients
        coef = sum((g[n] * v[n]).reshape(len(y), -1).sum(1) for n in self.param_names)  # g_i . v
        scale = 1.0 / len(y) if self.reduction == "mean" else 1.0
        return {n: scale * torch.einsum("b,b...->...", coef, g[n]) for n in self.param_names}


#: the operators by name, as ``curvature_summary``, the tracker and the CLI accept them
OPERATORS = {"hessian": Hessian, "ggn": GGN, "fisher": EmpiricalFisher}
