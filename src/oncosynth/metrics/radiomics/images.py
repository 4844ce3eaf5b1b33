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


def _extract_in_worker(batch: np.ndarray) -> np.ndarray:
    from oncosynth.metrics.radiomics.extractor import extract

    torch.set_num_threads(1)  # one core per worker process
    return extract(batch)


def extract_files(paths: Sequence[str | Path], workers: int = 1, batch_size: int = DEFAULT_BATCH,
                  device: str | torch.device | None = None, progress: bool = False) -> np.ndarray:
    """FRD v1 features (N×398) of image files, in batches of one image size.

    On CPU, ``workers`` > 1 splits the batches over that many processes of one
    thread each: on a loaded machine that scales far better than torch's
    intra-op threads, whose workers wait for each other. On a GPU (``device``)
    batches run in this process.
    """
    import multiprocessing as mp

    from oncosynth.metrics.radiomics.extractor import extract, feature_names

    arrays = [read_grey(p) for p in paths]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            raise DataError(paths[index], f"FRD needs 2-D images, got shape {array.shape}")
        by_shape.setdefault(array.shape, []).append(index)
    groups = [list(batch) for indices in by_shape.values() for batch in _batches(indices, batch_size)]
    stacks = (np.stack([arrays[i] for i in batch]) for batch in groups)
    on_cpu = device is None or torch.device(device).type == "cpu"
    out = np.empty((len(paths), len(feature_names())))
    pool = None
    if on_cpu and workers > 1 and len(groups) > 1:
        # fork, like the PyRadiomics path: spawn re-runs the caller's main module in every worker,
        # which loops forever in a script without a __main__ guard; torch's fork handler makes a
        # forked child run its ops single-threaded, so the parent's OpenMP pool is never touched
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(min(workers, len(groups)))
        results = pool.imap(_extract_in_worker, stacks)
    else:
        results = (extract(stack, device=device) for stack in stacks)
    try:
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(groups), desc="radiomics (batched)", unit="batch", leave=False)
        for batch, features in zip(groups, results):
            out[batch] = features
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return out
