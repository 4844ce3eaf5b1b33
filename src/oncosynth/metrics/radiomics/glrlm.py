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

from oncosynth.metrics.radiomics.firstorder import EPS

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


def run_length_matrix(bins: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Run counts, B×4×G×R (grey level g at g-1, run length r at r-1; R = max(H, W))."""
    b, h, w = bins.shape
    n = h * w
    max_run = max(h, w)
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
    code = owner * (n_levels * max_run) + (grey - 1) * max_run + (lengths - 1)
    counts = torch.bincount(code, minlength=b * 4 * n_levels * max_run)
    return counts.view(b, 4, n_levels, max_run).to(torch.float64)


def glrlm(bins: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """The 16 GLRLM features (dict name -> B)."""
    p = run_length_matrix(bins, n_levels)
    b, _, g, r = p.shape
    i = torch.arange(1, g + 1, dtype=torch.float64, device=p.device).view(1, 1, -1)
    j = torch.arange(1, r + 1, dtype=torch.float64, device=p.device).view(1, 1, -1)
    pg, pr = p.sum(dim=3), p.sum(dim=2)  # B×4×G, B×4×R
    n_runs = pg.sum(dim=2)
    n_pixels = (pr * j).sum(dim=2)
    pg_norm, pr_norm = pg / n_runs.unsqueeze(2), pr / n_runs.unsqueeze(2)
    u_i = (pg_norm * i).sum(dim=2, keepdim=True)
    u_j = (pr_norm * j).sum(dim=2, keepdim=True)
    joint = p / n_runs.view(b, 4, 1, 1)
    i2, j2 = i.unsqueeze(3) ** 2, j.unsqueeze(2) ** 2  # B×4×G×1 and B×4×1×R shapes
    per_angle = {
        "GrayLevelNonUniformity": (pg ** 2).sum(dim=2) / n_runs,
        "GrayLevelNonUniformityNormalized": (pg ** 2).sum(dim=2) / n_runs ** 2,
        "GrayLevelVariance": (pg_norm * (i - u_i) ** 2).sum(dim=2),
        "HighGrayLevelRunEmphasis": (pg * i ** 2).sum(dim=2) / n_runs,
        "LongRunEmphasis": (pr * j ** 2).sum(dim=2) / n_runs,
        "LongRunHighGrayLevelEmphasis": (p * j2 * i2).sum(dim=(2, 3)) / n_runs,
        "LongRunLowGrayLevelEmphasis": (p * j2 / i2).sum(dim=(2, 3)) / n_runs,
        "LowGrayLevelRunEmphasis": (pg / i ** 2).sum(dim=2) / n_runs,
        "RunEntropy": -(joint * torch.log2(joint + EPS)).sum(dim=(2, 3)),
        "RunLengthNonUniformity": (pr ** 2).sum(dim=2) / n_runs,
        "RunLengthNonUniformityNormalized": (pr ** 2).sum(dim=2) / n_runs ** 2,
        "RunPercentage": n_runs / n_pixels,
        "RunVariance": (pr_norm * (j - u_j) ** 2).sum(dim=2),
        "ShortRunEmphasis": (pr / j ** 2).sum(dim=2) / n_runs,
        "ShortRunHighGrayLevelEmphasis": (p * i2 / j2).sum(dim=(2, 3)) / n_runs,
        "ShortRunLowGrayLevelEmphasis": (p / (i2 * j2)).sum(dim=(2, 3)) / n_runs,
    }
    return {name: per_angle[name].nanmean(dim=1) for name in NAMES}
