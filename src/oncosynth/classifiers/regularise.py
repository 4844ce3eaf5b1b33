"""Batch mixing (mixup / CutMix) and an exponential moving average (EMA) of the weights.

Mixing draws its random numbers from the training loop's CPU generator, so a
seed gives the same mixes on any device and a resumed run continues exactly.
The EMA's shadow weights are written beside the resume state, one file per
evaluation (``ema_<n>.pt``), so a run killed between the two writes still
finds the shadow that matches its last state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from oncosynth.errors import CheckpointError

EMA_PATTERN = "ema_*.pt"


# ------------------------------------------------------------- mixing ----
def _beta(alpha: float, generator: torch.Generator) -> float:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float, prob: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (alpha ``mixup``) or CutMix (alpha ``cutmix``) with probability ``prob``.

    Returns the images and the targets: the integer labels when this batch is not
    mixed, else soft labels ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` with
    ``lam`` the share of the first image (for CutMix, the exact share of its pixels).
    With both alphas set, each mixed batch uses one of the two, chosen at random.
    """
    if not (mixup or cutmix) or len(y) < 2:
        return x, y
    if float(torch.rand(1, generator=generator)) >= prob:
        return x, y
    use_cutmix = bool(cutmix) and (not mixup or float(torch.rand(1, generator=generator)) < 0.5)
    lam = _beta(cutmix if use_cutmix else mixup, generator)
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    if use_cutmix:
        x, lam = _paste_box(x, perm, lam, generator)
    else:
        x = lam * x + (1 - lam) * x[perm]
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    return x, lam * onehot + (1 - lam) * onehot[perm]


def _paste_box(x: torch.Tensor, perm: torch.Tensor, lam: float,
               generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """CutMix: a box of area ~(1 - lam) from the partner image; lam corrected to the box's real area."""
    h, w = x.shape[2:]
    side = (1 - lam) ** 0.5
    bh, bw = round(h * side), round(w * side)
    cy, cx = (int(torch.randint(0, s, (1,), generator=generator)) for s in (h, w))
    top, bottom = max(0, cy - bh // 2), min(h, cy + (bh - bh // 2))
    left, right = max(0, cx - bw // 2), min(w, cx + (bw - bw // 2))
    out = x.clone()
    out[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
    return out, 1 - (bottom - top) * (right - left) / (h * w)


# ---------------------------------------------------------------- EMA ----
class WeightEMA:
    """shadow <- decay * shadow + (1 - decay) * weights after every optimiser step.

    Float tensors (weights and BatchNorm statistics) are averaged, integer ones
    (BatchNorm's step counter) copied. ``swap_in`` puts the shadow into the model
    for evaluation and ``swap_out`` restores the live weights training goes on with.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._live: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            target = self.shadow[key]
            if target.is_floating_point():
                target.mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                target.copy_(value)

    def swap_in(self, model: nn.Module) -> None:
        self._live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)

    def swap_out(self, model: nn.Module) -> None:
        if self._live is not None:
            model.load_state_dict(self._live)
            self._live = None

    # resume: one file per evaluation; the previous one is kept until the next is written
    def save(self, folder: Path, evaluation: int) -> None:
        from oncosynth.io import atomic_write

        with atomic_write(folder / f"ema_{evaluation}.pt") as handle:
            torch.save({k: v.cpu() for k, v in self.shadow.items()}, handle)
        for old in folder.glob(EMA_PATTERN):
            if old.stem[4:].isdigit() and int(old.stem[4:]) < evaluation - 1:
                old.unlink(missing_ok=True)

    def load(self, folder: Path, evaluation: int) -> None:
        """The shadow saved at ``evaluation``, all or nothing; CheckpointError names a missing or damaged file."""
        path = folder / f"ema_{evaluation}.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: the EMA weights of the resumed training state are missing")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if {k: v.shape for k, v in saved.items()} != {k: v.shape for k, v in self.shadow.items()}:
                raise ValueError("its tensors do not match the model's")
        except Exception as exc:  # noqa: BLE001 - truncated or garbled: torch raises several types
            from oncosynth.io import set_aside

            problem = f"damaged EMA weights ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})"
            set_aside(path, problem + "; the training state they belong to restarts")
            raise CheckpointError(f"{path}: {problem}") from None
        for key, value in saved.items():
            self.shadow[key].copy_(value)
