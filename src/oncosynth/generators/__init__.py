"""Generators: one protocol, one registry (``create_generator`` / ``load_generator``).

Registered: ``cdcgan`` (alias ``mcgan``, the malignancy-conditioned DCGAN),
``stylegan2-ada`` (alias ``stylegan2``), ``singan`` (a group of single-image SinGANs) and ``ddpm``
(alias ``diffusion``, a class-conditional diffusion model on MONAI). Training machinery (checkpoints,
resume, divergence stop, progress, sample grids) lives in ``training``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oncosynth.generators.base import (
    Generator,
    create_generator,
    generator_class,
    latest_checkpoint,
    list_generators,
    load_generator,
    register_generator,
)

__all__ = [
    "Generator", "create_generator", "generator_class", "latest_checkpoint", "list_generators",
    "load_generator", "register_generator", "demo_train", "generate_images",
]


def demo_train(data: Any, run_folder: str | Path, seed: int = 0, steps: int = 200,
               progress: bool = True) -> Generator:
    """Train the demo's small conditional GAN (MCGAN, width 16, 64 px) — about 1-2 minutes on 2 CPU cores.

    ``data`` is a Dataset (e.g. the phantom) or an (images, labels, classes) tuple.
    """
    gen = create_generator("cdcgan", width=16, size=64, batch_size=16)
    return gen.fit(data, run_folder, steps=steps, seed=seed, checkpoint_every=50, sample_every=50,
                   progress=progress)


def generate_images(run_folder: str | Path, out: str | Path, n: int, class_names: list[str], seed: int = 0,
                    device: str = "cpu", batch_size: int = 64, reject_memorised: Any = None,
                    **sample_options: Any) -> list[dict[str, Any]]:
    """Sample ``n`` images per class from a trained run into ``out`` (see ``generators.export``)."""
    from oncosynth.generators.export import write_samples

    return write_samples(run_folder, out, n, class_names, seed=seed, device=device, batch_size=batch_size,
                         reject_memorised=reject_memorised, **sample_options)
