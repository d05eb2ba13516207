"""Image transformations with a continuous parameter, differentiable in that parameter.

The continuous transformations (:func:`translate`, :func:`rotate`, :func:`scale`) are the
one-parameter groups whose Lie derivatives Gruver, Finzi, Goldblum & Wilson (2023, "The Lie
Derivative for Measuring Learned Equivariance", ICLR) measure. Each warps a ``(B, C, H, W)``
batch by resampling it on a transformed grid, and every step is an ordinary differentiable torch
operation, so ``torch.func.jvp`` (forward-mode autodiff) in the parameter ``t`` works.

Why not ``F.affine_grid`` + ``F.grid_sample``
---------------------------------------------
The resampling follows ``F.grid_sample``'s semantics with ``align_corners=False`` (tested equal
to it for bilinear ``"zeros"`` and ``"border"`` padding), but is written with ``gather`` because

* ``grid_sampler_2d`` has no forward-mode AD in PyTorch (``torch.func.jvp`` through it raises
  "Trying to use forward AD with grid_sampler_2d that does not support it");
* ``F.affine_grid`` computes the grid in normalized coordinates, and rounding puts some sampling
  points of the identity map a hair below a pixel centre (float32, ``align_corners=True``,
  unnormalized as ``((g + 1) / 2) * (W - 1)`` the way Gruver et al.'s code does: 8,064 of the
  50,176 points of a 224 x 224 grid). The derivative of bilinear interpolation at a pixel centre
  is one-sided, so those pixels silently get a backward instead of a forward difference. Here
  the grid is built in pixel coordinates, which are exact integers at ``t = 0``;
* circular padding (needed for translations to commute exactly with circular convolutions) is
  not one of ``grid_sample``'s padding modes.

Conventions
-----------
* Pixel ``(i, j)`` (row ``i``, column ``j``) is the point ``(j, i)``; pixel centres are the
  integers, and the image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (``align_corners=False``:
  the image is ``W`` pixels wide edge to edge, so its circular period is exactly ``W``).
  Rotation and scaling act about the image centre ``((W - 1) / 2, (H - 1) / 2)`` in pixel units,
  so they are isotropic also for non-square images.
* ``T_t x (p) = x(phi_t^{-1}(p))``: the content moves by ``phi_t``. ``translate(x, t, "x")``
  moves it ``t`` pixels to the right (``"y"``: down); ``rotate(x, t)`` turns it ``t`` radians
  counter-clockwise as displayed (rows downward, as ``imshow`` shows them), so
  ``rotate(x, pi / 2)`` equals ``rot90(x, 1)`` (``torch.rot90`` over the last two axes);
  ``scale(x, t)`` magnifies it by ``exp(t)``.
* ``interpolation="bilinear"`` is ``grid_sample``'s bilinear rule. Its derivative in ``t`` does
  not exist at ``t = 0`` (every sample sits on a kink at a pixel centre); autodiff returns the
  forward-difference branch (``x[j + 1] - x[j]`` along each axis). ``"bicubic"`` is Keys' cubic
  convolution with ``a = -1/2`` (Catmull-Rom; note ``grid_sample``'s bicubic uses ``a = -3/4``):
  continuously differentiable, so the derivative at ``t = 0`` exists, is the same from both sides
  and is the central difference ``(x[j + 1] - x[j - 1]) / 2``.
* ``padding``: ``"zeros"`` (outside is 0), ``"border"`` (nearest edge pixel) or ``"circular"``
  (the image is periodic: the integer neighbour indices are taken modulo ``W`` and ``H``, which
  makes a translation by ``t`` pixels a circular convolution with the interpolation kernel, and
  an integer translation exactly ``torch.roll``).

The discrete transformations the atlas uses (:func:`shift`, :func:`flip`, :func:`rot90`) are
exact index permutations (or zero-filled shifts).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "translate",
    "rotate",
    "scale",
    "shift",
    "flip",
    "rot90",
    "IMAGE_TRANSFORMS",
    "DEFAULT_PADDING",
    "INTERPOLATIONS",
    "PADDINGS",
]

#: Interpolation rules of the continuous transformations.
INTERPOLATIONS = ("bilinear", "bicubic")
#: Padding rules of the continuous transformations.
PADDINGS = ("zeros", "border", "circular")
_AXES = {"x": -1, "y": -2}


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------


def _check_image(x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of shape (B, C, H, W), got {type(x).__name__}.")
    if x.ndim != 4:
        hint = " (add the channel axis with x.unsqueeze(1))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}{hint}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; image transformations need floating-point images "
                        "(convert with x.float()).")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{name} has an empty spatial axis (shape {tuple(x.shape)}).")
    return x


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def _axis(axis: Any) -> int:
    if axis not in _AXES:
        raise ValueError(f"axis must be 'x' (columns, left-right) or 'y' (rows, up-down), got {axis!r}.")
    return _AXES[axis]


def _param(t: Any, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """``t`` as a tensor of x's dtype shaped to broadcast over (B, H, W): a scalar or one per example."""
    if isinstance(t, torch.Tensor):
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real number or a real tensor, got dtype {t.dtype}.")
        tt = t.to(device=x.device, dtype=x.dtype)
    else:
        try:
            value = float(t)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a tensor, got {t!r}.") from None
        tt = torch.tensor(value, device=x.device, dtype=x.dtype)
    if tt.ndim == 1 and tt.shape[0] == x.shape[0]:
        tt = tt.reshape(-1, 1, 1)
    elif tt.numel() != 1 or tt.ndim > 1:
        raise ValueError(f"{name} must be a scalar or have one value per example (shape ({x.shape[0]},)), "
                         f"got shape {tuple(tt.shape)}.")
    else:
        tt = tt.reshape(())
    return tt


# --------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------


def _weights(frac: torch.Tensor, interpolation: str) -> tuple[tuple[int, ...], list[torch.Tensor]]:
    """Neighbour offsets and their interpolation weights for fractional positions ``frac`` in [0, 1)."""
    if interpolation == "bilinear":
        return (0, 1), [1 - frac, frac]
    s, s2 = frac, frac * frac
    s3 = s2 * frac
    # Keys (1981) cubic convolution, a = -1/2 (Catmull-Rom)
    return (-1, 0, 1, 2), [
        (-s3 + 2 * s2 - s) / 2,
        (3 * s3 - 5 * s2 + 2) / 2,
        (-3 * s3 + 4 * s2 + s) / 2,
        (s3 - s2) / 2,
    ]


def _index(i: torch.Tensor, n: int, padding: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Valid indices for neighbour indices ``i`` on an axis of length ``n``, and the in-range mask
    for zero padding."""
    if padding == "circular":
        return torch.remainder(i, n), None
    inside = (i >= 0) & (i < n) if padding == "zeros" else None
    return i.clamp(0, n - 1), inside


def _resample(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, interpolation: str, padding: str) -> torch.Tensor:
    """Sample ``x`` (B, C, H, W) at column coordinates ``u`` and row coordinates ``v`` (B, H', W'),
    in pixel units (pixel centres at the integers)."""
    B, C, H, W = x.shape
    u = u.expand(B, *u.shape[-2:]) if u.shape[0] != B else u
    v = v.expand(B, *v.shape[-2:]) if v.shape[0] != B else v
    Ho, Wo = u.shape[-2:]
    u0, v0 = torch.floor(u), torch.floor(v)  # zero derivative; the weights carry the dependence on t
    offs, wu = _weights(u - u0, interpolation)
    _, wv = _weights(v - v0, interpolation)
    iu, iv = u0.long(), v0.long()
    flat = x.reshape(B, C, H * W)
    out = None
    for dy, wy in zip(offs, wv):
        rows, rmask = _index(iv + dy, H, padding)
        for dx, wx in zip(offs, wu):
            cols, cmask = _index(iu + dx, W, padding)
            idx = (rows * W + cols).reshape(B, 1, Ho * Wo).expand(B, C, Ho * Wo)
            vals = flat.gather(2, idx).reshape(B, C, Ho, Wo)
            w = wy * wx
            if rmask is not None:
                w = w * (rmask & cmask).to(w.dtype)
            term = vals * w.unsqueeze(1)
            out = term if out is None else out + term
    return out


def _warp(x: torch.Tensor, A: tuple, b: tuple, interpolation: str, padding: str) -> torch.Tensor:
    """Resample ``x`` at ``q = A p + b + c`` for every output pixel ``p`` (centred pixel
    coordinates ``(column, row)``; ``c`` the image centre). ``A`` is ``((a00, a01), (a10, a11))``
    and ``b`` is ``(b0, b1)``, each entry a number or a tensor broadcasting over (B, H, W)."""
    _check_choice(interpolation, "interpolation", INTERPOLATIONS)
    _check_choice(padding, "padding", PADDINGS)
    _, _, H, W = x.shape
    cx, cy = (W - 1) / 2, (H - 1) / 2
    pc = (torch.arange(W, device=x.device, dtype=x.dtype) - cx).reshape(1, 1, W)
    pr = (torch.arange(H, device=x.device, dtype=x.dtype) - cy).reshape(1, H, 1)
    (a00, a01), (a10, a11) = A
    u = a00 * pc + a01 * pr + b[0] + cx
    v = a10 * pc + a11 * pr + b[1] + cy
    u = u.expand(-1, H, W) if u.ndim == 3 else u.reshape(1, H, W)
    v = v.expand(-1, H, W) if v.ndim == 3 else v.reshape(1, H, W)
    return _resample(x, u, v, interpolation, padding)


# --------------------------------------------------------------------------------------
# continuous transformations
# --------------------------------------------------------------------------------------


def translate(x: torch.Tensor, t: Any, axis: str = "x", *, padding: str = "circular",
              interpolation: str = "bilinear") -> torch.Tensor:
    """Translate images by ``t`` pixels (fractions allowed): ``axis="x"`` moves the content to the
    right, ``"y"`` down; ``(T_t x)(j) = x(j - t)``.

    One of the one-parameter groups whose Lie derivative Gruver et al. (2023, ICLR, "The Lie
    Derivative for Measuring Learned Equivariance") measure. ``t`` is a number, a 0-d tensor or
    one value per example (shape ``(B,)``); gradients and ``torch.func.jvp`` in ``t`` work.
    ``padding="circular"`` (default) treats the image as periodic, so an integer ``t`` is exactly
    ``torch.roll`` and any ``t`` commutes exactly with a circular convolution (``nn.Conv2d`` with
    ``padding_mode="circular"``, stride 1). See the module docstring for interpolation and padding.
    """
    x = _check_image(x)
    d = _axis(axis)
    tt = _param(t, x)
    if d == -1:
        return _warp(x, ((1.0, 0.0), (0.0, 1.0)), (-tt, 0.0), interpolation, padding)
    return _warp(x, ((1.0, 0.0), (0.0, 1.0)), (0.0, -tt), interpolation, padding)


def rotate(x: torch.Tensor, t: Any, *, padding: str = "zeros", interpolation: str = "bilinear") -> torch.Tensor:
    """Rotate images by ``t`` radians counter-clockwise (as displayed, rows downward) about the
    image centre, in pixel units (isotropic for non-square images too).

    ``rotate(x, pi / 2)`` equals ``rot90(x, 1)`` for square images. Differentiable in ``t``
    (forward and reverse mode), as needed for the rotation Lie derivative of Gruver et al.
    (2023, ICLR). Default padding ``"zeros"``: what rotates out of the frame is lost and the
    corners fill with 0.
    """
    x = _check_image(x)
    tt = _param(t, x)
    c, s = torch.cos(tt), torch.sin(tt)
    # source = R(-t) p in (column, row-downward) coordinates
    return _warp(x, ((c, -s), (s, c)), (0.0, 0.0), interpolation, padding)


def scale(x: torch.Tensor, t: Any, *, padding: str = "zeros", interpolation: str = "bilinear") -> torch.Tensor:
    """Magnify images by the factor ``exp(t)`` about the image centre (``t < 0`` shrinks them).

    The exponential parameterization makes ``t`` the additive parameter of the scaling group
    (``scale(scale(x, s), t)`` approximates ``scale(x, s + t)``), whose generator is the
    Lie-derivative direction of Gruver et al. (2023, ICLR). Default padding ``"zeros"``.
    """
    x = _check_image(x)
    tt = _param(t, x)
    inv = torch.exp(-tt)
    return _warp(x, ((inv, 0.0), (0.0, inv)), (0.0, 0.0), interpolation, padding)


#: Continuous transformations by name, each ``fn(x, t, **options)``; the names
#: :func:`shapelens.symmetry.measure.lie_derivative` accepts.
IMAGE_TRANSFORMS: dict[str, Callable[..., torch.Tensor]] = {
    "translate_x": partial(translate, axis="x"),
    "translate_y": partial(translate, axis="y"),
    "rotate": rotate,
    "scale": scale,
}

#: The padding each named transformation uses unless told otherwise.
DEFAULT_PADDING = {"translate_x": "circular", "translate_y": "circular", "rotate": "zeros", "scale": "zeros"}


# --------------------------------------------------------------------------------------
# discrete transformations
# --------------------------------------------------------------------------------------


def _check_grid(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor whose last two axes are (H, W), got {type(x).__name__}.")
    if x.ndim < 2:
        raise ValueError(f"x must have at least two axes (..., H, W), got shape {tuple(x.shape)}.")
    return x


def _int(k: Any, name: str) -> int:
    if isinstance(k, np.integer):
        return int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an integer, got {k!r} ({type(k).__name__}); use translate() for "
                        "fractional shifts.")
    return k


def shift(x: torch.Tensor, k: int, axis: str = "x", *, padding: str = "circular") -> torch.Tensor:
    """Shift images by an integer ``k`` pixels (``axis="x"``: right, ``"y"``: down; negative ``k``
    the other way). ``padding="circular"`` wraps around (``torch.roll``, the translation group of
    a periodic image, under which circular convolutions are exactly equivariant); ``"zeros"``
    fills the uncovered strip with 0. Equals ``translate(x, k, axis, padding=...)`` exactly."""
    x = _check_grid(x)
    d = _axis(axis)
    k = _int(k, "k")
    if padding not in ("circular", "zeros"):
        raise ValueError(f"padding must be 'circular' or 'zeros' for shift, got {padding!r}.")
    y = torch.roll(x, k, dims=d)
    if padding == "zeros" and k != 0:
        n = x.shape[d]
        y = y.clone()
        idx = torch.arange(n, device=x.device)
        dead = (idx < k) if k > 0 else (idx >= n + k)
        shape = [1] * x.ndim
        shape[d] = n
        y = y.masked_fill(dead.reshape(shape), 0)
    return y


def flip(x: torch.Tensor, axis: str = "x") -> torch.Tensor:
    """Mirror images: ``axis="x"`` reverses the columns (left-right), ``"y"`` the rows (up-down)."""
    x = _check_grid(x)
    return torch.flip(x, dims=(_axis(axis),))


def rot90(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Rotate images by ``k`` quarter turns counter-clockwise (as displayed): ``torch.rot90`` over
    the last two axes (H, W), the generator of the group C_4 that p4 convolutions (Cohen & Welling
    2016) are equivariant to. Non-square images come back with H and W swapped for odd ``k``."""
    x = _check_grid(x)
    return torch.rot90(x, _int(k, "k") % 4, dims=(-2, -1))
