"""PyRadiomics GLSZM features for a batch of discretised images.

A zone is a set of 8-connected pixels (``force2D``: all in-plane neighbours)
with the same grey level; the size-zone matrix counts zones per (grey level,
size). Zones of the whole batch are found at once by a union-find over the
same-grey neighbour pairs (``zone_labels``); the features are sums over the
zones.
"""

from __future__ import annotations

import torch

from oncosynth.metrics.radiomics.counting import count_entropy, per_group

NAMES = ("GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized", "GrayLevelVariance",
         "HighGrayLevelZoneEmphasis", "LargeAreaEmphasis", "LargeAreaHighGrayLevelEmphasis",
         "LargeAreaLowGrayLevelEmphasis", "LowGrayLevelZoneEmphasis", "SizeZoneNonUniformity",
         "SizeZoneNonUniformityNormalized", "SmallAreaEmphasis", "SmallAreaHighGrayLevelEmphasis",
         "SmallAreaLowGrayLevelEmphasis", "ZoneEntropy", "ZonePercentage", "ZoneVariance")

# half of the 8-neighbourhood; the other half is the same edges seen from the other end
HALF_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))


def _edges(bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global pixel indices of every 8-adjacent pair with the same grey level."""
    b, h, w = bins.shape
    index = torch.arange(b * h * w, device=bins.device).view(b, h, w)
    firsts, seconds = [], []
    for dy, dx in HALF_NEIGHBOURS:
        x0, x1 = max(0, -dx), w - max(0, dx)
        a = index[:, :h - dy, x0:x1]
        c = index[:, dy:, x0 + dx:x1 + dx]
        same = bins[:, :h - dy, x0:x1] == bins[:, dy:, x0 + dx:x1 + dx]
        firsts.append(a[same])
        seconds.append(c[same])
    return torch.cat(firsts), torch.cat(seconds)


def zone_labels(bins: torch.Tensor) -> torch.Tensor:
    """Zone label of every pixel (flat, B*H*W): one pixel index of its zone, shared by the zone.

    Union-find by hooking: every same-grey edge whose ends carry different
    labels hooks the larger label's root under the smaller one (a scatter
    min), then pointer jumping flattens the trees. Each round at least halves
    the number of trees along any path, so it ends in a few rounds.
    """
    first, second = _edges(bins)
    labels = torch.arange(bins.numel(), device=bins.device)
    while True:
        a, c = labels[first], labels[second]
        differ = a != c
        if not bool(differ.any()):
            return labels
        low, high = torch.minimum(a, c)[differ], torch.maximum(a, c)[differ]
        labels.scatter_reduce_(0, high, low, reduce="amin")
        while True:  # pointer jumping until every label is a root
            jumped = labels[labels]
            if torch.equal(jumped, labels):
                break
            labels = jumped


def glszm(bins: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The 16 GLSZM features (dict name -> B)."""
    b, h, w = bins.shape
    n = h * w
    labels = zone_labels(bins)
    sizes_all = torch.bincount(labels, minlength=b * n)
    roots = torch.nonzero(sizes_all).flatten()  # one entry per zone, sorted, so grouped by image
    size = sizes_all[roots].to(torch.float64)
    grey_level = bins.flatten()[roots]
    image = roots // n
    grey = grey_level.to(torch.float64)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return per_group(image, values, b)

    n_zones = per_image(torch.ones_like(size))
    by_grey = torch.bincount(image * n_levels + grey_level - 1, minlength=b * n_levels).view(b, n_levels)
    by_size = torch.bincount(image * n + sizes_all[roots] - 1, minlength=b * n).view(b, n)

    pg = by_grey.to(torch.float64)
    levels = torch.arange(1, n_levels + 1, dtype=torch.float64, device=bins.device)
    u_i = (pg * levels).sum(dim=1) / n_zones
    u_j = per_image(size) / n_zones
    entropy = count_entropy(image * (n_levels * n) + (grey_level - 1) * n + sizes_all[roots] - 1, n_levels * n,
                            n_zones)
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
