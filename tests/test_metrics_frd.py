"""FRD: our fast path agrees with frd_score.compute_frd; identical sets; bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("frd_score", reason="FRD needs the optional frd-score package")
pytest.importorskip("radiomics", reason="FRD needs pyradiomics")

from oncosynth.errors import DataError  # noqa: E402
from oncosynth.metrics import frd as frd_lib  # noqa: E402


def _images(n: int, seed: int, smooth: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 1, 64 // smooth, 64 // smooth, generator=g), size=(64, 64), mode="bilinear")
    return (0.2 + 0.6 * x).clamp(0, 1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("frd")
    frd_lib.write_png_folder(_images(6, 0), root / "a")
    frd_lib.write_png_folder(_images(6, 1, smooth=4), root / "b")
    return root / "a", root / "b"


@pytest.mark.slow
def test_fast_path_equals_package(folders):
    a, b = folders
    package = frd_lib.frd_package(a, b, workers=1)
    fast = frd_lib.frd(a, b, method="fast", workers=1)
    assert math.isfinite(package.value)
    assert fast.value == pytest.approx(package.value, rel=1e-6)
    assert fast.n_features > 300 and fast.n_a == fast.n_b == 6
    # per-image features are cached by content: a second call extracts nothing new
    cached = len(frd_lib._CACHE)
    again = frd_lib.frd(a, b, method="fast", workers=1)
    assert len(frd_lib._CACHE) == cached and again.value == fast.value


def test_identical_sets_give_minus_infinity_and_json_null(folders):
    a, _ = folders
    result = frd_lib.frd(a, a, method="fast", workers=1)
    assert result.value == float("-inf") and result.identical and result.d2 == 0.0
    payload = result.to_json()
    assert payload["frd"] is None and payload["frd_identical"] is True and payload["frd_d2"] == 0.0


def test_tensors_are_written_to_a_temporary_folder():
    x, y = _images(4, 2), _images(4, 3, smooth=4)
    result = frd_lib.frd(x, y, method="fast", workers=1)
    assert math.isfinite(result.value) and result.d2 > 0
    assert frd_lib.frd(x, x, workers=1).identical


def test_bad_input(tmp_path, folders):
    a, _ = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        frd_lib.frd(a, tmp_path / "empty")
    frd_lib.write_png_folder(_images(1, 4), tmp_path / "one")
    with pytest.raises(DataError, match="at least 2 images"):
        frd_lib.frd(a, tmp_path / "one", workers=1)
    with pytest.raises(DataError, match="at least 2 images"):
        frd_lib.frd_package(a, tmp_path / "one")
