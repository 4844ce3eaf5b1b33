"""Patient-level splits, fractions, leakage, duplicates and the tensor cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oncosynth.data import Dataset, Record, cached_tensors, check_leakage, load_dataset, make_splits, sample_fraction
from oncosynth.data.splits import assert_no_leakage
from oncosynth.data.summary import summarise
from oncosynth.errors import ConfigError, DataError


def synthetic_records(n_patients=60, images_per_patient=3, malignant_share=0.3) -> Dataset:
    records = []
    for p in range(n_patients):
        label = "malignant" if p < n_patients * malignant_share else "benign"
        for i in range(images_per_patient):
            records.append(Record(f"/x/p{p}_{i}.png", label, f"P{p}", "train", "folders"))
    return Dataset(records, ["benign", "malignant"], "/x", "folders")


def test_make_splits_is_patient_level_and_stratified():
    ds = make_splits(synthetic_records(), ratios=(0.6, 0.2, 0.2), seed=3)
    assert check_leakage(ds) == []
    # per class: 18 malignant -> 11/4/3 patients, 42 benign -> 25/8/9 (rounded shares)
    for split, benign, malignant in (("train", 25, 11), ("val", 8, 4), ("test", 9, 3)):
        part = ds.split(split)
        assert len({r.patient for r in part if r.label == "benign"}) == benign
        assert len({r.patient for r in part if r.label == "malignant"}) == malignant
    again = make_splits(synthetic_records(), ratios=(0.6, 0.2, 0.2), seed=3)
    assert [r.split for r in again] == [r.split for r in ds]
    other = make_splits(synthetic_records(), ratios=(0.6, 0.2, 0.2), seed=4)
    assert [r.split for r in other] != [r.split for r in ds]


def test_bad_split_ratios():
    with pytest.raises(ConfigError):
        make_splits(synthetic_records(), ratios=(0.5, 0.2, 0.2))


def test_leakage_check_names_a_planted_patient():
    ds = make_splits(synthetic_records(), seed=0)
    victim = ds.split("test").records[0]
    leaked = ds.subset(ds.records + [Record("/x/extra.png", victim.label, victim.patient, "train", "folders")])
    assert check_leakage(leaked) == [{"patient": victim.patient, "splits": ["test", "train"]}]
    with pytest.raises(DataError, match=f"patient leakage: 1 patient.*{victim.patient}"):
        assert_no_leakage(leaked)


def test_fraction_is_patient_level_stratified_reproducible_and_nested():
    ds = synthetic_records(n_patients=100)
    small = sample_fraction(ds, 0.2, seed=1)
    patients = {r.patient for r in small}
    assert len(patients) == 20  # 6 of 30 malignant + 14 of 70 benign
    assert all(r.patient in patients for r in ds if r.patient in patients)
    assert len(small) == 60  # whole patients: every image of a chosen patient comes along
    assert small.counts() == {"benign": 42, "malignant": 18}
    assert [r.uid for r in sample_fraction(ds, 0.2, seed=1)] == [r.uid for r in small]
    assert {r.patient for r in sample_fraction(ds, 0.2, seed=2)} != patients
    assert patients <= {r.patient for r in sample_fraction(ds, 0.5, seed=1)}  # nested by seed
    tiny = sample_fraction(ds, 0.001, seed=0)
    assert tiny.counts() == {"benign": 3, "malignant": 3}  # at least one patient per class


def test_fraction_errors():
    with pytest.raises(ConfigError):
        sample_fraction(synthetic_records(), 0.0)
    only_benign = synthetic_records(malignant_share=0.0)
    with pytest.raises(ConfigError, match="class 'malignant' has no patients"):
        sample_fraction(only_benign, 0.5)


def _png(path: Path, seed: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(path)


def test_summary_reports_cross_split_duplicates_and_conflicts(tmp_path):
    root = tmp_path / "d"
    _png(root / "train" / "benign" / "a.png", 1)
    _png(root / "train" / "malignant" / "b.png", 2)
    _png(root / "test" / "benign" / "a_copy.png", 1)  # same bytes, other split
    _png(root / "test" / "malignant" / "c.png", 3)
    _png(root / "train" / "malignant" / "a_conflict.png", 1)  # same bytes, other label
    summary = summarise(load_dataset(root), progress=False)
    assert summary["splits"] == {"train": {"benign": 1, "malignant": 2}, "test": {"benign": 1, "malignant": 1}}
    assert summary["patients"] == {"train": 3, "test": 2}
    assert len(summary["duplicates"]) == 1 and summary["duplicates"][0]["splits"] == ["test", "train"]
    assert len(summary["conflicts"]) == 1 and summary["conflicts"][0]["labels"] == ["benign", "malignant"]
    json.dumps(summary)


def test_cache_matches_decoding_and_is_invalidated_by_changes(tmp_path):
    root = tmp_path / "d"
    for i in range(4):
        _png(root / ("benign" if i % 2 else "malignant") / f"{i}.png", i)
    cache = tmp_path / "cache"
    ds = load_dataset(root)
    images, labels = cached_tensors(ds, cache_dir=cache, progress=False)
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 12, 12)
    from oncosynth.data import load_images

    assert torch.equal(images.float() / 255, (load_images(ds) * 255).round() / 255)
    assert labels.tolist() == ds.labels.tolist()
    assert len(list(cache.glob("*.u8"))) == 1
    cached_tensors(ds, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.u8"))) == 1  # reused
    _png(root / "benign" / "1.png", 99)  # change one file's contents
    os.utime(root / "benign" / "1.png", ns=(1, 1))
    fresh, _ = cached_tensors(load_dataset(root), cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.u8"))) == 2
    assert not torch.equal(fresh, images)
    resized, _ = cached_tensors(ds, size=6, channels=3, cache_dir=cache, progress=False)
    assert resized.shape == (4, 3, 6, 6)
