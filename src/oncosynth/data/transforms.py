"""Image conversions, in one copy: channels, size and dtype.

Inside the library images are float tensors N×C×H×W in [0, 1]; uint8 tensors
(0..255) are how training sets are kept in memory and on disk.

* :func:`adapt_channels`: grey -> RGB by repetition, RGB(A) -> grey as ITU-R
  601 luma (PIL's "L");
* :func:`convert_images`: channels as above, then size (antialiased bilinear);
* :func:`to_uint8` / :func:`to_float`: [0, 1] float <-> 0..255 uint8 (rounded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oncosynth.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)


def adapt_channels(images: torch.Tensor, channels: int, name: str = "images") -> torch.Tensor:
    """``images`` with ``channels`` channels; a count that cannot be converted is a ConfigError naming ``name``."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1 and have >= 3:
        weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
        return (images[:, :3] * weights).sum(1, keepdim=True)
    raise ConfigError(f"{name}: cannot adapt {have} channels to {channels}")


def convert_images(images: torch.Tensor, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """N×C×H×W float [0, 1] -> the given channel count and size×size.

    The one place where images change channels (RGB -> grey by ITU-R 601 luma,
    grey -> RGB by repetition) or size (antialiased bilinear).
    """
    if channels is not None and images.shape[1] != channels:
        if not ((channels == 1 and images.shape[1] in (3, 4)) or (channels == 3 and images.shape[1] == 1)):
            raise ConfigError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
        images = adapt_channels(images, channels)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
    return images.contiguous()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (clamped) -> uint8 0..255, rounded to nearest."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float images as float (unchanged values)."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()
