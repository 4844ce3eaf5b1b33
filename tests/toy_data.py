"""Tiny labelled image sets shared by the classifier tests."""

from __future__ import annotations

import torch


def squares(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images; class 1 carries a bright centre square (half the side): learnable in a couple of epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, size, size, generator=g) * 0.5
    q = size // 4
    images[labels == 1, :, q : 3 * q, q : 3 * q] += 0.4
    return (images * 255).to(torch.uint8), labels
