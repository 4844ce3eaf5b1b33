"""Diversity within a set: mean pairwise MS-SSIM (lower = more varied).

MS-SSIM follows Wang, Simoncelli & Bovik (2003): an 11-px Gaussian window
(sigma 1.5), the mean contrast-structure term at every scale but the coarsest
and the mean SSIM (luminance times contrast-structure, pixel by pixel) at the
coarsest, as in the authors' reference code, combined with the standard five
weights. Images smaller than
161 px cannot hold five scales with an 11-px window; then the number of
scales is reduced to what fits (3 at 64 px, 4 at 128 px) and the leading
weights are renormalised to sum to one. The number of scales used is
returned so values are compared only at equal settings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA = 11, 1.5
K1, K2 = 0.01, 0.03


def ms_ssim_levels(size: int) -> int:
    """How many dyadic scales fit with an 11-px window (at most 5)."""
    return max(1, min(len(MS_SSIM_WEIGHTS), int(math.floor(math.log2(size / WINDOW))) + 1))


def _gaussian_1d(dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(WINDOW, dtype=dtype) - (WINDOW - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SIGMA**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter, every channel on its own."""
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)
    x = F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    return x.reshape(n, c, x.shape[-2], x.shape[-1])


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: mean SSIM and mean contrast-structure over the map."""
    c1, c2 = K1**2, K2**2  # data range 1
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x**2
    syy = _blur(y * y, g) - mu_y**2
    sxy = _blur(x * y, g) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * sxy + c2) / (sxx + syy + c2)
    # the mean of the product, not the product of means (they differ where brightness varies)
    return (luminance * contrast_structure).flatten(1).mean(1), contrast_structure.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """MS-SSIM between image pairs x[i], y[i] (N×C×H×W in [0, 1]); returns N values."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = x.float(), y.float()
    levels = levels or ms_ssim_levels(min(x.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
    weights = weights / weights.sum()
    window = _gaussian_1d(x.dtype)
    values = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window)
        values.append(cs if level < levels - 1 else ssim)
        if level < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    # negative cs (anti-correlated structure) would make fractional powers undefined
    stacked = torch.stack(values, dim=1).clamp(min=0)
    return torch.prod(stacked ** weights[None, :], dim=1)


def _pyramid_stats(images: torch.Tensor, levels: int, g: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per level: images, local means and local second moments (computed once per image)."""
    x = images.float()
    stats = []
    for level in range(levels):
        stats.append((x, _blur(x, g), _blur(x * x, g)))
        if level < levels - 1:
            x = F.avg_pool2d(x, 2)
    return stats


def _pairs_ms_ssim(stats, i: torch.Tensor, j: torch.Tensor, weights: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of pairs (i, j) from cached statistics: only the cross term is filtered per pair."""
    c1, c2 = K1**2, K2**2
    values = []
    for level, (x, mu, sq) in enumerate(stats):
        mu_x, mu_y = mu[i], mu[j]
        sxx, syy = sq[i] - mu_x**2, sq[j] - mu_y**2
        sxy = _blur(x[i] * x[j], g) - mu_x * mu_y
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level == len(stats) - 1:
            cs = cs * (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)  # SSIM map at the coarsest scale
        values.append(cs.flatten(1).mean(1))
    return torch.prod(torch.stack(values, 1).clamp(min=0) ** weights[None, :], dim=1)


def mean_pairwise_ms_ssim(images: torch.Tensor, max_pairs: int = 1000, seed: int = 0,
                          batch: int = 256) -> dict[str, float]:
    """Mean MS-SSIM over random distinct pairs within one set (all pairs when fewer)."""
    n = images.shape[0]
    if n < 2:
        return {"ms_ssim": float("nan"), "pairs": 0, "levels": 0}
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, size=max_pairs * 2)
        j = rng.integers(0, n, size=max_pairs * 2)
        keep = i != j
        i, j = i[keep][:max_pairs], j[keep][:max_pairs]
    levels = ms_ssim_levels(min(images.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
    weights = weights / weights.sum()
    g = _gaussian_1d(torch.float32)
    used = np.unique(np.concatenate([i, j]))  # cache statistics only for images in some pair
    remap = np.full(n, -1)
    remap[used] = np.arange(len(used))
    stats = _pyramid_stats(images[torch.as_tensor(used)], levels, g)
    ii, jj = torch.as_tensor(remap[i]), torch.as_tensor(remap[j])
    v = torch.cat([_pairs_ms_ssim(stats, ii[s : s + batch], jj[s : s + batch], weights, g)
                   for s in range(0, len(ii), batch)]).numpy()
    return {"ms_ssim": float(v.mean()), "ms_ssim_std": float(v.std()), "pairs": int(len(v)), "levels": levels}
