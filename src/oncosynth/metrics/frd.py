"""Fréchet Radiomics Distance (FRD) through the ``frd-score`` package.

FRD compares two image sets through ~400 PyRadiomics features per image
(first-order, GLCM, GLRLM, GLSZM, NGTDM on the original image and its
wavelet bands; the LoG filters of the config are skipped by PyRadiomics for
images that are only 64 px after its 2-px resampling). We use the package's
default version (v1, Konz, Osuala et al. 2026): features z-scored with the
statistics of the *first* (reference, real) set, columns with NaN/Inf
dropped, Fréchet distance d², reported as ``log(d²)`` (the package's default
log form). FRD is therefore not symmetric: pass the real set first.

Identical feature distributions give d² = 0 and log(d²) = minus infinity;
we keep ``value = -inf`` in Python, store ``frd: null`` with
``frd_identical: true`` and ``frd_d2`` (= 0) in JSON, where infinities are
not valid.

Two paths give the same number:

- ``method="package"``: ``frd_score.compute_frd`` on two folders, exactly as
  a user of the package would call it (one worker per spare core).
- ``method="fast"``: per-image features from one of two backends, cached per
  image content (so the real reference set is extracted once per evaluation,
  per-class FRDs reuse the overall extraction, and the same test split is not
  extracted again for a second comparison); the statistics follow the
  package's v1 pipeline step by step (``frd_from_features``).

  - ``backend="batched"`` (default): ``oncosynth.metrics.radiomics``, the same
    398 features computed for whole batches in torch (CPU processes or CUDA),
    equal to PyRadiomics' to ~1e-11 (bench/frd_parity.py);
  - ``backend="pyradiomics"``: the package's own per-image extraction
    (``process_image_mask_pair`` with its v1 extractor) in a pool of
    ``workers`` processes that each build the extractor once: the reference.

  The test suite checks the paths agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import multiprocessing as mp
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from oncosynth.errors import ConfigError, DataError
from oncosynth.metrics.fidelity import frechet_distance

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MIN_IMAGES_FRD = 2
BACKENDS = ("batched", "pyradiomics")
DEFAULT_BACKEND = "batched"


@dataclass
class FRDResult:
    value: float  # log(d²); -inf for identical feature distributions
    d2: float  # the Fréchet distance d² itself (>= 0)
    n_features: int
    n_a: int
    n_b: int
    method: str
    version: str = "v1"
    backend: str = "pyradiomics"  # who extracted the features

    @property
    def identical(self) -> bool:
        return not math.isfinite(self.value) and self.value < 0

    def to_json(self) -> dict:
        return {"frd": None if self.identical else float(self.value), "frd_identical": self.identical,
                "frd_d2": float(self.d2), "frd_features": self.n_features, "frd_version": self.version,
                "frd_log_form": "log(d^2)", "frd_method": self.method,
                "frd_backend": self.backend}


def _frd():
    try:
        import frd_score.frd as frd_module
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"FRD needs the 'frd-score' package with pyradiomics 3.0.1 ({exc}); "
                          "see the Makefile target for installing it") from None
    frd_module._ensure_radiomics()
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    frd_module.setVerbosity(60)
    return frd_module


def image_files(folder: str | Path) -> list[Path]:
    """The images the package would read from a folder (flat, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(folder, "no images (png/jpg/bmp/tif) found for FRD")
    return files


def write_png_folder(images: torch.Tensor, folder: str | Path) -> list[Path]:
    """Write N×C×H×W [0, 1] images as 8-bit grayscale PNGs (FRD reads 2-D images)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = images.float()
    if x.shape[1] == 3:
        x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    arrays = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    paths = []
    for i, array in enumerate(arrays):
        path = folder / f"{i:06d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ package path
def frd_package(folder_a: str | Path, folder_b: str | Path, workers: int | None = 1) -> FRDResult:
    """``frd_score.compute_frd`` on two folders (reference first), defaults untouched."""
    frd_module = _frd()
    n_a, n_b = len(image_files(folder_a)), len(image_files(folder_b))
    for n, folder in ((n_a, folder_a), (n_b, folder_b)):
        if n < MIN_IMAGES_FRD:
            raise DataError(folder, f"FRD needs at least {MIN_IMAGES_FRD} images for a covariance, got {n}")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the score
        value = float(frd_module.compute_frd([str(folder_a), str(folder_b)], num_workers=workers))
    d2 = math.exp(value) if math.isfinite(value) else 0.0
    return FRDResult(value, d2, -1, n_a, n_b, "package")


# --------------------------------------------------------------------- fast path
_EXTRACTOR = None
_CACHE: dict[tuple[str, str], np.ndarray] = {}  # (backend, sha1 of image file bytes) -> feature vector


def _init_worker() -> None:
    global _EXTRACTOR
    frd_module = _frd()
    _EXTRACTOR = frd_module.get_feature_extractor(frd_module.FRD_VERSION_V1, image_dim=2)


def _extract_one(path: str) -> list[float] | None:
    frd_module = _frd()
    result = frd_module.process_image_mask_pair((path, None), feature_extractor=_EXTRACTOR,
                                                frd_version=frd_module.FRD_VERSION_V1)
    return None if result is None else result[0]


def _content_key(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"FRD backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    return backend


def radiomics_features(files: Sequence[str | Path], workers: int = 1, progress: bool = False,
                       backend: str = DEFAULT_BACKEND, device: str | None = None) -> np.ndarray:
    """FRD v1 features (N×F) for image files, cached per (backend, file content) in this process.

    ``workers``: processes for either backend (the batched one runs on
    ``device`` instead when given, e.g. "cuda").
    """
    check_backend(backend)
    files = [Path(f) for f in files]
    keys = [(backend, _content_key(f)) for f in files]
    todo = sorted({k: str(f) for k, f in zip(keys, files) if k not in _CACHE}.items())
    if todo and backend == "batched":
        from oncosynth.metrics.radiomics.images import extract_files

        extracted = extract_files([p for _, p in todo], workers=workers, device=device, progress=progress)
        for (key, _), row in zip(todo, extracted):
            _CACHE[key] = row
    elif todo:
        paths = [p for _, p in todo]
        if workers > 1:
            context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with context.Pool(workers, initializer=_init_worker) as pool:
                iterator = pool.imap(_extract_one, paths, chunksize=max(1, min(16, len(paths) // (4 * workers))))
                results = list(_progress(iterator, len(paths), progress))
        else:
            if _EXTRACTOR is None:
                _init_worker()
            results = [_extract_one(p) for p in _progress(paths, len(paths), progress)]
        for (key, path), result in zip(todo, results):
            if result is None:
                raise DataError(path, "PyRadiomics could not extract features")
            _CACHE[key] = np.asarray(result, dtype=np.float64)
    return np.stack([_CACHE[k] for k in keys])


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="radiomics", unit="img", leave=False)


def frd_from_features(features_a: np.ndarray, features_b: np.ndarray, method: str = "fast",
                      backend: str = DEFAULT_BACKEND) -> FRDResult:
    """The package's v1 statistics on extracted features (reference set first).

    Steps as in ``frd_score.calculate_feature_statistics`` for v1: drop images
    with a NaN feature, cast to float32, z-score both sets with the first
    set's mean and standard deviation (no guard for std = 0), drop feature
    columns with NaN/Inf in either set, Fréchet distance, log.
    """
    sets = []
    for feats, name in ((features_a, "reference"), (features_b, "compared")):
        feats = feats[~np.isnan(feats).any(axis=1)].astype(np.float32)
        if feats.shape[0] < MIN_IMAGES_FRD:
            raise DataError(name, f"FRD needs at least {MIN_IMAGES_FRD} images for a covariance, "
                                  f"got {feats.shape[0]} with valid features")
        sets.append(feats)
    mean = np.nanmean(sets[0], axis=0)
    std = np.nanstd(sets[0], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        normed = [(s - mean) / std for s in sets]
    keep = np.ones(normed[0].shape[1], dtype=bool)
    for n in normed:
        keep &= np.isfinite(n).all(axis=0)
    normed = [n[:, keep] for n in normed]
    mu = [np.mean(n, axis=0) for n in normed]
    sigma = [np.cov(n, rowvar=False) for n in normed]
    d2 = frechet_distance(mu[0], sigma[0], mu[1], sigma[1])
    value = float(np.log(d2)) if d2 > 0 else float("-inf")
    return FRDResult(value, max(d2, 0.0), int(keep.sum()), sets[0].shape[0], sets[1].shape[0], method,
                     backend=backend)


def frd_fast(files_a: Sequence[str | Path], files_b: Sequence[str | Path], workers: int | None = None,
             progress: bool = False, backend: str = DEFAULT_BACKEND, device: str | None = None) -> FRDResult:
    workers = workers or max(1, (os.cpu_count() or 1))
    feats_a = radiomics_features(files_a, workers, progress, backend, device)
    feats_b = radiomics_features(files_b, workers, progress, backend, device)
    return frd_from_features(feats_a, feats_b, backend=backend)


# ------------------------------------------------------------------ public entry
def frd(a: str | Path | torch.Tensor, b: str | Path | torch.Tensor, method: str = "fast",
        workers: int | None = None, progress: bool = False, backend: str = DEFAULT_BACKEND,
        device: str | None = None) -> FRDResult:
    """FRD between two folders or two image tensors (N×C×H×W in [0, 1]); reference first.

    ``backend`` chooses the feature extractor of the fast path (the package path is PyRadiomics).
    """
    if method not in ("fast", "package"):
        raise ConfigError(f"FRD method must be 'fast' or 'package', got '{method}'")
    check_backend(backend)
    with tempfile.TemporaryDirectory(prefix="oncosynth-frd-") as tmp:
        folders = []
        for i, item in enumerate((a, b)):
            if isinstance(item, torch.Tensor):
                if item.shape[0] == 0:
                    raise DataError(f"<tensor {i}>", "no images")
                folder = Path(tmp) / f"set{i}"
                write_png_folder(item, folder)
                folders.append(folder)
            else:
                folders.append(Path(item))
        if method == "package":
            return frd_package(folders[0], folders[1], workers=workers or 1)
        return frd_fast(image_files(folders[0]), image_files(folders[1]), workers=workers, progress=progress,
                        backend=backend, device=device)
