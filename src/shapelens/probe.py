"""Activation capture: run a model over data once and keep named layers' outputs as point clouds.

:func:`capture` registers forward hooks (``torch.nn.Module.register_forward_hook``) on the
chosen submodules, streams the inputs through the model in batches and returns an ordered
mapping ``layer name -> (N, D)`` float32 CPU tensor: the representation of every example (or
every token) at that layer, as studied by Ansuini et al. (2019, "Intrinsic dimension of data
representations in deep neural networks") and Ma et al. (2018, LID of adversarial subspaces).

The model is put in eval mode and run without gradients; every submodule's train/eval flag
is restored and every hook is removed afterwards, also when the model raises.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from shapelens._checks import check_int, resolve_device, show_progress, warn

__all__ = ["capture", "auto_layers", "eval_mode", "POOLS", "UnknownLayerError"]

#: The pooling modes :func:`capture` understands.
POOLS = ("mean", "last", "none", "flatten")

#: Names of ``nn.ModuleList`` attributes that hold the blocks of a transformer-style model
#: (``model.layers`` in Llama/Mistral, ``encoder.layer`` in BERT, ``h`` in GPT-2, ``blocks``
#: in many vision transformers).
BLOCK_LIST_NAMES = ("layers", "layer", "h", "blocks")

_AUTO_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# 3-D outputs of these modules are (batch, channels, length), not (batch, tokens, features).
_CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.LPPool1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
)


class UnknownLayerError(ValueError, KeyError):
    """A requested layer name is not a submodule of the model (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------
# layer selection
# --------------------------------------------------------------------------------------


def auto_layers(model: nn.Module) -> list[str]:
    """The natural layers to probe in ``model``, as names from ``model.named_modules()``.

    * Transformer-style models (Hugging Face and alike): the blocks, i.e. the elements of
      every ``nn.ModuleList`` whose attribute name is ``layers``, ``layer``, ``h`` or
      ``blocks`` (outermost lists only; an encoder-decoder gives the encoder's blocks then
      the decoder's). The residual stream after each block is what Ansuini et al. (2019)
      and Valeriani et al. (2023) profile.
    * Otherwise every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` module, in registration order
      (:func:`capture` reorders them by execution order), the choice of Ansuini et al. (2019)
      for small networks. Drop the ones you do not want from the returned list.

    Raises ValueError when the model has none of these.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    blocks: list[str] = []
    taken: list[str] = []  # prefixes of selected blocks (skip lists nested inside them)
    for name, module in model.named_modules():
        if not name or not isinstance(module, nn.ModuleList):
            continue
        if name.rsplit(".", 1)[-1] not in BLOCK_LIST_NAMES or len(module) == 0:
            continue
        if any(name.startswith(p + ".") for p in taken):
            continue
        for child_name, _ in module.named_children():
            full = f"{name}.{child_name}"
            blocks.append(full)
            taken.append(full)
    if blocks:
        return blocks
    names = [name for name, m in model.named_modules() if name and isinstance(m, _AUTO_TYPES)]
    if not names and isinstance(model, _AUTO_TYPES):
        names = [""]
    if not names:
        some = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(
            f"layers='auto' found no transformer blocks and no Linear/Conv modules in {type(model).__name__}; "
            f"pass layer names explicitly, e.g. layers={some!r} (see model.named_modules())."
        )
    return names


def _resolve_layers(model: nn.Module, layers: Any) -> tuple[list[str], bool]:
    if isinstance(layers, str) and layers == "auto":
        return auto_layers(model), True
    if isinstance(layers, str):
        layers = [layers]
    try:
        requested = list(layers)
    except TypeError:
        raise TypeError(f"layers must be 'auto' or a list of module names, got {layers!r}.") from None
    if not requested:
        raise ValueError("layers is empty; pass 'auto' or at least one module name from model.named_modules().")
    modules = dict(model.named_modules())
    out: list[str] = []
    for name in requested:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings as in model.named_modules(), got {name!r}.")
        if name not in modules:
            names = [n for n in modules if n]
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
            hint = f"did you mean one of {close}? " if close else ""
            shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
            raise UnknownLayerError(
                f"layer {name!r} is not a submodule of {type(model).__name__}; {hint}available names "
                f"(model.named_modules()): {shown or '(none: the model has no submodules)'}."
            )
        if name not in out:
            out.append(name)
    return out, False


# --------------------------------------------------------------------------------------
# hook outputs -> (n, D) points
# --------------------------------------------------------------------------------------


def _first_tensor(out: Any, layer: str) -> torch.Tensor:
    """The tensor a module produced: itself, element 0 of a tuple/list, ``last_hidden_state``
    (else the first tensor value) of a dict or dataclass-like output."""
    seen = 0
    while not isinstance(out, torch.Tensor):
        seen += 1
        if seen > 8:
            break
        if isinstance(out, Mapping):
            if "last_hidden_state" in out and out["last_hidden_state"] is not None:
                out = out["last_hidden_state"]
            else:
                vals = [v for v in out.values() if isinstance(v, torch.Tensor)]
                if not vals:
                    break
                out = vals[0]
        elif isinstance(out, (tuple, list)):
            if not out:
                break
            out = out[0]
        elif dataclasses.is_dataclass(out) and not isinstance(out, type):
            lhs = getattr(out, "last_hidden_state", None)
            if isinstance(lhs, torch.Tensor):
                out = lhs
            else:
                vals = [getattr(out, f.name) for f in dataclasses.fields(out)]
                vals = [v for v in vals if isinstance(v, torch.Tensor)]
                if not vals:
                    break
                out = vals[0]
        elif hasattr(out, "last_hidden_state") and isinstance(out.last_hidden_state, torch.Tensor):
            out = out.last_hidden_state
        else:
            break
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"layer {layer!r} returned {type(out).__name__}, from which no tensor could be taken "
            "(capture reads tensors, element 0 of tuples, and last_hidden_state or the first tensor of "
            "dict/dataclass outputs); pick a submodule that returns a tensor."
        )
    return out


def _to_points(
    h: torch.Tensor,
    *,
    layer: str,
    pool: str,
    channels_first: bool,
    batch: int | None,
    mask: torch.Tensor | None,
    state: dict,
) -> torch.Tensor:
    """Turn one batch of a layer's output into ``(n, D)`` float32 points on the CPU."""
    if h.ndim == 0:
        raise ValueError(f"layer {layer!r} returned a scalar; capture needs batch-first outputs (B, ...).")
    if batch is not None and h.shape[0] != batch:
        raise ValueError(
            f"layer {layer!r} returned shape {tuple(h.shape)} for a batch of {batch} examples; capture needs "
            "outputs whose first axis is the batch (e.g. nn.MultiheadAttention needs batch_first=True). "
            "Pick another layer."
        )
    h = h.detach()
    if h.is_complex():
        raise TypeError(f"layer {layer!r} returned a complex tensor; capture supports real outputs only.")
    h = h.float()
    B = h.shape[0]
    if h.ndim == 1:
        out = h.reshape(B, 1)
    elif h.ndim == 2:
        out = h
    elif h.ndim == 3 and not channels_first:
        # token states (B, T, D)
        T = h.shape[1]
        m = None
        if mask is not None:
            if tuple(mask.shape) == (B, T):
                m = mask.to(device=h.device, dtype=h.dtype)
            elif not state.get("mask_warned_" + layer):
                state["mask_warned_" + layer] = True
                warn(
                    f"layer {layer!r} has {T} tokens but the attention_mask has shape {tuple(mask.shape)}; "
                    "the mask is ignored for this layer (all tokens count)."
                )
        if pool == "mean":
            if m is None:
                out = h.mean(dim=1)
            else:
                out = (h * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        elif pool == "last":
            if m is None:
                out = h[:, -1, :]
            else:
                pos = torch.arange(T, device=h.device, dtype=h.dtype)
                idx = ((m > 0).to(h.dtype) * (pos + 1)).argmax(dim=1)  # last non-padding position
                out = h[torch.arange(B, device=h.device), idx]
        elif pool == "none":
            out = h.reshape(B * T, -1) if m is None else h[m > 0]
        else:  # flatten
            out = h.reshape(B, -1)
    else:
        # channels-first maps (B, C, *spatial): conv feature maps
        C = h.shape[1]
        if pool == "mean":
            out = h.flatten(2).mean(dim=2)
        elif pool == "flatten":
            out = h.reshape(B, -1)
        elif pool == "none":
            out = h.flatten(2).transpose(1, 2).reshape(-1, C)
        else:
            raise ValueError(
                f"pool='last' applies to token sequences (B, T, D), but layer {layer!r} returned a "
                f"channels-first feature map of shape {tuple(h.shape)}; use pool='mean', 'flatten' or 'none'."
            )
    # copy: never keep a view of the model's output (in-place ops later in the forward would change it)
    return out.to(device="cpu", dtype=torch.float32, copy=True).contiguous()


# --------------------------------------------------------------------------------------
# inputs -> batches
# --------------------------------------------------------------------------------------


def _as_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError("inputs contain an object array; pass numeric arrays or tensors.")
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _batches(inputs: Any, batch_size: int) -> tuple[Iterator[Any], int | None]:
    """Yield batches (a tensor or a dict of kwargs) and the number of batches when known."""
    if isinstance(inputs, (str, bytes)):
        raise TypeError(
            "inputs is a string; tokenize it first, e.g. capture(model, dict(tokenizer(texts, padding=True, "
            "return_tensors='pt')))."
        )
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = _as_tensor(inputs)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"inputs has shape {tuple(x.shape)}; pass at least one example along axis 0.")
        n = x.shape[0]
        return (x[i : i + batch_size] for i in range(0, n, batch_size)), math.ceil(n / batch_size)
    if isinstance(inputs, Mapping):
        d = {k: _as_tensor(v) for k, v in inputs.items()}
        sizes = {k: v.shape[0] for k, v in d.items() if isinstance(v, torch.Tensor) and v.ndim > 0}
        if not sizes:
            raise ValueError(f"the inputs dict has no tensors (keys {list(d)}); pass tensors such as input_ids.")
        if len(set(sizes.values())) != 1:
            raise ValueError(
                f"the tensors in the inputs dict disagree on the number of examples (axis 0): {sizes}; "
                "they must all have the same first dimension."
            )
        n = next(iter(sizes.values()))
        if n == 0:
            raise ValueError("the inputs dict holds zero examples; pass at least one.")

        def gen() -> Iterator[dict]:
            for i in range(0, n, batch_size):
                yield {k: (v[i : i + batch_size] if k in sizes else v) for k, v in d.items()}

        return gen(), math.ceil(n / batch_size)
    try:
        from torch.utils.data import DataLoader, Dataset

        if isinstance(inputs, Dataset):  # yields single examples: batch them
            inputs = DataLoader(inputs, batch_size=batch_size, shuffle=False)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(inputs, Iterable):
        try:
            total = len(inputs)  # type: ignore[arg-type]
        except TypeError:
            total = None
        return iter(inputs), total
    raise TypeError(
        f"inputs of type {type(inputs).__name__} is not supported; pass a tensor or array (batched along axis 0), "
        "a dict of tensors (model keyword arguments), or a DataLoader / iterable of batches."
    )


def _unpack_batch(batch: Any) -> Any:
    """A DataLoader batch -> what the model takes: a tensor, or a dict of keyword arguments."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("got an empty batch (tuple/list with no elements).")
        batch = batch[0]  # (x, y) -> x
    if isinstance(batch, Mapping):
        return {k: _as_tensor(v) for k, v in batch.items()}
    batch = _as_tensor(batch)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"a batch is of type {type(batch).__name__}; each batch must be a tensor, an (x, y) tuple/list whose "
            "first element is the input, or a dict of keyword arguments."
        )
    return batch


def _prepare(x: Any, device: torch.device, float_dtype: torch.dtype | None) -> Any:
    def move(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if t.is_floating_point() and float_dtype is not None and t.dtype != float_dtype:
            return t.to(device=device, dtype=float_dtype)
        return t.to(device)

    if isinstance(x, dict):
        return {k: move(v) for k, v in x.items()}
    return move(x)


def _batch_len(x: Any) -> int | None:
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.ndim > 0 else None
    for v in x.values():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    return None


# --------------------------------------------------------------------------------------
# to disk
# --------------------------------------------------------------------------------------

_NPY_HEADER_BYTES = 256  # fixed-size header so the final shape can be written in place


def _npy_header(shape: tuple[int, ...]) -> bytes:
    body = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    n_body = _NPY_HEADER_BYTES - 10
    body = body + " " * (n_body - len(body) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", n_body) + body.encode("latin1")


class _DiskSink:
    """Appends float32 rows to an ``.npy`` file whose header is fixed up at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "wb")
        self.fh.write(_npy_header((0, 0)))
        self.rows = 0
        self.width: int | None = None

    def add(self, t: torch.Tensor, layer: str) -> None:
        if self.width is None:
            self.width = int(t.shape[1])
        elif int(t.shape[1]) != self.width:
            raise ValueError(
                f"layer {layer!r} gave {self.width} features in an earlier batch but {t.shape[1]} now; with "
                "pool='flatten' every batch needs the same shape (pad token inputs to one fixed length)."
            )
        self.fh.write(np.ascontiguousarray(t.numpy(), dtype="<f4").tobytes())
        self.rows += int(t.shape[0])

    def close(self) -> None:
        if self.fh.closed:
            return
        self.fh.seek(0)
        self.fh.write(_npy_header((self.rows, self.width or 0)))
        self.fh.close()


def _safe_filename(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"
    cand, i = base, 1
    while cand.lower() in used:
        i += 1
        cand = f"{base}_{i}"
    used.add(cand.lower())
    return cand + ".npy"


# --------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------


def _model_device_dtype(model: nn.Module) -> tuple[set[torch.device], torch.dtype | None]:
    devices: set[torch.device] = set()
    fdtype: torch.dtype | None = None
    for t in list(model.parameters()) + list(model.buffers()):
        devices.add(t.device)
        if fdtype is None and t.is_floating_point():
            fdtype = t.dtype
    return devices, fdtype


def capture(
    model: nn.Module,
    inputs: Any,
    layers: Any = "auto",
    *,
    pool: str = "mean",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    to_disk: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``inputs`` once and return the chosen layers' outputs as point clouds.

    Forward hooks (``register_forward_hook``) record each chosen submodule's output, batch by
    batch, moved to the CPU as float32 right away; the representation of every example (or
    token) at a layer is the point cloud whose intrinsic dimension Ansuini et al. (2019) and
    whose local ID Ma et al. (2018) measure.

    Parameters
    ----------
    model : any ``nn.Module`` (plain networks, CNNs, Hugging Face models).
    inputs : one of
        * a tensor or numpy array, cut into ``batch_size`` chunks along axis 0 and passed as
          ``model(x)``;
        * a dict of tensors (e.g. a tokenizer's ``input_ids`` + ``attention_mask``), cut
          along axis 0 and passed as ``model(**batch)``; non-tensor values are passed as is;
        * a ``DataLoader`` or any iterable of batches: each a tensor, an ``(x, y, ...)``
          tuple/list whose first element is the input, or a dict of keyword arguments (the
          loader's batch size is used). A ``Dataset`` (map-style or iterable) is wrapped in a
          ``DataLoader(batch_size=batch_size)``.
        Floating-point inputs are cast to the model's floating dtype.
    layers : ``"auto"`` (see :func:`auto_layers`; the result is ordered by execution), or
        a list of names from ``model.named_modules()`` (kept in the given order).
    pool : how a layer's output becomes points.
        * ``(B, D)`` outputs are used as they are, whatever ``pool`` is.
        * token states ``(B, T, D)``: ``"mean"`` averages over tokens, ``"last"`` takes the
          last token, ``"none"`` makes every token a point, ``"flatten"`` gives
          ``(B, T*D)``. When a batch is a dict with an ``attention_mask``, padding tokens
          are excluded from ``"mean"`` and ``"none"``, and ``"last"`` takes the last
          non-padding token.
        * channels-first maps ``(B, C, H, W)`` (any number of spatial axes; also 3-D
          outputs of 1-d convolution/pooling/batch-norm modules): ``"mean"`` averages over
          positions giving ``(B, C)``, ``"flatten"`` gives ``(B, C*H*W)``, ``"none"`` makes
          each position a point ``(B*H*W, C)``; ``"last"`` is refused.
    batch_size : examples per forward pass for tensor and dict inputs.
    device : ``"auto"`` leaves the model where it is and sends inputs to its parameters'
        device; an explicit device moves the model there for the capture and back after.
    progress : show a tqdm progress bar; ``None`` shows one only when stderr is a terminal.
    to_disk : a directory; when given, each layer is streamed to ``<dir>/<layer>.npy``
        (plus ``index.json`` mapping layer names to files) and the returned tensors are
        memory-mapped views of those files (copy-on-write: edits stay in memory).

    Returns
    -------
    dict (ordered) layer name -> float32 CPU tensor ``(N, D)``; ``N`` is the number of
    examples, or of (non-padding) tokens / spatial positions with ``pool="none"``.

    Notes
    -----
    The model runs in eval mode under ``torch.no_grad()``; every submodule's train/eval flag
    is restored and all hooks are removed afterwards, also when the model raises (the error
    then propagates). A module that runs more than once per forward pass keeps its last
    call's output (with a warning).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {list(POOLS)}, got {pool!r}.")
    batch_size = check_int(batch_size, "batch_size", 1)
    names, is_auto = _resolve_layers(model, layers)
    modules = dict(model.named_modules())

    devices, float_dtype = _model_device_dtype(model)
    move_to: torch.device | None = None
    if device is None or (isinstance(device, str) and device == "auto"):
        run_device = _first_param_device(model)
    else:
        run_device = resolve_device(device)
        if len(devices) > 1:
            raise ValueError(
                f"the model's parameters are spread over several devices ({sorted(map(str, devices))}); "
                "capture will not move such a model: pass device='auto'."
            )
        if devices and next(iter(devices)) != run_device:
            move_to = run_device
    original_device = next(iter(devices)) if devices else None

    batches, total = _batches(inputs, batch_size)
    show = show_progress(progress)

    out_dir: Path | None = None
    files: dict[str, str] = {}
    if to_disk is not None:
        out_dir = Path(to_disk)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"to_disk={str(to_disk)!r} exists and is not a directory; pass a directory path.")
        used: set[str] = set()
        files = {n: _safe_filename(n, used) for n in names}

    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    current: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    order: list[str] = []
    state: dict[str, Any] = {"batch": None, "mask": None}

    def make_hook(layer: str, module: nn.Module):
        channels_first = isinstance(module, _CHANNELS_FIRST_1D)

        def hook(mod: nn.Module, args: Any, output: Any) -> None:
            h = _first_tensor(output, layer)
            calls[layer] = calls.get(layer, 0) + 1
            if calls[layer] == 2 and not state.get("reuse_warned_" + layer):
                state["reuse_warned_" + layer] = True
                warn(f"layer {layer!r} runs more than once per forward pass; capture keeps its last call's output.")
            current[layer] = _to_points(
                h, layer=layer, pool=pool, channels_first=channels_first,
                batch=state["batch"], mask=state["mask"], state=state,
            )
            if layer not in order:
                order.append(layer)

        return hook

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None  # type: ignore[assignment]

    sinks: dict[str, _DiskSink] = {}
    with ExitStack() as stack:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for n in names:
                sinks[n] = _DiskSink(out_dir / files[n])
                stack.callback(sinks[n].close)
        handles = [modules[n].register_forward_hook(make_hook(n, modules[n])) for n in names]
        for h in handles:
            stack.callback(h.remove)
        stack.enter_context(eval_mode(model))
        if move_to is not None and original_device is not None:
            stack.callback(model.to, original_device)
            model.to(move_to)
        bar = None
        if tqdm is not None and show:
            bar = tqdm(total=total, desc="capture", unit="batch", disable=False)
            stack.callback(bar.close)
        n_seen = 0
        with torch.no_grad():
            for raw in batches:
                x = _unpack_batch(raw)
                x = _prepare(x, run_device, float_dtype)
                state["batch"] = _batch_len(x)
                mask = x.get("attention_mask") if isinstance(x, dict) else None
                state["mask"] = mask if isinstance(mask, torch.Tensor) else None
                current.clear()
                calls.clear()
                if isinstance(x, dict):
                    model(**x)
                else:
                    model(x)
                missing = [n for n in names if n not in current]
                if missing:
                    raise ValueError(
                        f"layers {missing} did not run during the forward pass (batch {n_seen}); "
                        "pick modules that the model's forward calls."
                    )
                for n in names:
                    if out_dir is not None:
                        sinks[n].add(current[n], n)
                    else:
                        if chunks[n] and chunks[n][0].shape[1] != current[n].shape[1]:
                            raise ValueError(
                                f"layer {n!r} gave {chunks[n][0].shape[1]} features in the first batch but "
                                f"{current[n].shape[1]} in batch {n_seen}; with pool='flatten' every batch "
                                "needs the same shape (pad token inputs to one fixed length)."
                            )
                        chunks[n].append(current[n])
                current.clear()
                n_seen += 1
                if bar is not None:
                    bar.update(1)
        if n_seen == 0:
            raise ValueError("inputs yielded no batches; pass at least one example.")
    final = [n for n in order if n in names] if is_auto else names
    if out_dir is None:
        return OrderedDict((n, torch.cat(chunks[n], dim=0)) for n in final)
    index = [{"layer": n, "file": files[n], "shape": [sinks[n].rows, sinks[n].width or 0]} for n in final]
    (out_dir / "index.json").write_text(json.dumps({"layers": index, "pool": pool}, indent=2))
    return OrderedDict((n, _open_npy(out_dir / files[n])) for n in final)


def _first_param_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (dropout off, BatchNorm running statistics) and
    restore each one's own train/eval flag on exit, also when the body raises.

    Shared by everything that evaluates a user's model: probing, attacks, curvature."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _open_npy(path: Path) -> torch.Tensor:
    """A float32 tensor backed by a copy-on-write memory map of ``path`` (no pickle)."""
    arr = np.load(path, mmap_mode="c", allow_pickle=False)
    if arr.size == 0:
        return torch.zeros(arr.shape, dtype=torch.float32)
    return torch.from_numpy(arr)
