"""PyRadiomics GLCM features (the 22 FRD v1 enables) for a batch of discretised images.

As ``radiomics.glcm`` with ``force2D``, distance 1 and a whole-image mask:
one co-occurrence matrix per in-plane angle (4), made symmetric (``P + P.T``),
normalised per angle; each feature is computed per angle and averaged over the
angles. Grey levels run 1..Ng; PyRadiomics drops levels absent from the ROI,
which only removes all-zero rows and columns, so zero-padding to the batch's
largest Ng (G) gives the same sums. The two features that use Ng itself
(Idmn, Idn) take each image's own Ng. Work is O(pixels) per image, not O(G²).
"""

from __future__ import annotations

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


def _one_angle(i: torch.Tensor, j: torch.Tensor, ng: torch.Tensor, g: int) -> dict[str, torch.Tensor]:
    """Features of one angle from its pairs (B×M grey levels of a pixel and its neighbour).

    The symmetric matrix P = (C + C.T) / 2M is never built densely: marginals
    and the sum/difference distributions come from counts over the pairs, and
    the entropy-type sums over P's entries come from the distinct unordered
    pairs (an off-diagonal pair stands for two equal entries).
    """
    b, m = i.shape
    dev = i.device
    owner = torch.arange(b, device=dev).view(-1, 1)
    total = 2.0 * m

    def counts(index: torch.Tensor, size: int) -> torch.Tensor:
        return torch.bincount((owner * size + index).flatten(), minlength=b * size).view(b, size).to(torch.float64)

    px = (counts(i - 1, g) + counts(j - 1, g)) / total  # = py (P is symmetric)
    sums = 2 * counts(i + j - 2, 2 * g - 1) / total  # k = 2 .. 2G
    diffs = 2 * counts((i - j).abs(), g) / total  # k = 0 .. G-1
    levels = torch.arange(1, g + 1, dtype=torch.float64, device=dev)
    k_sum = torch.arange(2, 2 * g + 1, dtype=torch.float64, device=dev)
    k_diff = torch.arange(0, g, dtype=torch.float64, device=dev)

    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    code, n = distinct_counts(((owner * g + lo - 1) * g + hi - 1).flatten(), b * g * g)
    image, lo_u, hi_u = code // (g * g), (code // g) % g, code % g
    diagonal = lo_u == hi_u
    value = torch.where(diagonal, 2 * n, n).to(torch.float64) / total  # the entry P[lo, hi] (= P[hi, lo])
    copies = torch.where(diagonal, 1.0, 2.0)

    ux = (px * levels).sum(dim=1)
    centred_lo, centred_hi = lo_u + 1 - ux[image], hi_u + 1 - ux[image]
    hxy = -per_group(image, copies * value * torch.log2(value + EPS), b)
    hx = -(px * torch.log2(px + EPS)).sum(dim=1)
    hxy1 = -per_group(image, copies * value * torch.log2(px[image, lo_u] * px[image, hi_u] + EPS), b)
    # HXY2 = -sum_ij px_i py_j log2(px_i py_j + eps) over all G×G pairs; it separates into the
    # marginal entropies plus eps/ln2 per pair of present levels (error ~eps**2 / (px py))
    present = (px > 0).sum(dim=1).to(torch.float64)
    plain = -(px * torch.log2(torch.where(px > 0, px, 1.0))).sum(dim=1)
    hxy2 = 2 * plain * px.sum(dim=1) - present * present * EPS / torch.log(torch.tensor(2.0, dtype=torch.float64))

    sig2 = (px * (levels - ux[:, None]) ** 2).sum(dim=1)
    corm = per_group(image, copies * value * centred_lo * centred_hi, b)
    corr = corm / (sig2.sqrt() * sig2.sqrt() + EPS)
    corr = torch.where(sig2 == 0, torch.ones_like(corr), corr)
    centre = k_sum - 2 * ux[:, None]  # (i + j) - ux - uy
    diff_avg = (k_diff * diffs).sum(dim=1)
    imc1 = torch.where(hx != 0, (hxy - hxy1) / torch.where(hx != 0, hx, 1.0), 0.0)
    imc2 = torch.where(present == 1, 0.0, (1 - torch.exp(-2 * (hxy2 - hxy))) ** 0.5)
    ngf = ng.to(torch.float64)[:, None]
    return {
        "Autocorrelation": per_group(image, copies * value * (lo_u + 1) * (hi_u + 1), b),
        "JointAverage": ux,
        "ClusterProminence": (sums * centre ** 4).sum(dim=1),
        "ClusterShade": (sums * centre ** 3).sum(dim=1),
        "ClusterTendency": (sums * centre ** 2).sum(dim=1),
        "Contrast": (diffs * k_diff ** 2).sum(dim=1),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": -(diffs * torch.log2(diffs + EPS)).sum(dim=1),
        "DifferenceVariance": (diffs * (k_diff - diff_avg[:, None]) ** 2).sum(dim=1),
        "JointEnergy": per_group(image, copies * value * value, b),
        "JointEntropy": hxy,
        "Imc1": imc1,
        "Imc2": imc2,
        "Idm": (diffs / (1 + k_diff ** 2)).sum(dim=1),
        "Idmn": (diffs / (1 + k_diff ** 2 / ngf ** 2)).sum(dim=1),
        "Id": (diffs / (1 + k_diff)).sum(dim=1),
        "Idn": (diffs / (1 + k_diff / ngf)).sum(dim=1),
        "InverseVariance": (diffs[:, 1:] / k_diff[1:] ** 2).sum(dim=1),
        "MaximumProbability": torch.zeros(b, dtype=torch.float64, device=dev).scatter_reduce_(
            0, image, value, reduce="amax"),
        "SumEntropy": -(sums * torch.log2(sums + EPS)).sum(dim=1),
        "SumSquares": sig2,
    }


def glcm(bins: torch.Tensor, ng: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The GLCM features (dict name -> B) of B discretised images with per-image Ng."""
    angles = [_one_angle(*_shifted_pairs(bins, dy, dx), ng, n_levels) for dy, dx in OFFSETS]
    return {name: torch.stack([a[name] for a in angles], dim=1).nanmean(dim=1) for name in NAMES}
