"""FRD v1 radiomics features for batches of 2-D grey images, in PyRadiomics' order.

``frd-score`` 1.0.1 (v1) runs PyRadiomics 3.0.1 with its ``extraction_2d.yaml``
on each image with a whole-image mask (all ones except pixel (0, 0), a
workaround for a PyRadiomics bug) and keeps every numeric output:

- 13 numeric diagnostics (image and mask statistics before and after
  resampling);
- for the original image and the 4 wavelet bands (LH, HL, HH, LL), in that
  order: first order (18), GLCM (the 22 the config lists, in its order),
  GLRLM (16), GLSZM (16), NGTDM (5): 5 × 77 features.

The config also enables LoG (sigma 2-5 mm), but PyRadiomics skips every LoG
image: after force2D the image is 3-D with one slice, and its size check
(``size >= ceil(sigma / spacing) + 1`` in every axis, z included) fails for
all sigmas. So LoG contributes no feature; we do not compute it.

Settings (from the config): normalise with scale 100, resample to 2 px with
a cubic B-spline, bin width 5, voxelArrayShift 300. The corner pixel left out
of the mask is never sampled by the resampling (the first output pixel maps
to input (0.5, 0.5), rounded to (1, 1) for the mask), so every resampled pixel
is in the ROI and each feature class sees the whole resampled image.
"""

from __future__ import annotations

import numpy as np
import torch

from oncosynth.errors import ConfigError
# module imports by full name: importing from the package would import its __init__, which imports this module
import oncosynth.metrics.radiomics.firstorder as firstorder
import oncosynth.metrics.radiomics.glcm as glcm
import oncosynth.metrics.radiomics.glrlm as glrlm
import oncosynth.metrics.radiomics.glszm as glszm
import oncosynth.metrics.radiomics.ngtdm as ngtdm
import oncosynth.metrics.radiomics.preprocess as preprocess
import oncosynth.metrics.radiomics.wavelet as wavelet

BIN_WIDTH = 5.0
NORMALIZE_SCALE = 100.0
SPACING = 2.0
VOXEL_ARRAY_SHIFT = 300.0
IMAGE_TYPES = ("original",) + tuple(f"wavelet-{band}" for band in wavelet.BANDS)
CLASSES = (("firstorder", firstorder.NAMES), ("glcm", glcm.NAMES), ("glrlm", glrlm.NAMES),
           ("glszm", glszm.NAMES), ("ngtdm", ngtdm.NAMES))
DIAGNOSTICS = ("Image-original_Mean", "Image-original_Minimum", "Image-original_Maximum", "Mask-original_VoxelNum",
               "Mask-original_VolumeNum", "Image-interpolated_Mean", "Image-interpolated_Minimum",
               "Image-interpolated_Maximum", "Mask-interpolated_VoxelNum", "Mask-interpolated_VolumeNum",
               "Mask-interpolated_Mean", "Mask-interpolated_Minimum", "Mask-interpolated_Maximum")


def feature_names() -> list[str]:
    """The 398 names, as frd-score lists them (``original_`` stripped, diagnostics prefixed)."""
    names = [f"diagnostics_{d}" for d in DIAGNOSTICS]
    for image_type in IMAGE_TYPES:
        prefix = "" if image_type == "original" else f"{image_type}_"
        names += [f"{prefix}{cls}_{name}" for cls, class_names in CLASSES for name in class_names]
    return names


def _diagnostics(raw: torch.Tensor, resampled: torch.Tensor) -> torch.Tensor:
    """The 13 numeric diagnostics PyRadiomics reports and frd-score keeps (B×13)."""
    b, h, w = raw.shape
    flat_raw, flat = raw.flatten(1), resampled.flatten(1)
    n_resampled = flat.shape[1]
    ones = torch.ones(b, dtype=torch.float64, device=raw.device)
    interpolated = [firstorder.pairwise_sum(flat) / n_resampled, flat.amin(dim=1), flat.amax(dim=1)]
    columns = [firstorder.pairwise_sum(flat_raw) / (h * w), flat_raw.amin(dim=1), flat_raw.amax(dim=1),
               ones * (h * w - 1), ones,  # original mask: all but the corner pixel, one 8-connected region
               *interpolated, ones * n_resampled, ones, *interpolated]
    return torch.stack(columns, dim=1)


def _image_type_features(values: torch.Tensor, pixel_volume: float) -> torch.Tensor:
    """The 77 class features of one image type for a batch (B×77)."""
    bins, ng = preprocess.discretize(values, BIN_WIDTH)
    n_levels = int(ng.max())
    results = {
        "firstorder": firstorder.first_order(values, bins, n_levels, VOXEL_ARRAY_SHIFT, pixel_volume),
        "glcm": glcm.glcm(bins, ng, n_levels),
        "glrlm": glrlm.glrlm(bins, n_levels),
        "glszm": glszm.glszm(bins, n_levels),
        "ngtdm": ngtdm.ngtdm(bins, n_levels),
    }
    return torch.stack([results[cls][name] for cls, names in CLASSES for name in names], dim=1)


def extract(images: torch.Tensor | np.ndarray, device: str | torch.device | None = None) -> np.ndarray:
    """FRD v1 features (B×398 float64, ``feature_names()`` order) of B same-size grey images.

    ``images``: B×H×W grey values as PyRadiomics reads them from 8-bit PNGs
    (0..255, any numeric dtype). H and W must be even (odd sizes put the last
    resampled row outside the image, which PyRadiomics then masks out; not
    implemented here).
    """
    x = torch.as_tensor(images)
    if x.dim() != 3:
        raise ConfigError(f"batched radiomics expects B×H×W grey images, got shape {tuple(x.shape)}")
    b, h, w = x.shape
    if h % 2 or w % 2 or min(h, w) < 4:
        raise ConfigError(f"batched radiomics needs even image sizes of at least 4 px, got {h}×{w}")
    x = x.to(device=device or x.device, dtype=torch.float64)
    resampled = preprocess.resample(preprocess.normalize(x, NORMALIZE_SCALE), SPACING)
    pixel_volume = SPACING * SPACING * 1.0  # resampled spacing (2, 2) and the added z spacing 1
    blocks = [_diagnostics(x, resampled), _image_type_features(resampled, pixel_volume)]
    for band in wavelet.wavelet_bands(resampled).values():
        blocks.append(_image_type_features(band, pixel_volume))
    return torch.cat(blocks, dim=1).cpu().numpy()
