"""PyRadiomics first-order features for a batch of whole-image ROIs.

Every pixel of the (resampled, filtered) image is in the ROI, so each image
is a plain vector of values. Formulas follow ``radiomics.firstorder``:
population moments, NumPy's linear percentiles, histogram entropy and
uniformity over the discretised grey levels, ``voxelArrayShift`` added for
the energy features, total energy scaled by the pixel area.
"""

from __future__ import annotations

import torch

from oncosynth.metrics.radiomics.counting import EPS


NAMES = ("10Percentile", "90Percentile", "Energy", "Entropy", "InterquartileRange", "Kurtosis", "Maximum",
         "MeanAbsoluteDeviation", "Mean", "Median", "Minimum", "Range", "RobustMeanAbsoluteDeviation",
         "RootMeanSquared", "Skewness", "TotalEnergy", "Uniformity", "Variance")


def _leaf_sum(x: torch.Tensor) -> torch.Tensor:
    """NumPy's pairwise-sum leaf (<= 128 values): 8 running sums, combined as a tree."""
    n = x.shape[-1]
    if n < 8:
        total = torch.zeros_like(x[..., 0])
        for k in range(n):
            total = total + x[..., k]
        return total
    r = x[..., :8].clone()
    end = n - n % 8
    for i in range(8, end, 8):
        r += x[..., i:i + 8]
    total = ((r[..., 0] + r[..., 1]) + (r[..., 2] + r[..., 3])) + ((r[..., 4] + r[..., 5]) + (r[..., 6] + r[..., 7]))
    for i in range(end, n):
        total = total + x[..., i]
    return total


def pairwise_sum(x: torch.Tensor) -> torch.Tensor:
    """Row sums of B×N in NumPy's summation order (its float reductions are pairwise).

    Needed where a feature is pure rounding noise: the mean of a wavelet
    detail band is 0 in exact arithmetic (the high-pass taps sum to 0), so
    PyRadiomics reports ~1e-16, and FRD z-scores it like any other feature.
    """
    n = x.shape[-1]
    if n <= 128:
        return _leaf_sum(x)
    half = n // 2
    half -= half % 8
    return pairwise_sum(x[..., :half]) + pairwise_sum(x[..., half:])


def _percentile(sorted_values: torch.Tensor, q: float) -> torch.Tensor:
    """NumPy's default ('linear') percentile on rows that are already sorted."""
    n = sorted_values.shape[1]
    position = (n - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, n - 1)
    t = position - low
    a, b = sorted_values[:, low], sorted_values[:, high]
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def histogram(bins: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Counts per grey level (B × n_levels; level g at column g - 1)."""
    b = bins.shape[0]
    flat = bins.flatten(1) - 1 + n_levels * torch.arange(b, device=bins.device).view(-1, 1)
    return torch.bincount(flat.flatten(), minlength=b * n_levels).view(b, n_levels).to(torch.float64)


def first_order(values: torch.Tensor, bins: torch.Tensor, n_levels: int, shift: float = 300.0,
                pixel_volume: float = 4.0) -> dict[str, torch.Tensor]:
    """The 18 first-order features (dict name -> B) of B images (values B×H×W float64)."""
    x = values.flatten(1)
    n = x.shape[1]
    ordered = torch.sort(x, dim=1).values
    p10, p90 = _percentile(ordered, 10), _percentile(ordered, 90)
    mean = pairwise_sum(x) / n
    centred = x - mean[:, None]
    m2 = (centred ** 2).mean(dim=1)
    m3 = (centred ** 3).mean(dim=1)
    m4 = (centred ** 4).mean(dim=1)
    flat = m2 == 0
    m2_safe = torch.where(flat, torch.ones_like(m2), m2)
    energy = ((x + shift) ** 2).sum(dim=1)

    inside = (x >= p10[:, None]) & (x <= p90[:, None])  # robust MAD: values within [p10, p90]
    kept = inside.sum(dim=1).to(torch.float64)
    robust_mean = torch.where(inside, x, torch.zeros_like(x)).sum(dim=1) / kept
    robust_mad = torch.where(inside, (x - robust_mean[:, None]).abs(), torch.zeros_like(x)).sum(dim=1) / kept

    p = histogram(bins, n_levels) / n
    return {
        "10Percentile": p10,
        "90Percentile": p90,
        "Energy": energy,
        "Entropy": -(p * torch.log2(p + EPS)).sum(dim=1),
        "InterquartileRange": _percentile(ordered, 75) - _percentile(ordered, 25),
        "Kurtosis": m4 / m2_safe ** 2.0,
        "Maximum": ordered[:, -1],
        "MeanAbsoluteDeviation": centred.abs().mean(dim=1),
        "Mean": mean,
        "Median": _percentile(ordered, 50),
        "Minimum": ordered[:, 0],
        "Range": ordered[:, -1] - ordered[:, 0],
        "RobustMeanAbsoluteDeviation": robust_mad,
        "RootMeanSquared": torch.sqrt(energy / n),
        "Skewness": m3 / m2_safe ** 1.5,
        "TotalEnergy": energy * pixel_volume,
        "Uniformity": (p ** 2).sum(dim=1),
        "Variance": m2,
    }
