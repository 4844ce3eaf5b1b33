"""PyRadiomics GLRLM features for a batch of discretised images.

As ``radiomics.glrlm`` with ``force2D`` and a whole-image mask: runs of equal
grey level along each of the 4 in-plane directions (rows, columns and both
diagonals), one run-length matrix per direction, features per direction
averaged over the directions. Runs are found for the whole batch at once:
the pixels are laid out line by line for a direction (a fixed permutation
per image size), a run starts wherever a line starts or the grey level
changes, and cumulative sums turn the starts into run ids.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from oncosynth.metrics.radiomics.counting import count_entropy, per_group

NAMES = ("GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized", "GrayLevelVariance",
         "HighGrayLevelRunEmphasis", "LongRunEmphasis", "LongRunHighGrayLevelEmphasis",
         "LongRunLowGrayLevelEmphasis", "LowGrayLevelRunEmphasis", "RunEntropy", "RunLengthNonUniformity",
         "RunLengthNonUniformityNormalized", "RunPercentage", "RunVariance", "ShortRunEmphasis",
         "ShortRunHighGrayLevelEmphasis", "ShortRunLowGrayLevelEmphasis")


@lru_cache(maxsize=16)
def line_order(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For each direction: pixel indices line after line (4×HW) and line-start flags (4×HW)."""
    index = np.arange(h * w).reshape(h, w)
    orders, starts = [], []
    lines_per_direction = (
        [index[y] for y in range(h)],  # along rows
        [index[:, x] for x in range(w)],  # along columns
        [np.diagonal(index, offset=o) for o in range(-(h - 1), w)],  # down-right diagonals
        [np.diagonal(index[:, ::-1], offset=o) for o in range(-(h - 1), w)],  # down-left diagonals
    )
    for lines in lines_per_direction:
        orders.append(np.concatenate(lines))
        flags = np.zeros(h * w, dtype=bool)
        flags[np.cumsum([0] + [len(line) for line in lines[:-1]])] = True
        starts.append(flags)
    return np.stack(orders), np.stack(starts)


def runs(bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every run of the batch: its owner (image * 4 + direction), grey level and length."""
    b, h, w = bins.shape
    n = h * w
    order, starts = line_order(h, w)
    order = torch.from_numpy(order).to(bins.device)
    starts = torch.from_numpy(starts).to(bins.device)
    laid = bins.flatten(1)[:, order.flatten()].view(b, 4, n)  # B×4×N along each direction's lines
    change = torch.ones_like(laid, dtype=torch.bool)
    change[..., 1:] = laid[..., 1:] != laid[..., :-1]
    begin = change | starts.unsqueeze(0)
    run_id = torch.cumsum(begin.flatten().to(torch.int64), 0) - 1  # global over batch and directions
    lengths = torch.bincount(run_id)
    grey = laid.flatten()[begin.flatten()]  # grey level of each run, in run-id order
    owner = torch.arange(b * 4, device=bins.device).repeat_interleave(begin.view(b * 4, n).sum(dim=1))
    return owner, grey, lengths


def glrlm(bins: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The 16 GLRLM features (dict name -> B): sums over the runs, per direction, averaged."""
    b, h, w = bins.shape
    g, r = n_levels, max(h, w)
    owner, grey, length = runs(bins)
    dev = bins.device
    n_owner = b * 4

    def per_owner(values: torch.Tensor) -> torch.Tensor:
        return per_group(owner, values, n_owner)

    pg = torch.bincount(owner * g + grey - 1, minlength=n_owner * g).view(n_owner, g).to(torch.float64)
    pr = torch.bincount(owner * r + length - 1, minlength=n_owner * r).view(n_owner, r).to(torch.float64)
    i = torch.arange(1, g + 1, dtype=torch.float64, device=dev)
    j = torch.arange(1, r + 1, dtype=torch.float64, device=dev)
    gi, lj = grey.to(torch.float64), length.to(torch.float64)
    n_runs = pg.sum(dim=1)
    n_pixels = (pr * j).sum(dim=1)
    pg_norm, pr_norm = pg / n_runs[:, None], pr / n_runs[:, None]
    u_i = (pg_norm * i).sum(dim=1, keepdim=True)
    u_j = (pr_norm * j).sum(dim=1, keepdim=True)
    entropy = count_entropy(owner * (g * r) + (grey - 1) * r + length - 1, g * r, n_runs)
    gi2, lj2 = gi * gi, lj * lj
    per_direction = {
        "GrayLevelNonUniformity": (pg ** 2).sum(dim=1) / n_runs,
        "GrayLevelNonUniformityNormalized": (pg ** 2).sum(dim=1) / n_runs ** 2,
        "GrayLevelVariance": (pg_norm * (i - u_i) ** 2).sum(dim=1),
        "HighGrayLevelRunEmphasis": (pg * i ** 2).sum(dim=1) / n_runs,
        "LongRunEmphasis": (pr * j ** 2).sum(dim=1) / n_runs,
        "LongRunHighGrayLevelEmphasis": per_owner(lj2 * gi2) / n_runs,
        "LongRunLowGrayLevelEmphasis": per_owner(lj2 / gi2) / n_runs,
        "LowGrayLevelRunEmphasis": (pg / i ** 2).sum(dim=1) / n_runs,
        "RunEntropy": entropy,
        "RunLengthNonUniformity": (pr ** 2).sum(dim=1) / n_runs,
        "RunLengthNonUniformityNormalized": (pr ** 2).sum(dim=1) / n_runs ** 2,
        "RunPercentage": n_runs / n_pixels,
        "RunVariance": (pr_norm * (j - u_j) ** 2).sum(dim=1),
        "ShortRunEmphasis": (pr / j ** 2).sum(dim=1) / n_runs,
        "ShortRunHighGrayLevelEmphasis": per_owner(gi2 / lj2) / n_runs,
        "ShortRunLowGrayLevelEmphasis": per_owner(1 / (gi2 * lj2)) / n_runs,
    }
    return {name: per_direction[name].view(b, 4).nanmean(dim=1) for name in NAMES}
