"""The feature-network base class: input adaptation (channels, size, normalisation) + embedding."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from oncosynth.data.transforms import adapt_channels
from oncosynth.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["FeatureNet", "IMAGENET_MEAN", "IMAGENET_STD", "adapt_channels", "load_state"]


class FeatureNet(nn.Module):
    """Base class: input adaptation (channels, size, normalisation) + embedding.

    A subclass that can hand out its named conv layers (for style transfer)
    defines ``layer_body() -> (module, run)``: the module whose ``nn.Conv2d``
    children are the layers, and the function that runs it on prepared input.
    """

    name: str = "feature-net"
    in_chans: int = 3
    input_size: int | None = None  # resize every input to this square size (None: keep)
    normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images N×C×H×W, got shape {tuple(x.shape)}")
        x = adapt_channels(x.float(), self.in_chans, self.name)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        if self.normalise is not None:
            mean, std = (x.new_tensor(v).view(1, -1, 1, 1) for v in self.normalise)
            x = (x - mean) / std
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # prepared input -> N×D
        raise NotImplementedError

    def embed_spatial(self, x: torch.Tensor) -> torch.Tensor:  # prepared input -> N×C×h×w
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.prepare(x.to(self.device)))

    @torch.no_grad()
    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_spatial(self.prepare(x.to(self.device)))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def load_state(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line CheckpointError naming the network."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{name}: weights do not fit the architecture ({' '.join(first)})") from None
