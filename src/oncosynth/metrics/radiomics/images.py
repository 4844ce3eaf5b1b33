"""Image files to batched FRD features: read as frd-score reads them, extract same-size groups in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from oncosynth.errors import DataError

DEFAULT_BATCH = 64


def read_grey(path: str | Path) -> np.ndarray:
    """Grey values as ``sitk.ReadImage(path, sitkFloat32)`` gives them (frd-score's reader).

    8/16-bit grey images keep their values; RGB becomes ITK's luminance
    ``(2125 R + 7154 G + 721 B) / 10000`` in float32. Other modes (palette,
    alpha) are refused, as PyRadiomics' reader refuses or alters them.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the image ({exc})") from None
    if mode in ("L", "I;16", "I", "F"):
        return array.astype(np.float32)
    if mode == "RGB":
        rgb = array.astype(np.float64)
        return ((2125.0 * rgb[..., 0] + 7154.0 * rgb[..., 1] + 721.0 * rgb[..., 2]) / 10000.0).astype(np.float32)
    raise DataError(path, f"image mode {mode} is not supported for FRD (grey or RGB only)")


def _batches(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def extract_files(paths: Sequence[str | Path], threads: int = 1, batch_size: int = DEFAULT_BATCH,
                  device: str | torch.device | None = None, progress: bool = False) -> np.ndarray:
    """FRD v1 features (N×398) of image files, batched by image size, on ``threads`` CPU threads or a GPU."""
    from oncosynth.metrics.radiomics.extractor import extract, feature_names

    arrays = [read_grey(p) for p in paths]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            raise DataError(paths[index], f"FRD needs 2-D images, got shape {array.shape}")
        by_shape.setdefault(array.shape, []).append(index)
    out = np.empty((len(paths), len(feature_names())))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        groups = [batch for indices in by_shape.values() for batch in _batches(indices, batch_size)]
        if progress:
            from tqdm.auto import tqdm

            groups = tqdm(groups, desc="radiomics (batched)", unit="batch", leave=False)
        for batch in groups:
            out[list(batch)] = extract(np.stack([arrays[i] for i in batch]), device=device)
    finally:
        torch.set_num_threads(previous)
    return out
