"""Counts and leakage on the real shared data sets (skipped without ../shared/data)."""

from __future__ import annotations

import pytest

from oncosynth.data import check_leakage, load_dataset


def test_cbis_ddsm_counts_and_no_leakage(shared_data):
    ds = load_dataset(shared_data / "cbis-ddsm-masses")
    assert ds.format == "cbis-ddsm"
    counts = {split: ds.split(split).counts() for split in ds.splits}
    assert counts == {"train": {"benign": 579, "malignant": 525}, "val": {"benign": 90, "malignant": 102},
                      "test": {"benign": 245, "malignant": 157}}
    assert check_leakage(ds) == []
    assert all(r.patient.startswith("P_") for r in ds)


def test_pcam_subset_counts(shared_data):
    ds = load_dataset(shared_data / "pcam-subset")
    assert ds.format == "pcam-folders"
    assert ds.split("train").counts() == {"normal": 5000, "metastatic": 5000}
    assert ds.split("val").counts() == {"normal": 1500, "metastatic": 1407}


def test_breastmnist_counts(shared_data):
    ds = load_dataset(shared_data / "breastmnist" / "breastmnist.npz")
    assert {s: len(ds.split(s)) for s in ds.splits} == {"train": 546, "val": 78, "test": 156}


def test_peer_synthetic_labels_from_names(shared_data):
    ds = load_dataset(shared_data / "mcgan-synthetic-cbis-ddsm")
    assert ds.format == "named-files"
    assert ds.counts() == {"benign": 1500, "malignant": 1500}
