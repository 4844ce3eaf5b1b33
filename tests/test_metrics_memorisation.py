"""Memorisation: planted copies of training images are flagged, unseen images are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oncosynth.errors import DataError
from oncosynth.metrics.memorisation import DEFAULT_THRESHOLD, memorisation, summarise


def _textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Phantom-like smooth random textures: blurred noise plus a bright blob, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, size // 8, size // 8, generator=g)
    x = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = torch.rand(n, 2, generator=g) - 0.5
    blob = torch.exp(-(((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 0.1))
    return (0.6 * x + 0.4 * blob[:, None]).clamp(0, 1)


def _plant(train: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """5 exact copies and 5 lightly altered ones: noise, brightness/contrast, 2-px shifts."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(train.shape[0], generator=g)[:10]
    planted = train[picks].clone()
    planted[5:7] += 0.01 * torch.randn(2, *planted.shape[1:], generator=g)
    planted[7] = planted[7] * 0.9 + 0.05
    planted[8] = torch.roll(planted[8], shifts=(2, -1), dims=(1, 2))
    planted[9] = torch.roll(planted[9], shifts=(-2, 2), dims=(1, 2))
    return planted.clamp(0, 1), picks


def _check(train, train_patients, held_out, feature_fn=None):
    planted, picks = _plant(train)
    synthetic = torch.cat([planted, held_out])
    kwargs = {}
    if feature_fn is not None:
        kwargs = {"synthetic_features": feature_fn(synthetic), "train_features": feature_fn(train)}
    result = memorisation(synthetic, train, train_patients, **kwargs)
    assert result["flagged"][:10].all(), result["ratios"][:10]
    assert not result["flagged"][10:].any(), result["ratios"][10:].min(axis=0)
    for space in result["spaces"]:  # the cutoff is the threshold, capped by the closest real pair
        assert space.cutoff == min(DEFAULT_THRESHOLD, float(space.reference_ratios.min()))
    pixel = result["spaces"][0]
    assert np.array_equal(pixel.index[:5], picks[:5].numpy())  # exact copies find their source
    summary = summarise(result, [f"t{i}" for i in range(len(train))], train_patients,
                        [f"s{i}" for i in range(len(synthetic))])
    assert summary["n_flagged"] == 10
    assert set(summary["flagged_patients"]) <= {train_patients[i] for i in picks.tolist()}
    assert summary["flagged"][0]["pixels_ratio"] == pytest.approx(0.0, abs=1e-6)
    return result


def test_planted_copies_flagged_on_random_textures():
    train = _textures(120, seed=1)
    held_out = _textures(40, seed=2)
    patients = [f"P{i // 2}" for i in range(120)]  # two images per patient

    def features(x):  # a fixed random projection of pooled pixels: a stand-in feature space
        g = torch.Generator().manual_seed(0)
        w = torch.randn(256, 32, generator=g)
        return F.avg_pool2d(x, 4).flatten(1) @ w

    result = _check(train, patients, held_out, features)
    assert [s.name for s in result["spaces"]] == ["pixels", "features"]


@pytest.mark.realdata
def test_planted_copies_flagged_on_cbis_ddsm(shared_data):
    from oncosynth.data import load_dataset, load_images

    ds = load_dataset(shared_data / "cbis-ddsm-masses")
    train_ds = ds.split("train")
    val = ds.split("val")
    train = load_images(train_ds, size=64, channels=1)
    held_out = load_images(val.subset(val.records[:60]), size=64, channels=1)
    _check(train, [r.patient for r in train_ds], held_out)


def test_same_patient_pairs_do_not_define_the_typical_distance():
    # every patient has two near-identical images; excluding same-patient pairs keeps
    # the typical distance at the between-patient scale, so held-out images are not flagged
    base = _textures(40, seed=3)
    train = torch.cat([base, (base + 0.005).clamp(0, 1)])
    patients = [f"P{i}" for i in range(40)] * 2
    result = memorisation(_textures(10, seed=4), train, patients)
    assert not result["flagged"].any()
    assert result["spaces"][0].typical > 1.0


def test_needs_training_images_from_two_patients():
    x = _textures(4)
    with pytest.raises(DataError, match="at least 2 patients"):
        memorisation(x, x, ["P0"] * 4)
    with pytest.raises(DataError, match="at least 2 training images"):
        memorisation(x, x[:1], ["P0"])
    assert DEFAULT_THRESHOLD == 0.3
