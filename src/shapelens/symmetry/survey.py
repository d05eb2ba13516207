"""How far a trained model is from the symmetries its input suggests: one call that measures the
output change under the transformations that fit the input (shifts, flips, quarter turns and
small rotations for images; permutations for sets) and the Lie derivatives along continuous
transformations (Gruver, Finzi, Goldblum & Wilson 2023, "The Lie Derivative for Measuring
Learned Equivariance"). What the atlas section and ``shapelens symmetry`` show."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable

import numpy as np
import torch

from .._checks import check_int
from .._results import Result
from ..probe import eval_mode
from .groups import symmetric
from .measure import _as_input, equivariance_error, lie_derivative
from .transforms import flip, rot90, rotate, shift

__all__ = ["SymmetrySurvey", "symmetry_survey"]


@dataclasses.dataclass(frozen=True)
class SymmetrySurvey(Result):
    """Per transformation: the mean relative output change ``||f(T x) - f(x)|| / ||f(x)||``
    (per-example L2 over the output, averaged over examples), and for classifiers the fraction
    of examples whose predicted class is unchanged; per continuous transformation, the mean
    relative Lie derivative ``||d/dt f(T_t x)|_{t=0}|| / ||f(x)||`` (per unit of the transform's
    parameter: pixels, radians, log-scale)."""

    input_kind: str
    n_examples: int
    transforms: tuple[str, ...]
    relative_change: np.ndarray
    agreement: np.ndarray  # NaN where the output is not class scores
    lie_transforms: tuple[str, ...]
    lie_relative: np.ndarray
    units: tuple[str, ...]

    def rows(self) -> list[tuple]:
        return [(t, float(c), float(a)) for t, c, a in zip(self.transforms, self.relative_change, self.agreement)]

    def plot(self, ax=None, figsize=(6.5, 3.8)):
        """Bar chart of the relative output change per transformation (with the prediction
        agreement written on each bar for classifiers)."""
        ax = self._axes(ax, figsize)
        y = np.arange(len(self.transforms))
        ax.barh(y, self.relative_change, color="tab:blue")
        ax.set_yticks(y, self.transforms, fontsize=8)
        ax.invert_yaxis()
        for i, a in enumerate(self.agreement):
            if np.isfinite(a):
                ax.text(self.relative_change[i], i, f" {100 * a:.0f}% same class", va="center", fontsize=7)
        ax.set_xlabel("relative output change ||f(Tx) - f(x)|| / ||f(x)||")
        ax.set_xlim(0, max(1e-12, float(np.max(self.relative_change))) * 1.35)
        return ax


def _image_transforms(max_rotation_deg: float) -> list[tuple[str, Callable]]:
    r = math.radians(max_rotation_deg)
    return [
        ("shift right 1 px", lambda x: shift(x, 1, "x", padding="zeros")),
        ("shift down 1 px", lambda x: shift(x, 1, "y", padding="zeros")),
        ("shift right 2 px", lambda x: shift(x, 2, "x", padding="zeros")),
        ("flip left-right", lambda x: flip(x, "x")),
        ("flip up-down", lambda x: flip(x, "y")),
        ("rotate 90 deg", lambda x: rot90(x, 1)),
        ("rotate 180 deg", lambda x: rot90(x, 2)),
        (f"rotate +{max_rotation_deg:g} deg", lambda x: rotate(x, r)),
        (f"rotate -{max_rotation_deg:g} deg", lambda x: rotate(x, -r)),
    ]


_LIE = (("translate_x", "per pixel"), ("translate_y", "per pixel"), ("rotate", "per radian"), ("scale", "per log-scale"))


def symmetry_survey(model: Callable, x: Any, *, input_kind: str = "auto", image_shape: tuple | None = None,
                    samples: int = 8, max_rotation_deg: float = 10.0, seed: int = 0,
                    batch_size: int = 256) -> SymmetrySurvey:
    """Measure a model against the symmetries that fit its input.

    ``input_kind="image"``: ``x`` is ``(N, C, H, W)``, or ``(N, C*H*W)`` flattened with
    ``image_shape=(C, H, W)`` (then the model is fed flattened images). Transformations: shifts by
    1 and 2 pixels (zero fill), flips, quarter turns, rotations by ``+-max_rotation_deg``
    (bilinear), and the Lie derivatives along x/y translation, rotation and scaling
    (:func:`lie_derivative`, forward-mode AD, bicubic warp). ``input_kind="set"``: ``x`` is
    ``(N, n, d)``, a set of ``n`` elements; ``samples`` random permutations of the ``n`` axis
    (:func:`equivariance_error` with S_n; the output is compared permuted if it has the set axis,
    else unpermuted: equivariance or invariance). ``"auto"``: image for 4-D inputs or when
    ``image_shape`` is given, set for 3-D inputs.

    The numbers are relative changes of the whole output (logits for a classifier), so 0 means
    exactly invariant; for classifiers the fraction of unchanged predictions is given as well.
    """
    samples = check_int(samples, "samples", 1)
    with _ctx(model):
        return _survey(model, x, input_kind, image_shape, samples, max_rotation_deg, seed, batch_size)


def _survey(model, x, input_kind, image_shape, samples, max_rotation_deg, seed, batch_size) -> SymmetrySurvey:
    x = _as_input(x, model)
    if input_kind == "auto":
        input_kind = "image" if (x.ndim == 4 or image_shape is not None) else ("set" if x.ndim == 3 else "")
        if not input_kind:
            raise ValueError(f"cannot tell what symmetries fit inputs of shape {tuple(x.shape)}: pass "
                             "input_kind='image' with image_shape=(C, H, W) for flattened images, or give "
                             "(N, C, H, W) images or (N, n, d) sets.")
    if input_kind not in ("image", "set"):
        raise ValueError(f"input_kind must be 'auto', 'image' or 'set', got {input_kind!r}.")
    if input_kind == "image":
        if x.ndim == 2:
            if image_shape is None:
                raise ValueError(f"inputs have shape {tuple(x.shape)} (flattened): pass image_shape=(C, H, W) so "
                                 "the images can be shifted and rotated.")
            shape = tuple(int(s) for s in image_shape)
            if len(shape) != 3 or math.prod(shape) != x.shape[1]:
                raise ValueError(f"image_shape {image_shape} does not hold {x.shape[1]} features per example; give "
                                 "(C, H, W) with C*H*W equal to the feature count.")
            imgs = x.reshape(len(x), *shape)

            def flat(z):
                return model(z.reshape(len(z), -1))

            return _image_survey(flat, imgs, max_rotation_deg, batch_size)
        if x.ndim != 4:
            raise ValueError(f"image inputs must be (N, C, H, W) or flattened (N, C*H*W); got shape {tuple(x.shape)}.")
        return _image_survey(model, x, max_rotation_deg, batch_size)
    if x.ndim != 3:
        raise ValueError(f"set inputs must be (N, n, d); got shape {tuple(x.shape)}.")
    return _set_survey(model, x, samples, seed, batch_size)


@torch.no_grad()
def _outputs(f: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = [f(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in out])


def _image_survey(f: Callable, imgs: torch.Tensor, max_rotation_deg: float, batch_size: int) -> SymmetrySurvey:
    with _ctx(f):
        y0 = _outputs(f, imgs, batch_size)
        norm0 = y0.flatten(1).norm(dim=1)
        scores = y0.ndim == 2 and y0.shape[1] > 1
        names, change, agree = [], [], []
        for name, T in _image_transforms(max_rotation_deg):
            y = _outputs(f, T(imgs), batch_size)
            rel = (y - y0).flatten(1).norm(dim=1) / norm0.clamp_min(1e-30)
            names.append(name)
            change.append(float(rel.mean()))
            agree.append(float((y.argmax(1) == y0.argmax(1)).float().mean()) if scores else float("nan"))
    lie = []
    for name, _ in _LIE:
        ld = lie_derivative(f, name, imgs, batch_size=min(batch_size, 64))
        lie.append(float(np.mean(ld.values / norm0.double().clamp_min(1e-30).numpy())))
    return SymmetrySurvey("image", len(imgs), tuple(names), np.array(change), np.array(agree),
                          tuple(n for n, _ in _LIE), np.array(lie), tuple(u for _, u in _LIE))


def _ctx(f):
    return eval_mode(f) if isinstance(f, torch.nn.Module) else contextlib.nullcontext()


def _set_survey(f: Callable, x: torch.Tensor, samples: int, seed: int, batch_size: int) -> SymmetrySurvey:
    n = x.shape[1]
    G = symmetric(n)

    def act(g, z):
        return z[:, list(G.inverse(g))]  # element i moves to position g[i]

    with _ctx(f):
        y0 = _outputs(f, x[:2], batch_size)
    equivariant = y0.ndim >= 2 and y0.shape[1] == n
    err = equivariance_error(f, G, act, act if equivariant else None, x, samples=samples, seed=seed,
                             batch_size=batch_size)
    name = f"permute the {n} set elements" + (" (output permuted too)" if equivariant else "")
    agree = float("nan")
    if not equivariant and y0.ndim == 2 and y0.shape[1] > 1:
        with _ctx(f):
            base = _outputs(f, x, batch_size).argmax(1)
            g = G.sample(1, seed=seed)[0]
            agree = float((_outputs(f, act(g, x), batch_size).argmax(1) == base).float().mean())
    return SymmetrySurvey("set", len(x), (name,), np.array([err.mean]), np.array([agree]), (), np.zeros(0), ())
