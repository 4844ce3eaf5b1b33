"""Which synthetic images one study cell trains on: counts per class, then the images themselves."""

from __future__ import annotations

import numpy as np
import torch

from oncosynth.data.transforms import convert_images, to_uint8
from oncosynth.study.config import ArmConfig, SyntheticSource
from oncosynth.study.inputs import Prepared


def _to_uint8(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Float [0, 1] images from a generator -> uint8 at the study's size and channel count."""
    return to_uint8(convert_images(images.clamp(0, 1), size, channels))


def synthetic_counts(source: SyntheticSource, real_counts: np.ndarray, classes: list[str],
                     available: np.ndarray | None) -> np.ndarray:
    """How many synthetic images of each class one cell uses."""
    targets = np.array([c in (source.classes or classes) for c in classes])
    if source.balance:
        want = np.where(targets, real_counts.max() - real_counts, 0)
    elif source.count is not None or source.ratio is not None:
        total = source.count if source.count is not None else int(round(source.ratio * real_counts.sum()))
        share = np.where(targets, total // targets.sum(), 0)
        share[np.flatnonzero(targets)[: total - share.sum()]] += 1  # spread the remainder
        want = share
    else:  # a folder without a count: every image of the target classes
        want = np.where(targets, available if available is not None else 0, 0)
    if available is not None:
        want = np.minimum(want, available)
    return want.astype(np.int64)


def synthetic_for_cell(prepared: Prepared, arm: ArmConfig, real_labels: torch.Tensor, seed: int,
                       size: int, channels: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell's synthetic images: drawn from the arm's folder, or sampled from its generator (a loaded
    one, or ``generator``: the cell's in-study generator)."""
    source, store = arm.synthetic, prepared.synthetic[arm.name]
    generator = generator if generator is not None else store.get("generator")
    k = len(prepared.classes)
    real_counts = np.bincount(real_labels.numpy(), minlength=k)
    rng = np.random.default_rng(seed)
    if generator is not None:
        counts = synthetic_counts(source, real_counts, prepared.classes, None)
        images, labels = [], []
        for index, n in enumerate(counts):
            if n > 0:
                made = generator.sample(int(n), prepared.classes[index], seed=seed * 1_000_003, **source.sample)
                images.append(_to_uint8(made, size, channels))
                labels.append(torch.full((int(n),), index, dtype=torch.int64))
        if not images:
            return torch.zeros((0, channels, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
        return torch.cat(images), torch.cat(labels)
    pool_labels = store["labels"].numpy()
    available = np.bincount(pool_labels, minlength=k)
    counts = synthetic_counts(source, real_counts, prepared.classes, available)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(pool_labels == c))[:n] for c, n in enumerate(counts)])
    chosen = torch.from_numpy(np.sort(chosen))
    return store["images"][chosen], store["labels"][chosen]
