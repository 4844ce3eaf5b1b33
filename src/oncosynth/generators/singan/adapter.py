"""The group of SinGANs as a registered generator: ``create_generator("singan")``.

``fit`` trains one SinGAN per chosen image of a class (:func:`train_group`);
``sample(n, class, seed)`` draws image ``i`` from member ``(seed + i) mod K``
with noise seeded by ``seed + i``, so the members contribute equally and each
image can be made again alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.generators.base import Generator
from oncosynth.generators.registry import register_generator
from oncosynth.generators.singan.group import train_group
from oncosynth.generators.singan.model import DEFAULTS, SinGANMember, sample_member


@register_generator()
class SinGAN(Generator):
    """A group of SinGANs, one per training image of one class; sampling draws equally from each."""

    name = "singan"
    conditional = False
    defaults = DEFAULTS
    presets = {
        "paper": {"iters": 2000},  # Shaham et al. 2019
        "mammo": {"scale_factor": 0.8},  # the mammography SinGAN work
        "tiny": {"iters": 40, "filters": 16, "min_size": 12, "max_size": 48},  # demos and smoke tests
    }

    def __init__(self, preset: str | None = None, **config: Any):
        super().__init__(preset, **config)
        self.members: list[SinGANMember] = []
        self.member_info: list[dict[str, Any]] = []

    # ---- protocol
    def check_size(self, size: int) -> None:
        if size < int(self.config["min_size"]):
            raise ConfigError(f"singan: size {size} is smaller than the coarsest scale ({self.config['min_size']} px)")

    def build(self) -> None:
        self.members = [SinGANMember([tuple(s) for s in info["sizes"]], int(self.channels),
                                     int(self.config["filters"]), int(self.config["blocks"]))
                        for info in self.member_info]

    def networks(self) -> dict[str, nn.Module]:
        return {f"member{i:02d}": m for i, m in enumerate(self.members)}

    @property
    def n_scales(self) -> int:
        return min(m.n_scales for m in self.members) if self.members else 0

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "members": self.member_info}

    def restore_config(self, config: dict[str, Any]) -> None:
        self.member_info = list(config["members"])  # build() makes one SinGANMember per entry

    # ---- sampling
    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64,
               start_scale: int = 0, member: int | None = None) -> torch.Tensor:
        """``n`` images in [0, 1]: image ``i`` comes from member ``(seed + i) % K`` (or ``member``),
        with noise seeded by ``seed + i``; scales below ``start_scale`` use the training image's
        reconstruction (``start_scale=0``: fully random samples)."""
        if not self.built or not self.members:
            raise ConfigError("singan: the generator is not trained or loaded yet")
        if n < 0:
            raise ConfigError(f"n must be >= 0, not {n}")
        self.class_index(class_name)
        if member is not None and not 0 <= member < len(self.members):
            raise ConfigError(f"member must be in 0..{len(self.members) - 1}, not {member}")
        seeds = [seed + i for i in range(n)]
        owner = [member if member is not None else s % len(self.members) for s in seeds]
        out = torch.zeros(n, int(self.channels), int(self.size), int(self.size))
        for m, model in enumerate(self.members):
            rows = [i for i in range(n) if owner[i] == m]
            for start in range(0, len(rows), max(1, batch_size)):
                part = rows[start:start + batch_size]
                images = sample_member(model, [seeds[i] for i in part], start_scale)
                out[part] = images
        return out

    # ---- training
    def fit(self, data: Any, run_folder: str | Path, steps: int | None = None, **options: Any) -> "SinGAN":
        """Train one SinGAN per chosen image of a class; see :func:`train_group` for the options."""
        if steps is not None:
            raise ConfigError("singan: training length is iterations per scale (iters), not steps")
        train_group(self, data, run_folder, **options)
        return self
