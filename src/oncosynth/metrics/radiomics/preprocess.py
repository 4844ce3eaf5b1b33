"""The image preprocessing PyRadiomics applies before any feature (FRD v1 settings), bit for bit.

For a 2-D image with a whole-image mask, PyRadiomics 3.0.1 (through SimpleITK) does:

1. ``sitk.Normalize``: ``(x - mean) * (1 / sigma)`` with the sample standard
   deviation (N - 1), in double precision, then ``* normalizeScale`` (100).
2. Resampling from 1-px to 2-px spacing with a cubic B-spline (``sitkBSpline``):
   ITK turns the image into B-spline coefficients with a recursive filter
   (mirror boundaries, causal start truncated at a tolerance of 1e-10), then
   samples them at continuous index ``0.5 + 2 i``.
3. Per filtered image: fixed-bin-width discretisation with bin edges from
   ``numpy.arange`` and ``numpy.digitize``.

Why bit for bit: flat image regions give wavelet detail values that are 0 in
exact arithmetic and ±1e-14 in floating point, and 0 is a bin edge. The side
of the edge such a pixel lands on is decided by rounding, and one pixel in
another bin changes texture features by more than 1e-4. So every step here
repeats PyRadiomics' floating-point operations in the same order (checked
against SimpleITK, PyWavelets and NumPy in the tests), using only elementwise
torch operations, which are correctly rounded on CPU and CUDA alike.
"""

from __future__ import annotations

import math
import torch

from oncosynth.errors import ConfigError

POLE = math.sqrt(3.0) - 2.0  # the one pole of the cubic B-spline prefilter
ITK_TOLERANCE = 1e-10  # itk::BSplineDecompositionImageFilter's default


def _prefilter_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """ITK's cubic B-spline decomposition of every line along ``dim`` (same operations, same order)."""
    x = x.movedim(dim, -1).clone()
    n = x.shape[-1]
    if n == 1:  # ITK leaves length-1 lines alone
        return x.movedim(-1, dim)
    gain = 1.0
    gain = gain * (1.0 - POLE) * (1.0 - 1.0 / POLE)  # lambda = 6 for cubic splines
    x *= gain
    horizon = int(math.ceil(math.log(ITK_TOLERANCE) / math.log(abs(POLE))))
    zn = POLE
    if horizon < n:  # ITK's truncated ("accelerated") causal start
        total = x[..., 0].clone()
        for k in range(1, horizon):
            total += zn * x[..., k]
            zn *= POLE
        x[..., 0] = total
    else:  # exact mirror-boundary start for short lines
        iz = 1.0 / POLE
        z2n = POLE ** (n - 1)
        total = x[..., 0] + z2n * x[..., n - 1]
        z2n *= z2n * iz
        for k in range(1, n - 1):
            total += (zn + z2n) * x[..., k]
            zn *= POLE
            z2n *= iz
        x[..., 0] = total / (1.0 - zn * zn)
    for k in range(1, n):
        x[..., k] += POLE * x[..., k - 1]
    x[..., n - 1] = (POLE / (POLE * POLE - 1.0)) * (POLE * x[..., n - 2] + x[..., n - 1])
    for k in range(n - 2, -1, -1):
        x[..., k] = POLE * (x[..., k + 1] - x[..., k])
    return x.movedim(-1, dim)


def _cubic_weights(w: float) -> tuple[float, float, float, float]:
    """itk::BSplineInterpolateImageFunction's order-3 weights for fractional offset w."""
    w3 = (1.0 / 6.0) * w * w * w
    w0 = (1.0 / 6.0) + 0.5 * w * (w - 1.0) - w3
    w2 = w + w0 - 2.0 * w3
    w1 = 1.0 - w0 - w2 - w3
    return w0, w1, w2, w3


def _mirror(index: int, n: int) -> int:
    """ITK's mirror boundary for interpolation indices (whole-sample symmetric)."""
    period = 2 * n - 2
    index = -index - period * ((-index) // period) if index < 0 else index - period * (index // period)
    return period - index if index >= n else index


def _support(n: int, spacing: float) -> tuple[list[list[int]], tuple[float, ...]]:
    """Per tap k (0..3): the input index of every output sample, and the (shared) tap weights.

    Output pixel i samples continuous index ``0.5 * (spacing - 1) + spacing * i``
    (PyRadiomics' new origin); n_out = ceil(n / spacing) as its bounding box
    (pad distance 10, clipped to the image) gives for a whole-image mask.
    """
    n_out = int(math.ceil(n / spacing))
    first = 0.5 * (spacing - 1.0)
    offsets = {first + spacing * i - math.floor(first + spacing * i) for i in range(n_out)}
    if len(offsets) != 1 or first + spacing * (n_out - 1) >= n - 0.5:
        # odd sizes put the last sample outside the image (ITK writes 0 there and the mask drops it)
        raise ConfigError(f"batched radiomics supports even image sizes only, got {n} px")
    taps = [[_mirror(math.floor(first + spacing * i) - 1 + k, n) for i in range(n_out)] for k in range(4)]
    return taps, _cubic_weights(offsets.pop())


def resample(images: torch.Tensor, spacing: float = 2.0) -> torch.Tensor:
    """B-spline resampling of a normalised batch (B×H×W float64), bit for bit as SimpleITK.

    The image PyRadiomics resamples is 3-D with one slice, so ITK sums 4×4×4
    taps per output pixel (x fastest, then y, then z), the z taps all reading
    the single slice with weights (1/6, 2/3, 1/6, 0). We add the same products
    in the same order, so the result has the same rounding.
    """
    _, h, w = images.shape
    coeff = _prefilter_along(_prefilter_along(images.to(torch.float64), 2), 1)  # ITK: x first, then y
    rows, wy = _support(h, spacing)
    cols, wx = _support(w, spacing)
    wz = _cubic_weights(0.0)
    device = images.device
    rows = [torch.tensor(r, device=device) for r in rows]
    cols = [torch.tensor(c, device=device) for c in cols]
    planes = {}  # the 16 coefficient planes the taps read, gathered once
    for ky in range(4):
        picked = coeff[:, rows[ky]]
        for kx in range(4):
            planes[ky, kx] = picked[:, :, cols[kx]]
    out = torch.zeros_like(planes[0, 0])
    for kz in range(4):
        for ky in range(4):
            for kx in range(4):
                weight = 1.0
                weight *= wx[kx]
                weight *= wy[ky]
                weight *= wz[kz]
                out += weight * planes[ky, kx]
    return out


def normalize(images: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """``sitk.Normalize(image) * scale`` for a batch (B×H×W of grey values), float64."""
    x = images.to(torch.float64)
    count = x.shape[1] * x.shape[2]
    total = x.sum(dim=(1, 2), keepdim=True)
    squares = (x * x).sum(dim=(1, 2), keepdim=True)
    mean = total / count
    variance = (squares - total * total / count) / (count - 1)
    inverse_sigma = 1.0 / variance.sqrt()  # a flat image gives inf, as in ITK (then NaN features)
    return (x - mean) * inverse_sigma * scale


def _remainder(a: torch.Tensor, b: float) -> torch.Tensor:
    """NumPy's float ``a % b`` (fmod, moved into b's sign)."""
    mod = torch.fmod(a, b)
    return torch.where((mod != 0) & ((mod < 0) != (b < 0)), mod + b, mod)


def discretize(images: torch.Tensor, bin_width: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """PyRadiomics' fixed-bin-width discretisation of each image (B×H×W float64).

    ``getBinEdges`` takes ``numpy.arange(low, max + 2 * width, width)`` with
    ``low = min - min % width``; NumPy fills that as ``low``, ``low + width``,
    then ``low + k * delta`` with ``delta = (low + width) - low``; ``digitize``
    gives each value the number of edges <= it. We estimate that count by
    division and correct it against the exactly rebuilt edges.

    Returns the bin per pixel (B×H×W int64, from 1) and the highest bin per image (Ng, B).
    """
    flat = images.flatten(1)
    low = flat.amin(dim=1)
    low = (low - _remainder(low, bin_width)).view(-1, 1)
    delta = (low + bin_width) - low

    def edge(k: torch.Tensor) -> torch.Tensor:
        kf = k.to(torch.float64)
        return torch.where(k == 0, low, torch.where(k == 1, low + bin_width, low + kf * delta))

    k = torch.floor((flat - low) / delta).to(torch.int64).clamp_min(0)
    k = torch.where(edge(k) > flat, k - 1, k)
    k = torch.where(edge(k + 1) <= flat, k + 1, k)
    bins = (k + 1).view_as(images)
    return bins, bins.flatten(1).amax(dim=1)
