"""Per-image input normalisation and flip test-time augmentation for classifiers.

Both live on the :class:`~oncosynth.classifiers.model.Classifier` itself (and in
its checkpoint config), so training, evaluation and every later user of a
saved classifier (feature encoder, quality gate) see the same inputs:

- ``none``: the backbone's fixed mean/std (what classifiers always did);
- ``standardise``: each image to zero mean and unit std (over C×H×W) -- a
  scanner that renders masses darker or flatter gives the same input;
- ``percentile``: each image's ``[p_low, p_high]`` percentiles to [0, 1]
  (clipped), then the backbone's mean/std -- robust to a few saturated pixels;
- ``equalise``: each image's histogram equalised (every pixel becomes the share
  of the image's pixels at or below it, over C×H×W), then the backbone's
  mean/std -- the same input under any increasing grey-level mapping (gamma,
  a scanner's tone curve), where ``percentile`` undoes only a linear one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

InputNorm = Literal["none", "standardise", "percentile", "equalise"]
NORMS = ("none", "standardise", "percentile", "equalise")
EPS = 1e-6
STD_FLOOR = 1e-3  # under a quarter of an 8-bit grey level: a flat image, not contrast to amplify


def standardise(x: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> each image with mean 0 and (population) std 1; a flat image becomes ~0."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
    return (x - mean) / std.clamp(min=STD_FLOOR)


def percentile_scale(x: torch.Tensor, low: float = 1.0, high: float = 99.0) -> torch.Tensor:
    """N×C×H×W -> each image's ``low``..``high`` percentiles mapped to 0..1, clipped."""
    flat = x.reshape(len(x), -1).float()
    q = torch.tensor([low / 100, high / 100], dtype=flat.dtype, device=flat.device)
    bounds = torch.quantile(flat, q, dim=1).T.to(x.dtype)  # N×2
    lo, hi = bounds[:, :1, None, None], bounds[:, 1:, None, None]
    return ((x - lo) / (hi - lo).clamp(min=EPS)).clamp(0, 1)


def equalise(x: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> each pixel the share of its image's pixels <= it (a value in (0, 1]; ties share one)."""
    flat = x.reshape(len(x), -1).contiguous()
    ordered = flat.sort(dim=1).values
    at_or_below = torch.searchsorted(ordered, flat, right=True)
    return (at_or_below.to(x.dtype) / flat.shape[1]).reshape(x.shape)


def normalise_input(x: torch.Tensor, mode: str, mean: torch.Tensor, std: torch.Tensor,
                    percentiles: tuple[float, float] = (1.0, 99.0)) -> torch.Tensor:
    """Images in [0, 1] -> what the backbone sees, for one of ``NORMS``."""
    if mode == "standardise":
        return standardise(x)
    if mode == "percentile":
        x = percentile_scale(x, *percentiles)
    elif mode == "equalise":
        x = equalise(x)
    elif mode != "none":
        raise ValueError(f"unknown input normalisation '{mode}' (one of {', '.join(NORMS)})")
    return (x - mean) / std


FLIPS = ((), (3,), (2,), (2, 3))  # the image, left-right, up-down, both


def predict_batch_proba(model: nn.Module, batch: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
    """Softmax probabilities for one batch; with flip TTA, the mean over the image and its flips.

    ``tta`` None: what the model was trained for (its ``tta`` attribute, from its config).
    """
    if tta is None:
        tta = bool(getattr(model, "tta", False))
    if not tta:
        return torch.softmax(model(batch).float(), dim=1)
    views = [batch.flip(dims) if dims else batch for dims in FLIPS]
    return torch.stack([torch.softmax(model(v).float(), dim=1) for v in views]).mean(0)
