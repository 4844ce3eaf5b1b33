"""Training augmentations applied to whole batches on the training device.

Every image in a batch gets its own random flips, 90° rotation, small
affine warp and intensity change; colour jitter only when the images are
RGB. Random numbers come from a CPU ``torch.Generator`` so a seed gives the
same augmentations on any device.

The robustness options (all off by default, so the default draws the same
random numbers as before they existed) imitate what changes between scanners
and hospitals: a random resized crop and an elastic warp (joined with the
affine into one resampling), gamma, Gaussian blur and Gaussian noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


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
    crop_scale: float = Field(1.0, gt=0, le=1)  # random resized crop: area fraction in [crop_scale, 1]; 1 = off
    elastic: float = Field(0.0, ge=0)  # elastic warp: max displacement, fraction of the side
    gamma: float = Field(0.0, ge=0)    # x ** exp(±gamma)
    blur: float = Field(0.0, ge=0)     # Gaussian blur, sigma in [0, blur] pixels
    noise: float = Field(0.0, ge=0)    # additive Gaussian noise, std in [0, noise]


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
    affine = bool(config.degrees or config.translate or config.scale)
    if affine or config.crop_scale < 1 or config.elastic:
        theta = _affine(n, config, generator) if affine else torch.eye(2, 3).repeat(n, 1, 1)
        if config.crop_scale < 1:
            theta = theta @ _crop(n, config.crop_scale, generator)
        grid = F.affine_grid(theta.to(device, x.dtype), list(x.shape), align_corners=False)
        if config.elastic:
            grid = grid + _elastic_field(n, h, w, config.elastic, generator).to(device, x.dtype)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if config.contrast:
        gain = (1 + _uniform(n, config.contrast, generator)).to(device, x.dtype).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * gain + mean
    if config.brightness:
        x = x + _uniform(n, config.brightness, generator).to(device, x.dtype).view(n, 1, 1, 1)
    if config.colour and c == 3:
        x = x * (1 + _uniform(n * c, config.colour, generator)).to(device, x.dtype).view(n, c, 1, 1)
    if config.gamma:
        power = torch.exp(_uniform(n, config.gamma, generator)).to(device, x.dtype).view(n, 1, 1, 1)
        x = x.clamp(0, 1) ** power
    if config.blur:
        x = gaussian_blur(x, torch.rand(n, generator=generator) * config.blur)
    if config.noise:
        std = (torch.rand(n, generator=generator) * config.noise).to(device, x.dtype).view(n, 1, 1, 1)
        x = x + std * torch.randn(x.shape, generator=generator).to(device, x.dtype)
    return x.clamp(0, 1)


def _affine(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """N×2×3 sampling matrices (output -> input coordinates): rotation, zoom, shift."""
    angle = _uniform(n, math.radians(config.degrees), generator)
    zoom = 1 + _uniform(n, config.scale, generator)
    shift = torch.stack([_uniform(n, 2 * config.translate, generator),
                         _uniform(n, 2 * config.translate, generator)], dim=1)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                        torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def _crop(n: int, min_area: float, generator: torch.Generator) -> torch.Tensor:
    """N×3×3: sample a window of area in [min_area, 1] and aspect in [3/4, 4/3], shown at full size."""
    area = min_area + torch.rand(n, generator=generator) * (1 - min_area)
    log_ratio = _uniform(n, math.log(4 / 3), generator)
    half_w = (area * torch.exp(log_ratio)).sqrt().clamp(max=1)  # half-sizes in [-1, 1] grid units
    half_h = (area / torch.exp(log_ratio)).sqrt().clamp(max=1)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - half_w)  # the window stays inside
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - half_h)
    m = torch.zeros(n, 3, 3)
    m[:, 0, 0], m[:, 0, 2], m[:, 1, 1], m[:, 1, 2], m[:, 2, 2] = half_w, cx, half_h, cy, 1
    return m


def _elastic_field(n: int, h: int, w: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """N×H×W×2 smooth displacement (grid units): a coarse 4×4 random field, upsampled bicubically."""
    coarse = (torch.rand(n, 2, 4, 4, generator=generator) * 2 - 1) * (2 * strength)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur image i of N×C×H×W with its own ``sigma[i]`` (pixels; 0 leaves it unchanged)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].float() ** 2 + 1e-12))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.device, x.dtype).repeat_interleave(c, 0)  # (N·C)×K
    flat = x.reshape(1, n * c, h, w)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect") if radius < w else F.pad(flat, (radius,) * 2, "replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect") if radius < h else \
        F.pad(flat, (0, 0, radius, radius), "replicate")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)
