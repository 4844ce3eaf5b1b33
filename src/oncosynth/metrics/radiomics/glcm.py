"""PyRadiomics GLCM features (the 22 FRD v1 enables) for a batch of discretised images.

As ``radiomics.glcm`` with ``force2D``, distance 1 and a whole-image mask:
one co-occurrence matrix per in-plane angle (4), made symmetric (``P + P.T``),
normalised per angle; each feature is computed per angle and averaged over the
angles. Grey levels run 1..Ng; PyRadiomics drops levels absent from the ROI,
which only removes all-zero rows and columns, so zero-padding to the batch's
largest Ng (G) gives the same sums. The two features that use Ng itself
(Idmn, Idn) take each image's own Ng. Work is O(pixels) per image, not O(G²),
and all images and angles of a batch go through each step together.
"""

from __future__ import annotations

import math

import torch

from oncosynth.metrics.radiomics.counting import EPS, distinct_counts, per_group

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


def _pairs(bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs of the batch, every angle: owner (image * 4 + angle), both grey levels; pairs per owner."""
    b = bins.shape[0]
    owners, firsts, seconds, totals = [], [], [], []
    for angle, (dy, dx) in enumerate(OFFSETS):
        i, j = _shifted_pairs(bins, dy, dx)
        owner = (torch.arange(b, device=bins.device) * 4 + angle).view(-1, 1).expand_as(i)
        owners.append(owner.flatten())
        firsts.append(i.flatten())
        seconds.append(j.flatten())
        totals.append(torch.full((b,), i.shape[1], dtype=torch.float64, device=bins.device))
    per_owner = torch.stack(totals, dim=1).flatten()  # owner order: image * 4 + angle
    return torch.cat(owners), torch.cat(firsts), torch.cat(seconds), per_owner


def glcm(bins: torch.Tensor, ng: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The GLCM features (dict name -> B) of B discretised images with per-image Ng.

    The symmetric matrix P = (C + C.T) / 2M of each (image, angle) is never built
    densely: marginals and the sum/difference distributions come from counts
    over the pairs, and the entropy-type sums over P's entries come from the
    distinct unordered pairs (an off-diagonal pair stands for two equal entries).
    """
    b, g = bins.shape[0], n_levels
    dev = bins.device
    owner, i, j, pairs = _pairs(bins)
    n_owner = 4 * b
    total = 2.0 * pairs  # entries of C + C.T per owner

    def counts(index: torch.Tensor, size: int) -> torch.Tensor:
        flat = torch.bincount(owner * size + index, minlength=n_owner * size)
        return flat.view(n_owner, size).to(torch.float64)

    px = (counts(i - 1, g) + counts(j - 1, g)) / total[:, None]  # = py (P is symmetric)
    sums = 2 * counts(i + j - 2, 2 * g - 1) / total[:, None]  # k = 2 .. 2G
    diffs = 2 * counts((i - j).abs(), g) / total[:, None]  # k = 0 .. G-1
    levels = torch.arange(1, g + 1, dtype=torch.float64, device=dev)
    k_sum = torch.arange(2, 2 * g + 1, dtype=torch.float64, device=dev)
    k_diff = torch.arange(0, g, dtype=torch.float64, device=dev)

    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    code, n = distinct_counts((owner * g + lo - 1) * g + hi - 1, n_owner * g * g)
    group, lo_u, hi_u = code // (g * g), (code // g) % g, code % g
    diagonal = lo_u == hi_u
    value = torch.where(diagonal, 2 * n, n).to(torch.float64) / total[group]  # P[lo, hi] (= P[hi, lo])
    weighted = torch.where(diagonal, 1.0, 2.0) * value  # both entries of an off-diagonal pair

    ux = (px * levels).sum(dim=1)
    hxy = -per_group(group, weighted * torch.log2(value + EPS), n_owner)
    hx = -(px * torch.log2(px + EPS)).sum(dim=1)
    hxy1 = -per_group(group, weighted * torch.log2(px[group, lo_u] * px[group, hi_u] + EPS), n_owner)
    # HXY2 = -sum_ij px_i py_j log2(px_i py_j + eps) over all G×G pairs; it separates into the
    # marginal entropies plus eps/ln2 per pair of present levels (error ~eps**2 / (px py))
    present = (px > 0).sum(dim=1).to(torch.float64)
    plain = -(px * torch.log2(torch.where(px > 0, px, 1.0))).sum(dim=1)
    hxy2 = 2 * plain * px.sum(dim=1) - present * present * (EPS / math.log(2.0))

    sig2 = (px * (levels - ux[:, None]) ** 2).sum(dim=1)
    corm = per_group(group, weighted * (lo_u + 1 - ux[group]) * (hi_u + 1 - ux[group]), n_owner)
    corr = corm / (sig2.sqrt() * sig2.sqrt() + EPS)
    corr = torch.where(sig2 == 0, torch.ones_like(corr), corr)
    centre = k_sum - 2 * ux[:, None]  # (i + j) - ux - uy
    diff_avg = (k_diff * diffs).sum(dim=1)
    imc1 = torch.where(hx != 0, (hxy - hxy1) / torch.where(hx != 0, hx, 1.0), 0.0)
    imc2 = torch.where(present == 1, 0.0, (1 - torch.exp(-2 * (hxy2 - hxy))) ** 0.5)
    ngf = ng.to(torch.float64).repeat_interleave(4)[:, None]
    per_angle = {
        "Autocorrelation": per_group(group, weighted * (lo_u + 1) * (hi_u + 1), n_owner),
        "JointAverage": ux,
        "ClusterProminence": (sums * centre ** 4).sum(dim=1),
        "ClusterShade": (sums * centre ** 3).sum(dim=1),
        "ClusterTendency": (sums * centre ** 2).sum(dim=1),
        "Contrast": (diffs * k_diff ** 2).sum(dim=1),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": -(diffs * torch.log2(diffs + EPS)).sum(dim=1),
        "DifferenceVariance": (diffs * (k_diff - diff_avg[:, None]) ** 2).sum(dim=1),
        "JointEnergy": per_group(group, weighted * value, n_owner),
        "JointEntropy": hxy,
        "Imc1": imc1,
        "Imc2": imc2,
        "Idm": (diffs / (1 + k_diff ** 2)).sum(dim=1),
        "Idmn": (diffs / (1 + k_diff ** 2 / ngf ** 2)).sum(dim=1),
        "Id": (diffs / (1 + k_diff)).sum(dim=1),
        "Idn": (diffs / (1 + k_diff / ngf)).sum(dim=1),
        "InverseVariance": (diffs[:, 1:] / k_diff[1:] ** 2).sum(dim=1),
        "MaximumProbability": torch.zeros(n_owner, dtype=torch.float64, device=dev).scatter_reduce_(
            0, group, value, reduce="amax"),
        "SumEntropy": -(sums * torch.log2(sums + EPS)).sum(dim=1),
        "SumSquares": sig2,
    }
    return {name: per_angle[name].view(b, 4).nanmean(dim=1) for name in NAMES}
