"""Batched FRD radiomics: equal to PyRadiomics (frd-score v1 settings) on tiny images; batching; bad input.

The large parity check (300 CBIS-DDSM + 300 PCam patches, FRD on 1,000 vs 402)
is bench/frd_parity.py; these run in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oncosynth.errors import ConfigError, DataError
from oncosynth.metrics.radiomics import extract, feature_names
from oncosynth.metrics.radiomics import preprocess, wavelet
from oncosynth.metrics.radiomics.images import extract_files, read_grey


def _images(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """8-bit grey images with texture and a flat (saturated) block.

    The flat block matters: its wavelet detail values are 0 in exact
    arithmetic and ±1e-14 in floating point, right on a bin edge.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 220, size=(n, size // 4, size // 4))
    x = np.kron(coarse, np.ones((4, 4))) + rng.normal(0, 12, size=(n, size, size))
    x[:, : size // 3, : size // 3] = 255
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _write(images: np.ndarray, folder):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def test_batch_of_many_equals_one_at_a_time():
    x = _images(4, 32, seed=1).astype(np.float64)
    together = extract(x)
    alone = np.concatenate([extract(x[i:i + 1]) for i in range(len(x))])
    assert together.shape == (4, len(feature_names())) == (4, 398)
    np.testing.assert_allclose(together, alone, rtol=1e-12, atol=0)
    assert np.isfinite(together).all()


def test_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="even"):
        extract(np.zeros((1, 31, 32)))
    with pytest.raises(ConfigError, match="B×H×W"):
        extract(np.zeros((32, 32)))
    from PIL import Image

    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    with pytest.raises(DataError, match="palette.png.*mode P"):
        read_grey(tmp_path / "palette.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_grey(tmp_path / "broken.png")


# ------------------------------------------------- against PyRadiomics (optional)
@pytest.fixture(scope="module")
def pyradiomics_v1():
    pytest.importorskip("radiomics", reason="parity needs pyradiomics")
    frd_module = pytest.importorskip("frd_score.frd", reason="parity needs frd-score")
    import logging

    frd_module._ensure_radiomics()
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = frd_module.get_feature_extractor(frd_module.FRD_VERSION_V1, image_dim=2)

    def run(path):
        values, named, _ = frd_module.process_image_mask_pair((str(path), None), feature_extractor=extractor,
                                                              frd_version=frd_module.FRD_VERSION_V1)
        return np.asarray(values), list(named)

    return run


def test_preprocessing_is_bit_for_bit(pyradiomics_v1):
    import SimpleITK as sitk
    from radiomics import imageoperations

    image = _images(1, 32, seed=2)[0].astype(np.float32)
    sitk_image = sitk.GetImageFromArray(image[None])
    mask = np.ones((1, 32, 32), np.uint8)
    mask[0, 0, 0] = 0
    sitk_mask = sitk.GetImageFromArray(mask)
    sitk_mask.CopyInformation(sitk_image)
    normalised = imageoperations.normalizeImage(sitk_image, normalizeScale=100)
    resampled, resampled_mask = imageoperations.resampleImage(
        normalised, sitk_mask, resampledPixelSpacing=[2, 2, 0], interpolator="sitkBSpline", padDistance=10)
    ours = preprocess.resample(preprocess.normalize(torch.from_numpy(image[None].astype(np.float64))))
    assert np.array_equal(ours[0].numpy(), sitk.GetArrayFromImage(resampled)[0])
    bands = wavelet.wavelet_bands(ours)
    for band, name, _ in imageoperations.getWaveletImage(resampled, resampled_mask, force2D=True,
                                                          force2Ddimension=0):
        reference = sitk.GetArrayFromImage(band)[0]
        assert np.array_equal(bands[name.split("-")[1]][0].numpy(), reference), name
        bins, _ = preprocess.discretize(bands[name.split("-")[1]])
        reference_bins, _ = imageoperations.binImage(reference[None], np.ones((1,) + reference.shape, bool),
                                                     binWidth=5)
        assert np.array_equal(bins.numpy(), reference_bins), name


def test_features_equal_pyradiomics(tmp_path, pyradiomics_v1):
    square = _write(_images(2, 32, seed=3), tmp_path / "square")
    wide = _write(_images(2, 40, seed=4)[:, :24, :], tmp_path / "wide")  # 24×40: grouped by size
    paths = [square[0], wide[0], square[1], wide[1]]
    ours = extract_files(paths)
    for path, row in zip(paths, ours):
        reference, names = pyradiomics_v1(path)
        assert names == feature_names()
        scale = np.maximum(np.abs(reference), 1e-9)
        worst = int(np.argmax(np.abs(row - reference) / scale))
        assert np.abs(row - reference)[worst] / scale[worst] < 1e-9, (path.name, names[worst], row[worst],
                                                                      reference[worst])


def test_frd_backends_agree_and_are_recorded(tmp_path, pyradiomics_v1):
    from oncosynth.metrics import frd as frd_lib

    a = _write(_images(4, 32, seed=5), tmp_path / "a")[0].parent
    b = _write(_images(4, 32, seed=6) // 2 + 60, tmp_path / "b")[0].parent
    batched = frd_lib.frd(a, b, workers=1, backend="batched")
    reference = frd_lib.frd(a, b, workers=1, backend="pyradiomics")
    assert math.isfinite(batched.value)
    assert batched.value == pytest.approx(reference.value, rel=1e-9)
    assert batched.to_json()["frd_backend"] == "batched" and reference.to_json()["frd_backend"] == "pyradiomics"
    with pytest.raises(ConfigError, match="backend"):
        frd_lib.frd(a, b, backend="fast")
