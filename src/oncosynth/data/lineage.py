"""Naming the real images a model was trained on, so a manifest can say exactly what it saw.

Images are named by file name (what CBIS-DDSM and BCDR file names make unique; container
formats keep their ``#member[key]`` suffix) and grouped by patient. The study compares these
names with its own splits to flag or refuse a generator (``oncosynth.study.provenance``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def image_name(uid: str) -> str:
    """The machine-independent name of a real image (uids are absolute paths)."""
    head, sep, tail = uid.partition("#")
    return Path(head).name + sep + tail


def describe_records(records: Iterable[Any]) -> dict[str, Any]:
    """The ``training_data`` block of a manifest: counts, patients and image names of ``records``."""
    records = list(records)
    patients = sorted({r.patient for r in records})
    return {"n_images": len(records), "n_patients": len(patients), "patients": patients,
            "images": sorted(image_name(r.uid) for r in records)}
