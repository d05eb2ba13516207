"""shapelens.io.load_points: every supported format round-trips, and unsafe or unknown files are refused."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch

from shapelens.io import SUPPORTED_EXTENSIONS, LoadError, load_arrays, load_points


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)


# ------------------------------------------------------------------ numpy

def test_npy_roundtrip(tmp_path, X):
    path = tmp_path / "points.npy"
    np.save(path, X)
    out = load_points(path)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X)


def test_npy_pickled_object_array_refused_unless_opted_in(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(LoadError, match=r"pickled.*arbitrary code.*allow_pickle=True"):
        load_points(path)
    # opting in loads the pickle, but an object array is still not a point cloud
    with pytest.raises(LoadError, match="dtype=object"):
        load_points(path, allow_pickle=True)


def test_npy_pickled_numeric_object_array_loads_with_opt_in(tmp_path, X):
    path = tmp_path / "objects.npy"
    np.save(path, X.astype(object), allow_pickle=True)
    with pytest.raises(LoadError, match="allow_pickle"):
        load_points(path)
    with pytest.raises(LoadError, match="dtype=object"):
        load_points(path, allow_pickle=True)


def test_npz_single_array_needs_no_key(tmp_path, X):
    path = tmp_path / "one.npz"
    np.savez(path, acts=X)
    np.testing.assert_array_equal(load_points(path), X)


def test_npz_several_arrays_need_a_key_and_the_message_lists_them(tmp_path, X):
    path = tmp_path / "many.npz"
    np.savez(path, layer1=X, layer2=2 * X)
    with pytest.raises(LoadError, match=r"2 arrays: 'layer1', 'layer2'.*key"):
        load_points(path)
    np.testing.assert_array_equal(load_points(path, key="layer2"), 2 * X)
    with pytest.raises(LoadError, match=r"no array named 'layer3'.*'layer1', 'layer2'"):
        load_points(path, key="layer3")


def test_npz_pickled_member_refused(tmp_path, X):
    path = tmp_path / "obj.npz"
    np.savez(path, good=X, bad=np.array([object()], dtype=object))
    np.testing.assert_array_equal(load_points(path, key="good"), X)
    with pytest.raises(LoadError, match="allow_pickle=True"):
        load_points(path, key="bad")


# ------------------------------------------------------------------ torch

def test_pt_tensor(tmp_path, X):
    path = tmp_path / "points.pt"
    torch.save(torch.from_numpy(X), path)
    np.testing.assert_array_equal(load_points(path), X)


def test_pth_dict_of_tensors_with_key(tmp_path, X):
    path = tmp_path / "acts.pth"
    torch.save({"fc1": torch.from_numpy(X), "fc2": torch.from_numpy(3 * X), "step": 7}, path)
    with pytest.raises(LoadError, match=r"2 tensors: 'fc1', 'fc2'"):
        load_points(path)
    np.testing.assert_array_equal(load_points(path, key="fc2"), 3 * X)
    with pytest.raises(LoadError, match="'step' is a int, not a tensor"):
        load_points(path, key="step")


def test_pt_bfloat16_widened(tmp_path, X):
    path = tmp_path / "bf16.pt"
    torch.save(torch.from_numpy(X).to(torch.bfloat16), path)
    out = load_points(path)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, X, rtol=1e-2, atol=1e-2)


def test_pt_pickled_object_refused_unless_opted_in(tmp_path, X):
    path = tmp_path / "pickled.pt"
    torch.save({"points": torch.from_numpy(X), "when": datetime.date(2024, 1, 1)}, path)
    with pytest.raises(LoadError, match=r"pickled.*arbitrary code.*allow_pickle=True"):
        load_points(path, key="points")
    np.testing.assert_array_equal(load_points(path, key="points", allow_pickle=True), X)


def test_pt_non_tensor_content_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(LoadError, match="not a tensor or a dict of tensors"):
        load_points(path)


def test_pt_single_tensor_with_key_refused(tmp_path, X):
    path = tmp_path / "points.pt"
    torch.save(torch.from_numpy(X), path)
    with pytest.raises(LoadError, match="single tensor.*drop the key"):
        load_points(path, key="x")


# ------------------------------------------------------------------ safetensors

def test_safetensors_single_and_keyed(tmp_path, X):
    from safetensors.numpy import save_file

    one = tmp_path / "one.safetensors"
    save_file({"emb": X}, str(one))
    np.testing.assert_array_equal(load_points(one), X)

    many = tmp_path / "many.safetensors"
    save_file({"a": X, "b": X[:10].copy()}, str(many))
    with pytest.raises(LoadError, match=r"2 tensors: 'a', 'b'"):
        load_points(many)
    np.testing.assert_array_equal(load_points(many, key="b"), X[:10])
    with pytest.raises(LoadError, match="no tensor named 'c'"):
        load_points(many, key="c")


def test_safetensors_bfloat16(tmp_path, X):
    from safetensors.torch import save_file

    path = tmp_path / "bf16.safetensors"
    save_file({"x": torch.from_numpy(X).to(torch.bfloat16)}, str(path))
    out = load_points(path)
    assert out.dtype == np.float32 and out.shape == X.shape
    np.testing.assert_allclose(out, X, rtol=1e-2, atol=1e-2)


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LoadError, match="not a readable safetensors file"):
        load_points(path)


# ------------------------------------------------------------------ text

@pytest.mark.parametrize(
    "ext, sep",
    [(".csv", ","), (".tsv", "\t"), (".txt", " "), (".txt", ","), (".txt", "\t")],
)
@pytest.mark.parametrize("header", [False, True])
def test_text_formats_with_optional_header(tmp_path, X, ext, sep, header):
    path = tmp_path / f"points{ext}"
    lines = [sep.join(f"{v!r}" for v in row.tolist()) for row in X.astype(np.float64)]
    if header:
        lines.insert(0, sep.join(f"x{i}" for i in range(X.shape[1])))
    path.write_text("\n".join(lines) + "\n")
    out = load_points(path)
    assert out.shape == X.shape
    np.testing.assert_allclose(out, X, rtol=1e-6)


def test_csv_comments_and_blank_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("# made by hand\na,b\n1,2\n\n3,4\n")
    np.testing.assert_array_equal(load_points(path), [[1, 2], [3, 4]])


def test_csv_non_numeric_body_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(LoadError, match="could not read the numbers"):
        load_points(path)


def test_csv_ragged_rows_refused(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("1,2,3\n4,5\n")
    with pytest.raises(LoadError, match="same number"):
        load_points(path)


def test_csv_header_only_refused(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("a,b\n")
    with pytest.raises(LoadError, match="only a header"):
        load_points(path)


def test_csv_key_refused(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("1,2\n")
    with pytest.raises(LoadError, match="drop the key"):
        load_points(path, key="x")


# ------------------------------------------------------------------ unknown / missing

def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "points.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(LoadError) as info:
        load_points(path)
    msg = str(info.value)
    assert "unsupported file extension '.parquet'" in msg
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in msg


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_points(tmp_path / "nope.npy")


def test_corrupt_npy(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"garbage")
    with pytest.raises(LoadError, match="not a .npy file.*np.save"):
        load_points(path)


def test_load_arrays_reads_every_named_array_and_single_arrays_under_the_empty_name(tmp_path):
    from safetensors.torch import save_file

    a, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((3, 1), dtype=np.float64)
    np.savez(tmp_path / "d.npz", X=a, Y=b)
    torch.save({"X": torch.from_numpy(a), "note": "text", "Y": torch.from_numpy(b)}, tmp_path / "d.pt")
    save_file({"X": torch.from_numpy(a), "Y": torch.from_numpy(b)}, str(tmp_path / "d.safetensors"))
    np.save(tmp_path / "d.npy", a)
    for name in ("d.npz", "d.pt", "d.safetensors"):
        got = load_arrays(tmp_path / name)
        assert sorted(got) == ["X", "Y"], name
        assert np.array_equal(got["X"], a) and np.array_equal(got["Y"], b)
    single = load_arrays(tmp_path / "d.npy")
    assert list(single) == [""] and np.array_equal(single[""], a)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LoadError, match="not a readable .npz"):
        load_arrays(tmp_path / "bad.npz")
