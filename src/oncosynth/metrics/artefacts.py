"""Grid artefacts: how strongly a set of images carries a pattern that repeats every 2 pixels.

A generator that works on 2x2 pixel blocks (a patched diffusion U-Net, a transposed
convolution of stride 2) can leave an error locked to its block grid: a checkerboard
or stripes of period 2. Such a pattern sits at the highest frequency the image can
hold (Nyquist), where real mammograms carry little coherent energy, so its local
amplitude separates it from texture and noise.

``period2_amplitude`` correlates each ``window`` x ``window`` tile with the three
period-2 sign patterns (-1)^row, (-1)^column and (-1)^(row+column) and returns the
root mean square of those correlations in grey levels (0-255): the typical amplitude
of a locally coherent 2-pixel pattern. Each pattern is correlated with the image
after a [-1, 2, -1]/4 filter along its axes, which keeps a period-2 pattern at its
amplitude but removes constants and linear ramps (a plain gradient would otherwise
correlate with alternating signs by half its slope). Compare a synthetic set with real images of
the same size and preprocessing; the ratio is what the number means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 8  # tile size (px); an image needs WINDOW + 2 pixels (the [-1, 2, -1] filter's margin)


def _second_difference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[-1, 2, -1] / 4 along ``dim`` ('valid'): a period-2 pattern passes unchanged, a linear ramp gives 0."""
    n = x.shape[dim]
    return (2 * x.narrow(dim, 1, n - 2) - x.narrow(dim, 0, n - 2) - x.narrow(dim, 2, n - 2)) / 4


def _tile_correlation(x: torch.Tensor, row_sign: bool, col_sign: bool, window: int) -> torch.Tensor:
    """Per tile: mean of x times (-1)^row (if row_sign) times (-1)^column (if col_sign)."""
    height, width = x.shape[-2:]
    sign = torch.ones(height, width, device=x.device)
    if row_sign:
        sign = sign * (1 - 2 * (torch.arange(height, device=x.device) % 2))[:, None]
    if col_sign:
        sign = sign * (1 - 2 * (torch.arange(width, device=x.device) % 2))[None, :]
    return F.avg_pool2d(x * sign, window)


def period2_amplitude(images: torch.Tensor, window: int = WINDOW) -> float:
    """RMS amplitude (grey levels) of period-2 patterns in ``window``-pixel tiles of N×C×H×W images
    (floats in [0, 1] or uint8)."""
    if images.ndim != 4:
        raise ValueError(f"expected N x C x H x W images, got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if window < 2 or window % 2 or height < window + 2 or width < window + 2:
        raise ValueError(f"window must be an even size >= 2 with a 1-pixel margin inside the {height}x{width} "
                         f"images, not {window}")
    x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
    across_rows, across_cols = _second_difference(x, 2), _second_difference(x, 3)
    squares = [_tile_correlation(across_rows, True, False, window).pow(2).mean(),
               _tile_correlation(across_cols, False, True, window).pow(2).mean(),
               _tile_correlation(_second_difference(across_rows, 3), True, True, window).pow(2).mean()]
    return float(torch.stack(squares).sum().sqrt())
