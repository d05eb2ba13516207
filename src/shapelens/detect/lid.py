"""Adversarial-example detection by local intrinsic dimensionality (LID).

Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey (2018),
"Characterizing adversarial subspaces using local intrinsic dimensionality", ICLR 2018.

Idea: an adversarial example sits off the data manifold, so the distances from it to its
nearest clean neighbours grow more uniformly than those of a clean example: its local
intrinsic dimension, measured in a network's activations, is larger. Ma et al. turn this
into a detector:

1. for every layer (the input included), the LID of each example is estimated with the
   maximum-likelihood estimator ``LID = -(1/k sum_i log(r_i / r_k))^-1`` over its ``k = 20``
   nearest neighbours within a random mini-batch of ``100`` examples;
2. the per-layer LIDs form a feature vector; clean and *noisy* examples (Gaussian noise of
   the same L2 size as the adversarial perturbation, so that the detector cannot simply
   detect "perturbed") are labelled 0, adversarial examples 1;
3. the features are standardised and a logistic regression (cross-validated ``C``) is
   trained on them; its probability is the detection score, evaluated by ROC AUC.

Protocols for the neighbour set (the *reference*)
-------------------------------------------------
``"aligned"`` -- Ma et al.'s protocol (their ``get_lids_random_batch``): ``clean[i]``,
``adv[i]`` and ``noisy[i]`` are versions of the same image, the data are cut into random
mini-batches with the same indices for the three sets, and in each mini-batch the LID of
every clean, adversarial and noisy example is estimated against the *clean* activations of
that mini-batch. Ma et al.'s code always drops the first neighbour (meant to be the point
itself); we drop exactly the example's own clean counterpart (for a clean query that is the
point itself). Keeping the counterpart would leak the answer: an adversarial example would
find its own clean source, at the size of the perturbation, among its neighbours, which no
deployed detector can rely on. With this exclusion every query has the other
``batch_size - 1`` clean examples of its batch as neighbours; for clean queries this is
exactly ``shapelens.dimension.local_dimension(acts_batch, k, reference=acts_batch)``.

``"batch"`` -- each mini-batch of the inputs is its own reference (self excluded):
``local_dimension(acts_batch, k, reference=acts_batch)``.

``"reference"`` -- every input is compared with a fixed batch of clean examples kept at
:meth:`LIDDetector.fit` (``batch_size`` of them); use it to score new inputs one by one,
without aligned clean counterparts (a point identical to a reference example skips it).

Neighbours at distance exactly zero (duplicates) are skipped in every protocol, the rule of
:func:`shapelens.dimension.local_dimension`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_int, show_progress, warn
from .._results import Result
from ..dimension.local import lid_from_distances
from ..neighbors import pairwise_distances
from ..probe import capture

__all__ = ["LIDDetector", "DetectionResult", "lid_features"]

_INPUT = "input"
_SKIP_IN_ALL = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten)
_CHUNK_ROWS = 500  # activations are captured for at most about this many examples at once


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------


def _as_inputs(x: Any, name: str) -> torch.Tensor:
    """Model inputs ``(N, ...)`` as a float CPU tensor (dtype kept if already floating)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be a numeric array or tensor of model inputs, got dtype {arr.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of model inputs with the examples on axis 0, shape (N, ...), "
            f"got shape {tuple(t.shape)}; for one example use x[None]."
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one example.")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN or infinite values; pass finite inputs.")
    return t.cpu()


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}; they must be aligned "
            f"(row i of {name_b} is the perturbed version of row i of {name_a})."
        )


def _batches(n: int, batch_size: int, k: int, seed: int) -> list[np.ndarray]:
    """Random mini-batches of the indices 0..n-1, each with at least ``min(n, batch_size)`` rows."""
    if n < k + 1:
        raise ValueError(
            f"LID with k={k} needs at least k+1={k + 1} examples (each is compared with the others of its "
            f"mini-batch), got {n}; pass more examples or lower k."
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_batches = max(1, n // batch_size)
    return [np.sort(b) for b in np.array_split(perm, n_batches)]


def _chunks(batches: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Group mini-batches so that each group holds at most about ``_CHUNK_ROWS`` examples."""
    out: list[list[np.ndarray]] = []
    cur: list[np.ndarray] = []
    rows = 0
    for b in batches:
        if cur and rows + len(b) > _CHUNK_ROWS:
            out.append(cur)
            cur, rows = [], 0
        cur.append(b)
        rows += len(b)
    if cur:
        out.append(cur)
    return out


# --------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------


def _module_layers(model: nn.Module, layers: Any) -> tuple[bool, Any]:
    """Split a ``layers`` spec into (include the input?, spec for probe.capture)."""
    if isinstance(layers, str) and layers in ("auto", "all"):
        if layers == "auto":
            return True, "auto"
        names = [
            n for n, m in model.named_modules()
            if n and not any(True for _ in m.children()) and not isinstance(m, _SKIP_IN_ALL)
        ]
        if not names:
            raise ValueError(f"layers='all' found no leaf modules in {type(model).__name__}; pass layer names explicitly.")
        return True, names
    # names (and their errors) are probe.capture's business; only the "input" pseudo-layer is ours
    names = [layers] if isinstance(layers, str) else list(layers)
    include_input = _INPUT in names and _INPUT not in dict(model.named_modules())
    rest = [n for n in names if not (n == _INPUT and include_input)]
    if not include_input and not rest:
        raise ValueError("layers is empty; pass 'auto', 'all', 'input' or at least one module name.")
    return include_input, (rest if rest else None)


def _activations(model: nn.Module, x: torch.Tensor, spec: tuple[bool, Any], pool: str, device: Any) -> dict[str, torch.Tensor]:
    include_input, mod_layers = spec
    acts: dict[str, torch.Tensor] = {}
    if include_input:
        acts[_INPUT] = x.reshape(x.shape[0], -1).float()
    if mod_layers is not None:
        got = capture(model, x, mod_layers, pool=pool, batch_size=256, device=device, progress=False)
        for name, a in got.items():
            if a.shape[0] != x.shape[0]:
                raise ValueError(
                    f"layer {name!r} gave {a.shape[0]} points for {x.shape[0]} examples; LID features need one point "
                    "per example: use pool='flatten' or 'mean', not 'none'."
                )
            acts[name] = a
    return acts


# --------------------------------------------------------------------------------------
# LID kernels
# --------------------------------------------------------------------------------------


def _distances(Q: torch.Tensor, R: torch.Tensor, device: Any) -> np.ndarray:
    """Dense float64 distances ``(len(Q), len(R))`` of one mini-batch, exact zeros for
    identical rows.

    Mini-batches are small (``batch_size`` rows) but activations can be wide (a flattened
    conv map has tens of thousands of features), so the dense matrix of
    :func:`shapelens.neighbors.pairwise_distances` is the right tool here, not the chunked
    kNN built for large N. ``cdist`` can leave a tiny non-zero value where two rows are
    identical; such near-zero pairs are re-measured by direct differences so that
    duplicates (and a point itself) come out at exactly 0, as ``knn`` reports them.
    """
    D = pairwise_distances(Q, R, device=device)
    Qd, Rd = Q.double().cpu(), R.double().cpu()
    scale = Qd.pow(2).sum(1)[:, None] + Rd.pow(2).sum(1)[None, :]
    for i, j in torch.nonzero(D * D <= 1e-9 * scale).tolist():
        D[i, j] = torch.linalg.vector_norm(Qd[i] - Rd[j])
    return D.numpy()


def _lid_from_distances(D: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, int]:
    """LID of each row of a distance matrix from its ``k`` smallest admissible distances.

    ``exclude[i]`` (if given) is a column that row ``i`` must not use (itself, or its own
    clean counterpart); columns at distance exactly 0 are skipped as duplicates, the rule of
    :func:`shapelens.dimension.local_dimension`. Returns the LIDs and the number of rows
    that had a duplicate.
    """
    D = D.copy()
    zero = D == 0
    if exclude is not None:
        rows = np.arange(D.shape[0])
        zero[rows, exclude] = False
        D[rows, exclude] = np.inf
    n_dup = int(zero.any(axis=1).sum())
    D[zero] = np.inf
    kk = min(k, D.shape[1])
    d = np.sort(D, axis=1)[:, :kk]
    if kk < k:
        d = np.concatenate([d, np.full((d.shape[0], k - kk), np.inf)], axis=1)
    d[~np.isfinite(d)] = np.nan
    return lid_from_distances(d), n_dup


def _lid_batch(Q: torch.Tensor, R: torch.Tensor | None, k: int, device: Any, protocol: str) -> tuple[np.ndarray, int]:
    """LID of the rows of ``Q`` for one mini-batch under ``protocol`` (see module docstring).

    * ``"aligned"``: neighbours among the rows of ``R`` except ``R[i]`` for ``Q[i]``;
    * ``"batch"``: neighbours among the other rows of ``Q`` (``R`` is ignored);
    * ``"reference"``: neighbours among all rows of ``R``.

    Equal, up to float rounding, to ``local_dimension(Q, k, reference=Q)`` for ``"batch"``
    and to ``local_dimension(Q, k, reference=R)`` for ``"reference"`` (tests assert it).
    """
    if protocol == "batch":
        return _lid_from_distances(_distances(Q, Q, device), k, np.arange(Q.shape[0]))
    if protocol == "aligned":
        # Q may stack several aligned query sets: row i of each is compared without R[i]
        return _lid_from_distances(_distances(Q, R, device), k, np.arange(Q.shape[0]) % R.shape[0])
    return _lid_from_distances(_distances(Q, R, device), k, None)


def _features(
    model: nn.Module,
    queries: Sequence[torch.Tensor],
    reference: torch.Tensor | None,
    *,
    spec: tuple[bool, Any],
    k: int,
    batch_size: int,
    pool: str,
    seed: int,
    device: Any,
    protocol: str,
    progress: bool | None = None,
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """LID features of each query set; one ``(N, n_layers)`` array per query set.

    ``protocol="aligned"``: queries aligned with ``reference`` (same N), shared mini-batches.
    ``protocol="batch"``: each query set's mini-batches are their own reference.
    ``protocol="reference"``: every query compared with the whole (small) ``reference``.
    """
    from tqdm.auto import tqdm

    n = queries[0].shape[0]
    if protocol == "reference":
        batches = [np.arange(n)[s : s + _CHUNK_ROWS] for s in range(0, n, _CHUNK_ROWS)]
        chunks = [[b] for b in batches]
        if reference.shape[0] < k:
            raise ValueError(f"the reference batch has {reference.shape[0]} examples but k={k} needs at least k.")
    else:
        batches = _batches(n, batch_size, k, seed)
        chunks = _chunks(batches)
    outs = [np.zeros((n, 0))] * len(queries)
    names: tuple[str, ...] | None = None
    ref_acts_fixed = None
    if protocol == "reference":
        ref_acts_fixed = _activations(model, reference, spec, pool, device)
    n_dup = 0
    show = show_progress(progress)
    bar = tqdm(total=len(batches), desc="LID features", unit="batch", disable=not show)
    try:
        for chunk in chunks:
            rows = np.concatenate(chunk)
            pos = {int(r): i for i, r in enumerate(rows)}
            q_acts = [_activations(model, q[rows], spec, pool, device) for q in queries]
            if protocol == "aligned":
                same = [qi for qi, q in enumerate(queries) if q is reference]
                r_acts = q_acts[same[0]] if same else _activations(model, reference[rows], spec, pool, device)
            if names is None:
                names = tuple(q_acts[0].keys())
                outs = [np.zeros((n, len(names))) for _ in queries]
            for b in chunk:
                local = np.array([pos[int(r)] for r in b])
                for j, name in enumerate(names):
                    if protocol == "batch":
                        for qi, qa in enumerate(q_acts):
                            lid, d = _lid_batch(qa[name][local], None, k, device, protocol)
                            outs[qi][b, j] = lid
                            n_dup += d
                        continue
                    R = r_acts[name][local] if protocol == "aligned" else ref_acts_fixed[name]
                    # all query sets of this mini-batch against the same reference in one product
                    Q = torch.cat([qa[name][local] for qa in q_acts], dim=0)
                    lid, d = _lid_batch(Q, R, k, device, protocol)
                    n_dup += d
                    for qi in range(len(q_acts)):
                        outs[qi][b, j] = lid[qi * len(b) : (qi + 1) * len(b)]
                bar.update(1)
    finally:
        bar.close()
    if n_dup:
        warn(f"{n_dup} LID estimates had exact duplicates among their neighbours; the first k non-zero neighbours were used.")
    n_inf = sum(int(np.isinf(o).sum()) for o in outs)
    n_zero = sum(int((o == 0).sum()) for o in outs)
    if n_inf:
        warn(f"{n_inf} LID estimates are unbounded (all k neighbours at the same distance); use a larger k.")
    if n_zero:
        warn(f"{n_zero} LID estimates are 0 (fewer than k distinct neighbours: constant activations at that layer).")
    return outs, names or ()


def lid_features(
    model: nn.Module,
    x: Any,
    *,
    reference: Any = None,
    layers: Any = "auto",
    k: int = 20,
    batch_size: int = 100,
    pool: str = "flatten",
    seed: int = 0,
    device: Any = "auto",
    progress: bool | None = None,
) -> np.ndarray:
    """Per-layer LID features of Ma et al. (2018), an ``(N, n_layers)`` float64 array.

    Parameters
    ----------
    model : the network whose activations are measured.
    x : model inputs ``(N, ...)`` (tensor or numpy array).
    reference : ``None`` (default): the "batch" protocol, each random mini-batch of ``x``
        is its own reference, self excluded (``local_dimension(acts, k, reference=acts)``).
        An array aligned with ``x`` (same shape; row ``i`` the clean counterpart of
        ``x[i]``): Ma et al.'s protocol, each mini-batch of ``x`` is compared with the same
        mini-batch of ``reference``, the counterpart excluded (see the module docstring).
    layers : ``"auto"`` = the input plus every Linear/Conv output (``probe.auto_layers``),
        ``"all"`` = the input plus every leaf module except Dropout/Identity/Flatten (Ma et
        al. use every layer), or a list of module names (``"input"`` adds the raw input).
    k, batch_size : neighbours and mini-batch size (Ma et al.: 20 and 100); ``batch_size``
        must exceed ``k``. Mini-batches are random (``seed``); when ``N`` is not a multiple
        of ``batch_size`` the remainder is spread over the batches.
    pool : how conv maps become vectors (``"flatten"`` as in Ma et al., or ``"mean"``).
    device : where the model runs and the neighbours are searched.

    Columns follow the layers: ``"input"`` first (when included), then the modules in
    execution order (the order :func:`shapelens.probe.capture` returns); a fitted
    :class:`LIDDetector` lists them in ``layers_``.
    """
    k = check_int(k, "k", 2)
    batch_size = check_int(batch_size, "batch_size", 2)
    if batch_size <= k:
        raise ValueError(
            f"batch_size={batch_size} must be larger than k={k}: each example's k neighbours are taken from the "
            "other examples of its mini-batch (Ma et al. use k=20, batch_size=100)."
        )
    xt = _as_inputs(x, "x")
    spec = _module_layers(model, layers)
    if reference is None:
        (f,), _ = _features(model, [xt], None, spec=spec, k=k, batch_size=batch_size, pool=pool, seed=seed,
                            device=device, protocol="batch", progress=progress)
        return f
    rt = _as_inputs(reference, "reference")
    _same_shape(rt, xt, "reference", "x")
    (f,), _ = _features(model, [xt], rt, spec=spec, k=k, batch_size=batch_size, pool=pool, seed=seed,
                        device=device, protocol="aligned", progress=progress)
    return f


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionResult(Result):
    """Held-out evaluation of an adversarial-example detector.

    Attributes
    ----------
    auroc : area under the ROC curve of the detector's score (adversarial = positive).
    n_clean : number of negatives (clean plus noisy examples).
    n_adv : number of positives (adversarial examples).
    layers : names of the feature layers.
    layer_auroc : AUROC of each layer's raw LID used alone as the score (> 0.5: adversarial
        examples have the larger LID there, as Ma et al. predict).
    fpr, tpr : the ROC curve.
    k, batch_size, protocol : how the LID features were computed.
    """

    auroc: float
    n_clean: int
    n_adv: int
    layers: tuple[str, ...]
    layer_auroc: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    k: int
    batch_size: int
    protocol: str

    def plot(self, ax=None, label: str | None = None):
        """ROC curve on ``ax`` (a new figure when ``None``); returns the axes."""
        ax = self._axes(ax, (4.5, 4.5))
        ax.plot(self.fpr, self.tpr, label=label or f"LID (AUROC {self.auroc:.3f})")
        ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (clean + noisy)")
        ax.set_ylabel("true positive rate (adversarial)")
        ax.set_title("LID adversarial detection (Ma et al. 2018)")
        ax.legend(loc="lower right")
        return ax


# --------------------------------------------------------------------------------------
# detector
# --------------------------------------------------------------------------------------


class LIDDetector:
    """LID-based adversarial-example detector (Ma et al. 2018, ICLR).

    Parameters
    ----------
    model : the network to protect (``nn.Module``); can also be set later as ``.model``.
    layers : ``"auto"`` (input + every Linear/Conv output), ``"all"`` (input + every leaf
        module but Dropout/Identity/Flatten) or a list of module names / ``"input"``.
    k : neighbours of the LID estimate (Ma et al.: 20).
    batch_size : mini-batch size, must exceed ``k`` (Ma et al.: 100).
    pool : how conv feature maps become vectors (``"flatten"`` as in Ma et al.).
    C : inverse regularisation of the logistic regression; ``None`` (default) picks it by
        5-fold cross-validation (``LogisticRegressionCV``, as Ma et al.).
    seed : seeds the random mini-batches, the cross-validation folds and the reference batch.
    device : where the model runs and the neighbours are searched.

    Fitted attributes: ``layers_`` (feature names), ``scaler_`` (``StandardScaler``),
    ``classifier_``, ``n_train_``, ``reference_`` (the clean examples used by
    :meth:`score` when no reference is given).

    Example
    -------
    >>> det = LIDDetector(model).fit(clean_train, adv_train, noisy_train)   # doctest: +SKIP
    >>> det.evaluate(clean_test, adv_test, noisy_test).auroc               # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        layers: Any = "auto",
        k: int = 20,
        batch_size: int = 100,
        pool: str = "flatten",
        C: float | None = None,
        seed: int = 0,
        device: Any = "auto",
    ) -> None:
        self.model = model
        self.layers = layers
        self.k = k
        self.batch_size = batch_size
        self.pool = pool
        self.C = C
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> tuple[nn.Module, int, int]:
        if self.model is None:
            raise ValueError("LIDDetector has no model; pass model=... to LIDDetector(...) or set detector.model.")
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}.")
        k = check_int(self.k, "k", 2)
        bs = check_int(self.batch_size, "batch_size", 2)
        if bs <= k:
            raise ValueError(
                f"batch_size={bs} must be larger than k={k}: each example's k neighbours are taken from the other "
                "examples of its mini-batch (Ma et al. use k=20, batch_size=100)."
            )
        if self.C is not None and not (isinstance(self.C, (int, float)) and math.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive number or None (cross-validated), got {self.C!r}.")
        return self.model, k, bs

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise RuntimeError("this LIDDetector is not fitted yet; call fit(clean_x, adv_x, noisy_x) first.")

    def _compute(self, queries: list[torch.Tensor], reference: torch.Tensor | None, protocol: str, progress=None):
        model, k, bs = self._check_params()
        spec = _module_layers(model, self.layers)
        feats, names = _features(model, queries, reference, spec=spec, k=k, batch_size=bs, pool=self.pool,
                                 seed=self.seed, device=self.device, protocol=protocol, progress=progress)
        return [self._finite(f) for f in feats], names

    @staticmethod
    def _finite(f: np.ndarray) -> np.ndarray:
        # An LID is +inf only when all k neighbours are equidistant; treat it as "very large".
        if not np.isfinite(f).all():
            f = f.copy()
            big = np.nanmax(np.where(np.isfinite(f), f, np.nan)) if np.isfinite(f).any() else 1.0
            f[np.isposinf(f)] = 10.0 * max(big, 1.0)
            f[~np.isfinite(f)] = 0.0
        return f

    def _aligned_sets(self, clean_x: Any, adv_x: Any, noisy_x: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        clean = _as_inputs(clean_x, "clean_x")
        adv = _as_inputs(adv_x, "adv_x")
        _same_shape(clean, adv, "clean_x", "adv_x")
        sets = [clean, adv]
        if noisy_x is not None:
            noisy = _as_inputs(noisy_x, "noisy_x")
            _same_shape(clean, noisy, "clean_x", "noisy_x")
            sets.append(noisy)
        return clean, sets

    # ------------------------------------------------------------------ public API
    def lid_features(self, x: Any, reference: Any = None, *, progress: bool | None = None) -> np.ndarray:
        """LID features ``(N, n_layers)`` of ``x`` with this detector's settings.

        ``reference=None``: the "batch" protocol (each mini-batch of ``x`` is its own
        reference); an array aligned with ``x``: Ma et al.'s protocol (see
        :func:`lid_features`); ``"fitted"``: compared with the fitted :attr:`reference_`.
        """
        xt = _as_inputs(x, "x")
        if isinstance(reference, str):
            if reference != "fitted":
                raise ValueError(f"reference must be None, 'fitted' or an array aligned with x, got {reference!r}.")
            self._check_fitted()
            (f,), _ = self._compute([xt], self.reference_, "reference", progress)
            return f
        if reference is None:
            (f,), _ = self._compute([xt], None, "batch", progress)
            return f
        rt = _as_inputs(reference, "reference")
        _same_shape(rt, xt, "reference", "x")
        (f,), _ = self._compute([xt], rt, "aligned", progress)
        return f

    def fit(self, clean_x: Any, adv_x: Any, noisy_x: Any = None, *, progress: bool | None = None) -> "LIDDetector":
        """Compute aligned LID features (Ma et al.'s protocol) and train the classifier.

        ``clean_x``, ``adv_x`` and (optional) ``noisy_x`` must be aligned: row ``i`` of each
        is a version of the same example. Clean and noisy examples are labelled 0,
        adversarial ones 1. Returns ``self``.
        """
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.preprocessing import StandardScaler

        clean, sets = self._aligned_sets(clean_x, adv_x, noisy_x)
        feats, names = self._compute(sets, clean, "aligned", progress)
        X = np.concatenate([feats[0], feats[1]] + feats[2:], axis=0)
        y = np.concatenate([np.zeros(len(clean)), np.ones(len(clean))] + [np.zeros(len(clean))] * (len(feats) - 2))
        scaler = StandardScaler().fit(X)
        Xs = scaler.transform(X)
        if self.C is None:
            import inspect

            extra: dict[str, Any] = {}
            if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters:
                extra = {"use_legacy_attributes": False, "l1_ratios": (0.0,)}  # scikit-learn >= 1.8 spelling
            clf = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=2000, **extra)
        else:
            clf = LogisticRegression(C=float(self.C), max_iter=2000)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
            clf.fit(Xs, y)
        rng = np.random.default_rng(self.seed)
        _, _, bs = self._check_params()
        keep = np.sort(rng.choice(len(clean), size=min(bs, len(clean)), replace=False))
        self.layers_ = tuple(names)
        self.scaler_ = scaler
        self.classifier_ = clf
        self.n_train_ = int(len(X))
        self.reference_ = clean[keep].clone()
        self.train_features_ = X
        self.train_labels_ = y
        return self

    def decision_scores(self, features: np.ndarray) -> np.ndarray:
        """Probability of "adversarial" for precomputed LID features ``(N, n_layers)``."""
        self._check_fitted()
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != len(self.layers_):
            raise ValueError(f"features must have shape (N, {len(self.layers_)}) (one column per layer), got {f.shape}.")
        return self.classifier_.predict_proba(self.scaler_.transform(self._finite(f)))[:, 1]

    def score(self, x: Any, reference: Any = "fitted", *, progress: bool | None = None) -> np.ndarray:
        """Probability that each example of ``x`` is adversarial, shape ``(N,)``.

        ``reference="fitted"`` (default) compares every example with the clean reference
        batch kept at fit time, so examples can be scored one at a time; ``reference=None``
        uses the "batch" protocol; an array aligned with ``x`` uses Ma et al.'s protocol.
        """
        self._check_fitted()
        return self.decision_scores(self.lid_features(x, reference, progress=progress))

    def predict(self, x: Any, reference: Any = "fitted", threshold: float = 0.5) -> np.ndarray:
        """1 for examples whose :meth:`score` exceeds ``threshold``, else 0."""
        return (self.score(x, reference) > threshold).astype(np.int64)

    def evaluate(
        self,
        clean_x: Any,
        adv_x: Any,
        noisy_x: Any = None,
        *,
        protocol: str = "aligned",
        progress: bool | None = None,
    ) -> DetectionResult:
        """ROC AUC on held-out aligned clean/adversarial(/noisy) examples.

        ``protocol="aligned"`` (default) computes features exactly as :meth:`fit` did (Ma et
        al.'s evaluation); ``"reference"`` scores every example against the fitted clean
        reference batch, as a deployed detector would.
        """
        from sklearn.metrics import roc_auc_score, roc_curve

        self._check_fitted()
        if protocol not in ("aligned", "reference"):
            raise ValueError(f"protocol must be 'aligned' or 'reference', got {protocol!r}.")
        clean, sets = self._aligned_sets(clean_x, adv_x, noisy_x)
        if protocol == "aligned":
            feats, names = self._compute(sets, clean, "aligned", progress)
        else:
            feats, names = self._compute(sets, self.reference_, "reference", progress)
        if tuple(names) != self.layers_:
            raise ValueError(f"the model now gives layers {names}, but the detector was fitted on {self.layers_}.")
        neg = np.concatenate([feats[0]] + feats[2:], axis=0)
        pos = feats[1]
        X = np.concatenate([neg, pos], axis=0)
        y = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
        s = self.decision_scores(X)
        fpr, tpr, _ = roc_curve(y, s)
        layer_auc = np.array([roc_auc_score(y, X[:, j]) if np.ptp(X[:, j]) > 0 else 0.5 for j in range(X.shape[1])])
        return DetectionResult(
            auroc=float(roc_auc_score(y, s)),
            n_clean=int(len(neg)),
            n_adv=int(len(pos)),
            layers=tuple(names),
            layer_auroc=layer_auc,
            fpr=fpr,
            tpr=tpr,
            k=int(self.k),
            batch_size=int(self.batch_size),
            protocol=protocol,
        )

    def __repr__(self) -> str:
        return (f"LIDDetector(layers={self.layers!r}, k={self.k}, batch_size={self.batch_size}, pool={self.pool!r}, "
                f"C={self.C!r}, seed={self.seed})")
