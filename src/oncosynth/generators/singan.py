"""SinGAN (Shaham, Dekel, Michaeli 2019): a generative model learnt from one image.

One SinGAN is a pyramid of small fully convolutional GANs. Scale 0 is the
coarsest (``min_size`` px on the short side); every finer scale is
``scale_factor`` times larger (the factor is adjusted slightly so that the
pyramid ends exactly at the training size, which is the image's size capped
at ``max_size``). Scale ``k`` has a generator ``G_k`` and a patch critic
``D_k`` (``blocks`` conv layers of ``filters`` channels, 3×3 kernels). The
generator refines the upsampled output of the scale below:

    x_k = up(x_{k-1}) + G_k(up(x_{k-1}) + a_k · z_k)

Scales are trained one after another, coarse to fine, with the lower ones
frozen: WGAN-GP (gradient penalty weight 0.1) plus a reconstruction loss
(weight 10) that asks a fixed noise map at scale 0 (and no noise above) to
reproduce the training image. The noise amplitude ``a_k`` of a scale is
``noise_amp`` times the RMS error of the reconstruction coming from below
(``a_0 = 1``). Adam, lr 5e-4, beta1 0.5, lr × 0.1 after 80 % of a scale's
iterations; 3 critic and 3 generator steps per iteration.

How this differs from the original code, deliberately:

* no in-place operation on anything autograd needs: every generator step
  makes a fresh forward pass (the original re-used one graph across steps
  after ``optimizer.step()`` had changed the weights in place, which newer
  PyTorch rejects), and no activation is in-place;
* frozen scales run under ``torch.no_grad`` with ``requires_grad=False`` and
  the fixed reconstruction input of a scale is computed once, so memory does
  not grow with the number of scales;
* instance normalisation instead of batch norm: the original trains with a
  batch of one, where batch norm *is* instance norm; keeping it per image
  makes a sample independent of the other images in its batch;
* fewer iterations per scale by default (``iters``; the paper used 2000, the
  ``paper`` preset restores that) so that a 128 px image trains in minutes on
  a CPU.

Many SinGANs for a class (the group): :class:`SinGAN` is the registered
generator (``create_generator("singan")``). Its ``fit`` chooses ``images``
training images of one class (at random, or a given list), trains one SinGAN
per image as one executor unit each (``oncosynth.executor``), and writes::

    RUN/group.json              the plan (images, settings); present while training
    RUN/members/member-00/      one finished SinGAN: weights, config.json, summary.json
    RUN/members/member-00/partial-03/   per-scale progress of an unfinished one
    RUN/config.json, weights.safetensors, manifest.json   the whole group, written
                                 last and only when every member is finished
    RUN/members.csv             per-SinGAN time and SIFID

A re-run on the same folder skips finished members and continues unfinished
ones from their last finished scale. ``sample(n, class, seed)`` draws image
``i`` from member ``(seed + i) mod K`` with noise seeded by ``seed + i``, so
the members contribute equally and each image can be made again alone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError, ConfigError, DataError, OncosynthError
from oncosynth.generators.base import Generator, register_generator
from oncosynth.io import atomic_write, write_json, write_text
from oncosynth.runtime import make_manifest

log = logging.getLogger("oncosynth.generators.singan")

MEMBER_KIND = "singan-member"
PARTIAL_KIND = "singan-partial"
GROUP_PLAN = "group.json"
SUMMARY = "summary.json"
RNG_FILE = "rng.pt"

#: Settings that change the trained networks (a resumed member must match them).
MODEL_KEYS = ("scale_factor", "min_size", "max_size", "filters", "blocks", "iters", "lr", "beta1",
              "gp_weight", "rec_weight", "d_steps", "g_steps", "noise_amp", "lr_decay_at")


class SinGANDiverged(OncosynthError):
    """A loss of a SinGAN scale became NaN/inf."""


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


# ------------------------------------------------------------------ training ----
def _finite(losses: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in losses.values())


def _member_fingerprint(config: dict[str, Any], image: torch.Tensor, seed: int) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest()[:16]
    return {"settings": {k: config[k] for k in MODEL_KEYS}, "image_hash": digest, "seed": int(seed),
            "shape": list(image.shape)}


def train_singan(image: torch.Tensor, config: dict[str, Any] | None = None, seed: int = 0,
                 state_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 progress: bool = False, name: str = "singan") -> tuple[SinGANMember, dict[str, Any]]:
    """Train one SinGAN on ``image`` (C×H×W in [0, 1], C = 1 or 3); returns it and a training summary.

    With ``state_dir`` every finished scale is saved there (``partial-KK``) and
    a later call with the same image, settings and seed continues from it.
    """
    cfg = {**SinGAN.defaults, **(config or {})}
    image = _check_image(image, cfg, name)
    device = torch.device(device)
    sizes = pyramid_sizes(image.shape[1], image.shape[2], cfg["scale_factor"], cfg["min_size"], cfg["max_size"])
    channels = int(image.shape[0])
    full = _resize(image[None].float() * 2 - 1, sizes[-1]).clamp(-1, 1)
    reals = [_resize(full, s).clamp(-1, 1).to(device) for s in sizes]
    fingerprint = _member_fingerprint(cfg, image, seed)

    torch.manual_seed(seed)
    member = SinGANMember(sizes, channels, cfg["filters"], cfg["blocks"]).to(device)
    member.z_rec.copy_(torch.randn(1, channels, *sizes[0]).to(device))
    critic = ScaleNet(channels, 1, cfg["filters"], cfg["blocks"], tanh=False).to(device)
    history: list[dict[str, Any]] = []
    start = 0
    state_dir = Path(state_dir) if state_dir is not None else None
    if state_dir is not None:
        start, history = _load_partial(state_dir, member, critic, fingerprint)
        if start:
            log.info("%s: resuming after scale %d of %d", name, start - 1, len(sizes))
    for p in member.parameters():
        p.requires_grad_(False)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        done = sum(cfg["iters"] * (s[0] * s[1]) for s in sizes[:start])
        bar = tqdm(total=sum(cfg["iters"] * (s[0] * s[1]) for s in sizes), initial=done, unit="px-it",
                   desc=f"{name} scales", dynamic_ncols=True, leave=False)
    try:
        for k in range(start, len(sizes)):
            began = time.perf_counter()
            losses = _train_scale(member, critic, k, reals, cfg, bar)
            history.append({"scale": k, "size": list(sizes[k]), "noise_amp": float(member.noise_amps[k]),
                            "seconds": round(time.perf_counter() - began, 2), **losses})
            log.info("%s: scale %d/%d (%dx%d) %s", name, k + 1, len(sizes), *sizes[k], history[-1])
            if state_dir is not None:
                _save_partial(state_dir, member, critic, k + 1, fingerprint, history)
    finally:
        if bar is not None:
            bar.close()
    member.eval()
    return member.cpu(), {"sizes": [list(s) for s in sizes], "scales": history, "fingerprint": fingerprint}


def _check_image(image: torch.Tensor, cfg: dict[str, Any], name: str) -> torch.Tensor:
    image = torch.as_tensor(image).float().cpu()
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DataError(name, f"expected one image C×H×W with 1 or 3 channels, got shape {tuple(image.shape)}")
    if min(image.shape[1:]) < cfg["min_size"]:
        raise DataError(name, f"the image is {image.shape[1]}×{image.shape[2]} px, smaller than SinGAN's "
                              f"coarsest scale ({cfg['min_size']} px); use larger images or a smaller --min-size")
    span = float(image.max() - image.min())
    if not math.isfinite(span) or span < 1 / 255:
        raise DataError(name, f"the image has a single flat value ({float(image.mean()):.3f}); SinGAN has "
                              f"nothing to learn from it")
    return image


def _train_scale(member: SinGANMember, critic: ScaleNet, k: int, reals: list[torch.Tensor],
                 cfg: dict[str, Any], bar) -> dict[str, float]:
    real = reals[k]
    device = real.device
    size = member.sizes[k]
    gen = member.gens[k]
    # Start from the scale below (same shapes): the original's warm start.
    if k > 0:
        gen.load_state_dict(member.gens[k - 1].state_dict())
    else:
        gen.reset()
        critic.reset()
    with torch.no_grad():
        if k == 0:
            rec_below = torch.zeros_like(real)
            member.noise_amps[k] = 1.0
        else:
            rec_below = _resize(member.reconstruct(k)[-1], size)
            rmse = torch.sqrt(F.mse_loss(rec_below, real))
            member.noise_amps[k] = cfg["noise_amp"] * float(rmse)
        z_rec = member.z_rec if k == 0 else torch.zeros_like(real)
    amp = member.noise_amps[k].clone()
    for p in gen.parameters():
        p.requires_grad_(True)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    milestone = [max(1, int(cfg["lr_decay_at"] * cfg["iters"]))]
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestone, gamma=0.1)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestone, gamma=0.1)
    rec_input = rec_below + amp * z_rec
    gen.train()
    critic.train()
    last: dict[str, float] = {}
    for it in range(cfg["iters"]):
        with torch.no_grad():
            if k == 0:
                below = torch.zeros_like(real)
            else:
                x = None
                for j in range(k):
                    x = member.scale_forward(j, x, torch.randn(1, member.channels, *member.sizes[j], device=device))
                below = _resize(x, size)
            noise = torch.randn(1, member.channels, *size, device=device)
            fake = below + gen(below + amp * noise)  # fixed during the critic steps (G does not change)
        for p in critic.parameters():
            p.requires_grad_(True)
        for _ in range(cfg["d_steps"]):
            opt_d.zero_grad(set_to_none=True)
            d_real = critic(real).mean()
            d_fake = critic(fake).mean()
            alpha = torch.rand((), device=device)
            mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            grads, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
            gp = ((grads.norm(2, dim=1) - 1) ** 2).mean()
            loss_d = d_fake - d_real + cfg["gp_weight"] * gp
            loss_d.backward()
            opt_d.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        for _ in range(cfg["g_steps"]):
            opt_g.zero_grad(set_to_none=True)
            fake_g = below + gen(below + amp * noise)  # a fresh graph every step
            adv = -critic(fake_g).mean()
            rec = F.mse_loss(rec_below + gen(rec_input), real)
            loss_g = adv + cfg["rec_weight"] * rec
            loss_g.backward()
            opt_g.step()
        sched_g.step()
        sched_d.step()
        if bar is not None:
            bar.update(size[0] * size[1])
        if it == cfg["iters"] - 1 or it % 50 == 0:
            last = {"loss_d": loss_d.item(), "loss_g_adv": adv.item(), "loss_rec": rec.item(),
                    "gp": gp.item(), "wasserstein": (d_real - d_fake).item()}
            if not _finite(last):
                raise SinGANDiverged(f"SinGAN diverged at scale {k} iteration {it} (losses {last})")
    for p in gen.parameters():
        p.requires_grad_(False)
    gen.eval()
    return {key: round(v, 5) for key, v in last.items()}


# --------------------------------------------------------- per-scale resume ----
def _partials(state_dir: Path) -> list[Path]:
    return sorted(p for p in state_dir.glob("partial-*") if (p / "config.json").is_file())


def _save_partial(state_dir: Path, member: SinGANMember, critic: ScaleNet, done: int,
                  fingerprint: dict[str, Any], history: list[dict[str, Any]]) -> None:
    folder = state_dir / f"partial-{done:02d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with atomic_write(folder / RNG_FILE) as handle:
        torch.save({"torch_rng": torch.get_rng_state()}, handle)
    tensors = {f"member.{k}": v for k, v in member.state_dict().items()}
    tensors.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
    save_checkpoint(folder, tensors, {"kind": PARTIAL_KIND, "scales_done": done, "fingerprint": fingerprint,
                                      "history": history})
    for old in _partials(state_dir)[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def _load_partial(state_dir: Path, member: SinGANMember, critic: ScaleNet,
                  fingerprint: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    found = _partials(state_dir) if state_dir.is_dir() else []
    if not found:
        return 0, []
    tensors, config, _ = load_checkpoint(found[-1], kind=PARTIAL_KIND)
    if json.loads(json.dumps(config.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
        raise ConfigError(f"{state_dir}: an unfinished SinGAN with other settings, image or seed is here; "
                          f"choose another run folder (nothing was overwritten)")
    member.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("member.")})
    critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")})
    state = torch.load(found[-1] / RNG_FILE, map_location="cpu", weights_only=True)
    torch.set_rng_state(state["torch_rng"])
    return int(config["scales_done"]), list(config.get("history", []))


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


def train_member_unit(image: Any, folder: str, config: dict[str, Any], seed: int, size: int, channels: int,
                      key: str, source: str, class_name: str, device: str = "cpu", threads: int | None = None,
                      sifid_net: str | None = None, sifid_samples: int = 8, progress: bool = False) -> dict[str, Any]:
    """Executor unit: train (or resume, or skip a finished) SinGAN into ``folder``; return its summary.

    ``image`` is a data-layer Record (read here) or a C×H×W tensor in [0, 1]. ``peak_rss_mb`` in the
    summary is the peak of the process that ran the unit (in-process runs include earlier work).
    """
    if threads:
        torch.set_num_threads(int(threads))
    folder_p = Path(folder)
    image_t = _unit_image(image, size, channels)
    cfg = {**SinGAN.defaults, **config}
    fingerprint = _member_fingerprint(cfg, image_t, seed)
    if (folder_p / "config.json").is_file() and (folder_p / SUMMARY).is_file():
        saved = json.loads((folder_p / "config.json").read_text())
        if json.loads(json.dumps(saved.get("fingerprint"))) == json.loads(json.dumps(fingerprint)):
            return {**json.loads((folder_p / SUMMARY).read_text()), "resumed": True}
        raise ConfigError(f"{folder_p}: a finished SinGAN for another image or settings is here; "
                          f"choose another run folder")
    began, cpu0 = time.perf_counter(), _cpu_seconds()
    from oncosynth.runtime import resolve_device

    member, info = train_singan(image_t, cfg, seed=seed, state_dir=folder_p, device=resolve_device(device),
                                name=key, progress=progress)
    summary = {"key": key, "source": source, "class": class_name, "seed": int(seed),
               "seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
               "peak_rss_mb": round(_peak_rss_mb(), 1), "threads": torch.get_num_threads(),
               "sizes": info["sizes"], "scales": info["scales"]}
    if sifid_net:
        from oncosynth.metrics.sifid import sifid_scores

        fakes = sample_member(member, list(range(10_000, 10_000 + sifid_samples)))
        scores = sifid_scores(image_t[None], fakes, feature_net=sifid_net)
        summary["sifid"] = {"feature_net": scores["feature_net"], "mean": scores["mean"], "std": scores["std"],
                            "n": sifid_samples}
    write_json(folder_p / SUMMARY, summary)
    settings = {k: cfg[k] for k in MODEL_KEYS}
    save_member(folder_p, member, {"settings": settings, "fingerprint": fingerprint, "source": source,
                                   "class": class_name, "key": key},
                make_manifest(MEMBER_KIND, settings, seed=seed, data_hash=fingerprint["image_hash"], source=source))
    for old in _partials(folder_p):
        shutil.rmtree(old, ignore_errors=True)
    return summary


def _unit_image(image: Any, size: int, channels: int) -> torch.Tensor:
    from oncosynth.data import Record, load_images
    from oncosynth.data.decode import convert_images

    if isinstance(image, Record):
        return load_images([image], size=size, channels=channels)[0]
    tensor = torch.as_tensor(image).float()
    return convert_images(tensor[None], size, channels)[0]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -------------------------------------------------------------------- group ----
@register_generator()
class SinGAN(Generator):
    """A group of SinGANs, one per training image of one class; sampling draws equally from each."""

    name = "singan"
    conditional = False
    defaults = {
        "scale_factor": 0.75, "min_size": 25, "max_size": 250, "filters": 32, "blocks": 5,
        "iters": 250, "lr": 5e-4, "beta1": 0.5, "gp_weight": 0.1, "rec_weight": 10.0,
        "d_steps": 3, "g_steps": 3, "noise_amp": 0.1, "lr_decay_at": 0.8, "channels": None,
        "sifid_net": "random-cnn:0", "sifid_samples": 8,
    }
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

    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        raise ConfigError("singan trains scale by scale on single images; call fit(), not train_step()")

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise ConfigError("singan draws from noise maps, not latent vectors; call sample()")

    @property
    def z_dim(self) -> int:
        return 0

    @property
    def n_scales(self) -> int:
        return min(m.n_scales for m in self.members) if self.members else 0

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "members": self.member_info}

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "checkpoint") -> "SinGAN":
        try:
            gen = cls(preset=None, **config["config"])
            gen.preset = config.get("preset")
            gen.step = int(config.get("step", 0))
            gen.member_info = list(config["members"])
            gen.configure(list(config["classes"]), int(config["channels"]), int(config["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: config.json is incomplete or invalid ({exc!r})") from None
        return gen

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


def _choose_records(dataset: Any, class_name: str | None, images: int | None, image_list: Any,
                    seed: int) -> tuple[list[Any], str]:
    from oncosynth.data import Dataset, load_dataset

    if isinstance(dataset, (str, Path)):
        dataset = load_dataset(dataset)
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"singan: training data must be a data set folder, a Dataset or a tensor of images, "
                          f"not {type(dataset).__name__}")
    if "train" in dataset.splits:
        dataset = dataset.split("train")
    if class_name is None:
        if len(dataset.classes) != 1:
            raise ConfigError(f"singan: name the class to learn (--class); the data have {dataset.classes}")
        class_name = dataset.classes[0]
    dataset.class_index(class_name)
    pool = sorted((r for r in dataset.records if r.label == class_name), key=lambda r: r.uid)
    if image_list is not None:
        wanted = _read_image_list(image_list)
        if images is not None and images != len(wanted):
            raise ConfigError(f"--images {images} disagrees with the {len(wanted)} image(s) in the list")
        by_name: dict[str, Any] = {}
        for r in pool:
            for name in (r.uid, r.source, Path(r.source).name, Path(r.source).stem):
                by_name.setdefault(name, r)
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise ConfigError(f"singan: {len(missing)} listed image(s) are not training images of class "
                              f"'{class_name}' (e.g. {missing[0]})")
        chosen = [by_name[w] for w in wanted]
        if len({r.uid for r in chosen}) != len(chosen):
            raise ConfigError("singan: the image list names an image twice")
        return chosen, class_name
    images = 1 if images is None else int(images)
    if images < 1:
        raise ConfigError(f"--images must be >= 1, not {images}")
    if len(pool) < images:
        raise ConfigError(f"singan: class '{class_name}' has {len(pool)} training image(s), fewer than "
                          f"--images {images}; nothing was trained")
    index = np.sort(np.random.default_rng(seed).choice(len(pool), size=images, replace=False))
    return [pool[i] for i in index], class_name


def _read_image_list(image_list: Any) -> list[str]:
    if isinstance(image_list, (str, Path)):
        path = Path(image_list)
        if not path.is_file():
            raise DataError(path, "image list not found")
        entries = [line.strip() for line in path.read_text().splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
        if not entries:
            raise DataError(path, "the image list is empty")
        return entries
    return [str(x) for x in image_list]


def train_group(gen: SinGAN, data: Any, run_folder: str | Path, *, class_name: str | None = None,
                images: int | None = None, image_list: Any = None, seed: int = 0, workers: int = 0,
                executor: Any = None, resume: bool = True, device: str = "cpu", threads: int | None = None,
                progress: bool = True) -> SinGAN:
    """Train ``images`` SinGANs (one per image of ``class_name``) into ``run_folder``.

    ``data``: a data set path or ``Dataset`` (its train split), or a tensor N×C×H×W in [0, 1] (every
    image is used; ``class_name`` names them). ``image_list``: a file (one file name, path or uid per
    line) or a list of them, instead of a random choice (seeded by ``seed``). Members run as units of
    ``executor`` (default ``LocalExecutor(workers)``); a finished member is never trained again.
    """
    from oncosynth.data import load_images
    from oncosynth.executor import LocalExecutor, Resources, Unit

    run = Path(run_folder)
    cfg = gen.config
    # ---- choose and check every image before anything is written
    if isinstance(data, torch.Tensor):
        if image_list is not None:
            raise ConfigError("singan: an image list needs a data set, not a tensor")
        tensor = data.float()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if images is not None and images != len(tensor):
            raise ConfigError(f"--images {images} but {len(tensor)} image(s) were given")
        class_name = class_name or "image"
        chosen: list[Any] = [tensor[i] for i in range(len(tensor))]
        sources = [f"<tensor {i}>" for i in range(len(tensor))]
        natives = [t for t in chosen]
    else:
        chosen, class_name = _choose_records(data, class_name, images, image_list, seed)
        sources = [r.uid for r in chosen]
        natives = [load_images([r])[0] for r in chosen]
    channels = int(cfg["channels"] or (1 if natives[0].shape[0] == 1 else 3))
    if channels not in (1, 3):
        raise ConfigError(f"singan: images must have 1 or 3 channels, not {channels}")
    size = int(min(cfg["max_size"], max(natives[0].shape[-2:])))
    from oncosynth.data.decode import convert_images

    for source, native in zip(sources, natives):
        if min(native.shape[-2:]) < cfg["min_size"]:  # before any resampling could hide it
            _check_image(native[:1], cfg, source)
        _check_image(convert_images(native[None].float(), size, channels)[0], cfg, source)
    pyramid_sizes(size, size, cfg["scale_factor"], cfg["min_size"], cfg["max_size"])

    keys = [f"member-{i:02d}" for i in range(len(chosen))]
    plan = {"method": gen.name, "config": cfg, "class": class_name, "size": size, "channels": channels,
            "seed": seed, "members": [{"key": k, "source": s} for k, s in zip(keys, sources)]}
    plan = json.loads(json.dumps(plan))
    plan_path = run / GROUP_PLAN
    if plan_path.is_file():
        if not resume:
            raise ConfigError(f"{run} already holds a SinGAN group; resume it or choose another --out "
                              f"(nothing was overwritten)")
        old = json.loads(plan_path.read_text())
        if old != plan:
            changed = sorted(k for k in plan if old.get(k) != plan[k])
            raise ConfigError(f"{run}: the SinGAN group there was started with other settings or images "
                              f"({changed}); resume with the same ones or choose another --out")
    elif run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run} is not empty and holds no SinGAN group; choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan)

    # ---- one unit per image
    workers = int(workers)
    if threads is None and workers:  # each worker process gets its share of the cores (or OMP_NUM_THREADS)
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // workers)
    model_cfg = {k: cfg[k] for k in MODEL_KEYS}
    resources = Resources(cpus=float(threads or 1), gpus=1.0 if str(device).startswith("cuda") else 0.0)
    units = [Unit(key=k, fn=train_member_unit, resources=resources,
                  kwargs=dict(image=img, folder=str(run / "members" / k), config=model_cfg, seed=seed + 1000 * i,
                              size=size, channels=channels, key=k, source=s, class_name=class_name, device=device,
                              threads=threads, sifid_net=cfg["sifid_net"], sifid_samples=int(cfg["sifid_samples"]),
                              progress=bool(progress and not workers and executor is None)))
             for i, (k, img, s) in enumerate(zip(keys, chosen, sources))]
    own = executor is None
    executor = executor or LocalExecutor(workers=workers)
    began = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc=f"singan: {class_name} SinGANs", unit="SinGAN", dynamic_ncols=True)
    by_key = {}
    try:
        for outcome in executor.run(units):  # as each finishes (run_all's order restored below)
            by_key[outcome.key] = outcome
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{outcome.key} {'ok' if outcome.ok else 'FAILED'}")
    finally:
        if bar is not None:
            bar.close()
        if own:
            executor.close()
    outcomes = [by_key[u.key] for u in units]
    failed = [o for o in outcomes if not o.ok]
    summaries = [o.value for o in outcomes if o.ok]
    _write_members_csv(run, summaries)
    if failed:
        lines = "; ".join(f"{o.key} ({next(m['source'] for m in plan['members'] if m['key'] == o.key)}): {o.error}"
                          for o in failed)
        raise OncosynthError(f"singan: {len(failed)} of {len(units)} SinGAN(s) failed: {lines}. The group in {run} "
                             f"is incomplete (no config.json); finished members are kept and a re-run resumes")

    # ---- assemble the group (config.json last: it marks the group complete)
    gen.member_info, gen.members = [], []
    for key, summary in zip(keys, summaries):
        member, config = load_member(run / "members" / key)
        gen.members.append(member)
        gen.member_info.append({"key": key, "source": config["source"], "sizes": config["sizes"],
                                "sifid": summary.get("sifid")})
    gen.classes, gen.channels, gen.size = [class_name], channels, size
    gen.step = len(gen.members)
    gen.manifest = make_manifest("generator/singan", plan, seed=seed,
                                 data_hash=_group_hash([s.get("key", "") for s in summaries], run),
                                 n_train=len(gen.members), seconds=round(time.perf_counter() - began, 1),
                                 cpu_seconds_members=round(sum(s["cpu_seconds"] for s in summaries), 1))
    gen.save(run, gen.manifest)
    return gen


def _group_hash(keys: list[str], run: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in keys:
        config = json.loads((run / "members" / key / "config.json").read_text())
        digest.update(str(config.get("fingerprint", {}).get("image_hash", "")).encode())
    return digest.hexdigest()[:16]


def _write_members_csv(run: Path, summaries: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "source", "seconds", "cpu_seconds", "peak_rss_mb", "scales", "size",
                     "sifid_mean", "sifid_std", "sifid_feature_net", "resumed"])
    for s in sorted(summaries, key=lambda s: s["key"]):
        sifid = s.get("sifid") or {}
        writer.writerow([s["key"], s["source"], s["seconds"], s["cpu_seconds"], s["peak_rss_mb"], len(s["sizes"]),
                         "x".join(map(str, s["sizes"][-1])), sifid.get("mean", ""), sifid.get("std", ""),
                         sifid.get("feature_net", ""), bool(s.get("resumed", False))])
    write_text(run / "members.csv", buffer.getvalue())


# --------------------------------------------------------------------- demo ----
#: The demo's SinGAN: 48 px, 5 scales of 16 filters (see bench/RESULTS.md for its time).
DEMO_SINGAN = {"iters": 60, "filters": 16, "min_size": 16, "max_size": 48, "sifid_samples": 4}


def demo_singan(dataset: Any, out: str | Path, class_name: str = "malignant", seed: int = 0,
                n_samples: int = 16) -> Path:
    """The demo's step: one small SinGAN on one phantom image, then a sample grid and PNGs.

    Sized for well under a minute on 2 CPU cores (``DEMO_SINGAN``). Re-running it reuses the
    finished model.
    """
    from oncosynth.io import save_grid, save_image

    out = Path(out)
    gen = SinGAN(**DEMO_SINGAN)
    run = out / "run"
    if (run / "config.json").is_file():
        from oncosynth.generators.base import load_generator

        gen = load_generator(run)
    else:
        train_group(gen, dataset, run, class_name=class_name, images=1, seed=seed, progress=False)
    samples = gen.sample(n_samples, gen.classes[0], seed=seed)
    from oncosynth.data import Dataset, load_images

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
