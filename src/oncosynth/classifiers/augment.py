"""Training augmentations applied to whole batches on the training device.

Every image in a batch gets its own random flips, 90° rotation, small
affine warp and intensity change; colour jitter only when the images are
RGB. Random numbers come from a CPU ``torch.Generator`` so a seed gives the
same augmentations on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flips: bool = True
    rot90: bool = True
    degrees: float = 10.0      # small affine: rotation range (±)
    translate: float = 0.05    # fraction of the side (±)
    scale: float = 0.1         # zoom range (1 ± scale)
    brightness: float = 0.1    # additive (±)
    contrast: float = 0.1      # multiplicative about the image mean (1 ± contrast)
    colour: float = 0.05       # per-channel gain (1 ± colour), RGB only


def _uniform(n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * spread


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """N×C×H×W float in [0, 1] -> augmented batch of the same shape, still in [0, 1]."""
    n, c, h, w = x.shape
    if n == 0:
        return x
    device = x.device
    if config.flips:
        flip_h = (torch.rand(n, generator=generator) < 0.5).to(device).view(n, 1, 1, 1)
        flip_v = (torch.rand(n, generator=generator) < 0.5).to(device).view(n, 1, 1, 1)
        x = torch.where(flip_h, x.flip(3), x)
        x = torch.where(flip_v, x.flip(2), x)
    if config.rot90 and h == w:
        turns = torch.randint(0, 4, (n,), generator=generator).to(device)
        rotated = x.clone()
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                rotated[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
        x = rotated
    if config.degrees or config.translate or config.scale:
        angle = _uniform(n, math.radians(config.degrees), generator)
        zoom = 1 + _uniform(n, config.scale, generator)
        shift = torch.stack([_uniform(n, 2 * config.translate, generator),
                             _uniform(n, 2 * config.translate, generator)], dim=1)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if config.contrast:
        gain = (1 + _uniform(n, config.contrast, generator)).to(device, x.dtype).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * gain + mean
    if config.brightness:
        x = x + _uniform(n, config.brightness, generator).to(device, x.dtype).view(n, 1, 1, 1)
    if config.colour and c == 3:
        x = x * (1 + _uniform(n * c, config.colour, generator)).to(device, x.dtype).view(n, c, 1, 1)
    return x.clamp(0, 1)
