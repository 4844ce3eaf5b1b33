"""MCGAN: the malignancy-conditioned DCGAN of Osuala et al., as a registry generator.

Architecture and training as in the paper's code (there: 128×128 grey, width 64):

* generator: z (100-d) concatenated with the class embedded (50-d) and mapped
  linearly to the latent size (followed by LeakyReLU(0.2), as in the released code); transposed convolutions from 4×4 up to the image
  size, BatchNorm + ReLU in between, tanh at the end;
* discriminator: the class embedded and projected linearly to one extra image
  channel, strided convolutions with LeakyReLU(0.2) (BatchNorm from the second
  layer on), a 4×4 convolution to one logit, sigmoid;
* binary cross-entropy with one-sided label smoothing: real targets drawn from
  U[0.7, 1.2], fake targets 0; Adam lr 1e-4, betas (0.5, 0.999) for both nets.

The sigmoid is folded into the loss (``binary_cross_entropy_with_logits``),
which is the same function computed stably; :meth:`Discriminator.probability`
gives the sigmoid output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


class DCGenerator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, width: int, z_dim: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(num_classes, embed_dim), nn.Linear(embed_dim, z_dim),
                                   nn.LeakyReLU(0.2))
        stages = _stages(size)
        c = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(2 * z_dim, c, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(_init_dcgan)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.embed(labels)], dim=1)
        return self.main(h[:, :, None, None])


class DCDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, width: int, embed_dim: int):
        super().__init__()
        self.size = size
        self.embed = nn.Sequential(nn.Embedding(num_classes, embed_dim), nn.Linear(embed_dim, size * size),
                                   nn.LeakyReLU(0.2))
        stages = _stages(size)
        layers: list[nn.Module] = [nn.Conv2d(channels + 1, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(_init_dcgan)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One logit per image."""
        label_plane = self.embed(labels).view(-1, 1, self.size, self.size)
        return self.main(torch.cat([images, label_plane], dim=1)).view(-1)

    def probability(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(images, labels))


@register_generator("mcgan")
class ConditionalDCGAN(SteppedGAN):
    """Class-conditional DCGAN (MCGAN). ``width=64, size=128`` is the paper's model."""

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
        "batch_size": 16,
    }
    presets = {"paper": {"width": 64, "size": 128}, "cpu": {"width": 16}}

    @property
    def z_dim(self) -> int:
        return int(self.config["latent_dim"])

    def build(self) -> None:
        cfg, k = self.config, len(self.classes)
        self.G = DCGenerator(k, self.channels, self.size, cfg["width"], cfg["latent_dim"], cfg["embed_dim"])
        self.D = DCDiscriminator(k, self.channels, self.size, cfg["width"], cfg["embed_dim"])
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

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        # ``reals`` is the global batch; under torchrun each rank keeps its share of it and of
        # every random draw below (one process: the share is everything).
        cfg, total, share = self.config, len(reals), self.data_shard.share
        self.G.train()
        self.D.train()
        z = share(torch.randn(total, self.z_dim, device=reals.device))
        fake_labels = share(torch.randint(len(self.classes), (total,), device=reals.device))
        reals, labels = share(reals), share(labels)
        n = len(reals)
        fakes = self.G(z, fake_labels)

        # Discriminator: real targets U[0.7, 1.2] (one-sided smoothing), fake targets 0.
        real_targets = share(torch.empty(total, device=reals.device).uniform_(cfg["real_target_low"],
                                                                              cfg["real_target_high"]))
        loss_real = F.binary_cross_entropy_with_logits(self.D(reals, labels), real_targets)
        loss_fake = F.binary_cross_entropy_with_logits(self.D(fakes.detach(), fake_labels),
                                                       torch.zeros(n, device=reals.device))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_real + loss_fake).backward()
        self.opt_D.step()

        # Generator: make D call the fakes real (target 1).
        loss_G = F.binary_cross_entropy_with_logits(self.D(fakes, fake_labels), torch.ones(n, device=reals.device))
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        return {"loss_D": (loss_real + loss_fake).item(), "loss_G": loss_G.item()}

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G(z, labels)
