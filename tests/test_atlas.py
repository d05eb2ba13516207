"""The atlas: write_atlas renders sections faithfully, the demo atlas is complete and
deterministic, and a real headless browser (Debian's chromium) shows the layer-ID figure."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from shapelens.atlas import Section, Table, write_atlas
from shapelens.atlas.demo import run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers

class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: dict[str, dict] = {}
        self.body: dict = {}
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs[a.get("id", f"#{len(self.imgs)}")] = a
        if tag == "body":
            self.body = a
        for name in ("src", "href"):
            v = a.get(name) or ""
            if re.match(r"^(https?:)?//", v) or (tag == "link" and name == "href"):
                self.external.append(f"<{tag} {name}={v[:60]}>")
        if tag == "script" and a.get("src"):
            self.external.append(f"<script src={a['src'][:60]}>")


def _parse(html: str) -> _Imgs:
    p = _Imgs()
    p.feed(html)
    return p


def _png_from_data_uri(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):])


def _decode_png(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


# --------------------------------------------------------------------------- write_atlas

@dataclasses.dataclass(frozen=True)
class _FakeResult:
    values: tuple
    n: int = 3

    def to_dict(self):
        return {"values": list(self.values), "n": self.n, "missing": float("nan")}

    def plot(self, ax=None):
        ax.plot(range(len(self.values)), self.values, color="#ff0000", linewidth=4)
        return ax


def test_write_atlas_renders_sections_tables_and_json(tmp_path):
    s1 = Section(
        id="first-section",
        title="First <section>",
        text="What it means & how to read it.",
        result=_FakeResult((1.0, 3.0, 2.0)),
        summary="peak 3.0",
        table=Table(columns=("name", "value"), rows=(("a", 1.23456), ("b", float("nan")), ("c", 7))),
    )
    s2 = Section(id="no-figure", title="Text only", text="No plot here.", result={"x": 1})
    paths = write_atlas([s1, s2], tmp_path / "out", title="Test atlas", meta={"seed": 5, "timings": {"fit_s": 0.5}})

    assert paths.html.is_file() and paths.json.is_file()
    assert [p.name for p in paths.figures] == ["first-section.png"]
    assert paths.summaries == (("first-section", "First <section>", "peak 3.0"), ("no-figure", "Text only", ""))

    doc = json.loads(paths.json.read_text())
    assert doc["title"] == "Test atlas"
    assert doc["meta"]["seed"] == 5
    assert doc["meta"]["timings"]["fit_s"] == 0.5 and doc["meta"]["timings"]["render_s"] >= 0
    for key in ("shapelens_version", "torch_version", "date"):
        assert doc["meta"][key]
    assert [s["id"] for s in doc["sections"]] == ["first-section", "no-figure"]
    assert doc["sections"][0]["result"] == {"values": [1.0, 3.0, 2.0], "n": 3, "missing": None}
    assert doc["sections"][0]["table"]["rows"][1] == ["b", None]
    assert doc["sections"][1]["result"] == {"x": 1}

    html = paths.html.read_text()
    parsed = _parse(html)
    assert list(parsed.imgs) == ["first-section"]
    png = _png_from_data_uri(parsed.imgs["first-section"]["src"])
    assert png.startswith(PNG_MAGIC) and png == paths.figures[0].read_bytes()
    img = _decode_png(png)
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.1) & (img[..., 2] < 0.1)
    assert red.sum() > 100, "the result's own plot(ax) must be what is embedded"
    # escaping, table formatting, no external resources
    assert "First &lt;section&gt;" in html and "First <section>" not in html
    assert "1.23" in html and "\u2014" in html
    assert parsed.external == []


def test_write_atlas_refuses_bad_sections(tmp_path):
    with pytest.raises(ValueError, match="lower-case letters"):
        Section(id="Bad Id", title="t", text="x")
    s = Section(id="dup", title="t", text="x")
    with pytest.raises(ValueError, match="share the id 'dup'"):
        write_atlas([s, s], tmp_path)
    with pytest.raises(ValueError, match="at least one Section"):
        write_atlas([], tmp_path)
    with pytest.raises(ValueError, match="2 cells but there are 3 columns"):
        Table(columns=("a", "b", "c"), rows=((1, 2),))


# --------------------------------------------------------------------------- the demo

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas")
    return run_demo(out, seed=0)


def test_demo_writes_html_json_and_figures(demo):
    assert demo.html.name == "index.html" and demo.html.is_file()
    assert demo.json.name == "atlas.json" and demo.json.is_file()
    assert [p.name for p in demo.figures] == ["layer-id-profile.png", "data-id.png", "curvature-spectrum.png",
                                              "loss-landscape.png", "topology-betti.png", "topology-diagram.png",
                                              "symmetry-input.png", "regions.png", "structure-diagram.png",
                                              "structure-fibers.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in demo.figures)


def test_demo_json_layer_profile_first_and_finite(demo):
    doc = json.loads(demo.json.read_text())
    first = doc["sections"][0]
    assert first["id"] == "layer-id-profile"
    for name in ("twonn", "mle"):
        prof = first["result"][name]
        assert prof["type"] == "LayerProfile"
        assert prof["layers"] == ["fc1", "fc2", "fc3", "out"]
        assert prof["ambient_dims"] == [128, 64, 32, 10]
        dims = prof["dimensions"]
        assert all(d is not None and math.isfinite(d) for d in dims), dims
        # an intrinsic dimension is positive and cannot exceed the layer's width
        assert all(0 < d <= w for d, w in zip(dims, prof["ambient_dims"])), dims
        assert prof["n_points"] == 1797
    # table: input row then one row per layer
    assert [r[0] for r in first["table"]["rows"]] == ["input (pixels)", "fc1", "fc2", "fc3", "out"]

    data = doc["sections"][1]
    assert data["id"] == "data-id"
    res = data["result"]
    assert res["methods"] == ["twonn", "mle", "gride", "lpca", "corr"]
    assert all(math.isfinite(d) and 1 < d < 64 for d in res["dimensions"]), res["dimensions"]

    meta = doc["meta"]
    assert meta["seed"] == 0
    # a 64-128-64-32-10 MLP reaches well above 90% test accuracy on the digits
    assert meta["test_accuracy"] > 0.9 and meta["train_accuracy"] > 0.95
    for key in ("shapelens_version", "torch_version", "date", "timings"):
        assert meta[key]
    assert {"train_s", "profile_twonn_s", "profile_mle_s", "data_id_s", "render_s"} <= set(meta["timings"])


def test_demo_curvature_sections_match_the_library(demo):
    """The spectrum and landscape sections hold the numbers a direct library call gives on the
    same trained model and training split."""
    import torch
    from torch import nn

    from shapelens.atlas.demo import demo_model
    from shapelens.curvature import Hessian, eigenvalues

    doc = json.loads(demo.json.read_text())
    by_id = {s["id"]: s for s in doc["sections"]}
    spec, land = by_id["curvature-spectrum"]["result"], by_id["loss-landscape"]["result"]
    model, X, y = demo_model(0)
    H = Hessian(model, nn.CrossEntropyLoss(), (X, y))
    top = eigenvalues(H, k=5, tol=1e-8).eigenvalues[::-1]
    assert spec["n_params"] == H.dim == 18986 and spec["n_samples"] == len(y)
    np.testing.assert_allclose(spec["top_eigenvalues"], top, rtol=1e-3)
    assert spec["top_eigenvalues"][0] > 0 and spec["trace"] > sum(spec["top_eigenvalues"])
    assert spec["blocks"] == ["fc1", "fc2", "fc3", "out"]
    # every block's top eigenvalue is at most the whole Hessian's (Cauchy interlacing)
    assert max(spec["block_top_eigenvalues"]) <= spec["top_eigenvalues"][0] * (1 + 1e-4)
    d = spec["density"]
    g, f = np.array(d["grid"]), np.array(d["density"])
    assert (np.diff(g) * (f[1:] + f[:-1]) / 2).sum() == pytest.approx(1.0, abs=0.02)  # a density: mass 1
    Z = np.array(land["losses"], dtype=float)
    assert Z.shape == (21, 21) and np.isfinite(Z).all()
    with torch.no_grad():
        loss = float(nn.CrossEntropyLoss()(model(X), y))
    assert land["center_loss"] == pytest.approx(loss, rel=1e-5) and Z[10, 10] == pytest.approx(loss, rel=1e-5)
    assert Z.min() >= loss - 1e-6  # trained weights: the centre is the lowest point of the plane


def test_demo_topology_sections_match_the_library(demo):
    """The Betti table and the last hidden layer's diagram are what direct library calls give."""
    from shapelens.atlas.demo import _prepare
    from shapelens.probe import capture
    from shapelens.topology import layer_profile, persistence

    doc = json.loads(demo.json.read_text())
    by_id = {s["id"]: s for s in doc["sections"]}
    betti, dgm = by_id["topology-betti"], by_id["topology-diagram"]["result"]
    d = _prepare(0)  # the trained model and all the digits, as the atlas uses them
    model, X, y = d["model"], d["X"], d["y"]
    prof = layer_profile(model, X, y, layers=["relu1", "relu2", "relu3"], maxdim=1, max_points=150, seed=0, device="cpu")
    assert betti["result"]["layers"] == ["input", "relu1", "relu2", "relu3"]
    assert betti["result"]["betti"] == prof.betti.tolist()
    assert [r[0] for r in betti["table"]["rows"]] == list(prof.layers)
    np.testing.assert_allclose([r[2] for r in betti["table"]["rows"]], prof.betti[:, :, 0].mean(axis=1))
    ref = persistence(capture(model, X, layers=["relu3"], device="cpu")["relu3"], 1, max_points=500, seed=0)
    assert dgm["n_used"] == 500 and dgm["n_points"] == len(X)
    assert dgm["covering_radius"] == pytest.approx(ref.covering_radius)
    for k in range(2):
        got = np.array([[b, np.inf if d == "inf" else d] for b, d in dgm["dgms"][k]], dtype=float)
        np.testing.assert_allclose(got, ref[k], rtol=1e-9)


def test_demo_symmetry_section_matches_the_library(demo):
    """The equivariance table is what symmetry_survey and a by-hand shift give on the test digits."""
    from shapelens.atlas.demo import _prepare
    from shapelens.symmetry import shift
    from shapelens.symmetry.survey import symmetry_survey

    doc = json.loads(demo.json.read_text())
    sec = {s["id"]: s for s in doc["sections"]}["symmetry-input"]
    d = _prepare(0)
    model, X = d["model"], d["X"][d["test_idx"]]
    ref = symmetry_survey(model, X, image_shape=(1, 8, 8), seed=0)
    assert sec["result"]["transforms"] == list(ref.transforms)
    np.testing.assert_allclose(sec["result"]["relative_change"], ref.relative_change, rtol=1e-5)
    np.testing.assert_allclose(sec["result"]["lie_relative"], ref.lie_relative, rtol=1e-5)
    with torch.no_grad():
        y0 = model(X)
        y1 = model(shift(X.reshape(-1, 1, 8, 8), 1, "x", padding="zeros").reshape(len(X), -1))
    by_hand = ((y1 - y0).norm(dim=1) / y0.norm(dim=1)).mean().item()
    assert sec["table"]["rows"][0][0] == "shift right 1 px"
    assert sec["table"]["rows"][0][1] == pytest.approx(by_hand, rel=1e-5)
    assert sec["table"]["rows"][0][2] == pytest.approx(100 * (y1.argmax(1) == y0.argmax(1)).float().mean().item())
    # a plain MLP is not invariant to any of these; a 1-pixel shift still keeps some predictions
    assert all(c > 1e-3 for c in ref.relative_change) and 0 < ref.agreement[0] < 1


def test_demo_regions_section_matches_the_library(demo):
    """The regions section is the partition a direct call gives on the same three training digits."""
    from shapelens.atlas.demo import _prepare, _three_of_different_classes
    from shapelens.regions import Plane, partition

    doc = json.loads(demo.json.read_text())
    sec = {s["id"]: s for s in doc["sections"]}["regions"]
    d = _prepare(0)
    X, y = d["X"][d["train_idx"]], d["y"][d["train_idx"]]
    idx = _three_of_different_classes(y, 0)
    assert len({int(y[i]) for i in idx}) == 3
    plane, bounds = Plane.from_points(X[idx[0]], X[idx[1]], X[idx[2]])
    ref = partition(d["model"], plane, bounds)
    assert sec["result"]["n_regions"] == ref.n_regions > 1
    rows = dict((r[0], r[1]) for r in sec["table"]["rows"])
    assert rows["regions in the slice"] == ref.n_regions
    assert rows["decision-boundary segments"] == len(ref.boundary)
    assert rows["median region area (share of the slice)"] == pytest.approx(np.median(ref.areas) / ref.areas.sum())


def test_demo_structure_sections_match_the_library(demo):
    """The structure sections are the bundle network's diagram check and fiber distances that direct
    calls give (the demo's bundle network is deterministic for its seed)."""
    from shapelens.atlas.demo import _torus_fiber, demo_bundle
    from shapelens.structure.bundle import wasserstein1

    doc = json.loads(demo.json.read_text())
    sec = {s["id"]: s for s in doc["sections"]}
    net, x, y = demo_bundle(0)
    ref = net.check(x, y)
    got = sec["structure-diagram"]["result"]["equations"]
    assert [e["name"] for e in got] == [e.name for e in ref.equations] == ["p_B . phi = pi", "phi^-1 . phi = id"]
    for e, r in zip(got, ref.equations):
        assert e["mean"] == pytest.approx(r.mean, rel=1e-6) and e["max"] == pytest.approx(r.max, rel=1e-6)
        assert e["n_examples"] == 500
    rows = sec["structure-fibers"]["table"]["rows"]
    assert [r[0] for r in rows] == pytest.approx([0.0, 120.0, 240.0])
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    a = angles[1]
    gen = net.sample_fiber(np.stack([np.cos(angles), np.sin(angles)], 1), 300, seed=0).numpy()[1]
    assert rows[1][1] == pytest.approx(wasserstein1(gen, _torus_fiber(a, 300, 11)), rel=1e-6)
    # the true fiber really is the tube circle over the base angle
    f = _torus_fiber(a, 300, 11)
    assert np.allclose(np.hypot(np.hypot(f[:, 0], f[:, 1]) - 2.0, f[:, 2]), 1.0)
    assert np.allclose(np.arctan2(f[:, 1], f[:, 0]), np.arctan2(np.sin(a), np.cos(a)))


def test_structure_section_of_models_not_built_from_a_diagram_is_empty():
    from torch import nn

    from shapelens.atlas.structure import structure_sections

    assert structure_sections(nn.Linear(2, 2), None) == []


def test_demo_html_embeds_the_profile_figure(demo):
    html = demo.html.read_text()
    parsed = _parse(html)
    assert "layer-id-profile" in parsed.imgs
    img = parsed.imgs["layer-id-profile"]
    assert img["src"].startswith("data:image/png;base64,")
    assert "profile" in img["alt"].lower()
    png = _png_from_data_uri(img["src"])
    assert png == (demo.out_dir / "figures" / "layer-id-profile.png").read_bytes()
    assert _decode_png(png).shape[0] > 100
    assert parsed.external == [], parsed.external
    # the page explains itself and shows the numbers
    assert "<table" in html and "Layer intrinsic-dimension profile" in html and "Ansuini" in html
    assert html.index('id="layer-id-profile"') < html.index('id="data-id"')


def test_demo_is_deterministic(demo, tmp_path):
    again = run_demo(tmp_path / "again", seed=0)
    a = json.loads(demo.json.read_text())
    b = json.loads(again.json.read_text())
    assert a["sections"][0]["table"]["rows"] == b["sections"][0]["table"]["rows"]
    for est in ("twonn", "mle"):
        assert a["sections"][0]["result"][est]["dimensions"] == b["sections"][0]["result"][est]["dimensions"]
    assert a["sections"][1]["result"]["dimensions"] == b["sections"][1]["result"]["dimensions"]
    assert a["meta"]["test_accuracy"] == b["meta"]["test_accuracy"]
    assert a["meta"]["final_train_loss"] == b["meta"]["final_train_loss"]


# --------------------------------------------------------------------------- real browser

def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = (
            "Debian's chromium is not installed, so the atlas cannot be checked in a real browser; "
            "install it with `apt-get install -y chromium` (the test command does this)."
        )
        if _in_ci():
            pytest.fail(msg + " CI=true: this check is required.")
        pytest.skip(msg + " (skipped outside CI only)")
    return exe


def _chromium_cmd(exe: str, tmp_path: Path) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]


def test_headless_chromium_shows_the_profile_figure(demo, tmp_path):
    exe = _chromium()
    url = demo.html.resolve().as_uri()
    base = _chromium_cmd(exe, tmp_path)
    env = dict(os.environ, HOME=str(tmp_path))

    # 1. the rendered DOM: the inline script records each figure's decoded size
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=180, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _parse(dom.stdout)
    assert "layer-id-profile" in parsed.imgs, "the profile <img> is missing from the rendered DOM"
    img = parsed.imgs["layer-id-profile"]
    png = _decode_png((demo.out_dir / "figures" / "layer-id-profile.png").read_bytes())
    assert img.get("data-loaded") == "true", img.get("data-loaded")
    assert int(img["data-natural-width"]) == png.shape[1]
    assert int(img["data-natural-height"]) == png.shape[0]
    n_fig = len(demo.figures)
    assert parsed.body.get("data-images-ready") == f"{n_fig}/{n_fig}"

    # 2. the screenshot: not blank, and the figure's own line colours are on screen
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        base + [f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = _decode_png(shot.read_bytes())[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert float(pixels.std()) > 0.02, "the screenshot is a single colour: the page did not render"
    rgb = np.round(pixels * 255).astype(int)

    def count(color, tol=14):
        return int((np.abs(rgb - np.array(color)).max(axis=-1) <= tol).sum())

    # matplotlib's default first two colours: the TwoNN (blue) and MLE (orange) profile curves
    assert count((31, 119, 180)) > 300, "the TwoNN profile curve is not visible in the browser"
    assert count((255, 127, 14)) > 300, "the MLE profile curve is not visible in the browser"
