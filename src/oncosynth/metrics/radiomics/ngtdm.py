"""PyRadiomics NGTDM features for a batch of discretised images.

As ``radiomics.ngtdm`` with ``force2D``, distance 1 and a whole-image mask:
for every pixel, the mean grey level of its in-image 8-neighbourhood; per
grey level i, n_i pixels and s_i = sum |i - neighbourhood mean|. Features use
only the grey levels present (p_i > 0); absent levels are masked out of the
pairwise sums rather than removed, so images of a batch can share one G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAMES = ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength")


def neighbourhood_table(bins: torch.Tensor, n_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n_i (pixel count) and s_i (sum of |i - neighbour mean|) per grey level, each B×G."""
    b = bins.shape[0]
    grey = bins.to(torch.float64).unsqueeze(1)
    kernel = torch.ones(1, 1, 3, 3, dtype=torch.float64, device=bins.device)
    kernel[0, 0, 1, 1] = 0
    total = F.conv2d(F.pad(grey, (1, 1, 1, 1)), kernel)
    count = F.conv2d(F.pad(torch.ones_like(grey), (1, 1, 1, 1)), kernel)
    diff = (grey - total / count).abs()[:, 0]  # every pixel of an image >= 2x2 has a neighbour
    index = (bins - 1 + n_levels * torch.arange(b, device=bins.device).view(-1, 1, 1)).flatten()
    size = b * n_levels
    n_i = torch.bincount(index, minlength=size).view(b, n_levels).to(torch.float64)
    s_i = torch.bincount(index, weights=diff.flatten(), minlength=size).view(b, n_levels)
    return n_i, s_i


def _sum_abs_differences(a: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """sum over ordered pairs of present entries |a_i - a_j| (B), by sorting: O(G log G)."""
    m = present.sum(dim=1, keepdim=True)
    ordered = torch.sort(torch.where(present, a, torch.inf), dim=1).values  # present first, ascending
    rank = torch.arange(a.shape[1], device=a.device).expand_as(a)
    weight = (2 * rank - m + 1).to(torch.float64)  # times the k-th smallest is added minus subtracted
    return 2 * torch.where(rank < m, ordered * weight, 0.0).sum(dim=1)


def ngtdm(bins: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The 5 NGTDM features (dict name -> B)."""
    n_i, s_i = neighbourhood_table(bins, n_levels)
    present = n_i > 0
    n_valid = n_i.sum(dim=1)
    p = n_i / n_valid[:, None]
    levels = torch.arange(1, n_levels + 1, dtype=torch.float64, device=bins.device)
    n_present = present.sum(dim=1).to(torch.float64)
    ps = p * s_i
    sum_s = s_i.sum(dim=1)
    coarse = ps.sum(dim=1)
    coarseness = torch.where(coarse != 0, 1 / torch.where(coarse != 0, coarse, 1.0), 1e6)

    # sum_ij p_i p_j (i - j)^2 = 2 (sum p i^2 - (sum p i)^2) since sum p = 1
    mean_i = (p * levels).sum(dim=1)
    spread = 2 * ((p * levels * levels).sum(dim=1) * p.sum(dim=1) - mean_i * mean_i)
    div = n_present * (n_present - 1)
    contrast = spread * sum_s / n_valid
    contrast = torch.where(div != 0, contrast / torch.where(div != 0, div, 1.0), 0.0)

    absdiff = _sum_abs_differences(levels * p, present)
    busyness = torch.where(absdiff != 0, coarse / torch.where(absdiff != 0, absdiff, 1.0), 0.0)

    # complexity divides by p_i + p_j, so it stays a sum over pairs of present levels
    pair = (present.unsqueeze(2) & present.unsqueeze(1)).to(torch.float64)
    divisor = p.unsqueeze(2) + p.unsqueeze(1)
    divisor = torch.where(divisor == 0, 1.0, divisor)
    gap = (levels.view(-1, 1) - levels.view(1, -1)).abs()
    complexity = (gap * pair * (ps.unsqueeze(2) + ps.unsqueeze(1)) / divisor).sum(dim=(1, 2)) / n_valid

    # sum over present pairs of (p_i + p_j)(i - j)^2 = 2 sum_i p_i sum_j [present j] (i - j)^2
    pres = present.to(torch.float64)
    s1, s2 = (pres * levels).sum(dim=1, keepdim=True), (pres * levels * levels).sum(dim=1, keepdim=True)
    strength = 2 * (p * (n_present[:, None] * levels * levels - 2 * levels * s1 + s2)).sum(dim=1)
    strength = torch.where(sum_s != 0, strength / torch.where(sum_s != 0, sum_s, 1.0), 0.0)
    return {"Busyness": busyness, "Coarseness": coarseness, "Complexity": complexity, "Contrast": contrast,
            "Strength": strength}
