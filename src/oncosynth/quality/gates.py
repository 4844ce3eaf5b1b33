"""The two quality gates of the style-transfer pipeline.

* :class:`AnomalyGate`: rejects a result whose anomaly score (mean L1
  reconstruction error of the autoencoder) is above the detector's threshold.
* :class:`ClassifierGate`: a classifier checkpoint from the study; a result is
  accepted only when the classifier calls its content image ``content_class``
  (the most probable class) and the result ``style_class`` with probability at
  least ``cutoff`` (default 0.7).

Both check their inputs when built (missing checkpoint, classes the classifier
does not know), so a campaign fails before any work starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oncosynth.errors import ConfigError


class AnomalyGate:
    def __init__(self, detector_or_folder, threshold: float | None = None, device: str | torch.device = "cpu"):
        from oncosynth.quality.anomaly import AnomalyDetector

        detector = detector_or_folder
        if isinstance(detector_or_folder, (str, Path)):
            detector = AnomalyDetector.load(detector_or_folder, device=device)
        self.detector = detector
        if threshold is not None:
            self.detector.threshold = float(threshold)
        if self.detector.threshold is None:
            raise ConfigError("the anomaly detector has no threshold (calibrate it on validation images)")

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold)

    def score(self, images: torch.Tensor) -> np.ndarray:
        return self.detector.score(images)

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold


class ClassifierGate:
    def __init__(self, model_or_folder, content_class: str, style_class: str, cutoff: float = 0.7,
                 device: str | torch.device = "cpu"):
        from oncosynth.classifiers import load_classifier

        if not 0 < cutoff <= 1:
            raise ConfigError(f"classifier cut-off must be in (0, 1], not {cutoff}")
        model = model_or_folder
        where = "classifier"
        if isinstance(model_or_folder, (str, Path)):
            where = str(model_or_folder)
            model = load_classifier(model_or_folder, device=device)
        classes = list(getattr(model, "classes", []))
        missing = [c for c in (content_class, style_class) if c not in classes]
        if missing:
            raise ConfigError(f"{where}: the classifier's classes {classes} do not include {missing}; "
                              f"use a classifier trained on the content and style classes")
        if content_class == style_class:
            raise ConfigError(f"content and style class are both '{content_class}'")
        self.model = model.eval()
        self.classes = classes
        self.content_index, self.style_index = classes.index(content_class), classes.index(style_class)
        self.cutoff = float(cutoff)
        self.device = torch.device(device)
        config = getattr(model, "config", {})
        self.size, self.channels = config.get("img_size"), config.get("in_chans")

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """N×K class probabilities for images in [0, 1] (resampled to the classifier's size and channels)."""
        from oncosynth.classifiers import predict_proba
        from oncosynth.data.transforms import convert_images, to_float

        images = convert_images(to_float(images), size=self.size, channels=self.channels)
        return predict_proba(self.model, images, self.device, batch_size)

    def content_ok(self, content: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(is the content image called the content class?, its content-class probability)."""
        probs = self.probabilities(content)
        return probs.argmax(1) == self.content_index, probs[:, self.content_index]

    def style_probability(self, results: torch.Tensor) -> np.ndarray:
        return self.probabilities(results)[:, self.style_index]

    def accepts(self, style_probability: np.ndarray) -> np.ndarray:
        return np.asarray(style_probability) >= self.cutoff
