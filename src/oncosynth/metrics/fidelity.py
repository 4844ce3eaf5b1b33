"""Feature-space fidelity and coverage: FID, KID, precision/recall/density/coverage.

All functions take feature matrices (N×D numpy arrays or tensors) that one
feature network produced for the real and the synthetic set; the network's
name is recorded by the caller, since numbers from different networks are not
comparable.

- FID: Fréchet distance between Gaussians fitted to both sets (Heusel et al. 2017).
- KID: unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³,
  averaged over random subsets (Bińkowski et al. 2018).
- Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem
  et al. 2020), from k-nearest-neighbour balls around each sample.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from oncosynth.errors import DataError

MIN_IMAGES_COVARIANCE = 2


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features N×D, got shape {x.shape}")
    return x


def require_images(n: int, needed: int, what: str, name: str = "set") -> None:
    if n < needed:
        raise DataError(name, f"{what} needs at least {needed} images, got {n}")


def gaussian_stats(features: np.ndarray | torch.Tensor, name: str = "set") -> tuple[np.ndarray, np.ndarray]:
    x = _as_numpy(features)
    require_images(x.shape[0], MIN_IMAGES_COVARIANCE, "a covariance estimate (FID/FRD)", name)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """d² = |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½); regularises a singular product."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the feature distributions (clamped at 0 against round-off)."""
    mu1, s1 = gaussian_stats(real, "real")
    mu2, s2 = gaussian_stats(fake, "synthetic")
    return max(0.0, frechet_distance(mu1, s1, mu2, s2))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two samples with the cubic polynomial kernel."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of MMD² over ``subsets`` random subsets (without replacement)."""
    x, y = _as_numpy(real), _as_numpy(fake)
    require_images(x.shape[0], 2, "KID", "real")
    require_images(y.shape[0], 2, "KID", "synthetic")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size == x.shape[0] == y.shape[0]:
        subsets = 1  # every subset would be the full sets
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(x[rng.choice(x.shape[0], size, replace=False)],
                            y[rng.choice(y.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return torch.cdist(ta, tb).numpy()


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every sample to its k-th nearest neighbour in the same set (itself excluded)."""
    d = _pairwise(x, x)
    return np.partition(d, k, axis=1)[:, k]  # index 0 is the self-distance 0


def prdc(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage with k-NN balls (k = 5 as in both papers)."""
    x, y = _as_numpy(real), _as_numpy(fake)
    require_images(x.shape[0], k + 1, f"precision/recall with k={k}", "real")
    require_images(y.shape[0], k + 1, f"precision/recall with k={k}", "synthetic")
    real_radius = _kth_neighbour_radius(x, k)
    fake_radius = _kth_neighbour_radius(y, k)
    d = _pairwise(x, y)  # real × fake
    inside_real = d <= real_radius[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * y.shape[0])),
        "coverage": float((d.min(axis=1) <= real_radius).mean()),
        "k": k,
    }
