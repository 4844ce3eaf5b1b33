"""Generators learn their data, judged by expectations the data fix in advance (not by the generator's code).

* MCGAN (cdcgan) and StyleGAN2-ADA on dark benign / bright malignant images (grey 0.25 / 0.75): the sampled
  malignant images must be brighter than the sampled benign ones, by a clear margin.
* SinGAN on one texture: its samples are much closer (SIFID) to that texture than to a different one, and
  closer than an untrained SinGAN's samples are.
* SIFID itself against the Fréchet distance written out with scipy's matrix square root on the feature
  network's spatial vectors.

All tiny (32 px, a few channels, tens to hundreds of steps) and on one thread.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from oncosynth.generators import create_generator
from oncosynth.generators.singan import sample_member, train_singan
from oncosynth.metrics.sifid import sifid, sifid_matrix

GANS = {  # method -> (tiny settings, steps)
    # The authors' earlier batch-norm DCGAN: at width 4 the released configuration (instance norm,
    # 6x6 D kernels, 2 D steps per G step) had not learnt the gap after 400 steps (0.452 vs 0.452).
    "cdcgan": ({"width": 4, "size": 32, "norm": "batch", "d_kernel": 4, "leak": 0.2, "d_steps_per_g": 1}, 200),
    "stylegan2-ada": ({"size": 32, "z_dim": 8, "w_dim": 8, "map_layers": 1, "channel_base": 128,
                       "channel_max": 8, "r1_interval": 2}, 80),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def dark_benign_bright_malignant(n: int = 32, size: int = 32):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2  # 0 benign, 1 malignant
    level = torch.where(labels == 1, 0.75, 0.25).view(-1, 1, 1, 1)
    images = (level + 0.1 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)
    return (images * 255).to(torch.uint8), labels, ["benign", "malignant"]


@pytest.mark.parametrize("method", list(GANS))
def test_conditional_gan_learns_the_class_brightness(method, tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    settings, steps = GANS[method]
    gen = create_generator(method, **settings)
    gen.fit(dark_benign_bright_malignant(), tmp_path / "run", steps=steps, batch_size=8, seed=0, progress=False,
            checkpoint_every=10**6, sample_every=None)
    benign = float(gen.sample(32, "benign", seed=0).mean())
    malignant = float(gen.sample(32, "malignant", seed=0).mean())
    assert malignant - benign > 0.1, (benign, malignant)  # the data's gap is 0.5


def texture(frequency: float, size: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(2 * np.pi * frequency * x) * np.cos(2 * np.pi * 2 * y)
    image = np.clip(base + 0.1 * rng.standard_normal((size, size)), 0, 1)
    return torch.from_numpy(image).float()[None]


def test_singan_samples_match_their_own_image():
    own, other = texture(4), texture(9, seed=1)
    config = {"iters": 30, "filters": 8, "blocks": 3, "min_size": 14, "max_size": 32}
    trained, _ = train_singan(own, config, seed=0)
    untrained, _ = train_singan(own, {**config, "iters": 0}, seed=0)
    seeds = list(range(4))
    matrix, _ = sifid_matrix(torch.stack([own, other]), sample_member(trained, seeds))
    baseline, _ = sifid_matrix(own[None], sample_member(untrained, seeds))
    assert (matrix[0] < 0.6 * matrix[1]).all(), matrix          # nearer its own image than another texture
    assert matrix[0].mean() < 0.5 * baseline[0].mean(), (matrix[0], baseline[0])  # training did that


def test_sifid_is_the_frechet_distance_of_the_spatial_features():
    from scipy.linalg import LinAlgWarning, sqrtm

    from oncosynth.features import create_feature_net

    a, b = texture(4), texture(7, seed=2) * 0.8
    net = create_feature_net("random-cnn:0")
    with torch.no_grad():
        maps = [net.spatial(x[None])[0].double().numpy() for x in (a, b)]
    vectors = [m.reshape(m.shape[0], -1).T for m in maps]  # positions x channels
    mu = [v.mean(axis=0) for v in vectors]
    cov = [np.cov(v, rowvar=False) for v in vectors]
    with warnings.catch_warnings():  # dead ReLU channels make the covariances singular; sqrtm still converges
        warnings.simplefilter("ignore", LinAlgWarning)
        root = sqrtm(cov[0] @ cov[1]).real
    direct = float(((mu[0] - mu[1]) ** 2).sum() + np.trace(cov[0] + cov[1] - 2 * root))
    assert direct > 0
    assert sifid(a, b, "random-cnn:0") == pytest.approx(direct, rel=1e-5)
