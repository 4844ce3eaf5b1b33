"""Counting helpers shared by the texture classes: per-image sums and entropies of sparse counts."""

from __future__ import annotations

import torch

EPS = 2.220446049250313e-16  # numpy.spacing(1), PyRadiomics' guard inside log2


def per_group(group: torch.Tensor, values: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum of ``values`` per group id (0 .. n_groups-1), float64."""
    return torch.zeros(n_groups, dtype=torch.float64, device=values.device).index_add_(0, group, values)


def distinct_counts(codes: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values of ``codes`` (0 .. n_cells-1, ascending) and how often each occurs."""
    if n_cells >= 2 ** 31 or codes.numel() == 0:
        return torch.unique(codes, return_counts=True)
    ordered = torch.sort(codes.to(torch.int32)).values  # int32 sorts ~2.5x faster than int64 on CPU
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    starts = torch.nonzero(first).flatten()
    ends = torch.cat([starts[1:], starts.new_tensor([ordered.numel()])])
    return ordered[starts].to(torch.int64), ends - starts


def count_entropy(codes: torch.Tensor, cells_per_group: int, totals: torch.Tensor) -> torch.Tensor:
    """-sum p log2(p + eps) per group, p = count of each distinct code / the group's total.

    ``codes`` are ``group * cells_per_group + cell``; ``totals`` has one entry per group.
    """
    n_groups = totals.shape[0]
    cells, counts = distinct_counts(codes, n_groups * cells_per_group)
    group = cells // cells_per_group
    p = counts.to(torch.float64) / totals[group]
    return per_group(group, -p * torch.log2(p + EPS), n_groups)
