"""The memorisation guard of ``generate --reject-memorised TRAIN``.

Every sampled batch goes through the pixel-space memorisation check of
:mod:`oncosynth.metrics.memorisation` (calibrated once on TRAIN); a flagged
image is dropped -- never written, it may be a patient's image -- and replaced
by a fresh draw from the next unused seed, checked again. What was dropped
(seed, ratio, nearest training image and patient) goes to the output manifest.

Only the pixel space is used: the feature half of ``evaluate``'s check needs a
feature network (Inception by default), which the guard does not load.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import torch

from oncosynth.errors import ConfigError

log = logging.getLogger("oncosynth.generators")


class MemorisationGuard:
    """Screens sampled images against a training set; see the module docstring."""

    def __init__(self, train: Any, threshold: float | None = None, max_rounds: int = 5):
        from oncosynth.data import Dataset, load_dataset, load_images
        from oncosynth.metrics.memorisation import DEFAULT_THRESHOLD, PixelCopyCheck

        dataset = train if isinstance(train, Dataset) else load_dataset(train)
        if "train" in dataset.splits:  # a data set with splits: the generator saw its training split
            dataset = dataset.split("train")
        if len(dataset) < 2:
            raise ConfigError(f"--reject-memorised {train}: needs at least 2 training images, found {len(dataset)}")
        self.source = str(getattr(dataset, "root", train))
        self.records = dataset.records
        self.check = PixelCopyCheck(load_images(dataset), [r.patient for r in self.records],
                                    DEFAULT_THRESHOLD if threshold is None else threshold)
        self.max_rounds = max_rounds
        self.rejected: list[dict[str, Any]] = []
        self.shortfall: dict[str, int] = {}

    def screen(self, images: torch.Tensor, seeds: list[int], class_name: str,
               redraw: Callable[[int], torch.Tensor], spare_seeds: Iterator[int]) -> tuple[torch.Tensor, list[int]]:
        """Replace flagged images by redraws from ``spare_seeds``; return the kept images and their seeds.

        ``redraw(seed)`` samples one image (1×C×H×W in [0, 1]). After ``max_rounds``
        rounds still-flagged images are dropped without replacement (logged, counted).
        """
        images, seeds = images.clone(), list(seeds)
        todo = list(range(len(seeds)))
        for _ in range(self.max_rounds):
            if not todo:
                break
            flagged, ratio, nearest = self.check.check(images[todo])
            still = []
            for k, position in enumerate(todo):
                if not flagged[k]:
                    continue
                record = self.records[int(nearest[k])]
                self.rejected.append({"class": class_name, "seed": seeds[position],
                                      "pixel_ratio": round(float(ratio[k]), 4),
                                      "nearest_train": record.uid, "nearest_patient": record.patient})
                seeds[position] = next(spare_seeds)
                images[position] = redraw(seeds[position])[0]
                still.append(position)
            todo = still
        if todo:  # redraws kept failing: drop the last draws rather than write a possible copy
            flagged, _, _ = self.check.check(images[todo])
            drop = {p for k, p in enumerate(todo) if flagged[k]}
            if drop:
                self.shortfall[class_name] = self.shortfall.get(class_name, 0) + len(drop)
                log.warning("class %s: %d image(s) still flagged after %d redraws; dropped",
                            class_name, len(drop), self.max_rounds)
                keep = [p for p in range(len(seeds)) if p not in drop]
                images, seeds = images[keep], [seeds[p] for p in keep]
        return images, seeds

    def summary(self) -> dict[str, Any]:
        return {"train": self.source, "space": "pixels", "threshold": self.check.threshold,
                "cutoff": self.check.cutoff, "typical_real_nn_distance": self.check.typical,
                "n_rejected": len(self.rejected), "shortfall": self.shortfall, "rejected": self.rejected}
