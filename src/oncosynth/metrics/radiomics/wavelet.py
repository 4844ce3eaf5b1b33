"""One level of the stationary (undecimated) 2-D wavelet transform PyRadiomics uses, bit for bit.

PyRadiomics' ``getWaveletImage`` with FRD v1 settings runs
``pywt.swtn(level=1, wavelet='coif1')`` over the two in-plane axes of the
resampled image (x first, then y), after wrap-padding odd axes to even
length (the pad is cut off again). PyWavelets' level-1 SWT is a circular
convolution, ``out[o] = sum_j f[j] x[(o + L/2 - j) mod n]``. We add the
products in PyWavelets' order: taps ascending, except for the last L/2
outputs, where its periodisation loop first takes the wrapped taps
(descending) and then the others (see ``preprocess`` for why the order matters).

Band names follow PyRadiomics: the first letter is the x axis (image
columns), the second the y axis (rows); L = low-pass, H = high-pass. The
detail bands LH, HL, HH come first, then the approximation LL.
"""

from __future__ import annotations

import torch

# pywt.Wavelet("coif1").dec_lo / dec_hi (Daubechies' coiflet with 2 vanishing moments)
COIF1_LOW = (-0.015655728135791993, -0.07273261951252645, 0.3848648468648578, 0.8525720202116004,
             0.3378976624574818, -0.07273261951252645)
COIF1_HIGH = (0.07273261951252645, 0.3378976624574818, -0.8525720202116004, 0.3848648468648578,
              0.07273261951252645, -0.015655728135791993)
BANDS = ("LH", "HL", "HH", "LL")


def _tap_orders(n: int, taps: int) -> list[tuple[list[int], list[int]]]:
    """Groups of output positions that share one summation order, with that order."""
    half = taps // 2
    plain = [o for o in range(n) if o + half < n]
    groups = [(plain, list(range(taps)))] if plain else []
    for o in range(max(0, n - half), n):
        i = o + half
        groups.append(([o], list(range(i - n, -1, -1)) + list(range(i - n + 1, taps))))
    return groups


def swt_along(x: torch.Tensor, dim: int, high: bool) -> torch.Tensor:
    """Level-1 coif1 SWT of every line along ``dim`` (PyRadiomics' wrap pad for odd lengths)."""
    filt = COIF1_HIGH if high else COIF1_LOW
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    if n % 2:
        x = torch.cat([x, x[..., :1]], dim=-1)
    m = x.shape[-1]
    half = len(filt) // 2
    out = torch.zeros_like(x)
    for positions, order in _tap_orders(m, len(filt)):
        pos = torch.tensor(positions, device=x.device)
        total = torch.zeros_like(x[..., pos])
        for j in order:
            total += filt[j] * x[..., (pos + half - j) % m]
        out[..., pos] = total
    return out[..., :n].movedim(-1, dim)


def wavelet_bands(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four level-1 coif1 bands of a batch (B×H×W float64), in PyRadiomics' order."""
    along_x = {"L": swt_along(images, 2, False), "H": swt_along(images, 2, True)}
    return {name: swt_along(along_x[name[0]], 1, name[1] == "H") for name in BANDS}
