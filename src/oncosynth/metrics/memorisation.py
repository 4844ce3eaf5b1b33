"""Memorisation: does a synthetic image copy a training patient?

For every synthetic image we find its nearest training image, in two spaces:

- pixels: grayscale at 64×64, 4×4 average-pooled (14×14 = 196 values from
  the central 56×56 window), each vector standardised to zero mean and unit
  variance, and the distance is the minimum over shifts of the training
  image by up to ±3 px (at 64 px) -- so a copy that was shifted, slightly
  noised, or brightened/contrast-changed is still found;
- features: the embedding of the evaluation's feature network.

Each distance is divided by the *typical real nearest-neighbour distance*:
the median, over training images, of the distance to their nearest training
image from another patient (same-patient pairs, e.g. two views of one
lesion, are excluded; without patient ids only the image itself is). A ratio
near 1 is what an unseen real image from a new patient looks like; a copy
sits near 0.

An image is flagged as a probable copy when, in either space, its ratio is
below the space's *cutoff*: ``min(threshold, smallest real-to-real ratio)``,
i.e. it is closer to a training image than 30% (``DEFAULT_THRESHOLD`` = 0.3)
of the typical distance between two different patients *and* closer than any
training image is to another patient's image. The second condition calibrates
each space on the data: a weak feature network that maps different patients
close together cannot flag copies it cannot tell apart from real neighbours.
On CBIS-DDSM (64 px) the smallest pixel ratio of any validation image to the
training split is 0.41-0.42 and the 1st percentile of train-to-train ratios
0.46, while exact, noised (sigma 0.01), brightened and 2-px-shifted copies
stay below 0.18; see bench/RESULTS.md (metrics section). The summary reports each
space's cutoff and the fraction of real training images under the plain
threshold as a calibration check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from oncosynth.errors import DataError

DEFAULT_THRESHOLD = 0.3
PIXEL_SIZE, PIXEL_POOL, PIXEL_SHIFT = 64, 4, 3


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    return x / x.std(1, keepdim=True).clamp(min=1e-6)


def _gray64(images: torch.Tensor) -> torch.Tensor:
    x = images.float()
    if x.shape[1] == 3:
        x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    if tuple(x.shape[-2:]) != (PIXEL_SIZE, PIXEL_SIZE):
        mode = "area" if x.shape[-1] >= PIXEL_SIZE else "bilinear"
        x = F.interpolate(x, size=(PIXEL_SIZE, PIXEL_SIZE), mode=mode)
    return x


def pixel_embedding(images: torch.Tensor, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """N×C×H×W [0, 1] -> N×196 standardised, pooled grayscale pixels of the central
    window, optionally taken ``shift`` (dy, dx) pixels (at 64 px) off centre."""
    x = _gray64(images)
    m, c = PIXEL_SHIFT, PIXEL_SIZE - 2 * PIXEL_SHIFT
    dy, dx = m + shift[0], m + shift[1]
    return _standardise(F.avg_pool2d(x[..., dy : dy + c, dx : dx + c], PIXEL_POOL))


def _shifts() -> list[tuple[int, int]]:
    r = range(-PIXEL_SHIFT, PIXEL_SHIFT + 1)
    return [(dy, dx) for dy in r for dx in r]


def _nearest(query: torch.Tensor, references: list[torch.Tensor], exclude: np.ndarray | None = None,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference row for each query row, minimised over several versions of the
    reference set (e.g. shifted copies); ``exclude[i, j]`` True forbids a pair."""
    best_d, best_i = [], []
    for s in range(0, query.shape[0], chunk):
        d = None
        for reference in references:
            dd = torch.cdist(query[s : s + chunk], reference)
            d = dd if d is None else torch.minimum(d, dd)
        if exclude is not None:
            d[torch.from_numpy(exclude[s : s + chunk])] = float("inf")
        v, i = d.min(dim=1)
        best_d.append(v.numpy())
        best_i.append(i.numpy())
    return np.concatenate(best_d), np.concatenate(best_i)


def _same_patient_mask(patients: Sequence[str | None]) -> np.ndarray:
    """N×N: True where a pair is the same image or the same (known) patient."""
    ids = np.array([p if p else f"__image{i}" for i, p in enumerate(patients)], dtype=object)
    _, codes = np.unique(ids, return_inverse=True)
    return codes[:, None] == codes[None, :]


def typical_nn_distance(query: torch.Tensor, references: list[torch.Tensor],
                        patients: Sequence[str | None]) -> tuple[float, np.ndarray]:
    """Median distance from each training image to its nearest *other-patient* training image."""
    d, _ = _nearest(query, references, exclude=_same_patient_mask(patients))
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise DataError("train", "memorisation needs training images from at least 2 patients")
    return float(np.median(d)), d


@dataclass
class SpaceResult:
    name: str
    typical: float  # median real-to-real (other patient) NN distance
    distance: np.ndarray  # synthetic -> nearest train
    index: np.ndarray  # which train image
    reference_ratios: np.ndarray = field(repr=False)  # real-to-real NN ratios (calibration)
    cutoff: float = 0.0  # flag when ratio < cutoff = min(threshold, smallest real-to-real ratio)

    @property
    def ratio(self) -> np.ndarray:
        return self.distance / max(self.typical, 1e-12)


def memorisation(synthetic_pixels: torch.Tensor, train_pixels: torch.Tensor,
                 train_patients: Sequence[str | None],
                 synthetic_features: torch.Tensor | None = None,
                 train_features: torch.Tensor | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Nearest-training-image analysis in pixel and (optionally) feature space.

    Inputs are images N×C×H×W (pixels are embedded with ``pixel_embedding``)
    and, for the feature space, N×D features of the same images. Returns
    per-image arrays plus a summary; see the module docstring for the rule.
    """
    if train_pixels.shape[0] < 2:
        raise DataError("train", f"memorisation needs at least 2 training images, got {train_pixels.shape[0]}")
    if len(train_patients) != train_pixels.shape[0]:
        raise ValueError("one patient id per training image is required")
    train_gray = _gray64(train_pixels)
    spaces = [("pixels", pixel_embedding(synthetic_pixels), pixel_embedding(train_gray),
               [pixel_embedding(train_gray, shift) for shift in _shifts()])]
    if synthetic_features is not None and train_features is not None:
        reference = train_features.double().cpu()
        spaces.append(("features", synthetic_features.double().cpu(), reference, [reference]))
    results = []
    for name, query, train_query, references in spaces:
        typical, ref_d = typical_nn_distance(train_query, references, train_patients)
        d, i = _nearest(query, references)
        reference_ratios = ref_d / max(typical, 1e-12)
        cutoff = min(threshold, float(reference_ratios.min()))
        results.append(SpaceResult(name, typical, d, i, reference_ratios, cutoff))
    ratios = np.stack([r.ratio for r in results], axis=1)  # N × spaces
    cutoffs = np.array([r.cutoff for r in results])
    flagged = (ratios < cutoffs[None, :]).any(axis=1)
    return {"spaces": results, "ratios": ratios, "min_ratio": ratios.min(axis=1),
            "flagged": flagged, "threshold": threshold}


def _flagging_match(result: dict, j: int) -> int:
    """The training image that got synthetic image j flagged (closest space under its cutoff)."""
    cutoffs = np.array([r.cutoff for r in result["spaces"]])
    ratios = np.where(result["ratios"][j] < cutoffs, result["ratios"][j], np.inf)
    return int(result["spaces"][int(np.argmin(ratios))].index[j])


def summarise(result: dict, train_sources: Sequence[str], train_patients: Sequence[str | None],
              synthetic_sources: Sequence[str], max_listed: int = 50) -> dict:
    """JSON-ready summary: per space statistics and the flagged images with their patient."""
    spaces = {}
    for r in result["spaces"]:
        ratio = r.ratio
        spaces[r.name] = {
            "typical_real_nn_distance": r.typical,
            "median_ratio": float(np.median(ratio)),
            "min_ratio": float(ratio.min()),
            "cutoff": r.cutoff,
            "fraction_flagged": float((ratio < r.cutoff).mean()),
            "fraction_below_threshold": float((ratio < result["threshold"]).mean()),
            "real_to_real_fraction_below_threshold": float((r.reference_ratios < result["threshold"]).mean()),
            "real_to_real_ratio_p01": float(np.percentile(r.reference_ratios, 1)),
            "real_to_real_ratio_min": float(r.reference_ratios.min()),
        }
    flagged_idx = np.flatnonzero(result["flagged"])
    order = flagged_idx[np.argsort(result["min_ratio"][flagged_idx])]
    listed = []
    for j in order[:max_listed]:
        entry = {"synthetic": synthetic_sources[j]}
        for s, r in enumerate(result["spaces"]):
            t = int(r.index[j])
            entry[f"{r.name}_ratio"] = float(result["ratios"][j, s])
            entry[f"{r.name}_nearest_train"] = train_sources[t]
            entry[f"{r.name}_nearest_patient"] = train_patients[t]
        listed.append(entry)
    return {
        "threshold": result["threshold"],
        "n_synthetic": int(len(result["flagged"])),
        "n_flagged": int(result["flagged"].sum()),
        "fraction_flagged": float(result["flagged"].mean()) if len(result["flagged"]) else 0.0,
        "flagged_patients": sorted({str(train_patients[_flagging_match(result, j)]) for j in flagged_idx}),
        "spaces": spaces,
        "flagged": listed,
    }


class PixelCopyCheck:
    """The pixel-space half of :func:`memorisation`, calibrated once on a training set.

    ``check(images)`` flags exactly what ``memorisation(images, train, patients)["flagged"]``
    flags (no feature space), without recomputing the real-to-real calibration per call;
    ``generate --reject-memorised`` screens every batch with it.
    """

    def __init__(self, train_pixels: torch.Tensor, train_patients: Sequence[str | None],
                 threshold: float = DEFAULT_THRESHOLD):
        if train_pixels.shape[0] < 2:
            raise DataError("train", f"memorisation needs at least 2 training images, got {train_pixels.shape[0]}")
        if len(train_patients) != train_pixels.shape[0]:
            raise ValueError("one patient id per training image is required")
        gray = _gray64(train_pixels)
        self.references = [pixel_embedding(gray, shift) for shift in _shifts()]
        self.typical, real_d = typical_nn_distance(pixel_embedding(gray), self.references, train_patients)
        self.threshold = threshold
        self.cutoff = min(threshold, float((real_d / max(self.typical, 1e-12)).min()))

    def check(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flagged, ratio to the typical real distance, index of the nearest training image) per image."""
        d, i = _nearest(pixel_embedding(images), self.references)
        ratio = d / max(self.typical, 1e-12)
        return ratio < self.cutoff, ratio, i
