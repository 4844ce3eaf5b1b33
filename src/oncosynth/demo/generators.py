"""The demo's generator steps: a small conditional GAN and one small SinGAN on the phantom."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from oncosynth.data import Dataset, load_images
from oncosynth.generators import Generator, create_generator, load_generator
from oncosynth.io import save_grid, save_image


def demo_train(data: Any, run_folder: str | Path, seed: int = 0, steps: int = 200,
               progress: bool = True) -> Generator:
    """Train the demo's small conditional GAN (MCGAN, width 16, 64 px) — about 1-2 minutes on 2 CPU cores.

    ``data`` is a Dataset (e.g. the phantom) or an (images, labels, classes) tuple.
    """
    gen = create_generator("cdcgan", width=16, size=64, batch_size=16)
    return gen.fit(data, run_folder, steps=steps, seed=seed, checkpoint_every=50, sample_every=50,
                   progress=progress)


#: The demo's SinGAN: 48 px, 5 scales of 16 filters (see bench/RESULTS.md for its time).
DEMO_SINGAN = {"iters": 60, "filters": 16, "min_size": 16, "max_size": 48, "sifid_samples": 4}


def demo_singan(dataset: Any, out: str | Path, class_name: str = "malignant", seed: int = 0,
                n_samples: int = 16) -> Path:
    """The demo's step: one small SinGAN on one phantom image, then a sample grid and PNGs.

    Sized for well under a minute on 2 CPU cores (``DEMO_SINGAN``). Re-running it reuses the
    finished model.
    """
    out = Path(out)
    gen = create_generator("singan", **DEMO_SINGAN)
    run = out / "run"
    if (run / "config.json").is_file():
        gen = load_generator(run)
    else:
        gen.fit(dataset, run, class_name=class_name, images=1, seed=seed, progress=False)
    samples = gen.sample(n_samples, gen.classes[0], seed=seed)
    grid = samples
    if isinstance(dataset, Dataset):  # the training image first, then the samples
        source = gen.member_info[0]["source"]
        record = next((r for r in dataset.records if r.uid == source), None)
        if record is not None:
            grid = torch.cat([load_images([record], size=gen.size, channels=gen.channels), samples])
    save_grid(grid, out / "samples-grid.png", nrow=max(1, math.isqrt(len(grid))))
    for i, image in enumerate(samples):
        save_image(image, out / "samples" / f"singan-{seed + i:07d}_{gen.classes[0]}.png")
    return out
