"""Training one SinGAN on one image, scale by scale, with per-scale resume.

Scales are trained coarse to fine with the lower ones frozen: WGAN-GP plus a
reconstruction loss (see :mod:`oncosynth.generators.singan`). With a state
folder every finished scale is saved (``partial-KK``; the previous one is
kept), so a killed run continues from its last finished scale with the same RNG
state; a damaged newest one is set aside and the previous one used.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from oncosynth.checkpoint import load_checkpoint, save_checkpoint
from oncosynth.errors import CheckpointError, ConfigError, DataError, OncosynthError
from oncosynth.generators.singan.model import (DEFAULTS, MODEL_KEYS, ScaleNet, SinGANMember, _resize,
                                               pyramid_sizes)
from oncosynth.io import atomic_write, set_aside
from oncosynth.runtime.run_threads import RunThreads

log = logging.getLogger("oncosynth.generators.singan")

PARTIAL_KIND = "singan-partial"
RNG_FILE = "rng.pt"


class SinGANDiverged(OncosynthError):
    """A loss of a SinGAN scale became NaN/inf."""

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
    cfg = {**DEFAULTS, **(config or {})}
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
    threads = None
    if state_dir is not None:
        start, history = _load_partial(state_dir, member, critic, fingerprint)
        if start:
            log.info("%s: resuming after scale %d of %d", name, start - 1, len(sizes))
        threads = RunThreads(state_dir)  # a resume keeps the thread count the member started with
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
        if threads is not None:
            threads.restore()
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
    for old in _partials(state_dir)[:-2]:  # the previous one stays: the fallback if this one is damaged
        shutil.rmtree(old, ignore_errors=True)


def _load_partial(state_dir: Path, member: SinGANMember, critic: ScaleNet,
                  fingerprint: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Load the newest intact partial; a damaged one is set aside (renamed, never deleted) and the
    previous one tried. Returns (scales done, history): (0, []) when none is left."""
    for folder in reversed(_partials(state_dir) if state_dir.is_dir() else []):
        try:
            tensors, config, _ = load_checkpoint(folder, kind=PARTIAL_KIND)
        except CheckpointError as exc:
            set_aside(folder, f"damaged SinGAN progress ({exc}); falling back to the previous scale")
            continue
        if json.loads(json.dumps(config.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
            raise ConfigError(f"{state_dir}: an unfinished SinGAN with other settings, image or seed is here; "
                              f"choose another run folder (nothing was overwritten)")
        try:
            parts = {name: {k[7:]: v for k, v in tensors.items() if k.startswith(name + ".")}
                     for name in ("member", "critic")}
            for name, module in (("member", member), ("critic", critic)):
                _check_shapes(module, parts[name], name)
            rng = torch.load(folder / RNG_FILE, map_location="cpu", weights_only=True)["torch_rng"]
            if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
                raise ValueError("no torch RNG state")
            done, history = int(config["scales_done"]), list(config.get("history", []))
        except Exception as exc:  # noqa: BLE001 - a truncated rng.pt or odd config: torch raises several types
            first_line = (str(exc).splitlines() or [""])[0][:120]
            set_aside(folder, f"damaged SinGAN progress ({type(exc).__name__}: {first_line}); "
                              f"falling back to the previous scale")
            continue
        # only now, with everything checked: a fresh start after a failed load must find nothing changed
        member.load_state_dict(parts["member"])
        critic.load_state_dict(parts["critic"])
        torch.set_rng_state(rng)
        return done, history
    return 0, []


def _check_shapes(module: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str) -> None:
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if wanted != found:
        odd = sorted(set(wanted) ^ set(found)) or [k for k in wanted if wanted[k] != found[k]]
        raise ValueError(f"{name} tensors do not match the model (e.g. {odd[0]})")
