"""Filters applied to a generator's output before it is returned.

``nyquist_notch`` removes what repeats every 2 pixels (checkerboards and stripes at the highest
frequency an image can hold) and keeps the rest. A 2x2-patched diffusion U-Net trained on a CPU
budget leaves such a pattern at 16x the amplitude real CBIS-DDSM patches carry there
(``metrics.artefacts.period2_amplitude``), while real patches hold almost nothing at that frequency,
so removing it changes real images little (0.23 grey levels on average at sigma 2.5 over 400
training patches, bench/results/notch-window.json).

The filter subtracts, along each axis in turn, a band around the Nyquist frequency: the image
convolved with (-1)^n times a Gaussian window of ``sigma`` pixels (unit gain at Nyquist, a band
about 1 / (2 pi sigma) cycles per pixel wide). Borders are reflected, so no ringing comes from the
image edges (a global FFT notch raised real images' 2-pixel amplitude fourfold through edge ringing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def notch_radius(sigma: float) -> int:
    """Half-width of the filter's kernel (3 sigma); images must be larger than this (reflected borders)."""
    return max(1, int(round(3 * sigma)))


def _nyquist_band(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = notch_radius(sigma)
    n = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    window = torch.exp(-n**2 / (2 * sigma**2))
    return (1 - 2 * (n.abs() % 2)) * window / window.sum()


def nyquist_notch(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` (N×C×H×W) without the band around 2-pixel periodicity along rows and columns."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, not {sigma}")
    band = _nyquist_band(float(sigma), images.device, images.dtype)
    radius, channels = len(band) // 2, images.shape[1]
    if radius >= min(images.shape[-2:]):
        raise ValueError(f"sigma {sigma} needs images larger than {radius} px (reflected borders), "
                         f"got {tuple(images.shape[-2:])}")
    across = band.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    out = images - F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), across, groups=channels)
    down = band.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return out - F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), down, groups=channels)
