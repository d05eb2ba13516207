"""Tests for shapelens.detect: FGSM/BIM/PGD attacks and the LID detector of Ma et al. (2018).

Ground truth used here:
* FGSM is checked against an independent autograd computation of sign(grad), coordinate by
  coordinate; for a linear softmax model the loss is convex in the input, so every
  example's loss provably increases (f(x + d) >= f(x) + grad . d > f(x)).
* BIM-a/BIM-b: with a summed loss each example's trajectory is independent, so an example
  that BIM-a never got misclassified must equal its BIM-b result exactly.
* LID kernels are checked against shapelens.dimension.local_dimension, and the
  counterpart exclusion against explicit per-row local_dimension calls.
* Detection: on points of a 2-D plane in 20-D, off-plane points have a clearly larger
  local dimension (known geometry); on real digits with FGSM the detector must beat chance
  by a margin measured on this code (AUROC 0.73-0.77 over five model seeds, asserted > 0.65).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from shapelens.data import digits
from shapelens.detect import DetectionResult, LIDDetector, bim, fgsm, lid_features, pgd
from shapelens.dimension import local_dimension


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The models here are tiny: a second intra-op thread buys nothing, and on a loaded
    # 2-core machine OpenMP spin-waiting makes small ops orders of magnitude slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def data():
    X, y = digits()
    perm = np.random.default_rng(0).permutation(len(X))
    tr, te = perm[:1000], perm[1000:]
    return torch.from_numpy(X[tr]), torch.from_numpy(y[tr]), torch.from_numpy(X[te]), torch.from_numpy(y[te])


@pytest.fixture(scope="module")
def mlp(data):
    Xtr, ytr, _, _ = data
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return _train(m, Xtr, ytr, 300)


@pytest.fixture(scope="module")
def linear(data):
    Xtr, ytr, _, _ = data
    torch.manual_seed(0)
    return _train(nn.Linear(64, 10), Xtr, ytr, 200)


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _per_example_loss(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none")


# --------------------------------------------------------------------------- attacks


def test_fgsm_matches_independent_sign_gradient(mlp, data):
    _, _, x, y = data
    eps = 0.1
    adv = fgsm(mlp, x, y, eps)
    xg = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(mlp(xg), y, reduction="sum").backward()
    g = xg.grad.sign()
    expected = (x + eps * g).clamp(0, 1)
    assert torch.equal(adv, expected)
    delta = adv - x
    unclipped = (g != 0) & ((x + eps * g) >= 0) & ((x + eps * g) <= 1)
    assert unclipped.sum() > 1000  # most coordinates are free to move
    assert torch.allclose(delta[unclipped].abs(), torch.full_like(delta[unclipped], eps), atol=1e-6)
    assert float(delta.abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_fgsm_increases_every_loss_of_a_linear_model(linear, data):
    # Linear logits: the cross-entropy is convex in x, so a step along sign(grad) can only raise it.
    _, _, x, y = data
    adv = fgsm(linear, x, y, 0.05)
    before, after = _per_example_loss(linear, x, y), _per_example_loss(linear, adv, y)
    assert bool((after > before).all())
    assert _acc(linear, adv, y) < _acc(linear, x, y)


def test_fgsm_eps_zero_is_identity_and_numpy_roundtrip(mlp, data):
    _, _, x, y = data
    assert torch.equal(fgsm(mlp, x, y, 0.0), x)
    out = fgsm(mlp, x.numpy(), y.numpy(), 0.1)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == tuple(x.shape)
    np.testing.assert_array_equal(out, fgsm(mlp, x, y, 0.1).numpy())


def test_fgsm_chunked_equals_unchunked(mlp, data):
    _, _, x, y = data
    assert torch.equal(fgsm(mlp, x, y, 0.1, batch_size=37), fgsm(mlp, x, y, 0.1))


def test_pgd_stays_in_ball_and_beats_fgsm(mlp, data):
    _, _, x, y = data
    eps = 0.1
    adv_pgd = pgd(mlp, x, y, eps, alpha=eps / 4, steps=20, seed=0)
    adv_fgsm = fgsm(mlp, x, y, eps)
    assert float((adv_pgd - x).abs().max()) <= eps + 1e-6
    assert float(adv_pgd.min()) >= 0.0 and float(adv_pgd.max()) <= 1.0
    acc_clean, acc_fgsm, acc_pgd = _acc(mlp, x, y), _acc(mlp, adv_fgsm, y), _acc(mlp, adv_pgd, y)
    assert acc_fgsm < acc_clean
    assert acc_pgd < acc_fgsm


def test_pgd_seed_reproducible_and_l2_ball(mlp, data):
    _, _, x, y = data
    a = pgd(mlp, x, y, 0.1, 0.02, 5, seed=3)
    assert torch.equal(a, pgd(mlp, x, y, 0.1, 0.02, 5, seed=3))
    assert not torch.equal(a, pgd(mlp, x, y, 0.1, 0.02, 5, seed=4))
    # chunking does not change the random start
    assert torch.equal(a, pgd(mlp, x, y, 0.1, 0.02, 5, seed=3, batch_size=100))
    eps2 = 1.5
    a2 = pgd(mlp, x, y, eps2, 0.3, 10, norm="l2", seed=0)
    assert float((a2 - x).flatten(1).norm(dim=1).max()) <= eps2 + 1e-5
    assert _acc(mlp, a2, y) < _acc(mlp, x, y)
    # without random start, L-inf PGD is BIM
    assert torch.equal(pgd(mlp, x, y, 0.1, 0.02, 5, random_start=False), bim(mlp, x, y, 0.1, 0.02, 5))


def test_bim_ball_and_early_stop(mlp, data):
    _, _, x, y = data
    eps = 0.15
    b = bim(mlp, x, y, eps, 0.01, 30)
    a = bim(mlp, x, y, eps, 0.01, 30, early_stop=True)
    for adv in (a, b):
        assert float((adv - x).abs().max()) <= eps + 1e-6
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        pa = mlp(a).argmax(1)
    still_correct = pa == y
    # examples BIM-a never fooled followed exactly the BIM-b trajectory
    assert torch.equal(a[still_correct], b[still_correct])
    # the others stopped at their first misclassified iterate: smaller perturbations
    fooled = ~still_correct
    assert fooled.sum() > 50
    la = (a - x).flatten(1).norm(dim=1)[fooled].mean()
    lb = (b - x).flatten(1).norm(dim=1)[fooled].mean()
    assert la < lb


class _Recorder(nn.Module):
    """A model with dropout (so eval mode matters) that can be told to raise."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.drop = nn.Dropout(0.5)
        self.fail = False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("boom")
        return self.inner(self.drop(x))


@pytest.mark.parametrize("attack", ["fgsm", "bim", "pgd"])
def test_attacks_leave_model_state_alone(attack, data):
    _, _, x, y = data
    torch.manual_seed(1)
    model = _Recorder(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    model.train()
    model.inner[0].eval()  # mixed flags must come back exactly
    flags = {n: m.training for n, m in model.named_modules()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = {
        "fgsm": lambda: fgsm(model, x, y, 0.1),
        "bim": lambda: bim(model, x, y, 0.1, 0.02, 3),
        "pgd": lambda: pgd(model, x, y, 0.1, 0.02, 3),
    }[attack]
    out1, out2 = run(), run()
    assert torch.equal(out1, out2)  # dropout was off: the attack ran in eval mode
    assert {n: m.training for n, m in model.named_modules()} == flags
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), f"{n}.grad was modified"
        assert torch.equal(p.detach(), params[n])
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        run()
    assert {n: m.training for n, m in model.named_modules()} == flags


def test_attack_bad_inputs(mlp, data):
    _, _, x, y = data
    with pytest.raises(ValueError, match="eps"):
        fgsm(mlp, x, y, -0.1)
    with pytest.raises(ValueError, match="eps"):
        fgsm(mlp, x, y, float("nan"))
    with pytest.raises(ValueError, match="outside clip"):
        fgsm(mlp, x * 3, y, 0.1)
    with pytest.raises(ValueError, match="low < high"):
        fgsm(mlp, x, y, 0.1, clip=(1, 0))
    with pytest.raises(ValueError, match="labels"):
        fgsm(mlp, x, y[:-1], 0.1)
    with pytest.raises(TypeError, match="integer class labels"):
        fgsm(mlp, x, y.float() + 0.5, 0.1)
    with pytest.raises(ValueError, match="batch axis"):
        fgsm(mlp, x[0], y[:1], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        xb = x.clone()
        xb[0, 0] = float("nan")
        fgsm(mlp, xb, y, 0.1, clip=None)
    with pytest.raises(ValueError, match="alpha"):
        bim(mlp, x, y, 0.1, 0.0, 3)
    with pytest.raises(ValueError, match="n_steps"):
        bim(mlp, x, y, 0.1, 0.01, 0)
    with pytest.raises(ValueError, match="norm"):
        pgd(mlp, x, y, 0.1, 0.01, 3, norm="l1")
    # clip=None allows any finite range
    out = fgsm(mlp, x * 3, y, 0.1, clip=None)
    assert float((out - x * 3).abs().max()) <= 0.1 + 1e-6


# --------------------------------------------------------------------------- LID features


# local_dimension's neighbour kernel (shapelens.neighbors.knn) works in float32 with a relative
# distance error below 1e-4 (typically 1e-7); the detector's per-batch kernel is exact float64.
def test_lid_batch_protocol_equals_local_dimension(mlp, data):
    _, _, x, _ = data
    xb = x[:120]
    f = lid_features(mlp, xb, layers=["input"], k=10, batch_size=120)
    assert f.shape == (120, 1)
    expected = local_dimension(xb, k=10, reference=xb)
    np.testing.assert_allclose(f[:, 0], expected, rtol=1e-4)
    # a hidden layer too: the activations captured by the probe
    f2 = lid_features(mlp, xb, layers=["2"], k=10, batch_size=120)
    with torch.no_grad():
        h = mlp[:3](xb)
    np.testing.assert_allclose(f2[:, 0], local_dimension(h, k=10, reference=h), rtol=1e-4)


def test_lid_aligned_protocol_excludes_only_the_counterpart(mlp, data):
    _, _, x, _ = data
    clean = x[:60]
    g = torch.Generator().manual_seed(0)
    adv = (clean + 0.01 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    f = lid_features(mlp, adv, reference=clean, layers=["input"], k=10, batch_size=60)[:, 0]
    for i in range(0, 60, 7):
        others = torch.cat([clean[:i], clean[i + 1 :]])
        expected = local_dimension(adv[i : i + 1], k=10, reference=others)[0]
        assert f[i] == pytest.approx(expected, rel=1e-4)
    # the clean set against itself is the batch protocol
    f_clean = lid_features(mlp, clean, reference=clean, layers=["input"], k=10, batch_size=60)
    np.testing.assert_allclose(f_clean, lid_features(mlp, clean, layers=["input"], k=10, batch_size=60), rtol=1e-12)
    # keeping the counterpart would make the tiny perturbation dominate (LID collapses)
    leaky = local_dimension(adv, k=10, reference=clean)
    assert np.median(leaky) < 0.5 * np.median(f)


def test_lid_features_shape_layers_and_determinism(mlp, data):
    _, _, x, _ = data
    det = LIDDetector(mlp, k=10, batch_size=50, seed=1)
    f = det.lid_features(x[:230])
    assert f.shape == (230, 4)  # input + three Linear layers
    assert np.isfinite(f).all() and (f > 0).all()
    np.testing.assert_array_equal(f, det.lid_features(x[:230]))
    f_all = LIDDetector(mlp, layers="all", k=10, batch_size=50).lid_features(x[:230])
    assert f_all.shape == (230, 6)  # input + 3 Linear + 2 ReLU


def test_reference_protocol_equals_local_dimension(mlp, data):
    _, _, x, y = data
    clean, yc = x[:300], y[:300]
    adv = fgsm(mlp, clean, yc, 0.2)
    det = LIDDetector(mlp, layers=["input"], k=10, batch_size=50).fit(clean[:200], adv[:200])
    assert det.reference_.shape == (50, 64)
    f = det.lid_features(clean[200:], "fitted")
    np.testing.assert_allclose(f[:, 0], local_dimension(clean[200:], k=10, reference=det.reference_), rtol=1e-4)
    s = det.score(adv[200:])
    assert s.shape == (100,) and ((s >= 0) & (s <= 1)).all()


# --------------------------------------------------------------------------- detection


def test_detector_separates_off_manifold_points():
    # Clean points on a 2-D plane in 20-D. "Adversarial" points are pushed 0.3 off the plane
    # (neighbour spacing in a batch of 100 is about 0.2); "noisy" points are moved just as far
    # but within the plane, so the detector cannot merely detect "perturbed". Off-plane points
    # see their neighbours at more uniform distances: larger LID. Identity "model": input only.
    rng = np.random.default_rng(0)
    n, ambient, size = 600, 20, 0.3
    basis = np.linalg.qr(rng.normal(size=(ambient, 2)))[0]
    clean = (rng.uniform(-1, 1, size=(n, 2)) @ basis.T).astype(np.float32)
    off = rng.normal(size=(n, ambient))
    off -= off @ basis @ basis.T
    off /= np.linalg.norm(off, axis=1, keepdims=True)
    adv = (clean + size * off).astype(np.float32)
    along = rng.normal(size=(n, 2)) @ basis.T
    along /= np.linalg.norm(along, axis=1, keepdims=True)
    noisy = (clean + size * along).astype(np.float32)
    det = LIDDetector(nn.Identity(), layers=["input"], k=10, batch_size=100).fit(clean[:400], adv[:400], noisy[:400])
    clean_lid = det.train_features_[:400, 0]
    assert 1.5 < np.median(clean_lid) < 3.0  # the plane is 2-dimensional
    res = det.evaluate(clean[400:], adv[400:], noisy[400:])
    assert res.auroc > 0.9  # measured 0.955 (seeds 0 and 1); 0.993 at offset 0.5
    assert res.layer_auroc[0] > 0.9  # adversarial LID is larger, not smaller


def test_detector_on_digits_fgsm(mlp, data):
    _, _, x, y = data
    with torch.no_grad():
        ok = mlp(x).argmax(1) == y
    xc, yc = x[ok], y[ok]
    adv = fgsm(mlp, xc, yc, 0.3)
    with torch.no_grad():
        fooled = mlp(adv).argmax(1) != yc
    xc, adv = xc[fooled], adv[fooled]
    delta = (adv - xc).flatten(1).norm(dim=1, keepdim=True)
    z = torch.randn(xc.shape, generator=torch.Generator().manual_seed(0))
    noisy = (xc + z / z.norm(dim=1, keepdim=True) * delta).clamp(0, 1)
    h = len(xc) // 2
    det = LIDDetector(mlp, k=10, batch_size=50).fit(xc[:h], adv[:h], noisy[:h])
    res = det.evaluate(xc[h:], adv[h:], noisy[h:])
    assert isinstance(res, DetectionResult)
    assert res.auroc > 0.65, res.auroc  # measured 0.73-0.77 over five model seeds; chance is 0.5
    assert res.n_adv == len(xc) - h and res.n_clean == 2 * (len(xc) - h)
    assert res.layers == det.layers_ == ("input", "0", "2", "4")
    assert res.layer_auroc.shape == (4,)
    d = res.to_dict()
    json.dumps(d)
    assert d["type"] == "DetectionResult" and 0 <= d["auroc"] <= 1
    ax = res.plot()
    assert len(ax.lines) >= 2
    res_ref = det.evaluate(xc[h:], adv[h:], noisy[h:], protocol="reference")
    assert res_ref.auroc > 0.6


def test_detector_bad_inputs(mlp, data):
    _, _, x, y = data
    adv = fgsm(mlp, x[:200], y[:200], 0.2)
    with pytest.raises(ValueError, match="aligned"):
        LIDDetector(mlp, k=10, batch_size=50).fit(x[:200], adv[:150])
    with pytest.raises(ValueError, match="aligned"):
        LIDDetector(mlp, k=10, batch_size=50).fit(x[:200], adv, x[:100])
    with pytest.raises(ValueError, match="batch_size=20 must be larger than k=20"):
        LIDDetector(mlp, k=20, batch_size=20).fit(x[:200], adv)
    with pytest.raises(ValueError, match="batch_size=5 must be larger than k=10"):
        lid_features(mlp, x[:200], k=10, batch_size=5)
    with pytest.raises(ValueError, match="at least k\\+1=11 examples"):
        LIDDetector(mlp, k=10, batch_size=50).fit(x[:8], adv[:8])
    with pytest.raises(ValueError, match="no model"):
        LIDDetector(k=10, batch_size=50).fit(x[:200], adv)
    with pytest.raises(RuntimeError, match="not fitted"):
        LIDDetector(mlp).score(x[:100])
    with pytest.raises(ValueError, match="C must be"):
        LIDDetector(mlp, k=10, batch_size=50, C=-1.0).fit(x[:200], adv)
    with pytest.raises(ValueError, match="NaN"):
        xb = x[:200].clone()
        xb[3, 3] = float("nan")
        LIDDetector(mlp, k=10, batch_size=50).fit(xb, adv)
    with pytest.raises(ValueError, match="batch of model inputs"):
        lid_features(mlp, x[0])
    with pytest.raises(KeyError):
        lid_features(mlp, x[:100], layers=["nope"], k=10, batch_size=50)
    det = LIDDetector(mlp, k=10, batch_size=50, C=1.0).fit(x[:200], adv)
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        det.decision_scores(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="protocol"):
        det.evaluate(x[:200], adv, protocol="bogus")


def test_duplicates_are_skipped_with_a_warning(mlp, data):
    _, _, x, _ = data
    xd = torch.cat([x[:40], x[:40]])
    with pytest.warns(UserWarning, match="duplicates"):
        f = lid_features(mlp, xd, layers=["input"], k=10, batch_size=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = local_dimension(xd, k=10, reference=xd)
    np.testing.assert_allclose(f[:, 0], expected, rtol=1e-4)
    assert np.isfinite(f).all()
