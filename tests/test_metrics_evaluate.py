"""evaluate(): outputs, per-class results, resampling notes, bad input, the CLI command."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from oncosynth.errors import DataError
from oncosynth.metrics.evaluate import evaluate


def _write_folder(root, images, labels, prefix="img"):
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        mode = "L" if array.shape[0] == 1 else "RGB"
        pil = Image.fromarray(array[0].numpy() if mode == "L" else array.permute(1, 2, 0).numpy(), mode)
        pil.save(folder / f"{prefix}{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from oncosynth.data.phantom import PhantomConfig, write_phantom

    return write_phantom(tmp_path_factory.mktemp("ph") / "phantom", PhantomConfig(n=160, size=32, seed=0))


def test_evaluate_phantom_writes_json_html_csv(phantom, tmp_path):
    from oncosynth.data import load_dataset, load_images

    ds = load_dataset(phantom)
    train, test = ds.split("train"), ds.split("test")
    # "synthetic" = 4 training images copied + the validation split
    planted = load_images(train.subset(train.records[:4]))
    val = load_images(ds.split("val"))
    labels = [r.label for r in train.records[:4]] + [r.label for r in ds.split("val").records]
    synthetic = (torch.cat([planted, val]), labels)
    out = tmp_path / "eval"
    metrics = evaluate(test, synthetic, train=train, feature_net="random-cnn:0", out=out,
                       compute_frd=False, progress=False, kid_subsets=5)
    assert metrics["feature_net"] == "random-cnn[seed=0]"
    overall = metrics["results"]["overall"]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "ms_ssim_synthetic", "memorised_fraction"):
        assert key in overall
    assert set(metrics["results"]) == {"overall", *ds.classes}
    # the 2-px pattern of each set, measured by metrics.artefacts
    from oncosynth.metrics.artefacts import period2_amplitude

    assert overall["period2_real"] == pytest.approx(period2_amplitude(load_images(test)), rel=1e-5)
    assert overall["period2_synthetic"] == pytest.approx(period2_amplitude(synthetic[0]), rel=1e-5)
    # exactly the four planted copies are flagged: the validation images are other patients' images
    memo = metrics["memorisation"]
    assert sorted(e["synthetic"] for e in memo["flagged"]) == [f"synthetic[{i}]" for i in range(4)]
    assert memo["n_flagged"] == 4
    # FID in metrics.json = the Fréchet distance of the features, extracted here and computed by the test's
    # own eigen-decomposition formula (not oncosynth's fid)
    from test_metrics import _direct_fid

    from oncosynth.features import create_feature_net

    net = create_feature_net("random-cnn:0")
    with torch.no_grad():
        real_features = net(load_images(test)).double().numpy()
        synthetic_features = net(synthetic[0]).double().numpy()
    saved_fid = json.loads((out / "metrics.json").read_text())["results"]["overall"]["fid"]
    assert saved_fid == pytest.approx(_direct_fid(real_features, synthetic_features), rel=1e-5)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["manifest"]["config"]["feature_net"] == "random-cnn[seed=0]"
    html = (out / "evaluation.html").read_text()
    assert "2-px pattern synth" in html and "Memorisation" in html and "data:image/png;base64," in html and "http" not in html.split("<body>")[1]
    rows = (out / "memorisation.csv").read_text().splitlines()
    assert len(rows) == 1 + len(labels) and rows[0].startswith("synthetic,class,flagged,pixels_ratio")


@pytest.mark.slow
def test_evaluate_with_frd_per_class(phantom):
    pytest.importorskip("frd_score")
    from oncosynth.data import load_dataset

    ds = load_dataset(phantom)

    def five_per_class(split):
        part = ds.split(split)
        return part.subset([r for c in ds.classes for r in [x for x in part.records if x.label == c][:5]])

    metrics = evaluate(five_per_class("test"), five_per_class("val"), feature_net="random-cnn:0",
                       progress=False, kid_subsets=2, size=64, prdc_k=2)
    for scope, row in metrics["results"].items():
        assert row["frd_method"] == "fast" and row["frd"] is not None, scope
    assert "real images resampled from 32×32 to 64×64 (bilinear, antialiased)" in metrics["notes"]


def test_mixed_sizes_and_channels_are_resampled_with_a_note(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = _write_folder(tmp_path / "real", torch.rand(12, 1, 32, 32, generator=g), ["a", "b"] * 6)
    synth = _write_folder(tmp_path / "synth", torch.rand(12, 3, 48, 48, generator=g), ["a", "b"] * 6)
    metrics = evaluate(real, synth, feature_net="random-cnn:0", compute_frd=False, progress=False, kid_subsets=2)
    assert metrics["size"] == 32 and metrics["channels"] == 1
    assert "synthetic images resampled from 48×48 to 32×32 (bilinear, antialiased)" in metrics["notes"]
    assert "synthetic images converted from 3 to 1 channel(s)" in metrics["notes"]


def test_too_small_and_empty_sets_are_clear_errors(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = _write_folder(tmp_path / "real", torch.rand(8, 1, 16, 16, generator=g), ["a", "b"] * 4)
    one = torch.rand(1, 1, 16, 16, generator=g)
    with pytest.raises(DataError, match="needs at least 2 images, got 1"):
        evaluate(real, one, feature_net="random-cnn:0", compute_frd=False, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        evaluate(real, tmp_path / "empty", feature_net="random-cnn:0", compute_frd=False, progress=False)
    with pytest.raises(DataError, match="non-empty"):
        evaluate(real, torch.zeros(0, 1, 16, 16), feature_net="random-cnn:0", compute_frd=False, progress=False)


def test_cli_evaluate(tmp_path, phantom):
    from typer.testing import CliRunner

    from oncosynth.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["evaluate", "--real", str(phantom / "test"), "--synthetic", str(phantom / "val"),
                                      "--train", str(phantom / "train"), "--feature-net", "random-cnn:1",
                                      "--no-frd", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "random-cnn[seed=1]" in result.output
    assert (out / "metrics.json").is_file() and (out / "evaluation.html").is_file()
    bad = CliRunner().invoke(app, ["evaluate", "--real", str(tmp_path / "missing"), "--synthetic", str(phantom),
                                   "--no-frd", "--out", str(out)])
    assert bad.exit_code != 0
