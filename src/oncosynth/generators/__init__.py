"""Generators: one protocol (``base``), one registry (``create_generator`` / ``load_generator``).

Registered: ``cdcgan`` (alias ``mcgan``, the malignancy-conditioned DCGAN),
``stylegan2-ada`` (alias ``stylegan2``), ``singan`` (a group of single-image
SinGANs), ``style-transfer`` (aliases ``gatys``, ``nst``) and ``ddpm`` (alias
``diffusion``, a class-conditional diffusion model on MONAI). The step-wise
loop (checkpoints, resume, divergence stop, progress, sample grids) lives in
``gan`` and ``training``.

Importing this package imports the built-in models, which registers them; the
registry itself imports no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Discovery: each import registers its generator(s) with the registry.
from oncosynth.generators import cdcgan, ddpm, gated_style, singan, style_transfer, stylegan2  # noqa: F401
from oncosynth.generators.base import Generator
from oncosynth.generators.export import write_samples
from oncosynth.generators.registry import (create_generator, generator_class, latest_checkpoint, list_generators,
                                           load_generator, register_generator)

__all__ = [
    "Generator", "create_generator", "generator_class", "latest_checkpoint", "list_generators",
    "load_generator", "register_generator", "generate_images",
]


def generate_images(run_folder: str | Path, out: str | Path, n: int, class_names: list[str], seed: int = 0,
                    device: str = "cpu", batch_size: int = 64, reject_memorised: Any = None,
                    **sample_options: Any) -> list[dict[str, Any]]:
    """Sample ``n`` images per class from a trained run into ``out`` (see ``generators.export``)."""
    return write_samples(run_folder, out, n, class_names, seed=seed, device=device, batch_size=batch_size,
                         reject_memorised=reject_memorised, **sample_options)
