"""The images a pretraining run learns from, and the record of where they came from.

``--data`` contributes its training split only (the whole set when it has no
split), so a backbone pretrained here never saw a validation or test patient
of that data set. ``--extra-unlabelled`` folders (synthetic sets, the
phantom, any patches) contribute every image; their labels are ignored. The
phantom-supervised method without ``--data`` renders a phantom in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oncosynth.data import Dataset, Record, cached_tensors, load_dataset
from oncosynth.data.decode import IMAGE_SUFFIXES
from oncosynth.data.lineage import image_name
from oncosynth.data.phantom import PhantomConfig, make_phantom
from oncosynth.errors import DataError

UNLABELLED = "unlabelled"


@dataclass
class PretrainImages:
    images: torch.Tensor          # uint8 N×C×S×S
    labels: torch.Tensor | None   # int64 N (supervised methods only)
    classes: list[str]
    sources: list[dict]           # one entry per source: path, role, images, patients, data hash


def _unlabelled_folder(path: Path) -> Dataset:
    """A folder of images with no class layout: every image, under one 'unlabelled' class."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(path, "no images found for --extra-unlabelled")
    records = [Record(str(f), UNLABELLED, f.stem, "unsplit", "folders") for f in files]
    return Dataset(records, [UNLABELLED], str(path), "folders")


def _load_any(path: Path) -> Dataset:
    try:
        return load_dataset(path)
    except DataError as exc:
        if "flat folder of images" in str(exc):
            return _unlabelled_folder(path)
        raise


def _training_part(dataset: Dataset) -> tuple[Dataset, str]:
    if "train" in dataset.splits:
        return dataset.split("train"), "train split"
    return dataset, "all images (no split)"


def _describe(dataset: Dataset, role: str, images: int) -> dict:
    # Image names as well as patients: a study matches sources from other data sets (an external
    # test set among them) by name, since their patient ids are not file names.
    return {"path": dataset.root, "role": role, "images": images,
            "patients": sorted({r.patient for r in dataset.records}),
            "image_names": sorted(image_name(r.uid) for r in dataset.records),
            "data_hash": dataset.identity()}  # names and labels, not file times: a re-synced copy resumes


def _phantom(size: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str], dict]:
    config = PhantomConfig(n=n, size=size, seed=seed, difficulty="hard", malignant_fraction=0.5)
    array, labels, _, _ = make_phantom(config)
    classes = config.classes
    images = torch.from_numpy(np.round(array * 255).astype(np.uint8))
    index = torch.tensor([classes.index(label) for label in labels], dtype=torch.int64)
    return images, index, classes, {"path": "phantom (in memory)", "role": "phantom", "images": n,
                                    "phantom": config.to_dict()}


def gather_images(data: str | Path | None, extra: list[str | Path], size: int, supervised: bool,
                  phantom_images: int = 2000, seed: int = 0, channels: int | None = None,
                  progress: bool = True) -> PretrainImages:
    """Every image a run will see, resampled to ``size`` px, with provenance."""
    if data is None:
        if not supervised:
            raise DataError("--data", "self-supervised pretraining needs --data (a folder of images)")
        images, labels, classes, source = _phantom(size, phantom_images, seed)
        return PretrainImages(images, labels, classes, [source])
    main, role = _training_part(_load_any(Path(data)))
    images, labels = cached_tensors(main, size=size, channels=channels, progress=progress)
    parts, sources = [images], [_describe(main, role, len(main))]
    channels = images.shape[1]
    if supervised and extra:
        raise DataError(str(extra[0]), "--extra-unlabelled images have no labels a supervised method can use")
    for folder in extra:
        dataset = _load_any(Path(folder))
        extra_images, _ = cached_tensors(dataset, size=size, channels=channels, progress=progress)
        parts.append(extra_images)
        sources.append(_describe(dataset, "unlabelled extra", len(dataset)))
    return PretrainImages(torch.cat(parts) if len(parts) > 1 else images.clone(),
                          labels.clone() if supervised else None, list(main.classes), sources)
