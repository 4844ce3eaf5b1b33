"""The demo's generator steps: a small conditional GAN, one small SinGAN and a small diffusion model on the phantom."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from oncosynth.data import Dataset, load_images
from oncosynth.generators import Generator, create_generator, generate_images, load_generator
from oncosynth.io import save_grid, save_image


#: The authors' earlier batch-norm MCGAN form (4×4 D kernels, LeakyReLU 0.2, one D step per G step).
#: In the demo's 1,500 steps on the phantom it learns the data; the released instance-norm form does
#: not yet (same steps, same encoder: FID 127 vs 240, precision 0.30 vs 0.00; bench/RESULTS.md, issue 21).
DEMO_MCGAN_FORM = {"d_kernel": 4, "leak": 0.2, "d_steps_per_g": 1, "norm": "batch"}


def demo_train(data: Any, run_folder: str | Path, seed: int = 0, steps: int = 200,
               progress: bool = True) -> Generator:
    """Train the demo's small conditional GAN (MCGAN, width 16, 64 px) — about 1-2 minutes on 2 CPU cores.

    ``data`` is a Dataset (e.g. the phantom) or an (images, labels, classes) tuple.
    """
    gen = create_generator("cdcgan", width=16, size=64, batch_size=16, **DEMO_MCGAN_FORM)
    return gen.fit(data, run_folder, steps=steps, seed=seed, checkpoint_every=50, sample_every=50,
                   progress=progress)


#: The demo's SinGAN: 48 px, 5 scales of 16 filters (see bench/RESULTS.md for its time).
DEMO_SINGAN = {"iters": 60, "filters": 16, "min_size": 16, "max_size": 48, "sifid_samples": 4}


def demo_singan(dataset: Any, out: str | Path, class_name: str = "malignant", seed: int = 0,
                n_samples: int = 16, settings: dict[str, Any] | None = None) -> Path:
    """The demo's step: one small SinGAN on one phantom image, then a sample grid and PNGs.

    Sized for well under a minute on 2 CPU cores (``DEMO_SINGAN``). Re-running it reuses the
    finished model. ``settings`` replace ``DEMO_SINGAN``.
    """
    out = Path(out)
    gen = create_generator("singan", **(DEMO_SINGAN if settings is None else settings))
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


#: The demo's diffusion model: 32 px, a 3-level U-Net of 16-32 channels (see bench/RESULTS.md for its time).
DEMO_DDPM = {"size": 32, "widths": [16, 32, 32], "attention": [False, False, True], "norm_groups": 8,
             "head_channels": 16, "lr": 1e-3, "ema_decay": 0.99, "sample_steps": 10, "batch_size": 16}
DEMO_DDPM_STEPS = 300


def demo_ddpm(dataset: Any, out: str | Path, seed: int = 0, n_per_class: int = 16,
              settings: dict[str, Any] | None = None, steps: int | None = None) -> dict[str, Any]:
    """The demo's step: a small class-conditional DDPM on the phantom, then ``n_per_class`` images
    of each class through the memorisation guard (flagged copies of training images are replaced).

    Re-running it resumes or reuses the finished model and keeps finished samples.
    ``settings`` and ``steps`` replace ``DEMO_DDPM`` and ``DEMO_DDPM_STEPS``.
    """
    out = Path(out)
    steps = DEMO_DDPM_STEPS if steps is None else steps
    gen = create_generator("ddpm", **(DEMO_DDPM if settings is None else settings))
    gen.fit(dataset, out / "run", steps=steps, seed=seed, checkpoint_every=100,
            sample_every=steps, progress=False)
    samples = out / "samples"
    if not (samples / "manifest.json").is_file():
        generate_images(out / "run", samples, n_per_class, list(gen.classes), seed=seed, reject_memorised=dataset)
    guard = json.loads((samples / "manifest.json").read_text())["memorisation_guard"][-1]
    return {"folder": samples, "images": n_per_class * len(gen.classes) - sum(guard["shortfall"].values()),
            "rejected": guard["n_rejected"]}
