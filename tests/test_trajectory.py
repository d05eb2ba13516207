"""CurvatureTracker: recorded curvature equals direct and dense computations, measuring never
changes training, the schedule is exact, the plot shows the 2/lr line, Lightning drives it."""

import copy
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from dense_reference import dense_hessian

from shapelens.curvature import GGN, Hessian, eigenvalues
from shapelens.curvature import trajectory as traj
from shapelens.curvature.trajectory import CurvatureTracker, CurvatureTrajectory, lightning_callback


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def square_loss(out, target):
    """Cohen et al.'s square loss: 0.5 * |f(x) - y|^2, averaged over examples."""
    return 0.5 * ((out - target) ** 2).sum(1).mean()


def _problem(seed=0, n=48, d=5, h=6, c=3, dropout=0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = nn.functional.one_hot(torch.randint(0, c, (n,), generator=g), c).double()
    torch.manual_seed(seed)
    layers = [nn.Linear(d, h), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(h, c)]
    return nn.Sequential(*layers).double(), X, Y


def _train(model, X, Y, n_steps, lr, tracker=None, snapshots=None, loss_fn=square_loss, momentum=0.0):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for step in range(n_steps):
        opt.zero_grad()
        loss = loss_fn(model(X), Y)
        loss.backward()
        if tracker is not None:  # after backward: live .grad fields that opt.step() needs
            if tracker.step(model, step, loss) is not None and snapshots is not None:
                snapshots[step] = copy.deepcopy(model)
        opt.step()
    return model


def test_recorded_eigenvalues_equal_direct_lanczos_and_thedense_hessian():
    model, X, Y = _problem()
    steps = [0, 4, 5, 11]
    tracker = CurvatureTracker(square_loss, (X, Y), steps=steps, k=3, lr=0.5, tol=1e-10)
    snaps = {}
    _train(model, X, Y, 14, lr=0.5, tracker=tracker, snapshots=snaps)
    res = tracker.result()
    assert isinstance(res, CurvatureTrajectory)
    assert res.steps.tolist() == steps and res.top_eigenvalues.shape == (4, 3)
    for i, s in enumerate(steps):
        m = snaps[s]
        direct = eigenvalues(Hessian(m, square_loss, (X, Y)), k=3, tol=1e-10).eigenvalues[::-1]
        np.testing.assert_allclose(res.top_eigenvalues[i], direct, rtol=1e-6)
        dense = torch.linalg.eigvalsh(dense_hessian(m, square_loss, X, Y)).numpy()[::-1][:3]
        np.testing.assert_allclose(res.top_eigenvalues[i], dense, rtol=1e-6)
        with torch.no_grad():
            np.testing.assert_allclose(res.losses[i], float(square_loss(m(X), Y)), rtol=1e-12)
    assert np.all(res.residuals <= 1e-8 * res.lambda_max[:, None])
    # the first measurement is a cold start: bit-for-bit the public routine
    direct0 = eigenvalues(Hessian(snaps[0], square_loss, (X, Y)), k=3, tol=1e-10)
    assert res.lanczos_matvec[0] == direct0.n_matvec
    np.testing.assert_array_equal(res.top_eigenvalues[0], direct0.eigenvalues[::-1])
    # the training loss passed in is recorded at every call, and at the measured steps
    assert res.loss_history.shape == (14, 2) and res.loss_history[:, 0].tolist() == list(range(14))
    np.testing.assert_allclose(res.train_losses, res.loss_history[steps, 1])
    np.testing.assert_allclose(res.train_losses, res.losses, rtol=1e-12)  # same data, no dropout


def test_trace_and_ggn_equal_their_dense_matrices():
    model, X, Y = _problem(seed=1, d=3, h=4, c=2)  # 26 parameters
    dim = sum(p.numel() for p in model.parameters())
    # Hutch++ with a subspace of dim vectors is exact: samples = 3 * dim
    tracker = CurvatureTracker(square_loss, (X, Y), every=1, k=2, trace_samples=3 * dim, tol=1e-10)
    ggn = CurvatureTracker(square_loss, (X, Y), every=1, k=2, operator="GGN", tol=1e-10)
    for t in (tracker, ggn):
        t.step(model, 0)
    H = dense_hessian(model, square_loss, X, Y)
    r = tracker.result()
    np.testing.assert_allclose(r.traces[0], float(torch.trace(H)), rtol=1e-9)
    assert r.n_matvec[0] == r.lanczos_matvec[0] + 3 * dim and r.trace_method == "hutch++"
    G = GGN(model, square_loss, (X, Y)).to_dense()
    np.testing.assert_allclose(ggn.result().top_eigenvalues[0], torch.linalg.eigvalsh(G).numpy()[::-1][:2], rtol=1e-8)
    assert ggn.result().traces is None and ggn.result().operator == "ggn"
    # the GGN's top eigenvalue differs from the Hessian's away from a minimum: they were not mixed up
    assert abs(ggn.result().lambda_max[0] - r.lambda_max[0]) > 1e-6 * r.lambda_max[0]


def test_warm_start_keeps_accuracy_with_fewer_products():
    model, X, Y = _problem(seed=2, n=80, d=10, h=16, c=4)  # 244 parameters
    kw = dict(every=3, k=2, lr=0.3)  # default tol 1e-3
    warm, cold = CurvatureTracker(square_loss, (X, Y), **kw), CurvatureTracker(square_loss, (X, Y), warm_start=False, **kw)
    snaps = {}
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for step in range(16):
        opt.zero_grad()
        loss = square_loss(model(X), Y)
        loss.backward()
        warm.step(model, step, loss)
        if cold.step(model, step, loss) is not None:
            snaps[step] = copy.deepcopy(model)
        opt.step()
    rw, rc = warm.result(), cold.result()
    exact = np.array([torch.linalg.eigvalsh(dense_hessian(snaps[s], square_loss, X, Y)).numpy()[::-1][:2]
                      for s in rw.steps])
    np.testing.assert_allclose(rw.top_eigenvalues, exact, rtol=1e-4)
    np.testing.assert_allclose(rc.top_eigenvalues, exact, rtol=1e-4)
    assert rw.lanczos_matvec[0] == rc.lanczos_matvec[0]  # both cold at the first measurement
    assert rw.lanczos_matvec[1:].sum() < 0.8 * rc.lanczos_matvec[1:].sum(), (rw.lanczos_matvec, rc.lanczos_matvec)


def test_steps_recorded_exactly_at_the_schedule():
    model, X, Y = _problem(seed=3, d=3, h=3, c=2)
    t = CurvatureTracker(square_loss, (X, Y), every=3)
    out = [t.step(model, s) is not None for s in range(11)]
    assert out == [s % 3 == 0 for s in range(11)]
    assert t.step(model, 9) is None  # a step is measured once (gradient accumulation)
    assert t.result().steps.tolist() == [0, 3, 6, 9]
    t = CurvatureTracker(square_loss, (X, Y), steps=[7, 1, 4, 4])
    for s in range(10):
        t(model, s, loss=torch.tensor(1.0 / (s + 1)))
    assert t.result().steps.tolist() == [1, 4, 7]
    np.testing.assert_allclose(t.result().train_losses, [1 / 2, 1 / 5, 1 / 8])
    assert CurvatureTracker(square_loss, (X, Y)).every == 10  # default
    assert CurvatureTracker(square_loss, (X, Y), steps=np.arange(3)).schedule == {0, 1, 2}
    assert t.step(model, torch.tensor(20)) is None and t.due(np.int64(4)) is False


class _NoisyLoss(nn.Module):
    """Square loss that draws from the global RNG on every call (like a stochastic
    regularizer): a measurement that did not restore the RNG would change training."""

    reduction = "mean"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, out, target):
        self.calls += 1
        return square_loss(out, target) + 0.0 * torch.rand(()).to(out.dtype)


def test_training_with_the_tracker_is_bit_identical_to_training_without():
    loss_fn = _NoisyLoss()
    runs = []
    for with_tracker in (False, True):
        model, X, Y = _problem(seed=4, dropout=0.3)  # dropout in training consumes the RNG too
        torch.manual_seed(123)
        tracker = CurvatureTracker(loss_fn, (X, Y), every=2, k=2, trace_samples=6, lr=0.2) if with_tracker else None
        calls = loss_fn.calls
        _train(model, X, Y, 7, lr=0.2, tracker=tracker, loss_fn=loss_fn, momentum=0.9)
        runs.append((model, torch.get_rng_state(), loss_fn.calls - calls))
    (m0, rng0, calls0), (m1, rng1, calls1) = runs
    assert calls1 > calls0 + 20, "the measurements did call the RNG-drawing loss"
    for (n, p0), p1 in zip(m0.named_parameters(), m1.parameters()):
        assert torch.equal(p0, p1), n
    assert torch.equal(rng0, rng1)


def test_grads_mode_and_parameters_are_preserved():
    model, X, Y = _problem(seed=5, dropout=0.5)
    model.train()
    model[2].eval()  # mixed flags must come back as they were
    grads = [torch.randn_like(p) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    model[-1].bias.grad = None
    before = [p.detach().clone() for p in model.parameters()]
    flags = [m.training for m in model.modules()]
    t = CurvatureTracker(square_loss, (X, Y), every=1, k=2, trace_samples=6, operator="hessian")
    assert t.step(model, 0) is not None
    assert [m.training for m in model.modules()] == flags
    for p, g, b in zip(model.parameters(), grads, before):
        assert torch.equal(p, b)
        if p is model[-1].bias:
            assert p.grad is None
        else:
            assert p.grad is g and torch.equal(p.grad, g.clone())


def test_plot_draws_2_over_lr_and_the_loss_and_result_is_json_safe():
    model, X, Y = _problem(seed=6)
    t = CurvatureTracker(square_loss, (X, Y), every=2, k=2, lr=0.25, trace_samples=6)
    _train(model, X, Y, 7, lr=0.25, tracker=t)
    r = t.result()
    assert r.threshold == 8.0
    ax = r.plot()
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("2/lr")]
    assert len(lines) == 1 and "Cohen et al. 2021" in lines[0].get_label()
    np.testing.assert_allclose(lines[0].get_ydata(), [8.0, 8.0])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), r.lambda_max)
    assert ax.loss_axes in ax.figure.axes and ax.loss_axes.get_yscale() == "log"
    assert any(len(ln.get_ydata()) == len(r.losses) and np.allclose(ln.get_ydata(), r.losses)
               for ln in ax.loss_axes.get_lines())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["type"] == "CurvatureTrajectory" and d["steps"] == [0, 2, 4, 6] and d["lr"] == 0.25
    # without lr there is no threshold line
    t2 = CurvatureTracker(square_loss, (X, Y), every=2)
    t2.step(model, 0)
    ax2 = t2.result().plot()
    assert t2.result().threshold is None and not any(ln.get_label().startswith("2/lr") for ln in ax2.get_lines())


def test_a_diverged_model_is_recorded_as_nan_with_a_warning():
    from shapelens._checks import ShapelensWarning

    model, X, Y = _problem(seed=11)
    t = CurvatureTracker(square_loss, (X, Y), every=1, trace_samples=6)
    t.step(model, 0)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.warns(ShapelensWarning, match="diverged"):
        t.step(model, 1)
    r = t.result()
    assert np.isfinite(r.lambda_max[0]) and np.isnan(r.lambda_max[1]) and np.isnan(r.losses[1])
    assert np.isnan(r.traces[1]) and r.n_matvec[1] == 0


def test_bad_inputs_raise_clear_errors():
    model, X, Y = _problem(seed=7)
    d = (X, Y)
    cases = [
        (dict(every=0), ValueError, "every"),
        (dict(every=2, steps=[1]), ValueError, "not both"),
        (dict(steps=[3, -1]), ValueError, "non-negative"),
        (dict(steps=[]), ValueError, "empty"),
        (dict(steps=5), TypeError, "steps=\\[5\\]"),
        (dict(k=0), ValueError, "k must be at least 1"),
        (dict(lr=0.0), ValueError, "positive"),
        (dict(lr=-0.1), ValueError, "positive"),
        (dict(lr="0.1"), TypeError, "lr"),
        (dict(trace_samples=3), ValueError, "hutch"),
        (dict(trace_method="exact"), ValueError, "trace_method"),
        (dict(operator="fisher"), ValueError, "hessian"),
        (dict(tol=0), ValueError, "tol"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            CurvatureTracker(square_loss, d, **kw)
    with pytest.raises(ValueError, match="reduction"):
        CurvatureTracker(nn.MSELoss(reduction="none"), d)
    t = CurvatureTracker(square_loss, d)
    with pytest.raises(ValueError, match="non-negative"):
        t.step(model, -1)
    with pytest.raises(ValueError, match="scalar"):
        t.step(model, 1, loss=torch.ones(3))
    with pytest.raises(TypeError, match="nn.Module"):
        t.step(X, 0)


def _tiny_lightning_module(base, X, Y):
    class Tiny(base):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
            self.snapshots = {}

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return square_loss(self(batch[0]), batch[1])

        def on_train_start(self):
            self.snapshots[self.trainer.global_step] = copy.deepcopy(self.net)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.snapshots[self.trainer.global_step] = copy.deepcopy(self.net)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Tiny()


def _lightning():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return __import__(name, fromlist=["Trainer"])
        except ImportError:
            continue
    return None


def test_lightning_callback_records_what_a_direct_measurement_gives():
    pl = _lightning()
    if pl is None:
        msg = "pytorch-lightning (a test extra: pip install -e '.[test]') is not installed"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(msg + "; CI=true: this check is required.")
        pytest.skip(msg + " (skipped outside CI only)")
    _, X, Y = _problem(seed=8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=len(X))  # full batch
    module = _tiny_lightning_module(pl.LightningModule, X, Y)
    tracker = CurvatureTracker(square_loss, (X, Y), every=2, k=2, lr=0.5, tol=1e-10)
    cb = lightning_callback(tracker)
    assert isinstance(cb, pl.Callback) and type(cb).__name__ == "CurvatureCallback"
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, loader)
    r = cb.result()
    assert r.steps.tolist() == [0, 2, 4, 6]
    for i, s in enumerate(r.steps):
        net = module.snapshots[int(s)]
        direct = eigenvalues(Hessian(net, square_loss, (X, Y)), k=2, tol=1e-10).eigenvalues[::-1]
        np.testing.assert_allclose(r.top_eigenvalues[i], direct, rtol=1e-6)
    np.testing.assert_allclose(r.train_losses[1:], r.losses[1:], rtol=0.5)  # training loss of the batch was passed
    assert np.isnan(r.train_losses[0])  # on_train_start has no loss


@pytest.fixture
def fresh_callback_cache(monkeypatch):
    monkeypatch.setattr(traj, "_CLASSES", {})


def test_lightning_callback_with_a_stand_in_base(monkeypatch, fresh_callback_cache):
    class Callback:  # the shape of Lightning's base class
        pass

    pkg, sub = types.ModuleType("lightning"), types.ModuleType("lightning.pytorch")
    sub.Callback, pkg.pytorch = Callback, sub
    monkeypatch.setitem(sys.modules, "lightning", pkg)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", sub)
    model, X, Y = _problem(seed=9)
    tracker = CurvatureTracker(square_loss, (X, Y), every=3, k=1)
    cb = lightning_callback(tracker, flavor="lightning.pytorch")
    assert isinstance(cb, Callback) and traj.CurvatureCallback is type(cb)
    trainer = types.SimpleNamespace(global_step=0)
    cb.on_train_start(trainer, model)
    for step in range(1, 7):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, model, {"loss": torch.tensor(float(step))}, None, 0)
        cb.on_train_batch_end(trainer, model, torch.tensor(-1.0), None, 1)  # accumulation: same step again
    r = cb.result()
    assert r.steps.tolist() == [0, 3, 6]
    np.testing.assert_allclose(r.train_losses[1:], [3.0, 6.0])
    with pytest.raises(TypeError, match="CurvatureTracker"):
        type(cb)(object())


def test_missing_lightning_gives_an_import_error_that_says_what_to_install(monkeypatch, fresh_callback_cache):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now fails
    model, X, Y = _problem(seed=10)
    tracker = CurvatureTracker(square_loss, (X, Y))
    with pytest.raises(ImportError, match="pip install lightning"):
        lightning_callback(tracker)
    with pytest.raises(ImportError, match="tracker.step"):
        traj.CurvatureCallback  # noqa: B018
    with pytest.raises(AttributeError):
        traj.NotAThing  # noqa: B018
    with pytest.raises(ValueError, match="flavor"):
        lightning_callback(tracker, flavor="keras")


def test_importing_shapelens_does_not_import_lightning():
    import subprocess

    code = ("import sys, shapelens, shapelens.curvature.trajectory; "
            "print(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
