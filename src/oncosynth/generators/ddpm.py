"""DDPM: a class-conditional denoising diffusion model, as a registry generator.

Built on MONAI (the medical-imaging field's implementation): its
``DiffusionModelUNet`` is the denoiser and its noise schedules (linear, scaled
linear, cosine), ``add_noise``/``get_velocity`` and DDIM update are used as they
are. What this module adds is what the generator layer promises:

* class conditioning with classifier-free guidance: the U-Net has one class
  embedding more than there are classes (the "no class" token); during training
  each label is replaced by it with probability ``label_dropout``; at sampling the
  prediction is ``uncond + guidance * (cond - uncond)`` (guidance 1: plain
  conditional, 0: unconditional);
* an EMA of the weights (``ema_decay``, warmed up as ``min(decay, (1+k)/(10+k))``),
  which is what ``generate`` samples from;
* prediction target ``epsilon`` | ``v`` | ``sample`` and schedule ``linear`` |
  ``scaled-linear`` | ``cosine``;
* deterministic DDIM sampling (eta 0) with ``sample_steps`` steps, so the latent
  ``z`` (the initial noise, C*H*W values) fixes the image: ``sample(1, c, seed)``
  reproduces image ``seed`` of a larger call;
* ``patch``: the U-Net runs on a ``patch``x``patch`` pixel-unshuffled image
  (4x fewer positions at patch 2), which makes 64 px affordable on a CPU
  (the "patching" of Hoogeboom et al., simple diffusion, 2023);
* ``refine``: full-resolution convolutions after the pixel shuffle. Without them
  each ``patch``x``patch`` block of the output comes from one U-Net position, and
  60 CPU-minutes of training still left a visible 2-pixel grid in the samples;
  a 3x3 convolution at full resolution sees across block borders. It is a
  residual branch whose last layer starts at zero, so training starts from
  exactly the model without it;
* ``notch`` (sampling only, pixels; 0: off): the sample passes
  ``filters.nyquist_notch`` with this window, which removes the 2-pixel
  checkerboard that a patched model leaves even with ``refine``. Moving the patch
  grid between DDIM steps, or averaging the 4 grid offsets at every step, did not
  reduce it (bench/RESULTS.md): the pattern follows the image, not the grid.

All training randomness (timesteps, noise, label dropout) comes from the global
torch RNG and is drawn for the global batch, so resume is bitwise and torchrun
ranks together equal one process.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.errors import ConfigError
from oncosynth.generators.filters import notch_radius, nyquist_notch
from oncosynth.generators.gan import SteppedGAN
from oncosynth.generators.registry import register_generator

SCHEDULES = {"linear": "linear_beta", "scaled-linear": "scaled_linear_beta", "cosine": "cosine"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}


def _monai():
    """MONAI's U-Net and schedulers, imported on first use (MONAI takes seconds to import)."""
    try:
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
        import einops  # noqa: F401  (MONAI's attention blocks need it; fail here, not mid-build)
    except ImportError as exc:
        raise ConfigError(f"ddpm needs MONAI >= 1.4 and einops (pip install 'monai>=1.4,<1.7' einops): {exc}") from None
    return DiffusionModelUNet, DDPMScheduler, DDIMScheduler


class Denoiser(nn.Module):
    """MONAI's DiffusionModelUNet, optionally run on a pixel-unshuffled image (``patch`` > 1)."""

    def __init__(self, channels: int, num_classes: int, widths: list[int], attention: list[bool],
                 res_blocks: int, norm_groups: int, head_channels: int, patch: int, refine: int = 0):
        super().__init__()
        unet_cls = _monai()[0]
        self.patch = patch
        inner = channels * patch * patch
        self.unet = unet_cls(spatial_dims=2, in_channels=inner, out_channels=inner, channels=list(widths),
                             attention_levels=list(attention), num_res_blocks=res_blocks,
                             norm_num_groups=norm_groups, num_head_channels=head_channels,
                             num_class_embeds=num_classes + 1)  # the last embedding is "no class"
        self.refine = None
        if refine:
            # Sees the U-Net's output and the noisy input, both at full resolution.
            self.refine = nn.Sequential(nn.Conv2d(2 * channels, refine, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(refine, channels, 3, padding=1))
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        inner = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        out = self.unet(inner, timesteps=t, class_labels=labels)
        if self.patch > 1:
            out = F.pixel_shuffle(out, self.patch)
        if self.refine is not None:
            out = out + self.refine(torch.cat([out, x], dim=1))
        return out


@register_generator("diffusion")
class DDPM(SteppedGAN):
    """Class-conditional DDPM with classifier-free guidance, EMA and DDIM sampling."""

    name = "ddpm"
    supports_distributed = True
    defaults: dict[str, Any] = {
        "size": None,             # None: the data's size, rounded up to a power of two
        "channels": None,         # None: the data's channel count
        "widths": [32, 64, 64],   # U-Net channels per resolution level
        "attention": [False, False, True],  # self-attention per level
        "res_blocks": 1,
        "norm_groups": 16,
        "head_channels": 32,
        "patch": 1,               # pixel-unshuffle factor in front of the U-Net (1, 2 or 4)
        "refine": 0,              # channels of the full-resolution convolutions after the shuffle (0: none)
        "timesteps": 1000,        # diffusion steps T of training
        "schedule": "cosine",     # linear | scaled-linear | cosine
        "prediction": "v",        # epsilon | v | sample
        "label_dropout": 0.1,     # classifier-free guidance: share of labels replaced by "no class"
        "guidance": 2.0,          # default guidance scale at sampling
        "notch": 0.0,             # default at sampling: Gaussian window (px) of the 2-px notch filter (0: off)
        "sample_steps": 50,       # default DDIM steps at sampling
        "ema_decay": 0.999,
        "lr": 2e-4,
        "weight_decay": 0.0,
        "grad_clip": 1.0,         # max gradient norm (0: off)
        "batch_size": 16,
    }
    presets = {
        # 1.1 M parameters; the U-Net works at 32x32 for 64 px images (patch 2): ~37 img per CPU-second.
        "cpu": {"widths": [32, 64, 64], "attention": [False, False, True], "res_blocks": 1, "patch": 2,
                "ema_decay": 0.995, "lr": 5e-4, "batch_size": 16, "sample_steps": 25},
        # A GPU-sized, ADM-like U-Net (76.7 M parameters): 128 px, attention at 16 px and below. Untrained here.
        "paper": {"widths": [128, 128, 256, 256, 512], "attention": [False, False, False, True, True],
                  "res_blocks": 2, "patch": 1, "head_channels": 64, "ema_decay": 0.9999, "lr": 1e-4,
                  "batch_size": 64, "sample_steps": 100, "size": 128},
    }

    def __init__(self, preset: str | None = None, **config: Any):
        super().__init__(preset, **config)
        self._validate_config()

    # ------------------------------------------------------------ config checks
    def _validate_config(self) -> None:
        cfg, name = self.config, self.name
        widths, attention = list(cfg["widths"]), list(cfg["attention"])
        if not widths or len(attention) != len(widths):
            raise ConfigError(f"{name}: 'attention' needs one flag per U-Net level ({len(widths)} widths), "
                              f"got {attention}")
        bad = [w for w in widths if w % cfg["norm_groups"]]
        if bad:
            raise ConfigError(f"{name}: widths {bad} are not divisible by norm_groups={cfg['norm_groups']}")
        bad = [w for w, a in zip(widths, attention) if a and w % cfg["head_channels"]]
        if bad:
            raise ConfigError(f"{name}: attention widths {bad} are not divisible by head_channels={cfg['head_channels']}")
        if cfg["patch"] not in (1, 2, 4):
            raise ConfigError(f"{name}: patch must be 1, 2 or 4, not {cfg['patch']}")
        if not isinstance(cfg["refine"], int) or isinstance(cfg["refine"], bool) or cfg["refine"] < 0:
            raise ConfigError(f"{name}: refine must be a channel count >= 0 (0: off), not {cfg['refine']!r}")
        if cfg["schedule"] not in SCHEDULES:
            raise ConfigError(f"{name}: unknown schedule '{cfg['schedule']}'; known: {', '.join(SCHEDULES)}")
        if cfg["prediction"] not in PREDICTIONS:
            raise ConfigError(f"{name}: unknown prediction '{cfg['prediction']}'; known: {', '.join(PREDICTIONS)}")
        if not 0 <= cfg["label_dropout"] < 1:
            raise ConfigError(f"{name}: label_dropout must be in [0, 1), not {cfg['label_dropout']}")
        if not 0 <= cfg["ema_decay"] < 1:
            raise ConfigError(f"{name}: ema_decay must be in [0, 1), not {cfg['ema_decay']}")
        if int(cfg["timesteps"]) < 2:
            raise ConfigError(f"{name}: timesteps must be >= 2, not {cfg['timesteps']}")
        self.sampling_settings(cfg["guidance"], cfg["sample_steps"], cfg["notch"])

    def sampling_settings(self, guidance: float | None = None, steps: int | None = None,
                          notch: float | None = None) -> tuple[float, int, float]:
        """Validated (guidance, DDIM steps, notch); None takes the configured default."""
        guidance = float(self.config["guidance"] if guidance is None else guidance)
        steps = int(self.config["sample_steps"] if steps is None else steps)
        notch = self.config["notch"] if notch is None else notch
        if isinstance(notch, bool) or not isinstance(notch, (int, float)) or not 0 <= notch <= 8:
            raise ConfigError(f"{self.name}: notch is the notch filter's window in pixels, from 0 (off) to 8, "
                              f"not {notch!r}")
        notch = float(notch)
        if notch and self.size is not None and notch_radius(notch) >= self.size:
            raise ConfigError(f"{self.name}: a notch window of {notch} px needs images larger than "
                              f"{notch_radius(notch)} px; this model makes {self.size} px")
        if not guidance >= 0:  # also catches NaN
            raise ConfigError(f"{self.name}: guidance scale must be >= 0 (1 = plain conditional), not {guidance}")
        if guidance > 0 and self.config["label_dropout"] == 0 and guidance != 1:
            raise ConfigError(f"{self.name}: guidance {guidance} needs an unconditional model, but this one was "
                              f"trained with label_dropout 0; use guidance 1")
        total = int(self.config["timesteps"])
        if not 1 <= steps <= total:
            raise ConfigError(f"{self.name}: DDIM steps must be between 1 and the model's {total} "
                              f"training diffusion steps, not {steps}")
        return guidance, steps, notch

    def check_sample_options(self, **options: Any) -> None:
        super().check_sample_options(**options)
        self.sampling_settings(options.get("guidance"), options.get("steps"), options.get("notch"))

    def downsampling(self) -> int:
        """How many times the U-Net halves the image (patching included)."""
        return int(self.config["patch"]) * 2 ** (len(self.config["widths"]) - 1)

    def check_size(self, size: int) -> None:
        factor = self.downsampling()
        if size < 8 or size % factor or size // factor < 2:
            raise ConfigError(
                f"{self.name}: image size {size} cannot be downsampled evenly by this U-Net (patch "
                f"{self.config['patch']} x {len(self.config['widths']) - 1} halvings = /{factor}, down to >= 2 px); "
                f"use a multiple of {factor} of at least {2 * factor}, or other widths/patch")

    # ------------------------------------------------------------ networks
    @property
    def z_dim(self) -> int:
        return int(self.channels * self.size * self.size)

    def build(self) -> None:
        cfg = self.config
        _, ddpm_cls, _ = _monai()
        self.unet = Denoiser(self.channels, len(self.classes), list(cfg["widths"]), list(cfg["attention"]),
                             int(cfg["res_blocks"]), int(cfg["norm_groups"]), int(cfg["head_channels"]),
                             int(cfg["patch"]), int(cfg["refine"]))
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.noise_schedule = ddpm_cls(num_train_timesteps=int(cfg["timesteps"]),
                                       schedule=SCHEDULES[cfg["schedule"]],
                                       prediction_type=PREDICTIONS[cfg["prediction"]])
        self._clip_hooked = False

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "ema": self.ema}

    def training_state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])

    # ------------------------------------------------------------ training
    def _hook_gradient_clipping(self) -> None:
        # Clip in a step pre-hook registered at the first step, i.e. after the gradient averaging
        # that --distributed registers on the optimiser: every rank then clips the same global gradient.
        if self._clip_hooked or not self.config["grad_clip"]:
            return
        limit = float(self.config["grad_clip"])

        def clip(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), limit)

        self.opt.register_step_pre_hook(clip)
        self._clip_hooked = True

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        cfg, total, share = self.config, len(reals), self.data_shard.share
        self._hook_gradient_clipping()
        self.unet.train()
        device = reals.device
        # Draw for the global batch, keep this rank's share (one process: everything).
        t = share(torch.randint(0, int(cfg["timesteps"]), (total,), device=device))
        noise = share(torch.randn(reals.shape, device=device))
        dropped = share(torch.rand(total, device=device) < cfg["label_dropout"])
        reals, labels = share(reals), share(labels)
        labels = torch.where(dropped, torch.full_like(labels, len(self.classes)), labels)

        noisy = self.noise_schedule.add_noise(reals, noise, t)
        if cfg["prediction"] == "epsilon":
            target = noise
        elif cfg["prediction"] == "v":
            target = self.noise_schedule.get_velocity(reals, noise, t)
        else:
            target = reals
        loss = F.mse_loss(self.unet(noisy, t, labels), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._update_ema()
        return {"loss": loss.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(float(self.config["ema_decay"]), (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.unet.parameters()):
            ema_p.lerp_(p, 1 - decay)
        for ema_b, b in zip(self.ema.buffers(), self.unet.buffers()):
            ema_b.copy_(b)

    # ------------------------------------------------------------ sampling
    def _ddim(self, steps: int):
        ddim_cls = _monai()[2]
        total = int(self.config["timesteps"])
        ddim = ddim_cls(num_train_timesteps=total, schedule=SCHEDULES[self.config["schedule"]],
                        prediction_type=PREDICTIONS[self.config["prediction"]], clip_sample=True)
        ddim.set_timesteps(steps)
        # MONAI 1.6's set_timesteps spaces the steps (T-1)/(S-1) apart, but step() moves back by T//S;
        # use the uniform T//S grid that step() assumes (the DDIM paper's), so each step lands on the next.
        ddim.timesteps = torch.arange(steps - 1, -1, -1) * (total // steps)
        return ddim

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor, guidance: float | None = None,
                 steps: int | None = None, notch: float | None = None) -> torch.Tensor:
        """DDIM from the noise ``z`` (N×C*H*W) with classifier-free guidance; images in [-1, 1]."""
        guidance, steps, notch = self.sampling_settings(guidance, steps, notch)
        net, n = self.ema, len(z)
        x = z.view(n, self.channels, self.size, self.size).to(self.device)
        labels = labels.to(self.device)
        null = torch.full_like(labels, len(self.classes))
        ddim = self._ddim(steps)
        for t in ddim.timesteps.tolist():
            tt = torch.full((n,), t, dtype=torch.long, device=self.device)
            if guidance == 1:
                out = net(x, tt, labels)
            elif guidance == 0:
                out = net(x, tt, null)
            else:
                cond, uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).chunk(2)
                out = uncond + guidance * (cond - uncond)
            x, _ = ddim.step(out, t, x)
        if notch:
            x = nyquist_notch(x, notch)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64, guidance: float | None = None,
               steps: int | None = None, notch: float | None = None) -> torch.Tensor:
        """As :meth:`SteppedGAN.sample`, plus the guidance scale, the number of DDIM steps and the notch filter.

        ``sample(0, ...)`` only checks the settings (bad ones raise ConfigError before any work).
        """
        guidance, steps, notch = self.sampling_settings(guidance, steps, notch)
        self.class_index(class_name)
        return super().sample(n, class_name, seed=seed, batch_size=batch_size, guidance=guidance, steps=steps,
                              notch=notch)
