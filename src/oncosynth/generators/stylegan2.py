"""StyleGAN2-ADA (Karras et al. 2020), class-conditional, in plain PyTorch.

No custom CUDA/C++ ops: modulated convolutions use the grouped-convolution
trick, resampling uses ``F.interpolate`` (bilinear 2× up-sampling is the
[1, 3, 3, 1] filter of the official code; down-sampling is a 2×2 average), so
the model runs on CPU and CUDA with the pinned torch.

* Mapping network: z and an embedding of the one-hot class are each
  normalised, concatenated and passed through ``map_layers`` fully connected
  layers (learning-rate multiplier 0.01); the running mean of w is tracked for
  the truncation trick.
* Synthesis network: learned 4×4 constant, then per resolution a modulated +
  demodulated 3×3 convolution with 2× up-sampling, a second one, per-pixel
  noise with a learned strength, and a toRGB layer whose output is added to the
  up-sampled image so far ("skip" architecture).
* Discriminator: fromRGB, residual blocks, minibatch standard deviation,
  and projection conditioning (the output features are dotted with a mapped
  class embedding).
* Loss: non-saturating logistic; R1 on reals every ``r1_interval`` steps
  (lazy regularisation, with Adam's lr/betas adjusted as in the paper); an
  exponential moving average of G's weights (``G_ema``) is what samples.
* ADA: :mod:`oncosynth.generators.ada` augments every image D sees; p
  follows r_t = E[sign(D(real))] towards ``ada_target``.

Left out compared with the paper: style mixing and path-length regularisation
(both off in the paper's small-data configurations too) and mixed precision.

Presets: ``small`` (default; trains on 2 CPU cores) and ``full`` (the paper's
size for 128-256 px on a GPU: z = w = 512, 8 mapping layers, up to 512 channels,
batch 64).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.generators.ada import AdaController, AugmentPipe
from oncosynth.generators.gan import SteppedGAN
from oncosynth.generators.registry import register_generator

SQRT2 = math.sqrt(2)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class MappingNetwork(nn.Module):
    """(z, class) -> w. With ``z_dim=0`` it maps the class alone (the discriminator's embedding)."""

    def __init__(self, z_dim: int, num_classes: int, w_dim: int, layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.num_classes, self.w_avg_beta = z_dim, num_classes, w_avg_beta
        self.embed = FullyConnected(num_classes, w_dim)
        features = [w_dim + z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(FullyConnected(a, b, lr_mul=lr_mul, activation=True)
                                    for a, b in zip(features[:-1], features[1:]))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        y = normalize_2nd_moment(self.embed(F.one_hot(labels, self.num_classes).float()))
        x = y if self.z_dim == 0 else torch.cat([normalize_2nd_moment(z), y], dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None:
            if self.training:
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
            if truncation != 1:
                x = self.w_avg.lerp(x, truncation)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     fused: bool = True) -> torch.Tensor:
    """Convolution with per-sample weights ``weight × style`` (optionally demodulated).

    ``fused``: build the N per-sample kernels and run them as one grouped
    convolution (the paper's trick). Otherwise scale the input channels by the
    styles, run one ordinary convolution and scale the outputs by the
    demodulation coefficients -- the same function, and much faster for
    training on CPU, where grouped convolutions with few channels are slow.
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    if not fused:
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=kh // 2)
        if demodulate:
            dcoefs = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
            out = out * dcoefs[:, :, None, None]
        return out
    wts = weight[None] * styles[:, None, :, None, None]               # N × out × in × k × k
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, n * c_in, h, w)
    out = F.conv2d(x, wts.reshape(n * c_out, c_in, kh, kw), padding=kh // 2, groups=n)
    return out.reshape(n, c_out, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated 3×3 conv (+ optional 2× up-sampling), noise, bias, leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.up = up
        self.fused = True  # grouped-conv path; set by StyleGAN2ADA.build from config["fused_modconv"]
        self.affine = FullyConnected(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.weight_gain = 1 / math.sqrt(c_in * 9)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=True, fused=self.fused)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2


class ToRGB(nn.Module):
    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.fused = True
        self.affine = FullyConnected(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in, 1, 1))
        self.weight_gain = 1 / math.sqrt(c_in)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused) + self.bias[None, :, None, None]


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_max, channel_base // resolution)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, size: int, channels: int, channel_base: int, channel_max: int):
        super().__init__()
        c4 = channels_at(4, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        self.convs = nn.ModuleList([StyleConv(c4, c4, w_dim, 4)])
        self.torgbs = nn.ModuleList([ToRGB(c4, channels, w_dim)])
        res, c = 8, c4
        while res <= size:
            c_out = channels_at(res, channel_base, channel_max)
            self.convs.append(StyleConv(c, c_out, w_dim, res, up=True))
            self.convs.append(StyleConv(c_out, c_out, w_dim, res))
            self.torgbs.append(ToRGB(c_out, channels, w_dim))
            res, c = res * 2, c_out

    def forward(self, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = self.const.expand(len(w), -1, -1, -1)
        x = self.convs[0](x, w, noise_mode)
        img = self.torgbs[0](x, w)
        for i, torgb in enumerate(self.torgbs[1:]):
            x = self.convs[1 + 2 * i](x, w, noise_mode)
            x = self.convs[2 + 2 * i](x, w, noise_mode)
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + torgb(x, w)
        return img


class StyleGenerator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, z_dim: int, w_dim: int, map_layers: int,
                 channel_base: int, channel_max: int):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, map_layers)
        self.synthesis = SynthesisNetwork(w_dim, size, channels, channel_base, channel_max)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation: float = 1.0,
                noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.mapping(z, labels, truncation), noise_mode)


class Conv(nn.Module):
    """Equalised-lr convolution, optional 2× down-sampling (average) and leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, activation: bool = True,
                 down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.activation, self.down = activation, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = Conv(c_in, c_in, 3)
        self.conv1 = Conv(c_in, c_out, 3, down=True)
        self.skip = Conv(c_in, c_out, 1, bias=False, activation=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the std of features across a group of images, averaged."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])   # (n/g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int, size: int, channel_base: int, channel_max: int,
                 map_layers: int, cmap_dim: int | None = None):
        super().__init__()
        c_top = channels_at(size, channel_base, channel_max)
        self.from_rgb = Conv(channels, c_top, 1)
        blocks, res = [], size
        while res > 4:
            blocks.append(ResidualBlock(channels_at(res, channel_base, channel_max),
                                        channels_at(res // 2, channel_base, channel_max)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = channels_at(4, channel_base, channel_max)
        self.cmap_dim = cmap_dim or c4
        self.mapping = MappingNetwork(0, num_classes, self.cmap_dim, map_layers, w_avg_beta=None)
        self.conv = Conv(c4 + 1, c4, 3)
        self.fc = FullyConnected(c4 * 16, c4, activation=True)
        self.out = FullyConnected(c4, self.cmap_dim)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(images))
        x = self.conv(minibatch_stddev(x))
        x = self.out(self.fc(x.flatten(1)))
        cmap = self.mapping(None, labels)
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)   # projection conditioning


@register_generator("stylegan2", "stylegan2ada")
class StyleGAN2ADA(SteppedGAN):
    name = "stylegan2-ada"
    defaults: dict[str, Any] = {
        "size": None, "channels": None,
        "z_dim": 64, "w_dim": 64, "map_layers": 2,
        "channel_base": 1024, "channel_max": 64,
        "batch_size": 16,
        "lr": 0.0025, "betas": [0.0, 0.99],
        "r1_gamma": None,          # None: the paper's heuristic 0.0002 * size^2 / batch
        "r1_interval": 16,
        "ema_kimg": None,          # None: batch * 10 / 32 thousand images (paper)
        "ema_rampup": 0.05,
        # p is adjusted every ada_interval steps; it can go 0 -> 1 in ada_kimg thousand images (paper:
        # 4 steps of 64, 500 kimg). Short CPU runs need p to move faster than the paper's, but r_t from
        # only 64 images with 20 kimg made p a noise-driven walk that reached 0.09 on 10k PCam patches
        # as on 16 (bench/RESULTS.md); 16 steps of 16 and 100 kimg separate the two.
        "ada_target": 0.6, "ada_interval": 16,
        "ada_kimg": 100,
        "augment_p": 0.0,          # initial p
        "ada": True,               # False: fixed p = augment_p
        "truncation": 1.0,         # psi used by sample()
        "fused_modconv": False,    # True: grouped-conv modulation (the paper's trick; slower on CPU)
    }
    presets = {
        "small": {},
        "full": {"z_dim": 512, "w_dim": 512, "map_layers": 8, "channel_base": 16384, "channel_max": 512,
                 "batch_size": 64, "ada_kimg": 500, "ada_interval": 4},
    }

    @property
    def z_dim(self) -> int:
        return int(self.config["z_dim"])

    def build(self) -> None:
        cfg, k = self.config, len(self.classes)
        self.G = StyleGenerator(k, self.channels, self.size, cfg["z_dim"], cfg["w_dim"], cfg["map_layers"],
                                cfg["channel_base"], cfg["channel_max"])
        self.D = StyleDiscriminator(k, self.channels, self.size, cfg["channel_base"], cfg["channel_max"],
                                    cfg["map_layers"])
        for module in self.G.modules():
            if isinstance(module, (StyleConv, ToRGB)):
                module.fused = bool(cfg["fused_modconv"])
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.augment = AugmentPipe()
        self.augment.p.fill_(float(cfg["augment_p"]))
        self.ada = AdaController(self.augment, cfg["ada_target"], cfg["ada_interval"], int(cfg["ada_kimg"] * 1000))
        betas = tuple(cfg["betas"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg["lr"], betas=betas, eps=1e-8)
        ratio = cfg["r1_interval"] / (cfg["r1_interval"] + 1)  # lazy regularisation correction (paper, App. B)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg["lr"] * ratio,
                                      betas=tuple(b ** ratio for b in betas), eps=1e-8)
        self.images_seen = 0

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "augment": self.augment}

    def training_state(self) -> dict[str, Any]:
        return {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "ada": self.ada.state_dict(),
                "images_seen": self.images_seen}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ada.load_state_dict(state["ada"])
        self.images_seen = int(state["images_seen"])

    @property
    def r1_gamma(self) -> float:
        gamma = self.config["r1_gamma"]
        return float(gamma) if gamma is not None else 0.0002 * self.size ** 2 / self.config["batch_size"]

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg, n, dev = self.config, len(reals), reals.device
        self.G.train()
        self.D.train()
        fake_labels = torch.randint(len(self.classes), (n,), device=dev)

        # Generator: non-saturating logistic loss, softplus(-D(G(z))).
        self.D.requires_grad_(False)
        fakes = self.G(torch.randn(n, self.z_dim, device=dev), fake_labels)
        loss_G = F.softplus(-self.D(self.augment(fakes), fake_labels)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)

        # Discriminator: softplus(D(fake)) + softplus(-D(real)), plus lazy R1 on reals.
        with torch.no_grad():
            fakes = self.G(torch.randn(n, self.z_dim, device=dev), fake_labels)
        loss_fake = F.softplus(self.D(self.augment(fakes), fake_labels)).mean()
        do_r1 = self.r1_gamma > 0 and (self.step + 1) % cfg["r1_interval"] == 0
        reals = reals.detach().requires_grad_(do_r1)
        real_logits = self.D(self.augment(reals), labels)
        self.ada.observe(real_logits)
        loss_real = F.softplus(-real_logits).mean()
        loss_D = loss_fake + loss_real
        losses = {"loss_G": loss_G.item(), "loss_D": loss_D.item()}
        if do_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_D = loss_D + r1 * (self.r1_gamma / 2) * cfg["r1_interval"]
            losses["r1"] = r1.item()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()

        # G_ema: moving average with a half-life of ema_kimg thousand images (ramped up early on).
        self.images_seen += n
        ema_img = (cfg["ema_kimg"] if cfg["ema_kimg"] is not None else cfg["batch_size"] * 10 / 32) * 1000
        if cfg["ema_rampup"]:
            ema_img = min(ema_img, self.images_seen * cfg["ema_rampup"])
        beta = 0.5 ** (n / max(ema_img, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

        if cfg["ada"]:
            self.ada.update(n)
        losses["augment_p"] = float(self.augment.p)
        if self.ada.last_rt is not None:  # the overfitting signal p follows, so a log explains p's course
            losses["ada_rt"] = self.ada.last_rt
        return losses

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z, labels, truncation=float(self.config["truncation"]), noise_mode="const")
