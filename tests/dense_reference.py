"""Ground truth for the curvature tests: the loss as a function of one flat parameter vector,
and its dense Hessian by ``torch.autograd.functional.hessian`` (model in eval mode, restored)."""

import torch
from torch.func import functional_call

from shapelens.probe import eval_mode


def flat_loss(model, loss_fn, X, y, names=None):
    """``(f, theta0)``: ``f(theta)`` is the loss with the parameters ``names`` (default: all)
    taken from the flat vector ``theta``, the others fixed; ``theta0`` the current values."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else list(names)
    sizes = [params[n].numel() for n in names]

    def f(theta):
        p, i = {}, 0
        for n, s in zip(names, sizes):
            p[n] = theta[i:i + s].view(params[n].shape)
            i += s
        full = {**{k: v.detach() for k, v in params.items()}, **p}
        with eval_mode(model):
            return loss_fn(functional_call(model, full, (X,)), y)

    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])
    return f, theta0


def dense_hessian(model, loss_fn, X, y, names=None):
    f, theta0 = flat_loss(model, loss_fn, X, y, names)
    return torch.autograd.functional.hessian(f, theta0)
