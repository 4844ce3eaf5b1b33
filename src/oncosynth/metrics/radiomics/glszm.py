"""PyRadiomics GLSZM features for a batch of discretised images.

A zone is a set of 8-connected pixels (``force2D``: all in-plane neighbours)
with the same grey level; the size-zone matrix counts zones per (grey level,
size). Zones are found for the whole batch by label propagation: every
pixel starts with its own index as label, takes the smallest label among
same-grey neighbours, then jumps to its label's label (pointer jumping, so
long zones converge in a few rounds), until nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oncosynth.metrics.radiomics.firstorder import EPS

NAMES = ("GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized", "GrayLevelVariance",
         "HighGrayLevelZoneEmphasis", "LargeAreaEmphasis", "LargeAreaHighGrayLevelEmphasis",
         "LargeAreaLowGrayLevelEmphasis", "LowGrayLevelZoneEmphasis", "SizeZoneNonUniformity",
         "SizeZoneNonUniformityNormalized", "SmallAreaEmphasis", "SmallAreaHighGrayLevelEmphasis",
         "SmallAreaLowGrayLevelEmphasis", "ZoneEntropy", "ZonePercentage", "ZoneVariance")

NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def zone_labels(bins: torch.Tensor, max_rounds: int = 10_000) -> torch.Tensor:
    """Connected-zone label of every pixel (B×H×W): the smallest global pixel index in its zone."""
    b, h, w = bins.shape
    labels = torch.arange(b * h * w, device=bins.device).view(b, h, w)
    big = b * h * w  # larger than any label: padding never wins a minimum
    grey = F.pad(bins, (1, 1, 1, 1), value=0)  # grey 0 matches no pixel
    same = [grey[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == bins for dy, dx in NEIGHBOURS]
    for _ in range(max_rounds):
        padded = F.pad(labels, (1, 1, 1, 1), value=big)
        smallest = labels
        for (dy, dx), match in zip(NEIGHBOURS, same):
            neighbour = padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            smallest = torch.minimum(smallest, torch.where(match, neighbour, big))
        flat = smallest.flatten()
        jumped = flat[flat]  # the label of my label's pixel, in the same zone and no larger
        jumped = jumped[jumped]
        updated = jumped.view(b, h, w)
        if torch.equal(updated, labels):
            return labels
        labels = updated
    raise RuntimeError("zone labelling did not converge")  # cannot happen: labels only decrease


def glszm(bins: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The 16 GLSZM features (dict name -> B)."""
    b, h, w = bins.shape
    n = h * w
    labels = zone_labels(bins).flatten()
    sizes_all = torch.bincount(labels, minlength=b * n)
    roots = torch.nonzero(sizes_all).flatten()  # one entry per zone, sorted, so grouped by image
    size = sizes_all[roots].to(torch.float64)
    grey_level = bins.flatten()[roots]
    image = roots // n
    grey = grey_level.to(torch.float64)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(b, dtype=torch.float64, device=bins.device).index_add_(0, image, values)

    n_zones = per_image(torch.ones_like(size))
    by_grey = torch.bincount(image * n_levels + grey_level - 1, minlength=b * n_levels).view(b, n_levels)
    by_size = torch.bincount(image * n + sizes_all[roots] - 1, minlength=b * n).view(b, n)
    joint = torch.unique(image * (n_levels * n) + (grey_level - 1) * n + sizes_all[roots] - 1, return_counts=True)
    joint_image = joint[0] // (n_levels * n)
    joint_p = joint[1].to(torch.float64) / n_zones[joint_image]

    pg = by_grey.to(torch.float64)
    levels = torch.arange(1, n_levels + 1, dtype=torch.float64, device=bins.device)
    u_i = (pg * levels).sum(dim=1) / n_zones
    u_j = per_image(size) / n_zones
    entropy = torch.zeros(b, dtype=torch.float64, device=bins.device).index_add_(
        0, joint_image, -joint_p * torch.log2(joint_p + EPS))
    features = {
        "GrayLevelNonUniformity": (pg ** 2).sum(dim=1) / n_zones,
        "GrayLevelNonUniformityNormalized": (pg ** 2).sum(dim=1) / n_zones ** 2,
        "GrayLevelVariance": (pg / n_zones[:, None] * (levels - u_i[:, None]) ** 2).sum(dim=1),
        "HighGrayLevelZoneEmphasis": per_image(grey ** 2) / n_zones,
        "LargeAreaEmphasis": per_image(size ** 2) / n_zones,
        "LargeAreaHighGrayLevelEmphasis": per_image(grey ** 2 * size ** 2) / n_zones,
        "LargeAreaLowGrayLevelEmphasis": per_image(size ** 2 / grey ** 2) / n_zones,
        "LowGrayLevelZoneEmphasis": per_image(1 / grey ** 2) / n_zones,
        "SizeZoneNonUniformity": (by_size.to(torch.float64) ** 2).sum(dim=1) / n_zones,
        "SizeZoneNonUniformityNormalized": (by_size.to(torch.float64) ** 2).sum(dim=1) / n_zones ** 2,
        "SmallAreaEmphasis": per_image(1 / size ** 2) / n_zones,
        "SmallAreaHighGrayLevelEmphasis": per_image(grey ** 2 / size ** 2) / n_zones,
        "SmallAreaLowGrayLevelEmphasis": per_image(1 / (grey ** 2 * size ** 2)) / n_zones,
        "ZoneEntropy": entropy,
        "ZonePercentage": n_zones / n,
        "ZoneVariance": per_image((size - u_j[image]) ** 2) / n_zones,
    }
    return features
