"""Small models and a CPU training helper shared by the validation scripts.

* :func:`small_cnn` -- a two-conv-layer CNN in the spirit of the MNIST models of Feinman et
  al. (2017) and Ma et al. (2018), sized to train on 2 CPU cores in about a minute per epoch
  (reaches >= 98.5% MNIST test accuracy in 3 epochs).
* :func:`train` -- plain Adam + cross-entropy mini-batch training, seeded.
* :func:`accuracy` -- top-1 accuracy in eval mode.
* :func:`load_or_train` -- train once and cache the weights with safetensors under
  ``validation/cache/`` (gitignored) so reruns are fast; the cache key covers the
  architecture, the data and the hyper-parameters, so a stale file is never reused.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CACHE_DIR = Path(__file__).resolve().parent / "cache"

__all__ = ["small_cnn", "train", "accuracy", "predict", "load_or_train", "CACHE_DIR"]


def small_cnn(in_channels: int = 1, n_classes: int = 10, image_size: int = 28, width: int = 32, hidden: int = 128) -> nn.Sequential:
    """Conv(width,3)-ReLU-MaxPool-Conv(2*width,3)-ReLU-MaxPool-Flatten-Linear(hidden)-ReLU-Linear.

    Children are named (``conv1``, ``relu1``, ``pool1``, ... ``fc2``) so that activation
    capture and layer-wise analyses can refer to them.
    """
    s = image_size
    s = (s - 2) // 2  # conv 3x3 valid, pool 2
    s = (s - 2) // 2
    if s < 1:
        raise ValueError(f"image_size={image_size} is too small for two conv+pool stages; use at least 10.")
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, width, 3)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(width, 2 * width, 3)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(2 * width * s * s, hidden)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(hidden, n_classes)),
            ]
        )
    )


def _as_tensors(X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    Xt = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
    yt = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(y))
    return Xt.float(), yt.long()


def train(model: nn.Module, X: Any, y: Any, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """Train ``model`` with Adam on cross-entropy for ``epochs`` passes; returns it in eval mode.

    Reproducible for a given ``seed`` (the shuffling and, if the caller seeds before building
    the model, the initialisation). Shows a progress bar on a terminal only.
    """
    from tqdm import tqdm

    Xt, yt = _as_tensors(X, y)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    n = Xt.shape[0]
    model.train()
    for epoch in range(int(epochs)):
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not sys.stderr.isatty(), leave=False)
        for start in bar:
            idx = perm[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, X: Any, batch_size: int = 1000) -> np.ndarray:
    """Predicted class of every row of ``X`` (eval mode, restored afterwards)."""
    Xt = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
    was_training = model.training
    model.eval()
    try:
        out = [model(Xt[i : i + batch_size].float()).argmax(1) for i in range(0, Xt.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def accuracy(model: nn.Module, X: Any, y: Any) -> float:
    """Top-1 accuracy of ``model`` on ``(X, y)`` as a Python float."""
    y_np = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return float((predict(model, X) == y_np).mean())


def _key(model: nn.Module, X: Any, y: Any, **hyper: Any) -> str:
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(repr(sorted(hyper.items())).encode())
    Xn = X.numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    yn = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    h.update(str(Xn.shape).encode())
    h.update(np.ascontiguousarray(Xn, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(yn, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def load_or_train(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    name: str,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    cache_dir: Path | str = CACHE_DIR,
    return_info: bool = False,
) -> tuple[nn.Module, Any]:
    """Load cached weights for this (architecture, data, hyper-parameters), else train and save.

    Returns ``(model, loaded_from_cache)``; with ``return_info=True`` the second element is
    a dict ``{"cached": bool, "train_seconds": float | None, "path": str}`` (the training time
    of the run that produced the weights is kept in the file's metadata). Weights are stored
    with safetensors (no code execution on load) as ``<cache_dir>/<name>-<key>.safetensors``.
    """
    import time

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir)
    path = cache_dir / f"{name}-{_key(model, X, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        model.eval()
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        secs = float(meta["train_seconds"]) if "train_seconds" in meta else None
        info = {"cached": True, "train_seconds": secs, "path": str(path)}
        return model, (info if return_info else True)
    t0 = time.time()
    train(model, X, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    secs = time.time() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"train_seconds": f"{secs:.1f}", "epochs": str(epochs), "seed": str(seed)})
    info = {"cached": False, "train_seconds": secs, "path": str(path)}
    return model, (info if return_info else False)
