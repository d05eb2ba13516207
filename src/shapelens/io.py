"""Load point clouds from files without executing code.

One entry point, :func:`load_points`, reads an ``(N, D)`` array from the formats researchers
keep activations and embeddings in: NumPy (``.npy``, ``.npz``), PyTorch (``.pt``, ``.pth``),
safetensors (``.safetensors``) and delimited text (``.csv``, ``.tsv``, ``.txt``).

Security (see DESIGN.md): every format is read without running code from the file.
``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)`` and safetensors are used;
a pickled ``.npy``/``.npz``/``.pt`` file is refused unless the caller passes
``allow_pickle=True``, an opt-in named for the risk (unpickling a file can run arbitrary code
chosen by whoever wrote it).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_points", "load_arrays", "load_model", "LoadError", "SUPPORTED_EXTENSIONS"]

#: File extensions :func:`load_points` reads, lower case, with the dot.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".pt", ".pth", ".safetensors", ".csv", ".tsv", ".txt")

_KEYED = (".npz", ".pt", ".pth", ".safetensors")
_TEXT_DELIMITERS = {".csv": ",", ".tsv": "\t"}


class LoadError(ValueError):
    """A file could not be read as a point cloud; the message says why and what to do."""


def load_points(path: str | os.PathLike, *, key: str | None = None, allow_pickle: bool = False) -> np.ndarray:
    """Read a point cloud (an array, normally of shape ``(N, D)``) from a file.

    The array is returned as stored (dtype and shape); validation of the shape and values
    is left to the estimators (:func:`shapelens._checks.as_points`), which say what to do
    with 1-D or 3-D arrays, NaN and so on. ``bfloat16`` tensors are widened to float32
    because NumPy has no bfloat16.

    Parameters
    ----------
    path : file to read; the format is chosen by its extension, one of
        ``.npy .npz .pt .pth .safetensors .csv .tsv .txt``.
    key : which array to take from a file that holds several (``.npz``, a ``.pt`` dict of
        tensors, ``.safetensors``). Not needed when the file holds exactly one array; when it
        holds several and no key is given, the error lists the keys.
    allow_pickle : allow pickled content (object arrays in ``.npy``/``.npz``, arbitrary
        Python objects in ``.pt``). **Unpickling can execute arbitrary code**: pass ``True``
        only for files you created or trust. Default ``False``.

    Text files (``.csv`` comma, ``.tsv`` tab, ``.txt`` comma, tab or whitespace, detected
    from the first line) must be numeric; a single header line is detected (a first line
    that does not parse as numbers) and skipped. Lines starting with ``#`` are comments.

    Raises
    ------
    FileNotFoundError when the file does not exist; :class:`LoadError` (a ``ValueError``)
    for an unsupported extension, a missing or unknown key, refused pickled content and
    unreadable or non-numeric content.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise LoadError(
            f"{p}: unsupported file extension {ext or '(none)'!r}; supported are "
            f"{', '.join(SUPPORTED_EXTENSIONS)}. Save the points as e.g. np.save('points.npy', X)."
        )
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file; check the path.")
    if p.is_dir():
        raise LoadError(f"{p} is a directory; pass a file ({', '.join(SUPPORTED_EXTENSIONS)}).")
    if key is not None and ext not in _KEYED:
        raise LoadError(
            f"{p}: a key ({key!r}) was given but {ext} files hold a single array; drop the key "
            f"(keys apply to {', '.join(_KEYED)})."
        )
    if ext == ".npy":
        arr = _load_npy(p, allow_pickle)
    elif ext == ".npz":
        arr = _load_npz(p, key, allow_pickle)
    elif ext in (".pt", ".pth"):
        arr = _load_torch(p, key, allow_pickle)
    elif ext == ".safetensors":
        arr = _load_safetensors(p, key)
    else:
        arr = _load_text(p, ext)
    if arr.dtype == object:
        raise LoadError(
            f"{p}: the array holds Python objects (dtype=object), not numbers; convert it to a "
            "numeric array, e.g. np.asarray(X, dtype=np.float32), and save it again."
        )
    if arr.dtype.kind not in "biuf":
        raise LoadError(f"{p}: the array has dtype {arr.dtype}, which is not numeric; save a numeric (N, D) array.")
    return arr


def load_arrays(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Every array of a file by name, each read as :func:`load_points` reads it: the arrays of an
    ``.npz``, the tensors of a ``.pt``/``.pth`` dict or of a ``.safetensors`` file. A file holding a
    single array (``.npy``, text, a ``.pt`` tensor) gives ``{"": array}``. Nothing is unpickled
    unless ``allow_pickle``; unreadable files raise :class:`LoadError` saying why."""
    p = Path(path)
    ext = p.suffix.lower()
    names: list[str] = []
    if ext in _KEYED and p.is_file():
        try:
            if ext == ".npz":
                with np.load(p, allow_pickle=allow_pickle) as z:
                    names = list(z.files)
            elif ext == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(p), framework="pt", device="cpu") as f:
                    names = list(f.keys())
            else:
                import torch

                obj = torch.load(p, map_location="cpu", weights_only=not allow_pickle)
                if isinstance(obj, dict):
                    names = [str(k) for k, v in obj.items() if isinstance(v, (torch.Tensor, np.ndarray))]
        except Exception:  # noqa: BLE001 - load_points below says what is wrong with the file
            names = []
    if not names:
        return {"": load_points(p, allow_pickle=allow_pickle)}
    return {k: load_points(p, key=k, allow_pickle=allow_pickle) for k in names}


def load_model(spec: str, weights: str | os.PathLike | None = None):
    """Build a model from your code and load its weights from a file without executing it.

    ``spec`` is ``"package.module:factory"`` or ``"path/to/file.py:factory"``: ``factory()``
    (a class or a function, called with no arguments) returns the ``nn.Module``. Importing
    your module runs your code, as running your training script would; the *weights* file is
    read without executing anything: ``.safetensors``, or ``.pt``/``.pth`` holding a state
    dict, loaded with ``torch.load(weights_only=True)``. Keys must match the model's
    ``state_dict()`` exactly (the error lists missing and unexpected keys).
    """
    import importlib
    import importlib.util

    import torch

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise LoadError(f"model spec {spec!r} must look like 'package.module:factory' or 'file.py:factory'.")
    mod_name, attr = spec.split(":")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; check the path in the model spec {spec!r}.")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise LoadError(f"cannot import {mod_name!r} from the model spec {spec!r} ({exc}); "
                            "install the package or pass 'path/to/file.py:factory'.") from None
    if not hasattr(module, attr):
        raise LoadError(f"{mod_name} has no attribute {attr!r}; name the class or function that builds the model.")
    model = getattr(module, attr)()
    if not isinstance(model, torch.nn.Module):
        raise LoadError(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module.")
    if weights is None:
        return model
    p = Path(weights)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such weights file; check the path.")
    ext = p.suffix.lower()
    if ext == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    elif ext in (".pt", ".pth"):
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise _pickle_refused(p, "the weights file holds Python objects other than tensors and it") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]  # a Lightning-style checkpoint
    else:
        raise LoadError(f"{p}: weights must be .safetensors, .pt or .pth (a state dict), got {ext or '(none)'!r}.")
    if not isinstance(state, dict):
        raise LoadError(f"{p}: holds a {type(state).__name__}, not a state dict; save model.state_dict().")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise LoadError(f"{p} does not match the model built by {spec}: missing keys "
                        f"{list(result.missing_keys)[:5]}, unexpected keys {list(result.unexpected_keys)[:5]}; "
                        "save the state_dict of the same architecture.")
    return model


# --------------------------------------------------------------------------- helpers

def _pickle_refused(p: Path, what: str) -> LoadError:
    return LoadError(
        f"{p}: {what} is pickled and loading pickles can execute arbitrary code, so it is refused; "
        "re-save it as plain numbers (np.save of a numeric array, torch.save of a tensor, or "
        "safetensors), or, only if you trust the file, pass allow_pickle=True "
        "(CLI: --allow-pickle)."
    )


def _choose(p: Path, keys: list[str], key: str | None, kind: str) -> str:
    """Pick the key to read: the given one, or the only one; else explain."""
    if not keys:
        raise LoadError(f"{p}: the file holds no arrays; save the points into it first.")
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise LoadError(
            f"{p}: the file holds {len(keys)} {kind}: {', '.join(repr(k) for k in keys)}; "
            "choose one with key=... (CLI: --key NAME)."
        )
    if key not in keys:
        raise LoadError(
            f"{p}: no {kind[:-1] if kind.endswith('s') else kind} named {key!r}; the file holds "
            f"{', '.join(repr(k) for k in keys)}."
        )
    return key


def _load_npy(p: Path, allow_pickle: bool) -> np.ndarray:
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and not allow_pickle:
        # np.load would treat anything without the NumPy header as a pickle
        raise LoadError(
            f"{p}: not a .npy file (it lacks the NumPy header); save the points with np.save. If it "
            "is a pickle you trust, pass allow_pickle=True (CLI: --allow-pickle); loading pickles "
            "can execute arbitrary code."
        )
    try:
        arr = np.load(p, allow_pickle=allow_pickle)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _pickle_refused(p, "the array (dtype=object)") from None
        raise LoadError(f"{p}: not a readable .npy file ({exc}); save it with np.save.") from None
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise LoadError(f"{p}: not a readable .npy file ({exc}); save it with np.save.") from None
    if not isinstance(arr, np.ndarray):  # allow_pickle=True and a pickled non-array
        arr = np.asarray(arr)
    return arr


def _load_npz(p: Path, key: str | None, allow_pickle: bool) -> np.ndarray:
    try:
        z = np.load(p, allow_pickle=allow_pickle)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{p}: not a readable .npz file ({exc}); save it with np.savez.") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise LoadError(f"{p}: has the .npz extension but holds a single array; rename it to .npy.")
    with z:
        name = _choose(p, list(z.files), key, "arrays")
        try:
            return np.asarray(z[name])
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise _pickle_refused(p, f"array {name!r} (dtype=object)") from None
            raise LoadError(f"{p}: array {name!r} could not be read ({exc}).") from None


def _tensor_to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype.is_floating_point and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.to(torch.float32)  # bfloat16 / float8: NumPy has no such dtype
    return t.numpy()


def _load_torch(p: Path, key: str | None, allow_pickle: bool) -> np.ndarray:
    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not allow_pickle and "weights only" in str(exc).lower():
            raise _pickle_refused(p, "the file holds Python objects other than tensors and it") from None
        raise LoadError(f"{p}: not a readable PyTorch file ({_first_line(exc)}); save it with torch.save(tensor, path).") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise LoadError(f"{p}: not a readable PyTorch file ({_first_line(exc)}); save it with torch.save(tensor, path).") from None
    if isinstance(obj, torch.Tensor):
        if key is not None:
            raise LoadError(f"{p}: the file holds a single tensor, not a dict; drop the key {key!r}.")
        return _tensor_to_numpy(obj)
    if isinstance(obj, np.ndarray):
        if key is not None:
            raise LoadError(f"{p}: the file holds a single array, not a dict; drop the key {key!r}.")
        return obj
    if isinstance(obj, dict):
        arrays = [str(k) for k, v in obj.items() if isinstance(v, (torch.Tensor, np.ndarray))]
        if key is not None and key in obj and key not in arrays:
            raise LoadError(
                f"{p}: entry {key!r} is a {type(obj[key]).__name__}, not a tensor; the tensors are "
                f"{', '.join(repr(k) for k in arrays) or '(none)'}."
            )
        name = _choose(p, arrays, key, "tensors")
        value = obj[name] if name in obj else next(v for k, v in obj.items() if str(k) == name)
        return value if isinstance(value, np.ndarray) else _tensor_to_numpy(value)
    raise LoadError(
        f"{p}: holds a {type(obj).__name__}, not a tensor or a dict of tensors; save the points "
        "with torch.save(tensor, path) or torch.save({'name': tensor}, path)."
    )


def _load_safetensors(p: Path, key: str | None) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            name = _choose(p, list(f.keys()), key, "tensors")
            return _tensor_to_numpy(f.get_tensor(name))
    except SafetensorError as exc:
        raise LoadError(f"{p}: not a readable safetensors file ({exc}); save it with safetensors.torch.save_file.") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _load_text(p: Path, ext: str) -> np.ndarray:
    try:
        with open(p, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError:
        raise LoadError(f"{p}: is not a UTF-8 text file; save the points as numeric text or as .npy.") from None
    content = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise LoadError(f"{p}: the file holds no data rows; write one point per line.")
    first = content[0]
    delimiter = _TEXT_DELIMITERS.get(ext)
    if delimiter is None:  # .txt: the second line (the first line might be a header) decides
        probe = content[1] if len(content) > 1 else first
        delimiter = "," if "," in probe else ("\t" if "\t" in probe else None)

    def split(line: str) -> list[str]:
        parts = line.split(delimiter) if delimiter is not None else line.split()
        return [t.strip() for t in parts]

    skip = 0
    if not all(_is_number(t) for t in split(first)):
        skip = 1  # one header line
    rows = content[skip:]
    if not rows:
        raise LoadError(f"{p}: the file holds only a header line and no data rows.")
    try:
        return np.loadtxt(rows, delimiter=delimiter, ndmin=2, dtype=np.float64, comments=None)
    except ValueError as exc:
        msg = _first_line(exc)
        raise LoadError(
            f"{p}: could not read the numbers ({msg}); every line after at most one header line "
            "must hold the same number of numeric values."
        ) from None
