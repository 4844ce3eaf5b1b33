"""StyleGAN2-ADA (Karras et al. 2020), class-conditional, in plain PyTorch.

The networks are in :mod:`oncosynth.generators.stylegan2_networks`, the
augmentation in :mod:`oncosynth.generators.ada`; this module holds the
losses, regularisers and schedule. One ``train_step`` is one minibatch of
the released code's training loop (NVlabs/stylegan2-ada-pytorch), in its
order of phases:

1. ``Gmain``: non-saturating logistic loss softplus(-D(aug(G(z, c)), c));
2. ``Greg`` every ``pl_interval`` steps (from step 0): path-length
   regularisation on half the batch, penalty (|J_w^T y| - a)² with ``a`` an
   exponential moving average (decay ``pl_decay``) of the lengths, weight
   ``pl_weight``, times the interval (lazy regularisation);
3. ``Dmain``: softplus(D(aug(fake))) + softplus(-D(aug(real)));
4. ``Dreg`` every ``r1_interval`` steps (from step 0): R1 = |∇_x D(aug(x))|²
   on reals, weight ``r1_gamma / 2`` times the interval.

Each phase draws its own latents and class labels; labels follow the training
set's class frequencies (``fake_labels="data"``). The w of a generated image
is mixed with a second one from a random layer on with probability
``style_mixing``. Lazily regularised networks get Adam's lr × I/(I+1) and
betas ** (I/(I+1)) for interval I. G_ema, an exponential moving average of
G, is what samples; ADA moves the augmentation probability p towards
E[sign(D(real))] = ``ada_target``.

Presets:

* ``paper``: the released code's default configuration (``--cfg=auto``, one
  GPU) for 64-256 px: z = w = 512, 2 generator mapping layers, 8 in the
  discriminator, channel base 16384 up to 512, batch 32 (the released rule
  min(4096 / size, 32) for 64 and 128 px; pass ``batch_size=16`` at 256 px),
  minibatch-std groups of 4, lr 0.0025, R1 gamma 0.0002 size² / batch, EMA of
  batch × 10 / 32 kimg with ramp-up 0.05, activations clamped at ±256,
  augmentation pipeline ``bgc`` with 2× oversampled geometric transforms,
  ADA target 0.6 adjusted every 4 steps at 500 kimg per unit of p.
  Departures: float32 everywhere (the released code runs the four highest
  resolutions in float16 on GPUs; same function up to float16 rounding);
  the image grid and metrics of its loop are not reproduced.
* ``paper256``: the released ``--cfg=paper256`` (8 mapping layers, batch 64,
  minibatch-std groups of 8, gamma 1, EMA 20 kimg without ramp-up).
* ``cpu`` (the default when no preset is given; ``small`` is its old name):
  the same losses, regularisers, FIR resampling and label draws as ``paper``,
  at a size that trains on 2 CPU cores (z = w = 64, 2 + 2 mapping layers, at
  most 64 channels, batch 16, no activation clamp), ADA adjusted every 16
  steps at 100 kimg so p can move within a short run, and ADA's geometric
  warp sampled directly instead of 2× oversampled (that costs 40 % of a step
  once p > 0; every other released option costs at most a few per cent:
  bench/RESULTS.md).

Checkpoints written before these settings existed load with the behaviour
they were trained with (bilinear resampling, no path-length regulariser or
mixing, R1 folded into the D step, uniform fake labels): see ``LEGACY``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.generators.ada import AdaController, AugmentPipe
from oncosynth.generators.gan import SteppedGAN
from oncosynth.generators.registry import register_generator
from oncosynth.generators.stylegan2_networks import StyleDiscriminator, StyleGenerator, modulated_conv2d

__all__ = ["StyleGAN2ADA", "modulated_conv2d"]

# What a checkpoint saved before a setting existed was trained with.
LEGACY: dict[str, Any] = {
    "resample": "bilinear", "conv_clamp": None, "d_map_layers": None, "mbstd_group": 4,
    "style_mixing": 0.0, "pl_weight": 0.0, "pl_interval": 0, "r1_mode": "folded",
    "fake_labels": "uniform", "ada_grey_lumaflip": False, "ada_oversample": False, "ada_p_max": 1.0,
}

_CPU: dict[str, Any] = {}  # the defaults below are the cpu preset
_PAPER: dict[str, Any] = {
    "z_dim": 512, "w_dim": 512, "map_layers": 2, "d_map_layers": 8, "channel_base": 16384, "channel_max": 512,
    "batch_size": 32, "conv_clamp": 256, "ada_kimg": 500, "ada_interval": 4, "ada_p_max": None,
    "ada_oversample": True,
}


@register_generator("stylegan2", "stylegan2ada")
class StyleGAN2ADA(SteppedGAN):
    name = "stylegan2-ada"
    defaults: dict[str, Any] = {
        "size": None, "channels": None,
        "z_dim": 64, "w_dim": 64, "map_layers": 2,
        "d_map_layers": 2,         # discriminator's label mapping (released code: 8)
        "channel_base": 1024, "channel_max": 64,
        "batch_size": 16,
        "mbstd_group": 4,
        "lr": 0.0025, "betas": [0.0, 0.99],
        "resample": "fir",         # "fir": the released code's [1,3,3,1] FIR resampling; "bilinear": old
        "conv_clamp": None,        # clamp activations to ±this (released code: 256)
        "r1_gamma": None,          # None: the paper's heuristic 0.0002 * size^2 / batch
        "r1_interval": 16,         # 0: R1 in every D step, no lazy scaling
        "r1_mode": "separate",     # "separate": its own step (released code); "folded": into the D step
        "pl_weight": 2.0, "pl_interval": 4,  # path-length regulariser; pl_interval 0: every step, no lazy scaling
        "pl_batch_shrink": 2, "pl_decay": 0.01,
        "style_mixing": 0.9,       # probability of mixing two ws in a generated image
        "fake_labels": "data",     # "data": class frequencies of the training set; "uniform"
        "ema_kimg": None,          # None: batch * 10 / 32 thousand images (paper)
        "ema_rampup": 0.05,
        # p is adjusted every ada_interval steps; it can go 0 -> 1 in ada_kimg thousand images (paper:
        # 4 steps, 500 kimg). Short CPU runs need p to move faster than the paper's, but r_t from
        # only 64 images with 20 kimg made p a noise-driven walk that reached 0.09 on 10k PCam patches
        # as on 16 (bench/RESULTS.md); 16 steps of 16 and 100 kimg separate the two.
        "ada_target": 0.6, "ada_interval": 16,
        "ada_kimg": 100,
        "augment_p": 0.0,          # initial p
        "ada": True,               # False: fixed p = augment_p
        "ada_p_max": 1.0,          # None: p unbounded above, as released (p >= 1 augments alike)
        "ada_grey_lumaflip": True,  # grey images are inverted by the luma flip, as released
        "ada_oversample": False,   # True: geometric transforms at 2× with a wavelet filter, as released
        "truncation": 1.0,         # psi used by sample()
        "fused_modconv": False,    # True: grouped-conv modulation (the paper's trick; slower on CPU)
    }
    presets = {
        "cpu": _CPU, "small": _CPU,
        "paper": _PAPER, "full": _PAPER,
        "paper256": {**_PAPER, "map_layers": 8, "batch_size": 64, "mbstd_group": 8, "r1_gamma": 1.0,
                     "ema_kimg": 20, "ema_rampup": None},
    }

    @property
    def z_dim(self) -> int:
        return int(self.config["z_dim"])

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "checkpoint") -> "StyleGAN2ADA":
        saved = config.get("config")
        if isinstance(saved, dict):
            legacy = {**LEGACY, "d_map_layers": saved.get("map_layers")}  # D's mapping followed G's
            config = {**config, "config": {**{k: v for k, v in legacy.items() if k not in saved}, **saved}}
        return super().from_config(config, where)

    def build(self) -> None:
        cfg, k = self.config, len(self.classes)
        self._check_options()
        clamp = float(cfg["conv_clamp"]) if cfg["conv_clamp"] is not None else None
        self.G = StyleGenerator(k, self.channels, self.size, cfg["z_dim"], cfg["w_dim"], cfg["map_layers"],
                                cfg["channel_base"], cfg["channel_max"], cfg["resample"], clamp)
        self.D = StyleDiscriminator(k, self.channels, self.size, cfg["channel_base"], cfg["channel_max"],
                                    cfg["d_map_layers"],
                                    resample=cfg["resample"], conv_clamp=clamp, mbstd_group=cfg["mbstd_group"])
        for module in self.G.modules():
            if hasattr(module, "fused"):
                module.fused = bool(cfg["fused_modconv"])
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.augment = AugmentPipe(grey_lumaflip=bool(cfg["ada_grey_lumaflip"]),
                                   oversample=bool(cfg["ada_oversample"]))
        self.augment.p.fill_(float(cfg["augment_p"]))
        self.ada = AdaController(self.augment, cfg["ada_target"], cfg["ada_interval"], int(cfg["ada_kimg"] * 1000),
                                 p_max=cfg["ada_p_max"])
        self.opt_G = self._adam(self.G, cfg["pl_interval"])
        self.opt_D = self._adam(self.D, cfg["r1_interval"])
        self.images_seen = 0
        self.pl_mean = torch.zeros([])

    def _check_options(self) -> None:
        cfg = self.config
        choices = {"resample": ("fir", "bilinear"), "r1_mode": ("separate", "folded"),
                   "fake_labels": ("data", "uniform")}
        for key, allowed in choices.items():
            if cfg[key] not in allowed:
                raise ConfigError(f"{self.name}: {key} must be one of {list(allowed)}, not {cfg[key]!r}")
        if not 0 <= float(cfg["style_mixing"]) <= 1:
            raise ConfigError(f"{self.name}: style_mixing is a probability, not {cfg['style_mixing']}")

    def _adam(self, net: nn.Module, reg_interval: int) -> torch.optim.Adam:
        # Lazy regularisation (paper, App. B): lr and betas scaled by I / (I + 1).
        ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
        return torch.optim.Adam(net.parameters(), lr=self.config["lr"] * ratio,
                                betas=tuple(b ** ratio for b in self.config["betas"]), eps=1e-8)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "augment": self.augment}

    def training_state(self) -> dict[str, Any]:
        return {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "ada": self.ada.state_dict(),
                "images_seen": self.images_seen, "pl_mean": self.pl_mean.clone()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ada.load_state_dict(state["ada"])
        self.images_seen = int(state["images_seen"])
        self.pl_mean = state.get("pl_mean", torch.zeros([])).to(self.device)

    def to(self, device: str | torch.device) -> "StyleGAN2ADA":
        super().to(device)
        if hasattr(self, "pl_mean"):
            self.pl_mean = self.pl_mean.to(self.device)
        return self

    @property
    def r1_gamma(self) -> float:
        gamma = self.config["r1_gamma"]
        return float(gamma) if gamma is not None else 0.0002 * self.size ** 2 / self.config["batch_size"]

    # ------------------------------------------------------------ one minibatch
    def fake_labels(self, n: int, real_labels: torch.Tensor) -> torch.Tensor:
        """Class labels for ``n`` generated images: drawn with the training set's class frequencies.

        Without the counts (``train_step`` called outside the training loop) the labels are drawn
        from the real batch, whose labels are themselves draws from the training set.
        """
        dev = real_labels.device
        if self.config["fake_labels"] == "uniform":
            return torch.randint(len(self.classes), (n,), device=dev)
        if self.class_counts is not None:
            return torch.multinomial(self.class_counts.double(), n, replacement=True).to(dev)
        return real_labels[torch.randint(len(real_labels), (n,), device=dev)]

    def run_G(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and the ws that made them, with style mixing from a random layer on."""
        ws = self.G.map(z, labels)
        if self.config["style_mixing"] > 0:
            num_ws, dev = ws.shape[1], z.device
            cutoff = int(torch.randint(1, num_ws, (), device=dev))
            if float(torch.rand((), device=dev)) >= self.config["style_mixing"]:
                cutoff = num_ws
            if cutoff < num_ws:
                other = self.G.map(torch.randn_like(z), labels, update_w_avg=False)
                ws = torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)
        return self.G.synthesis(ws), ws

    def _step(self, optimizer: torch.optim.Optimizer, net: nn.Module, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in net.parameters():  # as released: NaN/inf gradients become 0/±1e5 before the step
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        optimizer.step()

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg, n, dev = self.config, len(reals), reals.device
        self.G.train()
        self.D.train()
        losses: dict[str, float] = {}

        # Gmain: the generator makes D call its images real.
        self.D.requires_grad_(False)
        c = self.fake_labels(n, labels)
        fakes, _ = self.run_G(torch.randn(n, self.z_dim, device=dev), c)
        loss_G = F.softplus(-self.D(self.augment(fakes), c)).mean()
        self._step(self.opt_G, self.G, loss_G)
        losses["loss_G"] = loss_G.item()

        # Greg: path-length regularisation on a shrunk batch, every pl_interval steps.
        interval = cfg["pl_interval"] or 1
        if cfg["pl_weight"] > 0 and self.step % interval == 0:
            m = max(1, n // cfg["pl_batch_shrink"])
            c = self.fake_labels(m, labels)
            images, ws = self.run_G(torch.randn(m, self.z_dim, device=dev), c)
            noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
            (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(lengths.mean(), cfg["pl_decay"])
            self.pl_mean.copy_(pl_mean.detach())
            penalty = (lengths - pl_mean).square()
            self._step(self.opt_G, self.G, (penalty * cfg["pl_weight"]).mean() * interval)
            losses["pl_penalty"] = penalty.mean().item()
        self.D.requires_grad_(True)

        # Dmain: fakes down, reals up (R1 folded in, when asked for).
        c = self.fake_labels(n, labels)
        with torch.no_grad():
            fakes, _ = self.run_G(torch.randn(n, self.z_dim, device=dev), c)
        loss_fake = F.softplus(self.D(self.augment(fakes), c)).mean()
        r1_interval = cfg["r1_interval"] or 1
        folded = self.r1_gamma > 0 and (not cfg["r1_interval"] or (
            cfg["r1_mode"] == "folded" and (self.step + 1) % r1_interval == 0))
        real_logits, r1 = self._real_logits(reals, labels, with_r1=folded)
        loss_D = loss_fake + F.softplus(-real_logits).mean()
        losses["loss_D"] = loss_D.item()
        if folded:
            loss_D = loss_D + r1.mean() * (self.r1_gamma / 2) * r1_interval
            losses["r1"] = r1.mean().item()
        self._step(self.opt_D, self.D, loss_D)

        # Dreg: R1 on reals as a step of its own, every r1_interval steps.
        if (self.r1_gamma > 0 and cfg["r1_interval"] and cfg["r1_mode"] == "separate"
                and self.step % r1_interval == 0):
            _, r1 = self._real_logits(reals, labels, with_r1=True)
            self._step(self.opt_D, self.D, r1.mean() * (self.r1_gamma / 2) * r1_interval)
            losses["r1"] = r1.mean().item()

        self._update_ema(n)
        if cfg["ada"]:
            self.ada.update(n)
        losses["augment_p"] = float(self.augment.p)
        if self.ada.last_rt is not None:  # the overfitting signal p follows, so a log explains p's course
            losses["ada_rt"] = self.ada.last_rt
        return losses

    def _real_logits(self, reals: torch.Tensor, labels: torch.Tensor,
                     with_r1: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits on augmented reals (seen by ADA) and, if asked, the per-image R1 penalty."""
        reals = reals.detach().requires_grad_(with_r1)
        logits = self.D(self.augment(reals), labels)
        self.ada.observe(logits)
        if not with_r1:
            return logits, None
        (grad,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
        return logits, grad.square().sum(dim=[1, 2, 3])

    def _update_ema(self, n: int) -> None:
        """G_ema: moving average with a half-life of ema_kimg thousand images (ramped up early on)."""
        cfg = self.config
        ema_img = (cfg["ema_kimg"] if cfg["ema_kimg"] is not None else self.config["batch_size"] * 10 / 32) * 1000
        if cfg["ema_rampup"]:
            ema_img = min(ema_img, self.images_seen * cfg["ema_rampup"])  # images before this step
        beta = 0.5 ** (n / max(ema_img, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self.images_seen += n

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z, labels, truncation=float(self.config["truncation"]), noise_mode="const")
