"""Two random views of every image in a batch, for self-supervised pretraining.

The views must differ in what does not change a lesion's class and agree in
what does. On grey mammograms that means geometry (crop, flips, 90° turns),
exposure (gamma, contrast, brightness), blur and noise: a scanner change
looks like these. Colour jitter exists only for RGB (stain variation in
H&E); a grey image never gets it. Every random number comes from a CPU
``torch.Generator``, so a seed gives the same views on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class ViewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crop_scale: tuple[float, float] = (0.35, 1.0)   # area share of the random resized crop
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # aspect ratio range of the crop
    flips: bool = True
    rot90: bool = True
    gamma: float = Field(0.3, ge=0, lt=1)           # gamma drawn from exp(U(-g, g))
    contrast: float = Field(0.3, ge=0, lt=1)        # gain about the mean, 1 ± contrast
    brightness: float = Field(0.1, ge=0)            # additive, ±
    blur_prob: float = Field(0.5, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.5)    # pixels
    noise: float = Field(0.03, ge=0)                # max std of additive Gaussian noise
    colour: float = Field(0.1, ge=0)                # per-channel gain 1 ± colour, RGB only


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(x: torch.Tensor, config: ViewConfig, generator: torch.Generator,
                        out_size: int | None = None) -> torch.Tensor:
    """A per-image crop of random area and aspect, resampled to ``out_size`` (default: input size)."""
    n, _, h, w = x.shape
    out_size = out_size or h
    area = _uniform(n, *config.crop_scale, generator)
    log_ratio = _uniform(n, math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    # Half-widths in normalised coordinates ([-1, 1] spans the image).
    half_w = torch.sqrt(area * ratio).clamp(max=1.0)
    half_h = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1 - half_w) * (2 * torch.rand(n, generator=generator) - 1)
    centre_y = (1 - half_h) * (2 * torch.rand(n, generator=generator) - 1)
    zeros = torch.zeros(n)
    theta = torch.stack([torch.stack([half_w, zeros, centre_x], 1),
                         torch.stack([zeros, half_h, centre_y], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _flip_and_turn(x: torch.Tensor, config: ViewConfig, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if config.flips:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    if config.rot90 and x.shape[2] == x.shape[3]:
        turns = torch.randint(0, 4, (n,), generator=generator)
        x = torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(x, turns)])
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur with one sigma per image (sigma 0 leaves the image unchanged)."""
    n, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.to(x.device, x.dtype).clamp(min=1e-3).view(n, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(x.dtype).view(1, -1).expand(n, -1)
    kernel = torch.where((sigma.to(x.device) > 0).view(n, 1), kernel, identity)
    # Grouped convolution: each image (with its channels) gets its own kernel.
    flat = x.reshape(1, n * c, h, w)
    k = kernel.repeat_interleave(c, dim=0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def _intensity(x: torch.Tensor, config: ViewConfig, generator: torch.Generator) -> torch.Tensor:
    n, c = x.shape[:2]
    shape = (n, 1, 1, 1)
    if config.gamma:
        gamma = torch.exp(_uniform(n, -config.gamma, config.gamma, generator)).to(x.device, x.dtype)
        x = x.clamp(min=0).pow(gamma.view(shape))
    if config.contrast:
        gain = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator).to(x.device, x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * gain.view(shape) + mean
    if config.brightness:
        x = x + _uniform(n, -config.brightness, config.brightness, generator).to(x.device, x.dtype).view(shape)
    if config.colour and c == 3:
        gains = _uniform(n * c, 1 - config.colour, 1 + config.colour, generator)
        x = x * gains.to(x.device, x.dtype).view(n, c, 1, 1)
    if config.blur_prob:
        sigma = _uniform(n, *config.blur_sigma, generator)
        sigma = torch.where(torch.rand(n, generator=generator) < config.blur_prob, sigma, torch.zeros(n))
        x = _gaussian_blur(x, sigma)
    if config.noise:
        std = _uniform(n, 0.0, config.noise, generator).to(x.device, x.dtype).view(shape)
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        x = x + noise * std
    return x.clamp(0, 1)


def random_view(x: torch.Tensor, config: ViewConfig, generator: torch.Generator,
                out_size: int | None = None) -> torch.Tensor:
    """One random view of each image: N×C×H×W in [0, 1] -> N×C×S×S in [0, 1]."""
    x = random_resized_crop(x, config, generator, out_size)
    x = _flip_and_turn(x, config, generator)
    return _intensity(x, config, generator)
