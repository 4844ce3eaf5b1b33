"""The step-trained GAN: the base class that cdcgan and stylegan2-ada extend.

A subclass supplies, besides ``build`` and ``networks``:

* ``train_step(reals, labels)``: one optimisation step on a batch of images in
  [-1, 1], returning the losses as floats;
* ``generate(z, labels)``: images in [-1, 1] from latents and class indices;
* ``z_dim``: the length of one latent vector;
* ``training_state()`` / ``load_training_state()``: what besides the weights a
  resumed run needs (optimiser states, ADA's p, ...).

``fit`` runs the shared loop of :mod:`oncosynth.generators.training`
(checkpoints, bitwise resume, divergence stop); ``sample`` draws image ``i``
from latent seed ``seed + i``.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import torch

from oncosynth.parallel.distributed import SINGLE
from oncosynth.errors import ConfigError
from oncosynth.generators.base import Generator
from oncosynth.generators.training import run_training


class SteppedGAN(Generator):
    """A generator trained by optimisation steps on batches, sampled from latent vectors."""

    # True when train_step draws its randomness for the global batch and keeps
    # ``self.data_shard.share(...)`` of it, so torchrun ranks together equal one process.
    supports_distributed: ClassVar[bool] = False

    def __init__(self, preset: str | None = None, **config: Any):
        super().__init__(preset, **config)
        self.data_shard = SINGLE  # which rows of each global batch this process trains on
        self.class_counts: torch.Tensor | None = None  # training images per class; set by the training loop

    # ------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def train_step(self, reals: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimisation step on images in [-1, 1]; returns the losses."""

    @abc.abstractmethod
    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents ``z`` and class indices (no grad needed)."""

    @property
    @abc.abstractmethod
    def z_dim(self) -> int:
        """Length of one latent vector."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers train_step steps (distributed training averages their gradients)."""
        return [v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)]

    def training_state(self) -> dict[str, Any]:
        """Optimiser states etc. that a resumed run needs (torch.save-able, tensors and plain types)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        del state

    # ------------------------------------------------------------ the protocol
    def fit(self, data: Any, run_folder: str | Path, steps: int, **options: Any) -> "SteppedGAN":
        """Train for ``steps`` steps in total, checkpointing into ``run_folder``.

        ``data`` is an ``oncosynth.data.Dataset`` (its training split is used),
        a ``(images, labels, classes)`` tuple or a ``TrainingData``. Options are
        those of :func:`oncosynth.generators.training.run_training` (batch_size,
        seed, device, resume, checkpoint_every, sample_every, log_every,
        tensorboard, progress, classes).
        """
        run_training(self, data, run_folder, steps, **options)
        return self

    @torch.no_grad()
    def sample(self, n: int, class_name: str, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
        """``n`` images of ``class_name`` as a CPU float tensor N×C×H×W in [0, 1].

        Image ``i`` is drawn from latent seed ``seed + i``, so any single image
        can be made again with ``sample(1, class_name, seed + i)``.
        """
        if not self.built:
            raise ConfigError(f"{self.name}: the generator is not trained or loaded yet")
        if n < 0:
            raise ConfigError(f"n must be >= 0, not {n}")
        label = self.class_index(class_name)
        nets = self.networks()
        modes = {k: net.training for k, net in nets.items()}
        for net in nets.values():
            net.eval()
        out = []
        try:
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                z = torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(seed + start + i))
                                 for i in range(count)]).to(self.device)
                labels = torch.full((count,), label, dtype=torch.long, device=self.device)
                images = self.generate(z, labels)
                out.append(((images.float() + 1) / 2).clamp(0, 1).cpu())
        finally:
            for k, net in nets.items():
                net.train(modes[k])
        if not out:
            return torch.zeros(0, self.channels, self.size, self.size)
        return torch.cat(out)
