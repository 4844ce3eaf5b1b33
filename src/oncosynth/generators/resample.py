"""FIR up- and down-sampling in plain PyTorch (CPU and CUDA), as StyleGAN2-ADA resamples.

:func:`upfirdn2d` does, per channel: (1) up-sample by inserting ``up - 1``
zeros after every pixel, (2) pad with zeros (negative padding crops),
(3) filter with a 2-D FIR filter, keeping only outputs whose footprint lies
inside the padded image ("valid"), (4) keep every ``down``-th pixel. These
are the semantics of the upfirdn2d operation in NVlabs' stylegan2-ada-pytorch,
including its conventions:

* the filter is applied as a true convolution unless ``flip_filter=True``
  (then as a correlation, like ``F.conv2d``);
* ``gain`` multiplies the result (a separable 1-D filter gets ``sqrt(gain)``
  on each axis), so 2× up-sampling uses ``gain=4`` to keep a constant image
  constant away from the borders;
* borders are zero-padded: up-sampling a constant image with ``[1, 3, 3, 1]``
  gives 0.75 on the edges and 0.5625 in the corners.

:func:`conv2d_resample` is a convolution fused with such resampling, padding
only once at the start: for ``up > 1`` a strided transposed convolution
followed by the filter, for ``down > 1`` the filter followed by a strided
convolution. It computes the same function as the released code's
``conv2d_resample`` (see ``tests/test_resample.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Padding = int | Sequence[int]


def setup_filter(taps: Sequence[float] | torch.Tensor, normalize: bool = True, flip: bool = False,
                 gain: float = 1.0, separable: bool | None = None) -> torch.Tensor:
    """A float32 FIR filter ready for :func:`upfirdn2d`.

    1-D ``taps`` become the outer product with themselves (a 2-D filter) unless
    ``separable`` (default: only for 8 taps or more, as in the released code).
    ``normalize`` makes the taps sum to 1 (a constant image stays constant).
    """
    f = torch.as_tensor(taps, dtype=torch.float32).clone()
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"FIR taps must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip:
        f = f.flip(list(range(f.ndim)))
    return f * gain ** (f.ndim / 2)


def _pads(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from one int, (x, y) or (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1), not {padding}")


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    return x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]


def _filter_valid(x: torch.Tensor, f: torch.Tensor, flip_filter: bool, gain: float) -> torch.Tensor:
    """Depthwise 'valid' filtering; a true convolution with ``f`` unless ``flip_filter``."""
    c = x.shape[1]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype)
    if not flip_filter:  # F.conv2d correlates; flipping the taps turns it into a convolution
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)   # along x
    return F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)  # along y


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding: Padding = 0,
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Up-sample (zero insertion), pad, FIR-filter and down-sample N×C×H×W ``x``."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects N×C×H×W, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = _pad_or_crop(x, *_pads(padding))
    x = _filter_valid(x, f.to(x.device), flip_filter, gain)
    return x[:, :, ::down, ::down] if down > 1 else x


def _taps(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding: Padding = 0, flip_filter: bool = False,
               gain: float = 1.0) -> torch.Tensor:
    """``up``× larger image; the extra padding keeps the output exactly ``up`` times the input."""
    fw, fh = _taps(f)
    x0, x1, y0, y1 = _pads(padding)
    pads = [x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pads, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """``down``× smaller image (low-pass filtered first)."""
    fw, fh = _taps(f)
    x0, x1, y0, y1 = _pads(padding)
    pads = [x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2, y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pads, flip_filter=flip_filter, gain=gain)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """Convolution with ``w`` fused with FIR up- (``up``) or down-sampling (``down``), not both.

    ``padding`` is with respect to the up-sampled image and applied once, before
    anything else; ``flip_weight=False`` makes ``w`` act as a true convolution
    (the released code uses that for its up-sampling layers).
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and down-sampling together is not supported")
    c_out, c_in_per_group, kh, kw = w.shape
    fw, fh = _taps(f)
    x0, x1, y0, y1 = _pads(padding)
    if up > 1:
        # Zero insertion + padding + (w then f, both 'valid') equals a strided transposed
        # convolution (w applied as a true convolution, no trailing zeros) followed by f on
        # the result padded or cropped by what the transposed convolution already covered.
        x0, x1 = x0 + (fw + up - 1) // 2 - (kw - 1), x1 + (fw - up) // 2 - (kw - up)
        y0, y1 = y0 + (fh + up - 1) // 2 - (kh - 1), y1 + (fh - up) // 2 - (kh - up)
        wt = w if not flip_weight else w.flip([2, 3])
        # conv_transpose2d wants in × out/groups × k × k per group.
        wt = wt.reshape(groups, c_out // groups, c_in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * c_in_per_group, c_out // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        return upfirdn2d(x, f, padding=[x0, x1, y0, y1], gain=up * up)
    if not flip_weight:
        w = w.flip([2, 3])
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
        x = upfirdn2d(x, f, padding=[x0, x1, y0, y1])
        return F.conv2d(x, w, stride=down, groups=groups)
    if x0 == x1 == y0 == y1 and x0 >= 0:
        return F.conv2d(x, w, padding=x0, groups=groups)
    return F.conv2d(_pad_or_crop(x, x0, x1, y0, y1), w, groups=groups)
