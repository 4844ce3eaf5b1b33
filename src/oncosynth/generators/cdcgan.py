"""MCGAN: the malignancy-conditioned DCGAN of Osuala et al., as a registry generator.

Architecture and training as in the authors' released code (RichardObi/mammo_dp,
``gan_compare``, ``configs/gan/dcgan_config.yaml``; 128×128 grey, width 64):

* generator: z (100-d) concatenated with the class embedded (50-d) and mapped
  linearly to the latent size, LeakyReLU; transposed 4×4 convolutions from
  4×4 up to the image size, normalisation + ReLU in between, tanh at the end;
* discriminator: the class embedded and projected linearly to one extra image
  channel (LeakyReLU), strided convolutions with LeakyReLU (normalisation from
  the second layer on), a last convolution to one logit, sigmoid;
* binary cross-entropy with one-sided label smoothing: real targets drawn from
  U[0.7, 1.2], fake targets 0; Adam lr 1e-4, betas (0.5, 0.999) for both nets;
  the generator's step reuses the fakes the discriminator just saw.

Settings where the released configuration and oncosynth's first version differ:

==================  ===========================  ==============================
setting             ``paper`` (released config)   old oncosynth / alternative
==================  ===========================  ==============================
``d_kernel``        6 (padding 2; last: pad 1)   4 (padding 1; last: pad 0)
``leak``            0.1                          0.2
``d_steps_per_g``   2 (G steps on even steps)    1
``batch_size``      8                            16
``norm``            ``instance`` (G and D)       ``batch`` (the authors' earlier code)
``real_range``      ``signed`` [-1, 1]           ``unit`` [0, 1], as released
``loss``            ``logits``                   ``sigmoid``, as released
==================  ===========================  ==============================

Two departures of the ``paper`` preset, both deliberate: the released code
feeds real images in [0, 1] to a discriminator that sees tanh fakes in
[-1, 1] (a range mismatch D can exploit; ``real_range="unit"`` restores it),
and it applies a float32 sigmoid then cross-entropy, whose gradient vanishes
once a logit passes about 17 (``loss="sigmoid"`` restores it, with the log
clamped at -100 as torch's BCELoss did; today's BCELoss rejects the smoothed
targets above 1). ``logits`` computes the same loss stably. The released loop
restarts its 2:1 counter every epoch; here there are no epochs (batches are
drawn with replacement), so G steps on every other step throughout.

Checkpoints saved before these settings existed load with the old values (``LEGACY``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.generators.gan import SteppedGAN
from oncosynth.generators.registry import register_generator


def _stages(size: int) -> int:
    """Number of 2× up/down-sampling stages between 4×4 and ``size``."""
    return size.bit_length() - 3  # log2(size) - 2


def _init_dcgan(module: nn.Module) -> None:
    # DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02).
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _norm(kind: str, channels: int) -> nn.Module:
    # The released code's InstanceNorm2d has no affine parameters and no running statistics.
    return nn.InstanceNorm2d(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class DCGenerator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, width: int, z_dim: int, embed_dim: int,
                 leak: float = 0.2, norm: str = "batch"):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(num_classes, embed_dim), nn.Linear(embed_dim, z_dim),
                                   nn.LeakyReLU(leak))
        stages = _stages(size)
        c = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(2 * z_dim, c, 4, 1, 0, bias=False),
                                   _norm(norm, c), nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), _norm(norm, c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(_init_dcgan)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.embed(labels)], dim=1)
        return self.main(h[:, :, None, None])


class DCDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, width: int, embed_dim: int,
                 kernel: int = 4, leak: float = 0.2, norm: str = "batch"):
        super().__init__()
        self.size = size
        self.embed = nn.Sequential(nn.Embedding(num_classes, embed_dim), nn.Linear(embed_dim, size * size),
                                   nn.LeakyReLU(leak))
        pad = (kernel - 2) // 2  # halves the size at stride 2: 1 for 4×4, 2 for 6×6
        stages = _stages(size)
        layers: list[nn.Module] = [nn.Conv2d(channels + 1, width, kernel, 2, pad, bias=False), nn.LeakyReLU(leak, True)]
        c = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(c, c * 2, kernel, 2, pad, bias=False), _norm(norm, c * 2), nn.LeakyReLU(leak, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, kernel, 1, pad - 1, bias=False)]  # 4×4 -> 1×1
        self.main = nn.Sequential(*layers)
        self.apply(_init_dcgan)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One logit per image."""
        label_plane = self.embed(labels).view(-1, 1, self.size, self.size)
        return self.main(torch.cat([images, label_plane], dim=1)).view(-1)

    def probability(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(images, labels))


def sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The released loss: float32 sigmoid, then cross-entropy with each log clamped at -100.

    Today's BCELoss rejects targets above 1 (the smoothed real targets), so the loss is
    split into its two terms, t · BCE(p, 1) + (1 - t) · BCE(p, 0), each with torch's guarded
    gradient: once float32 rounds the sigmoid to 0 or 1, the gradient is exactly 0.
    """
    p = torch.sigmoid(logits.float())
    ones, zeros = torch.ones_like(p), torch.zeros_like(p)
    real = F.binary_cross_entropy(p, ones, reduction="none")
    fake = F.binary_cross_entropy(p, zeros, reduction="none")
    return (targets * real + (1 - targets) * fake).mean()


LEGACY: dict[str, Any] = {"d_kernel": 4, "leak": 0.2, "d_steps_per_g": 1, "norm": "batch",
                          "real_range": "signed", "loss": "logits"}
CHOICES = {"d_kernel": (4, 6), "norm": ("batch", "instance"), "real_range": ("signed", "unit"),
           "loss": ("logits", "sigmoid")}


@register_generator("mcgan")
class ConditionalDCGAN(SteppedGAN):
    """Class-conditional DCGAN (MCGAN). ``preset="paper"`` is the released configuration.

    ``cpu``: the released losses and schedule at width 16, keeping what pays off on 2 CPU cores
    (bench/RESULTS.md). No preset: the class defaults below, i.e. the released configuration at
    width 64 and the data's own size (ask for ``preset="cpu"`` or ``width=16`` on a CPU).
    """

    name = "cdcgan"
    supports_distributed = True
    defaults: dict[str, Any] = {
        "size": None,          # None: the data's size, resampled up to a power of two
        "channels": None,      # None: the data's channel count
        "width": 64,           # ngf = ndf in the paper
        "latent_dim": 100,
        "embed_dim": 50,
        "lr": 1e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "real_target_low": 0.7,   # one-sided label smoothing, real targets ~ U[low, high]
        "real_target_high": 1.2,
        "batch_size": 8,
        "d_kernel": 6,            # discriminator kernel: 6 (released) or 4
        "leak": 0.1,              # LeakyReLU slope (released 0.1)
        "d_steps_per_g": 2,       # discriminator steps per generator step (released 2)
        "norm": "instance",       # "instance" (released config) or "batch" (authors' earlier code)
        "real_range": "signed",   # "signed": reals in [-1, 1] like the tanh fakes; "unit": [0, 1], as released
        "loss": "logits",         # "logits": stable BCE; "sigmoid": float32 sigmoid + BCE, as released
    }
    presets = {"paper": {"width": 64, "size": 128}, "cpu": {"width": 16}}

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "checkpoint") -> "ConditionalDCGAN":
        saved = config.get("config")
        if isinstance(saved, dict):
            config = {**config, "config": {**{k: v for k, v in LEGACY.items() if k not in saved}, **saved}}
        return super().from_config(config, where)

    @property
    def z_dim(self) -> int:
        return int(self.config["latent_dim"])

    def build(self) -> None:
        cfg, k = self.config, len(self.classes)
        for key, allowed in CHOICES.items():
            if cfg[key] not in allowed:
                raise ConfigError(f"{self.name}: {key} must be one of {list(allowed)}, not {cfg[key]!r}")
        if int(cfg["d_steps_per_g"]) < 1:
            raise ConfigError(f"{self.name}: d_steps_per_g must be >= 1, not {cfg['d_steps_per_g']}")
        self.G = DCGenerator(k, self.channels, self.size, cfg["width"], cfg["latent_dim"], cfg["embed_dim"],
                             cfg["leak"], cfg["norm"])
        self.D = DCDiscriminator(k, self.channels, self.size, cfg["width"], cfg["embed_dim"], cfg["d_kernel"],
                                 cfg["leak"], cfg["norm"])
        betas = (cfg["beta1"], cfg["beta2"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg["lr"], betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg["lr"], betas=betas)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def training_state(self) -> dict[str, Any]:
        return {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])

    def bce(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.config["loss"] == "sigmoid":
            return sigmoid_bce(logits, targets)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def updates_generator(self, step: int) -> bool:
        """G steps on every ``d_steps_per_g``-th step, from step 0 (the released loop starts with G)."""
        return step % int(self.config["d_steps_per_g"]) == 0

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        # ``reals`` is the global batch; under torchrun each rank keeps its share of it and of
        # every random draw below (one process: the share is everything).
        cfg, total, share = self.config, len(reals), self.data_shard.share
        self.G.train()
        self.D.train()
        z = share(torch.randn(total, self.z_dim, device=reals.device))
        fake_labels = share(torch.randint(len(self.classes), (total,), device=reals.device))
        reals, labels = share(reals), share(labels)
        if cfg["real_range"] == "unit":
            reals = (reals + 1) / 2
        n = len(reals)
        fakes = self.G(z, fake_labels)

        # Discriminator: real targets U[0.7, 1.2] (one-sided smoothing), fake targets 0.
        real_targets = share(torch.empty(total, device=reals.device).uniform_(cfg["real_target_low"],
                                                                              cfg["real_target_high"]))
        loss_real = self.bce(self.D(reals, labels), real_targets)
        loss_fake = self.bce(self.D(fakes.detach(), fake_labels), torch.zeros(n, device=reals.device))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_real + loss_fake).backward()
        self.opt_D.step()
        losses = {"loss_D": (loss_real + loss_fake).item()}

        # Generator: make the updated D call the same fakes real (target 1).
        if self.updates_generator(self.step):
            loss_G = self.bce(self.D(fakes, fake_labels), torch.ones(n, device=reals.device))
            self.opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            self.opt_G.step()
            losses["loss_G"] = loss_G.item()
        return losses

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G(z, labels)
