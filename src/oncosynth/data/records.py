"""The data model: a dataset is a list of records plus the class names.

A record says where one image comes from and what it is; it never holds
pixels. Pixels are read by ``oncosynth.data.decode`` and cached by
``oncosynth.data.cache``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One image.

    ``source`` is a file path; for container formats (npz, HDF5) ``member``
    names the array inside it and ``key`` is the image's index in that array.
    ``label`` is a class *name*.
    """

    source: str
    label: str
    patient: str
    split: str
    format: str
    key: int | None = None
    member: str | None = None

    @property
    def uid(self) -> str:
        if self.key is None:
            return self.source
        return f"{self.source}#{self.member}[{self.key}]" if self.member else f"{self.source}#{self.key}"


@dataclass
class Dataset:
    records: list[Record]
    classes: list[str]
    root: str = ""
    format: str = ""
    skipped: list[dict] = field(default_factory=list)  # files left out by --skip-bad

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def splits(self) -> list[str]:
        present = {r.split for r in self.records}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def split(self, name: str) -> "Dataset":
        return self.subset([r for r in self.records if r.split == name])

    def subset(self, records: Iterable[Record]) -> "Dataset":
        return replace(self, records=list(records), skipped=list(self.skipped))

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            from oncosynth.errors import ConfigError

            raise ConfigError(f"unknown class '{name}'; this data set has {self.classes}") from None

    @property
    def labels(self) -> np.ndarray:
        """Integer labels, indices into ``classes``."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[r.label] for r in self.records], dtype=np.int64)

    def identity(self) -> str:
        """A short hash of the image names and labels: what resume checks compare.

        File times and sizes are left out, so a copy of the same data (a re-synced shared
        folder) is the same data set.
        """
        names = sorted(f"{r.uid}|{r.label}" for r in self.records)
        return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        counter = Counter(r.label for r in self.records)
        return {c: counter.get(c, 0) for c in self.classes}

    def with_split(self, assignment: dict[str, str]) -> "Dataset":
        """Return a copy with each record's split set from ``uid -> split``."""
        return self.subset(replace(r, split=assignment[r.uid]) for r in self.records)


def class_order(names: Sequence[str]) -> list[str]:
    """A stable class order: known clinical names first, then alphabetical."""
    preferred = ["healthy", "normal", "benign", "malignant"]
    unique = sorted(set(names))
    return [n for n in preferred if n in unique] + [n for n in unique if n not in preferred]


def positive_index(classes: Sequence[str], wanted: str | None = None) -> int:
    """Which class a binary score is about: ``wanted``, else "malignant", else the last class."""
    if wanted is not None:
        if wanted not in classes:
            from oncosynth.errors import ConfigError

            raise ConfigError(f"positive_class '{wanted}' is not a class of the data set {list(classes)}")
        return list(classes).index(wanted)
    return list(classes).index("malignant") if "malignant" in classes else len(classes) - 1
