"""PyRadiomics GLCM features (the 22 FRD v1 enables) for a batch of discretised images.

As ``radiomics.glcm`` with ``force2D``, distance 1 and a whole-image mask:
one co-occurrence matrix per in-plane angle (4), made symmetric (``P + P.T``),
normalised per angle; each feature is computed per angle and averaged over the
angles. Grey levels run 1..Ng; PyRadiomics drops levels absent from the ROI,
which only removes all-zero rows and columns, so a zero-padded G×G matrix
(G = the batch's largest Ng) gives the same sums. The two features that use
Ng itself (Idmn, Idn) take each image's own Ng.
"""

from __future__ import annotations

import torch

from oncosynth.metrics.radiomics.firstorder import EPS

NAMES = ("Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade", "ClusterTendency", "Contrast",
         "Correlation", "DifferenceAverage", "DifferenceEntropy", "DifferenceVariance", "JointEnergy",
         "JointEntropy", "Imc1", "Imc2", "Idm", "Idmn", "Id", "Idn", "InverseVariance", "MaximumProbability",
         "SumEntropy", "SumSquares")

# in-plane neighbour offsets (dy, dx), one per angle; the reverse direction comes from symmetry
OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))


def _shifted_pairs(bins: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey levels of every pixel and of its neighbour at (+dy, +dx), both inside the image."""
    h, w = bins.shape[1:]
    rows = slice(0, h - dy)
    first = bins[:, rows, max(0, -dx):w - max(0, dx)]
    second = bins[:, dy:, max(0, dx):w - max(0, -dx)]
    return first.flatten(1), second.flatten(1)


def cooccurrence(bins: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Normalised symmetric GLCMs, B×4×G×G (float64)."""
    b = bins.shape[0]
    g2 = n_levels * n_levels
    counts = []
    for dy, dx in OFFSETS:
        i, j = _shifted_pairs(bins, dy, dx)
        code = (i - 1) * n_levels + (j - 1) + g2 * torch.arange(b, device=bins.device).view(-1, 1)
        counts.append(torch.bincount(code.flatten(), minlength=b * g2).view(b, n_levels, n_levels))
    p = torch.stack(counts, dim=1).to(torch.float64)
    p = p + p.transpose(2, 3)
    return p / p.sum(dim=(2, 3), keepdim=True)


def _by_index(p: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum the G×G entries of p into `size` groups by a G×G index map (sums, differences)."""
    flat = p.flatten(2)
    out = torch.zeros(flat.shape[0], flat.shape[1], size, dtype=p.dtype, device=p.device)
    return out.scatter_add_(2, index.flatten().expand_as(flat), flat)


def glcm(bins: torch.Tensor, ng: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The GLCM features (dict name -> B) of B discretised images with per-image Ng."""
    p = cooccurrence(bins, n_levels)
    levels = torch.arange(1, n_levels + 1, dtype=torch.float64, device=bins.device)
    i, j = levels.view(-1, 1), levels.view(1, -1)
    px, py = p.sum(dim=3), p.sum(dim=2)  # B×4×G, indexed by i and by j
    ux = (px * levels).sum(dim=2, keepdim=True)
    uy = (py * levels).sum(dim=2, keepdim=True)

    sums = _by_index(p, (i + j - 2).to(torch.int64), 2 * n_levels - 1)  # k = 2 .. 2G
    diffs = _by_index(p, (i - j).abs().to(torch.int64), n_levels)  # k = 0 .. G-1
    k_sum = torch.arange(2, 2 * n_levels + 1, dtype=torch.float64, device=bins.device)
    k_diff = torch.arange(0, n_levels, dtype=torch.float64, device=bins.device)

    hxy = -(p * torch.log2(p + EPS)).sum(dim=(2, 3))
    hx = -(px * torch.log2(px + EPS)).sum(dim=2)
    hy = -(py * torch.log2(py + EPS)).sum(dim=2)
    outer = px.unsqueeze(3) * py.unsqueeze(2)
    log_outer = torch.log2(outer + EPS)
    hxy1 = -(p * log_outer).sum(dim=(2, 3))
    hxy2 = -(outer * log_outer).sum(dim=(2, 3))

    di = levels.view(1, 1, -1) - ux  # i - ux per angle
    dj = levels.view(1, 1, -1) - uy
    sigx = (px * di ** 2).sum(dim=2).sqrt()
    sigy = (py * dj ** 2).sum(dim=2).sqrt()
    corm = (p * di.unsqueeze(3) * dj.unsqueeze(2)).sum(dim=(2, 3))
    corr = corm / (sigx * sigy + EPS)
    corr = torch.where(sigx * sigy == 0, torch.ones_like(corr), corr)

    k_centre = k_sum.view(1, 1, -1) - ux - uy  # (i + j) - ux - uy for each sum k
    diff_avg = (k_diff * diffs).sum(dim=2)
    max_div = torch.maximum(hx, hy)
    imc1 = torch.where(max_div != 0, (hxy - hxy1) / torch.where(max_div != 0, max_div, 1.0), 0.0)
    imc2 = torch.where(hxy2 == hxy, 0.0, (1 - torch.exp(-2 * (hxy2 - hxy))) ** 0.5)
    ng_sq = (ng.to(torch.float64) ** 2).view(-1, 1, 1)
    per_angle = {
        "Autocorrelation": (p * (i * j)).sum(dim=(2, 3)),
        "JointAverage": ux[..., 0],
        "ClusterProminence": (sums * k_centre ** 4).sum(dim=2),
        "ClusterShade": (sums * k_centre ** 3).sum(dim=2),
        "ClusterTendency": (sums * k_centre ** 2).sum(dim=2),
        "Contrast": (diffs * k_diff ** 2).sum(dim=2),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": -(diffs * torch.log2(diffs + EPS)).sum(dim=2),
        "DifferenceVariance": (diffs * (k_diff - diff_avg.unsqueeze(2)) ** 2).sum(dim=2),
        "JointEnergy": (p * p).sum(dim=(2, 3)),
        "JointEntropy": hxy,
        "Imc1": imc1,
        "Imc2": imc2,
        "Idm": (diffs / (1 + k_diff ** 2)).sum(dim=2),
        "Idmn": (diffs / (1 + k_diff ** 2 / ng_sq)).sum(dim=2),
        "Id": (diffs / (1 + k_diff)).sum(dim=2),
        "Idn": (diffs / (1 + k_diff / ng.to(torch.float64).view(-1, 1, 1))).sum(dim=2),
        "InverseVariance": (diffs[..., 1:] / k_diff[1:] ** 2).sum(dim=2),
        "MaximumProbability": p.flatten(2).amax(dim=2),
        "SumEntropy": -(sums * torch.log2(sums + EPS)).sum(dim=2),
        "SumSquares": (px * di ** 2).sum(dim=2),
    }
    return {name: per_angle[name].nanmean(dim=1) for name in NAMES}
