"""SinGAN's networks: the scale pyramid, one scale's generator/critic, and a trained SinGAN.

See :mod:`oncosynth.generators.singan` for the model (Shaham, Dekel, Michaeli 2019) and how
this version differs from the original code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError, ConfigError

MEMBER_KIND = "singan-member"

#: Settings of one SinGAN and of the group (the registered generator's ``defaults``).
DEFAULTS = {
    "scale_factor": 0.75, "min_size": 25, "max_size": 250, "filters": 32, "blocks": 5,
    "iters": 250, "lr": 5e-4, "beta1": 0.5, "gp_weight": 0.1, "rec_weight": 10.0,
    "d_steps": 3, "g_steps": 3, "noise_amp": 0.1, "lr_decay_at": 0.8, "channels": None,
    "sifid_net": "random-cnn:0", "sifid_samples": 8,
}

#: Settings that change the trained networks (a resumed member must match them).
MODEL_KEYS = ("scale_factor", "min_size", "max_size", "filters", "blocks", "iters", "lr", "beta1",
              "gp_weight", "rec_weight", "d_steps", "g_steps", "noise_amp", "lr_decay_at")


# ------------------------------------------------------------------ pyramid ----
def pyramid_sizes(height: int, width: int, scale_factor: float = 0.75, min_size: int = 25,
                  max_size: int = 250) -> list[tuple[int, int]]:
    """Sizes (h, w) of the scales, coarsest first; the last is the training size.

    The image is first shrunk so its long side is at most ``max_size``. The
    number of scales is the smallest that gets from the short side down to
    ``min_size`` with steps no smaller than ``scale_factor``; the factor is then
    adjusted so the coarsest short side is ``min_size`` exactly.
    """
    if not 0 < scale_factor < 1:
        raise ConfigError(f"scale_factor must be between 0 and 1, not {scale_factor}")
    if min_size < 4:
        raise ConfigError(f"min_size must be at least 4 px, not {min_size}")
    if max_size < min_size:
        raise ConfigError(f"max_size ({max_size}) must be at least min_size ({min_size})")
    top = min(1.0, max_size / max(height, width))
    h, w = max(1, round(height * top)), max(1, round(width * top))
    short = min(h, w)
    if short < min_size:
        raise ConfigError(f"a {height}×{width} px image is smaller than the coarsest scale ({min_size} px); "
                          f"use images of at least {min_size} px or a smaller min_size")
    if short == min_size:
        return [(h, w)]
    steps = max(1, math.ceil(math.log(min_size / short) / math.log(scale_factor) - 1e-9))
    factor = (min_size / short) ** (1 / steps)
    sizes = [(max(1, round(h * factor ** (steps - k))), max(1, round(w * factor ** (steps - k))))
             for k in range(steps)]
    return sizes + [(h, w)]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-1] > size[1] or x.shape[-2] > size[0]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


# ------------------------------------------------------------------ networks ----
def _conv_block(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2),
                         nn.InstanceNorm2d(cout, affine=True),
                         nn.LeakyReLU(0.2))  # not in-place: the critic's gradient penalty differentiates twice


class ScaleNet(nn.Module):
    """``blocks`` 3×3 conv layers: (blocks-1) conv-norm-LeakyReLU blocks and a conv tail.
    Generator: tail with tanh, ``channels`` out. Critic: tail without activation, 1 map out."""

    def __init__(self, in_ch: int, out_ch: int, filters: int = 32, blocks: int = 5, kernel: int = 3,
                 tanh: bool = True):
        super().__init__()
        if blocks < 2:
            raise ConfigError(f"SinGAN needs at least 2 conv layers per scale, not {blocks}")
        layers = [_conv_block(in_ch, filters, kernel)]
        layers += [_conv_block(filters, filters, kernel) for _ in range(blocks - 2)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(filters, out_ch, kernel, padding=kernel // 2)
        self.tanh = tanh
        self.reset()

    def reset(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.InstanceNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tail(self.body(x))
        return torch.tanh(y) if self.tanh else y


class SinGANMember(nn.Module):
    """One trained SinGAN: the generators of every scale, their noise amplitudes and the fixed noise map."""

    def __init__(self, sizes: list[tuple[int, int]], channels: int, filters: int = 32, blocks: int = 5):
        super().__init__()
        self.sizes = [tuple(int(v) for v in s) for s in sizes]
        self.channels = channels
        self.gens = nn.ModuleList(ScaleNet(channels, channels, filters, blocks, tanh=True) for _ in self.sizes)
        self.register_buffer("noise_amps", torch.ones(len(self.sizes)))
        self.register_buffer("z_rec", torch.zeros(1, channels, *self.sizes[0]))

    @property
    def n_scales(self) -> int:
        return len(self.sizes)

    def scale_forward(self, k: int, below: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        """Output of scale ``k`` from the output of scale k-1 (None at scale 0) and unit noise."""
        if below is None:
            base = torch.zeros_like(noise)
        else:
            base = _resize(below, self.sizes[k])
        return base + self.gens[k](base + self.noise_amps[k] * noise)

    @torch.no_grad()
    def reconstruct(self, upto: int | None = None) -> list[torch.Tensor]:
        """The reconstructions of the training image at scales 0..upto-1 (fixed noise at 0, none above)."""
        upto = self.n_scales if upto is None else upto
        out, x = [], None
        for k in range(upto):
            noise = self.z_rec if k == 0 else torch.zeros(1, self.channels, *self.sizes[k], device=self.z_rec.device)
            x = self.scale_forward(k, x, noise)
            out.append(x)
        return out

    @torch.no_grad()
    def generate(self, noises: list[torch.Tensor], start_scale: int = 0) -> torch.Tensor:
        """Images in about [-1, 1]. ``noises[k]`` is the unit noise of scale ``start_scale + k``;
        below ``start_scale`` the reconstruction of the training image is used."""
        n = noises[0].shape[0]
        x = None
        if start_scale > 0:
            x = self.reconstruct(start_scale)[-1].expand(n, -1, -1, -1)
        for k in range(start_scale, self.n_scales):
            x = self.scale_forward(k, x, noises[k - start_scale])
        return x

    def noise_shapes(self, start_scale: int = 0) -> list[tuple[int, ...]]:
        return [(self.channels, *self.sizes[k]) for k in range(start_scale, self.n_scales)]



# --------------------------------------------------------------- one member ----
def save_member(folder: str | Path, member: SinGANMember, info: dict[str, Any],
                manifest: dict[str, Any] | None = None) -> Path:
    config = {"kind": MEMBER_KIND, "sizes": [list(s) for s in member.sizes], "channels": member.channels, **info}
    return save_checkpoint(folder, member.state_dict(), config, manifest)


def load_member(folder: str | Path) -> tuple[SinGANMember, dict[str, Any]]:
    tensors, config, _ = load_checkpoint(folder, kind=MEMBER_KIND)
    try:
        settings = config["settings"]
        member = SinGANMember([tuple(s) for s in config["sizes"]], int(config["channels"]),
                              int(settings["filters"]), int(settings["blocks"]))
        member.load_state_dict(tensors)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: not a valid SinGAN member ({str(exc).splitlines()[0]})") from None
    return member.eval(), config


def sample_member(member: SinGANMember, seeds: list[int], start_scale: int = 0) -> torch.Tensor:
    """One image per seed, in [0, 1]; image ``i`` depends only on ``seeds[i]``."""
    if not 0 <= start_scale < member.n_scales:
        raise ConfigError(f"start_scale must be in 0..{member.n_scales - 1}, not {start_scale}")
    shapes = member.noise_shapes(start_scale)
    per_scale: list[list[torch.Tensor]] = [[] for _ in shapes]
    for seed in seeds:
        rng = torch.Generator().manual_seed(int(seed))
        for k, shape in enumerate(shapes):
            per_scale[k].append(torch.randn(shape, generator=rng))
    device = member.z_rec.device
    noises = [torch.stack(n).to(device) for n in per_scale]
    return ((member.generate(noises, start_scale).float().cpu() + 1) / 2).clamp(0, 1)
