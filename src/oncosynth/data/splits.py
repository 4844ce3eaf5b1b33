"""Patient-level splits, data-availability fractions and the leakage check.

Everything here works on patients, never on images: a patient's images always
travel together, so no split and no fraction leaks a patient.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from oncosynth.data.records import Dataset, Record
from oncosynth.errors import ConfigError, DataError

UNSPLIT = "all"


def patient_labels(records: list[Record], classes: list[str]) -> dict[str, str]:
    """Each patient's class: the most common label of its images (ties: class order)."""
    per_patient: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        per_patient[record.patient][record.label] += 1
    rank = {c: i for i, c in enumerate(classes)}
    return {p: min(counts, key=lambda c: (-counts[c], rank.get(c, len(rank)))) for p, counts in per_patient.items()}


def _patients_by_class(records: list[Record], classes: list[str], seed: int) -> dict[str, list[str]]:
    """Patients grouped by class, each group in a seeded random order."""
    labels = patient_labels(records, classes)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for cls in classes:
        patients = sorted(p for p, label in labels.items() if label == cls)
        groups[cls] = [patients[i] for i in rng.permutation(len(patients))]
    return groups


def make_splits(dataset: Dataset, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
                seed: int = 0) -> Dataset:
    """Assign train/val/test by patient, stratified by each patient's class."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ConfigError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    assignment: dict[str, str] = {}
    for patients in _patients_by_class(dataset.records, dataset.classes, seed).values():
        n = len(patients)
        n_train = int(round(ratios[0] * n))
        n_val = int(round(ratios[1] * n))
        n_val = min(n_val, n - n_train)
        for i, patient in enumerate(patients):
            assignment[patient] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return dataset.with_split({r.uid: assignment[r.patient] for r in dataset.records})


def check_leakage(dataset: Dataset) -> list[dict]:
    """Patients found in more than one split, each with the splits it is in."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for record in dataset.records:
        if record.split != UNSPLIT:
            splits_of[record.patient].add(record.split)
    return [{"patient": p, "splits": sorted(s)} for p, s in sorted(splits_of.items()) if len(s) > 1]


def _leak_text(leaks: list[dict]) -> str:
    shown = ", ".join(f"{l['patient']} ({'/'.join(l['splits'])})" for l in leaks[:10])
    more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
    return f"{len(leaks)} patient(s) in more than one split: {shown}{more}"


def assert_no_leakage(dataset: Dataset) -> None:
    leaks = check_leakage(dataset)
    if leaks:
        raise DataError(dataset.root, f"patient leakage: {_leak_text(leaks)}")


def guard_leakage(dataset: Dataset, splits: tuple[str, ...] | None = None, allow: bool = False,
                  how_to_allow: str = "") -> list[dict]:
    """Stop work on a data set whose ``splits`` (default: all) share a patient, naming the patients.

    With ``allow`` the leaks are returned instead, for the caller to record in its outputs (an empty
    list when there are none); ``how_to_allow`` tells the user the option that does that.
    """
    if splits is not None:
        dataset = dataset.subset(r for r in dataset.records if r.split in splits)
    leaks = check_leakage(dataset)
    if leaks and not allow:
        hint = f"; {how_to_allow} to run anyway (results will be reported as leaked)" if how_to_allow else ""
        raise DataError(dataset.root, f"patient leakage: {_leak_text(leaks)}{hint}")
    return leaks


def sample_fraction(dataset: Dataset, fraction: float, seed: int = 0, split: str = "train") -> Dataset:
    """A stratified, patient-level subsample of one split, reproducible by seed.

    Per class, patients are shuffled once by ``seed`` and the first
    ``round(fraction * n)`` (at least one) are kept, so smaller fractions are
    nested inside larger ones for the same seed.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    records = [r for r in dataset.records if r.split == split]
    if not records:
        raise ConfigError(f"no '{split}' images to subsample in {dataset.root}")
    keep: set[str] = set()
    for cls, patients in _patients_by_class(records, dataset.classes, seed).items():
        if not patients:
            raise ConfigError(f"class '{cls}' has no patients in the '{split}' split of {dataset.root}")
        keep.update(patients[: max(1, int(round(fraction * len(patients))))])
    return dataset.subset(r for r in records if r.patient in keep)
