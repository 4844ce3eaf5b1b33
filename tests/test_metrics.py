"""FID, KID, precision/recall/density/coverage and MS-SSIM against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from oncosynth.errors import DataError
from oncosynth.metrics import diversity, fidelity


def _direct_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The symmetric form Tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), via eigen-decompositions."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ s2 @ root1
    w2 = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(w2, 0, None)).sum())


def test_fid_matches_direct_formula_on_small_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.7, size=(150, 6)) @ rng.normal(size=(6, 6))
    assert fidelity.fid(a, b) == pytest.approx(_direct_fid(a, b), rel=1e-6)
    # torch input and a known case: equal covariances -> only the mean term remains
    x = rng.normal(size=(400, 3))
    assert fidelity.fid(torch.from_numpy(x), torch.from_numpy(x + 2.0)) == pytest.approx(12.0, rel=1e-9)
    assert fidelity.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_needs_two_images_and_says_so():
    with pytest.raises(DataError, match="at least 2 images, got 1"):
        fidelity.fid(np.zeros((1, 4)), np.ones((5, 4)))


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 5)), rng.normal(0.5, 1.2, size=(20, 5))
    assert fidelity.mmd2_unbiased(x, y) == pytest.approx(_direct_mmd2(x, y), rel=1e-9)
    mean, std = fidelity.kid(x, y, subsets=3, subset_size=100)  # subsets cover the full sets
    assert mean == pytest.approx(_direct_mmd2(x, y), rel=1e-9) and std == 0.0
    # subsets of 10: the mean over subsets equals the mean of direct MMDs on the same subsets
    mean, _ = fidelity.kid(x, y, subsets=4, subset_size=10, seed=3)
    rng = np.random.default_rng(3)
    direct = [_direct_mmd2(x[rng.choice(20, 10, replace=False)], y[rng.choice(20, 10, replace=False)])
              for _ in range(4)]
    assert mean == pytest.approx(np.mean(direct), rel=1e-9)


def test_prdc_on_hand_built_2d_case():
    # k = 1 balls. Real radii: (0,0)->1, (1,0)->1, (5,0)->4.
    real = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    fake = np.array([[0.5, 0.0], [10.0, 0.0], [5.0, 4.5]])
    # precision: only (0.5,0) lies in a real ball; recall: every real point lies in the
    # ball of (0.5,0) (radius 6.36); density: (0.5,0) is in 2 balls -> 2/3;
    # coverage: (5,0)'s nearest fake is 4.5 away > 4 -> 2/3.
    out = fidelity.prdc(real, fake, k=1)
    assert out["precision"] == pytest.approx(1 / 3)
    assert out["recall"] == pytest.approx(1.0)
    assert out["density"] == pytest.approx(2 / 3)
    assert out["coverage"] == pytest.approx(2 / 3)


def test_prdc_identical_sets_and_size_check():
    x = np.random.default_rng(0).normal(size=(50, 3))
    out = fidelity.prdc(x, x, k=5)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    with pytest.raises(DataError, match="at least 6 images"):
        fidelity.prdc(x[:5], x, k=5)


def test_ms_ssim_sanity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 64, generator=g)
    assert torch.allclose(diversity.ms_ssim(x, x), torch.ones(3), atol=1e-6)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    z = torch.rand(3, 1, 64, 64, generator=g)
    s_xy, s_xz = diversity.ms_ssim(x, y), diversity.ms_ssim(x, z)
    assert torch.all(s_xy < 1) and torch.all(s_xz < s_xy)
    assert torch.allclose(diversity.ms_ssim(y, x), s_xy, atol=1e-6)
    assert diversity.ms_ssim_levels(64) == 3 and diversity.ms_ssim_levels(256) == 5


def _reference_ms_ssim(x: np.ndarray, y: np.ndarray, levels: int) -> float:
    """MS-SSIM of two 2-D images as Wang, Simoncelli & Bovik (2003) define it, built on scipy's Gaussian
    filter (11-px window = radius 5, sigma 1.5, kept to the 'valid' region): mean contrast-structure at
    every scale but the coarsest, mean SSIM (luminance x contrast-structure, per pixel) at the coarsest,
    2x2 averaging between scales, the published weights renormalised over the scales used."""
    from scipy.ndimage import gaussian_filter

    def blur(a):
        return gaussian_filter(a, sigma=1.5, radius=5, mode="reflect")[5:-5, 5:-5]

    c1, c2 = 0.01**2, 0.03**2
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:levels])
    weights = weights / weights.sum()
    x, y = x.astype(np.float64), y.astype(np.float64)
    terms = []
    for level in range(levels):
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        if level < levels - 1:
            terms.append(cs.mean())
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        else:
            terms.append((((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean())
    return float(np.prod(np.array(terms) ** weights))


def test_ms_ssim_of_flat_images_is_the_closed_form():
    # flat images: every variance and covariance is 0, so cs = c2 / c2 = 1 at every scale and only the
    # coarsest luminance term (2ab + c1) / (a^2 + b^2 + c1) remains, raised to its normalised weight
    a, b = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.7, 0.5, 0.1])
    x = a.view(3, 1, 1, 1).expand(3, 1, 64, 64)
    y = b.view(3, 1, 1, 1).expand(3, 1, 64, 64)
    c1 = 0.01**2
    exponent = 0.3001 / (0.0448 + 0.2856 + 0.3001)  # three scales fit at 64 px
    closed = ((2 * a * b + c1) / (a**2 + b**2 + c1)) ** exponent
    # float32 variances (E[x^2] - mu^2) carry ~1e-7 of cancellation error against c2 = 9e-4: 3e-4 slack
    assert torch.allclose(diversity.ms_ssim(x, y), closed, atol=3e-4)
    pairwise = diversity.mean_pairwise_ms_ssim(torch.cat([x[:1], y[:1]]))
    assert pairwise["ms_ssim"] == pytest.approx(float(closed[0]), abs=3e-4)


@pytest.mark.parametrize("levels", [1, 3])
def test_ms_ssim_matches_a_scipy_reference(levels):
    rng = np.random.default_rng(4)
    base = rng.random((4, 64, 64))
    # correlated structure, brightness that drifts across the image (so luminance and structure vary together)
    other = np.clip(0.6 * base + 0.3 * rng.random((4, 64, 64)) * np.linspace(0, 1, 64), 0, 1) ** 2
    ours = diversity.ms_ssim(torch.from_numpy(base[:, None]).float(), torch.from_numpy(other[:, None]).float(),
                             levels=levels)
    reference = [_reference_ms_ssim(base[k], other[k], levels) for k in range(4)]
    assert ours.numpy() == pytest.approx(reference, abs=2e-5)
    if levels == 3:  # the cached pairwise path agrees with the same reference
        images = torch.from_numpy(np.concatenate([base[:1], other[:1]])[:, None]).float()
        assert diversity.mean_pairwise_ms_ssim(images)["ms_ssim"] == pytest.approx(reference[0], abs=2e-5)


def test_mean_pairwise_ms_ssim_equals_all_pairs_average():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 48, 48, generator=g)
    x[6:] = 0.7 * x[:6] + 0.3 * torch.rand(6, 1, 48, 48, generator=g)
    out = diversity.mean_pairwise_ms_ssim(x, max_pairs=1000)
    pairs = list(itertools.combinations(range(12), 2))
    i, j = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    assert out["pairs"] == 66
    assert out["ms_ssim"] == pytest.approx(float(diversity.ms_ssim(x[i], x[j]).mean()), abs=1e-5)
    same = diversity.mean_pairwise_ms_ssim(x[:1].repeat(5, 1, 1, 1))
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
