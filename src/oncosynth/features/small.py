"""Small feature networks: the 4-block CNN (``random-cnn:<seed>``, and the small domain encoder
that ``encoder:<folder>`` reads when ``save_small_encoder`` wrote it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from oncosynth.checkpoint import save_checkpoint
from oncosynth.features.base import FeatureNet, load_state
from oncosynth.features.encoders import register_encoder

SMALL_ENCODER_KIND = "feature-net/small-cnn"


class SmallCNN(nn.Module):
    """A 4-block conv encoder (about 100k parameters): stand-in domain encoder and test network."""

    def __init__(self, in_chans: int = 1, width: int = 16, dim: int = 64, num_classes: int = 0):
        super().__init__()
        chans = [in_chans, width, width * 2, width * 4, width * 4]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(chans[-1], dim)
        self.head = nn.Linear(dim, num_classes) if num_classes else None
        self.config = {"in_chans": in_chans, "width": width, "dim": dim, "num_classes": num_classes}

    def forward_spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[:4](x)  # first block: full-detail maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.proj(self.blocks(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z


class SmallCNNFeatures(FeatureNet):
    def __init__(self, model: SmallCNN, name: str, input_size: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.name, self.in_chans, self.input_size = name, model.config["in_chans"], input_size
        self.normalise = None

    def embed(self, x):
        return self.model.features(x)

    def embed_spatial(self, x):
        return self.model.forward_spatial(x)

    def layer_body(self):
        return self.model, self.model.blocks


def save_small_encoder(model: SmallCNN, folder: str | Path, manifest: dict | None = None,
                       extra: dict | None = None) -> Path:
    """Save a SmallCNN as a checkpoint that ``encoder:<folder>`` loads."""
    config = {"kind": SMALL_ENCODER_KIND, **model.config, **(extra or {})}
    return save_checkpoint(folder, model.state_dict(), config, manifest)


def _load_small_encoder(folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], name: str,
                        input_size: int | None) -> FeatureNet:
    model = SmallCNN(**{k: config[k] for k in ("in_chans", "width", "dim", "num_classes")})
    load_state(model, tensors, name)
    return SmallCNNFeatures(model, name, input_size or config.get("img_size"))


register_encoder(SMALL_ENCODER_KIND, _load_small_encoder)


def random_cnn(arg: str, input_size: int | None) -> FeatureNet:
    """``random-cnn:<seed>``: a randomly initialised SmallCNN, a cheap deterministic feature space for
    tests and smoke runs (not for reporting). The global RNG is left as it was."""
    seed = int(arg or 0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = SmallCNN(in_chans=1, width=8, dim=32)
    for module in model.modules():  # He init keeps activations at unit scale through the blocks
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    torch.random.set_rng_state(generator_state)
    return SmallCNNFeatures(model, f"random-cnn[seed={seed}]", input_size)
