"""A trained classifier as a feature network: ``encoder:<classifier checkpoint>``.

Importing :mod:`oncosynth.classifiers` registers this loader with
:func:`oncosynth.features.register_encoder` for checkpoints of kind ``classifier``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from oncosynth.classifiers.model import KIND, load_classifier
from oncosynth.errors import ConfigError
from oncosynth.features.base import FeatureNet
from oncosynth.features.encoders import register_encoder


class ClassifierFeatures(FeatureNet):
    """Wraps an oncosynth classifier: embedding = its ``.features(x)`` (pre-logit)."""

    def __init__(self, model: nn.Module, name: str, in_chans: int, input_size: int | None):
        super().__init__()
        self.model = model.eval()
        self.name, self.in_chans, self.input_size = name, in_chans, input_size
        self.normalise = None  # the classifier normalises its own input

    def embed(self, x):
        return self.model.features(x)

    def embed_spatial(self, x):
        for owner in (self.model, getattr(self.model, "backbone", None)):
            if owner is not None and hasattr(owner, "forward_intermediates"):
                # timm models: the first stage's maps
                return owner.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
        raise ConfigError(f"{self.name}: this classifier exposes no spatial feature maps")

    def layer_body(self):
        return self.model, self.model.features


def _load_classifier_encoder(folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], name: str,
                             input_size: int | None) -> FeatureNet:
    del tensors  # load_classifier reads the checkpoint with its own checks
    model = load_classifier(folder, device="cpu")
    in_chans = int(config.get("in_chans", getattr(model, "in_chans", 3)))
    return ClassifierFeatures(model, name, in_chans, input_size or config.get("img_size"))


register_encoder(KIND, _load_classifier_encoder)
