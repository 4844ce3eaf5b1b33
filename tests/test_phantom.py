"""The procedural phantom: reproducible, patient-grouped, well-formed, mammogram-like spectrum."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oncosynth.data import load_dataset
from oncosynth.data.phantom import PhantomConfig, make_phantom, render_view, tissue_background, write_phantom
from oncosynth.errors import ConfigError

SMALL = dict(n=40, size=32, seed=7)


def _read_patients(folder: Path) -> dict[str, str]:
    with open(folder / "patients.csv", newline="") as handle:
        return {row["file"]: row["patient"] for row in csv.DictReader(handle)}


def _radial_power_slope(fields: np.ndarray) -> float:
    """Slope of log(radially averaged power) vs log(frequency), averaged over fields."""
    size = fields.shape[-1]
    power = np.mean([np.abs(np.fft.fft2(f - f.mean())) ** 2 for f in fields], axis=0)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    edges = np.arange(2, size // 4 + 1) / size  # 2 cycles per image up to a quarter of Nyquist*2
    index = np.digitize(radius.ravel(), edges)
    freqs = 0.5 * (edges[:-1] + edges[1:])
    radial = np.array([power.ravel()[index == i].mean() for i in range(1, len(edges))])
    return float(np.polyfit(np.log(freqs), np.log(radial), 1)[0])


def test_same_seed_same_bytes(tmp_path):
    config = PhantomConfig(**SMALL)
    a, b = write_phantom(tmp_path / "a", config), write_phantom(tmp_path / "b", config)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*.png"))
    for name in files + ["patients.csv"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    images_1, labels_1, _, _ = make_phantom(config)
    images_2, labels_2, _, _ = make_phantom(config)
    assert np.array_equal(images_1, images_2) and labels_1 == labels_2
    other, _, _, _ = make_phantom(PhantomConfig(**{**SMALL, "seed": 8}))
    assert not np.array_equal(images_1, other)


def test_in_memory_matches_files(tmp_path):
    config = PhantomConfig(**SMALL)
    images, labels, patients, splits = make_phantom(config)
    assert images.dtype == np.float32 and images.shape == (40, 1, 32, 32)
    assert 0.0 <= images.min() and images.max() <= 1.0
    folder = write_phantom(tmp_path / "ph", config)
    by_key = {}
    for file, patient in _read_patients(folder).items():
        split, label, name = file.split("/")
        view = int(name.rsplit("_i", 1)[1].removesuffix(".png"))
        by_key[(patient, view)] = (split, label, np.asarray(Image.open(folder / file)))
    seen = defaultdict(int)
    for image, label, patient, split in zip(images, labels, patients, splits):
        on_disk = by_key[(patient, seen[patient])]
        seen[patient] += 1
        assert on_disk[:2] == (split, label)
        assert np.array_equal(np.round(image[0] * 255).astype(np.uint8), on_disk[2])


def test_class_counts_follow_fractions():
    _, labels, _, _ = make_phantom(PhantomConfig(n=50, size=32, malignant_fraction=0.4, healthy_fraction=0.2))
    assert {c: labels.count(c) for c in set(labels)} == {"malignant": 20, "healthy": 10, "benign": 20}
    _, labels, _, _ = make_phantom(PhantomConfig(n=30, size=32, malignant_fraction=1.0))
    assert set(labels) == {"malignant"}


def test_patients_are_grouped_and_splits_stratified():
    config = PhantomConfig(n=300, size=32, malignant_fraction=0.5, seed=3)
    _, labels, patients, splits = make_phantom(config)
    label_of, split_of, images_of = {}, {}, defaultdict(int)
    for label, patient, split in zip(labels, patients, splits):
        assert label_of.setdefault(patient, label) == label, f"{patient} has two classes"
        assert split_of.setdefault(patient, split) == split, f"{patient} is in two splits"
        images_of[patient] += 1
    assert set(images_of.values()) == {1, 2, 3}  # the default 1-3 images per patient
    for label in ("benign", "malignant"):
        in_class = [s for s, lab in zip(splits, labels) if lab == label]
        shares = [in_class.count(s) / len(in_class) for s in ("train", "val", "test")]
        assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.03)


def test_loads_with_the_data_layer(tmp_path):
    config = PhantomConfig(n=60, size=32, healthy_fraction=0.2, seed=1)
    folder = write_phantom(tmp_path / "ph", config)
    dataset = load_dataset(folder)
    assert sorted(dataset.classes) == ["benign", "healthy", "malignant"]
    assert len(dataset) == 60 and set(dataset.splits) == {"train", "val", "test"}
    _, labels, patients, splits = make_phantom(config)
    assert sorted((r.label, r.patient, r.split) for r in dataset.records) == sorted(zip(labels, patients, splits))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "phantom" and manifest["config"] == config.to_dict()
    assert manifest["seed"] == 1 and "numpy" in manifest["versions"]
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 60


def test_healthy_images_have_no_central_mass():
    config = PhantomConfig(n=90, size=32, malignant_fraction=1 / 3, healthy_fraction=1 / 3, difficulty="easy")
    images, labels, _, _ = make_phantom(config)
    centre_minus_rim = images[:, 0, 12:20, 12:20].mean((1, 2)) - images[:, 0].mean((1, 2))
    labels = np.array(labels)
    healthy = centre_minus_rim[labels == "healthy"].mean()
    assert abs(healthy) < 0.02  # no lesion: the centre is no brighter than the rest
    for lesion in ("benign", "malignant"):
        assert centre_minus_rim[labels == lesion].mean() > healthy + 0.03


@pytest.mark.parametrize("bad", [
    dict(malignant_fraction=1.2), dict(malignant_fraction=-0.1), dict(healthy_fraction=1.5),
    dict(malignant_fraction=0.7, healthy_fraction=0.5), dict(size=16), dict(difficulty="extreme"),
    dict(n=0), dict(seed=-1), dict(split=(0.5, 0.5, 0.5)), dict(images_per_patient=(3, 1)),
])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        PhantomConfig(**bad)


def test_rewrite_is_idempotent_and_foreign_folders_are_refused(tmp_path):
    config = PhantomConfig(**SMALL)
    folder = write_phantom(tmp_path / "ph", config)
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert write_phantom(folder, config) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps  # nothing rewritten
    with pytest.raises(ConfigError, match="ph"):
        write_phantom(folder, PhantomConfig(**{**SMALL, "seed": 99}))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="mine"):
        write_phantom(foreign, config)
    assert (foreign / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list(write_phantom(empty, config).rglob("*.png"))) == 40


def test_leftover_from_an_interrupted_run_is_replaced(tmp_path):
    partial = tmp_path / ".ph.partial"
    (partial / "train" / "benign").mkdir(parents=True)
    (partial / "phantom-partial.json").write_text("{}")
    (partial / "train" / "benign" / "half.png").write_bytes(b"\x89PNG")
    folder = write_phantom(tmp_path / "ph", PhantomConfig(**SMALL))
    assert not partial.exists() and not (folder / "train" / "benign" / "half.png").exists()


def test_background_spectrum_is_power_law_beta_3():
    rng = np.random.default_rng(0)
    fields = np.stack([tissue_background(rng, 128, density=rng.uniform(), beta=3.0,
                                         orientation=rng.uniform(0, np.pi), anisotropy=1.0) for _ in range(16)])
    assert -3.6 < _radial_power_slope(fields) < -2.4
    # The rendered lesion-free images (strands, noise and clipping included) keep it.
    traits = {"density": 0.5, "beta": 3.0, "orientation": 0.3, "anisotropy": 1.0, "strands": 8.0, "edge": False}
    images = np.stack([render_view(rng, traits, 128, noise=0.005) for _ in range(16)])
    assert -3.6 < _radial_power_slope(images) < -2.4


def test_cli_writes_a_phantom(tmp_path):
    from typer.testing import CliRunner

    from oncosynth.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["data", "phantom", str(out), "--n", "30", "--size", "32",
                                      "--healthy-fraction", "0.2", "--difficulty", "hard", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["config"]["difficulty"] == "hard"
    assert len(list(out.rglob("*.png"))) == 30
    result = CliRunner().invoke(app, ["data", "phantom", str(tmp_path / "bad"), "--malignant-fraction", "2"])
    assert isinstance(result.exception, ConfigError) and not (tmp_path / "bad").exists()
