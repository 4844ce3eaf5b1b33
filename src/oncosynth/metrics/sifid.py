"""SIFID: the single-image Fréchet inception distance (Shaham et al. 2019).

For one real image and one generated image, each image's spatial feature map
at a chosen layer of a feature network (N×C×h×w -> h·w vectors of length C)
is summarised by its mean and covariance, and SIFID is the Fréchet distance
between the two Gaussians. It compares the internal patch statistics of two
single images, so it suits SinGAN, which learns the patches of one image.

The layer is the feature network's ``.spatial`` output (see
``oncosynth.features``): for Inception-v3 the maps after the first max-pool
(64 channels, the layer the SIFID paper used), for VGG-19 relu4_4, for an
oncosynth encoder its first block. Numbers from different networks are not
comparable, so every result carries the network's name.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.errors import ConfigError, DataError
from oncosynth.metrics.fidelity import frechet_distance


def _as_batch(images: torch.Tensor, what: str) -> torch.Tensor:
    images = torch.as_tensor(images).float()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(f"<{what}>", f"expected images N×C×H×W (or one C×H×W), got shape {tuple(images.shape)}")
    return images


@torch.no_grad()
def spatial_stats(net: Any, images: torch.Tensor, batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mean, covariance) of the spatial feature vectors of each image."""
    images = _as_batch(images, "images")
    stats = []
    for start in range(0, len(images), batch_size):
        maps = net.spatial(images[start:start + batch_size]).double().cpu()
        if maps.ndim != 4:
            raise ConfigError(f"{net.name}: spatial features must be N×C×h×w, got {tuple(maps.shape)}")
        n, c, h, w = maps.shape
        if h * w < 2:
            raise ConfigError(f"{net.name}: a {h}×{w} feature map has too few positions for SIFID; "
                              f"use larger images or another feature network")
        vectors = maps.permute(0, 2, 3, 1).reshape(n, h * w, c).numpy()
        for v in vectors:
            stats.append((v.mean(axis=0), np.cov(v, rowvar=False).reshape(c, c)))
    return stats


def _distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    return max(0.0, frechet_distance(a[0], a[1], b[0], b[1]))


def sifid_matrix(reals: torch.Tensor, fakes: torch.Tensor, feature_net: Any = "random-cnn:0",
                 device: str = "cpu") -> tuple[np.ndarray, str]:
    """SIFID of every (real, fake) pair: an R×F array, and the feature network's name."""
    import oncosynth.classifiers  # noqa: F401  (importing these registers their encoder: loaders)
    import oncosynth.quality.anomaly  # noqa: F401
    from oncosynth.features import create_feature_net

    net = create_feature_net(feature_net, device=device)
    real_stats = spatial_stats(net, _as_batch(reals, "real"))
    fake_stats = spatial_stats(net, _as_batch(fakes, "synthetic"))
    out = np.array([[_distance(r, f) for f in fake_stats] for r in real_stats], dtype=np.float64)
    return out, net.name


def sifid(real: torch.Tensor, fake: torch.Tensor, feature_net: Any = "random-cnn:0", device: str = "cpu") -> float:
    """SIFID between one real and one generated image (C×H×W or 1×C×H×W, [0, 1])."""
    real, fake = _as_batch(real, "real"), _as_batch(fake, "synthetic")
    if len(real) != 1 or len(fake) != 1:
        raise ConfigError("sifid() compares one image with one image; use sifid_scores or sifid_matrix")
    return float(sifid_matrix(real, fake, feature_net, device)[0][0, 0])


def sifid_scores(real: torch.Tensor, fakes: torch.Tensor, feature_net: Any = "random-cnn:0",
                 device: str = "cpu") -> dict[str, Any]:
    """SIFID of each generated image against one real image, with mean and standard deviation."""
    real = _as_batch(real, "real")
    if len(real) != 1:
        raise ConfigError(f"sifid_scores takes one real image, got {len(real)}")
    matrix, name = sifid_matrix(real, fakes, feature_net, device)
    values = matrix[0]
    return {"feature_net": name, "scores": [float(v) for v in values], "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n": int(len(values))}


# ------------------------------------------------------------ evaluate --sifid ----
def _load_set(item: Any, size: int | None, channels: int | None, what: str) -> tuple[torch.Tensor, list[str]]:
    from oncosynth.data import load_dataset, load_images, read_image
    from oncosynth.data.decode import to_tensor

    if isinstance(item, torch.Tensor):
        batch = _as_batch(item, what)
        return batch, [f"<{what} {i}>" for i in range(len(batch))]
    path = Path(item)
    if path.is_file() and path.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}:
        return to_tensor(read_image(path), size=size, channels=channels)[None], [str(path)]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff",
                                                                         ".bmp"})
        if files and not any(p.is_dir() for p in path.iterdir()):
            # a flat folder of images (what `oncosynth generate` writes): every image, labels not needed
            return torch.stack([to_tensor(read_image(p), size=size, channels=channels) for p in files]), \
                [str(p) for p in files]
    dataset = load_dataset(path)
    return load_images(dataset, size=size, channels=channels), [r.uid for r in dataset.records]


def evaluate_sifid(real: Any, synthetic: Any, feature_net: str = "random-cnn:0", out: str | Path | None = None,
                   size: int | None = None, device: str | torch.device = "cpu", max_images: int = 2000) -> dict[str, Any]:
    """SIFID of every synthetic image against every real image (file, folder or data set).

    Writes ``sifid.json`` (per real image: mean SIFID of the synthetic images; per synthetic image:
    the nearest real image) and ``sifid.csv`` (the full matrix, one row per pair) into ``out``.
    """
    from oncosynth.io import check_output_folder, write_json, write_text
    from oncosynth.runtime.manifest import make_manifest

    if out is not None:
        check_output_folder(Path(out))  # before any image is read
    reals, real_names = _load_set(real, size, None, "real")
    channels = int(reals.shape[1])
    size = size or int(max(reals.shape[-2:]))
    from oncosynth.data.transforms import convert_images

    reals = convert_images(reals, size, channels)
    fakes, fake_names = _load_set(synthetic, size, channels, "synthetic")
    fakes = convert_images(fakes, size, channels)
    if len(reals) * len(fakes) > max_images * 50:
        raise ConfigError(f"SIFID of {len(reals)} real × {len(fakes)} synthetic images is too many pairs; "
                          f"pass fewer images")
    matrix, name = sifid_matrix(reals, fakes, feature_net, device)
    nearest = matrix.argmin(axis=0)
    result = {
        **make_manifest("metrics/sifid", {"feature_net": name, "size": size, "channels": channels}),
        "feature_net": name, "n_real": len(reals), "n_synthetic": len(fakes),
        "mean": float(matrix.mean()),
        "per_real": [{"real": r, "mean": float(matrix[i].mean()), "min": float(matrix[i].min())}
                     for i, r in enumerate(real_names)],
        "per_synthetic": [{"synthetic": f, "nearest_real": real_names[int(nearest[j])],
                           "sifid_nearest": float(matrix[nearest[j], j])} for j, f in enumerate(fake_names)],
    }
    if out is not None:
        out = Path(out)
        write_json(out / "sifid.json", result)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["real", "synthetic", "sifid"])
        for i, r in enumerate(real_names):
            for j, f in enumerate(fake_names):
                writer.writerow([r, f, f"{matrix[i, j]:.6g}"])
        write_text(out / "sifid.csv", buffer.getvalue())
    return result
